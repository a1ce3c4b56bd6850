"""The demo estate for `seed_demo`: device models, an inventory file, rollouts in several states.

Everything goes through the services real users call (load_inventory, create_rollout, propose,
approve_proposal, revoke_rollout, …), so the demo reaches each state through real moves.
"""

from __future__ import annotations

import io
import random

from django.core.files.base import ContentFile

from .models import DeviceModel, FirmwareVersion, Organisation, OrgKind, Rollout, User
from .services.inventory import load_inventory
from .services.lifecycle import (
    approve_proposal,
    create_rollout,
    propose,
    revoke_rollout,
    start_safe_launch_without_pilot,
)

MODELS = [  # CPL code, manufacturer, model, hardware version, firmware versions (oldest first), share of hubs
    ("010A030B", "Toshiba", "SMETS2 CH single band", "1.0", ["0002012F", "00020130", "00020131"], 0.55),
    ("020B0001", "WNC", "SMETS2 CH dual band", "2.1", ["00010001", "00010002"], 0.35),
    ("030C0002", "EDMI", "SMETS2 CH Alt HAN", "1.2", ["00030001", "00030002"], 0.10),
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

    def draft(code: str, target: int, replaced: list[int], impact: str, title: str) -> Rollout:
        return create_rollout(
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
    return done
