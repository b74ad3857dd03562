"""Figures drawn from a results folder (never from live simulation objects).

matplotlib is imported lazily with the Agg backend, so importing clustersim
never needs a display. Colours come from the Okabe-Ito colour-blind-safe
palette; every axis carries its unit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _time_axis(t: np.ndarray) -> tuple[np.ndarray, str]:
    span = float(t[-1] - t[0]) if len(t) else 0.0
    if span > 3 * 86400:
        return t / 86400.0, "simulated time (days)"
    if span > 3 * 3600:
        return t / 3600.0, "simulated time (hours)"
    return t, "simulated time (s)"


def plot_utilization(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Allocated devices and queue length over time from ``results_dir``; returns the PNG path."""
    from clustersim.api import read_table

    d = Path(results_dir)
    src = d / "utilization.parquet"
    if not src.exists():
        src = d / "utilization.csv"
    util = read_table(src)
    summary = json.loads((d / "summary.json").read_text())
    t, label = _time_axis(util["time"] - util["time"][0])
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    cap = summary.get("devices")
    ax1.step(
        t,
        util["allocated_devices"],
        where="post",
        color=OKABE_ITO[0],
        lw=1.0,
        label="allocated devices",
    )
    if cap:
        ax1.axhline(cap, color=OKABE_ITO[7], ls="--", lw=0.8, label=f"capacity ({cap})")
    ax1.set_ylabel("devices")
    util_pct = 100 * float(summary.get("gpu_utilization") or 0.0)
    ax1.set_title(
        f"{summary.get('scenario')}: {summary.get('scheduler')} "
        f"({summary.get('placement')}) — utilization {util_pct:.1f}%"
    )
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.step(t, util["queue_length"], where="post", color=OKABE_ITO[3], lw=1.0)
    ax2.set_ylabel("waiting jobs")
    ax2.set_xlabel(label)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(out) if out is not None else d / "utilization.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_jct_cdf(results_dirs: dict[str, str | Path], out: str | Path) -> Path:
    """JCT CDFs of several runs (label -> results folder) on one log-x axis."""
    from clustersim.api import read_table

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, d) in enumerate(results_dirs.items()):
        p = Path(d)
        jobs = read_table(p / "jobs.parquet" if (p / "jobs.parquet").exists() else p / "jobs.csv")
        done = np.array([s == "done" for s in jobs["state"]])
        x = np.sort(jobs["jct"][done].astype(float))
        y = np.arange(1, len(x) + 1) / max(len(x), 1)
        ax.step(x, y, where="post", color=OKABE_ITO[i % len(OKABE_ITO)], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("JCT CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
