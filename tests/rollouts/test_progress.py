"""Deployment progress: status feeds (PL9, SL4, U3), the failure threshold (B1), retry (B2), the
System's start of safe launch (L5, PL10) and the closure counts (C1). Expected values come from the
requirements, never from the code under test."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone

from rollouts import tasks
from rollouts.models import (
    Batch,
    Hub,
    HubEvent,
    Incident,
    Notice,
    Rollout,
    RolloutHub,
    SmiVersionUpdate,
    Stage,
    Status,
    UploadState,
)
from rollouts.services import progress
from rollouts.services.counters import counter_mismatches
from rollouts.services.inventory import load_inventory
from rollouts.services.lifecycle import (
    approve_proposal,
    pause_rollout,
    propose,
    start_pilot,
    withdraw_firmware,
)
from rollouts.services.piloting import upload_default_pilot_list
from rollouts.services.progress import (
    StatusFeedHandler,
    closure_summary,
    hub_timeline_for,
    post_pilot_success_and_continue,
    retry_failed_hubs,
    start_due_safe_launches,
    submit_status_feed,
    threshold_crossed,
)
from rollouts.services.schedules import hold_batch, upload_default_pilot_schedule, upload_safe_launch_schedule
from rollouts.services.smi import apply_smi_versions

from .conftest import inventory, new_draft
from .test_lifecycle import publish

SPLIT = "00DB000000000001"  # north, Volt (import) + GasCo (gas)
BOTH = "00DB000000000002"  # north, Volt both roles
GAS_SOUTH = "00DB000000000003"  # south, GasCo only
OTHER_SOUTH = "00DB000000000004"  # south, Other Power only
NOT_ELIGIBLE = "00DB000000000005"  # north, already on the target version
TARGET = "00020130"  # v2, the target of `draft`
OLD = "0002012F"  # v1


@pytest.fixture(autouse=True, params=["whole", "looked_up"])
def feed_way(request, monkeypatch):
    """Every test here runs both ways a feed finds its rollout rows (StatusFeedHandler._rollout_rows_source):
    the live batches' rows read whole, with a lookup only for a record that meets none of them, and every
    record looked up. The answers must be the same; afterwards, the feeds went the way asked."""
    whole = request.param == "whole"
    monkeypatch.setattr(progress, "FEED_WHOLE_BATCHES_RATIO", 10**9 if whole else 0)
    went = []
    choose = StatusFeedHandler._rollout_rows_source

    def spy(self, staging):
        source = choose(self, staging)
        went.append((self.live_hubs > 0, self.whole_batches))
        return source

    monkeypatch.setattr(StatusFeedHandler, "_rollout_rows_source", spy)
    yield request.param
    assert went == [(live, whole and live) for live, _ in went]  # without a live hub, looked up


def ago(hours: float) -> str:
    return (timezone.now() - dt.timedelta(hours=hours)).isoformat()


def csv_file(*rows: str, header: str = "guid") -> ContentFile:
    return ContentFile((header + "\n" + "".join(r + "\n" for r in rows)).encode(), name="list.csv")


def feed(user, rollout, *records: tuple):
    """records: (guid, status, at[, reason[, firmware_version]])"""
    rows = []
    for record in records:
        guid, status, at, *rest = record
        reason = rest[0] if rest else ""
        version = rest[1] if len(rest) > 1 else (TARGET if status == "activated" else "")
        rows.append({"guid": guid, "status": status, "at": at, "reason": reason, "firmware_version": version})
    return submit_status_feed(user=user, rollout_id=rollout.pk, records=rows)


def codes(upload) -> list[tuple[int | None, str, str]]:
    return [(e.row, e.column, e.code) for e in upload.errors.order_by("row", "id")]


def status_of(rollout, guid) -> tuple[str, str]:
    row = RolloutHub.objects.get(rollout=rollout, hub__guid=guid)
    return row.status, row.failure_reason


def state(rollout) -> tuple[str, str]:
    rollout.refresh_from_db()
    return rollout.stage, rollout.status


def start_piloting(rollout, dcc, csp_north, csp_south) -> Rollout:
    """The real path: default pilot lists, default pilot schedules (one batch per region), start_pilot."""
    start = timezone.now() + dt.timedelta(days=1)
    window = (start.isoformat(), (start + dt.timedelta(days=4)).isoformat())
    upload_default_pilot_list(user=csp_north, rollout_id=rollout.pk, content=csv_file(SPLIT, BOTH))
    upload_default_pilot_list(user=csp_south, rollout_id=rollout.pk, content=csv_file(GAS_SOUTH, OTHER_SOUTH))
    header = "batch,guid,window_start,window_end"
    for user, name, guids in ((csp_north, "PN", (SPLIT, BOTH)), (csp_south, "PS", (GAS_SOUTH, OTHER_SOUTH))):
        upload = upload_default_pilot_schedule(
            user=user,
            rollout_id=rollout.pk,
            content=csv_file(*(f"{name},{g},{window[0]},{window[1]}" for g in guids), header=header),
        )
        assert upload.state == UploadState.APPLIED, codes(upload)
    start_pilot(user=dcc, rollout_id=rollout.pk)
    return rollout


def set_threshold(rollout, pct, minimum) -> None:
    # Test setup: DCC's per-rollout threshold (B1).
    Rollout.objects.filter(pk=rollout.pk).update(
        failure_threshold_pct=pct, failure_threshold_min_reported=minimum
    )


@pytest.fixture
def piloting(draft, dcc, dcc_2, csp_north, csp_south) -> Rollout:
    rollout = publish(draft, dcc, dcc_2)
    set_threshold(rollout, 100, 1)  # never crossed unless a test says so
    # Test setup: published a month ago, so the feeds' times (hours ago) come after publication.
    RolloutHub.objects.filter(rollout=rollout).update(status_at=timezone.now() - dt.timedelta(days=30))
    return start_piloting(rollout, dcc, csp_north, csp_south)


# -- PL9, SL4: the feed ------------------------------------------------------------------------------


@pytest.mark.req("PL9")
@pytest.mark.req("U1")
@pytest.mark.req("U3")
def test_a_feed_moves_hubs_forward_keeps_the_timeline_and_updates_the_smi(
    piloting, csp_north, estate, django_capture_on_commit_callbacks
):
    feed(csp_north, piloting, (BOTH, "scheduled", ago(5)))
    feed(csp_north, piloting, (BOTH, "distributed", ago(4)))
    with django_capture_on_commit_callbacks(execute=True):  # the commit queues the SMI's update: run here
        upload = feed(csp_north, piloting, (BOTH, "activated", ago(3)))
    assert upload.state == UploadState.APPLIED
    assert status_of(piloting, BOTH) == ("activated", "")
    assert Hub.objects.get(guid=BOTH).firmware_version == estate["v2"]
    assert list(
        HubEvent.objects.filter(rollout=piloting).order_by("at").values_list("status", flat=True)
    ) == [
        "scheduled",
        "distributed",
        "activated",
    ]
    assert counter_mismatches() == []


@pytest.mark.req("L10")
@pytest.mark.req("U1")
def test_a_feed_whose_hub_rows_changed_after_its_check_applies_nothing(piloting, csp_north, monkeypatch):
    """A feed finds each hub row where its check read it (same transaction). Every writer takes the rollout
    lock first (L10), so no row changes in between; if one ever did, the feed must not apply in part."""
    real_check = StatusFeedHandler.check

    def check_then_change_a_row(self, staging, upload):
        real_check(self, staging, upload)
        RolloutHub.objects.filter(rollout=piloting, hub__guid=BOTH).update(failure_reason="")  # a new version

    monkeypatch.setattr(StatusFeedHandler, "check", check_then_change_a_row)
    with pytest.raises(RuntimeError, match="moved 1 of the 2 hubs"):
        feed(csp_north, piloting, (SPLIT, "distributed", ago(5)), (BOTH, "distributed", ago(5)))
    assert status_of(piloting, SPLIT) == status_of(piloting, BOTH) == ("pending", "")
    assert counter_mismatches() == []


def _hub_updates() -> tuple[int, int]:
    """This transaction's row updates of the hub table so far: (all, HOT)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated('rollouts_hub'::regclass),"
            " pg_stat_get_xact_tuples_hot_updated('rollouts_hub'::regclass)"
        )
        return cursor.fetchone()


def on_v2(estate) -> set[str]:
    return set(
        Hub.objects.filter(guid__in=[SPLIT, BOTH], firmware_version=estate["v2"]).values_list(
            "guid", flat=True
        )
    )


@pytest.mark.req("U3")
def test_the_smi_version_update_of_an_activation_is_a_hot_update_right_after_the_feed(
    piloting, csp_north, estate, django_capture_on_commit_callbacks
):
    """A feed queues its activations' SMI versions and the commit sends the task that writes them, which
    rewrites each hub's version in place (a HOT update: no index entry): a 30M-row table only allows that
    when no index holds the columns it writes and its pages keep room."""
    feed(csp_north, piloting, (SPLIT, "distributed", ago(4)), (BOTH, "distributed", ago(4)))
    before = _hub_updates()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = feed(csp_north, piloting, (SPLIT, "activated", ago(3)), (BOTH, "activated", ago(3)))
    assert upload.summary["smi_versions_queued"] == 2
    assert _hub_updates() == before and on_v2(estate) == set()  # the feed itself writes no hub row
    assert tasks.apply_smi_versions.delay in callbacks  # its commit sends the task
    assert apply_smi_versions() == 2
    assert on_v2(estate) == {SPLIT, BOTH} and not SmiVersionUpdate.objects.exists()
    updated, hot = (after - was for after, was in zip(_hub_updates(), before, strict=True))
    assert (updated, hot) == (2, 2)
    with connection.cursor() as cursor:  # the room on each page, for estates loaded by COPY
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'rollouts_hub'")
        options = cursor.fetchone()[0]
    assert "fillfactor=90" in options
    # ... and autovacuum soon after such writes, so that the next feed's hub lookups read the index alone
    # (migrations 0025, 0026): after 10,000 + 0.5% of the hubs changed, not after a fifth of the estate.
    assert {"autovacuum_vacuum_scale_factor=0.005", "autovacuum_vacuum_threshold=10000"} <= set(options)


@pytest.mark.req("PL9")
def test_a_status_feed_file_goes_through_the_same_pipeline(piloting, csp_north):
    content = ContentFile(
        f"guid,status,at,reason,firmware_version\n{SPLIT},failed,{ago(2)},HAN join timeout,\n".encode(),
        name="feed.csv",
    )
    upload = submit_status_feed(user=csp_north, rollout_id=piloting.pk, content=content, name="feed.csv")
    assert upload.state == UploadState.APPLIED
    assert status_of(piloting, SPLIT) == ("failed", "HAN join timeout")


@pytest.mark.req("PL9")
@pytest.mark.req("U1")
def test_an_older_record_never_overwrites_a_newer_status(piloting, csp_north):
    feed(csp_north, piloting, (BOTH, "activated", ago(1)))
    upload = feed(csp_north, piloting, (BOTH, "distributed", ago(6)))  # arrives late
    assert upload.state == UploadState.APPLIED
    assert status_of(piloting, BOTH) == ("activated", "")
    assert HubEvent.objects.filter(rollout=piloting, hub__guid=BOTH).count() == 2  # the timeline keeps it
    assert counter_mismatches() == []


@pytest.mark.req("PL9")
@pytest.mark.req("U3")
def test_resending_a_feed_changes_nothing(piloting, csp_north, import_supplier):
    records = ((BOTH, "activated", ago(2)), (SPLIT, "failed", ago(2), "WAN signal lost"))
    feed(csp_north, piloting, *records)
    events = HubEvent.objects.count()
    notices = Notice.objects.count()
    again = feed(csp_north, piloting, *records)
    assert again.state == UploadState.APPLIED
    assert again.summary["moved"] == 0
    assert HubEvent.objects.count() == events
    assert Notice.objects.count() == notices
    assert status_of(piloting, SPLIT) == ("failed", "WAN signal lost")
    assert counter_mismatches() == []


@pytest.mark.req("PL9")
@pytest.mark.req("X3")
def test_a_newer_record_cannot_move_a_hub_backwards(piloting, csp_north):
    feed(csp_north, piloting, (BOTH, "activated", ago(3)))
    upload = feed(csp_north, piloting, (BOTH, "scheduled", ago(1)), (SPLIT, "distributed", ago(1)))
    assert upload.state == UploadState.REJECTED
    assert codes(upload) == [(2, "status", "status_invalid")]  # row 1 is the header
    assert status_of(piloting, SPLIT) == ("pending", "")  # all or nothing


@pytest.mark.req("PL9")
@pytest.mark.req("P3")
@pytest.mark.req("X3")
def test_every_bad_record_is_refused_with_its_reason_code(piloting, csp_north):
    upload = feed(
        csp_north,
        piloting,
        (BOTH, "failed", ago(1), ""),
        (SPLIT, "activated", ago(1), "", ""),
        (GAS_SOUTH, "distributed", ago(1)),  # another region's hub
        (NOT_ELIGIBLE, "distributed", ago(1)),  # north, not in the rollout
        ("00DB000000000099", "scheduled", ago(1)),  # unknown
        ("00DB000000000006", "exploded", ago(1)),  # unknown status (hub of another model)
    )
    assert upload.state == UploadState.REJECTED
    assert codes(upload) == [
        (2, "reason", "reason_missing"),
        (3, "firmware_version", "version_missing"),
        (4, "guid", "guid_not_in_region"),
        (5, "guid", "hub_not_in_live_batch"),
        (6, "guid", "guid_not_in_region"),
        (7, "guid", "hub_not_in_live_batch"),
        (7, "status", "value_invalid"),
    ]
    assert not HubEvent.objects.exists()


@pytest.mark.req("PL9")
@pytest.mark.req("P3")
def test_a_pilot_hub_that_left_the_smi_or_its_region_is_refused_from_its_batch(
    piloting, csp_north, import_supplier, gas_supplier, other_supplier
):
    """Both hubs stay in batch PN: BOTH has left the SMI, SPLIT now belongs to the south. North's feed
    reporting them is refused as for any hub it may no longer report (P3: SPLIT is not in its region)."""
    volt, gasco, oscar = (u.organisation.slug for u in (import_supplier, gas_supplier, other_supplier))
    load_inventory(
        user=None,
        mode="full",
        content=inventory(
            f"{SPLIT},010A030B,{OLD},south,{volt},{gasco},",
            f"{GAS_SOUTH},010A030B,{OLD},south,,{gasco},",
            f"{OTHER_SOUTH},010A030B,{OLD},south,{oscar},,",
            f"{NOT_ELIGIBLE},010A030B,{TARGET},north,{volt},,",
        ),
    )
    pn = Batch.objects.get(rollout=piloting, name="PN")
    assert set(RolloutHub.objects.filter(batch=pn).values_list("hub__guid", "status", "region")) == {
        (SPLIT, "pending", "south"),
        (BOTH, "left", "north"),
    }
    upload = feed(csp_north, piloting, (BOTH, "scheduled", ago(1)), (SPLIT, "scheduled", ago(1)))
    assert codes(upload) == [(2, "guid", "hub_not_in_live_batch"), (3, "guid", "guid_not_in_region")]
    assert upload.errors.get(row=2).message == "This Communications Hub has left the SMI."
    assert RolloutHub.objects.get(rollout=piloting, hub__guid=BOTH).status == "left"
    # BOTH comes back: pending again, in no batch, and PN's figures (Batch.hubs: SPLIT alone) still a recount.
    load_inventory(user=None, content=inventory(f"{BOTH},010A030B,{OLD},north,{volt},{volt},"))
    back = RolloutHub.objects.get(rollout=piloting, hub__guid=BOTH)
    assert (back.status, back.batch_id) == ("pending", None)
    assert Batch.objects.get(pk=pn.pk).hubs == 1
    assert counter_mismatches([piloting.pk]) == []


@pytest.mark.req("PL9")
def test_a_published_rollout_before_its_pilot_has_no_live_batch(draft, dcc, dcc_2, csp_north):
    rollout = publish(draft, dcc, dcc_2)
    upload = feed(csp_north, rollout, (BOTH, "distributed", ago(1)))
    assert codes(upload) == [(2, "guid", "hub_not_in_live_batch")]  # row 1 is the header


@pytest.mark.req("PL9")
@pytest.mark.req("L6")
def test_a_paused_rollout_cannot_distribute_or_activate_but_failures_are_recorded(piloting, dcc, csp_north):
    pause_rollout(user=dcc, rollout_id=piloting.pk, reason="Investigating")
    upload = feed(csp_north, piloting, (BOTH, "distributed", ago(1)), (SPLIT, "activated", ago(1)))
    assert codes(upload) == [(2, "status", "rollout_on_hold"), (3, "status", "rollout_on_hold")]
    upload = feed(csp_north, piloting, (SPLIT, "failed", ago(1), "power loss during activation"))
    assert upload.state == UploadState.APPLIED
    assert status_of(piloting, SPLIT) == ("failed", "power loss during activation")


@pytest.mark.req("SL3")
@pytest.mark.req("PL9")
def test_a_held_batch_cannot_distribute(piloting, dcc, csp_north):
    hold_batch(user=dcc, batch_id=Batch.objects.get(rollout=piloting, name="PN").pk, reason="CSP maintenance")
    upload = feed(csp_north, piloting, (BOTH, "distributed", ago(1)))
    assert codes(upload) == [(2, "status", "rollout_on_hold")]


@pytest.mark.req("P2")
def test_only_a_csp_submits_a_feed(piloting, import_supplier, dcc):
    for user in (import_supplier, dcc):
        with pytest.raises(PermissionDenied):
            feed(user, piloting, (BOTH, "scheduled", ago(1)))


# -- U3 ---------------------------------------------------------------------------------------------


@pytest.mark.req("U3")
def test_activation_on_another_version_is_a_failure_with_that_reason(piloting, csp_north, estate):
    feed(csp_north, piloting, (BOTH, "activated", ago(1), "", OLD))
    assert status_of(piloting, BOTH) == ("failed", "reported firmware 0002012F, expected 00020130")
    assert Hub.objects.get(guid=BOTH).firmware_version == estate["v1"]  # the SMI keeps the old version
    assert counter_mismatches() == []


@pytest.mark.req("PL9")
@pytest.mark.req("U1")
@pytest.mark.req("U3")
def test_a_mixed_feed_reports_its_figures_once_and_each_supplier_counts_its_own_hubs(
    piloting, csp_north, import_supplier, gas_supplier, estate
):
    feed(csp_north, piloting, (SPLIT, "distributed", ago(6)))
    # BOTH activates on the target; SPLIT reports another version, so it fails with that reason (U3).
    at = ago(2)
    upload = feed(csp_north, piloting, (BOTH, "activated", at), (SPLIT, "activated", at, "", OLD))
    figures = {k: upload.summary[k] for k in ("moved", "activated", "failed", "failed_wrong_version")}
    assert figures == {"moved": 2, "activated": 1, "failed": 1, "failed_wrong_version": 1}
    assert (upload.summary["smi_versions_queued"], upload.summary["events"]) == (1, 2)
    assert apply_smi_versions() == 1
    assert Hub.objects.get(guid=BOTH).firmware_version == estate["v2"]
    assert Hub.objects.get(guid=SPLIT).firmware_version == estate["v1"]
    # Volt holds both hubs (import of the split one), GasCo only the split one's gas role: one notice each.
    volt = Notice.objects.get(organisation=import_supplier.organisation, kind="progress.outcomes")
    gasco = Notice.objects.get(organisation=gas_supplier.organisation, kind="progress.outcomes")
    assert "1 of your hubs activated firmware 00020130 and 1 of your hubs failed" in volt.body
    assert "1 of your hubs failed" in gasco.body and "activated firmware" not in gasco.body
    assert counter_mismatches() == []
    again = feed(csp_north, piloting, (BOTH, "activated", at), (SPLIT, "activated", at, "", OLD))
    assert (again.summary["moved"], again.summary["events"], again.summary["smi_versions_queued"]) == (
        0,
        0,
        0,
    )
    assert Notice.objects.filter(kind="progress.outcomes").count() == 2  # nothing new to tell
    assert counter_mismatches() == []


@pytest.mark.req("U3")
@pytest.mark.req("N2")
def test_a_publication_reads_every_smi_version_a_feed_has_confirmed(piloting, csp_north, dcc, dcc_2, estate):
    """BOTH activates v2 and its SMI version waits for the worker; a rollout replacing v2 is published in
    that moment. Eligibility is the SMI's version (N2), so BOTH must be in it, with hub 05 (on v2 from the
    start); SPLIT, still on v1, must not."""
    feed(csp_north, piloting, (BOTH, "activated", ago(2)))
    assert SmiVersionUpdate.objects.count() == 1  # waiting: no worker has run
    newer = publish(new_draft(dcc, estate["v3"], [estate["v2"]]), dcc, dcc_2)
    enrolled = set(RolloutHub.objects.filter(rollout=newer).values_list("hub__guid", flat=True))
    assert enrolled == {BOTH, NOT_ELIGIBLE}
    assert not SmiVersionUpdate.objects.exists()


@pytest.mark.req("U3")
@pytest.mark.req("B3")
def test_an_inventory_load_compares_with_every_smi_version_a_feed_has_confirmed(
    piloting, csp_north, import_supplier
):
    """BOTH activates v2 and its SMI version waits; an inventory load that states BOTH on v2 then finds
    nothing changed: its change log would otherwise record a version change the hub never made."""
    feed(csp_north, piloting, (BOTH, "activated", ago(2)))
    volt = import_supplier.organisation.slug
    upload = load_inventory(user=None, content=inventory(f"{BOTH},010A030B,{TARGET},north,{volt},{volt},"))
    assert (upload.summary["updated"], upload.summary["version_changed"]) == (0, 0)
    assert not SmiVersionUpdate.objects.exists()
    assert status_of(piloting, BOTH) == ("activated", "")


@pytest.mark.req("U3")
def test_a_feed_whose_task_cannot_be_sent_is_applied_and_its_smi_versions_wait_for_the_beat_job(
    piloting, csp_north, estate, monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down():
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(tasks.apply_smi_versions, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        upload = feed(csp_north, piloting, (BOTH, "activated", ago(2)))
    assert upload.state == UploadState.APPLIED and status_of(piloting, BOTH) == ("activated", "")
    assert Hub.objects.get(guid=BOTH).firmware_version == estate["v1"]  # waiting, not lost
    monkeypatch.undo()
    assert tasks.apply_smi_versions() == 1  # the beat job's run
    assert Hub.objects.get(guid=BOTH).firmware_version == estate["v2"]


@pytest.mark.req("U3")
def test_two_waiting_activations_of_a_hub_leave_the_later_records_version(piloting, csp_north, estate):
    """The same hub activated by two feeds before the worker runs (here: two rows for one hub, the second
    with an earlier record time, as a delayed file would give): the later record's version wins."""
    feed(csp_north, piloting, (BOTH, "activated", ago(2)))
    (first,) = SmiVersionUpdate.objects.all()
    earlier = timezone.now() - dt.timedelta(hours=5)
    SmiVersionUpdate.objects.create(
        upload=first.upload, version=estate["v3"], hub_ids=first.hub_ids, ats=[earlier]
    )
    assert apply_smi_versions() == 1
    assert Hub.objects.get(guid=BOTH).firmware_version == estate["v2"]


@pytest.mark.req("U3")
@pytest.mark.req("P4")
def test_each_current_supplier_gets_one_aggregated_notice_per_feed(
    piloting, csp_north, import_supplier, gas_supplier
):
    feed(csp_north, piloting, (BOTH, "activated", ago(1)), (SPLIT, "activated", ago(1)))
    volt = Notice.objects.filter(organisation=import_supplier.organisation, kind="progress.outcomes")
    gasco = Notice.objects.filter(organisation=gas_supplier.organisation, kind="progress.outcomes")
    assert volt.count() == 1 and gasco.count() == 1
    assert "2 of your hubs activated firmware 00020130" in volt.get().body
    assert "1 of your hubs activated firmware 00020130" in gasco.get().body
    assert f"/ssi/rollouts/{piloting.pk}/" in volt.get().body  # a link, not a list of hubs
    assert "Volt" not in gasco.get().body and "GasCo" not in volt.get().body


@pytest.mark.req("PL9")
def test_the_pilot_deployment_start_and_end_are_notified(piloting, csp_north, csp_south, import_supplier):
    feed(csp_north, piloting, (BOTH, "scheduled", ago(9)))
    assert not Notice.objects.filter(kind="pilot.deployment_started").exists()  # scheduled is not a start
    feed(csp_north, piloting, (BOTH, "distributed", ago(8)))
    assert (
        Notice.objects.filter(
            kind="pilot.deployment_started", organisation=import_supplier.organisation
        ).count()
        == 1
    )
    feed(csp_north, piloting, (BOTH, "activated", ago(7)), (SPLIT, "failed", ago(7), "HAN join timeout"))
    feed(csp_south, piloting, (GAS_SOUTH, "activated", ago(6)))
    assert not Notice.objects.filter(kind="pilot.deployment_ended").exists()
    feed(csp_south, piloting, (OTHER_SOUTH, "activated", ago(5)))
    ended = Notice.objects.filter(kind="pilot.deployment_ended", organisation=import_supplier.organisation)
    assert ended.count() == 1
    assert "3 activated, 1 failed" in ended.get().body
    assert (
        Notice.objects.filter(kind="pilot.deployment_started").count()
        == Notice.objects.filter(kind="pilot.deployment_ended").count()
    )


@pytest.mark.req("PL9")
@pytest.mark.req("P3")
def test_a_pilot_hubs_timeline_is_visible_to_its_suppliers_and_dcc_only(
    piloting, csp_north, dcc, import_supplier, gas_supplier, other_supplier
):
    feed(csp_north, piloting, (BOTH, "distributed", ago(2)))
    assert hub_timeline_for(dcc.organisation, piloting, BOTH).count() == 1
    assert hub_timeline_for(import_supplier.organisation, piloting, BOTH).count() == 1
    assert hub_timeline_for(gas_supplier.organisation, piloting, BOTH).count() == 0
    assert hub_timeline_for(other_supplier.organisation, piloting, BOTH).count() == 0


# -- B1 ---------------------------------------------------------------------------------------------


@pytest.mark.req("B1")
@pytest.mark.parametrize(
    ("failed", "reported", "crossed"),
    [
        (1, 21, False),  # 4.76%: just under 5%
        (1, 20, False),  # exactly 5%: "passes" means over it
        (2, 39, True),  # 5.13%: just over
        (2, 19, False),  # over 5% but fewer than 20 reported
        (20, 20, True),  # the minimum reached exactly
    ],
)
def test_the_threshold_passes_only_over_the_share_after_the_minimum_reported(failed, reported, crossed):
    rollout = Rollout(failure_threshold_pct=Decimal("5"), failure_threshold_min_reported=20)
    assert threshold_crossed(failed, reported, rollout) is crossed


@pytest.mark.req("B1")
@pytest.mark.req("I1")
@pytest.mark.req("U1")
def test_a_batch_over_the_threshold_pauses_the_rollout_and_opens_one_incident(piloting, csp_north, dcc):
    set_threshold(piloting, 40, 2)
    feed(csp_north, piloting, (BOTH, "failed", ago(3), "image checksum mismatch"))
    assert state(piloting) == (Stage.PILOTING, Status.ACTIVE)  # 1 reported: under the minimum
    feed(csp_north, piloting, (SPLIT, "activated", ago(2)))  # 1 of 2 failed: 50% > 40%
    assert state(piloting) == (Stage.PILOTING, Status.PAUSED)
    batch = Batch.objects.get(rollout=piloting, name="PN")
    incident = Incident.objects.get(rollout=piloting, figures__scope=f"batch:{batch.pk}")
    assert incident.raised_by_org is None and incident.raised_by is None
    assert {k: incident.figures[k] for k in ("failed", "reported", "share", "threshold", "batch")} == {
        "failed": 1,
        "reported": 2,
        "share": 50.0,
        "threshold": 40.0,
        "batch": batch.pk,
    }
    assert Notice.objects.filter(kind="incident.threshold", organisation=dcc.organisation).exists()
    before = Incident.objects.count()
    feed(csp_north, piloting, (SPLIT, "activated", ago(1)))  # a repeat: not again for the same crossing
    assert Incident.objects.count() == before
    assert counter_mismatches() == []


@pytest.mark.req("B1")
def test_a_batch_exactly_at_the_threshold_does_not_pause(piloting, csp_north):
    set_threshold(piloting, 50, 2)
    feed(csp_north, piloting, (BOTH, "failed", ago(3), "HAN join timeout"), (SPLIT, "activated", ago(3)))
    assert state(piloting) == (Stage.PILOTING, Status.ACTIVE)
    assert not Incident.objects.exists()


@pytest.mark.req("B1")
def test_the_pilot_as_a_whole_crosses_the_threshold(piloting, csp_north, csp_south):
    set_threshold(piloting, 30, 4)
    feed(csp_north, piloting, (BOTH, "activated", ago(3)), (SPLIT, "activated", ago(3)))
    feed(csp_south, piloting, (GAS_SOUTH, "activated", ago(3)))
    feed(csp_south, piloting, (OTHER_SOUTH, "failed", ago(2), "WAN signal lost"))
    # The south batch alone has 2 reported (< 4); the pilot has 1 of 4 failed: 25%, under 30%.
    assert state(piloting) == (Stage.PILOTING, Status.ACTIVE)
    set_threshold(piloting, 20, 4)
    feed(csp_south, piloting, (OTHER_SOUTH, "failed", ago(2), "WAN signal lost"))  # a repeat changes nothing
    assert state(piloting) == (Stage.PILOTING, Status.ACTIVE)


@pytest.mark.req("B1")
def test_the_pilot_group_over_the_threshold_pauses(piloting, csp_north, csp_south):
    set_threshold(piloting, 20, 4)
    feed(csp_north, piloting, (BOTH, "activated", ago(3)), (SPLIT, "activated", ago(3)))
    feed(
        csp_south,
        piloting,
        (GAS_SOUTH, "activated", ago(3)),
        (OTHER_SOUTH, "failed", ago(2), "WAN signal lost"),
    )
    assert state(piloting) == (Stage.PILOTING, Status.PAUSED)
    assert Incident.objects.filter(figures__scope="pilot").count() == 1


# -- B2 ---------------------------------------------------------------------------------------------


@pytest.mark.req("B1")
@pytest.mark.req("B2")
@pytest.mark.req("U1")
@pytest.mark.req("T5")
def test_dcc_retries_only_the_failed_hubs_of_a_batch_as_a_new_batch(
    piloting, csp_north, dcc, import_supplier
):
    feed(csp_north, piloting, (BOTH, "failed", ago(2), "HAN join timeout"), (SPLIT, "activated", ago(2)))
    old = Batch.objects.get(rollout=piloting, name="PN")
    start = timezone.now() + dt.timedelta(days=2)
    with pytest.raises(PermissionDenied):
        retry_failed_hubs(user=import_supplier, batch_id=old.pk, window_start=start, window_end=start)
    with pytest.raises(ValidationError):
        retry_failed_hubs(user=dcc, batch_id=old.pk, window_start=start, window_end=start)
    new = retry_failed_hubs(
        user=dcc, batch_id=old.pk, window_start=start, window_end=start + dt.timedelta(days=1)
    )
    assert new.retry_of == old and new.region == "north" and new.group == "pilot"
    both = RolloutHub.objects.get(rollout=piloting, hub__guid=BOTH)
    assert (both.status, both.batch_id, both.failure_reason) == ("pending", new.pk, "")
    # T5: it now activates at the end of the new window, and the North CSP is told its plan changed
    assert (both.planned_activation_at, both.activation_source) == (
        start + dt.timedelta(days=1),
        "pilot_window",
    )
    told = Notice.objects.filter(kind="plan.changed", body__contains="(B2)").select_related("organisation")
    assert [(n.organisation.name, "changed for 1 hub:" in n.body) for n in told] == [("CSP North", True)]
    split = RolloutHub.objects.get(rollout=piloting, hub__guid=SPLIT)
    assert (split.status, split.batch_id) == ("activated", old.pk)
    old.refresh_from_db()
    new.refresh_from_db()
    # B1's figures: the old batch keeps its activated hub and no longer counts the retried failure.
    assert (old.activated_hubs, old.failed_hubs, new.activated_hubs, new.failed_hubs) == (1, 0, 0, 0)
    assert counter_mismatches() == []
    assert feed(csp_north, piloting, (BOTH, "activated", ago(0.1))).state == UploadState.APPLIED
    with pytest.raises(ValidationError, match="no failed hubs"):
        retry_failed_hubs(
            user=dcc, batch_id=new.pk, window_start=start, window_end=start + dt.timedelta(days=1)
        )


# -- L5, PL10 ---------------------------------------------------------------------------------------


@pytest.mark.req("L5")
@pytest.mark.req("PL10")
def test_the_system_starts_safe_launch_at_the_end_of_the_pilot_window(piloting, dcc):
    end = timezone.now() + dt.timedelta(days=10)
    Rollout.objects.filter(pk=piloting.pk).update(pilot_start=timezone.now(), pilot_end=end)  # test setup
    post_pilot_success_and_continue(user=dcc, rollout_id=piloting.pk, commentary="All good")
    assert state(piloting) == (Stage.PILOTING, Status.ACTIVE)  # the window has not ended
    assert start_due_safe_launches(now=end - dt.timedelta(minutes=1)) == 0
    assert start_due_safe_launches(now=end + dt.timedelta(minutes=1)) == 1
    assert state(piloting) == (Stage.SAFE_LAUNCH, Status.ACTIVE)
    assert start_due_safe_launches(now=end + dt.timedelta(minutes=2)) == 0


@pytest.mark.req("L5")
def test_a06_after_the_window_starts_safe_launch_at_once(piloting, dcc):
    Rollout.objects.filter(pk=piloting.pk).update(
        pilot_start=timezone.now() - dt.timedelta(days=9), pilot_end=timezone.now() - dt.timedelta(days=1)
    )
    post_pilot_success_and_continue(user=dcc, rollout_id=piloting.pk, commentary="Late but good")
    assert state(piloting) == (Stage.SAFE_LAUNCH, Status.ACTIVE)


@pytest.mark.req("L5")
@pytest.mark.req("N4")
def test_a_withdrawn_firmware_does_not_start_safe_launch(piloting, dcc, estate):
    Rollout.objects.filter(pk=piloting.pk).update(
        pilot_start=timezone.now() - dt.timedelta(days=9), pilot_end=timezone.now() - dt.timedelta(days=1)
    )
    withdraw_firmware(user=dcc, version_id=estate["v2"].pk, reason="Bricks radios")
    post_pilot_success_and_continue(user=dcc, rollout_id=piloting.pk, commentary="ok")
    assert start_due_safe_launches() == 0
    assert state(piloting) == (Stage.PILOTING, Status.ACTIVE)


@pytest.mark.req("L5")
@pytest.mark.req("SL4")
@pytest.mark.req("PL9")
def test_a_safe_launch_feed_after_the_pilot_window_starts_safe_launch_though_no_job_ran(
    draft, dcc, dcc_2, csp_north, csp_south
):
    """The beat job starts safe launch at its next run after the window; a CSP's safe launch feed that comes
    first (or while beat is down) must not be refused as outside a live batch: it starts safe launch."""
    rollout = publish(draft, dcc, dcc_2)
    RolloutHub.objects.filter(rollout=rollout).update(status_at=timezone.now() - dt.timedelta(days=30))
    start = timezone.now() + dt.timedelta(days=1)
    upload_default_pilot_list(user=csp_north, rollout_id=rollout.pk, content=csv_file(SPLIT, BOTH))
    pilot = (start.isoformat(), (start + dt.timedelta(days=4)).isoformat())
    header = "batch,guid,window_start,window_end"
    upload_default_pilot_schedule(
        user=csp_north,
        rollout_id=rollout.pk,
        content=csv_file(*(f"PN,{g},{pilot[0]},{pilot[1]}" for g in (SPLIT, BOTH)), header=header),
    )
    start_pilot(user=dcc, rollout_id=rollout.pk)
    window = ((timezone.now() - dt.timedelta(days=1)).isoformat(), start.isoformat())
    upload = upload_safe_launch_schedule(  # the south hubs are the safe launch group (SL1)
        user=csp_south,
        rollout_id=rollout.pk,
        content=csv_file(f"SL-S1,{GAS_SOUTH},{window[0]},{window[1]}", header=header),
    )
    assert upload.state == UploadState.APPLIED, codes(upload)
    # PL9: during the pilot only the pilot batches are deployed; a safe launch batch's hub is refused.
    early = feed(csp_south, rollout, (GAS_SOUTH, "scheduled", ago(0.02)))
    assert codes(early) == [(2, "guid", "hub_not_in_live_batch")]
    assert early.errors.get().message == "The batch of this Communications Hub is not being deployed now."
    post_pilot_success_and_continue(user=dcc, rollout_id=rollout.pk, commentary="All good")
    assert state(rollout) == (Stage.PILOTING, Status.ACTIVE)  # the window has not ended
    # Test setup: the pilot window ended a minute ago, and the beat job has not run since.
    Rollout.objects.filter(pk=rollout.pk).update(pilot_end=timezone.now() - dt.timedelta(minutes=1))
    upload = feed(csp_south, rollout, (GAS_SOUTH, "distributed", ago(0.01)))
    assert upload.state == UploadState.APPLIED, codes(upload)
    assert state(rollout) == (Stage.SAFE_LAUNCH, Status.ACTIVE)
    assert status_of(rollout, GAS_SOUTH) == ("distributed", "")
    assert (
        Notice.objects.filter(kind="rollout.start_safe_launch", organisation=csp_south.organisation).count()
        == 1
    )
    assert start_due_safe_launches() == 0  # already started: the job finds nothing to do
    assert counter_mismatches([rollout.pk]) == []


# -- C1 ---------------------------------------------------------------------------------------------


@pytest.mark.req("C1")
@pytest.mark.req("L8")
def test_the_closure_notice_carries_the_final_counts(piloting, csp_north, dcc, dcc_2, import_supplier):
    feed(csp_north, piloting, (BOTH, "activated", ago(2)), (SPLIT, "failed", ago(2), "HAN join timeout"))
    approve_proposal(
        user=dcc_2, proposal_id=propose(user=dcc, rollout_id=piloting.pk, move="stop", reason="x").pk
    )
    approve_proposal(
        user=dcc_2,
        proposal_id=propose(user=dcc, rollout_id=piloting.pk, move="close_stopped", reason="done").pk,
    )
    assert state(piloting) == (Stage.CLOSURE, Status.CLOSED)
    assert closure_summary(piloting) == {"activated": 1, "failed": 1, "left": 0, "pending": 2}
    notice = Notice.objects.get(kind="rollout.close_stopped", organisation=import_supplier.organisation)
    assert "1 activated, 1 failed, 0 left the SMI, 2 not deployed" in notice.body
