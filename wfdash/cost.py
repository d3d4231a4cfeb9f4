"""What the fleet costs per hour, and what the same fleet would cost all on a hyperscaler.

Pure arithmetic over the domain model (no textual or rich): the header, the spillover bar
and action previews all read the same numbers. Prices are planning prices from
:mod:`wfdash.pricing`, never billing.

Conventions:

- A replica costs money from ``PROVISIONING`` until its cluster is torn down
  (``PROVISIONING``, ``STARTING``, ``READY``, ``NOT_READY``, ``SHUTTING_DOWN``). ``PENDING``
  has no instance yet; ``PREEMPTED`` and ``FAILED*`` no longer have one. ``UNKNOWN`` is
  not counted either: wfdash cannot tell whether an instance exists.
- A standalone cluster costs money while ``INIT`` (provisioning, setup) or ``UP``;
  ``STOPPED`` keeps only its disk, which is left out.
- Base layer (SSH node pool): one replica per host (each replica asks for a whole
  Hetzner AX102). The hosts are rented by the month, so the pool costs the same whether
  replicas use them or not: ``base_per_hour`` charges every host of the pool, or the used
  ones when the pool's size is unknown (or smaller: then it is out of date).
- Burst layer and clusters: the spot or on-demand price of the instance type in its
  cloud. A replica or cluster whose price wfdash does not know (an unknown instance type,
  or a replica still being placed) counts in ``unpriced`` and adds nothing to any sum:
  sums are then lower bounds.
- The baseline is the "all-hyperscaler" deployment of the seeds: every priced replica
  (base or burst) on-demand on the cheapest burst offer, and every priced cluster at the
  on-demand price of its own instance type. Unpriced ones are left out of the baseline
  too, so that ``savings_share`` compares like with like. Idle pool hosts are in the
  total but not in the baseline: they are the price of the base layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wfdash.collect.kinds import Layer, ReplicaStatus
from wfdash.pricing import BASE_HOST_PER_HOUR, cheapest_ondemand, hourly_price

if TYPE_CHECKING:
    from wfdash.collect.model import Cluster, Replica, Service

COSTED_STATUSES = frozenset(
    {
        ReplicaStatus.PROVISIONING,
        ReplicaStatus.STARTING,
        ReplicaStatus.READY,
        ReplicaStatus.NOT_READY,
        ReplicaStatus.SHUTTING_DOWN,
    }
)
COSTED_CLUSTER_STATUSES = frozenset({"INIT", "UP"})

# SkyPilot marks spot resources as '1x[spot](cpus=...)' (older releases: '[Spot]').
_SPOT_RESOURCES = re.compile(r"\[spot\]", re.IGNORECASE)
_LAYER_ORDER = {Layer.BASE: 0, Layer.BURST: 1, Layer.UNPLACED: 2}


@dataclass(frozen=True, slots=True)
class CostLine:
    """Costed replicas sharing a layer, provider, region, market and instance type."""

    layer: Layer
    provider: str
    region: str | None
    spot: bool
    replicas: int
    per_hour: float | None  # for all of them; None when the price is unknown
    instance_type: str | None = None


@dataclass(frozen=True, slots=True)
class FleetCost:
    """The hourly cost of services (and standalone clusters); see the module conventions.

    ``total_per_hour`` is ``base_per_hour + burst_per_hour + clusters_per_hour``. The
    ``per_hour`` of base lines is their hosts' share; hosts no replica uses appear only in
    ``base_per_hour``.
    """

    lines: tuple[CostLine, ...]
    base_hosts_used: int
    base_hosts_total: int | None  # the SSH pool's size, None if unknown
    base_per_hour: float
    burst_per_hour: float  # priced burst replicas (see ``unpriced``)
    clusters_per_hour: float  # priced standalone clusters (see ``unpriced``)
    total_per_hour: float
    baseline_per_hour: float
    savings_share: float | None  # 1 - total/baseline; None without a baseline; < 0 costs more
    unpriced: int  # costed replicas and clusters whose price is unknown

    @property
    def complete(self) -> bool:
        """Every costed replica and cluster is priced: the sums are not lower bounds."""
        return self.unpriced == 0


def replica_per_hour(replica: Replica) -> float | None:
    """What one replica costs per hour now: 0 when it has no instance, None if unknown."""
    if replica.status not in COSTED_STATUSES:
        return 0.0
    if replica.layer is Layer.BASE:
        # Base replicas are recognised by their infra string even when ``cloud`` is empty.
        return hourly_price(replica.instance_type, spot=False, cloud="SSH")
    if replica.layer is Layer.UNPLACED:
        return None
    return hourly_price(replica.instance_type, spot=replica.is_spot, cloud=replica.cloud)


def cluster_is_spot(cluster: Cluster) -> bool:
    return bool(cluster.resources and _SPOT_RESOURCES.search(cluster.resources))


def cluster_per_hour(cluster: Cluster) -> float | None:
    """What one standalone cluster costs per hour now: 0 when not running, None if unknown."""
    if cluster.status not in COSTED_CLUSTER_STATUSES:
        return 0.0
    return hourly_price(cluster.instance_type, spot=cluster_is_spot(cluster), cloud=cluster.cloud)


def service_cost(service: Service, *, pool_hosts: int | None = None) -> FleetCost:
    """The cost of one service; ``pool_hosts`` is the SSH pool's size when known."""
    return fleet_cost((service,), pool_hosts=pool_hosts)


def fleet_cost(
    services: Sequence[Service], clusters: Sequence[Cluster] = (), *, pool_hosts: int | None = None
) -> FleetCost:
    """The cost of several services sharing one SSH pool, plus standalone clusters."""
    replicas = [r for s in services for r in s.replicas if r.status in COSTED_STATUSES]
    lines = _lines(replicas)
    replica_baseline = cheapest_ondemand().ondemand_per_hour
    base_used = sum(line.replicas for line in lines if line.layer is Layer.BASE)
    base = BASE_HOST_PER_HOUR * max(base_used, pool_hosts or 0)
    burst = sum(
        (
            line.per_hour
            for line in lines
            if line.layer is Layer.BURST and line.per_hour is not None
        ),
        0.0,
    )
    priced_replicas = sum(line.replicas for line in lines if line.per_hour is not None)
    unpriced = sum(line.replicas for line in lines if line.per_hour is None)
    baseline = priced_replicas * replica_baseline

    clusters_total = 0.0
    for cluster in clusters:
        if cluster.status not in COSTED_CLUSTER_STATUSES:
            continue
        price = cluster_per_hour(cluster)
        ondemand = hourly_price(cluster.instance_type, spot=False, cloud=cluster.cloud)
        if price is None or ondemand is None:
            unpriced += 1
            continue
        clusters_total += price
        baseline += ondemand

    total = base + burst + clusters_total
    return FleetCost(
        lines=lines,
        base_hosts_used=base_used,
        base_hosts_total=pool_hosts,
        base_per_hour=base,
        burst_per_hour=burst,
        clusters_per_hour=clusters_total,
        total_per_hour=total,
        baseline_per_hour=baseline,
        savings_share=1.0 - total / baseline if baseline > 0 else None,
        unpriced=unpriced,
    )


def _lines(replicas: Iterable[Replica]) -> tuple[CostLine, ...]:
    """Group replicas so that each group shares one price (the key holds all it depends on)."""
    groups: dict[tuple[Layer, str, str | None, bool, str | None, str | None], list[Replica]] = {}
    for replica in replicas:
        base = replica.layer is Layer.BASE  # a host costs the same whatever its shape
        key = (
            replica.layer,
            replica.provider,
            replica.region,
            replica.is_spot,
            None if base else replica.instance_type,
            None if base else replica.cloud,
        )
        groups.setdefault(key, []).append(replica)
    lines = []
    for (layer, provider, region, spot, instance_type, _), members in groups.items():
        price = replica_per_hour(members[0])
        lines.append(
            CostLine(
                layer=layer,
                provider=provider,
                region=region,
                spot=spot,
                replicas=len(members),
                per_hour=None if price is None else price * len(members),
                instance_type=instance_type,
            )
        )
    lines.sort(
        key=lambda line: (
            _LAYER_ORDER[line.layer],
            line.provider,
            line.region or "",
            line.spot,
            line.instance_type or "",
        )
    )
    return tuple(lines)
