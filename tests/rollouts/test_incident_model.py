"""Incidents' effect on pending instructions against a model of the rules (I2, I3, E1-E3, T5, L6-L8, B4,
P4): random sequences of Suppliers' instructions and withdrawals, incidents and DCC's decisions, and the
clock moving on, each checked against what the rules say should happen, written here from
REQUIREMENTS.md, not from the code.

The rules modelled:
- E1: a Supplier instructs some of its hubs to activate at a time later than now (and earlier than the
  automatic time); a new instruction replaces its own; it may withdraw one. A suspended rollout takes no
  new instruction (withdrawals still), a stopped one neither;
- T5, E2, E3: a hub's planned activation time is its instructed time, without one the automatic time; a
  split hub needs both Suppliers' instructions and takes the later time, else the automatic time stands;
- I2, L6: DCC triages an incident with one outcome: proceed, pause (of an active or paused rollout),
  suspend (at once, from active or paused), delay, or stop (a four-eyes proposal: nothing changes until a
  second DCC user approves); DCC resumes a paused rollout; the Panel's decision resumes, pauses or stops a
  suspended one;
- I3: every Supplier with hubs in the rollout is told each decision with the count of its own pending
  instructions; on pause or suspension, instructed times that pass during the hold (from its start,
  through any change between pause and suspension, until the rollout is active again) revert to the
  automatic time, listed to their Supplier; a delay moves the automatic time and instructions stand; a
  stop, by approval or by the Panel, voids the pending instructions and each Supplier is told how many;
- P4: no notice to a Supplier or a CSP names another Supplier, so the raiser of an incident is never named.

The clock is logical: it is frozen for every service, audit events included, and moves a minute for
each step and by whole days when the sequence waits, when the System's beat job runs as it would.
Instructed times fall half a minute off the clock's ticks, so none is exactly a hold's start or the job's
"now" (the rules do not say on which side of an instant such a time falls).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from unittest import mock

import hypothesis
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import strategies as st

from rollouts.intake.errors import RowsRejected
from rollouts.models import AuditEvent, HubInstruction, Notice, Proposal, RolloutHub, Status
from rollouts.services.counters import counter_mismatches
from rollouts.services.incidents import raise_incident, revert_passed_instructions, triage_incident
from rollouts.services.instructions import instruct_early_deployment, withdraw_instruction
from rollouts.services.lifecycle import approve_proposal, record_panel_decision, resume_rollout

from .test_incidents import live  # noqa: F401 - a fixture

SPLIT = "00DB000000000001"  # Volt (import) + GasCo (gas)
BOTH = "00DB000000000002"  # Volt in both roles
GAS_ONLY = "00DB000000000003"  # GasCo only
OTHERS = "00DB000000000004"  # Other Power only
SUPPLIERS = ("volt", "gasco", "oscar")
NAMES = {"volt": "Volt Energy", "gasco": "GasCo", "oscar": "Other Power"}
HUBS_OF = {"volt": (SPLIT, BOTH), "gasco": (SPLIT, GAS_ONLY), "oscar": (OTHERS,)}
# E2, E3: whose instructions a hub's planned time needs.
DECIDE = {SPLIT: ("volt", "gasco"), BOTH: ("volt",), GAS_ONLY: ("gasco",), OTHERS: ("oscar",)}
STEP = dt.timedelta(minutes=1)
OFF_TICK = dt.timedelta(seconds=30)

# Steps. A hub mask picks some of the Supplier's hubs (bit 0 its first, bit 1 its second; none means all).
instructs = st.tuples(
    st.just("instruct"), st.sampled_from(SUPPLIERS), st.integers(0, 3), st.integers(1, 120)
)  # ... hours from now
withdrawals = st.tuples(st.just("withdraw"), st.sampled_from(SUPPLIERS), st.integers(0, 3))
# Hours pass; the System's beat job then runs at the new time, or not (its broker was down, or a resume
# came before its next run).
waits = st.tuples(st.just("wait"), st.integers(1, 96), st.booleans())
incidents = st.tuples(
    st.just("incident"),
    st.sampled_from(SUPPLIERS),  # the raiser
    st.sampled_from(("proceed", "pause", "pause", "suspend", "delay", "stop")),
    st.integers(1, 30),  # a delay's days
)
decisions = st.one_of(
    st.just(("resume",)),
    st.just(("approve_stop",)),
    st.tuples(st.just("panel"), st.sampled_from((Status.ACTIVE, Status.PAUSED, Status.STOPPED))),
)
steps = st.one_of(instructs, instructs, instructs, withdrawals, waits, waits, incidents, incidents, decisions)
sequences = st.lists(steps, min_size=1, max_size=10)


def chosen(supplier: str, mask: int) -> list[str]:
    hubs = HUBS_OF[supplier]
    return [hub for bit, hub in enumerate(hubs) if mask & (1 << bit)] or list(hubs)


class Model:
    """What the rules say the rollout's status, instructions, plan and notices are."""

    def __init__(self, now: dt.datetime, auto: dt.datetime) -> None:
        self.now = now
        self.auto = auto
        self.status = Status.ACTIVE
        self.held_since: dt.datetime | None = None
        self.stop_proposed = False
        self.instructions: dict[tuple[str, str], dt.datetime] = {}
        # What the step's notices must say, per Supplier: {kind: {supplier: count}}
        self.told: dict[str, dict[str, int]] = {}

    def hold(self) -> None:
        if self.held_since is None:
            self.held_since = self.now

    def release(self) -> None:
        self.revert()  # I3: whatever passed during the hold, whether or not the job saw it pass
        self.status, self.held_since = Status.ACTIVE, None

    def pending(self) -> dict[str, int]:
        return {s: sum(1 for owner, _ in self.instructions if owner == s) for s in SUPPLIERS}

    def decided(self) -> None:
        self.told["incident.decision"] = self.pending()

    def void(self) -> None:
        self.status = Status.STOPPED
        self.told["instructions.void"] = {s: n for s, n in self.pending().items() if n}
        self.instructions.clear()

    def wait(self, hours: int, job: bool) -> None:
        self.now += dt.timedelta(hours=hours)
        if job:
            self.revert()

    def revert(self) -> None:
        if self.held_since is None:
            return
        passed = [key for key, at in self.instructions.items() if self.held_since < at <= self.now]
        reverted: dict[str, int] = {}
        for key in passed:
            del self.instructions[key]
            reverted[key[0]] = reverted.get(key[0], 0) + 1
        self.told["instructions.reverted"] = reverted

    def plan(self) -> dict[str, tuple[dt.datetime, str]]:
        planned = {}
        for hub, deciders in DECIDE.items():
            times = [self.instructions.get((supplier, hub)) for supplier in deciders]
            planned[hub] = (max(times), "instruction") if all(times) else (self.auto, "automatic")
        return planned


@contextlib.contextmanager
def logical_clock(model: Model):
    """timezone.now() is the model's time for every service; so is an audit event's time, whose field
    default Django resolved to the real timezone.now once (Field._get_default, a cached property)."""
    at_field = AuditEvent._meta.get_field("at")
    with (
        mock.patch("django.utils.timezone.now", new=lambda: model.now),
        mock.patch.object(at_field, "_get_default", new=lambda: model.now),
    ):
        yield


@pytest.mark.req("I2")
@pytest.mark.req("I3")
@pytest.mark.req("E1")
@pytest.mark.req("E3")
@pytest.mark.req("T5")
@pytest.mark.req("L6")
@pytest.mark.req("B4")
@pytest.mark.req("P4")
def test_incident_decisions_do_to_instructions_what_the_rules_say(
    live,  # noqa: F811
    import_supplier,
    gas_supplier,
    other_supplier,
    dcc,
    dcc_2,
    csp_north,
    csp_south,
):
    users = {"volt": import_supplier, "gasco": gas_supplier, "oscar": other_supplier}
    key_of = {user.organisation_id: key for key, user in users.items()}
    csps = {csp_north.organisation_id, csp_south.organisation_id}

    def act(step: tuple, model: Model) -> None:
        """The step on the rollout and on the model, when it applies."""
        kind = step[0]
        model.now += STEP
        if kind == "instruct":
            _, supplier, mask, hours = step
            at = model.now + dt.timedelta(hours=hours) + OFF_TICK
            hubs = chosen(supplier, mask)
            if model.status in (Status.ACTIVE, Status.PAUSED):
                instruct_early_deployment(
                    user=users[supplier], rollout_id=live.pk, guids=hubs, default_deploy_at=at
                )
                model.instructions.update({(supplier, hub): at for hub in hubs})
            else:  # E1, I3: suspended, then stopped: refused, and nothing changes
                refusal = RowsRejected if model.status == Status.SUSPENDED else ValidationError
                with pytest.raises(refusal) as refused:
                    instruct_early_deployment(
                        user=users[supplier], rollout_id=live.pk, guids=hubs, default_deploy_at=at
                    )
                expected = "rollout_on_hold" if model.status == Status.SUSPENDED else "rollout_not_live"
                assert [e.code for e in refused.value.error_list] == [expected]
        elif kind == "withdraw":
            _, supplier, mask = step
            hubs = chosen(supplier, mask)
            if model.status == Status.STOPPED:
                with pytest.raises(ValidationError):
                    withdraw_instruction(user=users[supplier], rollout_id=live.pk, guids=hubs)
            else:
                withdraw_instruction(user=users[supplier], rollout_id=live.pk, guids=hubs)
                for hub in hubs:
                    model.instructions.pop((supplier, hub), None)
        elif kind == "wait":
            _, hours, job = step
            model.wait(hours, job)
            if job:
                revert_passed_instructions()  # the beat job, at the new time
        elif kind == "incident" and model.status != Status.STOPPED:
            _, raiser, outcome, days = step
            if outcome in ("pause", "suspend") and model.status == Status.SUSPENDED:
                return  # a suspended rollout is decided by the Panel
            if outcome == "stop" and model.stop_proposed:
                return  # one proposal at a time
            incident = raise_incident(user=users[raiser], rollout_id=live.pk, description="HAN drops")
            new_auto = model.auto + dt.timedelta(days=days) if outcome == "delay" else None
            triage_incident(
                user=dcc,
                incident_id=incident.pk,
                outcome=outcome,
                reason="Triage",
                new_auto_deploy_at=new_auto,
            )
            if outcome == "pause":
                model.status = Status.PAUSED
                model.hold()
            elif outcome == "suspend":
                model.status = Status.SUSPENDED
                model.hold()
            elif outcome == "delay":
                model.auto = new_auto  # I3: instructions stand
            elif outcome == "stop":
                model.stop_proposed = True  # B4: nothing changes yet
            model.decided()
        elif kind == "resume" and model.status == Status.PAUSED:
            resume_rollout(user=dcc, rollout_id=live.pk)
            model.release()
        elif kind == "panel" and model.status == Status.SUSPENDED:
            record_panel_decision(user=dcc, rollout_id=live.pk, outcome=step[1], reason="The Panel decided")
            if step[1] == Status.ACTIVE:
                model.release()
            elif step[1] == Status.PAUSED:
                model.status = Status.PAUSED  # still the same hold
            else:
                model.void()
        elif kind == "approve_stop" and model.stop_proposed and model.status != Status.STOPPED:
            proposal = Proposal.objects.get(rollout=live, move="stop", state="pending")
            approve_proposal(user=dcc_2, proposal_id=proposal.pk)
            model.stop_proposed = False
            model.void()

    def agrees(model: Model, notices: list[Notice]) -> None:
        live.refresh_from_db()
        assert live.status == model.status
        assert live.auto_deploy_at == model.auto
        standing = HubInstruction.objects.filter(rollout=live).values_list(
            "supplier_id", "hub__guid", "deploy_at"
        )
        assert {(key_of[s], hub): at for s, hub, at in standing} == model.instructions
        if model.status != Status.STOPPED:  # a stop voids instructions and deploys nothing more: no plan
            rows = RolloutHub.objects.filter(rollout=live).select_related("hub")
            assert {r.hub.guid: (r.planned_activation_at, r.activation_source) for r in rows} == model.plan()
        for kind, counts in model.told.items():
            to_suppliers = [n for n in notices if n.kind == kind and n.organisation_id in key_of]
            said = {key_of[n.organisation_id]: n.body for n in to_suppliers}
            assert len(said) == len(to_suppliers)  # one each
            assert set(said) == set(counts)
            for supplier, count in counts.items():
                assert {
                    "incident.decision": f"You have pending instructions for {count} hubs.",
                    "instructions.reverted": f"the instructed time of {count} of your hubs passed during the hold",
                    "instructions.void": f"your pending instructions for {count} hubs are void",
                }[kind] in said[supplier]
        for kind in ("instructions.reverted", "instructions.void"):
            if kind not in model.told:
                assert not [n for n in notices if n.kind == kind]
        for notice in notices:  # P4
            if notice.organisation_id in key_of or notice.organisation_id in csps:
                others = [NAMES[s] for s in SUPPLIERS if users[s].organisation_id != notice.organisation_id]
                assert not [name for name in others if name in notice.subject + notice.body]
        assert counter_mismatches([live.pk]) == []

    @hypothesis.settings(max_examples=25, deadline=None, database=None)
    @hypothesis.given(sequence=sequences)
    # The edges, always. A pause: Volt's time (2 days) passes during it and reverts, GasCo's (5 days) does
    # not; Volt instructs again, and after the resume its new time passes and stands.
    @hypothesis.example(
        sequence=[
            ("instruct", "volt", 2, 48),
            ("instruct", "gasco", 2, 120),
            ("incident", "gasco", "pause", 1),
        ]
        + [("wait", 72, True), ("resume",), ("instruct", "volt", 2, 24), ("wait", 48, True)]
    )
    # ... a split hub: one Supplier's time passes during the hold, so the hub goes back to the automatic
    # time though the other's instruction stands.
    @hypothesis.example(
        sequence=[
            ("instruct", "volt", 1, 24),
            ("instruct", "gasco", 1, 72),
            ("incident", "oscar", "suspend", 1),
        ]
        + [("wait", 48, True), ("panel", Status.ACTIVE)]
    )
    # ... an instruction given during the hold and passing in it reverts; one that passed before it stands.
    @hypothesis.example(
        sequence=[("instruct", "oscar", 1, 12), ("wait", 24, True), ("incident", "volt", "pause", 1)]
        + [("instruct", "gasco", 0, 6), ("wait", 24, True)]
    )
    # ... a hold that ended is not the next one's start; a suspension after a pause, then the Panel's pause,
    # is one hold.
    @hypothesis.example(
        sequence=[
            ("incident", "volt", "pause", 1),
            ("resume",),
            ("instruct", "volt", 3, 30),
            ("wait", 48, True),
        ]
        + [
            ("incident", "gasco", "pause", 1),
            ("incident", "gasco", "suspend", 1),
            ("instruct", "gasco", 3, 40),
        ]
        + [("panel", Status.PAUSED), ("wait", 48, True), ("withdraw", "volt", 0)]
    )
    # ... the beat job late: a time that passed during the hold reverts at the resume, though no job saw it
    # pass; and the job that runs after a suspension counts the hold from the pause before it.
    @hypothesis.example(
        sequence=[
            ("incident", "volt", "pause", 1),
            ("instruct", "volt", 2, 6),
            ("wait", 12, False),
            ("resume",),
        ]
    )
    @hypothesis.example(
        sequence=[("incident", "volt", "pause", 1), ("instruct", "gasco", 2, 6), ("wait", 12, False)]
        + [("incident", "oscar", "suspend", 1), ("wait", 24, True)]
    )
    # ... a delay while paused: instructions stand, the automatic hubs move; suspended, instructions are
    # refused and withdrawals taken.
    @hypothesis.example(
        sequence=[
            ("instruct", "volt", 3, 30),
            ("incident", "gasco", "pause", 1),
            ("incident", "volt", "delay", 20),
        ]
        + [("incident", "oscar", "suspend", 1), ("instruct", "oscar", 1, 10), ("withdraw", "volt", 2)]
    )
    # ... a stop: nothing until the second DCC user approves, then every pending instruction is void and no
    # instruction is taken; and the Panel's stop voids them too.
    @hypothesis.example(
        sequence=[("instruct", "volt", 3, 30), ("instruct", "gasco", 3, 40), ("incident", "oscar", "stop", 1)]
        + [
            ("instruct", "oscar", 1, 10),
            ("approve_stop",),
            ("instruct", "volt", 1, 10),
            ("withdraw", "gasco", 0),
        ]
    )
    @hypothesis.example(
        sequence=[("instruct", "gasco", 2, 30), ("incident", "volt", "suspend", 1), ("panel", Status.STOPPED)]
    )
    def follows_the_rules(sequence: list[tuple]) -> None:
        # A sequence starts a minute after the fixture published the rollout, at a whole minute.
        start = (timezone.now() + STEP).replace(second=0, microsecond=0)
        live.refresh_from_db()  # as the last sequence's rollback left it
        model = Model(start, live.auto_deploy_at)
        last = Notice.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        with savepoint(), logical_clock(model):
            for step in sequence:
                model.told = {}
                act(step, model)
                notices = list(Notice.objects.filter(pk__gt=last).order_by("pk"))
                last = notices[-1].pk if notices else last
                agrees(model, notices)

    follows_the_rules()


@contextlib.contextmanager
def savepoint():
    """Each sequence starts from the same rollout: a savepoint of our own (the services' atomic blocks are
    durable, so they may not be nested in another atomic block of the test's)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT model")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK TO SAVEPOINT model")
