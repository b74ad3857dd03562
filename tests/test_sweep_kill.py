"""A 100-point sweep on 2 local processes, killed with SIGKILL halfway, resumes losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from clustersim.results import build_rows

SWEEP = {
    "name": "kill-test",
    "base": {
        "name": "small",
        "cluster": {"nodes": 4, "gpus_per_node": 8},
        "workload": {"format": "synthetic", "synthetic": {"jobs": 400, "arrival_rate": 0.01}},
    },
    "grid": {
        "scheduler.name": ["fifo", "fifo_backfill", "sjf", "srtf", "las"],
        "workload.load_scale": [0.5, 1.0, 1.5, 2.0],
    },
    "seeds": 5,
}
RUN_FILES = ("run.json", "summary.json", "config.yaml", "jobs.parquet", "utilization.parquet")


def _cmd(spec: Path, out: Path) -> list[str]:
    cli = [sys.executable, "-m", "clustersim.cli", "sweep", str(spec), "--out", str(out)]
    return [*cli, "--workers", "2", "--quiet"]


def _env(marker: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CLUSTERSIM_TEST": marker}


def _finished(out: Path) -> dict[str, int]:
    runs = out / "runs"
    if not runs.is_dir():
        return {}
    return {
        p.name: (p / "summary.json").stat().st_ino
        for p in runs.iterdir()
        if not p.name.startswith(".") and (p / "run.json").exists()
    }


def _marked_processes(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if f"CLUSTERSIM_TEST={marker}".encode() in env:
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find worker processes")
def test_kill_halfway_then_resume(tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    out = tmp_path / "out"
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        _cmd(spec, out),
        env=_env(marker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while len(_finished(out)) < 35 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: workers must notice and exit
        proc.wait(timeout=30)
        t0 = time.monotonic()
        while _marked_processes(marker) and time.monotonic() - t0 < 20:
            time.sleep(0.1)
        assert _marked_processes(marker) == [], "worker processes outlived the killed sweep"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = _finished(out)
    assert 35 <= len(before) < 100
    # every result folder is complete; nothing half-written is visible under its final name
    for name in before:
        for f in RUN_FILES:
            assert (out / "runs" / name / f).is_file(), (name, f)
    rows, _ = build_rows(out)
    assert sum(r["status"] == "ok" for r in rows) == len(before)
    assert sum(r["status"] == "pending" for r in rows) == 100 - len(before)

    r = subprocess.run(
        _cmd(spec, out), env=_env(marker), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert f"{100 - len(before)} computed, {len(before)} reused, 0 failed" in r.stdout
    after = _finished(out)
    assert len(after) == 100
    for name, ino in before.items():  # finished points were not recomputed or rewritten
        assert after[name] == ino
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".tmp-")]
    rows, _ = build_rows(out)
    assert [r["point"] for r in rows] == list(range(100))
    assert all(r["status"] == "ok" and r["jobs_completed"] == 400 for r in rows)
