"""Piloting as services (PL1, PL4, PL6, PL8, SL1, L3, C2, P3, P4, X1, X3).

The estate (tests/rollouts/conftest.py), all eligible for the rollout:
    01 Volt (import) + GasCo (gas): split, north
    02 Volt in both roles, north
    03 GasCo gas only, south
    04 Other Power import only, south
    05 north, already on the target version (not eligible); 06 another model (not eligible)
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import connection

from rollouts.guid import display_guid
from rollouts.intake.errors import RowsRejected
from rollouts.models import (
    AuditEvent,
    Batch,
    Hub,
    Notice,
    PilotAmendment,
    Rollout,
    RolloutHub,
    Stage,
    Status,
    Upload,
)
from rollouts.services import piloting
from rollouts.services.lifecycle import start_pilot
from rollouts.services.piloting import (
    add_friendly_hubs,
    add_production_proving_hubs,
    apply_pilot_rules,
    effective_pilot_count,
    pilot_not_ready,
    preview_preferred_pilot,
    recompute_pilot_group,
    remove_dcc_hubs,
    upload_default_pilot_list,
    upload_preferred_pilot_list,
    upload_vulnerable_flags,
    void_pilot,
    vulnerable_flags_for,
)

from .conftest import new_draft
from .test_lifecycle import publish

G1, G2, G3, G4 = "00DB000000000001", "00DB000000000002", "00DB000000000003", "00DB000000000004"
G5, G6 = "00DB000000000005", "00DB000000000006"
UNKNOWN = "00DB0000000000FF"
SPLIT, BOTH_ROLES, GAS_ONLY, SINGLE = G1, G2, G3, G4


def csv_file(*rows: str, header: str = "guid") -> ContentFile:
    return ContentFile((header + "\n" + "".join(r + "\n" for r in rows)).encode(), name="list.csv")


def pilot_of(rollout: Rollout) -> dict[str, str]:
    """The hubs of the effective pilot group and why, as the group column says (SL1: the rest are safe launch)."""
    rows = RolloutHub.objects.filter(rollout=rollout)
    assert set(rows.values_list("group", flat=True)) <= {"pilot", "safe_launch"}
    return dict(rows.filter(group="pilot").values_list("hub__guid", "pilot_reason"))


def errors_of(upload: Upload) -> list[tuple[int | None, str]]:
    return [(e.row, e.code) for e in upload.errors.order_by("row", "id")]


def default_list(user, rollout, *guids) -> Upload:
    return upload_default_pilot_list(user=user, rollout_id=rollout.pk, content=csv_file(*guids))


def preferred(user, rollout, *rows: str) -> Upload:
    return upload_preferred_pilot_list(
        user=user, rollout_id=rollout.pk, content=csv_file(*rows, header="guid,action")
    )


@pytest.fixture
def live(draft, dcc, dcc_2) -> Rollout:
    return publish(draft, dcc, dcc_2)


def set_cap(rollout: Rollout, pilot_max: int) -> None:
    Rollout.objects.filter(pk=rollout.pk).update(pilot_max=pilot_max)  # test setup: DCC's N1 field
    rollout.refresh_from_db()


def flag_in_smi(*guids: str, **flags: bool) -> None:
    Hub.objects.filter(guid__in=guids).update(**flags)  # test setup: DCC's SMI flags (PL8)


# -- PL1: the Default Pilot List ---------------------------------------------------------------------


@pytest.mark.req("PL1")
@pytest.mark.req("SL1")
def test_default_lists_make_the_pilot_and_the_rest_is_safe_launch(live, csp_north, csp_south):
    assert default_list(csp_north, live, SPLIT).state == "applied"
    assert default_list(csp_south, live, SINGLE).state == "applied"
    assert pilot_of(live) == {SPLIT: "default", SINGLE: "default"}
    assert set(
        RolloutHub.objects.filter(rollout=live, group="safe_launch").values_list("hub__guid", flat=True)
    ) == {BOTH_ROLES, GAS_ONLY}


@pytest.mark.req("PL1")
def test_a_new_default_list_replaces_the_csps_previous_one_only(live, csp_north, csp_south):
    default_list(csp_north, live, SPLIT, BOTH_ROLES)
    default_list(csp_south, live, GAS_ONLY)
    default_list(csp_north, live, BOTH_ROLES)
    assert pilot_of(live) == {BOTH_ROLES: "default", GAS_ONLY: "default"}  # South's list stands


@pytest.mark.req("PL1")
@pytest.mark.req("C2")
def test_the_same_default_list_file_applies_to_each_rollout_it_is_sent_for(
    live, estate, dcc, dcc_2, csp_north
):
    default_list(csp_north, live, SPLIT)
    newer = publish(new_draft(dcc, estate["v3"], [estate["v1"]]), dcc, dcc_2)  # supersedes `live`
    assert default_list(csp_north, newer, SPLIT).state == "applied"  # the same file, a new rollout
    assert pilot_of(newer) == {SPLIT: "default"}


@pytest.mark.req("PL1")
@pytest.mark.req("P3")
@pytest.mark.req("X3")
def test_a_default_list_with_bad_rows_is_refused_whole_with_every_error(live, csp_north):
    upload = default_list(csp_north, live, SPLIT, GAS_ONLY, UNKNOWN, G5, G6, "not-a-guid")
    assert upload.state == "rejected"
    # Rows: header 1, SPLIT 2, GAS_ONLY 3 (south), UNKNOWN 4, G5 5 (north, already upgraded), G6 6, bad 7.
    assert errors_of(upload) == [
        (3, "guid_not_in_region"),  # another region answers like an unknown GUID (P3)
        (4, "guid_not_in_region"),
        (5, "guid_not_eligible"),
        (6, "guid_not_eligible"),
        (7, "guid_format"),
    ]
    assert pilot_of(live) == {}
    assert not RolloutHub.objects.filter(rollout=live, in_default_pilot=True).exists()


@pytest.mark.req("PL1")
@pytest.mark.req("X1")
def test_an_applied_default_list_is_audited_with_the_upload_id_and_sha256(live, csp_north):
    upload = default_list(csp_north, live, SPLIT, BOTH_ROLES)
    event = AuditEvent.objects.get(action="upload.applied.default_pilot_list")
    assert event.details["upload_id"] == upload.pk
    assert event.details["sha256"] == upload.sha256
    assert event.details["rollout_id"] == live.pk
    assert event.details["newly_listed"] == 2


@pytest.mark.req("PL1")
def test_the_default_list_cannot_change_once_the_pilot_has_started(live, csp_north):
    Rollout.objects.filter(pk=live.pk).update(stage=Stage.PILOTING)  # test setup
    with pytest.raises(ValidationError, match="fixed once the pilot starts"):
        default_list(csp_north, live, SPLIT)
    assert not Upload.objects.filter(kind="default_pilot_list").exists()


@pytest.mark.req("PL1")
@pytest.mark.req("P2")
def test_only_a_csp_uploads_a_default_list(live, import_supplier, dcc):
    for user in (import_supplier, dcc):
        with pytest.raises(PermissionDenied):
            default_list(user, live, SPLIT)


@pytest.mark.req("PL1")
@pytest.mark.req("P3")
def test_a_csp_without_hubs_in_the_rollout_gets_not_found(live, csp_north):
    from rollouts.models import Organisation, User

    central = User.objects.create_user(
        "cara@csp-central.test", organisation=Organisation.objects.get(name="CSP Central")
    )
    with pytest.raises(Rollout.DoesNotExist):
        default_list(central, live, SPLIT)


@pytest.mark.req("PL1")
def test_suppliers_of_the_region_are_told_of_a_default_list(
    live, csp_south, other_supplier, gas_supplier, import_supplier
):
    default_list(csp_south, live, SINGLE)
    told = set(Notice.objects.filter(kind="pilot.default_list").values_list("organisation__name", flat=True))
    assert told == {"Other Power", "GasCo"}  # South's Suppliers; Volt has no hub in the south


# -- PL6: the effective pilot group as a decision table -------------------------------------------------

# A split hub (Volt import, GasCo gas): on the default list or not, and what each Supplier did.
# PL6: default list, less any hub one of its Suppliers removed, plus any hub all its Suppliers added.
SPLIT_TABLE = [
    # default, Volt, GasCo, in pilot
    (True, None, None, True),
    (True, "add", None, True),
    (True, None, "add", True),
    (True, "add", "add", True),
    (True, "remove", None, False),
    (True, None, "remove", False),
    (True, "remove", "remove", False),
    (True, "add", "remove", False),
    (True, "remove", "add", False),
    (False, None, None, False),
    (False, "add", None, False),  # one of two Suppliers is not enough
    (False, None, "add", False),
    (False, "add", "add", True),
    (False, "remove", None, False),
    (False, None, "remove", False),
    (False, "remove", "remove", False),
    (False, "add", "remove", False),
    (False, "remove", "add", False),
]


@pytest.mark.req("PL6")
@pytest.mark.parametrize(("on_default", "volt", "gasco", "in_pilot"), SPLIT_TABLE)
def test_split_hub(live, csp_north, import_supplier, gas_supplier, on_default, volt, gasco, in_pilot):
    if on_default:
        default_list(csp_north, live, SPLIT)
    if volt:
        assert preferred(import_supplier, live, f"{SPLIT},{volt}").state == "applied"
    if gasco:
        assert preferred(gas_supplier, live, f"{SPLIT},{gasco}").state == "applied"
    assert (SPLIT in pilot_of(live)) is in_pilot


@pytest.mark.req("PL6")
@pytest.mark.parametrize(
    ("on_default", "action", "in_pilot"),
    [
        (False, None, False),
        (False, "add", True),  # a single Supplier's addition suffices
        (False, "remove", False),
        (True, None, True),
        (True, "add", True),
        (True, "remove", False),
    ],
)
def test_single_supplier_hub(live, csp_south, other_supplier, on_default, action, in_pilot):
    if on_default:
        default_list(csp_south, live, SINGLE)
    if action:
        preferred(other_supplier, live, f"{SINGLE},{action}")
    assert (SINGLE in pilot_of(live)) is in_pilot


@pytest.mark.req("PL6")
def test_one_organisation_in_both_roles_counts_once(live, import_supplier):
    preferred(import_supplier, live, f"{BOTH_ROLES},add")
    assert pilot_of(live) == {BOTH_ROLES: "added"}


@pytest.mark.req("PL4")
@pytest.mark.req("PL6")
def test_action_defaults_to_add_and_an_upload_replaces_the_suppliers_previous_amendments(
    live, csp_north, import_supplier
):
    default_list(csp_north, live, SPLIT)
    preferred(import_supplier, live, f"{SPLIT},remove", f"{BOTH_ROLES},")  # empty action: add
    assert pilot_of(live) == {BOTH_ROLES: "added"}
    preferred(import_supplier, live, f"{BOTH_ROLES},remove")  # the veto on SPLIT lapses with the old list
    assert pilot_of(live) == {SPLIT: "default"}
    assert set(PilotAmendment.objects.filter(rollout=live).values_list("hub__guid", "action")) == {
        (BOTH_ROLES, "remove")
    }


@pytest.mark.req("PL4")
@pytest.mark.req("P3")
@pytest.mark.req("X3")
def test_a_preferred_list_with_bad_rows_is_refused_whole(live, import_supplier):
    upload = preferred(
        import_supplier,
        live,
        f"{BOTH_ROLES},add",
        f"{GAS_ONLY},add",
        f"{UNKNOWN},add",
        f"{G5},add",
        f"{SPLIT},maybe",
    )
    assert errors_of(upload) == [
        (3, "guid_not_yours"),  # GasCo's hub answers like an unknown one (P3)
        (4, "guid_not_yours"),
        (5, "guid_not_eligible"),  # Volt's, but already on the target version
        (6, "value_invalid"),
    ]
    assert not PilotAmendment.objects.exists()


@pytest.mark.req("PL4")
@pytest.mark.req("P4")
def test_the_partner_of_a_split_hub_is_told_without_being_told_who(live, import_supplier, gas_supplier):
    preferred(import_supplier, live, f"{SPLIT},add")
    notice = Notice.objects.get(kind="pilot.partner_changed")
    assert notice.organisation == gas_supplier.organisation
    assert "Volt" not in notice.subject + notice.body
    assert "other Supplier of 1 of your split hubs" in notice.body


# -- PL8: DCC's friendly and production-proving hubs -------------------------------------------------


@pytest.mark.req("PL8")
@pytest.mark.req("PL6")
def test_friendly_hubs_join_unless_a_supplier_vetoed_them(live, dcc, gas_supplier):
    flag_in_smi(SPLIT, GAS_ONLY, SINGLE, friendly=True)
    preferred(gas_supplier, live, f"{GAS_ONLY},remove")
    with pytest.raises(RowsRejected) as refused:
        add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE, GAS_ONLY])
    assert [(f.value, f.code) for f in refused.value.failures] == [
        ("00-DB-00-00-00-00-00-03", "guid_not_eligible")
    ]
    assert "standing veto" in refused.value.failures[0].message
    assert pilot_of(live) == {}  # all or nothing
    add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])
    assert pilot_of(live) == {SINGLE: "friendly"}


@pytest.mark.req("PL8")
def test_friendly_hubs_must_be_flagged_in_the_smi(live, dcc):
    with pytest.raises(RowsRejected) as refused:
        add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE, UNKNOWN, "nonsense"])
    assert [f.code for f in refused.value.failures] == ["guid_format", "guid_not_eligible", "guid_unknown"]


@pytest.mark.req("PL8")
@pytest.mark.req("PL6")
def test_a_later_veto_removes_a_friendly_hub(live, dcc, other_supplier):
    flag_in_smi(SINGLE, friendly=True)
    add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])
    preferred(other_supplier, live, f"{SINGLE},remove")
    assert pilot_of(live) == {}


@pytest.mark.req("PL8")
@pytest.mark.req("PL6")
def test_production_proving_hubs_are_not_subject_to_vetoes(live, dcc, import_supplier, gas_supplier):
    flag_in_smi(SPLIT, production_proving=True)
    preferred(import_supplier, live, f"{SPLIT},remove")
    preferred(gas_supplier, live, f"{SPLIT},remove")
    add_production_proving_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SPLIT])
    assert pilot_of(live) == {SPLIT: "production_proving"}


@pytest.mark.req("PL8")
def test_production_proving_hubs_are_fewer_than_100_per_rollout(live, dcc):
    flag_in_smi(SINGLE, production_proving=True)
    # Test setup: 99 production-proving amendments already (on the other hubs and on hubs of no matter).
    others = list(Hub.objects.exclude(guid=SINGLE).order_by("guid")[:4])
    for n in range(99 - len(others)):
        others.append(
            Hub.objects.create(
                guid=f"00DB1000000{n:05X}",
                device_model=others[0].device_model,
                firmware_version=others[0].firmware_version,
                region="north",
            )
        )
    PilotAmendment.objects.bulk_create(
        PilotAmendment(
            rollout=live, hub=h, supplier=dcc.organisation, action="add", reason="production_proving"
        )
        for h in others
    )
    with pytest.raises(ValidationError, match="fewer than 100 production-proving hubs: it has 99") as refused:
        add_production_proving_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])
    assert refused.value.code == "production_proving_limit"


@pytest.mark.req("PL8")
@pytest.mark.req("P2")
def test_only_dcc_adds_friendly_and_production_proving_hubs(live, csp_north, import_supplier):
    for user in (csp_north, import_supplier):
        with pytest.raises(PermissionDenied):
            add_friendly_hubs(user=user, rollout_id=live.pk, hub_guids=[SINGLE])
        with pytest.raises(PermissionDenied):
            add_production_proving_hubs(user=user, rollout_id=live.pk, hub_guids=[SINGLE])


@pytest.mark.req("PL8")
def test_dcc_takes_back_its_hubs_and_a_hub_on_a_default_list_stays(live, dcc, csp_north, import_supplier):
    flag_in_smi(SPLIT, SINGLE, friendly=True)
    flag_in_smi(GAS_ONLY, production_proving=True)
    default_list(csp_north, live, SPLIT)
    add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SPLIT, SINGLE])
    add_production_proving_hubs(user=dcc, rollout_id=live.pk, hub_guids=[GAS_ONLY])
    assert pilot_of(live) == {SPLIT: "default", SINGLE: "friendly", GAS_ONLY: "production_proving"}

    change = remove_dcc_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SPLIT, SINGLE, GAS_ONLY])

    assert change.pilot == 1 and pilot_of(live) == {SPLIT: "default"}  # still on the north CSP's list
    assert AuditEvent.objects.filter(action="pilot.dcc_removed", object_id=str(live.pk)).exists()
    (notice,) = Notice.objects.filter(organisation=import_supplier.organisation, kind="pilot.dcc_removed")
    assert "taken back 1 of your hubs" in notice.body  # 01 is its hub; 03 and 04 are others'


@pytest.mark.req("PL8")
@pytest.mark.req("X3")
def test_dcc_cannot_take_back_a_hub_it_did_not_add_and_nothing_changes(live, dcc, csp_north):
    flag_in_smi(SINGLE, friendly=True)
    add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])
    default_list(csp_north, live, SPLIT)
    with pytest.raises(RowsRejected) as refused:
        remove_dcc_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE, SPLIT, "nonsense"])
    assert [(f.value, f.code) for f in refused.value.failures] == [
        ("nonsense", "guid_format"),
        ("00-DB-00-00-00-00-00-01", "guid_not_eligible"),
    ]
    assert "nothing to take back" in refused.value.failures[1].message
    assert pilot_of(live) == {SPLIT: "default", SINGLE: "friendly"}


@pytest.mark.req("PL8")
@pytest.mark.req("P2")
def test_only_dcc_takes_back_pilot_hubs(live, csp_north, import_supplier):
    for user in (csp_north, import_supplier):
        with pytest.raises(PermissionDenied):
            remove_dcc_hubs(user=user, rollout_id=live.pk, hub_guids=[SINGLE])


# -- PL1: the cap --------------------------------------------------------------------------------------


@pytest.mark.req("PL1")
def test_a_default_list_that_would_pass_the_cap_is_refused_with_the_room_left(live, csp_north, csp_south):
    set_cap(live, 2)
    default_list(csp_south, live, SINGLE)
    upload = default_list(csp_north, live, SPLIT, BOTH_ROLES)  # 1 + 2 > 2
    assert errors_of(upload) == [(None, "pilot_full")]
    assert "room for 1 more" in upload.errors.get().message
    assert pilot_of(live) == {SINGLE: "default"}


@pytest.mark.req("PL1")
def test_a_default_list_that_swaps_hubs_at_the_cap_is_allowed(live, csp_north, csp_south):
    # The group stays at 2 (SPLIT out, BOTH_ROLES in): the cap counts the group the list leaves.
    set_cap(live, 2)
    default_list(csp_south, live, SINGLE)
    default_list(csp_north, live, SPLIT)
    assert default_list(csp_north, live, BOTH_ROLES).state == "applied"
    assert pilot_of(live) == {SINGLE: "default", BOTH_ROLES: "default"}


@pytest.mark.req("PL1")
@pytest.mark.req("PL8")
def test_production_proving_hubs_count_towards_the_cap(live, dcc, csp_north):
    set_cap(live, 2)
    flag_in_smi(GAS_ONLY, SINGLE, production_proving=True)
    add_production_proving_hubs(user=dcc, rollout_id=live.pk, hub_guids=[GAS_ONLY])
    upload = default_list(csp_north, live, SPLIT, BOTH_ROLES)
    assert errors_of(upload) == [(None, "pilot_full")]
    assert "room for 1 more" in upload.errors.get().message
    default_list(csp_north, live, SPLIT)
    with pytest.raises(ValidationError, match="room for 0 more") as refused:
        add_production_proving_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])
    assert refused.value.code == "pilot_full"
    assert pilot_of(live) == {SPLIT: "default", GAS_ONLY: "production_proving"}


@pytest.mark.req("PL1")
@pytest.mark.req("PL4")
def test_a_supplier_addition_that_would_pass_the_cap_is_refused(live, csp_north, other_supplier):
    set_cap(live, 1)
    default_list(csp_north, live, BOTH_ROLES)
    upload = preferred(other_supplier, live, f"{SINGLE},add")
    assert errors_of(upload) == [(None, "pilot_full")]
    assert "room for 0 more" in upload.errors.get().message


@pytest.mark.req("PL1")
def test_a_change_that_shrinks_an_overfull_group_is_allowed(live, csp_north, csp_south, import_supplier):
    default_list(csp_north, live, SPLIT, BOTH_ROLES)
    default_list(csp_south, live, SINGLE)
    set_cap(live, 1)  # DCC lowered the cap after the lists came in
    assert preferred(import_supplier, live, f"{BOTH_ROLES},remove").state == "applied"
    assert pilot_of(live) == {SPLIT: "default", SINGLE: "default"}


# -- PL4: previews, rules, vulnerable flags -----------------------------------------------------------


@pytest.mark.req("PL4")
@pytest.mark.req("P3")
def test_a_preview_shows_the_difference_for_own_hubs_and_writes_nothing(
    live, csp_north, csp_south, import_supplier
):
    default_list(csp_north, live, SPLIT)
    default_list(csp_south, live, GAS_ONLY, SINGLE)
    uploads, events = Upload.objects.count(), AuditEvent.objects.count()
    preview = preview_preferred_pilot(
        user=import_supplier,
        rollout_id=live.pk,
        content=csv_file(f"{SPLIT},remove", f"{BOTH_ROLES},add", header="guid,action"),
    )
    assert preview.added == ["00-DB-00-00-00-00-00-02"]
    assert preview.removed == ["00-DB-00-00-00-00-00-01"]
    assert (preview.pilot_before, preview.pilot_after) == (3, 3)
    assert preview.failures == []
    assert (Upload.objects.count(), AuditEvent.objects.count()) == (uploads, events)
    assert not PilotAmendment.objects.exists()
    assert pilot_of(live) == {SPLIT: "default", GAS_ONLY: "default", SINGLE: "default"}


@pytest.mark.req("PL4")
@pytest.mark.req("PL1")
def test_a_preview_reports_errors_and_pilot_full(live, csp_north, other_supplier):
    set_cap(live, 2)
    default_list(csp_north, live, SPLIT, BOTH_ROLES)
    preview = preview_preferred_pilot(
        user=other_supplier, rollout_id=live.pk, content=csv_file(f"{SINGLE},add", header="guid,action")
    )
    assert [(f.code, "room for 0 more" in f.message) for f in preview.failures] == [("pilot_full", True)]
    bad = preview_preferred_pilot(
        user=other_supplier, rollout_id=live.pk, content=csv_file(f"{SPLIT},add", header="guid,action")
    )
    assert [f.code for f in bad.failures] == ["guid_not_yours"]


@pytest.mark.req("PL4")
@pytest.mark.req("P3")
def test_vulnerable_flags_are_visible_only_to_their_supplier_and_dcc(
    live, gas_supplier, import_supplier, other_supplier, dcc, csp_south
):
    upload = upload_vulnerable_flags(
        user=gas_supplier, content=csv_file(f"{GAS_ONLY},", f"{SPLIT},no", header="guid,vulnerable")
    )
    assert upload.state == "applied"
    expected = {(GAS_ONLY, True), (SPLIT, False)}
    assert (
        set(vulnerable_flags_for(gas_supplier.organisation).values_list("hub__guid", "vulnerable"))
        == expected
    )
    assert set(vulnerable_flags_for(dcc.organisation).values_list("hub__guid", "vulnerable")) == expected
    # Volt is the other Supplier of SPLIT, and still sees none of GasCo's flags.
    for org in (import_supplier.organisation, other_supplier.organisation, csp_south.organisation):
        assert not vulnerable_flags_for(org).exists()


@pytest.mark.req("PL4")
@pytest.mark.req("X3")
def test_vulnerable_flags_refuse_other_suppliers_hubs_and_bad_values(live, gas_supplier):
    upload = upload_vulnerable_flags(
        user=gas_supplier, content=csv_file(f"{SINGLE},yes", f"{GAS_ONLY},perhaps", header="guid,vulnerable")
    )
    assert errors_of(upload) == [(2, "guid_not_yours"), (3, "value_invalid")]


@pytest.fixture
def many(estate, other_supplier):
    """20 more hubs of Other Power (import only), south, eligible: 00DB0000000001xx."""
    from rollouts.services.inventory import load_inventory

    from .conftest import inventory

    slug = other_supplier.organisation.slug
    load_inventory(
        user=None,
        content=inventory(*(f"00DB0000000001{n:02X},010A030B,0002012F,south,{slug},," for n in range(20))),
    )


@pytest.fixture
def live_many(many, draft, dcc, dcc_2) -> Rollout:
    return publish(draft, dcc, dcc_2)


def rules(
    user, rollout, *, confirm, seed=42, sample=5, exclude_vulnerable=False, regions=None, versions=None
):
    return apply_pilot_rules(
        user=user,
        rollout_id=rollout.pk,
        exclude_vulnerable=exclude_vulnerable,
        regions=regions,
        firmware_versions=versions,
        sample=sample,
        seed=seed,
        confirm=confirm,
    )


@pytest.mark.req("PL4")
def test_rules_with_a_seed_are_reproducible_and_the_preview_is_what_confirming_does(
    live_many, other_supplier
):
    first = rules(other_supplier, live_many, confirm=False)
    second = rules(other_supplier, live_many, confirm=False)
    assert first.added == second.added
    assert first.added_count == 5
    assert not PilotAmendment.objects.exists()  # a preview writes nothing
    confirmed = rules(other_supplier, live_many, confirm=True)
    assert confirmed.added == first.added
    assert {display_guid(g) for g in pilot_of(live_many)} == set(first.added)
    assert AuditEvent.objects.filter(action="pilot.rules_applied", details__seed=42).count() == 1


@pytest.mark.req("PL4")
def test_rules_exclude_and_veto_vulnerable_premises(live_many, other_supplier, csp_south):
    vulnerable = [f"00DB0000000001{n:02X}" for n in range(18)]
    upload_vulnerable_flags(user=other_supplier, content=csv_file(SINGLE, *vulnerable))
    default_list(csp_south, live_many, SINGLE)
    preview = rules(other_supplier, live_many, confirm=True, sample=None, exclude_vulnerable=True)
    # 21 own hubs, 19 flagged (SINGLE too): the 2 unflagged join, and SINGLE leaves the default list.
    assert preview.added == ["00-DB-00-00-00-00-01-12", "00-DB-00-00-00-00-01-13"]
    assert preview.removed == ["00-DB-00-00-00-00-00-04"]


@pytest.mark.req("PL4")
def test_rules_filter_by_region_and_firmware_version(live_many, import_supplier, other_supplier):
    assert rules(import_supplier, live_many, confirm=False, sample=None, regions=["south"]).added == []
    north = rules(
        import_supplier, live_many, confirm=False, sample=None, regions=["north"], versions=["0002012F"]
    )
    assert north.added == ["00-DB-00-00-00-00-00-02"]  # SPLIT needs GasCo's addition too
    assert rules(other_supplier, live_many, confirm=False, sample=None, versions=["00020130"]).added == []


@pytest.mark.req("PL4")
@pytest.mark.req("PL1")
def test_rules_that_would_pass_the_cap_are_refused_on_confirmation(live_many, other_supplier):
    set_cap(live_many, 3)
    preview = rules(other_supplier, live_many, confirm=False, sample=5)
    assert preview.pilot_full and preview.room == 3
    with pytest.raises(ValidationError, match="room for 3 more") as refused:
        rules(other_supplier, live_many, confirm=True, sample=5)
    assert refused.value.code == "pilot_full"


# -- L3: the start_pilot guard --------------------------------------------------------------------------


def pilot_batch(rollout, region, name="P1") -> Batch:
    start = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    return Batch.objects.create(
        rollout=rollout,
        region=region,
        group="pilot",
        name=name,
        window_start=start,
        window_end=start + dt.timedelta(days=7),
    )


def put_in_pilot_batch(rollout, region, *guids: str) -> None:
    """Test setup standing in for the Default Pilot Schedule's upload: these hubs in a new pilot batch, and
    the batches' figures recounted (Batch.hubs), as the upload moves them."""
    from rollouts.services import counters

    RolloutHub.objects.filter(rollout=rollout, hub__guid__in=guids).update(batch=pilot_batch(rollout, region))
    counters.recount([rollout.pk])


@pytest.mark.req("L3")
def test_start_pilot_names_what_is_missing(live, dcc, csp_north, csp_south):
    with pytest.raises(ValidationError, match="The effective pilot group is empty"):
        start_pilot(user=dcc, rollout_id=live.pk)
    default_list(csp_north, live, SPLIT, BOTH_ROLES)
    default_list(csp_south, live, SINGLE)
    with pytest.raises(ValidationError) as refused:
        start_pilot(user=dcc, rollout_id=live.pk)
    assert refused.value.messages == [
        "3 pilot hubs are not in any batch yet: CSP North, CSP South must upload their Default Pilot Schedule."
    ]
    put_in_pilot_batch(live, "north", SPLIT, BOTH_ROLES)
    assert pilot_not_ready(live) == (
        "1 pilot hub is not in any batch yet: CSP South must upload its Default Pilot Schedule."
    )
    put_in_pilot_batch(live, "south", SINGLE)
    assert pilot_not_ready(live) is None
    assert start_pilot(user=dcc, rollout_id=live.pk).stage == Stage.PILOTING


@pytest.mark.req("L3")
@pytest.mark.req("PL1")
def test_a_hub_that_leaves_the_pilot_leaves_its_pilot_batch(live, csp_north, import_supplier):
    default_list(csp_north, live, BOTH_ROLES)
    put_in_pilot_batch(live, "north", BOTH_ROLES)
    preferred(import_supplier, live, f"{BOTH_ROLES},remove")
    assert RolloutHub.objects.get(rollout=live, hub__guid=BOTH_ROLES).batch_id is None


# -- C2: void pilot ------------------------------------------------------------------------------------


@pytest.mark.req("C2")
def test_void_pilot_holds_every_batch_and_tells_the_parties(live, csp_north, dcc):
    default_list(csp_north, live, SPLIT)
    pilot_batch(live, "north")
    pilot_batch(live, "north", name="P2")
    assert void_pilot(live) == 2
    assert set(Batch.objects.filter(rollout=live).values_list("held", flat=True)) == {True}
    told = set(Notice.objects.filter(kind="pilot.void").values_list("organisation__name", flat=True))
    assert told == {"DCC", "CSP North", "CSP South", "Volt Energy", "GasCo", "Other Power"}
    assert AuditEvent.objects.get(action="pilot.void").actor == "system"


# -- recompute and counters -------------------------------------------------------------------------------


@pytest.mark.req("U1")
@pytest.mark.req("PL6")
def test_recompute_keeps_the_counters_true(live, csp_north):
    from rollouts.services.counters import counter_mismatches

    default_list(csp_north, live, SPLIT, BOTH_ROLES)
    assert counter_mismatches([live.pk]) == []
    assert recompute_pilot_group(live.pk).changed == 0  # nothing to change twice
    assert effective_pilot_count(live.pk) == 2


@pytest.mark.req("PL1")
@pytest.mark.req("PL6")
@pytest.mark.req("U1")
@pytest.mark.req("T5")
def test_a_default_list_leaves_the_rollout_as_a_whole_recompute_and_replan_would(
    live, csp_north, csp_south, gas_supplier
):
    # The list recomputes, recounts and replans only the hubs whose flag it changed: afterwards a
    # recompute and a replan of the whole rollout find nothing to change and the counters are true.
    from rollouts.services import planning
    from rollouts.services.counters import counter_mismatches

    default_list(csp_south, live, GAS_ONLY)
    default_list(csp_north, live, SPLIT, BOTH_ROLES)
    preferred(gas_supplier, live, f"{SPLIT},remove")  # a veto: SPLIT stays out whatever the list says
    put_in_pilot_batch(live, "north", BOTH_ROLES)
    planning.replan(live.pk)  # test setup: as the Default Pilot Schedule's upload replans
    assert RolloutHub.objects.get(rollout=live, hub__guid=BOTH_ROLES).activation_source == "pilot_window"

    assert default_list(csp_north, live, SPLIT).state == "applied"  # BOTH_ROLES leaves the list

    assert pilot_of(live) == {GAS_ONLY: "default"}  # South's list stands; SPLIT vetoed
    left = RolloutHub.objects.get(rollout=live, hub__guid=BOTH_ROLES)
    assert (left.group, left.batch_id, left.activation_source) == ("safe_launch", None, "automatic")
    assert counter_mismatches([live.pk]) == []  # first: a whole recompute recounts
    assert planning.replan(live.pk) == {}
    assert recompute_pilot_group(live.pk).changed == 0


# -- PL1 under concurrency ------------------------------------------------------------------------------


def run_in_threads(*jobs):
    """Run each (name, function) in its own thread with its own database connection; return outcomes."""
    outcomes: dict[str, object] = {}

    def run(name, job):
        try:
            outcomes[name] = job()
        except Exception as exc:  # recorded for the assertion
            outcomes[name] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=job, name=job[0]) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return outcomes


def wait_for_a_blocked_lock(timeout: float = 10.0) -> None:
    """Poll until another transaction waits for a row lock (pg_locks is read live, not snapshotted)."""
    import time

    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the second transaction never waited for the rollout's lock")


@pytest.mark.req("PL1")
@pytest.mark.req("L10")
@pytest.mark.django_db(transaction=True)
def test_the_cap_holds_when_two_additions_race(live, dcc, dcc_2, monkeypatch):
    set_cap(live, 1)
    flag_in_smi(SINGLE, GAS_ONLY, friendly=True)
    first_holds_lock = threading.Event()
    original = piloting._lock_rollout

    def lock(rollout_id, org):
        rollout = original(rollout_id, org)
        if threading.current_thread().name == "first":
            first_holds_lock.set()
            # The first transaction holds the rollout's row lock until the second is queued behind it.
            # Without select_for_update both would count the group (0) before either commits, both
            # would pass the cap of 1, and the group would end with 2 (see the next test).
            wait_for_a_blocked_lock()
        return rollout

    monkeypatch.setattr(piloting, "_lock_rollout", lock)

    def second():
        assert first_holds_lock.wait(10)
        return add_friendly_hubs(user=dcc_2, rollout_id=live.pk, hub_guids=[GAS_ONLY])

    outcomes = run_in_threads(
        ("first", lambda: add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])),
        ("second", second),
    )
    assert outcomes["first"].pilot == 1
    assert isinstance(outcomes["second"], ValidationError)
    assert outcomes["second"].code == "pilot_full"
    assert "room for 0 more" in outcomes["second"].messages[0]
    assert pilot_of(live) == {SINGLE: "friendly"}


@pytest.mark.req("PL1")
@pytest.mark.django_db(transaction=True)
def test_without_the_rollout_lock_two_racing_additions_overcommit(live, dcc, dcc_2, monkeypatch):
    """The control for the test above: take the lock away and the cap is passed."""
    set_cap(live, 1)
    flag_in_smi(SINGLE, GAS_ONLY, friendly=True)
    both_checked = threading.Barrier(2, timeout=10)
    original_check = piloting._check_cap

    def no_lock(rollout_id, org):
        return Rollout.objects.get(pk=rollout_id)

    def check_then_wait(rollout, before):
        after = original_check(rollout, before)  # each sees only its own uncommitted addition
        both_checked.wait()  # neither commits before both have passed the cap
        return after

    monkeypatch.setattr(piloting, "_lock_rollout", no_lock)
    monkeypatch.setattr(piloting, "_check_cap", check_then_wait)
    # The counter rebuild also relies on the rollout's lock (two rebuilds at once collide on its unique
    # key); it is switched off here so that the overcommit itself is what the test observes.
    monkeypatch.setattr(piloting.counters, "recount", lambda rollout_ids: None)
    outcomes = run_in_threads(
        ("first", lambda: add_friendly_hubs(user=dcc, rollout_id=live.pk, hub_guids=[SINGLE])),
        ("second", lambda: add_friendly_hubs(user=dcc_2, rollout_id=live.pk, hub_guids=[GAS_ONLY])),
    )
    assert not any(isinstance(o, Exception) for o in outcomes.values()), outcomes
    assert effective_pilot_count(live.pk) == 2  # overcommitted: 2 > the cap of 1


@pytest.mark.req("PL1")
def test_the_status_must_be_active(live, csp_north):
    Rollout.objects.filter(pk=live.pk).update(status=Status.PAUSED)  # test setup
    with pytest.raises(ValidationError, match="cannot change while the rollout is notification, paused"):
        default_list(csp_north, live, SPLIT)
