"""Perfetto / Chrome trace-event export of a run's job lifecycles."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from clustersim.api import read_table, simulate, write_results
from clustersim.cli import main
from clustersim.config import validate_scenario
from clustersim.errors import ConfigError
from clustersim.sweep import make_sweep, run_sweep
from clustersim.timeline import US, export_trace, lanes, trace_events

SCENARIO: dict[str, Any] = {
    "name": "tl",
    "cluster": {"nodes": 2, "gpus_per_node": 4},
    "workload": {
        "format": "synthetic",
        "synthetic": {"jobs": 40, "arrival_rate": 0.005, "gpu_mix": {1: 0.5, 2: 0.3, 4: 0.2}},
    },
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tl") / "run"
    write_results(simulate(validate_scenario(SCENARIO)), out)
    return out


def _no_overlap(events: list[dict[str, Any]]) -> None:
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            assert e["dur"] >= 0
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in tracks.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 1e-3, "two events overlap on one track"


def test_lanes_by_hand() -> None:
    start = np.array([0.0, 1.0, 2.0, 5.0, 5.0])
    end = np.array([3.0, 5.0, 4.0, 6.0, 9.0])
    # 0 -> lane 0; 1 -> lane 1; 2 -> lane 2; 3 (t=5) -> lane 0 (free since 3); 4 -> lane 1
    assert lanes(start, end).tolist() == [0, 1, 2, 0, 1]


def test_device_layout(run_dir: Path) -> None:
    doc = trace_events(run_dir, "device")
    jobs = read_table(run_dir / "jobs.parquet")
    ev = doc["traceEvents"]
    runs = [e for e in ev if e["ph"] == "X"]
    assert len(runs) == int(jobs["num_gpus"].sum())  # one event per job and device held
    row = {j: i for i, j in enumerate(jobs["job_id"])}
    for e in runs:
        i = row[e["name"]]
        assert e["ts"] == pytest.approx(jobs["first_start"][i] * US)
        assert e["dur"] == pytest.approx((jobs["end"][i] - jobs["first_start"][i]) * US)
        assert e["tid"] - 1 in list(jobs["devices"][i])
        assert e["pid"] == (e["tid"] - 1) // 4 + 1  # node of the device
    _no_overlap(ev)
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"device 0", "device 7"} <= names
    counters = [e for e in ev if e["ph"] == "C" and e["name"] == "allocated devices"]
    util = read_table(run_dir / "utilization.parquet")
    assert [c["args"]["devices"] for c in counters] == util["allocated_devices"].tolist()


def test_job_layout(run_dir: Path) -> None:
    doc = trace_events(run_dir, "job")
    jobs = read_table(run_dir / "jobs.parquet")
    ev = doc["traceEvents"]
    run_ev = [e for e in ev if e["ph"] == "X" and e["cat"] == "run"]
    queued = [e for e in ev if e["ph"] == "X" and e["cat"] == "queued"]
    assert len(run_ev) == len(jobs["job_id"])
    waited = int((jobs["first_start"] > jobs["submit_time"]).sum())
    assert len(queued) == waited
    _no_overlap(ev)
    by_job = {e["args"]["job"]: e for e in queued}
    for e in run_ev:  # a job's queued span ends where its run starts, on the same lane
        q = by_job.get(e["name"])
        if q is not None:
            assert q["tid"] == e["tid"] and q["ts"] + q["dur"] == pytest.approx(e["ts"])


def test_export_and_cli(run_dir: Path, tmp_path: Path) -> None:
    path = export_trace(run_dir, tmp_path / "t.json", by="job")
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ms" and doc["otherData"]["layout"] == "job"
    with pytest.raises(ConfigError, match="use 'device' or 'job'"):
        trace_events(run_dir, "node")
    sweep = tmp_path / "sw"
    run_sweep(make_sweep(SCENARIO, grid={"scheduler.name": ["fifo", "las"]}), sweep, "serial")
    r = CliRunner().invoke(main, ["timeline", str(sweep)])
    assert r.exit_code == 2 and "--point N" in r.output
    r = CliRunner().invoke(main, ["timeline", str(sweep), "--point", "1", "--by", "job"])
    assert r.exit_code == 0, r.output
    out = sweep / "timelines" / "point-1-job.json"
    assert out.is_file() and json.loads(out.read_text())["traceEvents"]


def test_preempted_jobs_are_exact_with_segments(tmp_path: Path) -> None:
    sc = validate_scenario({**SCENARIO, "scheduler": {"name": "las"}})
    write_results(simulate(sc), tmp_path / "las")
    jobs = read_table(tmp_path / "las" / "jobs.parquet")
    assert jobs["preemptions"].sum() > 0
    seg = read_table(tmp_path / "las" / "segments.parquet")
    # every job's segments add up to its device-holding time, one segment per run
    held: dict[str, float] = {}
    count: dict[str, int] = {}
    for j, s0, s1 in zip(seg["job_id"], seg["start"], seg["end"], strict=True):
        held[str(j)] = held.get(str(j), 0.0) + float(s1 - s0)
        count[str(j)] = count.get(str(j), 0) + 1
    for j, rt, p in zip(jobs["job_id"], jobs["run_time"], jobs["preemptions"], strict=True):
        assert held[str(j)] == pytest.approx(float(rt))
        assert count[str(j)] == int(p) + 1
    ev = trace_events(tmp_path / "las", "device")["traceEvents"]
    xs = [e for e in ev if e["ph"] == "X"]
    assert not any(e["args"]["approximate"] for e in xs)
    _no_overlap(xs)

    # without segments.parquet (older results), preempted jobs are marked approximate
    (tmp_path / "las" / "segments.parquet").unlink()
    ev = trace_events(tmp_path / "las", "device")["traceEvents"]
    approx = {e["name"] for e in ev if e["ph"] == "X" and e["args"]["approximate"]}
    assert approx == {j for j, p in zip(jobs["job_id"], jobs["preemptions"], strict=True) if p}
