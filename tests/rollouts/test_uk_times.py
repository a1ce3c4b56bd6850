"""Times in files (FILE_FORMATS.md "Times"), checked against the UK's clock rule itself, not zoneinfo.

Without an offset a time is UK local: summer time (UTC+1) runs from 01:00 UTC on the last Sunday of
March to 01:00 UTC on the last Sunday of October (the rule since 1996), GMT otherwise. So on the March
Sunday the local hour from 01:00 to 02:00 does not exist, on the October Sunday it happens twice, and
either is refused as `time_ambiguous`. With an offset or Z a time is what it says. The status feed
(PL9) and the schedules' windows read times with these two parsers.
"""

from __future__ import annotations

import datetime as dt

import hypothesis
import pytest
from hypothesis import strategies as st

from rollouts.services.progress import _parse_at
from rollouts.services.schedules import WindowTimeError, parse_window_time


def last_sunday(year: int, month: int) -> dt.date:
    day = dt.date(year, month, 31)  # March and October both have 31 days
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


def uk_to_utc(local: dt.datetime) -> dt.datetime | None:
    """The rule, by hand; None for a local time that does not exist or happens twice."""
    spring = dt.datetime.combine(last_sunday(local.year, 3), dt.time(1))
    autumn = dt.datetime.combine(last_sunday(local.year, 10), dt.time(1))
    if spring <= local < spring + dt.timedelta(hours=1) or autumn <= local < autumn + dt.timedelta(hours=1):
        return None
    summer = spring + dt.timedelta(hours=1) <= local < autumn
    return (local - dt.timedelta(hours=1 if summer else 0)).replace(tzinfo=dt.UTC)


# Local times anywhere in 1997-2099, and many within the three hours around each change of the clocks.
# Naive on purpose: wall-clock times, as a file gives them without an offset.
anywhere = st.datetimes(min_value=dt.datetime(1997, 1, 1), max_value=dt.datetime(2099, 12, 31))  # noqa: DTZ001
near_a_change = st.builds(
    lambda year, month, minutes: (
        dt.datetime.combine(last_sunday(year, month), dt.time()) + dt.timedelta(minutes=minutes)
    ),
    st.integers(1997, 2099),
    st.sampled_from((3, 10)),
    st.integers(0, 180),
)
local_times = st.one_of(anywhere, near_a_change).map(lambda t: t.replace(microsecond=0))
spellings = st.sampled_from(("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"))


@pytest.mark.req("PL9")
@hypothesis.settings(max_examples=400)
@hypothesis.given(local=local_times, spelling=spellings, parser=st.sampled_from(("feed", "window")))
def test_a_time_without_an_offset_is_uk_time_and_a_change_of_the_clocks_is_refused(local, spelling, parser):
    if ":%S" not in spelling:
        local = local.replace(second=0)
    text = local.strftime(spelling)
    expected = uk_to_utc(local)
    parse = _parse_at if parser == "feed" else lambda value: parse_window_time(value, end=False)
    if expected is None:
        with pytest.raises(WindowTimeError) as refused:
            parse(text)
        assert refused.value.code == "time_ambiguous"
    else:
        assert parse(text) == expected


@pytest.mark.req("PL9")
@hypothesis.settings(max_examples=300)
@hypothesis.given(
    local=local_times,
    offset_minutes=st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15),
    parser=st.sampled_from(("feed", "window")),
)
def test_a_time_with_an_offset_is_what_it_says_whatever_the_clocks_do(local, offset_minutes, parser):
    offset = dt.timedelta(minutes=offset_minutes)
    text = local.replace(tzinfo=dt.timezone(offset)).isoformat()
    if offset_minutes == 0 and parser == "feed":
        text = text.replace("+00:00", "Z")  # the form CSP systems send
    parse = _parse_at if parser == "feed" else lambda value: parse_window_time(value, end=False)
    assert parse(text) == (local - offset).replace(tzinfo=dt.UTC)
