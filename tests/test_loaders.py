"""Trace loaders: real traces parse; every malformed row names file, line, field and fix."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE, shared_path

from clustersim.config import SyntheticConfig
from clustersim.errors import TraceError
from clustersim.workload.loaders import load_csv, load_openb, load_philly
from clustersim.workload.synthetic import generate_jobs


def csv_file(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "t.csv"
    p.write_text(body)
    return p


def test_sample_trace() -> None:
    jobs, rep = load_csv(SAMPLE)
    assert len(jobs) == 3000 == rep.kept
    assert jobs[0].submit_time == 0.0
    assert all(a.submit_time <= b.submit_time for a, b in itertools.pairwise(jobs))
    assert jobs[0].attrs["virtual_cluster"] == "6c71a0"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("job_id,submit_time,num_gpus\na,0,1\n", "t.csv:1: field 'duration' missing column"),
        (
            "job_id,submit_time,num_gpus,duration\na,0,1,10\nb,5,2,-4\n",
            "t.csv:3: field 'duration' -4 is out of range ('duration' must be >= 0)",
        ),
        (
            "job_id,submit_time,num_gpus,duration\na,0,x,10\n",
            "t.csv:2: field 'num_gpus' 'x' is not",
        ),
        ("job_id,submit_time,num_gpus,duration\na,0,1.5,10\n", "not a whole number"),
        ("job_id,submit_time,num_gpus,duration\na,0,0,10\n", "'num_gpus' must be > 0"),
        (
            "job_id,submit_time,num_gpus,duration\na,0,1,10\na,1,1,1\n",
            "t.csv:3: field 'job_id' duplicate job id 'a' (first seen on line 2)",
        ),
        ("job_id,submit_time,num_gpus,duration\na,0,1,10,7\n", "t.csv:2: row has 5 fields"),
        ("job_id,submit_time,num_gpus,duration,gpu_milli\na,0,1,10,1500\n", "1500 > 1000"),
        ("job_id,submit_time,num_gpus,duration\na,,1,10\n", "field 'submit_time' empty value"),
        ("", "empty file"),
    ],
)
def test_csv_errors(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(TraceError) as ei:
        load_csv(csv_file(tmp_path, body))
    assert needle in str(ei.value)


def test_csv_optional_columns(tmp_path: Path) -> None:
    p = csv_file(
        tmp_path,
        "job_id,submit_time,num_gpus,duration,gpu_milli,device_type,model\n"
        "b,5,1,10,250,H100,llama\na,0,2,20,,,\n",
    )
    jobs, _ = load_csv(p)
    assert [j.id for j in jobs] == ["a", "b"]
    assert jobs[1].gpu_milli == 250 and jobs[1].device_type == "H100"
    assert jobs[1].attrs == {"model": "llama"} and jobs[0].gpu_milli == 1000


def test_philly_errors(tmp_path: Path) -> None:
    p = csv_file(
        tmp_path,
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-09 07:01:55,66.0,1,66.0,a\n2017-13-09 07:01:55,66.0,1,66.0,a\n",
    )
    with pytest.raises(TraceError, match=r"t.csv:3: field 'timestamp'"):
        load_philly(p)
    p = csv_file(
        tmp_path, "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,-1,1,66.0,a\n"
    )
    with pytest.raises(TraceError, match=r"t.csv:2: field 'duration'"):
        load_philly(p)


def test_full_philly_list() -> None:
    path = shared_path("philly", "philly_jobs.csv")
    jobs, rep = load_philly(path)
    assert len(jobs) == 82247 == rep.rows
    assert jobs[0].submit_time == 0.0
    vc, _ = load_philly(path, ["b436b2"])
    assert len(vc) == 7423


def test_openb_pods_keep_fractions() -> None:
    path = shared_path("alibaba-gpu-2023-openb", "openb_pod_list_default.csv")
    jobs, rep = load_openb(path)
    assert rep.rows == 8152
    assert rep.dropped.get("cpu-only pod", 0) > 0
    shares = [j.gpu_milli for j in jobs if j.gpu_milli < 1000]
    assert shares and all(0 < m < 1000 for m in shares)


def test_synthetic_is_seeded() -> None:
    cfg = SyntheticConfig(jobs=500)
    a = generate_jobs(cfg, np.random.default_rng(1))
    b = generate_jobs(cfg, np.random.default_rng(1))
    c = generate_jobs(cfg, np.random.default_rng(2))
    assert a == b and a != c
    gaps = np.diff([j.submit_time for j in a])
    assert abs(gaps.mean() - 1 / cfg.arrival_rate) < 0.15 / cfg.arrival_rate
    assert set(j.num_gpus for j in a) <= set(cfg.gpu_mix)


def test_openb_gpu_spec_alternatives_run_on_openb_cluster() -> None:
    """gpuspec33 pods (with 'V100M16|V100M32'-style constraints) replay on the openb topology."""
    from conftest import REPO

    from clustersim.api import simulate
    from clustersim.config import validate_scenario

    path = shared_path("alibaba-gpu-2023-openb", "openb_pod_list_gpuspec33.csv")
    jobs, _ = load_openb(path)
    assert any(j.device_type == "V100|V100-16GB" for j in jobs)
    sc = validate_scenario(
        {
            "name": "openb",
            "cluster": {"topology": str(REPO / "topologies" / "alibaba-openb.yaml")},
            "workload": {"trace": str(path), "format": "openb", "limit": 1500},
            "scheduler": {"name": "fifo_backfill"},
        }
    )
    res = simulate(sc)
    assert res.summary["jobs_completed"] == 1500
    by = {r.id: r for r in res.engine.records}
    types = res.cluster.node_type
    for j in jobs[:1500]:
        if j.device_type:
            ok = set(j.device_type.split("|"))
            assert all(types[int(res.cluster.node_of[d])] in ok for d in by[j.id].devices)
