"""Incidents' effect on pending instructions against a model of the rules (I2, I3, E1-E3, E6, T5, L6-L8,
B4, P4): random sequences of Suppliers' instructions and withdrawals, incidents and DCC's decisions,
inventory loads that change a hub's Supplier, and the clock moving on, each checked against what the rules say should happen, written here from
REQUIREMENTS.md, not from the code.

The rules modelled:
- E1: a Supplier instructs some of its hubs to activate at a time later than now (and earlier than the
  automatic time); a new instruction replaces its own; it may withdraw one. A suspended rollout takes no
  new instruction (withdrawals still), a stopped one neither;
- T5, E2, E3: a hub's planned activation time is its instructed time, without one the automatic time; a
  split hub needs both Suppliers' instructions and takes the later time, else the automatic time stands;
  each CSP is told when its region's plan changes (how many of its hubs), whatever changed it, and only
  then; a stopped rollout plans nothing more;
- I2, L6: DCC triages an incident with one outcome: proceed, pause (of an active or paused rollout),
  suspend (at once, from active or paused), delay, or stop (a four-eyes proposal: nothing changes until a
  second DCC user approves); DCC resumes a paused rollout; the Panel's decision resumes, pauses or stops a
  suspended one; a stop proposal lapses when the rollout's status changes before it is decided (B4, as
  rollouts/transitions.py words it), and unless the rollout was stopped otherwise every party is told; one
  nobody decided within 14 days cannot be approved;
- I3: every Supplier with hubs in the rollout is told each decision with the count of its own pending
  instructions; on pause or suspension, instructed times that pass during the hold (from its start,
  through any change between pause and suspension, until the rollout is active again) revert to the
  automatic time, listed to their Supplier; a delay moves the automatic time and instructions stand; a
  stop, by approval or by the Panel, voids the pending instructions and each Supplier is told how many;
- E6: an inventory load gives the split hub's gas role to another Supplier; unless the hub is distributed,
  the old Supplier's instruction lapses, and the new Supplier and the one that stays are told how many;
- P4: no notice to a Supplier or a CSP names another Supplier, so the raiser of an incident is never named;
- in a pilot (PL9, T5, E1, I3), a CSP's feed distributes a hub of a live batch while the rollout is active
  (I3: nothing is distributed during a hold); a pilot hub's planned time is the end of its batch window, or
  an earlier instructed time; a distributed hub's instructions are no longer pending: no Supplier may
  instruct or withdraw for it, and no hold reverts them nor a stop voids them; its plan stays as it was.

Each sequence runs on a rollout in notification (every hub plans on the automatic time) and in a pilot of
all four hubs (two batches, north and south).

The clock is logical: it is frozen for every service, audit events included, and moves a minute for
each step and by hours when the sequence waits; then the System's beat job runs, or it does not (late, or
its broker down): what passed during a hold reverts at the latest when the hold ends.
Instructed times fall half a minute off the clock's ticks, so none is exactly a hold's start or the job's
"now" (the rules do not say on which side of an instant such a time falls).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from unittest import mock

import hypothesis
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import strategies as st

from rollouts.intake.errors import RowsRejected
from rollouts.models import AuditEvent, HubInstruction, Notice, Proposal, RolloutHub, Status, UploadState
from rollouts.services.counters import counter_mismatches
from rollouts.services.incidents import raise_incident, revert_passed_instructions, triage_incident
from rollouts.services.instructions import instruct_early_deployment, withdraw_instruction
from rollouts.services.inventory import load_inventory
from rollouts.services.lifecycle import approve_proposal, record_panel_decision, resume_rollout

from .conftest import inventory, savepoint
from .test_incidents import live  # noqa: F401 - a fixture
from .test_progress import feed, piloting  # noqa: F401 - piloting is a fixture

SPLIT = "00DB000000000001"  # Volt (import) + GasCo (gas)
BOTH = "00DB000000000002"  # Volt in both roles
GAS_ONLY = "00DB000000000003"  # GasCo only
OTHERS = "00DB000000000004"  # Other Power only
SUPPLIERS = ("volt", "gasco", "oscar")
NAMES = {"volt": "Volt Energy", "gasco": "GasCo", "oscar": "Other Power"}
NORTH = (SPLIT, BOTH)  # the others are south
# E2, E3: whose instructions a hub's planned time needs (at the start: SPLIT's gas Supplier changes, E6).
DECIDE = {SPLIT: ("volt", "gasco"), BOTH: ("volt",), GAS_ONLY: ("gasco",), OTHERS: ("oscar",)}
STEP = dt.timedelta(minutes=1)
MAX_AGE = dt.timedelta(days=14)  # PORTAL_PROPOSAL_MAX_AGE_DAYS, set by the test
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
distributions = st.tuples(st.just("distribute"), st.sampled_from(tuple(DECIDE)))  # in a pilot only
# An inventory load gives SPLIT's gas role to the other of GasCo and Other Power (E6).
reassignments = st.just(("reassign",))
steps = st.one_of(
    instructs,
    instructs,
    instructs,
    withdrawals,
    waits,
    waits,
    incidents,
    incidents,
    decisions,
    distributions,
    distributions,
    reassignments,
)
sequences = st.lists(steps, min_size=1, max_size=10)


class Model:
    """What the rules say the rollout's status, instructions, plan and notices are."""

    def __init__(self, now: dt.datetime, auto: dt.datetime, pilot_end: dict[str, dt.datetime]) -> None:
        self.now = now
        self.auto = auto
        self.pilot_end = pilot_end  # a pilot hub's batch window end (none in notification)
        self.distributed: dict[str, tuple[dt.datetime, str]] = {}  # each with its plan when it was
        self.status = Status.ACTIVE
        self.held_since: dt.datetime | None = None
        self.stop_proposed = False
        self.stop_proposed_at = now
        self.instructions: dict[tuple[str, str], dt.datetime] = {}
        self.decide = dict(DECIDE)
        # What the step's notices must say, per Supplier: {kind: {supplier: count}}
        self.told: dict[str, dict[str, int]] = {}

    def chosen(self, supplier: str, mask: int) -> list[str]:
        """The Supplier's hubs now that the mask picks (bit 0 its first, bit 1 its second; none: all)."""
        hubs = [hub for hub, deciders in self.decide.items() if supplier in deciders]
        return [hub for bit, hub in enumerate(hubs) if mask & (1 << bit)] or hubs

    def reassign(self) -> str:
        """E6: SPLIT's gas role goes to the other of GasCo and Other Power; unless SPLIT is distributed, the
        old Supplier's instruction lapses, and the new Supplier and Volt, which stays, are told. Returns the
        new gas Supplier."""
        old = self.decide[SPLIT][1]
        new = "oscar" if old == "gasco" else "gasco"
        self.decide[SPLIT] = ("volt", new)
        if SPLIT not in self.distributed:
            self.instructions.pop((old, SPLIT), None)
            self.told["instruction.supplier_changed"] = {new: 1, "volt": 1}
        return new

    def hold(self) -> None:
        if self.held_since is None:
            self.held_since = self.now

    def release(self) -> None:
        self.revert()  # I3: whatever passed during the hold, whether or not the job saw it pass
        self.status, self.held_since = Status.ACTIVE, None

    def is_pending(self, key: tuple[str, str]) -> bool:
        return key[1] not in self.distributed

    def pending(self) -> dict[str, int]:
        return {
            s: sum(1 for key in self.instructions if key[0] == s and self.is_pending(key)) for s in SUPPLIERS
        }

    def decided(self) -> None:
        self.told["incident.decision"] = self.pending()

    def void(self) -> None:
        self.status = Status.STOPPED
        self.told["instructions.void"] = {s: n for s, n in self.pending().items() if n}
        self.instructions = {key: at for key, at in self.instructions.items() if not self.is_pending(key)}

    def wait(self, hours: int, job: bool) -> None:
        self.now += dt.timedelta(hours=hours)
        if job:
            self.revert()

    def revert(self) -> None:
        if self.held_since is None:
            return
        passed = [
            key
            for key, at in self.instructions.items()
            if self.is_pending(key) and self.held_since < at <= self.now
        ]
        reverted: dict[str, int] = {}
        for key in passed:
            del self.instructions[key]
            reverted[key[0]] = reverted.get(key[0], 0) + 1
        self.told["instructions.reverted"] = reverted

    def plan(self) -> dict[str, tuple[dt.datetime, str]]:
        planned = {}
        for hub, deciders in self.decide.items():
            if hub in self.distributed:
                planned[hub] = self.distributed[hub]
                continue
            times = [self.instructions.get((supplier, hub)) for supplier in deciders]
            instructed = max(times) if all(times) else None
            if hub in self.pilot_end:  # T5: the window's end, or an earlier instructed time
                end = self.pilot_end[hub]
                planned[hub] = (
                    (instructed, "instruction") if instructed and instructed < end else (end, "pilot_window")
                )
            else:
                planned[hub] = (instructed, "instruction") if instructed else (self.auto, "automatic")
        return planned


@contextlib.contextmanager
def logical_clock(model: Model):
    """timezone.now() is the model's time for every service; so are an audit event's time and a
    proposal's, whose field defaults Django resolved to the real timezone.now once (Field._get_default, a
    cached property)."""
    audit_at, proposed_at = AuditEvent._meta.get_field("at"), Proposal._meta.get_field("proposed_at")
    with (
        mock.patch("django.utils.timezone.now", new=lambda: model.now),
        mock.patch.object(audit_at, "_get_default", new=lambda: model.now),
        mock.patch.object(proposed_at, "_get_default", new=lambda: model.now),
    ):
        yield


@pytest.mark.req("I2")
@pytest.mark.req("I3")
@pytest.mark.req("E1")
@pytest.mark.req("E3")
@pytest.mark.req("E6")
@pytest.mark.req("T5")
@pytest.mark.req("L6")
@pytest.mark.req("B4")
@pytest.mark.req("P4")
@pytest.mark.req("PL9")
@pytest.mark.parametrize("stage", ["notification", "piloting"])
def test_incident_decisions_do_to_instructions_what_the_rules_say(
    request,
    stage,
    settings,
    import_supplier,
    gas_supplier,
    other_supplier,
    dcc,
    dcc_2,
    csp_north,
    csp_south,
):
    rollout = request.getfixturevalue("live" if stage == "notification" else "piloting")
    settings.PORTAL_PROPOSAL_MAX_AGE_DAYS = 14
    users = {"volt": import_supplier, "gasco": gas_supplier, "oscar": other_supplier}
    key_of = {user.organisation_id: key for key, user in users.items()}
    csps = {csp_north.organisation_id, csp_south.organisation_id}
    csp_of = {hub: (csp_north if hub in NORTH else csp_south).organisation_id for hub in DECIDE}

    def act(step: tuple, model: Model) -> None:
        """The step on the rollout and on the model, when it applies."""
        kind = step[0]
        model.now += STEP
        before = model.status
        if kind in ("instruct", "withdraw"):
            supplier, mask = step[1], step[2]
            hubs = model.chosen(supplier, mask)
            at = model.now + dt.timedelta(hours=step[3]) + OFF_TICK if kind == "instruct" else None
            # E1, I3: refused whole when the rollout is stopped, or suspended (a new instruction), or when a
            # hub is distributed; a refusal changes nothing.
            if model.status == Status.STOPPED:
                expected = ["rollout_not_live"]
            elif model.status == Status.SUSPENDED and kind == "instruct":
                expected = ["rollout_on_hold"]
            else:
                expected = ["already_distributed" for hub in hubs if hub in model.distributed]
            user = users[supplier]
            if kind == "instruct":
                call = lambda: instruct_early_deployment(  # noqa: E731
                    user=user, rollout_id=rollout.pk, guids=hubs, default_deploy_at=at
                )
            else:
                call = lambda: withdraw_instruction(user=user, rollout_id=rollout.pk, guids=hubs)  # noqa: E731
            if expected:
                with pytest.raises(ValidationError) as refused:
                    call()
                assert [e.code for e in refused.value.error_list] == expected
                assert isinstance(refused.value, RowsRejected) == (model.status != Status.STOPPED)
            else:
                call()
                for hub in hubs:
                    if kind == "instruct":
                        model.instructions[supplier, hub] = at
                    else:
                        model.instructions.pop((supplier, hub), None)
        elif kind == "distribute" and model.pilot_end and step[1] not in model.distributed:
            hub = step[1]
            upload = feed(
                csp_north if hub in NORTH else csp_south, rollout, (hub, "distributed", model.now.isoformat())
            )
            if model.status == Status.ACTIVE:
                assert upload.state == UploadState.APPLIED
                model.distributed[hub] = model.plan()[hub]
            else:  # I3: nothing is distributed during a hold; a stopped rollout has no live batch
                assert upload.state == UploadState.REJECTED
        # An inventory load reaches live rollouts only: a stopped one's rows stay as they were.
        elif kind == "reassign" and model.status != Status.STOPPED:
            volt, new = users["volt"].organisation.slug, users[model.reassign()].organisation.slug
            load_inventory(user=None, content=inventory(f"{SPLIT},010A030B,0002012F,north,{volt},{new},"))
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
            incident = raise_incident(user=users[raiser], rollout_id=rollout.pk, description="HAN drops")
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
                model.stop_proposed, model.stop_proposed_at = True, model.now  # B4: nothing changes yet
            model.decided()
        elif kind == "resume" and model.status == Status.PAUSED:
            resume_rollout(user=dcc, rollout_id=rollout.pk)
            model.release()
        elif kind == "panel" and model.status == Status.SUSPENDED:
            record_panel_decision(
                user=dcc, rollout_id=rollout.pk, outcome=step[1], reason="The Panel decided"
            )
            if step[1] == Status.ACTIVE:
                model.release()
            elif step[1] == Status.PAUSED:
                model.status = Status.PAUSED  # still the same hold
            else:
                model.void()
        elif kind == "approve_stop" and model.stop_proposed and model.status != Status.STOPPED:
            proposal = Proposal.objects.get(rollout=rollout, move="stop", state="pending")
            if model.now - model.stop_proposed_at > MAX_AGE:  # B4: lapsed, though the hourly job has not run
                with pytest.raises(ValidationError) as refused:
                    approve_proposal(user=dcc_2, proposal_id=proposal.pk)
                assert refused.value.code == "proposal_lapsed"
            else:
                approve_proposal(user=dcc_2, proposal_id=proposal.pk)
                model.stop_proposed = False
                model.void()
        if model.status != before:
            if model.stop_proposed and model.status != Status.STOPPED:
                # B4, I3: it lapses, and every party told of the stop is told that nothing is stopped
                model.told["incident.stop_lapsed"] = dict.fromkeys(SUPPLIERS, 0)
            model.stop_proposed = False

    def agrees(model: Model, notices: list[Notice], planned: dict[str, tuple[dt.datetime, str]]) -> None:
        rollout.refresh_from_db()
        assert rollout.status == model.status
        assert rollout.auto_deploy_at == model.auto
        pending_stop = Proposal.objects.filter(rollout=rollout, move="stop", state="pending")
        assert pending_stop.exists() == model.stop_proposed
        standing = HubInstruction.objects.filter(rollout=rollout).values_list(
            "supplier_id", "hub__guid", "deploy_at"
        )
        assert {(key_of[s], hub): at for s, hub, at in standing} == model.instructions
        statuses = RolloutHub.objects.filter(rollout=rollout).values_list("hub__guid", "status")
        assert {hub for hub, status in statuses if status == "distributed"} == set(model.distributed)
        if model.status != Status.STOPPED:  # a stop voids instructions and deploys nothing more: no plan
            rows = RolloutHub.objects.filter(rollout=rollout).select_related("hub")
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
                    "incident.stop_lapsed": "is not stopped, and pending instructions stand",
                    "instruction.supplier_changed": f"The other Supplier of {count} of your hubs"
                    if supplier == "volt"
                    else f"{count} hubs of {rollout} now have you as a Supplier",
                }[kind] in said[supplier]
        for kind in (
            "instructions.reverted",
            "instructions.void",
            "incident.stop_lapsed",
            "instruction.supplier_changed",
        ):
            if kind not in model.told:
                assert not [n for n in notices if n.kind == kind]
        # T5: each CSP is told how many of its region's hubs changed planned time (or why), once, and only
        # then. A stop plans nothing more: no plan to tell.
        moved = (
            Counter(csp_of[hub] for hub, plan in model.plan().items() if plan != planned[hub])
            if model.status != Status.STOPPED
            else Counter()
        )
        told = [n for n in notices if n.kind == "plan.changed"]
        assert sorted(n.organisation_id for n in told) == sorted(moved)
        for notice in told:
            n = moved[notice.organisation_id]
            assert f"changed for {n} {'hub' if n == 1 else 'hubs'}:" in notice.body
        for notice in notices:  # P4
            if notice.organisation_id in key_of or notice.organisation_id in csps:
                others = [NAMES[s] for s in SUPPLIERS if users[s].organisation_id != notice.organisation_id]
                assert not [name for name in others if name in notice.subject + notice.body]
        assert counter_mismatches([rollout.pk]) == []

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
    # ... a stop proposed while suspended lapses when the Panel stops the rollout: nobody is told it lapsed.
    @hypothesis.example(
        sequence=[
            ("incident", "volt", "suspend", 1),
            ("incident", "oscar", "stop", 1),
            ("panel", Status.STOPPED),
        ]
    )
    # ... a stop proposal 14 days old is not approved, though the hourly job has not marked it lapsed.
    @hypothesis.example(
        sequence=[("incident", "volt", "stop", 1), ("wait", 96, True), ("wait", 96, True), ("wait", 96, True)]
        + [("wait", 49, True), ("approve_stop",)]
    )
    # ... a stop proposal lapses when the rollout is paused before the approval; a new one can be approved.
    @hypothesis.example(
        sequence=[
            ("instruct", "oscar", 1, 30),
            ("incident", "volt", "stop", 1),
            ("incident", "gasco", "pause", 1),
        ]
        + [("approve_stop",), ("incident", "volt", "stop", 1), ("approve_stop",)]
    )
    # ... in a pilot: a distributed hub's instruction is not pending: the hold does not revert it, the stop
    # does not void it, the decisions do not count it, and no Supplier may replace or withdraw it; nothing is
    # distributed during the hold.
    @hypothesis.example(
        sequence=[("instruct", "volt", 3, 6), ("instruct", "gasco", 1, 8), ("distribute", BOTH)]
        + [
            ("incident", "oscar", "pause", 1),
            ("distribute", SPLIT),
            ("wait", 12, True),
            ("instruct", "volt", 2, 30),
        ]
        + [("withdraw", "volt", 0), ("resume",), ("incident", "gasco", "stop", 1), ("approve_stop",)]
    )
    # ... E6: a split hub changes gas Supplier: the old one's instruction lapses and the hub is on the
    # automatic time until the new one instructs too; again during a hold; and once the hub is distributed
    # (a pilot) nothing lapses and nobody is told.
    @hypothesis.example(
        sequence=[("instruct", "volt", 1, 30), ("instruct", "gasco", 1, 40), ("reassign",)]
        + [("instruct", "oscar", 1, 20), ("incident", "volt", "pause", 1), ("reassign",)]
    )
    @hypothesis.example(
        sequence=[
            ("instruct", "volt", 1, 6),
            ("instruct", "gasco", 1, 8),
            ("distribute", SPLIT),
            ("reassign",),
        ]
    )
    def follows_the_rules(sequence: list[tuple]) -> None:
        # A sequence starts a minute after the fixture published the rollout, at a whole minute.
        start = (timezone.now() + STEP).replace(second=0, microsecond=0)
        rollout.refresh_from_db()  # as the last sequence's rollback left it
        pilot = RolloutHub.objects.filter(rollout=rollout, group="pilot").select_related("hub", "batch")
        model = Model(start, rollout.auto_deploy_at, {row.hub.guid: row.batch.window_end for row in pilot})
        last = Notice.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        with savepoint(), logical_clock(model):
            for step in sequence:
                model.told = {}
                planned = model.plan()
                act(step, model)
                notices = list(Notice.objects.filter(pk__gt=last).order_by("pk"))
                last = notices[-1].pk if notices else last
                agrees(model, notices, planned)

    follows_the_rules()
