"""Dask and Ray executors give bit-identical results and tables to local processes.

Both start their cluster on loopback only and skip when the optional extra is
not installed (``pip install "clustersim[dask]"`` / ``"clustersim[ray]"``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from clustersim.errors import ConfigError
from clustersim.executors import make_executor
from clustersim.results import HOST_COLUMNS, build_rows
from clustersim.sweep import Sweep, make_sweep, run_sweep

BASE: dict[str, Any] = {
    "name": "exec",
    "cluster": {"nodes": 2, "gpus_per_node": 8},
    "workload": {"format": "synthetic", "synthetic": {"jobs": 150, "arrival_rate": 0.01}},
}


def small_sweep() -> Sweep:
    return make_sweep(
        BASE,
        grid={"scheduler.name": ["fifo", "sjf", "las"], "workload.load_scale": [1.0, 2.0]},
        seeds=2,
    )


def assert_same(a: Path, b: Path, sweep: Sweep) -> None:
    ra, _ = build_rows(a)
    rb, _ = build_rows(b)
    strip = set(HOST_COLUMNS) | {"executor"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in ra] == [
        {k: v for k, v in r.items() if k not in strip} for r in rb
    ]
    for p in sweep.points:
        for f in ("jobs.parquet", "utilization.parquet", "config.yaml"):
            assert (a / "runs" / p.folder / f).read_bytes() == (
                b / "runs" / p.folder / f
            ).read_bytes()


def test_executor_specs() -> None:
    assert make_executor("local:3").name == "local:3"
    assert make_executor(None, workers=2).name == "local:2"
    assert make_executor("serial").name == "serial"
    with pytest.raises(ConfigError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="local:N"):
        make_executor("local:x")


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="Dask distributed not installed (pip install 'clustersim[dask]')",
)
def test_dask_matches_local(tmp_path: Path) -> None:
    from distributed import LocalCluster

    sw = small_sweep()
    run_sweep(sw, tmp_path / "local", "local", workers=2)
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://127.0.0.1:")
        rep = run_sweep(sw, tmp_path / "dask", "dask://" + addr.removeprefix("tcp://"))
    assert rep.computed == len(sw.points) and rep.failed == 0
    assert rep.executor.startswith("dask:tcp://127.0.0.1:")
    assert_same(tmp_path / "local", tmp_path / "dask", sw)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray not installed (pip install 'clustersim[ray]')",
)
def test_ray_matches_local(tmp_path: Path) -> None:
    import ray

    sw = small_sweep()
    run_sweep(sw, tmp_path / "local", "local", workers=2)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        rep = run_sweep(sw, tmp_path / "ray", "ray")
    finally:
        ray.shutdown()
    assert rep.computed == len(sw.points) and rep.failed == 0
    assert_same(tmp_path / "local", tmp_path / "ray", sw)
