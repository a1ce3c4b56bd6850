"""The demo estate for `seed_demo`: device models, an inventory file, rollouts in several states.

Everything goes through the services real users call (load_inventory, create_rollout, propose,
approve_proposal, revoke_rollout, …), so the demo reaches each state through real moves.
"""

from __future__ import annotations

import datetime as dt
import io
import random

from django.core.files.base import ContentFile
from django.utils import timezone

from .intake.pipeline import applied_here
from .models import (
    DeviceModel,
    FirmwareVersion,
    Group,
    Organisation,
    OrgKind,
    Rollout,
    RolloutHub,
    Stage,
    Upload,
    User,
)
from .services.inventory import load_inventory
from .services.lifecycle import (
    approve_proposal,
    create_rollout,
    propose,
    revoke_rollout,
    start_pilot,
    start_safe_launch_without_pilot,
)

MODELS = [  # CPL code, manufacturer, model, hardware version, firmware versions (oldest first), share of hubs
    ("010A030B", "Toshiba", "SMETS2 CH single band", "1.0", ["0002012F", "00020130", "00020131"], 0.45),
    ("020B0001", "WNC", "SMETS2 CH dual band", "2.1", ["00010001", "00010002"], 0.25),
    ("030C0002", "EDMI", "SMETS2 CH Alt HAN", "1.2", ["00030001", "00030002"], 0.10),
    # One model per further demo state, so their eligible hubs never overlap (no supersession).
    ("040D0001", "Toshiba", "SMETS2 CH single band (rev B)", "1.1", ["00040001", "00040002"], 0.04),
    ("050E0001", "WNC", "SMETS2 CH dual band (rev B)", "2.2", ["00050001", "00050002"], 0.04),
    ("060F0001", "EDMI", "SMETS2 CH Alt HAN (rev B)", "1.3", ["00060001", "00060002"], 0.04),
    ("07100001", "Toshiba", "SMETS2 CH mesh", "3.0", ["00070001", "00070002"], 0.04),
    ("08110001", "WNC", "SMETS2 CH mesh", "3.1", ["00080001", "00080002"], 0.04),
]
FAILURE_REASONS = [
    "HAN join timeout",
    "image checksum mismatch",
    "power loss during activation",
    "WAN signal lost",
    "image transfer incomplete after 3 attempts",
]
REGIONS = [("north", 0.3), ("central", 0.4), ("south", 0.3)]


def ensure_device_models() -> dict[str, list[FirmwareVersion]]:
    versions = {}
    for code, manufacturer, name, hardware, numbers, _share in MODELS:
        model, _ = DeviceModel.objects.get_or_create(
            cpl_code=code,
            defaults={"manufacturer": manufacturer, "model": name, "hardware_version": hardware},
        )
        versions[code] = [
            FirmwareVersion.objects.get_or_create(
                device_model=model,
                version=number,
                defaults={"release_note_url": f"https://cpl.example.test/{code}/{number}"},
            )[0]
            for number in numbers
        ]
    return versions


def inventory_csv(hubs: int, suppliers: list[str], seed: int = 2026) -> bytes:
    """A realistic estate: about 10% split hubs, some single-fuel, a few friendly and production-proving."""
    rng = random.Random(seed)
    out = io.StringIO()
    out.write("guid,device_model,firmware_version,csp_region,import_supplier,gas_supplier,flags\n")
    for n in range(hubs):
        code, _m, _n, _h, numbers, _s = rng.choices(MODELS, weights=[m[5] for m in MODELS])[0]
        version = numbers[0] if rng.random() < 0.8 else numbers[1]  # most hubs on the oldest version
        region = rng.choices([r for r, _ in REGIONS], weights=[w for _, w in REGIONS])[0]
        importer = rng.choice(suppliers)
        shape = rng.random()
        if shape < 0.10:
            gas = rng.choice([s for s in suppliers if s != importer])  # split
        elif shape < 0.70:
            gas = importer  # dual fuel with one Supplier
        elif shape < 0.95:
            gas = ""  # electricity only
        else:
            importer, gas = "", importer  # gas only
        flags = "friendly" if rng.random() < 0.01 else ("production_proving" if rng.random() < 0.002 else "")
        out.write(f"00DB{n:012X},{code},{version},{region},{importer},{gas},{flags}\n")
    return out.getvalue().encode()


def seed_estate(hubs: int, dcc_users: list[User]) -> list[str]:
    """The demo estate, every upload applied at once (each step builds on the one before)."""
    with applied_here():
        return _seed_estate(hubs, dcc_users)


def _seed_estate(hubs: int, dcc_users: list[User]) -> list[str]:
    """Load the inventory and put rollouts through real moves. Idempotent; returns what it did."""
    done = []
    versions = ensure_device_models()
    suppliers = list(
        Organisation.objects.filter(kind=OrgKind.SUPPLIER).order_by("name").values_list("slug", flat=True)
    )
    first, second = dcc_users
    upload = load_inventory(
        user=first, content=ContentFile(inventory_csv(hubs, suppliers), name=f"demo-smi-{hubs}.csv")
    )
    done.append(f"inventory: {upload.row_count:,} hubs ({upload.get_state_display().lower()})")
    if Rollout.objects.exists():
        return done

    def draft(code: str, target: int, replaced: list[int], impact: str, title: str, **extra) -> Rollout:
        return create_rollout(
            **extra,
            user=first,
            title=title,
            target_version=versions[code][target],
            replaced_versions=[versions[code][i] for i in replaced],
            release_note_url=f"https://cpl.example.test/{code}/{versions[code][target].version}",
            severity="high",
            priority="medium",
            release_type="sec_release",
            impact=impact,
        )

    def publish(rollout: Rollout) -> Rollout:
        return approve_proposal(
            user=second, proposal_id=propose(user=first, rollout_id=rollout.pk, move="publish").pk
        )

    older = publish(draft("010A030B", 1, [0], "functional", "Single band CH: radio stability fix"))
    newer = publish(draft("010A030B", 2, [0, 1], "functional", "Single band CH: stability and HAN fixes"))
    done.append(f"{older.reference} superseded by {newer.reference}; {newer.reference} published")
    security = publish(draft("020B0001", 1, [0], "security", "Dual band CH: security patch"))
    start_safe_launch_without_pilot(user=first, rollout_id=security.pk)
    done.append(f"{security.reference} in safe launch (security release, no pilot)")
    revoked = publish(draft("030C0002", 1, [0], "functional", "Alt HAN CH: join reliability"))
    revoke_rollout(user=first, rollout_id=revoked.pk, reason="The release note referred to the wrong build.")
    awaiting = draft("030C0002", 1, [0], "functional", "Alt HAN CH: join reliability (corrected build)")
    propose(user=first, rollout_id=awaiting.pk, move="publish", reason="Corrected build attached")
    done.append(f"{revoked.reference} revoked; {awaiting.reference} awaiting a second DCC user to publish")
    done += _seed_progress(draft, publish, first, second)
    return done


def _start_demo_pilot(rollout: Rollout, dcc: User, per_region: int = 10) -> int:
    """The CSPs' Default Pilot Lists and Schedules (up to `per_region` hubs each), then start_pilot."""
    from .services.piloting import upload_default_pilot_list
    from .services.schedules import upload_default_pilot_schedule

    now = timezone.now()
    start, end = (now - dt.timedelta(hours=1)).isoformat(), (now + dt.timedelta(days=4)).isoformat()
    pilot = 0
    for region in ("north", "central", "south"):
        guids = list(
            RolloutHub.objects.filter(rollout=rollout, region=region)
            .order_by("hub__guid")
            .values_list("hub__guid", flat=True)[:per_region]
        )
        if not guids:
            continue
        csp = _csp_user(region)
        upload_default_pilot_list(
            user=csp,
            rollout_id=rollout.pk,
            content=ContentFile(("guid\n" + "\n".join(guids)).encode(), name="a02.csv"),
        )
        rows = "".join(f"P-{region},{g},{start},{end}\n" for g in guids)
        upload_default_pilot_schedule(
            user=csp,
            rollout_id=rollout.pk,
            content=ContentFile(("batch,guid,window_start,window_end\n" + rows).encode(), name="a03.csv"),
        )
        pilot += len(guids)
    start_pilot(user=dcc, rollout_id=rollout.pk)
    return pilot


def _seed_progress(draft, publish, first: User, second: User) -> list[str]:
    """Rollouts piloting, paused by the failure threshold (with its incident), suspended pending the
    Panel, stopped and closed: each through real moves and simulated CSP feeds."""
    from .services.incidents import raise_incident, triage_incident
    from .services.progress import post_pilot_success_and_continue

    done = []
    supplier_user = (
        User.objects.filter(organisation__kind=OrgKind.SUPPLIER, is_active=True).order_by("pk").first()
    )
    piloting = publish(draft("040D0001", 1, [0], "functional", "Single band rev B: HAN retry tuning"))
    _start_demo_pilot(piloting, first)
    simulate_network(piloting.pk, fail_rate=0.0, seed=4)
    post_pilot_success_and_continue(
        user=first, rollout_id=piloting.pk, commentary="Every pilot hub activated."
    )
    done.append(f"{piloting.reference} piloting: pilot hubs activated, A06 posted, safe launch at window end")

    paused = publish(
        draft(
            "050E0001",
            1,
            [0],
            "functional",
            "Dual band rev B: WAN reconnect",
            failure_threshold_min_reported=5,
        )
    )
    _start_demo_pilot(paused, first)
    simulate_network(paused.pk, fail_rate=0.4, seed=5)
    paused.refresh_from_db()
    done.append(f"{paused.reference} {paused.describe_state()} by the failure threshold, incident open")

    suspended = publish(draft("060F0001", 1, [0], "functional", "Alt HAN rev B: join reliability"))
    _start_demo_pilot(suspended, first)
    holder = _supplier_in(suspended) or supplier_user
    incident = raise_incident(
        user=holder,
        rollout_id=suspended.pk,
        description="Pilot hubs drop off the HAN overnight.",
        emergency_stop=True,
    )
    triage_incident(
        user=first, incident_id=incident.pk, outcome="suspend", reason="Suspended pending the Panel."
    )
    done.append(f"{suspended.reference} suspended pending the Panel")

    stopped = publish(draft("07100001", 1, [0], "functional", "Mesh CH: routing table fix"))
    _start_demo_pilot(stopped, first)
    simulate_network(stopped.pk, fail_rate=0.0, seed=7)
    failure = propose(
        user=first,
        rollout_id=stopped.pk,
        move="post_pilot_failure",
        reason="Battery drain",
        commentary="Pilot hubs drain their batteries after activation.",
    )
    approve_proposal(user=second, proposal_id=failure.pk)
    done.append(f"{stopped.reference} stopped after Pilot Failure (A07)")

    closed = publish(draft("08110001", 1, [0], "functional", "Mesh CH rev B: clock drift"))
    _start_demo_pilot(closed, first)
    simulate_network(closed.pk, fail_rate=0.1, seed=8)
    approve_proposal(
        user=second,
        proposal_id=propose(
            user=first, rollout_id=closed.pk, move="stop", reason="Superseded by a vendor fix"
        ).pk,
    )
    approve_proposal(
        user=second,
        proposal_id=propose(user=first, rollout_id=closed.pk, move="close_stopped", reason="Closed").pk,
    )
    done.append(f"{closed.reference} closed (A11) with its final counts")
    return done


def _supplier_in(rollout: Rollout) -> User | None:
    row = RolloutHub.objects.filter(rollout=rollout, import_supplier__isnull=False).order_by("pk").first()
    if row is None:
        return None
    return User.objects.filter(organisation_id=row.import_supplier_id, is_active=True).order_by("pk").first()


# -- the network simulator (simulate_network, seed_demo) ---------------------------------------------------


def _csp_user(region: str) -> User:
    user = (
        User.objects.filter(organisation__kind=OrgKind.CSP, organisation__region=region, is_active=True)
        .order_by("pk")
        .first()
    )
    if user is None:
        raise ValueError(f"No active user of the CSP for the {region} region: create one to play it.")
    return user


def simulate_network(
    rollout_id: int, *, fail_rate: float = 0.03, seed: int = 1, now: dt.datetime | None = None
) -> dict[str, Upload]:
    """Play the CSPs: one status feed per region, submitted as that region's CSP user through the same
    service a CSP upload uses, for every pending or scheduled hub in a live, unheld batch. Each hub
    activates on the target version, or fails (share `fail_rate`) with a realistic reason.
    Deterministic for a seed. Returns the upload per region."""
    from .services.progress import submit_status_feed

    rollout = Rollout.objects.select_related("target_version").get(pk=rollout_id)
    at = (now or timezone.now()).isoformat()
    hubs = RolloutHub.objects.filter(
        rollout=rollout, status__in=["pending", "scheduled"], batch__isnull=False, batch__held=False
    )
    if rollout.stage == Stage.PILOTING:
        hubs = hubs.filter(batch__group=Group.PILOT)
    by_region: dict[str, list[str]] = {}
    for region, guid in hubs.order_by("hub__guid").values_list("region", "hub__guid"):
        by_region.setdefault(region, []).append(guid)
    rng = random.Random(seed)
    uploads = {}
    for region in sorted(by_region):
        records = []
        for guid in by_region[region]:
            if rng.random() < fail_rate:
                records.append(
                    {"guid": guid, "status": "failed", "at": at, "reason": rng.choice(FAILURE_REASONS)}
                )
            else:
                records.append(
                    {
                        "guid": guid,
                        "status": "activated",
                        "at": at,
                        "firmware_version": rollout.target_version.version,
                    }
                )
        with applied_here():  # the simulator reports what it applied, whatever the feed's size
            uploads[region] = submit_status_feed(
                user=_csp_user(region), rollout_id=rollout.pk, records=records
            )
    return uploads
