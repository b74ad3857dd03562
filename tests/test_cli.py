"""The command line: default run, results folder, clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from clustersim.cli import main


def test_run_default_prints_summary() -> None:
    r = CliRunner().invoke(main, ["run", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "jobs_completed   3000" in r.output and "avg_jct_s" in r.output


def test_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "res"
    r = CliRunner().invoke(
        main,
        [
            "run",
            "--quiet",
            "--out",
            str(out),
            "--set",
            "scheduler.name=las",
            "--set",
            "workload.limit=300",
        ],
    )
    assert r.exit_code == 0, r.output
    for f in (
        "jobs.parquet",
        "utilization.parquet",
        "summary.json",
        "config.yaml",
        "utilization.png",
    ):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    for key in (
        "jobs_completed",
        "avg_jct_s",
        "p50_jct_s",
        "p99_jct_s",
        "avg_wait_s",
        "makespan_s",
        "gpu_utilization",
        "wall_s",
    ):
        assert key in s
    assert s["jobs_completed"] == 300 and s["scheduler"] == "las"
    import pyarrow.parquet as pq

    t = pq.read_table(out / "jobs.parquet")
    assert t.num_rows == 300
    assert b"clustersim.config_yaml" in t.schema.metadata
    r2 = CliRunner().invoke(main, ["plot", str(out)])
    assert r2.exit_code == 0 and "utilization.png" in r2.output


def test_bad_scenario_is_one_clear_line(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        "name: x\ncluster: {nodes: 2, gpus_per_node: 8, device: H1000}\n"
        "workload: {format: synthetic}\n"
    )
    r = CliRunner().invoke(main, ["run", str(p), "--quiet"])
    assert r.exit_code == 2
    assert "error:" in r.output and "unknown device 'H1000'; did you mean 'H100'?" in r.output


def test_oversized_job_rejected_or_skipped(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("job_id,submit_time,num_gpus,duration\na,0,4,10\nhuge,1,64,10\n")
    p = tmp_path / "s.yaml"
    base = (
        "name: x\ncluster: {nodes: 1, gpus_per_node: 8}\nworkload: {trace: t.csv, format: csv%s}\n"
    )
    p.write_text(base % "")
    r = CliRunner().invoke(main, ["run", str(p), "--quiet"])
    assert r.exit_code == 2 and "job 'huge' asks for 64 devices; the cluster has 8" in r.output
    p.write_text(base % ", oversized: skip")
    r = CliRunner().invoke(main, ["run", str(p), "--quiet", "--json"])
    assert r.exit_code == 0
    s = json.loads(r.output)
    assert s["jobs_skipped"] == 1 and s["jobs_completed"] == 1


def test_trace_and_list_commands() -> None:
    from conftest import SAMPLE

    r = CliRunner().invoke(main, ["trace", str(SAMPLE)])
    assert r.exit_code == 0 and "3000 jobs kept" in r.output
    r = CliRunner().invoke(main, ["list"])
    assert "fifo_backfill" in r.output and "las" in r.output and "H100" in r.output
