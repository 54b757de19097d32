"""Schedules: 5-field cron, 6-field seconds-first cron, descriptors, @every durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.api.schedule import ScheduleError, parse_duration, parse_schedule

T0 = datetime(2024, 1, 1, 10, 7, 12)  # a Monday


def dt(*args) -> datetime:
    return datetime(*args)


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        # 5 fields, minute first
        ("*/15 * * * *", T0, dt(2024, 1, 1, 10, 15)),
        ("0 3 * * *", T0, dt(2024, 1, 2, 3, 0)),
        ("30 2 1 * *", T0, dt(2024, 2, 1, 2, 30)),
        ("0 0 * * 0", T0, dt(2024, 1, 7, 0, 0)),
        ("  5 4 * * *  ", T0, dt(2024, 1, 2, 4, 5)),
        # 6 fields, seconds FIRST (the original restik): second 0 of every 30th minute
        ("0 */30 * * * *", dt(2024, 1, 1, 10, 0, 0), dt(2024, 1, 1, 10, 30, 0)),
        ("0 */30 * * * *", dt(2024, 1, 1, 10, 29, 59), dt(2024, 1, 1, 10, 30, 0)),
        ("0 */30 * * * *", dt(2024, 1, 1, 10, 30, 0), dt(2024, 1, 1, 11, 0, 0)),
        ("0 */30 * * * *", T0, dt(2024, 1, 1, 10, 30, 0)),
        ("30 * * * * *", T0, dt(2024, 1, 1, 10, 7, 30)),
        ("*/10 * * * * *", T0, dt(2024, 1, 1, 10, 7, 20)),
        ("0 0 3 * * *", T0, dt(2024, 1, 2, 3, 0, 0)),
        # descriptors
        ("@hourly", T0, dt(2024, 1, 1, 11, 0)),
        ("@daily", T0, dt(2024, 1, 2, 0, 0)),
        ("@midnight", T0, dt(2024, 1, 2, 0, 0)),
        ("@weekly", T0, dt(2024, 1, 7, 0, 0)),
        ("@monthly", T0, dt(2024, 2, 1, 0, 0)),
        ("@yearly", T0, dt(2025, 1, 1, 0, 0)),
        ("@annually", T0, dt(2025, 1, 1, 0, 0)),
        ("@HOURLY", T0, dt(2024, 1, 1, 11, 0)),
        # @every durations: relative to the given time
        ("@every 90m", T0, T0 + timedelta(minutes=90)),
        ("@every 1h30m", T0, T0 + timedelta(minutes=90)),
        ("@every 45s", T0, T0 + timedelta(seconds=45)),
        ("@every 1.5h", T0, T0 + timedelta(minutes=90)),
        ("@every 1s", T0, T0 + timedelta(seconds=1)),
        ("@every 2h0m30s", T0, T0 + timedelta(hours=2, seconds=30)),
        ("@every 1500ms", T0, T0 + timedelta(seconds=1.5)),
    ],
)
def test_next_after(text, after, expected):
    assert parse_schedule(text).next_after(after) == expected


def test_next_after_is_strictly_after_a_fire_time():
    s = parse_schedule("0 */30 * * * *")
    t = dt(2024, 1, 1, 0, 0, 0)
    fires = []
    for _ in range(4):
        t = s.next_after(t)
        fires.append(t)
    assert fires == [dt(2024, 1, 1, 0, 30), dt(2024, 1, 1, 1, 0), dt(2024, 1, 1, 1, 30),
                     dt(2024, 1, 1, 2, 0)]  # fmt: skip


def test_timezone_aware_times_stay_aware():
    after = datetime(2024, 1, 1, 10, 7, 12, tzinfo=UTC)
    assert parse_schedule("@hourly").next_after(after) == datetime(2024, 1, 1, 11, tzinfo=UTC)
    assert parse_schedule("@every 90m").next_after(after) == after + timedelta(minutes=90)


@pytest.mark.parametrize(
    ("text", "seconds_first", "every"),
    [
        ("* * * * *", False, None),
        ("0 * * * * *", True, None),
        ("@every 90m", False, timedelta(minutes=90)),
        ("@daily", False, None),
    ],
)
def test_parsed_shape(text, seconds_first, every):
    s = parse_schedule(text)
    assert s.seconds_first is seconds_first
    assert s.every == every
    assert s.text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("250ms", timedelta(milliseconds=250)),
        ("0.5h", timedelta(minutes=30)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        (None, "non-empty"),
        (5, "non-empty"),
        (["* * * * *"], "non-empty"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * *", "got 7"),
        ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
        ("* 25 * * *", "hour field '25': 25 is out of range 0-23"),
        ("0 0 32 * *", "day of month field '32': 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field '13': 13 is out of range 1-12"),
        ("0 0 * FOO *", "month field 'FOO': 'FOO' is not a month (use 1-12 or JAN-DEC)"),
        ("* * * * 8", "day of week field '8': 8 is out of range 0-7"),
        ("* * * * MON-FRII", "day of week field 'MON-FRII': 'FRII' is not a day"),
        ("*/0 * * * *", "minute field '*/0': step '0' must be a whole number above 0"),
        ("0 1,2,x * * *", "hour field '1,2,x': 'x' is not a number"),
        ("0 0 31 2 *", "it never fires (no such date)"),  # Feb 31
        ("a b c d e", "minute field 'a': 'a' is not a number"),
        ("70 * * * * *", "second field '70': 70 is out of range 0-59"),  # seconds first
        ("0 70 * * * *", "minute field '70': 70 is out of range 0-59"),
        # the first wrong field is named, after fields at their limits and valid steps
        ("*/5 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("*/1 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("59 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("1-2-3 * * * *", "minute field '1-2-3': '2-3' is not a number"),
        ("@fortnightly", "unknown descriptor"),
        ("@reboot", "unknown descriptor"),
        ("@every", "@every <duration>"),
        ("@every90m", "@every <duration>"),
        ("@every 0s", "at least 1s"),
        ("@every 500ms", "at least 1s"),
        ("@every 5", "invalid duration"),
        ("@every 5d", "invalid duration"),
        ("@every -5m", "invalid duration"),
        ("@every 5m junk", "invalid duration"),
        ("@every m", "invalid duration"),
    ],
)
def test_invalid_schedules_raise_with_a_useful_message(text, fragment):
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text)
    assert fragment in str(info.value)
    if isinstance(text, str) and text.strip() and not text.startswith("@every"):
        assert repr(text.strip()) in str(info.value)


def test_schedule_error_is_a_value_error():
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize(
    ("text", "t", "expected"),
    [
        ("@every 90m", dt(2024, 1, 1, 10, 7, 12, 345), timedelta(minutes=90)),
        ("*/15 * * * *", dt(2024, 1, 1, 10, 15), timedelta(minutes=15)),
        ("*/15 * * * *", dt(2024, 1, 1, 10, 29, 59), timedelta(minutes=15)),
        ("0 */30 * * * *", dt(2024, 1, 1, 11, 0, 0, 900), timedelta(minutes=30)),
        ("*/2 * * * * *", dt(2024, 1, 1, 11, 0, 4), timedelta(seconds=2)),
        ("@daily", dt(2024, 1, 2, 0, 3), timedelta(days=1)),
        # weekdays at 9: a success on Friday is two runs old on Tuesday at 9 (4 days),
        # one on Thursday on Monday at 9 (4 days), one on Tuesday on Thursday at 9 (2 days)
        ("0 9 * * 1-5", dt(2024, 1, 5, 9, 0), timedelta(days=2)),
        ("0 9 * * 1-5", dt(2024, 1, 5, 9, 4, 30), timedelta(days=2)),
        ("0 9 * * 1-5", dt(2024, 1, 4, 9, 5), timedelta(days=2)),
        ("0 9 * * 1-5", dt(2024, 1, 2, 9, 5), timedelta(days=1)),
        ("0 9 * * 1-5", dt(2024, 1, 6, 12), timedelta(days=2)),  # Saturday: Friday's run
    ],
)
def test_interval_at(text, t, expected):
    assert parse_schedule(text).interval_at(t) == expected


def test_zero_duration_is_zero_and_an_every_of_zero_is_refused():
    # "0" is the one unit-less duration Go accepts; the controller's options read it too.
    assert parse_duration("0") == timedelta(0)
    assert parse_duration(" 0 ") == timedelta(0)
    with pytest.raises(ScheduleError, match="at least 1s"):
        parse_schedule("@every 0")


def test_a_duration_of_any_length_adds_up_every_part():
    assert parse_duration("1s" * 300) == timedelta(seconds=300)
    assert parse_schedule("@every " + "1m" * 200).every == timedelta(minutes=200)
    with pytest.raises(ScheduleError, match="invalid duration"):
        parse_duration("1s" * 300 + "x")


def test_a_parsed_schedule_is_shared_between_backups_and_cannot_change():
    # Every cycle parses every Backup's schedule: the same text gives the same object back,
    # so it must be immutable (one Backup must not change another's schedule).
    first = parse_schedule("0 3 * * *")
    assert parse_schedule("0 3 * * *") is first
    with pytest.raises(AttributeError):
        first.cron = "* * * * *"
    assert first.next_after(T0) == dt(2024, 1, 2, 3, 0)
