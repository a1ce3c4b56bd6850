"""The status feed against a model of its rules (PL9, U3, U1, I3, SL3, B1): random sequences of feeds
and of DCC's pauses and holds, each checked against what the rules say should happen, written here from
REQUIREMENTS.md, not from the code.

The rules modelled (PL9 "Device-level progress", U3, I3, SL3, B1, and the issue's "out-of-order and
repeated records handled"):
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
- B1: once a feed gives the batch (and the pilot) a failed share of outcomes strictly over the rollout's
  percentage, with at least its minimum of outcomes, the System pauses the rollout (if active) and opens
  one incident per scope, never twice;
- after every feed, the maintained counters equal a recount.
"""

from __future__ import annotations

import datetime as dt

import hypothesis
import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import strategies as st

from rollouts.models import Batch, HubEvent, Incident, RolloutHub, Status, UploadState
from rollouts.services.counters import counter_mismatches
from rollouts.services.lifecycle import pause_rollout, resume_rollout
from rollouts.services.schedules import hold_batch, release_batch

from .test_progress import (  # noqa: F401 - piloting is a fixture
    BOTH,
    GAS_SOUTH,
    NOT_ELIGIBLE,
    OLD,
    SPLIT,
    TARGET,
    feed,
    piloting,
    set_threshold,
)

RANK = {"pending": 0, "scheduled": 1, "distributed": 2, "activated": 3, "failed": 3}
WRONG_VERSION = f"reported firmware {OLD}, expected {TARGET}"
# Most records are for the two north pilot hubs; a few name a hub the feed must refuse.
PILOT_HUBS = (SPLIT, BOTH)
REFUSED_HUBS = (NOT_ELIGIBLE, GAS_SOUTH)  # not in the rollout (on the target already); another region

records = st.tuples(
    st.sampled_from(PILOT_HUBS * 6 + REFUSED_HUBS),
    st.sampled_from(("scheduled", "distributed", "activated", "failed")),
    st.integers(0, 4),  # minutes after the sequence's start: ties and reversals are common
    st.booleans(),  # an activation on the target version (else on the old one)
)
feeds = st.lists(records, min_size=1, max_size=3, unique_by=lambda r: r[0])  # a GUID once per file
# Between feeds, DCC may pause or resume the rollout, or hold or release the pilot batch (each only when
# it applies: a pause of a paused rollout is skipped).
ACTIONS = ("pause", "resume", "hold", "release")
sequences = st.lists(st.one_of(feeds, feeds, st.sampled_from(ACTIONS)), min_size=1, max_size=6)


# B1 thresholds (percentage, minimum with an outcome) at their edges, for two hubs: never crossed; the
# first failure; 1 failed of 2 is 50%, not over 50; but it is over 49.
NEVER = (100, 1)
THRESHOLDS = (NEVER, (0, 1), (50, 2), (49, 2))


def crossed(hubs: dict, threshold: tuple[int, int]) -> bool:
    outcomes = [status for status, _, _ in hubs.values() if status in ("activated", "failed")]
    pct, minimum = threshold
    return len(outcomes) >= minimum and outcomes.count("failed") * 100 > pct * len(outcomes)


def predict(
    hubs: dict, timeline: set, records: list[tuple], start: dt.datetime, on_hold: bool
) -> bool | None:
    """Applies one feed to the model: False when the feed is rejected, None when it is accepted and
    moves no hub to an outcome, True when it moves one."""
    moves = {}
    for guid, status, minute, on_target in records:
        if guid in REFUSED_HUBS:
            return False
        at = start + dt.timedelta(minutes=minute)
        new, reason = status, "HAN join timeout" if status == "failed" else ""
        if status == "activated" and not on_target:
            new, reason = "failed", WRONG_VERSION
        old, old_at, _ = hubs[guid]
        if at > old_at and new != old:
            if RANK[new] <= RANK[old] or (on_hold and status in ("distributed", "activated")):
                return False
            moves[guid] = (new, at, reason)
    hubs.update(moves)
    timeline.update(
        (guid, status, start + dt.timedelta(minutes=minute)) for guid, status, minute, _ in records
    )
    return any(new in ("activated", "failed") for new, _, _ in moves.values()) or None


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
@pytest.mark.req("I3")
@pytest.mark.req("SL3")
def test_feeds_do_what_the_rules_say_in_any_order(piloting, csp_north, dcc):  # noqa: F811
    published_at = RolloutHub.objects.filter(rollout=piloting).values_list("status_at", flat=True).first()
    batch = Batch.objects.get(rollout=piloting, name="PN")  # the north pilot batch: both pilot hubs
    act = {
        "pause": lambda: pause_rollout(user=dcc, rollout_id=piloting.pk, reason="Investigating"),
        "resume": lambda: resume_rollout(user=dcc, rollout_id=piloting.pk),
        "hold": lambda: hold_batch(user=dcc, batch_id=batch.pk, reason="CSP maintenance"),
        "release": lambda: release_batch(user=dcc, batch_id=batch.pk),
    }

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
    def follows_the_rules(sequence: list[list[tuple] | str], threshold: tuple[int, int]) -> None:
        start = timezone.now() - dt.timedelta(hours=10)
        hubs = dict.fromkeys(PILOT_HUBS, ("pending", published_at, ""))
        timeline: set[tuple] = set()
        paused = held = False
        incidents = 0
        # Each sequence starts from the same rollout: a savepoint of our own (submit_status_feed's atomic
        # block is durable, so it may not be nested in another atomic block of the test's).
        with connection.cursor() as cursor:
            cursor.execute("SAVEPOINT model")
        try:
            set_threshold(piloting, *threshold)
            for records in sequence:
                if isinstance(records, str):
                    applies = {"pause": not paused, "resume": paused, "hold": not held, "release": held}
                    if applies[records]:
                        act[records]()
                        paused = {"pause": True, "resume": False}.get(records, paused)
                        held = {"hold": True, "release": False}.get(records, held)
                    continue
                # Sent twice: a repeated feed changes nothing, and the model agrees (same times).
                for _ in range(2):
                    accepted = predict(hubs, timeline, records, start, on_hold=paused or held)
                    if accepted and not incidents and crossed(hubs, threshold):
                        incidents, paused = 2, True  # the batch's and the pilot's; the System's pause
                    upload = feed(csp_north, piloting, *(as_sent(record, start) for record in records))
                    assert upload.state == (
                        UploadState.REJECTED if accepted is False else UploadState.APPLIED
                    )
                    piloting.refresh_from_db(fields=["status"])
                    assert piloting.status == (Status.PAUSED if paused else Status.ACTIVE)
                    assert Incident.objects.filter(rollout=piloting, raised_by_org=None).count() == incidents
                    rows = RolloutHub.objects.filter(
                        rollout=piloting, hub__guid__in=PILOT_HUBS
                    ).select_related("hub")
                    assert {r.hub.guid: (r.status, r.status_at, r.failure_reason) for r in rows} == hubs
                    events = HubEvent.objects.filter(rollout=piloting).select_related("hub")
                    assert {(e.hub.guid, e.status, e.at) for e in events} == timeline
                    assert events.count() == len(timeline)  # once each
                    assert counter_mismatches([piloting.pk]) == []
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK TO SAVEPOINT model")

    follows_the_rules()
