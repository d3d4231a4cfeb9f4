"""Fleet cost: which replicas cost money, base vs burst, the all-hyperscaler baseline."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import service, spot_replica, ssh_replica
from wfdash.collect.kinds import Layer, ReplicaStatus
from wfdash.collect.model import Cluster, Replica
from wfdash.cost import (
    COSTED_STATUSES,
    CostLine,
    cluster_per_hour,
    fleet_cost,
    replica_per_hour,
    service_cost,
)
from wfdash.pricing import BASE_HOST_PER_HOUR

HOST = 150 / 730  # a Hetzner AX102 per hour
C3D_ONDEMAND = 0.726
C3D_SPOT = 0.110


def _unplaced(replica_id: int, status: ReplicaStatus) -> Replica:
    return Replica(replica_id=replica_id, cluster_name=f"bitnet-{replica_id}", status=status)


def test_spillover_saving_worked_example() -> None:
    # 3 Hetzner hosts + 2 GCP spot c3d-standard-16, against the same 5 replicas all
    # on-demand on the cheapest cloud offer (GCP c3d-standard-16 at $0.726/h).
    svc = service(
        ssh_replica(1),
        ssh_replica(2),
        ssh_replica(3),
        spot_replica(4, cloud="GCP"),
        spot_replica(5, cloud="GCP"),
    )
    cost = service_cost(svc, pool_hosts=3)

    assert cost.base_per_hour == pytest.approx(3 * HOST)  # 0.616
    assert cost.burst_per_hour == pytest.approx(2 * C3D_SPOT)  # 0.220
    assert cost.total_per_hour == pytest.approx(3 * HOST + 2 * C3D_SPOT)  # 0.836
    assert cost.baseline_per_hour == pytest.approx(5 * C3D_ONDEMAND)  # 3.630
    assert cost.savings_share == pytest.approx(1 - (3 * HOST + 2 * C3D_SPOT) / (5 * C3D_ONDEMAND))
    assert cost.savings_share == pytest.approx(0.7696, abs=1e-4)
    assert cost.base_hosts_used == 3
    assert cost.base_hosts_total == 3
    assert cost.unpriced == 0
    assert cost.complete
    base, burst = cost.lines
    assert base == CostLine(Layer.BASE, "hetzner-base", "ssh-hetzner-base", False, 3, base.per_hour)
    assert base.per_hour == pytest.approx(3 * HOST)
    assert burst == CostLine(
        Layer.BURST, "gcp", "us-central1", True, 2, burst.per_hour, "c3d-standard-16"
    )
    assert burst.per_hour == pytest.approx(2 * C3D_SPOT)


def test_idle_pool_hosts_are_paid_for() -> None:
    svc = service(ssh_replica(1), ssh_replica(2))
    cost = service_cost(svc, pool_hosts=4)
    assert cost.base_hosts_used == 2
    assert cost.base_per_hour == pytest.approx(4 * HOST)
    assert cost.lines[0].per_hour == pytest.approx(2 * HOST)  # the used hosts' share
    assert cost.baseline_per_hour == pytest.approx(2 * C3D_ONDEMAND)
    assert cost.savings_share == pytest.approx(1 - 4 * HOST / (2 * C3D_ONDEMAND))


def test_unknown_pool_size_charges_the_used_hosts() -> None:
    cost = service_cost(service(ssh_replica(1), ssh_replica(2)))
    assert cost.base_hosts_total is None
    assert cost.base_per_hour == pytest.approx(2 * HOST)


def test_a_pool_size_below_the_used_hosts_is_out_of_date() -> None:
    cost = service_cost(service(ssh_replica(1), ssh_replica(2), ssh_replica(3)), pool_hosts=2)
    assert cost.base_per_hour == pytest.approx(3 * HOST)


def test_no_replicas_has_no_baseline_but_still_pays_the_pool() -> None:
    cost = service_cost(service(), pool_hosts=3)
    assert cost.lines == ()
    assert cost.total_per_hour == pytest.approx(3 * HOST)
    assert cost.baseline_per_hour == 0
    assert cost.savings_share is None


def test_a_fleet_costlier_than_the_baseline_has_a_negative_share() -> None:
    cost = service_cost(service(ssh_replica(1)), pool_hosts=10)
    assert cost.savings_share is not None
    assert cost.savings_share < 0


@pytest.mark.parametrize("status", list(ReplicaStatus))
def test_only_replicas_with_an_instance_cost_money(status: ReplicaStatus) -> None:
    cost = service_cost(service(spot_replica(1, status, cloud="GCP")))
    costs = status in {
        ReplicaStatus.PROVISIONING,
        ReplicaStatus.STARTING,
        ReplicaStatus.READY,
        ReplicaStatus.NOT_READY,
        ReplicaStatus.SHUTTING_DOWN,
    }
    assert (status in COSTED_STATUSES) is costs
    assert cost.burst_per_hour == pytest.approx(C3D_SPOT if costs else 0.0)
    assert cost.baseline_per_hour == pytest.approx(C3D_ONDEMAND if costs else 0.0)
    assert sum(line.replicas for line in cost.lines) == (1 if costs else 0)


def test_on_demand_burst_uses_the_on_demand_price() -> None:
    cost = service_cost(service(spot_replica(1, cloud="AWS", is_spot=False)))
    assert cost.burst_per_hour == pytest.approx(1.217)
    # The baseline puts every replica on the cheapest on-demand offer, not its own type.
    assert cost.baseline_per_hour == pytest.approx(C3D_ONDEMAND)
    assert cost.savings_share == pytest.approx(1 - 1.217 / C3D_ONDEMAND)


def test_unknown_price_is_counted_not_guessed() -> None:
    svc = service(
        spot_replica(1, cloud="GCP"),
        spot_replica(2, cloud="GCP", instance_type="n2-standard-8"),
        _unplaced(3, ReplicaStatus.PROVISIONING),  # no cluster record yet
    )
    cost = service_cost(svc)
    assert cost.unpriced == 2
    assert not cost.complete
    assert cost.burst_per_hour == pytest.approx(C3D_SPOT)
    # Unpriced replicas stay out of the baseline too: the share compares like with like.
    assert cost.baseline_per_hour == pytest.approx(C3D_ONDEMAND)
    unknown = [line for line in cost.lines if line.per_hour is None]
    assert [(line.layer, line.instance_type, line.replicas) for line in unknown] == [
        (Layer.BURST, "n2-standard-8", 1),
        (Layer.UNPLACED, None, 1),
    ]


def test_lines_group_by_provider_region_market_and_type() -> None:
    svc = service(
        spot_replica(1, cloud="GCP"),
        spot_replica(2, cloud="AWS"),
        spot_replica(3, cloud="GCP"),
        spot_replica(4, cloud="GCP", is_spot=False),
        ssh_replica(5),
    )
    cost = service_cost(svc)
    assert [(line.layer, line.provider, line.spot, line.replicas) for line in cost.lines] == [
        (Layer.BASE, "hetzner-base", False, 1),
        (Layer.BURST, "aws", True, 1),
        (Layer.BURST, "gcp", False, 1),
        (Layer.BURST, "gcp", True, 2),
    ]
    assert cost.burst_per_hour == pytest.approx(0.45 + C3D_ONDEMAND + 2 * C3D_SPOT)
    assert cost.burst_per_hour == pytest.approx(
        sum(line.per_hour or 0 for line in cost.lines if line.layer is Layer.BURST)
    )


def test_base_replica_is_priced_per_host_whatever_its_shape() -> None:
    # The mapping recognises SSH pools from the infra string even without a cloud.
    replica = ssh_replica(1, cloud=None, instance_type="16CPU--128GB")
    assert replica_per_hour(replica) == pytest.approx(BASE_HOST_PER_HOUR)
    assert replica_per_hour(ssh_replica(2, ReplicaStatus.FAILED)) == 0.0


def test_services_share_one_pool() -> None:
    a = service(ssh_replica(1), spot_replica(2, cloud="GCP"), name="a")
    b = service(ssh_replica(1), name="b")
    cost = fleet_cost([a, b], pool_hosts=3)
    assert cost.base_hosts_used == 2
    assert cost.base_per_hour == pytest.approx(3 * HOST)
    assert cost.lines[0].replicas == 2
    assert cost.baseline_per_hour == pytest.approx(3 * C3D_ONDEMAND)


def _cluster(status: str = "UP", **fields: object) -> Cluster:
    values: dict[str, object] = {
        "name": "bitnet-c3d",
        "status": status,
        "cloud": "GCP",
        "region": "us-central1",
        "instance_type": "c3d-standard-90",
        "resources": "1x(cpus=90, mem=360, c3d-standard-90, ...)",
        "provider": "gcp",
    }
    values.update(fields)
    return Cluster.model_validate(values)


def test_clusters_cost_while_init_or_up() -> None:
    spot = _cluster(name="spot", resources="1x[spot](cpus=90, mem=360, c3d-standard-90, ...)")
    clusters = [_cluster(), spot, _cluster("INIT", name="booting"), _cluster("STOPPED", name="s")]
    cost = fleet_cost([], clusters)
    assert cost.clusters_per_hour == pytest.approx(4.09 + 0.62 + 4.09)
    assert cost.total_per_hour == pytest.approx(cost.clusters_per_hour)
    # A cluster's baseline is its own type on-demand: only the spot one saves.
    assert cost.baseline_per_hour == pytest.approx(3 * 4.09)
    assert cost.savings_share == pytest.approx(1 - (2 * 4.09 + 0.62) / (3 * 4.09))
    assert cluster_per_hour(clusters[3]) == 0.0


def test_unknown_cluster_is_unpriced() -> None:
    cost = fleet_cost([], [_cluster(instance_type="mystery-1")])
    assert cost.unpriced == 1
    assert cost.clusters_per_hour == 0
    assert cost.savings_share is None


def test_cost_module_stays_headless() -> None:
    path = Path(__file__).resolve().parents[1] / "wfdash" / "cost.py"
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & {"textual", "rich"}
    probe = "import sys, wfdash.cost; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "'textual'" not in loaded
    assert "'rich'" not in loaded
