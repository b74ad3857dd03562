"""The result store: table contents and order, pandas loading, statistics by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from clustersim.cli import main
from clustersim.errors import ConfigError
from clustersim.results import (
    build_table,
    flatten,
    format_table,
    group_stats,
    load,
    load_table,
    mean_ci,
    t_critical,
    table_info,
)
from clustersim.sweep import make_sweep, run_sweep

BASE: dict[str, Any] = {
    "name": "res",
    "cluster": {"nodes": 2, "gpus_per_node": 4},
    "workload": {"format": "synthetic", "synthetic": {"jobs": 25, "arrival_rate": 0.01}},
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("res") / "out"
    sw = make_sweep(BASE, grid={"scheduler.name": ["sjf", "fifo"]}, seeds=[3, 1, 2])
    run_sweep(sw, out, "serial")
    return out


def test_t_critical_and_ci_by_hand() -> None:
    assert t_critical(1) == 12.7062 and t_critical(2) == 4.3027
    assert t_critical(35) == t_critical(30)  # between table rows: the next smaller df
    assert t_critical(10_000) == 1.96
    m, s, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert (m, s) == (2.0, 1.0)
    assert hi - m == pytest.approx(4.3027 / math.sqrt(3))
    assert lo == pytest.approx(2 * m - hi)
    m1, s1, lo1, hi1 = mean_ci([5.0])
    assert m1 == lo1 == hi1 == 5.0 and math.isnan(s1)


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": []}) == {
        "a.b": 1,
        "a.c.d": "[1, 2]",
        "e": None,
        "f": None,
    }


def test_table_rows_columns_and_order(sweep_dir: Path) -> None:
    t = load_table(sweep_dir)
    assert t.num_rows == 6
    names = t.column_names
    assert names[:5] == ["point", "run_id", "status", "scheduler.name", "seed"]
    for c in ("avg_jct_s", "gpu_utilization", "cluster.nodes", "workload.synthetic.jobs"):
        assert c in names
    for c in ("clustersim_version", "git_rev", "wall_s", "host"):
        assert c in names
    rows = t.to_pylist()
    assert [r["point"] for r in rows] == list(range(6))
    assert [r["seed"] for r in rows] == [3, 1, 2, 3, 1, 2]
    assert [r["scheduler.name"] for r in rows] == ["sjf"] * 3 + ["fifo"] * 3
    assert all(r["jobs_completed"] == 25 and r["cluster.nodes"] == 2 for r in rows)
    assert table_info(t) == {"name": "sweep", "kind": "scenario", "swept": ["scheduler.name"]}
    # the stored table is the same as the one rebuilt from the run folders
    stored = load_table(sweep_dir / "results.parquet")
    assert stored.drop_columns(["wall_s"]).equals(t.drop_columns(["wall_s"]))


def test_metric_values_come_from_each_run(sweep_dir: Path) -> None:
    import json

    t = build_table(sweep_dir).to_pylist()
    for r in t:
        s = json.loads((sweep_dir / "runs" / r["run_id"] / "summary.json").read_text())
        assert r["avg_jct_s"] == s["avg_jct_s"] and r["makespan_s"] == s["makespan_s"]
        assert r["engine_wall_s"] == s["wall_s"]


def test_load_as_dataframe(sweep_dir: Path) -> None:
    pytest.importorskip("pandas")
    df = load(sweep_dir)
    assert list(df["point"]) == list(range(6))
    means = df.groupby("scheduler.name")["avg_jct_s"].mean()
    rows = build_table(sweep_dir).to_pylist()
    sjf = [r["avg_jct_s"] for r in rows if r["scheduler.name"] == "sjf"]
    assert means["sjf"] == pytest.approx(sum(sjf) / 3)


def test_group_stats_match_hand_computation(sweep_dir: Path) -> None:
    rows = build_table(sweep_dir).to_pylist()
    stats = group_stats(rows, "avg_jct_s", ["scheduler.name"])
    assert [g.label for g in stats] == ["sjf", "fifo"]
    vals = np.array([r["avg_jct_s"] for r in rows if r["scheduler.name"] == "fifo"])
    g = stats[1]
    assert g.n == 3 and g.mean == pytest.approx(vals.mean())
    half = 4.3027 * vals.std(ddof=1) / math.sqrt(3)
    assert g.ci_high == pytest.approx(vals.mean() + half)


def test_single_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main, ["run", "--quiet", "--no-plot", "--out", str(out), "--set", "workload.limit=50"]
    )
    assert r.exit_code == 0, r.output
    t = load_table(out)
    assert t.num_rows == 1
    row = t.to_pylist()[0]
    assert row["status"] == "ok" and row["jobs_completed"] == 50
    assert row["scheduler.name"] == "fifo_backfill" and row["clustersim_version"] == "0.1.0"
    r = CliRunner().invoke(main, ["results", str(out)])
    assert r.exit_code == 0 and "jobs_completed" in r.output


def test_format_table_and_errors(sweep_dir: Path, tmp_path: Path) -> None:
    t = load_table(sweep_dir)
    text = format_table(t, ["point", "scheduler.name", "jobs_completed"])
    lines = text.splitlines()
    assert lines[0].split() == ["point", "scheduler.name", "jobs_completed"]
    assert lines[2].split() == ["0", "sjf", "25"]
    with pytest.raises(ConfigError, match="not a sweep folder"):
        load_table(tmp_path)
