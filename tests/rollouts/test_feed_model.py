"""The status feed against a model of its rules (PL9, U3, U1, I3, SL3, B1, B2): random sequences of
feeds and of DCC's pauses, holds and retries, each checked against what the rules say should happen,
written here from REQUIREMENTS.md, not from the code.

The rules modelled (PL9 "Device-level progress", U3, I3, SL3, B1, B2, and the issue's "out-of-order
and repeated records handled"):
- a record moves its hub only when its time is later than the hub's and its status differs; an older or
  equal-time record changes nothing (it is still kept in a pilot hub's timeline);
- a record that would move a hub must move it forward (pending, scheduled, distributed, then activated
  or failed); one that would not makes the whole feed rejected, and a rejected feed changes nothing;
- `activated` on a version other than the rollout's target is `failed`, with the reason naming both;
- a record for a hub outside the rollout, or of another region, rejects the feed;
- while the rollout is paused or the hubs' batch held, nothing is distributed or activated (I3, SL3):
  a record that would move its hub and reports `distributed` or `activated` (on any version: the device
  reports an activation) rejects the feed; `scheduled` and `failed` are still recorded;
- a pilot hub's timeline holds every record of every applied feed, once;
- B1: once a feed gives a batch whose hubs it moved to an outcome, or the pilot, a failed share of
  outcomes strictly over the rollout's percentage, with at least its minimum of outcomes, the System
  pauses the rollout (if active) and opens one incident for that scope, never twice;
- B2: DCC's retry moves the failed hubs of a batch into a new batch, back to `pending` as of the retry;
- after every feed, the maintained counters equal a recount.
"""

from __future__ import annotations

import datetime as dt
from unittest import mock

import hypothesis
import pytest
from django.utils import timezone
from hypothesis import strategies as st

from rollouts.models import Batch, HubEvent, Incident, RolloutHub, Status, UploadState
from rollouts.services.counters import counter_mismatches
from rollouts.services.lifecycle import pause_rollout, resume_rollout
from rollouts.services.progress import retry_failed_hubs
from rollouts.services.schedules import hold_batch, release_batch

from .conftest import savepoint
from .test_progress import (  # noqa: F401 - piloting and feed_way (autouse: both ways) are fixtures
    BOTH,
    GAS_SOUTH,
    NOT_ELIGIBLE,
    OLD,
    SPLIT,
    TARGET,
    feed,
    feed_way,
    piloting,
    set_threshold,
)

RANK = {"pending": 0, "scheduled": 1, "distributed": 2, "activated": 3, "failed": 3}
OUTCOMES = ("activated", "failed")
WRONG_VERSION = f"reported firmware {OLD}, expected {TARGET}"
# Most records are for the two north pilot hubs (batch PN); a few name a hub the feed must refuse.
PILOT_HUBS = (SPLIT, BOTH)
REFUSED_HUBS = (NOT_ELIGIBLE, GAS_SOUTH)  # not in the rollout (on the target already); another region
RETRY_AT = dt.timedelta(minutes=2, seconds=30)  # a retry's time, after the sequence's start

records = st.tuples(
    st.sampled_from(PILOT_HUBS * 6 + REFUSED_HUBS),
    st.sampled_from(("scheduled", "distributed", "activated", "failed")),
    st.integers(0, 4),  # minutes after the sequence's start: ties and reversals are common
    st.booleans(),  # an activation on the target version (else on the old one)
)
feeds = st.lists(records, min_size=1, max_size=3, unique_by=lambda r: r[0])  # a GUID once per file
# Between feeds, DCC may pause or resume the rollout, hold or release batch PN, or retry the failed hubs
# of a batch (each only when it applies: a pause of a paused rollout is skipped).
ACTIONS = ("pause", "resume", "hold", "release", "retry")
sequences = st.lists(st.one_of(feeds, feeds, st.sampled_from(ACTIONS)), min_size=1, max_size=6)

# B1 thresholds (percentage, minimum with an outcome) at their edges, for two hubs: never crossed; the
# first failure; 1 failed of 2 is 50%, not over 50; but it is over 49.
NEVER = (100, 1)
THRESHOLDS = (NEVER, (0, 1), (50, 2), (49, 2))


class Model:
    """What the rules say the rollout's two pilot hubs, its status and its System incidents are."""

    def __init__(self, start: dt.datetime, published_at: dt.datetime, threshold: tuple[int, int]) -> None:
        self.start, self.threshold = start, threshold
        self.hubs = dict.fromkeys(PILOT_HUBS, ("pending", published_at, ""))
        self.batch_of = dict.fromkeys(PILOT_HUBS, "PN")
        self.timeline: set[tuple] = set()
        self.paused = False
        self.held: set[str] = set()
        self.incidents: set[str] = set()  # scopes: a batch's name, or "pilot"

    def at(self, minute: int) -> dt.datetime:
        return self.start + dt.timedelta(minutes=minute)

    def feed(self, records: list[tuple]) -> bool:
        """Applies one feed; whether it is accepted."""
        moves = {}
        for guid, status, minute, on_target in records:
            if guid in REFUSED_HUBS:
                return False
            new, reason = status, "HAN join timeout" if status == "failed" else ""
            if status == "activated" and not on_target:
                new, reason = "failed", WRONG_VERSION
            old, old_at, _ = self.hubs[guid]
            on_hold = self.paused or self.batch_of[guid] in self.held
            if self.at(minute) > old_at and new != old:
                if RANK[new] <= RANK[old] or (on_hold and status in ("distributed", "activated")):
                    return False
                moves[guid] = (new, self.at(minute), reason)
        self.hubs.update(moves)
        self.timeline.update((guid, status, self.at(minute)) for guid, status, minute, _ in records)
        # B1: the batches it moved hubs of to an outcome, and the pilot.
        batches = {self.batch_of[g] for g, (new, _, _) in moves.items() if new in OUTCOMES}
        for scope in [*batches, "pilot"] if moves else []:
            members = [g for g in PILOT_HUBS if scope == "pilot" or self.batch_of[g] == scope]
            if scope not in self.incidents and self.crossed(members):
                self.incidents.add(scope)
                self.paused = True  # the System's pause, if it was not paused already
        return True

    def crossed(self, members: list[str]) -> bool:
        outcomes = [self.hubs[g][0] for g in members if self.hubs[g][0] in OUTCOMES]
        pct, minimum = self.threshold
        return len(outcomes) >= minimum and outcomes.count("failed") * 100 > pct * len(outcomes)

    def retry(self) -> str | None:
        """The batch whose failed hubs DCC retries (that of the first failed hub), or None."""
        failed = [g for g in PILOT_HUBS if self.hubs[g][0] == "failed"]
        return self.batch_of[failed[0]] if failed else None

    def retried(self, batch: str, new_batch: str) -> None:
        for guid in PILOT_HUBS:
            if self.batch_of[guid] == batch and self.hubs[guid][0] == "failed":
                self.hubs[guid] = ("pending", self.start + RETRY_AT, "")
                self.batch_of[guid] = new_batch


def as_sent(record: tuple, start: dt.datetime) -> tuple:
    """A generated record as the CSP's file row: (guid, status, at, reason, firmware_version)."""
    guid, status, minute, on_target = record
    at = (start + dt.timedelta(minutes=minute)).isoformat()
    reason = "HAN join timeout" if status == "failed" else ""
    return guid, status, at, reason, (TARGET if on_target else OLD) if status == "activated" else ""


@pytest.mark.req("PL9")
@pytest.mark.req("U3")
@pytest.mark.req("U1")
@pytest.mark.req("B1")
@pytest.mark.req("B2")
@pytest.mark.req("I3")
@pytest.mark.req("SL3")
def test_feeds_do_what_the_rules_say_in_any_order(piloting, csp_north, dcc):  # noqa: F811
    published_at = RolloutHub.objects.filter(rollout=piloting).values_list("status_at", flat=True).first()
    pn = Batch.objects.get(rollout=piloting, name="PN")  # the north pilot batch: both pilot hubs

    def act(action: str, model: Model) -> None:
        """DCC's action on the rollout and the model, when it applies."""
        if action == "pause" and not model.paused:
            pause_rollout(user=dcc, rollout_id=piloting.pk, reason="Investigating")
            model.paused = True
        elif action == "resume" and model.paused:
            resume_rollout(user=dcc, rollout_id=piloting.pk)
            model.paused = False
        elif action == "hold" and "PN" not in model.held:
            hold_batch(user=dcc, batch_id=pn.pk, reason="CSP maintenance")
            model.held.add("PN")
        elif action == "release" and "PN" in model.held:
            release_batch(user=dcc, batch_id=pn.pk)
            model.held.discard("PN")
        elif action == "retry" and (batch := model.retry()):
            window = (timezone.now() + dt.timedelta(days=1), timezone.now() + dt.timedelta(days=2))
            # The retry's time, frozen after the sequence's start: later records move the retried hubs.
            with mock.patch("django.utils.timezone.now", return_value=model.start + RETRY_AT):
                new = retry_failed_hubs(
                    user=dcc,
                    batch_id=Batch.objects.get(rollout=piloting, name=batch).pk,
                    window_start=window[0],
                    window_end=window[1],
                )
            model.retried(batch, new.name)

    def agrees(model: Model) -> None:
        piloting.refresh_from_db(fields=["status"])
        assert piloting.status == (Status.PAUSED if model.paused else Status.ACTIVE)
        rows = RolloutHub.objects.filter(rollout=piloting, hub__guid__in=PILOT_HUBS).select_related("hub")
        assert {r.hub.guid: (r.status, r.status_at, r.failure_reason) for r in rows} == model.hubs
        batches = dict(Batch.objects.filter(rollout=piloting).values_list("pk", "name"))
        assert {r.hub.guid: batches[r.batch_id] for r in rows} == model.batch_of
        events = HubEvent.objects.filter(rollout=piloting).select_related("hub")
        assert {(e.hub.guid, e.status, e.at) for e in events} == model.timeline
        assert events.count() == len(model.timeline)  # once each
        scopes = Incident.objects.filter(rollout=piloting, raised_by_org=None).values_list(
            "figures", flat=True
        )
        assert sorted(f["batch_name"] or "pilot" for f in scopes) == sorted(model.incidents)
        assert counter_mismatches([piloting.pk]) == []

    @hypothesis.settings(max_examples=30, deadline=None, database=None)
    @hypothesis.given(sequence=sequences, threshold=st.sampled_from(THRESHOLDS))
    # The edges, always: failed on a wrong version then activated (sideways, same rank); an older record
    # after a newer one; two statuses at one time; a refused hub beside a good record.
    @hypothesis.example(
        sequence=[[(BOTH, "activated", 0, False)], [(BOTH, "activated", 1, True)]], threshold=NEVER
    )
    @hypothesis.example(
        sequence=[[(SPLIT, "distributed", 3, True)], [(SPLIT, "scheduled", 1, True)]], threshold=NEVER
    )
    @hypothesis.example(
        sequence=[[(SPLIT, "scheduled", 2, True)], [(SPLIT, "distributed", 2, True)]], threshold=NEVER
    )
    @hypothesis.example(
        sequence=[[(SPLIT, "scheduled", 2, True), (GAS_SOUTH, "scheduled", 2, True)]], threshold=NEVER
    )
    # ... and on hold: an activation on the wrong version is refused, a failure recorded, then released.
    @hypothesis.example(
        sequence=["hold", [(BOTH, "activated", 1, False)], [(SPLIT, "failed", 1, True)], "release", "pause"]
        + [[(BOTH, "distributed", 2, True)], "resume", [(BOTH, "distributed", 2, True)]],
        threshold=NEVER,
    )
    # ... and B1 at its edge: 1 failed of 2 is not over 50%; over 49% it pauses, and a resume stands.
    @hypothesis.example(
        sequence=[[(SPLIT, "failed", 1, True), (BOTH, "activated", 1, True)], [(BOTH, "scheduled", 2, True)]],
        threshold=(50, 2),
    )
    @hypothesis.example(
        sequence=[[(SPLIT, "failed", 1, True)], [(BOTH, "activated", 1, True)], "resume"]
        + [[(BOTH, "failed", 0, True)], [(BOTH, "distributed", 0, True)]],
        threshold=(49, 2),
    )
    # ... and the first failure over 0% opens the incidents; later moves do not open them again.
    @hypothesis.example(
        sequence=[[(SPLIT, "failed", 1, True)], [(BOTH, "scheduled", 1, True)], [(BOTH, "failed", 2, True)]],
        threshold=(0, 1),
    )
    # ... and a retry: the failed hub, pending in its new batch as of the retry, fails again there (the
    # new batch's own incident), then a retry of the retry; an older record does not move it.
    @hypothesis.example(
        sequence=[[(SPLIT, "failed", 1, True)], "retry", "resume", [(SPLIT, "scheduled", 2, True)]]
        + [[(SPLIT, "failed", 3, True)], "retry", [(SPLIT, "activated", 4, True)]],
        threshold=(0, 1),
    )
    # ... and a retry takes only the failed hubs of the batch, not its activated ones.
    @hypothesis.example(
        sequence=[[(SPLIT, "failed", 1, True), (BOTH, "activated", 1, True)], "retry"], threshold=NEVER
    )
    def follows_the_rules(sequence: list[list[tuple] | str], threshold: tuple[int, int]) -> None:
        model = Model(timezone.now() - dt.timedelta(hours=10), published_at, threshold)
        with savepoint():  # each sequence starts from the same rollout
            set_threshold(piloting, *threshold)
            for step in sequence:
                if isinstance(step, str):
                    act(step, model)
                    agrees(model)
                    continue
                # Sent twice: a repeated feed changes nothing, and the model agrees (same times).
                for _ in range(2):
                    accepted = model.feed(step)
                    upload = feed(csp_north, piloting, *(as_sent(record, model.start) for record in step))
                    assert upload.state == (UploadState.APPLIED if accepted else UploadState.REJECTED)
                    agrees(model)

    follows_the_rules()
