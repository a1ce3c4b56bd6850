"""Piloting (PL1-PL8). This module grows with the piloting issue; the lifecycle needs its guard now."""

from __future__ import annotations

from ..models import Group, Rollout, RolloutHub


def pilot_not_ready(rollout: Rollout) -> str | None:
    """L3's guard, as far as the data exists: the effective pilot group must not be empty.

    The piloting issue adds the other half: every pilot hub in a batch.
    """
    if not RolloutHub.objects.filter(rollout=rollout, group=Group.PILOT).exists():
        return "The effective pilot group is empty: the CSPs' default pilot lists must be uploaded first."
    return None
