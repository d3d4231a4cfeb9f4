"""Launch profiles: the standalone inference clusters under ``skypilot/inference/``.

Figures come from the seeds (skypilot/inference README and the serving guide) and
:mod:`wfdash.pricing`: Falcon3-7B-Instruct-1.58bit measured 12.6 tok/s on a
c3d-standard-16 (16 vCPUs, DDR5); BitNet throughput grows about linearly with threads
until memory bandwidth saturates, so the larger machines' figures are estimates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from wfdash.pricing import CLUSTER_OFFERS


@dataclass(frozen=True, slots=True)
class LaunchProfile:
    name: str  # the LaunchReplica profile key, also the YAML's stem
    title: str
    yaml_path: Path  # relative to the skypilot/ directory (see DeploymentFiles)
    cloud: str  # as SkyPilot writes it
    instance_type: str
    vcpus: int
    memory_gb: int
    spot: bool
    price_per_hour: float | None  # planning price (on-demand unless spot)
    expected_tok_s: float | None  # generation speed of one request, Falcon3-7B-1.58bit
    note: str
    offer: str  # the wfdash.pricing.CLUSTER_OFFERS key (the sandbox emulates that offer)


def _price(offer: str, *, spot: bool) -> float | None:
    found = CLUSTER_OFFERS.get(offer)
    if found is None:
        return None
    return (
        found.spot_per_hour if spot and found.spot_per_hour is not None else found.ondemand_per_hour
    )


PROFILES: Mapping[str, LaunchProfile] = MappingProxyType(
    {
        "gcp_c3d": LaunchProfile(
            name="gcp_c3d",
            title="GCP C3D — AMD Genoa, DDR5 ~460 GB/s (lowest latency)",
            yaml_path=Path("inference/gcp_c3d.yaml"),
            cloud="GCP",
            instance_type="c3d-standard-90",
            vcpus=90,
            memory_gb=360,
            spot=False,
            price_per_hour=_price("c3d", spot=False),
            expected_tok_s=65.0,
            note=(
                "~60-70 tok/s estimated (12.6 tok/s measured on c3d-standard-16, scaled by "
                "threads); needs a C3D CPU quota of 90+ in the region"
            ),
            offer="c3d",
        ),
        "gcp_h3": LaunchProfile(
            name="gcp_h3",
            title="GCP H3 — Intel Sapphire Rapids, DDR5 ~307 GB/s (cheapest per token)",
            yaml_path=Path("inference/gcp_h3.yaml"),
            cloud="GCP",
            instance_type="h3-standard-88",
            vcpus=88,
            memory_gb=352,
            spot=False,
            price_per_hour=_price("h3", spot=False),
            expected_tok_s=45.0,
            note="~40-50 tok/s estimated; on-demand only, offered in few regions",
            offer="h3",
        ),
        "runpod_cpu": LaunchProfile(
            name="runpod_cpu",
            title="RunPod — 2x A40 pod, CPUs only (development)",
            yaml_path=Path("inference/runpod_cpu.yaml"),
            cloud="RunPod",
            instance_type="2x A40 pod",
            vcpus=18,
            memory_gb=96,
            spot=False,
            price_per_hour=_price("runpod", spot=False),
            expected_tok_s=None,
            note=(
                "SkyPilot's RunPod catalog has GPU pods only: the GPUs idle; 40 GB disk, "
                "so the default model is the small pre-quantised BitNet-b1.58-2B-4T GGUF"
            ),
            offer="runpod",
        ),
    }
)
