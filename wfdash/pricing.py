"""Hourly prices and instance facts the sandbox places replicas by and the UI costs with.

Figures are from shared/facts/metrics.md and the seeds (2024–2025 list prices, USD/h):
GCP c3d-standard-16 0.726 on-demand / 0.110 spot; c3d-standard-90 ≈ 4.09 / ≈ 0.62;
h3-standard-88 1.76 (on-demand only); AWS r7a.4xlarge 1.217 / ~0.37–0.56,
r7a.2xlarge 0.609 / ~0.18–0.33; a Hetzner AX102 is a fixed ≈ $150 a month.
Spot prices move; these are mid-range values for planning, never billing.
"""

from __future__ import annotations

from dataclasses import dataclass

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True, slots=True)
class Offer:
    """One instance type in one cloud region, as SkyPilot would launch it."""

    cloud: str  # as SkyPilot writes it: 'GCP', 'AWS', 'RunPod'
    region: str
    zone: str
    instance_type: str
    cpus: int
    memory_gb: int
    ondemand_per_hour: float
    spot_per_hour: float | None  # None: no spot market for it


BURST_OFFERS: tuple[Offer, ...] = (
    Offer("GCP", "us-central1", "us-central1-a", "c3d-standard-16", 16, 64, 0.726, 0.110),
    Offer("GCP", "europe-west4", "europe-west4-b", "c3d-standard-16", 16, 64, 0.799, 0.128),
    Offer("AWS", "us-east-1", "us-east-1a", "r7a.4xlarge", 16, 128, 1.217, 0.45),
    Offer("AWS", "us-west-2", "us-west-2b", "r7a.4xlarge", 16, 128, 1.217, 0.52),
)

CLUSTER_OFFERS: dict[str, Offer] = {
    "c3d": Offer("GCP", "us-central1", "us-central1-a", "c3d-standard-90", 90, 360, 4.09, 0.62),
    "h3": Offer("GCP", "us-central1", "us-central1-a", "h3-standard-88", 88, 352, 1.76, None),
    "runpod": Offer("RunPod", "US", "US-TX-3", "cpu3c-16-64", 16, 64, 0.80, None),
}

# A Hetzner AX102 (16 cores, 128 GB DDR5) in the SSH node pool: fixed monthly cost.
BASE_HOST_MONTHLY = 150.0
BASE_HOST_PER_HOUR = BASE_HOST_MONTHLY / HOURS_PER_MONTH
BASE_HOST_INSTANCE = "16CPU--128GB"


def hourly_price(instance_type: str | None, *, spot: bool, cloud: str | None) -> float | None:
    """The planning price of one replica, or None when wfdash does not know the type."""
    if (cloud or "").upper() == "SSH":
        return BASE_HOST_PER_HOUR
    for offer in (*BURST_OFFERS, *CLUSTER_OFFERS.values()):
        if offer.instance_type == instance_type and (cloud is None or offer.cloud == cloud):
            if spot and offer.spot_per_hour is not None:
                return offer.spot_per_hour
            return offer.ondemand_per_hour
    return None


def cheapest_spot(excluded_regions: frozenset[str] = frozenset()) -> Offer:
    """The cheapest spot burst offer outside recently preempted regions (SkyServe's
    ``dynamic_fallback`` spot placer), or the cheapest overall when all are excluded."""
    spot = [o for o in BURST_OFFERS if o.spot_per_hour is not None]
    allowed = [o for o in spot if f"{o.cloud}/{o.region}" not in excluded_regions] or spot
    return min(allowed, key=lambda o: o.spot_per_hour or 0.0)


def cheapest_ondemand() -> Offer:
    return min(BURST_OFFERS, key=lambda o: o.ondemand_per_hour)
