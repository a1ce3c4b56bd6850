"""Schedules: Default Pilot Schedule (PL2, A03), Safe Launch Schedule (SL2, A08), hold and release
(SL3), the deployment plan (T5), and FILE_FORMATS "Times"."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import connection

from rollouts.models import (
    AuditEvent,
    Batch,
    Notice,
    Rollout,
    RolloutHub,
    Stage,
    Status,
    UploadState,
)
from rollouts.services.schedules import (
    WindowTimeError,
    deployment_plan_for,
    hold_batch,
    parse_window_time,
    release_batch,
    safe_launch_schedule_for,
    upload_default_pilot_schedule,
    upload_safe_launch_schedule,
)

from .conftest import new_draft
from .test_lifecycle import publish

UK = ZoneInfo("Europe/London")
UTC = dt.UTC
AUTO = dt.datetime(2027, 6, 1, 0, 0, tzinfo=UK)  # the automatic deployment time of `live` (BST: 23:00 UTC)

SPLIT = "00DB000000000001"  # north, Volt (import) + GasCo (gas)
BOTH = "00DB000000000002"  # north, Volt both roles
GAS_SOUTH = "00DB000000000003"  # south, GasCo only
OTHER_SOUTH = "00DB000000000004"  # south, Other Power only
NOT_ELIGIBLE = "00DB000000000005"  # north, already on the target version

W1 = ("2027-01-11T08:00", "2027-01-15T18:00")
W2 = ("2027-02-01", "2027-02-05")


def schedule(*rows: tuple[str, str, str, str], name: str = "schedule.csv") -> ContentFile:
    lines = ["batch,guid,window_start,window_end", *(",".join(r) for r in rows)]
    return ContentFile(("\n".join(lines) + "\n").encode(), name=name)


def errors(upload) -> list[tuple[int | None, str, str]]:
    return [(e.row, e.column, e.code) for e in upload.errors.order_by("row", "id")]


def batch_of(rollout, guid) -> str | None:
    row = RolloutHub.objects.select_related("batch").get(rollout=rollout, hub__guid=guid)
    return row.batch.name if row.batch else None


@pytest.fixture
def live(draft, dcc, dcc_2):
    rollout = publish(draft, dcc, dcc_2)
    Rollout.objects.filter(pk=rollout.pk).update(auto_deploy_at=AUTO)  # test setup: a known automatic time
    RolloutHub.objects.filter(rollout=rollout).update(planned_activation_at=AUTO)
    rollout.refresh_from_db()
    return rollout


def make_pilot(rollout, *guids: str) -> None:
    """Test setup standing in for the pilot membership services: these hubs are on the default list."""
    RolloutHub.objects.filter(rollout=rollout, hub__guid__in=guids).update(
        group="pilot", in_default_pilot=True
    )


# -- Times ---------------------------------------------------------------------------------------------


@pytest.mark.req("T5")
@pytest.mark.parametrize(
    ("text", "end", "expected_utc"),
    [
        ("2026-05-01T09:00", False, dt.datetime(2026, 5, 1, 8, 0, tzinfo=UTC)),  # BST: UK = UTC+1
        ("2026-12-01T09:00", False, dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),  # GMT
        ("2026-05-01 09:00:30", False, dt.datetime(2026, 5, 1, 8, 0, 30, tzinfo=UTC)),
        ("2026-05-01T09:00+00:00", False, dt.datetime(2026, 5, 1, 9, 0, tzinfo=UTC)),  # an offset wins
        ("2026-05-01T09:00Z", False, dt.datetime(2026, 5, 1, 9, 0, tzinfo=UTC)),
        ("2026-10-25T01:30+01:00", False, dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # offset resolves
        ("2026-10-25T01:30+00:00", False, dt.datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
        ("2026-05-01", False, dt.datetime(2026, 4, 30, 23, 0, tzinfo=UTC)),  # a date: 00:00 UK for a start
        (
            "2026-05-01",
            True,
            dt.datetime(2026, 5, 1, 23, 0, tzinfo=UTC),
        ),  # ... the end of that day for an end
        ("2026-12-01", True, dt.datetime(2026, 12, 2, 0, 0, tzinfo=UTC)),
        ("2026-10-24", True, dt.datetime(2026, 10, 24, 23, 0, tzinfo=UTC)),  # ends at 00:00 BST on the 25th
        ("2027-03-28", False, dt.datetime(2027, 3, 28, 0, 0, tzinfo=UTC)),  # clock-change day: 00:00 GMT
        ("  2026-05-01T09:00  ", False, dt.datetime(2026, 5, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_window_times_are_iso_8601_in_uk_time_unless_an_offset_is_given(text, end, expected_utc):
    assert parse_window_time(text, end=end) == expected_utc


@pytest.mark.req("T5")
@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("2026-10-25T01:30", "time_ambiguous"),  # last Sunday of October 2026: 01:30 happens twice
        ("2026-10-25T01:00", "time_ambiguous"),
        ("2027-03-28T01:30", "time_ambiguous"),  # last Sunday of March 2027: 01:30 does not exist
        ("2026-03-29T01:00", "time_ambiguous"),  # last Sunday of March 2026
        ("tomorrow", "window_invalid"),
        ("01/05/2026", "window_invalid"),
        ("2026-02-30", "window_invalid"),
        ("2026-05-01T25:00", "window_invalid"),
        ("9999-12-31T23:30-01:00", "window_invalid"),  # the year 10000 in UTC
        ("0001-01-01T00:30+01:00", "window_invalid"),  # the year 0 in UTC
        ("", "window_invalid"),
    ],
)
def test_a_time_at_a_clock_change_is_ambiguous_and_junk_is_invalid(text, code):
    with pytest.raises(WindowTimeError) as caught:
        parse_window_time(text, end=False)
    assert caught.value.code == code


@pytest.mark.req("T5")
def test_times_just_around_a_clock_change_are_fine():
    assert parse_window_time("2026-10-25T00:59", end=False) == dt.datetime(2026, 10, 24, 23, 59, tzinfo=UTC)
    assert parse_window_time("2026-10-25T02:00", end=False) == dt.datetime(2026, 10, 25, 2, 0, tzinfo=UTC)
    assert parse_window_time("2027-03-28T00:59", end=False) == dt.datetime(2027, 3, 28, 0, 59, tzinfo=UTC)
    assert parse_window_time("2027-03-28T02:00", end=False) == dt.datetime(2027, 3, 28, 1, 0, tzinfo=UTC)


# -- SL2: the Safe Launch Schedule -------------------------------------------------------------------------


@pytest.mark.req("SL2")
@pytest.mark.req("X1")
def test_a_safe_launch_schedule_creates_batches_and_places_hubs(live, csp_north):
    upload = upload_safe_launch_schedule(
        user=csp_north,
        rollout_id=live.pk,
        content=schedule(("A", SPLIT, *W1), ("B", "00-db-00-00-00-00-00-02", *W2)),
    )
    assert upload.state == UploadState.APPLIED, errors(upload)
    a = Batch.objects.get(rollout=live, name="A")
    assert (a.region, a.group, a.held) == ("north", "safe_launch", False)
    assert a.window_start == dt.datetime(2027, 1, 11, 8, 0, tzinfo=UTC)  # January: GMT
    assert a.window_end == dt.datetime(2027, 1, 15, 18, 0, tzinfo=UTC)
    b = Batch.objects.get(rollout=live, name="B")
    assert (b.window_start, b.window_end) == (
        dt.datetime(2027, 2, 1, 0, 0, tzinfo=UTC),
        dt.datetime(2027, 2, 6, 0, 0, tzinfo=UTC),  # a date-only end: the end of 5 February
    )
    assert batch_of(live, SPLIT) == "A" and batch_of(live, BOTH) == "B"
    assert batch_of(live, GAS_SOUTH) is None
    event = AuditEvent.objects.get(action="upload.applied.safe_launch_schedule")
    assert event.details["sha256"] == upload.sha256 and event.details["upload_id"] == upload.pk
    assert event.details["batches_added"] == 2 and event.details["rows"] == 2
    # Each Supplier with hubs in it is told; Other Power (no hub in it) is not.
    told = set(
        Notice.objects.filter(kind="safe_launch.schedule").values_list("organisation__name", flat=True)
    )
    assert told == {"Volt Energy", "GasCo"}


@pytest.mark.req("SL2")
def test_a_file_adds_new_batches_and_replaces_the_batches_it_names(live, csp_north):
    first = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1), ("A", BOTH, *W1))
    )
    assert first.state == UploadState.APPLIED
    # Adding batch B moves BOTH into it; A keeps SPLIT (A is not named, so it is not replaced).
    added = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("B", BOTH, *W2))
    )
    assert added.state == UploadState.APPLIED, errors(added)
    assert (batch_of(live, SPLIT), batch_of(live, BOTH)) == ("A", "B")
    # Replacing A with only BOTH, in a new window: SPLIT is not in the new A, so it loses its batch.
    replaced = upload_safe_launch_schedule(
        user=csp_north,
        rollout_id=live.pk,
        content=schedule(("A", BOTH, "2027-03-01T09:00", "2027-03-02T17:00")),
    )
    assert replaced.state == UploadState.APPLIED, errors(replaced)
    assert (batch_of(live, SPLIT), batch_of(live, BOTH)) == (None, "A")
    a = Batch.objects.get(rollout=live, name="A")
    assert a.window_end == dt.datetime(2027, 3, 2, 17, 0, tzinfo=UTC)
    assert Batch.objects.filter(rollout=live, name="B").exists()  # B is kept, now empty
    assert replaced.summary["batches_replaced"] == 1 and replaced.summary["hubs_left_without_batch"] == 1


@pytest.mark.req("SL2")
@pytest.mark.req("X3")
@pytest.mark.req("P3")
@pytest.mark.parametrize(
    ("bad_rows", "expected"),
    [
        ([("A", GAS_SOUTH, *W1)], [(2, "guid", "guid_not_in_region")]),  # another region's hub
        ([("A", "00DBFFFFFFFFFFFF", *W1)], [(2, "guid", "guid_not_in_region")]),  # unknown: the same code
        ([("A", NOT_ELIGIBLE, *W1)], [(2, "guid", "guid_not_eligible")]),
        (
            [("A", SPLIT, *W1), ("A", BOTH, "2027-01-11T08:00", "2027-01-16T18:00")],
            [(3, "window_end", "batch_window_inconsistent")],
        ),
        ([("A", SPLIT, "2027-01-15T18:00", "2027-01-11T08:00")], [(2, "window_end", "window_invalid")]),
        ([("A", SPLIT, "2027-01-15T18:00", "2027-01-15T18:00")], [(2, "window_end", "window_invalid")]),
        ([("A", SPLIT, "next week", W1[1])], [(2, "window_start", "window_invalid")]),
        ([("A", SPLIT, "2027-05-30", "2027-06-01T00:01")], [(2, "window_end", "window_after_auto_deploy")]),
        ([("A", SPLIT, "2027-05-30", "2027-06-01")], [(2, "window_end", "window_after_auto_deploy")]),
        ([("A", SPLIT, "2026-10-25T01:30", W1[1])], [(2, "window_start", "time_ambiguous")]),
        ([("A", SPLIT, W1[0], "2027-03-28T01:30")], [(2, "window_end", "time_ambiguous")]),
        ([(" ", SPLIT, *W1)], [(2, "batch", "batch_unknown")]),
        ([("A", "not-a-guid", *W1)], [(2, "guid", "guid_format")]),
    ],
)
def test_a_file_with_any_error_changes_nothing_and_names_every_error(live, csp_north, bad_rows, expected):
    before = AuditEvent.objects.count()
    upload = upload_safe_launch_schedule(user=csp_north, rollout_id=live.pk, content=schedule(*bad_rows))
    assert upload.state == UploadState.REJECTED
    assert errors(upload) == expected
    assert not Batch.objects.filter(rollout=live).exists()
    assert not RolloutHub.objects.filter(rollout=live, batch__isnull=False).exists()
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)[before:]) == [
        "upload.rejected"
    ]
    # A valid file of the same shape is applied.
    good = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1), ("A", BOTH, *W1))
    )
    assert good.state == UploadState.APPLIED, errors(good)


@pytest.mark.req("T5")
@pytest.mark.req("SL2")
def test_a_window_may_end_exactly_at_the_automatic_time_and_not_a_minute_later(live, csp_north):
    late = upload_safe_launch_schedule(
        user=csp_north,
        rollout_id=live.pk,
        content=schedule(("A", SPLIT, "2027-05-30", "2027-06-01T00:01+01:00")),
    )
    assert errors(late) == [(2, "window_end", "window_after_auto_deploy")]
    exact = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, "2027-05-30", "2027-06-01T00:00"))
    )
    assert exact.state == UploadState.APPLIED, errors(exact)
    assert Batch.objects.get(rollout=live, name="A").window_end == AUTO
    also_exact = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("B", BOTH, "2027-05-30", "2027-05-31"))
    )  # a date-only end: the end of 31 May is the automatic time
    assert also_exact.state == UploadState.APPLIED, errors(also_exact)


@pytest.mark.req("SL2")
def test_every_error_of_a_file_is_listed(live, csp_north):
    upload = upload_safe_launch_schedule(
        user=csp_north,
        rollout_id=live.pk,
        content=schedule(
            ("A", SPLIT, "2026-10-25T01:30", W1[1]),
            ("A", GAS_SOUTH, *W1),
            ("B", BOTH, "2027-05-30", "2027-06-02"),
        ),
    )
    assert errors(upload) == [
        (2, "window_start", "time_ambiguous"),
        (3, "guid", "guid_not_in_region"),
        (4, "window_end", "window_after_auto_deploy"),
    ]


@pytest.mark.req("SL2")
def test_a_pilot_hub_is_not_in_the_safe_launch_schedule(live, csp_north):
    make_pilot(live, SPLIT)
    upload = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1))
    )
    assert errors(upload) == [(2, "guid", "guid_not_eligible")]
    assert "pilot group" in upload.errors.get().message


@pytest.mark.req("SL2")
def test_a_distributed_hub_cannot_move(live, csp_north):
    upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1), ("A", BOTH, *W1))
    )
    RolloutHub.objects.filter(rollout=live, hub__guid=SPLIT).update(status="distributed")
    moved = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("B", SPLIT, *W2))
    )
    assert errors(moved) == [(2, "guid", "already_distributed")]
    # Replacing A without it would take it out of its batch: refused too, naming the hub.
    dropped = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", BOTH, *W1))
    )
    assert [(e.row, e.code, e.value) for e in dropped.errors.all()] == [(None, "already_distributed", SPLIT)]
    assert batch_of(live, SPLIT) == "A"
    # Staying in its batch is fine (the window may change).
    kept = upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W2), ("A", BOTH, *W2))
    )
    assert kept.state == UploadState.APPLIED, errors(kept)


@pytest.mark.req("SL2")
@pytest.mark.req("P3")
def test_only_a_csp_uploads_a_schedule_and_only_for_a_live_rollout(live, csp_north, dcc, import_supplier):
    for user in (dcc, import_supplier):
        with pytest.raises(PermissionDenied):
            upload_safe_launch_schedule(user=user, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1)))
    Rollout.objects.filter(pk=live.pk).update(status=Status.SUSPENDED)
    with pytest.raises(ValidationError, match="suspended"):
        upload_safe_launch_schedule(user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1)))


@pytest.mark.req("SL2")
@pytest.mark.req("P3")
def test_a_csp_cannot_upload_for_a_rollout_it_cannot_see(estate, dcc, dcc_2, csp_north, csp_south):
    # A rollout of the other model touches one north hub only (06): CSP South cannot see it.
    rollout = publish(_other_model_draft(dcc, estate), dcc, dcc_2)
    with pytest.raises(ObjectDoesNotExist):
        upload_safe_launch_schedule(
            user=csp_south, rollout_id=rollout.pk, content=schedule(("A", SPLIT, *W1))
        )


def _other_model_draft(dcc, estate):
    from rollouts.models import FirmwareVersion

    target = FirmwareVersion.objects.create(device_model=estate["other"], version="00010002")
    return new_draft(dcc, target, [estate["w1"]])


# -- SL2 at scale ------------------------------------------------------------------------------------------

BIG = 50_000


def _bulk_hubs(estate, supplier, count: int) -> list[str]:
    """`count` north hubs of model 010A030B on v1 for one Supplier, with a bare COPY (no per-row saves)."""
    guids = [f"00DC{n:012X}" for n in range(count)]
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id, "
            "gas_supplier_id, friendly, production_proving, status, firmware_as_of, updated_at) FROM STDIN"
        ) as copy,
    ):
        now = dt.datetime.now(UTC)
        for guid in guids:
            copy.write_row(
                [
                    guid,
                    estate["model"].pk,
                    estate["v1"].pk,
                    "north",
                    supplier.pk,
                    None,
                    False,
                    False,
                    "in_smi",
                    now,
                    now,
                ]
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rollouts_hub")  # as load_inventory does after a big load
    return guids


@pytest.mark.req("SL2")
def test_a_50000_hub_batch_goes_through_the_whole_upload(
    estate, dcc, dcc_2, csp_north, other_supplier, settings
):
    settings.INTAKE_BACKGROUND_BYTES = 64 * 1024 * 1024  # applied here; the worker's path has its own tests
    guids = _bulk_hubs(estate, other_supplier.organisation, BIG)
    rollout = publish(new_draft(dcc, estate["v2"], [estate["v1"]]), dcc, dcc_2)
    Rollout.objects.filter(pk=rollout.pk).update(auto_deploy_at=AUTO)
    content = ContentFile(
        (
            "batch,guid,window_start,window_end\n" + "".join(f"BIG,{g},{W1[0]},{W1[1]}\n" for g in guids)
        ).encode(),
        name="big.csv",
    )
    upload = upload_safe_launch_schedule(user=csp_north, rollout_id=rollout.pk, content=content)
    assert upload.state == UploadState.APPLIED, errors(upload)[:5]
    big = Batch.objects.get(rollout=rollout, name="BIG")
    assert RolloutHub.objects.filter(rollout=rollout, batch=big).count() == BIG
    assert upload.summary["hubs"] == BIG and upload.summary["hubs_given_a_batch"] == BIG
    assert safe_launch_schedule_for(other_supplier.organisation, rollout).count() == BIG
    # A second file replaces the batch with half of it: the other half loses its batch.
    half = ContentFile(
        (
            "batch,guid,window_start,window_end\n" + "".join(f"BIG,{g},{W2[0]},{W2[1]}\n" for g in guids[::2])
        ).encode(),
        name="half.csv",
    )
    again = upload_safe_launch_schedule(user=csp_north, rollout_id=rollout.pk, content=half)
    assert again.state == UploadState.APPLIED
    assert RolloutHub.objects.filter(rollout=rollout, batch=big).count() == BIG // 2
    assert again.summary["hubs_left_without_batch"] == BIG // 2


# -- SL3: hold, release, and what Suppliers see ------------------------------------------------------------


@pytest.mark.req("SL3")
@pytest.mark.req("X1")
def test_dcc_holds_and_releases_a_batch(live, csp_north, dcc, import_supplier):
    upload_safe_launch_schedule(user=csp_north, rollout_id=live.pk, content=schedule(("A", SPLIT, *W1)))
    batch = Batch.objects.get(rollout=live, name="A")
    with pytest.raises(PermissionDenied):
        hold_batch(user=csp_north, batch_id=batch.pk, reason="no")
    with pytest.raises(ValidationError):
        hold_batch(user=dcc, batch_id=batch.pk, reason=" ")
    assert hold_batch(user=dcc, batch_id=batch.pk, reason="Failures in batch 0").held
    with pytest.raises(ValidationError, match="already held"):
        hold_batch(user=dcc, batch_id=batch.pk, reason="again")
    told = set(Notice.objects.filter(kind="batch.hold").values_list("organisation__name", flat=True))
    assert told == {"CSP North", "Volt Energy", "GasCo"}
    assert not release_batch(user=dcc, batch_id=batch.pk).held
    with pytest.raises(ValidationError, match="already released"):
        release_batch(user=dcc, batch_id=batch.pk)
    assert list(
        AuditEvent.objects.filter(action__startswith="batch.").order_by("id").values_list("action", flat=True)
    ) == [
        "batch.hold",
        "batch.release",
    ]


@pytest.mark.req("SL3")
@pytest.mark.req("P3")
@pytest.mark.req("P4")
def test_a_supplier_sees_the_schedule_of_its_own_hubs_only(
    live, csp_north, csp_south, import_supplier, gas_supplier, other_supplier
):
    upload_safe_launch_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("N", SPLIT, *W1), ("N", BOTH, *W1))
    )
    upload_safe_launch_schedule(
        user=csp_south, rollout_id=live.pk, content=schedule(("S", GAS_SOUTH, *W2), ("S", OTHER_SOUTH, *W2))
    )

    def seen(user):
        return {(r["guid"], r["batch_name"]) for r in safe_launch_schedule_for(user.organisation, live)}

    assert seen(import_supplier) == {(SPLIT, "N"), (BOTH, "N")}
    assert seen(gas_supplier) == {(SPLIT, "N"), (GAS_SOUTH, "S")}
    assert seen(other_supplier) == {(OTHER_SOUTH, "S")}
    assert seen(csp_north) == {(SPLIT, "N"), (BOTH, "N")}
    row = next(iter(safe_launch_schedule_for(other_supplier.organisation, live)))
    assert not any("supplier" in key for key in row)  # P4: no Supplier ids in the rows


# -- PL2: the Default Pilot Schedule -------------------------------------------------------------------------


@pytest.mark.req("PL2")
@pytest.mark.req("T5")
def test_a_default_pilot_schedule_batches_the_pilot_hubs(live, csp_north, import_supplier):
    make_pilot(live, SPLIT, BOTH)
    upload = upload_default_pilot_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("P1", SPLIT, *W1), ("P2", BOTH, *W2))
    )
    assert upload.state == UploadState.APPLIED, errors(upload)
    p1 = Batch.objects.get(rollout=live, name="P1")
    assert (p1.group, p1.region) == ("pilot", "north")
    # T5: a pilot hub activates at the end of its batch window.
    row = RolloutHub.objects.get(rollout=live, hub__guid=SPLIT)
    assert (row.planned_activation_at, row.activation_source) == (
        dt.datetime(2027, 1, 15, 18, 0, tzinfo=UTC),
        "pilot_window",
    )
    told = set(
        Notice.objects.filter(kind="pilot.default_schedule").values_list("organisation__name", flat=True)
    )
    assert told == {"Volt Energy", "GasCo"}
    assert Notice.objects.filter(kind="plan.changed", organisation=csp_north.organisation).count() == 1
    assert upload.summary["plan_changed"] == 2


@pytest.mark.req("PL2")
def test_a_new_default_pilot_schedule_replaces_the_previous_one(live, csp_north):
    make_pilot(live, SPLIT, BOTH)
    upload_default_pilot_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("P1", SPLIT, *W1), ("P2", BOTH, *W2))
    )
    again = upload_default_pilot_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("P3", BOTH, *W1))
    )
    assert again.state == UploadState.APPLIED, errors(again)
    assert set(Batch.objects.filter(rollout=live, group="pilot").values_list("name", flat=True)) == {"P3"}
    assert (batch_of(live, SPLIT), batch_of(live, BOTH)) == (None, "P3")
    row = RolloutHub.objects.get(rollout=live, hub__guid=SPLIT)
    assert (row.planned_activation_at, row.activation_source) == (AUTO, "automatic")  # replanned


@pytest.mark.req("PL2")
@pytest.mark.req("X3")
@pytest.mark.parametrize(
    ("bad_rows", "expected"),
    [
        ([("P1", BOTH, *W1)], [(2, "guid", "guid_not_eligible")]),  # not on the default list
        ([("P1", GAS_SOUTH, *W1)], [(2, "guid", "guid_not_in_region")]),
        (
            [("P1", SPLIT, *W1), ("P1", SPLIT.lower(), *W1)],
            [(2, "guid", "guid_duplicate"), (3, "guid", "guid_duplicate")],
        ),
        ([("P1", SPLIT, W1[0], "2027-06-01T00:01")], [(2, "window_end", "window_after_auto_deploy")]),
        ([("P1", SPLIT, W1[1], W1[0])], [(2, "window_end", "window_invalid")]),
        ([("P1", SPLIT, "2027-03-28T01:30", W1[1])], [(2, "window_start", "time_ambiguous")]),
    ],
)
def test_a_default_pilot_schedule_with_errors_changes_nothing(live, csp_north, bad_rows, expected):
    make_pilot(live, SPLIT)
    upload = upload_default_pilot_schedule(user=csp_north, rollout_id=live.pk, content=schedule(*bad_rows))
    assert errors(upload) == expected
    assert not Batch.objects.filter(rollout=live).exists()
    good = upload_default_pilot_schedule(
        user=csp_north, rollout_id=live.pk, content=schedule(("P1", SPLIT, *W1))
    )
    assert good.state == UploadState.APPLIED, errors(good)


@pytest.mark.req("PL2")
def test_the_default_pilot_schedule_is_closed_once_the_pilot_starts(live, csp_north):
    make_pilot(live, SPLIT)
    Rollout.objects.filter(pk=live.pk).update(stage=Stage.PILOTING)  # test setup: the pilot has started
    with pytest.raises(ValidationError, match="pilot has not started"):
        upload_default_pilot_schedule(
            user=csp_north, rollout_id=live.pk, content=schedule(("P1", SPLIT, *W1))
        )


# -- T5: the deployment plan ------------------------------------------------------------------------------


@pytest.mark.req("T5")
@pytest.mark.req("P3")
def test_the_deployment_plan_lists_a_csps_region_in_the_export_layout(
    live, csp_north, csp_south, dcc, import_supplier
):
    make_pilot(live, SPLIT)
    upload_default_pilot_schedule(user=csp_north, rollout_id=live.pk, content=schedule(("P1", SPLIT, *W1)))
    upload_safe_launch_schedule(user=csp_north, rollout_id=live.pk, content=schedule(("S1", BOTH, *W2)))
    rows = list(deployment_plan_for(csp_north.organisation, live).iterator())
    assert rows == [
        (
            SPLIT,
            "P1",
            dt.datetime(2027, 1, 11, 8, 0, tzinfo=UTC),
            dt.datetime(2027, 1, 15, 18, 0, tzinfo=UTC),
            dt.datetime(2027, 1, 15, 18, 0, tzinfo=UTC),
            "pilot_window",
        ),
        (
            BOTH,
            "S1",
            dt.datetime(2027, 2, 1, 0, 0, tzinfo=UTC),
            dt.datetime(2027, 2, 6, 0, 0, tzinfo=UTC),
            AUTO,
            "automatic",
        ),
    ]
    assert [r[0] for r in deployment_plan_for(csp_south.organisation, live)] == [GAS_SOUTH, OTHER_SOUTH]
    assert deployment_plan_for(dcc.organisation, live).count() == 4
    with pytest.raises(PermissionDenied):
        deployment_plan_for(import_supplier.organisation, live)
