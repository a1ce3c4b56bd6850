"""Every move from every state, against a literal transcription of REQUIREMENTS.md section L.

The expectations below are written from the requirement text (L1-L10, B4, N3, N4) and the team's
reading of it; they are never derived from `rollouts.transitions.MOVES`, which is read only to
check that the code offers exactly the moves transcribed here.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from rollouts.models import (
    AuditEvent,
    Batch,
    DeviceModel,
    FirmwareVersion,
    Hub,
    OrgKind,
    Proposal,
    Rollout,
    RolloutCounter,
    RolloutHub,
    User,
)
from rollouts.services.lifecycle import create_rollout
from rollouts.transitions import MOVES, apply_move
from tests.factories import OrganisationFactory

# -- the transcription -------------------------------------------------------------------------------

NOTIFICATION, PILOTING, SAFE_LAUNCH, CLOSURE = "NOTIFICATION", "PILOTING", "SAFE_LAUNCH", "CLOSURE"
DRAFT, ACTIVE, PAUSED, SUSPENDED = "DRAFT", "ACTIVE", "PAUSED", "SUSPENDED"
STOPPED, REVOKED, CLOSED, SUPERSEDED = "STOPPED", "REVOKED", "CLOSED", "SUPERSEDED"

State = tuple[str, str]

# Every (stage, status) a rollout can be in: DRAFT only in NOTIFICATION, REVOKED stays in
# NOTIFICATION, CLOSURE holds only CLOSED and SUPERSEDED.
STATES: list[State] = [
    (NOTIFICATION, DRAFT),
    (NOTIFICATION, ACTIVE),
    (NOTIFICATION, PAUSED),
    (NOTIFICATION, SUSPENDED),
    (NOTIFICATION, STOPPED),
    (NOTIFICATION, REVOKED),
    (PILOTING, ACTIVE),
    (PILOTING, PAUSED),
    (PILOTING, SUSPENDED),
    (PILOTING, STOPPED),
    (SAFE_LAUNCH, ACTIVE),
    (SAFE_LAUNCH, PAUSED),
    (SAFE_LAUNCH, SUSPENDED),
    (SAFE_LAUNCH, STOPPED),
    (CLOSURE, CLOSED),
    (CLOSURE, SUPERSEDED),
]

DCC, CSP, SUPPLIER, SYSTEM = "dcc", "csp", "supplier", "system"


@dataclass(frozen=True)
class Rule:
    reqs: tuple[str, ...]
    actors: frozenset[str]
    steps: dict[State, State]  # from (stage, status) -> to (stage, status); every other state is refused
    four_eyes: bool = False  # B4


SECTION_L: dict[str, Rule] = {
    # L1 publish* (A01): DRAFT -> ACTIVE.
    "publish": Rule(
        ("L1", "B4"),
        frozenset({DCC}),
        {(NOTIFICATION, DRAFT): (NOTIFICATION, ACTIVE)},
        four_eyes=True,
    ),
    # L2, N3 revoke: NOTIFICATION/ACTIVE before any hub is distributed -> REVOKED.
    "revoke": Rule(
        ("L2", "N3"),
        frozenset({DCC}),
        {(NOTIFICATION, ACTIVE): (NOTIFICATION, REVOKED)},
    ),
    # L3 start_pilot: NOTIFICATION/ACTIVE -> PILOTING/ACTIVE.
    "start_pilot": Rule(
        ("L3",),
        frozenset({DCC}),
        {(NOTIFICATION, ACTIVE): (PILOTING, ACTIVE)},
    ),
    # L4 post_pilot_success (A06) records the outcome; post_pilot_failure* (A07) -> STOPPED.
    "post_pilot_success": Rule(
        ("L4",),
        frozenset({DCC}),
        {
            (PILOTING, ACTIVE): (PILOTING, ACTIVE),
            (PILOTING, PAUSED): (PILOTING, PAUSED),
        },
    ),
    "post_pilot_failure": Rule(
        ("L4", "B4"),
        frozenset({DCC}),
        {
            (PILOTING, ACTIVE): (PILOTING, STOPPED),
            (PILOTING, PAUSED): (PILOTING, STOPPED),
        },
        four_eyes=True,
    ),
    # L5 start_safe_launch: PILOTING -> SAFE_LAUNCH by the System, after A06, firmware not withdrawn.
    "start_safe_launch": Rule(
        ("L5",),
        frozenset({SYSTEM}),
        {(PILOTING, ACTIVE): (SAFE_LAUNCH, ACTIVE)},
    ),
    # L5: NOTIFICATION -> SAFE_LAUNCH by DCC for a rollout without pilot.
    "start_safe_launch_without_pilot": Rule(
        ("L5",),
        frozenset({DCC}),
        {(NOTIFICATION, ACTIVE): (SAFE_LAUNCH, ACTIVE)},
    ),
    # L6 pause (DCC, or the System by B1): ACTIVE -> PAUSED, in any live stage.
    "pause": Rule(
        ("L6", "B1"),
        frozenset({DCC, SYSTEM}),
        {
            (NOTIFICATION, ACTIVE): (NOTIFICATION, PAUSED),
            (PILOTING, ACTIVE): (PILOTING, PAUSED),
            (SAFE_LAUNCH, ACTIVE): (SAFE_LAUNCH, PAUSED),
        },
    ),
    # L6 resume (DCC): PAUSED -> ACTIVE.
    "resume": Rule(
        ("L6",),
        frozenset({DCC}),
        {
            (NOTIFICATION, PAUSED): (NOTIFICATION, ACTIVE),
            (PILOTING, PAUSED): (PILOTING, ACTIVE),
            (SAFE_LAUNCH, PAUSED): (SAFE_LAUNCH, ACTIVE),
        },
    ),
    # L6 suspend (DCC, immediate, no second user: B4): ACTIVE or PAUSED -> SUSPENDED.
    "suspend": Rule(
        ("L6", "B4"),
        frozenset({DCC}),
        {
            (NOTIFICATION, ACTIVE): (NOTIFICATION, SUSPENDED),
            (NOTIFICATION, PAUSED): (NOTIFICATION, SUSPENDED),
            (PILOTING, ACTIVE): (PILOTING, SUSPENDED),
            (PILOTING, PAUSED): (PILOTING, SUSPENDED),
            (SAFE_LAUNCH, ACTIVE): (SAFE_LAUNCH, SUSPENDED),
            (SAFE_LAUNCH, PAUSED): (SAFE_LAUNCH, SUSPENDED),
        },
    ),
    # L6 record_panel_decision: SUSPENDED -> ACTIVE, PAUSED or STOPPED (a decision the Panel made: B4).
    "panel_decision_resume": Rule(
        ("L6",),
        frozenset({DCC}),
        {
            (NOTIFICATION, SUSPENDED): (NOTIFICATION, ACTIVE),
            (PILOTING, SUSPENDED): (PILOTING, ACTIVE),
            (SAFE_LAUNCH, SUSPENDED): (SAFE_LAUNCH, ACTIVE),
        },
    ),
    "panel_decision_pause": Rule(
        ("L6",),
        frozenset({DCC}),
        {
            (NOTIFICATION, SUSPENDED): (NOTIFICATION, PAUSED),
            (PILOTING, SUSPENDED): (PILOTING, PAUSED),
            (SAFE_LAUNCH, SUSPENDED): (SAFE_LAUNCH, PAUSED),
        },
    ),
    "panel_decision_stop": Rule(
        ("L6", "B4"),
        frozenset({DCC}),
        {
            (NOTIFICATION, SUSPENDED): (NOTIFICATION, STOPPED),
            (PILOTING, SUSPENDED): (PILOTING, STOPPED),
            (SAFE_LAUNCH, SUSPENDED): (SAFE_LAUNCH, STOPPED),
        },
    ),
    # L7 delay_end_date (DCC): status unchanged; from ACTIVE, PAUSED or SUSPENDED in a live stage.
    "delay_end_date": Rule(
        ("L7",),
        frozenset({DCC}),
        {
            (NOTIFICATION, ACTIVE): (NOTIFICATION, ACTIVE),
            (NOTIFICATION, PAUSED): (NOTIFICATION, PAUSED),
            (NOTIFICATION, SUSPENDED): (NOTIFICATION, SUSPENDED),
            (PILOTING, ACTIVE): (PILOTING, ACTIVE),
            (PILOTING, PAUSED): (PILOTING, PAUSED),
            (PILOTING, SUSPENDED): (PILOTING, SUSPENDED),
            (SAFE_LAUNCH, ACTIVE): (SAFE_LAUNCH, ACTIVE),
            (SAFE_LAUNCH, PAUSED): (SAFE_LAUNCH, PAUSED),
            (SAFE_LAUNCH, SUSPENDED): (SAFE_LAUNCH, SUSPENDED),
        },
    ),
    # L8 stop*: any live stage, ACTIVE, PAUSED or SUSPENDED -> STOPPED.
    "stop": Rule(
        ("L8", "B4"),
        frozenset({DCC}),
        {
            (NOTIFICATION, ACTIVE): (NOTIFICATION, STOPPED),
            (NOTIFICATION, PAUSED): (NOTIFICATION, STOPPED),
            (NOTIFICATION, SUSPENDED): (NOTIFICATION, STOPPED),
            (PILOTING, ACTIVE): (PILOTING, STOPPED),
            (PILOTING, PAUSED): (PILOTING, STOPPED),
            (PILOTING, SUSPENDED): (PILOTING, STOPPED),
            (SAFE_LAUNCH, ACTIVE): (SAFE_LAUNCH, STOPPED),
            (SAFE_LAUNCH, PAUSED): (SAFE_LAUNCH, STOPPED),
            (SAFE_LAUNCH, SUSPENDED): (SAFE_LAUNCH, STOPPED),
        },
        four_eyes=True,
    ),
    # L8 post_safe_launch_success / failure (A09/A10) record the outcome.
    "post_safe_launch_success": Rule(
        ("L8",),
        frozenset({DCC}),
        {
            (SAFE_LAUNCH, ACTIVE): (SAFE_LAUNCH, ACTIVE),
            (SAFE_LAUNCH, PAUSED): (SAFE_LAUNCH, PAUSED),
        },
    ),
    "post_safe_launch_failure": Rule(
        ("L8",),
        frozenset({DCC}),
        {
            (SAFE_LAUNCH, ACTIVE): (SAFE_LAUNCH, ACTIVE),
            (SAFE_LAUNCH, PAUSED): (SAFE_LAUNCH, PAUSED),
        },
    ),
    # L8 close* (A11): from SAFE_LAUNCH/ACTIVE after A09 or A10 -> CLOSURE/CLOSED ...
    "close_after_outcome": Rule(
        ("L8", "B4"),
        frozenset({DCC}),
        {(SAFE_LAUNCH, ACTIVE): (CLOSURE, CLOSED)},
        four_eyes=True,
    ),
    # ... or from any stage with status STOPPED -> CLOSURE/CLOSED.
    "close_stopped": Rule(
        ("L8", "B4"),
        frozenset({DCC}),
        {
            (NOTIFICATION, STOPPED): (CLOSURE, CLOSED),
            (PILOTING, STOPPED): (CLOSURE, CLOSED),
            (SAFE_LAUNCH, STOPPED): (CLOSURE, CLOSED),
        },
        four_eyes=True,
    ),
    # L9 supersede (A12): any non-terminal but STOPPED (L8: then only close) -> CLOSURE/SUPERSEDED.
    "supersede": Rule(
        ("L9",),
        frozenset({DCC, SYSTEM}),
        {
            (NOTIFICATION, DRAFT): (CLOSURE, SUPERSEDED),
            (NOTIFICATION, ACTIVE): (CLOSURE, SUPERSEDED),
            (NOTIFICATION, PAUSED): (CLOSURE, SUPERSEDED),
            (NOTIFICATION, SUSPENDED): (CLOSURE, SUPERSEDED),
            (PILOTING, ACTIVE): (CLOSURE, SUPERSEDED),
            (PILOTING, PAUSED): (CLOSURE, SUPERSEDED),
            (PILOTING, SUSPENDED): (CLOSURE, SUPERSEDED),
            (SAFE_LAUNCH, ACTIVE): (CLOSURE, SUPERSEDED),
            (SAFE_LAUNCH, PAUSED): (CLOSURE, SUPERSEDED),
            (SAFE_LAUNCH, SUSPENDED): (CLOSURE, SUPERSEDED),
        },
    ),
}

# Test setup only: the data each move's guard needs, so that where the table allows a move, the
# guard does not refuse it (and where the table refuses it, the guard is not the reason).
ARRANGE: dict[str, dict[str, Any]] = {
    "start_pilot": {"pilot_hub": True},
    "start_safe_launch": {"pilot_outcome": "success"},
    "start_safe_launch_without_pilot": {"impact": "operational"},
    "close_after_outcome": {"safe_launch_outcome": "success"},
}


def marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.req(req) for req in SECTION_L[name].reqs]


def state_id(state: State) -> str:
    return f"{state[0]}-{state[1]}"


def primary_actor(name: str) -> str:
    """The actor the walk uses: DCC where it may make the move, else the System."""
    return DCC if DCC in SECTION_L[name].actors else SYSTEM


def every_move_from_every_state():
    for name in SECTION_L:
        for state in STATES:
            yield pytest.param(name, state, id=f"{name}-{state_id(state)}", marks=marks(name))


def allowed_pairs():
    for name, rule in SECTION_L.items():
        for state in rule.steps:
            yield name, state


def other_actors_on_allowed_moves():
    for name, state in allowed_pairs():
        for actor in (DCC, CSP, SUPPLIER, SYSTEM):
            if actor != primary_actor(name):
                yield pytest.param(
                    name, state, actor, id=f"{name}-{state_id(state)}-{actor}", marks=marks(name)
                )


# -- fixtures and helpers ----------------------------------------------------------------------------


@dataclass
class World:
    dcc: User
    dcc_2: User
    csp: User
    supplier: User
    model: DeviceModel
    v1: FirmwareVersion
    v2: FirmwareVersion

    def user(self, actor: str) -> User | None:
        """The user acting as `actor`; for DCC the second DCC user (who approves four-eyes moves)."""
        return {DCC: self.dcc_2, CSP: self.csp, SUPPLIER: self.supplier, SYSTEM: None}[actor]


@pytest.fixture
def world(dcc, dcc_2, csp_north, import_supplier) -> World:
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="Toshiba", model="CH1", hardware_version="1"
    )
    v1 = FirmwareVersion.objects.create(device_model=model, version="0002012F")
    v2 = FirmwareVersion.objects.create(device_model=model, version="00020130")
    return World(dcc, dcc_2, csp_north, import_supplier, model, v1, v2)


_guids = iter(range(1, 10**6))


def make_rollout(
    world: World,
    state: State,
    *,
    impact: str = "functional",
    pilot_hub: bool = False,
    pilot_outcome: str = "",
    safe_launch_outcome: str = "",
) -> Rollout:
    rollout = create_rollout(
        user=world.dcc,
        title="CH1 security fix",
        target_version=world.v2,
        replaced_versions=[world.v1],
        release_note_url="https://example.test/rn",
        severity="high",
        priority="high",
        release_type="sec_release",
        impact=impact,
    )
    if pilot_hub:
        hub = Hub.objects.create(
            guid=f"00DB12345678{next(_guids):04X}",
            device_model=world.model,
            firmware_version=world.v1,
            region="north",
        )
        # L3: a non-empty effective pilot group with every pilot hub in a (pilot) batch
        batch = Batch.objects.create(
            rollout=rollout,
            region="north",
            group="pilot",
            name="P1",
            window_start=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
            window_end=dt.datetime(2026, 3, 8, tzinfo=dt.UTC),
        )
        RolloutHub.objects.create(
            rollout=rollout, hub=hub, guid=hub.guid, region="north", group="pilot", batch=batch
        )
    # Test setup only: put the rollout straight into the state under test.
    Rollout.objects.filter(pk=rollout.pk).update(
        stage=state[0],
        status=state[1],
        pilot_outcome=pilot_outcome,
        safe_launch_outcome=safe_launch_outcome,
    )
    return rollout


def make_rollout_for(world: World, name: str, state: State) -> Rollout:
    return make_rollout(world, state, **ARRANGE.get(name, {}))


def approved_proposal(world: World, rollout: Rollout, name: str, state: State) -> Proposal:
    return Proposal.objects.create(
        rollout=rollout,
        move=name,
        at_stage=state[0],
        at_status=state[1],
        state="approved",
        proposed_by=world.dcc,
        decided_by=world.dcc_2,
        decided_at=timezone.now(),
    )


def state_in_db(rollout: Rollout) -> State:
    return tuple(Rollout.objects.values_list("stage", "status").get(pk=rollout.pk))


# -- the walk ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "state"), list(every_move_from_every_state()))
def test_move_from_state_is_allowed_or_refused_as_section_l_says(world, name, state):
    rule = SECTION_L[name]
    rollout = make_rollout_for(world, name, state)
    # A four-eyes move gets a proposal approved by a second DCC user for this very state, so that
    # only the table decides whether the move is allowed here.
    proposal = approved_proposal(world, rollout, name, state) if rule.four_eyes else None
    user = world.user(primary_actor(name))

    if state in rule.steps:
        moved = apply_move(rollout.pk, name, user=user, proposal=proposal)
        assert (moved.stage, moved.status) == rule.steps[state]
        assert state_in_db(rollout) == rule.steps[state]
    else:
        with pytest.raises(ValidationError) as refused:
            apply_move(rollout.pk, name, user=user, proposal=proposal)
        assert refused.value.code == "state_changed"
        assert state_in_db(rollout) == state


@pytest.mark.parametrize(("name", "state", "actor"), list(other_actors_on_allowed_moves()))
def test_only_the_actors_section_l_names_may_make_a_move(world, name, state, actor):
    """CSP and Supplier users may make no move; DCC and the System only those L names them for."""
    rule = SECTION_L[name]
    rollout = make_rollout_for(world, name, state)
    proposal = approved_proposal(world, rollout, name, state) if rule.four_eyes else None

    if actor in rule.actors:
        moved = apply_move(rollout.pk, name, user=world.user(actor), proposal=proposal)
        assert (moved.stage, moved.status) == rule.steps[state]
        assert state_in_db(rollout) == rule.steps[state]
    else:
        with pytest.raises(PermissionDenied):
            apply_move(rollout.pk, name, user=world.user(actor), proposal=proposal)
        assert state_in_db(rollout) == state


def test_the_code_offers_exactly_the_moves_of_section_l():
    offered = set(MOVES.keys())
    assert offered - set(SECTION_L) == set(), "moves in the code that section L does not name"
    assert set(SECTION_L) - offered == set(), "moves of section L that the code does not offer"


# -- B4: four-eyes -----------------------------------------------------------------------------------

FOUR_EYES_FAULTS = [
    "no_proposal",
    "pending",
    "rejected",
    "proposer_approved_own",
    "for_another_move",
    "made_in_another_state",
    "for_another_rollout",
]


def four_eyes_cases():
    for name, state in allowed_pairs():
        if SECTION_L[name].four_eyes:
            for fault in FOUR_EYES_FAULTS:
                yield pytest.param(
                    name, state, fault, id=f"{name}-{state_id(state)}-{fault}", marks=marks(name)
                )


def another_state(state: State) -> State:
    return (NOTIFICATION, ACTIVE) if state != (NOTIFICATION, ACTIVE) else (NOTIFICATION, PAUSED)


@pytest.mark.parametrize(("name", "state", "fault"), list(four_eyes_cases()))
def test_four_eyes_move_is_refused_without_an_approval_by_a_second_dcc_user(world, name, state, fault):
    rollout = make_rollout_for(world, name, state)
    base = {"rollout": rollout, "move": name, "at_stage": state[0], "at_status": state[1]}
    approved = {"state": "approved", "proposed_by": world.dcc, "decided_by": world.dcc_2}
    proposal: Proposal | None
    match fault:
        case "no_proposal":
            proposal = None
        case "pending":
            proposal = Proposal.objects.create(**base, proposed_by=world.dcc)
        case "rejected":
            proposal = Proposal.objects.create(
                **base, state="rejected", proposed_by=world.dcc, decided_by=world.dcc_2
            )
        case "proposer_approved_own":
            # The database refuses such a row (proposal_four_eyes) ...
            with pytest.raises(IntegrityError), transaction.atomic():
                Proposal.objects.create(**base, state="approved", proposed_by=world.dcc, decided_by=world.dcc)
            # ... and so must the function that applies moves, given one.
            proposal = Proposal(**base, state="approved", proposed_by=world.dcc, decided_by=world.dcc)
        case "for_another_move":
            proposal = Proposal.objects.create(
                **{**base, "move": "publish" if name != "publish" else "stop"}, **approved
            )
        case "made_in_another_state":
            other = another_state(state)
            proposal = Proposal.objects.create(
                **{**base, "at_stage": other[0], "at_status": other[1]}, **approved
            )
        case "for_another_rollout":
            other_rollout = make_rollout_for(world, name, state)
            proposal = Proposal.objects.create(**{**base, "rollout": other_rollout}, **approved)

    with pytest.raises(PermissionDenied):
        apply_move(rollout.pk, name, user=world.dcc_2, proposal=proposal)
    assert state_in_db(rollout) == state


# -- guards named in section L ------------------------------------------------------------------------


def assert_guard_refuses(rollout: Rollout, name: str, user: User | None, state: State) -> None:
    with pytest.raises(ValidationError) as refused:
        apply_move(rollout.pk, name, user=user)
    assert refused.value.code == "guard"
    assert state_in_db(rollout) == state


@pytest.mark.req("L3")
def test_start_pilot_is_refused_with_an_empty_pilot_group(world):
    rollout = make_rollout(world, (NOTIFICATION, ACTIVE))
    assert_guard_refuses(rollout, "start_pilot", world.dcc, (NOTIFICATION, ACTIVE))


@pytest.mark.req("L3")
def test_start_pilot_is_refused_for_a_rollout_without_pilot(world):
    rollout = make_rollout(world, (NOTIFICATION, ACTIVE), impact="operational", pilot_hub=True)
    assert_guard_refuses(rollout, "start_pilot", world.dcc, (NOTIFICATION, ACTIVE))


@pytest.mark.req("L5")
def test_start_safe_launch_is_refused_before_pilot_success(world):
    rollout = make_rollout(world, (PILOTING, ACTIVE))
    assert_guard_refuses(rollout, "start_safe_launch", None, (PILOTING, ACTIVE))


@pytest.mark.req("L5")
def test_start_safe_launch_is_refused_after_pilot_failure(world):
    rollout = make_rollout(world, (PILOTING, ACTIVE), pilot_outcome="failure")
    assert_guard_refuses(rollout, "start_safe_launch", None, (PILOTING, ACTIVE))


@pytest.mark.req("L5")
@pytest.mark.req("N4")
def test_start_safe_launch_is_refused_while_the_firmware_is_withdrawn(world):
    FirmwareVersion.objects.filter(pk=world.v2.pk).update(
        withdrawn_at=timezone.now(), withdrawn_reason="Bricks hubs on reboot"
    )
    rollout = make_rollout(world, (PILOTING, ACTIVE), pilot_outcome="success")
    assert_guard_refuses(rollout, "start_safe_launch", None, (PILOTING, ACTIVE))


@pytest.mark.req("L5")
def test_start_safe_launch_without_pilot_is_refused_for_a_rollout_with_pilot(world):
    rollout = make_rollout(world, (NOTIFICATION, ACTIVE), impact="functional")
    assert_guard_refuses(rollout, "start_safe_launch_without_pilot", world.dcc, (NOTIFICATION, ACTIVE))


@pytest.mark.req("L5")
@pytest.mark.parametrize("impact", ["operational", "security"])
def test_start_safe_launch_without_pilot_for_operational_and_security_releases(world, impact):
    rollout = make_rollout(world, (NOTIFICATION, ACTIVE), impact=impact)
    moved = apply_move(rollout.pk, "start_safe_launch_without_pilot", user=world.dcc)
    assert (moved.stage, moved.status) == (SAFE_LAUNCH, ACTIVE)


@pytest.mark.req("L2")
@pytest.mark.req("N3")
def test_revoke_is_refused_once_a_hub_is_distributed(world):
    rollout = make_rollout(world, (NOTIFICATION, ACTIVE))
    RolloutCounter.objects.create(
        rollout=rollout,
        organisation=OrganisationFactory(name="CSP North", kind=OrgKind.CSP, region="north"),
        group="pilot",
        status="distributed",
        hubs=1,
    )
    assert_guard_refuses(rollout, "revoke", world.dcc, (NOTIFICATION, ACTIVE))


@pytest.mark.req("L8")
@pytest.mark.req("B4")
def test_close_after_outcome_is_refused_before_a09_or_a10(world):
    rollout = make_rollout(world, (SAFE_LAUNCH, ACTIVE))
    proposal = approved_proposal(world, rollout, "close_after_outcome", (SAFE_LAUNCH, ACTIVE))
    with pytest.raises(ValidationError) as refused:
        apply_move(rollout.pk, "close_after_outcome", user=world.dcc_2, proposal=proposal)
    assert refused.value.code == "guard"
    assert state_in_db(rollout) == (SAFE_LAUNCH, ACTIVE)


OUTCOMES = [
    # (first move, its recorded field and value, second move, state)
    ("post_pilot_success", "pilot_outcome", "success", "post_pilot_success", (PILOTING, ACTIVE)),
    ("post_pilot_success", "pilot_outcome", "success", "post_pilot_failure", (PILOTING, ACTIVE)),
    (
        "post_safe_launch_success",
        "safe_launch_outcome",
        "success",
        "post_safe_launch_failure",
        (SAFE_LAUNCH, ACTIVE),
    ),
    (
        "post_safe_launch_failure",
        "safe_launch_outcome",
        "failure",
        "post_safe_launch_success",
        (SAFE_LAUNCH, PAUSED),
    ),
]


@pytest.mark.parametrize(
    ("first", "field", "value", "second", "state"),
    [
        pytest.param(*case, id=f"{case[0]}-then-{case[3]}", marks=marks(case[0]) + marks(case[3]))
        for case in OUTCOMES
    ],
)
def test_an_outcome_is_posted_once(world, first, field, value, second, state):
    """L4, L8: posting an outcome records it and leaves the state; a second outcome is refused."""
    rollout = make_rollout(world, state)
    moved = apply_move(rollout.pk, first, user=world.dcc, changes={field: value})
    assert (moved.stage, moved.status) == state
    assert getattr(Rollout.objects.get(pk=rollout.pk), field) == value

    proposal = approved_proposal(world, rollout, second, state) if SECTION_L[second].four_eyes else None
    with pytest.raises(ValidationError) as refused:
        apply_move(rollout.pk, second, user=world.dcc_2, proposal=proposal)
    assert refused.value.code == "guard"
    assert state_in_db(rollout) == state
    assert getattr(Rollout.objects.get(pk=rollout.pk), field) == value


# -- L10: the row lock ---------------------------------------------------------------------------------


@pytest.mark.req("L10")
@pytest.mark.django_db(transaction=True)
def test_two_users_suspending_at_once_get_one_outcome_and_a_clear_message(world):
    rollout = make_rollout(world, (PILOTING, ACTIVE))
    barrier = threading.Barrier(2, timeout=10)
    results: dict[str, Any] = {}

    def first() -> None:
        # Holds the rollout's row lock until after the second user has started its move.
        try:
            with transaction.atomic():
                apply_move(rollout.pk, "suspend", user=world.dcc, reason="Reports of bricked hubs")
                barrier.wait()
                time.sleep(0.5)
            results["first"] = "suspended"
        except Exception as exc:  # reported to the main thread
            results["first"] = exc
        finally:
            connections.close_all()

    def second() -> None:
        try:
            barrier.wait()
            started = time.monotonic()
            try:
                with transaction.atomic():
                    apply_move(rollout.pk, "suspend", user=world.dcc_2, reason="Same reports")
                results["second"] = "suspended"
            except Exception as exc:
                results["second"] = exc
            results["second_waited"] = time.monotonic() - started
        finally:
            connections.close_all()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results["first"] == "suspended"
    error = results["second"]
    assert isinstance(error, ValidationError), error
    assert error.code == "state_changed"
    assert "suspended" in error.messages[0] and "reload the page" in error.messages[0]
    assert results["second_waited"] >= 0.4  # it waited on the first user's row lock
    assert state_in_db(rollout) == (PILOTING, SUSPENDED)
    assert AuditEvent.objects.filter(action="rollout.suspend", object_id=str(rollout.pk)).count() == 1
