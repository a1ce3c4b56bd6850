"""Shaping the pilot against a model of the rules (PL1, PL4, PL6, PL8, SL1, PL2, E6, P4): random sequences of
CSPs' Default Pilot Lists, Suppliers' Preferred Pilot Lists and DCC's friendly and production-proving
hubs, each checked against what the rules say, written here from REQUIREMENTS.md, not from the code.

The rules modelled, on the four hubs of the estate (tests/rollouts/conftest.py), every one flagged friendly
and production proving in the SMI, and a pilot cap of 3:
- PL1: a CSP's Default Pilot List names hubs of its region and replaces its previous one;
- PL4: a Supplier's Preferred Pilot List adds or removes some of its own hubs and replaces its previous
  amendments;
- PL6: the effective pilot group is the default lists, less any hub one of its Suppliers removed (a standing
  veto), plus any hub all of its Suppliers added (one organisation in both roles counts once);
- PL8: DCC adds friendly hubs (refused whole for a vetoed hub) and production-proving hubs (vetoes do not
  apply), and takes back hubs it added (refused whole for a hub it did not add); a vetoed friendly hub is
  not in the group, a production-proving one always is;
- PL1: a change that would take the group past the cap (and grow it) is refused with `pilot_full`, and
  changes nothing; an inventory load is not refused (E6 below can bring a hub back): DCC is told when one
  takes the group past the cap, and the pilot cannot start while it is (L3);
- SL1: every other hub is in the safe launch group;
- PL2: each CSP whose region's pilot hubs changed is told how many joined and left, and only then;
- E6: an inventory load gives the split hub's gas role to another Supplier: the former one's amendments of
  it lapse (DCC's stay), so its veto or addition no longer counts;
- P4: no notice to a Supplier or a CSP names another Supplier.
"""

from __future__ import annotations

import hypothesis
import pytest
from django.core.exceptions import ValidationError
from hypothesis import strategies as st

from rollouts.intake.errors import RowsRejected
from rollouts.models import Hub, Notice, Rollout, RolloutHub, UploadState
from rollouts.services.counters import counter_mismatches
from rollouts.services.inventory import load_inventory
from rollouts.services.piloting import (
    add_friendly_hubs,
    add_production_proving_hubs,
    effective_pilot_count,
    pilot_not_ready,
    remove_dcc_hubs,
)

from .conftest import inventory, savepoint
from .test_lifecycle import publish
from .test_piloting import default_list, preferred

SPLIT = "00DB000000000001"  # Volt (import) + GasCo (gas), north
BOTH = "00DB000000000002"  # Volt in both roles, north
GAS_ONLY = "00DB000000000003"  # GasCo only, south
OTHERS = "00DB000000000004"  # Other Power only, south
HUBS = (SPLIT, BOTH, GAS_ONLY, OTHERS)
REGION = {SPLIT: "north", BOTH: "north", GAS_ONLY: "south", OTHERS: "south"}
SUPPLIERS_OF = {SPLIT: ("volt", "gasco"), BOTH: ("volt",), GAS_ONLY: ("gasco",), OTHERS: ("oscar",)}
NAMES = {"volt": "Volt Energy", "gasco": "GasCo", "oscar": "Other Power"}
CAP = 3


def picked(hubs: tuple[str, ...], mask: int) -> list[str]:
    """The hubs the mask's bits pick (bit 0 the first hub); none picked: all."""
    return [hub for bit, hub in enumerate(hubs) if mask & (1 << bit)] or list(hubs)


# Steps. A default list: a region and a mask of its two hubs. A preferred list: for each of the Supplier's
# hubs now (at most two), no row, add or remove. DCC: a mask of the four hubs. An inventory load: SPLIT's gas
# role goes to the other of GasCo and Other Power (E6).
defaults = st.tuples(st.just("default"), st.sampled_from(("north", "south")), st.integers(1, 3))
preferences = st.tuples(
    st.just("preferred"),
    st.sampled_from(("volt", "gasco", "oscar")),
    st.tuples(*[st.sampled_from((None, "add", "remove"))] * 2),
)
dcc_changes = st.tuples(
    st.sampled_from(("friendly", "proving", "take_back")), st.integers(1, 15)
)  # a mask of HUBS
steps = st.one_of(
    defaults,
    defaults,
    preferences,
    preferences,
    preferences,
    dcc_changes,
    dcc_changes,
    st.just(("reassign",)),
)
sequences = st.lists(steps, min_size=1, max_size=10)


@pytest.fixture
def live(draft, dcc, dcc_2) -> Rollout:
    return publish(draft, dcc, dcc_2)


class Model:
    def __init__(self) -> None:
        self.default: dict[str, set[str]] = {"north": set(), "south": set()}
        self.amendments: dict[str, dict[str, str]] = {s: {} for s in NAMES}  # supplier -> hub -> action
        self.dcc: dict[str, str] = {}  # hub -> "friendly" | "proving"
        self.suppliers = dict(SUPPLIERS_OF)

    def own(self, supplier: str) -> tuple[str, ...]:
        return tuple(hub for hub in HUBS if supplier in self.suppliers[hub])

    def copy(self) -> Model:
        other = Model()
        other.default = {r: set(h) for r, h in self.default.items()}
        other.amendments = {s: dict(a) for s, a in self.amendments.items()}
        other.dcc = dict(self.dcc)
        other.suppliers = dict(self.suppliers)
        return other

    def vetoed(self, hub: str) -> bool:
        return any(self.amendments[s].get(hub) == "remove" for s in self.suppliers[hub])

    def in_pilot(self, hub: str) -> bool:
        """PL6, PL8."""
        if self.dcc.get(hub) == "proving":
            return True
        if self.vetoed(hub):
            return False
        added = all(self.amendments[s].get(hub) == "add" for s in self.suppliers[hub])
        return hub in self.default[REGION[hub]] or added or self.dcc.get(hub) == "friendly"

    def pilot(self) -> set[str]:
        return {hub for hub in HUBS if self.in_pilot(hub)}


def grows_past_cap(before: Model, after: Model) -> bool:
    """PL1: the change takes the group past the cap and grows it (one that shrinks an over-full group is
    taken)."""
    return len(after.pilot()) > CAP and len(after.pilot()) > len(before.pilot())


@pytest.mark.req("PL1")
@pytest.mark.req("PL2")
@pytest.mark.req("PL4")
@pytest.mark.req("PL6")
@pytest.mark.req("PL8")
@pytest.mark.req("SL1")
@pytest.mark.req("E6")
@pytest.mark.req("P4")
def test_the_effective_pilot_group_follows_the_rules(
    live, dcc, import_supplier, gas_supplier, other_supplier, csp_north, csp_south
):
    Rollout.objects.filter(pk=live.pk).update(pilot_max=CAP)  # test setup: DCC's N1 field
    live.refresh_from_db()
    Hub.objects.filter(guid__in=HUBS).update(friendly=True, production_proving=True)  # DCC's SMI flags
    users = {"volt": import_supplier, "gasco": gas_supplier, "oscar": other_supplier}
    csps = {"north": csp_north, "south": csp_south}
    key_of = {user.organisation_id: key for key, user in users.items()}
    region_of = {csp.organisation_id: region for region, csp in csps.items()}

    def act(step: tuple, model: Model) -> Model:
        """The step on the rollout; returns the model after it (the same model when it is refused)."""
        kind = step[0]
        after = model.copy()
        if kind == "default":
            _, region, mask = step
            hubs = picked(tuple(h for h in HUBS if REGION[h] == region), mask)
            after.default[region] = set(hubs)
            full = grows_past_cap(model, after)
            upload = default_list(csps[region], live, *hubs)
            assert (upload.state, [e.code for e in upload.errors.all()]) == (
                (UploadState.REJECTED, ["pilot_full"]) if full else (UploadState.APPLIED, [])
            )
            return model if full else after
        if kind == "preferred":
            _, supplier, actions = step
            rows = {hub: action for hub, action in zip(model.own(supplier), actions, strict=False) if action}
            if not rows:
                return model  # no list to send
            after.amendments[supplier] = rows
            full = grows_past_cap(model, after)
            upload = preferred(users[supplier], live, *(f"{hub},{action}" for hub, action in rows.items()))
            assert (upload.state, [e.code for e in upload.errors.all()]) == (
                (UploadState.REJECTED, ["pilot_full"]) if full else (UploadState.APPLIED, [])
            )
            return model if full else after
        if kind == "reassign":
            # E6: the former gas Supplier's amendment of SPLIT lapses; DCC's stay.
            old = model.suppliers[SPLIT][1]
            new = "oscar" if old == "gasco" else "gasco"
            after.suppliers[SPLIT] = ("volt", new)
            after.amendments[old].pop(SPLIT, None)
            volt = users["volt"].organisation.slug
            load_inventory(
                user=None,
                content=inventory(
                    f"{SPLIT},010A030B,0002012F,north,{volt},{users[new].organisation.slug},"
                    "friendly;production_proving"  # the SMI's flags stay
                ),
            )
            return after
        hubs = picked(HUBS, step[1])
        if kind == "take_back":
            refused = [hub for hub in hubs if hub not in model.dcc]
            for hub in hubs:
                after.dcc.pop(hub, None)
            full = False  # taking back never grows the group
            call = remove_dcc_hubs
        else:
            # PL8: a friendly addition of a vetoed hub is refused; one of a production-proving hub keeps it so.
            refused = [hub for hub in hubs if model.vetoed(hub)] if kind == "friendly" else []
            for hub in hubs:
                if kind == "proving" or hub not in after.dcc:
                    after.dcc[hub] = kind
            full = grows_past_cap(model, after)
            call = add_friendly_hubs if kind == "friendly" else add_production_proving_hubs
        if refused:
            with pytest.raises(RowsRejected) as rejected:
                call(user=dcc, rollout_id=live.pk, hub_guids=hubs)
            assert [f.row for f in rejected.value.failures] == [hubs.index(h) + 1 for h in refused]
            assert {f.code for f in rejected.value.failures} == {"guid_not_eligible"}
            return model
        if full:
            with pytest.raises(ValidationError) as rejected:
                call(user=dcc, rollout_id=live.pk, hub_guids=hubs)
            assert rejected.value.code == "pilot_full"
            return model
        call(user=dcc, rollout_id=live.pk, hub_guids=hubs)
        return after

    def agrees(before: Model, model: Model, notices: list[Notice]) -> None:
        rows = dict(RolloutHub.objects.filter(rollout=live).values_list("hub__guid", "group"))
        assert {hub for hub, group in rows.items() if group == "pilot"} == model.pilot()
        assert {hub for hub, group in rows.items() if group == "safe_launch"} == set(
            HUBS
        ) - model.pilot()  # SL1
        assert effective_pilot_count(live.pk) == len(model.pilot())
        # PL1, L3: only an inventory load (E6) can take the group past the cap, and the pilot cannot start
        # until hubs are removed.
        assert ("more than the cap" in (pilot_not_ready(live) or "")) == (len(model.pilot()) > CAP)
        # ... and DCC is told when a load takes it past the cap.
        over = [n for n in notices if n.kind == "pilot.over_cap"]
        assert [n.organisation_id for n in over] == (
            [dcc.organisation_id] if grows_past_cap(before, model) else []
        )
        assert all(f"now has {len(model.pilot())} hubs, more than the cap of {CAP}" in n.body for n in over)
        # PL2: each CSP whose pilot hubs changed is told how many joined and left, once, and only then.
        moved = {
            region: (
                len({h for h in model.pilot() - before.pilot() if REGION[h] == region}),
                len({h for h in before.pilot() - model.pilot() if REGION[h] == region}),
            )
            for region in csps
        }
        told = [n for n in notices if n.kind == "pilot.group_changed"]
        assert sorted(region_of[n.organisation_id] for n in told) == sorted(
            r for r, m in moved.items() if any(m)
        )
        for notice in told:
            joined, left = moved[region_of[notice.organisation_id]]
            assert (
                f"In your region {joined} hub(s) joined" in notice.body
                and f"and {left} left it" in notice.body
            )
        for notice in notices:  # P4
            if notice.organisation_id in key_of or notice.organisation_id in region_of:
                others = [
                    name
                    for key, name in NAMES.items()
                    if users[key].organisation_id != notice.organisation_id
                ]
                assert not [name for name in others if name in notice.subject + notice.body]
        assert counter_mismatches([live.pk]) == []

    @hypothesis.settings(max_examples=30, deadline=None, database=None)
    @hypothesis.given(sequence=sequences)
    # The edges, always. A veto takes a default hub out, and the partner's addition alone does not bring a
    # split hub in; both Suppliers' additions do, once the veto is gone.
    @hypothesis.example(
        sequence=[("default", "north", 3), ("preferred", "gasco", ("remove", None))]
        + [("preferred", "volt", ("add", None)), ("preferred", "gasco", ("add", None))]
    )
    # ... a friendly hub is refused when vetoed, and leaves when vetoed later; a production-proving hub
    # ignores the veto, and taking it back takes it out; taking back what DCC did not add is refused.
    @hypothesis.example(
        sequence=[("preferred", "oscar", ("remove",)), ("friendly", 8), ("friendly", 4)]
        + [("preferred", "gasco", (None, "remove")), ("proving", 8), ("take_back", 12), ("take_back", 1)]
    )
    # ... a friendly addition does not turn a production-proving hub into a friendly one, which a veto would
    # then take out.
    @hypothesis.example(sequence=[("proving", 2), ("friendly", 2), ("preferred", "volt", (None, "remove"))])
    # ... E6: GasCo's veto of the split hub lapses when the gas role moves, and the default list takes it
    # back in; Other Power's and Volt's additions bring it in, and moving the role back takes it out again.
    @hypothesis.example(
        sequence=[("default", "north", 1), ("preferred", "gasco", ("remove", None)), ("reassign",)]
        + [
            ("default", "north", 2),
            ("preferred", "oscar", ("add", None)),
            ("preferred", "volt", ("add", None)),
        ]
        + [("reassign",)]
    )
    # ... the cap: a fourth hub is refused, whoever adds it, and nothing changes; a list that shrinks the
    # group is taken.
    @hypothesis.example(
        sequence=[("default", "north", 3), ("friendly", 4), ("default", "south", 2), ("proving", 8)]
        + [("preferred", "oscar", ("add",)), ("default", "north", 1), ("default", "south", 3)]
    )
    # ... a lapsed veto stays lapsed when the role comes back; DCC's friendly hub stays through the move.
    # And a lapsed veto can take the group past the cap: the pilot cannot start, a list that shrinks it is
    # taken, one that does not is refused.
    @hypothesis.example(
        sequence=[("default", "south", 3), ("preferred", "gasco", ("remove", None)), ("default", "north", 3)]
        + [
            ("reassign",),
            ("preferred", "oscar", (None, "add")),
            ("default", "south", 1),
            ("default", "north", 2),
        ]
    )
    # ... a load that leaves a group past the cap as it is tells DCC nothing more.
    @hypothesis.example(
        sequence=[("default", "south", 3), ("preferred", "gasco", ("remove", None)), ("default", "north", 3)]
        + [("reassign",), ("reassign",)]
    )
    @hypothesis.example(
        sequence=[("default", "north", 1), ("preferred", "gasco", ("remove", None)), ("reassign",)]
        + [("reassign",), ("friendly", 1), ("reassign",)]
    )
    def follows_the_rules(sequence: list[tuple]) -> None:
        model = Model()
        last = Notice.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        with savepoint():
            for step in sequence:
                before = model
                model = act(step, model)
                notices = list(Notice.objects.filter(pk__gt=last).order_by("pk"))
                last = notices[-1].pk if notices else last
                agrees(before, model, notices)

    follows_the_rules()
