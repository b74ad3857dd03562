"""Sweeps: expansion order, content addressing, resume, atomic results, failures, executors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from clustersim.cli import main
from clustersim.errors import ConfigError
from clustersim.results import HOST_COLUMNS, build_rows
from clustersim.sweep import (
    execute_task,
    load_sweep,
    make_sweep,
    run_sweep,
    scenario_key,
    sweep_from_mapping,
)

BASE: dict[str, Any] = {
    "name": "tiny",
    "cluster": {"nodes": 2, "gpus_per_node": 4},
    "workload": {
        "format": "synthetic",
        "synthetic": {"jobs": 30, "arrival_rate": 0.01, "gpu_mix": {1: 0.6, 2: 0.3, 4: 0.1}},
    },
}


def write_sweep(tmp: Path, **extra: Any) -> Path:
    data = {"name": "t", "base": BASE, **extra}
    p = tmp / "sweep.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in HOST_COLUMNS} for r in rows]


def test_expansion_order_and_params(tmp_path: Path) -> None:
    sw = load_sweep(
        write_sweep(
            tmp_path,
            grid={"scheduler.name": ["fifo", "sjf"], "workload.load_scale": [1.0, 2.0]},
            points=[{"scheduler.placement": "first_fit"}, {"scheduler.placement": "pack"}],
            seeds=[5, 7],
        )
    )
    assert len(sw.points) == 2 * 2 * 2 * 2
    assert sw.swept == ["scheduler.placement", "scheduler.name", "workload.load_scale"]
    # points outermost, grid with its last key fastest, seeds innermost
    first = [p.params for p in sw.points[:5]]
    assert first[0] == {
        "scheduler.placement": "first_fit",
        "scheduler.name": "fifo",
        "workload.load_scale": 1.0,
        "seed": 5,
    }
    assert first[1]["seed"] == 7 and first[2]["workload.load_scale"] == 2.0
    assert first[4]["scheduler.name"] == "sjf"
    assert sw.points[8].params["scheduler.placement"] == "pack"
    # every point's scenario really carries its parameters
    for p in sw.points:
        sc = p.task["scenario"]
        assert sc["seed"] == p.params["seed"]
        assert sc["scheduler"]["name"] == p.params["scheduler.name"]
        assert sc["workload"]["load_scale"] == p.params["workload.load_scale"]
    assert len({p.run_id for p in sw.points}) == len(sw.points)


def test_run_id_is_content_address(tmp_path: Path) -> None:
    a = make_sweep(BASE, grid={"scheduler.name": ["fifo"]}, seeds=[3], base_dir=tmp_path)
    b = make_sweep(
        {**BASE, "seed": 3}, points=[{"scheduler.name": "fifo"}], seeds=[3], base_dir=tmp_path / "x"
    )
    assert a.points[0].run_id == b.points[0].run_id  # same resolved scenario, other base_dir
    c = make_sweep(BASE, grid={"scheduler.name": ["fifo"]}, seeds=[4], base_dir=tmp_path)
    assert c.points[0].run_id != a.points[0].run_id


def test_trace_bytes_enter_the_run_id(tmp_path: Path) -> None:
    from clustersim.config import validate_scenario

    trace = tmp_path / "t.csv"
    trace.write_text("job_id,submit_time,num_gpus,duration\na,0,1,10\n")
    data = {"cluster": {"nodes": 1, "gpus_per_node": 2}, "workload": {"trace": "t.csv"}}
    sc = validate_scenario(data, base_dir=str(tmp_path))
    k1 = scenario_key(sc)
    trace.write_text("job_id,submit_time,num_gpus,duration\na,0,1,11\n")
    k2 = scenario_key(sc)
    assert k1["scenario"] == k2["scenario"]
    assert k1["inputs"]["workload.trace"] != k2["inputs"]["workload.trace"]


def test_bad_sweeps_name_the_problem(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: x\ngird:\n  scheduler.name: [fifo]\n")
    with pytest.raises(
        ConfigError, match=r"s.yaml:2: gird: unknown key 'gird'; did you mean 'grid'"
    ):
        load_sweep(p)
    with pytest.raises(ConfigError, match="'seed' cannot be a grid key"):
        sweep_from_mapping({"base": BASE, "grid": {"seed": [1, 2]}})
    with pytest.raises(ConfigError, match=r"point 0 \(scheduler.nme=fifo, seed=0\).*did you mean"):
        sweep_from_mapping({"base": BASE, "grid": {"scheduler.nme": ["fifo"]}})
    with pytest.raises(ConfigError, match="also in 'grid'"):
        sweep_from_mapping(
            {
                "base": BASE,
                "grid": {"scheduler.name": ["fifo"]},
                "points": [{"scheduler.name": "las"}],
            }
        )


def test_failed_point_is_recorded_and_sweep_goes_on(tmp_path: Path) -> None:
    sw = make_sweep(BASE, grid={"scheduler.name": ["fifo", "no_such_policy", "sjf"]})
    rep = run_sweep(sw, tmp_path / "out", executor="serial")
    assert (rep.computed, rep.failed) == (3, 1)
    rows, _ = build_rows(tmp_path / "out")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "unknown scheduler 'no_such_policy'" in rows[1]["error"]
    rec = json.loads((tmp_path / "out" / "failed" / f"{sw.points[1].folder}.json").read_text())
    assert rec["error_type"] == "UnknownNameError" and "Traceback" in rec["traceback"]
    assert rec["params"] == {"scheduler.name": "no_such_policy", "seed": 0}
    # a re-run keeps the finished points and retries only the failed one
    rep2 = run_sweep(sw, tmp_path / "out", executor="serial")
    assert (rep2.reused, rep2.computed, rep2.failed) == (2, 1, 1)


def test_resume_reuses_and_cleans_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sw = make_sweep(BASE, grid={"scheduler.name": ["fifo", "las"]}, seeds=2)
    run_sweep(make_sweep(BASE, grid={"scheduler.name": ["fifo"]}, seeds=2), out, "serial")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    # a kill during a commit leaves a temp folder behind; it is removed on resume
    junk = out / "runs" / ".tmp-deadbeefdeadbeef-1234"
    junk.mkdir()
    (junk / "summary.json").write_text("{")
    rep = run_sweep(sw, out, "serial")
    assert (rep.reused, rep.computed) == (2, 2)
    assert not junk.exists()
    for name, mtime in before.items():
        assert (out / "runs" / name).stat().st_mtime_ns == mtime
    rows, info = build_rows(out)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert info["swept"] == ["scheduler.name"]


def test_pending_points_show_in_the_table(tmp_path: Path) -> None:
    from clustersim.sweep import write_manifest

    out = tmp_path / "out"
    out.mkdir()
    sw = make_sweep(BASE, grid={"scheduler.name": ["fifo", "sjf"]})
    write_manifest(out, sw)
    rows, _ = build_rows(out)
    assert [r["status"] for r in rows] == ["pending", "pending"]
    assert rows[1]["scheduler.name"] == "sjf" and rows[1]["cluster.nodes"] == 2


def test_worker_output_is_independent_of_where_it_runs(tmp_path: Path) -> None:
    sw = make_sweep(BASE, grid={"scheduler.name": ["las"]}, seeds=[1])
    a = execute_task(sw.points[0].task)
    b = execute_task(json.loads(json.dumps(sw.points[0].task)))
    assert a["status"] == b["status"] == "ok"
    assert a["files"]["jobs.parquet"] == b["files"]["jobs.parquet"]
    assert a["files"]["utilization.parquet"] == b["files"]["utilization.parquet"]
    sa, sb = (json.loads(x["files"]["summary.json"]) for x in (a, b))
    sa.pop("wall_s"), sb.pop("wall_s")
    assert sa == sb


def test_local_processes_match_serial(tmp_path: Path) -> None:
    sw = make_sweep(
        BASE, grid={"scheduler.name": ["fifo", "srtf"], "workload.load_scale": [1.0, 3.0]}
    )
    run_sweep(sw, tmp_path / "serial", "serial")
    rep = run_sweep(sw, tmp_path / "local", "local", workers=2)
    assert rep.executor == "local:2" and rep.computed == 4
    a, _ = build_rows(tmp_path / "serial")
    b, _ = build_rows(tmp_path / "local")
    assert comparable(a) == comparable(b)
    for p in sw.points:
        for f in ("jobs.parquet", "utilization.parquet", "config.yaml"):
            x = (tmp_path / "serial" / "runs" / p.folder / f).read_bytes()
            assert x == (tmp_path / "local" / "runs" / p.folder / f).read_bytes()


def point_fn(params: dict[str, Any]) -> dict[str, Any]:
    """A function sweep's point: a deterministic number from its parameters."""
    import numpy as np

    rng = np.random.default_rng(params["seed"])
    x = float(params["model"]["scale"]) * float(rng.random())
    return {"value": x, "ettr": 0.9, "lost_s": {"restart": 10.0 * x}, "tables": {"t": {"a": [x]}}}


def test_function_sweep(tmp_path: Path) -> None:
    sw = make_sweep(
        {"model": {"scale": 1.0}},
        function="test_sweep:point_fn",
        grid={"model.scale": [1.0, 10.0]},
        seeds=2,
    )
    rep = run_sweep(sw, tmp_path / "out", "serial")
    assert rep.failed == 0
    rows, info = build_rows(tmp_path / "out")
    assert info["kind"] == "function" and [r["model.scale"] for r in rows] == [1, 1, 10, 10]
    import numpy as np

    assert rows[3]["value"] == pytest.approx(10.0 * np.random.default_rng(1).random())
    assert rows[3]["lost_s.restart"] == pytest.approx(10.0 * rows[3]["value"])
    assert (tmp_path / "out" / "runs" / sw.points[0].folder / "t.parquet").exists()


def test_one_sweep_at_a_time(tmp_path: Path) -> None:
    from clustersim.sweep import _Lock

    out = tmp_path / "out"
    out.mkdir()
    with _Lock(out), pytest.raises(ConfigError, match="another sweep is writing"):
        run_sweep(make_sweep(BASE), out, "serial")


def test_cli_sweep_results_dry_run(tmp_path: Path) -> None:
    spec = write_sweep(tmp_path, grid={"scheduler.name": ["fifo", "sjf"]}, seeds=2)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "4 points" in r.output and r.output.count("to run") == 4
    r = CliRunner().invoke(
        main, ["sweep", str(spec), "--out", str(out), "--executor", "serial", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert "4 computed, 0 reused, 0 failed" in r.output
    r = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out), "--quiet"])
    assert "0 computed, 4 reused" in r.output
    r = CliRunner().invoke(main, ["results", str(out), "--format", "csv"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith("point,status,scheduler.name,seed,jobs_completed")
    assert len(lines) == 5 and lines[3].startswith("2,ok,sjf,0,30,")
    r = CliRunner().invoke(main, ["results", str(out), "--columns", "point,nope"])
    assert r.exit_code == 2 and "unknown column(s) nope" in r.output


def test_cli_failed_points_exit_1(tmp_path: Path) -> None:
    spec = write_sweep(tmp_path, grid={"scheduler.name": ["fifo", "bogus"]})
    r = CliRunner().invoke(
        main, ["sweep", str(spec), "--out", str(tmp_path / "o"), "--executor", "serial", "--quiet"]
    )
    assert r.exit_code == 1
    assert "point 1 failed: unknown scheduler 'bogus'" in r.output
    assert "re-run to retry" in r.output


def test_unguarded_script_gets_a_clear_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from clustersim.sweep import make_sweep, run_sweep\n"
        f"sw = make_sweep({BASE!r}, grid={{'scheduler.name': ['fifo', 'sjf']}})\n"
        f"rep = run_sweep(sw, {str(tmp_path / 'o')!r}, 'local', workers=1)\n"
        "print('FAILED', rep.failed)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert "FAILED 2" in r.stdout
    assert "if __name__ == '__main__':" in r.stderr
