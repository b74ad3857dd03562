"""Shared fixtures: paths to the repo, the bundled sample and the optional ../shared traces."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "traces"
SAMPLE = REPO / "src" / "clustersim" / "data" / "traces" / "philly-sample.csv"

sys.path.insert(0, str(Path(__file__).resolve().parent))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/traces, or skip the test with the reason."""
    p = SHARED_TRACES.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the real traces in ../shared beside the repo); not present here")
    return p


def make_jobs(rows: Sequence[tuple[float, int, float]]) -> list[Any]:
    """Jobs ``j0, j1, ...`` from (submit, gpus, duration) rows in trace order."""
    from clustersim.workload.job import Job

    return [Job(f"j{i}", float(s), int(g), float(d), seq=i) for i, (s, g, d) in enumerate(rows)]


def run_engine(
    rows: Sequence[tuple[float, int, float]],
    nodes: int,
    gpn: int,
    policy: str,
    placement: str = "first_fit",
    **kw: Any,
) -> Any:
    """Run the engine directly on a uniform cluster; returns the EngineResult."""
    from clustersim.engine import Engine
    from clustersim.schedulers.placement import get_placement
    from clustersim.schedulers.registry import create_scheduler
    from clustersim.topology import Cluster

    params = kw.pop("params", {})
    cluster = Cluster.uniform(nodes, gpn, "V100")
    eng = Engine(
        cluster, make_jobs(rows), create_scheduler(policy, params), get_placement(placement), **kw
    )
    return eng.run()
