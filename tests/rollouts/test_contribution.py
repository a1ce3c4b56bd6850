"""PL7: the contribution minimum and the selection of a Supplier's shortfall (with PL1, PL6, P4, X1).

On top of the estate (tests/rollouts/conftest.py) Other Power has 20 more hubs of its own in the
south (00DB00000000010x..13) and four split hubs with GasCo as Gas Supplier (00DB00000000020x).
The rollout obliges a Supplier with at least 7 eligible hubs to contribute 3 pilot hubs, so only
Other Power (25 eligible hubs) is obliged: Volt has 2 and GasCo 6.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.utils import timezone

from rollouts.models import AuditEvent, Notice, PilotAmendment, Rollout, RolloutHub
from rollouts.services.inventory import load_inventory
from rollouts.services.piloting import (
    contribution_shortfalls,
    recompute_pilot_group,
    select_shortfall,
    upload_default_pilot_list,
    upload_preferred_pilot_list,
    upload_vulnerable_flags,
)

from .conftest import inventory, new_draft
from .test_lifecycle import publish

SINGLE, GAS_ONLY = "00DB000000000004", "00DB000000000003"
OWN = [f"00DB0000000001{n:02X}" for n in range(20)]
S1, S2, S3, S4 = (f"00DB00000000020{n}" for n in range(4))


def csv_file(*rows: str, header: str = "guid") -> ContentFile:
    return ContentFile((header + "\n" + "".join(r + "\n" for r in rows)).encode(), name="list.csv")


@pytest.fixture
def rollout(estate, dcc, dcc_2, other_supplier, gas_supplier) -> Rollout:
    other, gasco = other_supplier.organisation.slug, gas_supplier.organisation.slug
    load_inventory(
        user=None,
        content=inventory(
            *(f"{guid},010A030B,0002012F,south,{other},," for guid in OWN),
            *(f"{guid},010A030B,0002012F,south,{other},{gasco}," for guid in (S1, S2, S3, S4)),
        ),
    )
    draft = new_draft(dcc, estate["v2"], [estate["v1"]], contribution_minimum=3, contribution_threshold=7)
    return publish(draft, dcc, dcc_2)


def pilot_of(rollout: Rollout) -> dict[str, str]:
    return dict(
        RolloutHub.objects.filter(rollout=rollout, group="pilot").values_list("hub__guid", "pilot_reason")
    )


def set_cap(rollout: Rollout, pilot_max: int) -> None:
    Rollout.objects.filter(pk=rollout.pk).update(pilot_max=pilot_max)  # test setup: DCC's N1 field


@pytest.mark.req("PL7")
def test_only_suppliers_with_enough_eligible_hubs_are_obliged(rollout, other_supplier, csp_south):
    [shortfall] = contribution_shortfalls(rollout)
    assert (shortfall.supplier_name, shortfall.eligible, shortfall.contributed, shortfall.minimum) == (
        "Other Power",
        25,
        0,
        3,
    )
    assert shortfall.missing == 3
    upload_default_pilot_list(user=csp_south, rollout_id=rollout.pk, content=csv_file(SINGLE, S1))
    [shortfall] = contribution_shortfalls(rollout)
    assert (shortfall.contributed, shortfall.missing) == (2, 1)  # a split hub counts for each Supplier


@pytest.mark.req("PL7")
@pytest.mark.req("PL6")
@pytest.mark.req("PL2")
def test_selection_skips_vetoed_vulnerable_and_unadded_split_hubs(rollout, dcc, other_supplier, gas_supplier):
    # Other Power vetoes 10 of its own hubs and flags the other 10 vulnerable.
    upload_preferred_pilot_list(
        user=other_supplier,
        rollout_id=rollout.pk,
        content=csv_file(*(f"{g},remove" for g in OWN[:10]), header="guid,action"),
    )
    upload_vulnerable_flags(user=other_supplier, content=csv_file(*OWN[10:]))
    # GasCo, the partner on the split hubs: adds S1 and S2, flags S1 vulnerable, vetoes S3; S4 untouched.
    upload_preferred_pilot_list(
        user=gas_supplier,
        rollout_id=rollout.pk,
        content=csv_file(f"{S1},add", f"{S2},add", f"{S3},remove", header="guid,action"),
    )
    upload_vulnerable_flags(user=gas_supplier, content=csv_file(S1))

    result = select_shortfall(user=dcc, rollout_id=rollout.pk, seed=7)

    other = other_supplier.organisation.pk
    # Left to choose: SINGLE, and S2 (its partner added it). Still one short; the cap was not reached.
    assert pilot_of(rollout) == {SINGLE: "selected_on_behalf", S2: "selected_on_behalf"}
    assert (result.selected, result.still_short, result.stopped_at_cap) == ({other: 2}, {other: 1}, False)
    assert set(
        PilotAmendment.objects.filter(reason="selected_on_behalf").values_list(
            "hub__guid", "supplier", "action"
        )
    ) == {(SINGLE, other, "add"), (S2, other, "add")}
    # PL2: both hubs are in the south; its CSP, and only it, is told to put them in a pilot batch.
    told = Notice.objects.filter(kind="pilot.group_changed").select_related("organisation")
    assert [(n.organisation.name, "In your region 2 hub(s) joined" in n.body) for n in told] == [
        ("CSP South", True)
    ]


@pytest.mark.req("PL7")
@pytest.mark.req("PL1")
def test_selection_stops_at_the_cap(rollout, dcc, csp_south, other_supplier):
    set_cap(rollout, 2)
    upload_default_pilot_list(user=csp_south, rollout_id=rollout.pk, content=csv_file(GAS_ONLY))
    result = select_shortfall(user=dcc, rollout_id=rollout.pk, seed=7)
    other = other_supplier.organisation.pk
    assert (result.selected, result.still_short, result.stopped_at_cap, result.pilot) == (
        {other: 1},
        {other: 2},
        True,
        2,
    )


@pytest.mark.req("PL7")
def test_the_same_seed_selects_the_same_hubs(rollout, dcc):
    select_shortfall(user=dcc, rollout_id=rollout.pk, seed="s-1")
    first = set(pilot_of(rollout))
    assert len(first) == 3
    PilotAmendment.objects.filter(reason="selected_on_behalf").delete()  # test setup: start again
    recompute_pilot_group(rollout.pk)
    assert pilot_of(rollout) == {}
    select_shortfall(user=dcc, rollout_id=rollout.pk, seed="s-1")
    assert set(pilot_of(rollout)) == first


@pytest.mark.req("PL7")
@pytest.mark.req("X1")
def test_the_system_selects_at_the_deadline_and_dcc_may_do_it_earlier(rollout, dcc):
    Rollout.objects.filter(pk=rollout.pk).update(contribution_deadline=timezone.now() + dt.timedelta(days=1))
    with pytest.raises(ValidationError, match="DCC can do it earlier"):
        select_shortfall(user=None, rollout_id=rollout.pk, seed=1)
    Rollout.objects.filter(pk=rollout.pk).update(
        contribution_deadline=timezone.now() - dt.timedelta(minutes=1)
    )
    select_shortfall(user=None, rollout_id=rollout.pk, seed=1)
    event = AuditEvent.objects.get(action="pilot.shortfall_selected")
    assert (event.actor, event.user) == ("system", None)
    assert len(pilot_of(rollout)) == 3


@pytest.mark.req("PL7")
@pytest.mark.req("P4")
def test_the_supplier_is_told_its_own_count_only(rollout, dcc, other_supplier):
    select_shortfall(user=dcc, rollout_id=rollout.pk, seed=3)
    notice = Notice.objects.get(kind="pilot.selected_on_behalf")
    assert notice.organisation == other_supplier.organisation
    assert "DCC selected 3 of your hubs" in notice.body
    assert "GasCo" not in notice.body and "Volt" not in notice.body


@pytest.mark.req("PL7")
@pytest.mark.req("P2")
def test_only_dcc_or_the_system_selects(rollout, other_supplier, csp_south):
    for user in (other_supplier, csp_south):
        with pytest.raises(PermissionDenied):
            select_shortfall(user=user, rollout_id=rollout.pk, seed=1)


@pytest.mark.req("PL7")
def test_nothing_is_selected_once_the_pilot_has_started(rollout, dcc):
    Rollout.objects.filter(pk=rollout.pk).update(stage="PILOTING")  # test setup
    with pytest.raises(ValidationError, match="fixed once the pilot starts"):
        select_shortfall(user=dcc, rollout_id=rollout.pk, seed=1)
