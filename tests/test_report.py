"""Figures and the HTML report: files exist, plotted values equal tabled values, the page
renders in headless Chromium with every figure shown (skipped without a chromium binary).

Chromium on Debian/Ubuntu: ``apt-get install -y chromium``. The screenshot goes to
``<pytest tmp>/test-artifacts/report.png``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clustersim.api import read_table
from clustersim.plots import (
    _layout,
    draw_jct_cdf,
    draw_metric_bars,
    draw_occupancy,
    draw_timeseries,
    job_intervals,
    lorenz,
    node_fragmentation,
    plot_sweep,
    step_at,
)
from clustersim.report import write_report
from clustersim.results import build_rows
from clustersim.sweep import make_sweep, run_sweep

BASE: dict[str, Any] = {
    "name": "rep",
    "cluster": {"nodes": 3, "gpus_per_node": 4},
    "workload": {
        "format": "synthetic",
        "synthetic": {"jobs": 60, "arrival_rate": 0.005, "gpu_mix": {1: 0.5, 2: 0.3, 4: 0.2}},
    },
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "out"
    sw = make_sweep(
        BASE,
        grid={"scheduler.name": ["fifo", "sjf"], "workload.load_scale": [1.0, 2.0]},
        seeds=2,
    )
    run_sweep(sw, out, "serial")
    return out


@pytest.fixture(scope="module")
def one_seed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep1") / "out"
    run_sweep(make_sweep(BASE, grid={"scheduler.name": ["fifo", "sjf"]}), out, "serial")
    return out


def test_plot_sweep_writes_every_figure(sweep_dir: Path) -> None:
    figs = plot_sweep(sweep_dir, formats=("png", "svg", "pdf"))
    names = [f.name for f in figs]
    assert names == [
        "metrics",
        "jct_cdf",
        "utilization",
        "queue_length",
        "occupancy",
        "fragmentation",
        "lorenz",
    ]
    for f in figs:
        assert [p.suffix for p in f.files] == [".png", ".svg", ".pdf"]
        for p in f.files:
            assert p.stat().st_size > 1000, p
        assert f.files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((sweep_dir / "plots" / "figures.json").read_text())
    assert [m["name"] for m in manifest] == names


def test_metric_bars_equal_table_means(sweep_dir: Path) -> None:
    rows, _ = build_rows(sweep_dir)
    by = ["scheduler.name", "workload.load_scale"]
    fig, data = draw_metric_bars(rows, ["avg_jct_s", "gpu_utilization"], by, "scheduler.name")
    ax_jct, ax_util = fig.axes[:2]
    div = data["avg_jct_s"]["divisor"]
    for ax, metric, d in ((ax_jct, "avg_jct_s", div), (ax_util, "gpu_utilization", 0.01)):
        heights = [p.get_height() for p in ax.patches]
        expected = []
        for sched in ("fifo", "sjf"):
            for ls in (1.0, 2.0):
                vals = [
                    r[metric]
                    for r in rows
                    if r["scheduler.name"] == sched and r["workload.load_scale"] == ls
                ]
                expected.append(float(np.mean(vals)) / d)
        assert heights == pytest.approx(expected, rel=1e-12)
    assert "(%)" in ax_util.get_ylabel() and "JCT (" in ax_jct.get_ylabel()


def test_one_seed_lines_are_the_recorded_series(one_seed_dir: Path) -> None:
    lay, rows, _ = _layout(one_seed_dir)
    run = lay.runs[0]
    util = read_table(run.path / "utilization.parquet")
    fig, data = draw_timeseries(lay, "allocated_devices", "allocated (%)", "u")
    line = fig.axes[0].get_lines()[0]
    div = data["divisor"]
    t = util["time"] - util["time"][0]
    np.testing.assert_allclose(line.get_xdata(), t / div)
    np.testing.assert_allclose(line.get_ydata(), 100 * util["allocated_devices"] / 12)
    # the time-average of the plotted step series is the tabled utilization
    y = np.asarray(line.get_ydata()) / 100
    avg = float(np.sum(y[:-1] * np.diff(t)) / (t[-1] - t[0]))
    assert avg == pytest.approx(rows[0]["gpu_utilization"], rel=1e-9)
    fig, data = draw_jct_cdf(lay)
    jobs = read_table(run.path / "jobs.parquet")
    done = np.sort(jobs["jct"][jobs["state"] == "done"])
    cdf = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(np.asarray(cdf.get_xdata()) * data["divisor"], done)
    assert cdf.get_ydata()[-1] == 1.0


def test_occupancy_matches_allocation(one_seed_dir: Path) -> None:
    lay, _, _ = _layout(one_seed_dir)
    run = lay.runs[0]  # fifo: no preemption, whole devices -> exact occupancy
    assert job_intervals(run.path).exact.all()
    _, data = draw_occupancy([("fifo", run)], bins=300)
    panel = data["panels"]["fifo"]
    util = read_table(run.path / "utilization.parquet")
    t0 = util["time"][0]
    times = np.asarray(panel["times"]) * panel["divisor"]
    alloc = step_at(util["time"] - t0, util["allocated_devices"], times)
    busy = np.asarray(panel["busy_devices"])
    close = np.isclose(
        times[:, None], (util["time"] - t0)[None, :], atol=1e-6 * (util["time"][-1] - t0)
    ).any(axis=1)
    np.testing.assert_array_equal(busy[~close], alloc[~close])


def test_fragmentation_and_lorenz_by_hand() -> None:
    # two nodes of 4: node 0 has devices 0,1 busy; node 1 idle -> 2 of 6 free are stranded
    owner = np.array([[0], [1], [-1], [-1], [-1], [-1], [-1], [-1]])
    assert node_fragmentation(owner, [0, 4], [4, 4]).tolist() == [2 / 6]
    full = np.zeros((8, 1), dtype=int)
    assert node_fragmentation(full, [0, 4], [4, 4]).tolist() == [0.0]
    _p, lz, g = lorenz(np.array([0.0, 0.0, 1.0, 1.0]), points=5)
    assert lz.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert g == pytest.approx(0.5)
    assert lorenz(np.array([3.0, 3.0, 3.0]))[2] == pytest.approx(0.0)


def test_reliability_bars_when_runs_have_ettr(tmp_path: Path) -> None:
    sw = make_sweep(
        {"model": {"scale": 1.0}},
        function="test_sweep:point_fn",
        grid={"model.scale": [1.0, 2.0]},
        seeds=2,
    )
    run_sweep(sw, tmp_path / "f", "serial")
    figs = plot_sweep(tmp_path / "f", formats=("png",))
    assert [f.name for f in figs] == ["metrics", "reliability"]
    rel = figs[1].data
    assert rel["ettr"]["mean_percent"] == pytest.approx([90.0, 90.0])
    rows, _ = build_rows(tmp_path / "f")
    restart = [
        np.mean([r["lost_s.restart"] for r in rows if r["model.scale"] == s]) for s in (1, 2)
    ]
    assert rel["lost"]["parts"]["lost_s.restart"] == pytest.approx([x / 3600 for x in restart])


def test_report_is_self_contained(sweep_dir: Path) -> None:
    page_path = write_report(sweep_dir)
    page = page_path.read_text()
    assert page.count("<img ") == 7 and page.count("data:image/png;base64,") == 7
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert "Summary per condition" in page and "Every point (resolved)" in page
    assert page.count("<details><summary>point ") == 8  # one resolved config per point
    assert "fifo, load_scale=2.0" in page


CHROMIUM = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(sweep_dir: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    assert CHROMIUM is not None
    page = write_report(sweep_dir)
    artefacts = tmp_path / "test-artifacts"
    artefacts.mkdir()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-figures-rendered="7/7"' in dom.stdout, dom.stderr[-2000:]
    assert dom.stdout.count('data-rendered="yes"') == 7
    shot = artefacts / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 50_000
    img = mpimg.imread(shot)[..., :3]
    # Okabe-Ito blue (#0072B2) bars and lines are on screen, not just text
    blue = np.all(np.abs(img - np.array([0, 0x72, 0xB2]) / 255) < 0.04, axis=-1)
    assert blue.sum() > 2000
