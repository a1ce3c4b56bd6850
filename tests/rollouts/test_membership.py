"""Inventory changes reach live rollouts (B3, E6), and counters follow (U1)."""

from __future__ import annotations

import threading

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from rollouts.models import AuditEvent, DeviceModel, FirmwareVersion, Hub, Notice, RolloutCounter, RolloutHub
from rollouts.services import counters, lifecycle
from rollouts.services.inventory import load_inventory
from rollouts.services.piloting import upload_preferred_pilot_list

from .conftest import another_waits_for_a_lock, inventory, new_draft
from .test_lifecycle import publish


@pytest.fixture
def live(draft, dcc, dcc_2):
    return publish(draft, dcc, dcc_2)


def row(rollout, guid):
    return RolloutHub.objects.filter(rollout=rollout, hub__guid=guid).first()


@pytest.mark.req("B3")
def test_a_new_hub_on_a_replaced_version_joins_the_safe_launch_group(live, import_supplier):
    slug = import_supplier.organisation.slug
    upload = load_inventory(
        user=None,
        content=inventory(
            f"00DB000000000007,010A030B,0002012F,north,{slug},,",  # new, on v1: eligible
            f"00DB000000000008,010A030B,00020131,north,{slug},,",  # new, on v3: not replaced
        ),
    )
    joined = row(live, "00DB000000000007")
    assert (joined.group, joined.status, joined.planned_activation_at) == (
        "safe_launch",
        "pending",
        live.auto_deploy_at,
    )
    assert row(live, "00DB000000000008") is None
    assert upload.summary["joined_rollouts"] == 1
    assert counters.counter_mismatches([live.pk]) == []
    assert RolloutCounter.objects.get(rollout=live, organisation=import_supplier.organisation).hubs == 3


@pytest.mark.req("T5")
@pytest.mark.req("B3")
def test_each_csp_is_told_how_many_hubs_an_inventory_load_moved_into_or_out_of_its_plan(
    live, import_supplier, other_supplier
):
    volt, oscar = import_supplier.organisation.slug, other_supplier.organisation.slug
    load_inventory(
        user=None,
        content=inventory(
            f"00DB000000000007,010A030B,0002012F,north,{volt},,",  # new, eligible: joins the North plan
            f"00DB000000000004,010A030B,0002012F,north,{oscar},,",  # was south: leaves it for the North
            f"00DB000000000002,010A030B,0002012F,north,{oscar},{oscar},",  # new Supplier, same plan
        ),
    )
    told = Notice.objects.filter(kind="plan.changed").select_related("organisation")
    north, south = sorted(told, key=lambda n: n.organisation.name)  # one each, nobody else
    assert (north.organisation.name, south.organisation.name) == ("CSP North", "CSP South")
    assert "changed for 2 hubs:" in north.body and "changed for 1 hub:" in south.body
    assert all(volt not in n.body and "Volt" not in n.body for n in told)  # P4


@pytest.mark.req("E6")
@pytest.mark.req("PL2")
def test_a_pilot_hub_whose_adding_supplier_went_leaves_the_pilot_and_its_csp_is_told(
    live, import_supplier, other_supplier
):
    upload_preferred_pilot_list(
        user=import_supplier,
        rollout_id=live.pk,
        content=ContentFile(b"guid,action\n00DB000000000002,add\n", name="preferred.csv"),
    )
    assert row(live, "00DB000000000002").group == "pilot"
    before = Notice.objects.order_by("-pk").values_list("pk", flat=True).first()
    oscar = other_supplier.organisation.slug
    load_inventory(user=None, content=inventory(f"00DB000000000002,010A030B,0002012F,north,{oscar},{oscar},"))
    assert row(live, "00DB000000000002").group == "safe_launch"  # Volt's amendment lapsed (E6, PL6)
    told = Notice.objects.filter(pk__gt=before, kind="pilot.group_changed").select_related("organisation")
    assert [
        (n.organisation.name, "0 hub(s) joined" in n.body and "and 1 left it" in n.body) for n in told
    ] == [("CSP North", True)]


@pytest.mark.req("B3")
def test_a_hub_that_leaves_or_changes_model_gets_left_and_is_never_deleted(
    live, import_supplier, gas_supplier, other_supplier
):
    volt, gasco, oscar = (u.organisation.slug for u in (import_supplier, gas_supplier, other_supplier))
    upload = load_inventory(
        user=None,
        mode="full",
        content=inventory(
            f"00DB000000000001,010A030B,0002012F,north,{volt},{gasco},",
            f"00DB000000000002,020B0001,00010001,north,{volt},{volt},",  # swapped for another model
            f"00DB000000000004,010A030B,0002012F,south,{oscar},,",
            f"00DB000000000005,010A030B,00020130,north,{volt},,",
            f"00DB000000000006,020B0001,00010001,north,{volt},,",
        ),
    )  # 03 is absent: it left the SMI
    assert row(live, "00DB000000000002").status == "left"
    assert row(live, "00DB000000000003").status == "left"
    assert row(live, "00DB000000000001").status == "pending"
    assert upload.summary["left_rollouts"] == 2
    assert RolloutHub.objects.filter(rollout=live).count() == 4
    assert counters.counter_mismatches([live.pk]) == []


@pytest.mark.req("E6")
@pytest.mark.req("P4")
def test_a_supplier_change_moves_the_hub_and_marks_it_for_e6(
    live, import_supplier, gas_supplier, other_supplier
):
    volt, gasco, oscar = (u.organisation.slug for u in (import_supplier, gas_supplier, other_supplier))
    load_inventory(user=None, content=inventory(f"00DB000000000001,010A030B,0002012F,north,{oscar},{gasco},"))
    moved = row(live, "00DB000000000001")
    assert moved.import_supplier == other_supplier.organisation
    # marked for E6, and the mark is consumed in the same load by the lapse of instructions
    assert AuditEvent.objects.filter(action="instruction.lapsed").exists() and not moved.supplier_changed
    assert not row(live, "00DB000000000002").supplier_changed
    by_org = {
        c.organisation.name: c.hubs for c in RolloutCounter.objects.filter(rollout=live, status="pending")
    }
    assert by_org["Volt Energy"] == 1 and by_org["Other Power"] == 2
    assert counters.counter_mismatches([live.pk]) == []


@pytest.mark.req("B3")
def test_a_hub_that_returns_rejoins_as_pending(live, import_supplier, gas_supplier, other_supplier):
    volt, gasco = import_supplier.organisation.slug, gas_supplier.organisation.slug
    rows = [
        f"00DB00000000000{n},010A030B,0002012F,{'north' if n < 3 else 'south'},{volt},{gasco},"
        for n in (1, 2, 3, 4)
    ]
    load_inventory(user=None, mode="full", content=inventory(*rows[:3], name="a.csv"))  # 04 leaves
    assert row(live, "00DB000000000004").status == "left"
    load_inventory(user=None, content=inventory(*rows, name="b.csv"))  # 04 is back
    assert row(live, "00DB000000000004").status == "pending"
    assert counters.counter_mismatches([live.pk]) == []


@pytest.mark.req("B3")
def test_the_first_load_into_an_empty_smi_joins_a_live_rollout(dcc, dcc_2, import_supplier):
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="T", model="CH1", hardware_version="1"
    )
    v1 = FirmwareVersion.objects.create(device_model=model, version="0002012F")
    v2 = FirmwareVersion.objects.create(device_model=model, version="00020130")
    live = publish(new_draft(dcc, v2, [v1]), dcc, dcc_2)  # published before any hub was in the SMI
    slug = import_supplier.organisation.slug
    upload = load_inventory(
        user=None,
        content=inventory(
            f"00DB000000000007,010A030B,0002012F,north,{slug},,",  # on the replaced version: joins
            f"00DB000000000008,010A030B,00020130,north,{slug},,",  # already on the target: does not
        ),
    )
    assert upload.summary["new"] == 2 and Hub.objects.count() == 2
    assert (row(live, "00DB000000000007").group, row(live, "00DB000000000007").status) == (
        "safe_launch",
        "pending",
    )
    assert row(live, "00DB000000000008") is None
    assert upload.summary["joined_rollouts"] == 1
    assert counters.counter_mismatches([live.pk]) == []


@pytest.mark.req("B3")
@pytest.mark.req("N2")
@pytest.mark.req("U1")
@pytest.mark.django_db(transaction=True)
def test_an_inventory_load_during_a_publication_waits_and_then_reaches_the_new_rollout(
    draft, dcc, dcc_2, import_supplier, monkeypatch
):
    """The publication has built its rows (hub 02 eligible, `pending`) and not committed when a load says
    02 is now another model. The publication goes on only once the load is waiting for a lock or done.
    With the estate lock the load waits, then reconciles the new rollout: 02 `left`. Without it the load
    committed first, its reconciliation could not see the uncommitted rollout, and 02 stayed `pending`."""
    real_recount = lifecycle.counters.recount
    rows_built, load_done = threading.Event(), threading.Event()
    load_waited: list[bool] = []

    def recount_after_the_load_moved(rollout_ids):
        if threading.current_thread().name != "publication":  # the same function serves the load
            return real_recount(rollout_ids)
        rows_built.set()
        if another_waits_for_a_lock(load_done):
            load_waited.append(True)
        return real_recount(rollout_ids)

    monkeypatch.setattr(lifecycle.counters, "recount", recount_after_the_load_moved)
    volt = import_supplier.organisation.slug
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            connection.close()

    def load() -> None:
        try:
            load_inventory(
                user=None, content=inventory(f"00DB000000000002,020B0001,00010001,north,{volt},{volt},")
            )
        finally:
            load_done.set()

    dcc_thread = threading.Thread(target=run, args=(lambda: publish(draft, dcc, dcc_2),), name="publication")
    dcc_thread.start()
    assert rows_built.wait(10)
    inventory_thread = threading.Thread(target=run, args=(load,))
    inventory_thread.start()
    dcc_thread.join(30)
    inventory_thread.join(30)
    assert not errors, errors
    assert row(draft, "00DB000000000002").status == "left"
    assert counters.counter_mismatches([draft.pk]) == []
    assert load_waited == [True]  # the load really waited for the publication
