"""Status feed benchmark (PL9, SL4, U3, B1): figures printed, never asserted.

    python -m bench.progress [--records N] [--batch-hubs N] [--repeat N] [--hubs-per-region N] [--clustered]
                             [--times one|hour|distinct|both|all] [--way auto|whole|looked-up]
                             [--sql] [--explain REGEX] [--profile]

--times: `one` time for every record of a feed; `distinct`, every record its own `at` text (1 µs apart,
the most a real feed can differ: each distinct text is parsed once); `hour`, 3,600 distinct times (what
an hour's feed timed to the second holds at most; here 100 ms apart, so that all are after publication
and none in the future); `both` (default), `one` then `distinct`; `all`, the three.
--way: how a feed finds its rollout rows (StatusFeedHandler._rollout_rows_source): `whole`, the live
batches' rows read whole and met by GUID; `looked-up`, each record's hub then rollout row by index; `auto`
(default), the service's choice. Each feed prints the way it went.
--distinct-times is --times distinct. Profiling, for finding where a feed's time goes:
--sql: each feed's statements that take 20 ms or more (BENCH_SQL_MIN_MS=N for N ms), slowest first,
with the share the database took (django.db.connection.execute_wrapper; the commit and Python are the
rest);
--explain REGEX: each statement matching REGEX first runs under EXPLAIN (ANALYZE, BUFFERS) inside a
savepoint that is rolled back (its plan printed), then for real;
--profile: each feed under cProfile, its 30 costliest calls (cumulative).
The URL patterns are loaded before the first feed (a running server has them loaded): not a feed's time.

Runs in its own database, DATABASE_URL's name + "_feed" (default chfw_bench_feed), created and migrated
here. Builds the schedules bench's estate there (model 5C4ED001, hubs created once with a bare COPY),
--hubs-per-region hubs in each region (default 1,000,000: 3M hubs; 200,000 with BENCH_QUICK=1). The
batch's hubs are every k-th north hub by id, spread over the hub table as a batch is over the national
estate (a 50,000-hub batch in 3M hubs: one hub in 60, about one on each page). With
--clustered they are the first north hubs in GUID order instead, which for the bench's GUIDs fill
a few thousand pages (461 pages hold nothing else): the worst case for in-place (HOT) updates.
Each run first deletes the per-rollout hub rows of the earlier bench rollouts, so every run measures
against the same tables (otherwise each run adds 3M rows, 1.2 GB, and the figures drift upwards).
Then it publishes a fresh operational rollout (the previous one is superseded), starts safe launch,
puts --batch-hubs north hubs (default: --records) in one safe launch batch (A08, through the service); the
feeds report on --records of them (default 50,000): a small feed into a big batch with --batch-hubs. Then it
measures submit_status_feed through the whole service (file kept and hashed, read, COPY to staging,
checks, one UPDATE … FROM with exact counter deltas, pilot hubs' timeline events (none in this safe launch
batch), the row of SMI versions to write, aggregated notices, the B1 check). Then, as its own figure, it
measures what a worker does just after the feed commits: writing the SMI versions to the hubs (U3,
rollouts.services.smi). The bench runs that step here instead of queueing it:

a. a feed of N records: 97% activated on the target version, 3% failed with a reason;
b. the same feed again (every hub already at the reported status and time: nothing moves);
c. an all-rejected feed of N records (each `distributed` after `activated`: status_invalid).
Afterwards the bench hubs go back to the replaced version (bench setup), so the next run finds them eligible.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import os
import pstats
import re
import statistics
from time import perf_counter

from bench.db import conditions, use_own_database
from bench.schedules import REGIONS, _django, _estate, _file, _north_guids, _parties, _publish, _say


def _feed(guids: list[str], status_for, at: dt.datetime, times: str = "one"):
    """The feed file; with `distinct` times record n is timed n microseconds after `at` (each its own
    text), with `hour` (n mod 3,600) tenths of a second after it."""
    from django.core.files.base import ContentFile

    lines = ["guid,status,at,reason,firmware_version"]
    same = at.isoformat()
    whens = set()
    for n, g in enumerate(guids):
        status, reason, version = status_for(n)
        if times == "distinct":
            when = (at + dt.timedelta(microseconds=n)).isoformat()
        elif times == "hour":
            when = (at + dt.timedelta(milliseconds=100 * (n % 3600))).isoformat()
        else:
            when = same
        whens.add(when)
        lines.append(f"{g},{status},{when},{reason},{version}")
    content = ContentFile(("\n".join(lines) + "\n").encode(), name="feed.csv")
    # Printed beside each figure: what was measured, not only what was asked for.
    content.distinct_times = len(whens)
    return content


class _SqlTimes:
    """execute_wrapper: each statement's wall time, to see where a feed's time goes."""

    def __init__(self, explain: str | None = None) -> None:
        self.rows: list[tuple[float, str]] = []
        self.explain = explain

    def __call__(self, execute, sql, params, many, context):
        if self.explain and re.search(self.explain, str(sql)) and not many:
            explain, self.explain = self.explain, None  # its own statements go through this wrapper too
            try:
                self._explain(context["cursor"], sql, params)
            finally:
                self.explain = explain
        start = perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.rows.append((perf_counter() - start, " ".join(str(sql).split())))

    @staticmethod
    def _explain(cursor, sql, params) -> None:
        """EXPLAIN (ANALYZE, BUFFERS) the statement inside a savepoint that is rolled back, then run it."""
        cursor.execute("SAVEPOINT bench_explain")
        try:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
            _say("\n".join(f"      {row[0]}" for row in cursor.fetchall()))
        finally:
            cursor.execute("ROLLBACK TO SAVEPOINT bench_explain")

    def report(self, total: float) -> None:
        spent = sum(t for t, _ in self.rows)
        _say(f"    SQL: {len(self.rows)} statements, {spent:.2f} s of {total:.2f} s")
        for seconds, sql in sorted(self.rows, reverse=True):
            if seconds < float(os.environ.get("BENCH_SQL_MIN_MS", "20")) / 1000:
                break
            _say(f"    {seconds * 1000:8.1f} ms  {sql[:150]}")


def _spread_north_guids(rollout, count: int) -> list[str]:
    """`count` north hubs of the rollout spread evenly over the hub table (every k-th by id)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT guid FROM (
                   SELECT h.guid, row_number() OVER (ORDER BY h.id) AS n, count(*) OVER () AS total
                   FROM rollouts_rollouthub rh JOIN rollouts_hub h ON h.id = rh.hub_id
                   WHERE rh.rollout_id = %s AND rh.region = 'north') s
               WHERE (n - 1) %% greatest(total / %s, 1) = 0 ORDER BY n LIMIT %s""",
            [rollout.pk, count, count],
        )
        return [guid for (guid,) in cursor.fetchall()]


def _wal_lsn() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        return cursor.fetchone()[0]


def _wal_bytes_since(lsn: str) -> int:
    """WAL written since `lsn`: full-page images (a page's first change after a checkpoint) dominate."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)::bigint", [lsn])
        return cursor.fetchone()[0]


def run(
    records: int,
    repeat: int,
    sql: bool = False,
    explain: str | None = None,
    profile: bool = False,
    times: str = "one",
    hubs_per_region: int = 0,
    clustered: bool = False,
    batch_hubs: int = 0,
    way: str = "auto",
) -> dict[str, list[float]]:
    from functools import partial
    from unittest import mock

    from django.db import connection
    from django.utils import timezone

    from rollouts import tasks
    from rollouts.models import RolloutCounter
    from rollouts.services import progress
    from rollouts.services.counters import counter_mismatches
    from rollouts.services.lifecycle import start_safe_launch_without_pilot
    from rollouts.services.progress import StatusFeedHandler, rollout_link, submit_status_feed
    from rollouts.services.schedules import upload_safe_launch_schedule
    from rollouts.services.smi import apply_smi_versions

    parties = _parties()
    batch_hubs = max(batch_hubs, records)
    model, v1, v2 = _estate(max(batch_hubs, hubs_per_region, 1), parties["supplier"].pk)
    figures: dict[str, list[float]] = {"a": [], "b": [], "c": [], "smi": []}
    ratio = {"whole": 10**9, "looked-up": 0}.get(way, progress.FEED_WHOLE_BATCHES_RATIO)
    went = []  # the way each feed found its rollout rows (StatusFeedHandler._rollout_rows_source)
    choose = StatusFeedHandler._rollout_rows_source

    def noted(handler, staging):
        source = choose(handler, staging)
        went.append("whole" if handler.whole_batches else "looked up")
        return source

    for _ in range(repeat):
        # Bench setup: every run meets the same tables (see the docstring).
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM rollouts_rollouthub WHERE rollout_id IN"
                " (SELECT id FROM rollouts_rollout WHERE device_model_id = %s)",
                [model.pk],
            )
            cursor.execute("VACUUM rollouts_rollouthub")
        rollout = _publish(parties, v1, v2)
        start_safe_launch_without_pilot(user=parties["dcc"], rollout_id=rollout.pk)
        batch = _north_guids(rollout, batch_hubs) if clustered else _spread_north_guids(rollout, batch_hubs)
        guids = batch[:: max(len(batch) // records, 1)][:records]  # spread over the batch too
        now = timezone.now()
        upload = upload_safe_launch_schedule(
            user=parties["csp"],
            rollout_id=rollout.pk,
            content=_file(batch, "BENCH", now.isoformat(), (now + dt.timedelta(days=3)).isoformat()),
        )
        assert upload.state == "applied", upload.state
        rollout_link(rollout)  # bench setup: URL patterns loaded once per process, as in a running server
        at = timezone.now()  # after publication: older records never move a hub

        def outcome(n: int):
            return ("failed", "HAN join timeout", "") if n % 33 == 0 else ("activated", "", v2.version)

        for key, content in (
            ("a", _feed(guids, outcome, at, times)),
            ("b", _feed(guids, outcome, at, times)),
            ("c", _feed(guids, lambda n: ("distributed", "", ""), timezone.now(), times)),
        ):
            timer = _SqlTimes(explain)
            with connection.execute_wrapper(timer) if sql or explain else contextlib.nullcontext():
                profiler = cProfile.Profile() if profile else None
                start = perf_counter()
                wal_before = _wal_lsn()
                if profiler:
                    profiler.enable()
                queued = []  # the task its commit sends (eager here: it would run inside the figure)
                with (
                    mock.patch.object(tasks.apply_smi_versions, "delay", partial(queued.append, True)),
                    mock.patch.object(progress, "FEED_WHOLE_BATCHES_RATIO", ratio),
                    mock.patch.object(StatusFeedHandler, "_rollout_rows_source", noted),
                ):
                    upload = submit_status_feed(
                        user=parties["csp"], rollout_id=rollout.pk, content=content, name="feed.csv"
                    )
                if profiler:
                    profiler.disable()
                figures[key].append(perf_counter() - start)
            wal = _wal_bytes_since(wal_before)
            held = content.distinct_times
            _say(
                f"  {key}: {figures[key][-1]:.2f} s, WAL {wal / 2**20:,.0f} MB,"
                f" {held:,} distinct time{'s' if held != 1 else ''}, rollout rows {went[-1]}"
                f" ({upload.state}, {upload.summary or upload.error_count})"
            )
            if sql:
                timer.report(figures[key][-1])
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            if queued:
                start = perf_counter()
                written = apply_smi_versions()
                figures["smi"].append(perf_counter() - start)
                _say(
                    f"  {key}, then the worker: {written:,} SMI versions written in {figures['smi'][-1]:.2f} s"
                )
        mismatches = counter_mismatches([rollout.pk])
        activated = sum(
            RolloutCounter.objects.filter(
                rollout=rollout, organisation__kind="csp", status="activated"
            ).values_list("hubs", flat=True)
        )
        _say(f"  counters equal to a recount: {not mismatches}; activated (CSP counters): {activated:,}")
        with connection.cursor() as cursor:  # bench setup: hubs back on the replaced version for the next run
            cursor.execute(
                "UPDATE rollouts_hub SET firmware_version_id = %s WHERE device_model_id = %s AND firmware_version_id = %s",
                [v1.pk, model.pk, v2.pk],
            )
            cursor.execute("VACUUM rollouts_hub")  # as autovacuum would between feeds: the dead versions go
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument(
        "--batch-hubs",
        type=int,
        default=0,
        help="hubs in the batch (default: --records); the feeds report on --records",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--hubs-per-region",
        type=int,
        default=200_000 if os.environ.get("BENCH_QUICK") else 1_000_000,
        help="estate size: a feed's hubs are spread over it, as a batch is over the national estate"
        " (default 1,000,000; 200,000 with BENCH_QUICK=1)",
    )
    parser.add_argument(
        "--clustered",
        action="store_true",
        help="the batch's hubs are the first north hubs in GUID order: a few thousand pages, most full of them",
    )
    parser.add_argument("--sql", action="store_true", help="print each feed's statements over 20 ms")
    parser.add_argument(
        "--times",
        choices=("one", "hour", "distinct", "both", "all"),
        default="both",
        help="one time for every record, 3,600 distinct times, each record its own `at` (1 µs apart);"
        " both (default): one and distinct; all: the three",
    )
    parser.add_argument("--distinct-times", action="store_const", const="distinct", dest="times")
    parser.add_argument(
        "--way",
        choices=("auto", "whole", "looked-up"),
        default="auto",
        help="how a feed finds its rollout rows: the live batches' rows read whole, each record looked up,"
        " or (auto, default) as the service chooses (progress.FEED_WHOLE_BATCHES_RATIO)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile each feed (30 costliest calls)")
    parser.add_argument(
        "--explain", metavar="TEXT", help="EXPLAIN (ANALYZE, BUFFERS) statements containing TEXT"
    )
    options = parser.parse_args()
    url = use_own_database("feed")  # its 3M-hub estate stays out of bench.schedules' figures
    _django()
    _say(
        f"Status feed bench: {options.records:,} records, batch of {max(options.batch_hubs, options.records):,} hubs,"
        f" {options.repeat} run(s), rollout rows {options.way}, regions {', '.join(REGIONS)},"
        f" database {url.rsplit('/', 1)[-1]}"
    )
    _say(conditions())
    from rollouts.intake.pipeline import applied_here

    modes = {"both": ("one", "distinct"), "all": ("one", "hour", "distinct")}.get(
        options.times, (options.times,)
    )
    described = {"one": "one time for all", "hour": "3,600 distinct times", "distinct": "each its own time"}
    results = {}
    for mode in modes:
        _say(f"-- {described[mode]}")
        with applied_here():  # the service in this process, as measured before the background path
            results[mode] = run(
                options.records,
                options.repeat,
                options.sql,
                options.explain,
                options.profile,
                mode,
                options.hubs_per_region,
                options.clustered,
                options.batch_hubs,
                options.way,
            )
    for mode, times in results.items():
        at = described[mode]
        labels = {
            "a": f"feed of {options.records:,} records (97% activated, 3% failed), {at}",
            "b": f"the same feed again (nothing moves), {at}",
            "c": f"rejected feed of {options.records:,} records (status_invalid), {at}",
            "smi": f"then, in the worker: the SMI versions of feed a written to the hubs, {at}",
        }
        for key, label in labels.items():
            _say(f"{label}: median {statistics.median(times[key]):.2f} s")


if __name__ == "__main__":
    main()
