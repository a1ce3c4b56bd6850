"""The rollout lifecycle as services (N1-N4, L, T1-T3, C2, B4, U1, P3, P4, X1)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import ProtectedError

from rollouts import selectors
from rollouts.models import (
    AuditEvent,
    Batch,
    FirmwareVersion,
    Notice,
    ProposalState,
    Rollout,
    RolloutCounter,
    RolloutHub,
    Stage,
    Status,
)
from rollouts.models.rollouts import automatic_deployment_time
from rollouts.services import counters
from rollouts.services.lifecycle import (
    approve_proposal,
    propose,
    reject_proposal,
    revoke_rollout,
    start_safe_launch_without_pilot,
    suspend_rollout,
    withdraw_firmware,
)

from .conftest import new_draft

UK = ZoneInfo("Europe/London")


def publish(rollout, proposer, approver) -> Rollout:
    proposal = propose(user=proposer, rollout_id=rollout.pk, move="publish")
    return approve_proposal(user=approver, proposal_id=proposal.pk)


def state(rollout) -> tuple[str, str]:
    rollout.refresh_from_db()
    return rollout.stage, rollout.status


# -- T: the timeline ------------------------------------------------------------------------------


@pytest.mark.req("T1")
@pytest.mark.parametrize(
    ("published_uk", "automatic_uk"),
    [
        (
            dt.datetime(2026, 8, 31, 15, 0, tzinfo=UK),
            dt.datetime(2027, 2, 28, 0, 0, tzinfo=UK),
        ),  # 31 Aug -> end of Feb
        (dt.datetime(2027, 8, 31, 9, 0, tzinfo=UK), dt.datetime(2028, 2, 29, 0, 0, tzinfo=UK)),  # a leap year
        (
            dt.datetime(2026, 11, 27, 23, 30, tzinfo=UK),
            dt.datetime(2027, 5, 27, 0, 0, tzinfo=UK),
        ),  # into summer time
        (
            dt.datetime(2026, 5, 1, 0, 30, tzinfo=UK),
            dt.datetime(2026, 11, 1, 0, 0, tzinfo=UK),
        ),  # published in summer time
    ],
)
def test_automatic_time_is_uk_midnight_six_calendar_months_on(published_uk, automatic_uk):
    assert automatic_deployment_time(published_uk.astimezone(dt.UTC)) == automatic_uk


@pytest.mark.req("T1")
@pytest.mark.req("T2")
@pytest.mark.req("T3")
def test_publication_fixes_the_timeline(draft, dcc, dcc_2, monkeypatch):
    published = dt.datetime(2026, 8, 31, 14, 0, tzinfo=UK)
    monkeypatch.setattr("django.utils.timezone.now", lambda: published.astimezone(dt.UTC))
    rollout = publish(draft, dcc, dcc_2)
    assert rollout.published_at == published
    assert rollout.auto_deploy_at == dt.datetime(2027, 2, 28, 0, 0, tzinfo=UK)  # T1
    assert rollout.instruction_deadline == dt.datetime(2027, 1, 28, 0, 0, tzinfo=UK)  # T2: one month earlier
    assert rollout.contribution_deadline == dt.datetime(2026, 10, 31, 14, 0, tzinfo=UK)  # T3: + 2 months


# -- N2: publication, eligibility, supersession ------------------------------------------------------


@pytest.mark.req("N2")
@pytest.mark.req("B4")
def test_publish_needs_a_second_dcc_user(draft, dcc):
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish")
    with pytest.raises(PermissionDenied, match="another DCC user must approve"):
        approve_proposal(user=dcc, proposal_id=proposal.pk)
    assert state(draft) == (Stage.NOTIFICATION, Status.DRAFT)
    assert not RolloutHub.objects.filter(rollout=draft).exists()


@pytest.mark.req("N2")
def test_publication_creates_eligibility_set_based(draft, dcc, dcc_2, estate):
    rollout = publish(draft, dcc, dcc_2)
    assert state(rollout) == (Stage.NOTIFICATION, Status.ACTIVE)
    rows = {r.hub.guid: r for r in RolloutHub.objects.filter(rollout=rollout).select_related("hub")}
    # model 010A030B on the replaced version v1: hubs 01-04; not 05 (already v2) nor 06 (other model)
    assert sorted(rows) == [f"00DB00000000000{n}" for n in (1, 2, 3, 4)]
    assert rollout.eligible_count == 4
    first = rows["00DB000000000001"]
    assert (first.group, first.status, first.region, first.planned_activation_at) == (
        "safe_launch",
        "pending",
        "north",
        rollout.auto_deploy_at,
    )
    assert first.import_supplier.name == "Volt Energy" and first.gas_supplier.name == "GasCo"


@pytest.mark.req("N2")
def test_a_published_rollout_and_a_batch_that_holds_hubs_cannot_be_deleted(draft, dcc, dcc_2, estate):
    """The rollout's hub rows carry no database FK (migration 0018: publishing stays fast); the ORM
    refuses to delete what they refer to, and nothing is lost."""
    rollout = publish(draft, dcc, dcc_2)
    # Test setup: a batch row and one hub in it, as a CSP's schedule would leave them.
    batch = Batch.objects.create(
        rollout=rollout,
        name="B1",
        region="north",
        group="safe_launch",
        window_start=rollout.auto_deploy_at - dt.timedelta(days=10),
        window_end=rollout.auto_deploy_at - dt.timedelta(days=9),
    )
    RolloutHub.objects.filter(rollout=rollout, hub__guid="00DB000000000001").update(batch=batch)
    with pytest.raises(ProtectedError) as refused:
        batch.delete()
    assert {type(o) for o in refused.value.protected_objects} == {RolloutHub}
    with pytest.raises(ProtectedError) as refused:
        Rollout.objects.get(pk=rollout.pk).delete()
    assert RolloutHub in {type(o) for o in refused.value.protected_objects}
    assert RolloutHub.objects.filter(rollout=rollout).count() == 4
    assert RolloutHub.objects.get(rollout=rollout, hub__guid="00DB000000000001").batch == batch


@pytest.mark.req("U1")
def test_counters_count_split_hubs_once_per_supplier_and_once_per_csp(
    draft, dcc, dcc_2, csp_north, csp_south, import_supplier, gas_supplier, other_supplier
):
    rollout = publish(draft, dcc, dcc_2)
    got = {
        (c.organisation.name, c.group, c.status): c.hubs
        for c in RolloutCounter.objects.filter(rollout=rollout)
    }
    assert got == {
        ("Volt Energy", "safe_launch", "pending"): 2,  # 01 (import) and 02 (both roles, once)
        ("GasCo", "safe_launch", "pending"): 2,  # 01 and 03
        ("Other Power", "safe_launch", "pending"): 1,  # 04
        ("CSP North", "safe_launch", "pending"): 2,  # 01, 02
        ("CSP South", "safe_launch", "pending"): 2,  # 03, 04
    }
    assert counters.counter_mismatches([rollout.pk]) == []
    RolloutCounter.objects.filter(rollout=rollout, organisation=gas_supplier.organisation).update(hubs=3)
    assert counters.counter_mismatches([rollout.pk]) == [
        (rollout.pk, gas_supplier.organisation_id, "safe_launch", "pending", 2, 3)
    ]


@pytest.mark.req("L9")
@pytest.mark.req("C2")
def test_publishing_an_overlapping_rollout_supersedes_the_older_one(draft, dcc, dcc_2, estate):
    older = publish(draft, dcc, dcc_2)
    newer = new_draft(dcc, estate["v3"], [estate["v1"], estate["v2"]])
    proposal = propose(user=dcc, rollout_id=newer.pk, move="publish")
    assert proposal.details["supersedes"] == [older.reference]  # shown before approval
    assert proposal.details["eligible"] == 5
    approve_proposal(user=dcc_2, proposal_id=proposal.pk)
    older.refresh_from_db()
    assert (older.stage, older.status, older.superseded_by) == (Stage.CLOSURE, Status.SUPERSEDED, newer)
    event = AuditEvent.objects.get(action="rollout.supersede", object_id=str(older.pk))
    assert event.actor == "system" and event.user is None
    assert Notice.objects.filter(rollout=older, kind="rollout.superseded").exists()


# -- P3, P4: who sees what --------------------------------------------------------------------------


@pytest.mark.req("P3")
@pytest.mark.req("P4")
def test_a_supplier_sees_its_hubs_with_role_and_split_flag_never_the_partner(
    draft, dcc, dcc_2, import_supplier, gas_supplier, csp_north
):
    rollout = publish(draft, dcc, dcc_2)
    rows = list(selectors.rollout_hubs_for(import_supplier.organisation, rollout))
    assert [(r["guid"], r["role"], r["split"]) for r in rows] == [
        ("00DB000000000001", "import", True),
        ("00DB000000000002", "import+gas", False),
    ]
    assert all("gas_supplier" not in r and "import_supplier" not in r for r in rows)
    assert [r["role"] for r in selectors.rollout_hubs_for(gas_supplier.organisation, rollout)] == [
        "gas",
        "gas",
    ]
    assert [r["guid"] for r in selectors.rollout_hubs_for(csp_north.organisation, rollout)] == [
        "00DB000000000001",
        "00DB000000000002",
    ]


@pytest.mark.req("P3")
def test_drafts_and_untouched_rollouts_are_invisible_to_other_parties(
    draft, dcc, dcc_2, estate, import_supplier, other_supplier, csp_north
):
    assert list(selectors.rollouts_for(import_supplier.organisation)) == []  # a draft is DCC's only
    assert list(selectors.rollouts_for(dcc.organisation)) == [draft]
    rollout = publish(draft, dcc, dcc_2)
    w2 = FirmwareVersion.objects.create(device_model=estate["other"], version="00010002")
    volt_only = publish(new_draft(dcc, w2, [estate["w1"]]), dcc, dcc_2)  # hub 06: Volt's, north
    assert list(selectors.rollouts_for(import_supplier.organisation).order_by("pk")) == [rollout, volt_only]
    assert list(selectors.rollouts_for(other_supplier.organisation)) == [rollout]
    assert list(selectors.rollouts_for(csp_north.organisation).order_by("pk")) == [rollout, volt_only]


@pytest.mark.req("N2")
@pytest.mark.req("P4")
def test_each_party_is_notified_and_emailed_without_naming_another_supplier(
    draft,
    dcc,
    dcc_2,
    import_supplier,
    gas_supplier,
    other_supplier,
    csp_north,
    django_capture_on_commit_callbacks,
):
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish")
    with django_capture_on_commit_callbacks(execute=True):
        rollout = approve_proposal(user=dcc_2, proposal_id=proposal.pk)
    notices = Notice.objects.filter(rollout=rollout, kind="rollout.published")
    assert sorted(n.organisation.name for n in notices) == sorted(
        ["DCC", "CSP North", "CSP South", "Volt Energy", "GasCo", "Other Power"]
    )
    supplier_names = {"Volt Energy", "GasCo", "Other Power"}
    for notice in notices:
        for name in supplier_names - {notice.organisation.name}:
            assert name not in notice.subject + notice.body
    emailed = {address for message in mail.outbox for address in message.to}
    assert {import_supplier.email, gas_supplier.email, other_supplier.email, csp_north.email} <= emailed


# -- N3, L2, B4 ----------------------------------------------------------------------------------


@pytest.mark.req("N3")
@pytest.mark.req("L2")
def test_revoke_before_distribution_tells_everyone(draft, dcc, dcc_2, csp_north):
    rollout = publish(draft, dcc, dcc_2)
    revoke_rollout(user=dcc, rollout_id=rollout.pk, reason="Wrong build attached")
    assert state(rollout) == (Stage.NOTIFICATION, Status.REVOKED)
    revoked = Notice.objects.filter(rollout=rollout, kind="rollout.revoked")
    assert {n.organisation.name for n in revoked} >= {"CSP North", "Volt Energy", "GasCo"}
    assert "Wrong build attached" in revoked.first().body


@pytest.mark.req("L2")
def test_revoke_is_refused_once_a_hub_is_distributed(draft, dcc, dcc_2, csp_north):
    rollout = publish(draft, dcc, dcc_2)
    RolloutHub.objects.filter(rollout=rollout, hub__guid="00DB000000000001").update(status="distributed")
    counters.recount([rollout.pk])
    with pytest.raises(ValidationError, match="stop the rollout instead"):
        revoke_rollout(user=dcc, rollout_id=rollout.pk, reason="Too late")
    assert state(rollout) == (Stage.NOTIFICATION, Status.ACTIVE)


@pytest.mark.req("B4")
def test_a_proposal_lapses_when_the_rollout_changes_state_first(draft, dcc, dcc_2):
    rollout = publish(draft, dcc, dcc_2)
    stop = propose(user=dcc, rollout_id=rollout.pk, move="stop", reason="Field reports")
    suspend_rollout(user=dcc_2, rollout_id=rollout.pk, reason="Emergency")
    stop.refresh_from_db()
    assert stop.state == ProposalState.LAPSED
    with pytest.raises(ValidationError, match="already lapsed"):
        approve_proposal(user=dcc_2, proposal_id=stop.pk)
    assert state(rollout) == (Stage.NOTIFICATION, Status.SUSPENDED)


@pytest.mark.req("B4")
@pytest.mark.req("X1")
def test_a_rejected_proposal_changes_nothing_and_is_audited_with_its_comment(draft, dcc, dcc_2):
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish", reason="Ready")
    with pytest.raises(ValidationError):
        reject_proposal(user=dcc_2, proposal_id=proposal.pk, comment="  ")
    reject_proposal(user=dcc_2, proposal_id=proposal.pk, comment="Release note link is wrong")
    assert state(draft) == (Stage.NOTIFICATION, Status.DRAFT)
    event = AuditEvent.objects.get(action="proposal.reject")
    assert event.user == dcc_2 and event.details["comment"] == "Release note link is wrong"


@pytest.mark.req("B4")
def test_the_approval_is_audited_with_proposer_and_approver(draft, dcc, dcc_2):
    rollout = publish(draft, dcc, dcc_2)
    event = AuditEvent.objects.get(action="rollout.publish", object_id=str(rollout.pk))
    assert (event.details["proposed_by"], event.details["approved_by"], event.user) == (
        dcc.email,
        dcc_2.email,
        dcc_2,
    )


def test_only_dcc_can_propose(draft, csp_north, import_supplier):
    for user in (csp_north, import_supplier):
        with pytest.raises(PermissionDenied):
            propose(user=user, rollout_id=draft.pk, move="publish")


# -- N4 ----------------------------------------------------------------------------------------


@pytest.mark.req("N4")
def test_a_withdrawn_firmware_blocks_safe_launch_and_asks_dcc_to_stop_or_supersede(estate, dcc, dcc_2):
    rollout = publish(new_draft(dcc, estate["v2"], [estate["v1"]], impact="security"), dcc, dcc_2)
    withdraw_firmware(user=dcc, version_id=estate["v2"].pk, reason="Bricks hubs with old radios")
    with pytest.raises(ValidationError, match="withdrawn"):
        start_safe_launch_without_pilot(user=dcc, rollout_id=rollout.pk)
    assert state(rollout) == (Stage.NOTIFICATION, Status.ACTIVE)
    rollout.refresh_from_db()
    from rollouts.outstanding import outstanding_actions_for

    assert [a.text for a in outstanding_actions_for(dcc.organisation) if a.rollout == rollout] == [
        "Stop or supersede: the target firmware was withdrawn."
    ]
    assert Notice.objects.filter(rollout=rollout, kind="firmware.withdrawn").exists()


@pytest.mark.req("T1")
def test_dcc_may_set_another_automatic_time_only_with_a_reason_suppliers_see(
    estate, dcc, dcc_2, import_supplier
):
    chosen = dt.datetime(2027, 3, 1, 0, 0, tzinfo=UK)
    with pytest.raises(ValidationError, match="Give the reason"):
        new_draft(dcc, estate["v2"], [estate["v1"]], auto_deploy_at=chosen)
    rollout = publish(
        new_draft(
            dcc,
            estate["v2"],
            [estate["v1"]],
            auto_deploy_at=chosen,
            auto_deploy_reason="Aligned with the spring maintenance window",
        ),
        dcc,
        dcc_2,
    )
    assert rollout.auto_deploy_at == chosen
    seen = selectors.get_rollout_for(import_supplier.organisation, rollout.pk)
    assert seen.auto_deploy_override_reason == "Aligned with the spring maintenance window"


@pytest.mark.req("U1")
@pytest.mark.req("P3")
def test_notices_have_read_state_per_user_and_only_for_the_own_organisation(
    draft, dcc, dcc_2, import_supplier, import_supplier_member, other_supplier
):
    from rollouts.services.notifications import mark_notices_read

    publish(draft, dcc, dcc_2)
    mine = list(selectors.notices_for(import_supplier))
    assert [n.kind for n in mine] == ["rollout.published"] and not mine[0].is_read
    theirs = selectors.notices_for(other_supplier).get()
    assert mark_notices_read(user=import_supplier, notice_ids=[mine[0].pk, theirs.pk]) == 1
    assert selectors.notices_for(import_supplier).get().is_read
    assert not selectors.notices_for(import_supplier_member).get().is_read  # per user
    assert not selectors.notices_for(other_supplier).get().is_read


@pytest.mark.req("C2")
def test_publishing_over_a_piloting_rollout_voids_its_pilot(draft, dcc, dcc_2, estate):
    from rollouts.models import Batch

    older = publish(draft, dcc, dcc_2)
    Rollout.objects.filter(pk=older.pk).update(stage=Stage.PILOTING)  # test setup: a pilot under way
    batch = Batch.objects.create(
        rollout=older,
        region="north",
        group="pilot",
        name="P1",
        window_start=dt.datetime(2026, 12, 1, tzinfo=UK),
        window_end=dt.datetime(2026, 12, 8, tzinfo=UK),
    )
    publish(new_draft(dcc, estate["v3"], [estate["v1"]]), dcc, dcc_2)
    batch.refresh_from_db()
    assert batch.held  # nothing more is distributed under the void pilot
    assert state(older) == (Stage.CLOSURE, Status.SUPERSEDED)
    assert AuditEvent.objects.filter(object_id=str(older.pk), action__contains="void").exists()


# -- N1: initiating a rollout ---------------------------------------------------------------------------


@pytest.mark.req("N1")
def test_a_draft_holds_every_n1_field_and_is_audited(estate, dcc):
    start = dt.datetime(2027, 1, 4, 9, 0, tzinfo=ZoneInfo("Europe/London"))
    draft = new_draft(
        dcc,
        estate["v2"],
        [estate["v1"]],
        pilot_max=250,
        contribution_minimum=5,
        pilot_start=start,
        pilot_end=start + dt.timedelta(days=28),
    )
    assert (draft.stage, draft.status) == ("NOTIFICATION", "DRAFT")
    assert draft.device_model == estate["model"] and list(draft.replaced_versions.all()) == [estate["v1"]]
    assert (draft.severity, draft.priority, draft.release_type, draft.impact) == (
        "high",
        "high",
        "sec_release",
        "functional",
    )
    assert (draft.pilot_max, draft.contribution_minimum, draft.has_pilot) == (250, 5, True)
    event = AuditEvent.objects.get(action="rollout.create", object_id=str(draft.pk))
    assert event.details["replaces"] == ["0002012F"] and event.details["target"] == "00020130"


@pytest.mark.req("N1")
@pytest.mark.parametrize("impact", ["operational", "security"])
def test_operational_and_security_releases_have_no_pilot(estate, dcc, impact):
    assert not new_draft(dcc, estate["v2"], [estate["v1"]], impact=impact).has_pilot


@pytest.mark.req("N1")
@pytest.mark.parametrize(
    ("replaced", "extra", "field", "message"),
    [
        ([], {}, "replaced_versions", "upgrade path"),
        (["w1"], {}, "replaced_versions", "same device model"),
        (["v1", "v2"], {}, "replaced_versions", "cannot also be a replaced version"),
        (["v1"], {"pilot_end_days": -1}, "pilot_end", "must end after it starts"),
        (["v1"], {"pilot_end_days": 200}, "pilot_end", "at most 6 months"),
        (["v1"], {"auto_deploy_at": dt.datetime(2027, 3, 1, tzinfo=dt.UTC)}, "auto_deploy_reason", "reason"),
    ],
)
def test_a_draft_with_a_wrong_field_is_refused_and_nothing_is_created(
    estate, dcc, replaced, extra, field, message
):
    extra = dict(extra)
    if days := extra.pop("pilot_end_days", None):
        start = dt.datetime(2027, 1, 4, 9, 0, tzinfo=dt.UTC)
        extra |= {"pilot_start": start, "pilot_end": start + dt.timedelta(days=days)}
    with pytest.raises(ValidationError) as refused:
        new_draft(dcc, estate["v2"], [estate[name] for name in replaced], **extra)
    assert message in refused.value.message_dict[field][0]
    assert not Rollout.objects.exists() and not AuditEvent.objects.filter(action="rollout.create").exists()


@pytest.mark.req("N1")
@pytest.mark.req("N4")
def test_a_withdrawn_version_cannot_be_the_target(estate, dcc):
    FirmwareVersion.objects.filter(pk=estate["v2"].pk).update(  # test setup: withdrawn from the CPL (N4)
        withdrawn_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), withdrawn_reason="Bricks hubs"
    )
    estate["v2"].refresh_from_db()
    with pytest.raises(ValidationError) as refused:
        new_draft(dcc, estate["v2"], [estate["v1"]])
    assert "withdrawn" in refused.value.message_dict["target_version"][0]


@pytest.mark.req("N1")
@pytest.mark.req("P2")
def test_only_dcc_initiates_a_rollout(estate, csp_north, import_supplier):
    for user in (csp_north, import_supplier):
        with pytest.raises(PermissionDenied):
            new_draft(user, estate["v2"], [estate["v1"]])
