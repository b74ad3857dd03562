"""Figures drawn from a results folder (never from live simulation objects).

matplotlib is imported lazily with the Agg backend, so importing clustersim
never needs a display. Colours come from the Okabe-Ito colour-blind-safe
palette; every axis carries its unit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


# =========================================================================== sweeps
#
# Figures of a sweep folder (or of one results folder, as a one-point sweep).
# Conditions are the swept values other than the seed. The colour ("hue") is
# the scheduler when it is swept, else the first swept key; the remaining
# swept keys make one panel per combination. Lines and bars are means across
# seeds with Student-t 95 % confidence intervals (clustersim.results.mean_ci).

FIGURE_FORMATS = ("png", "svg")
"""File formats :func:`plot_sweep` writes by default (``pdf`` is also accepted)."""

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": None,  # set in _style (needs matplotlib's cycler)
    "svg.fonttype": "path",
    "figure.dpi": 100,
}
LINESTYLES = ("-", "--", ":", "-.")
IDLE_COLOUR = "#E8E8E8"
GRID_POINTS = 400
"""Sample points of time series (utilization, queue, fragmentation) averaged across seeds."""


@dataclass
class FigureInfo:
    """A figure written by :func:`plot_sweep`: files, caption and the values it plots."""

    name: str
    title: str
    caption: str
    files: list[Path]
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    point: int
    seed: Any
    hue: Any
    facet: tuple[Any, ...]
    path: Path
    row: dict[str, Any]
    _jobs: dict[str, np.ndarray] | None = None
    _util: dict[str, np.ndarray] | None = None

    def jobs(self) -> dict[str, np.ndarray]:
        if self._jobs is None:
            from clustersim.api import read_table

            p = self.path / "jobs.parquet"
            self._jobs = read_table(p if p.exists() else self.path / "jobs.csv")
        return self._jobs

    def util(self) -> dict[str, np.ndarray]:
        if self._util is None:
            from clustersim.api import read_table

            p = self.path / "utilization.parquet"
            self._util = read_table(p if p.exists() else self.path / "utilization.csv")
        return self._util

    def has_tables(self) -> bool:
        return any((self.path / f).exists() for f in ("jobs.parquet", "jobs.csv")) and any(
            (self.path / f).exists() for f in ("utilization.parquet", "utilization.csv")
        )

    def capacity(self) -> float:
        dev = self.row.get("devices")
        return float(dev) if dev else float(np.max(self.util()["allocated_devices"]) or 1.0)


@dataclass
class _Layout:
    hue_key: str | None
    facet_keys: list[str]
    hues: list[Any]
    facets: list[tuple[Any, ...]]
    runs: list[_Run]

    def hue_label(self, hue: Any) -> str:
        if self.hue_key is None:
            return "all runs"
        from clustersim.results import condition_label

        return condition_label((hue,), [self.hue_key])

    def facet_label(self, facet: tuple[Any, ...]) -> str:
        from clustersim.results import condition_label

        return condition_label(facet, self.facet_keys) if self.facet_keys else ""

    def style(self, hue: Any) -> dict[str, Any]:
        i = self.hues.index(hue)
        return {
            "color": OKABE_ITO[i % len(OKABE_ITO)],
            "ls": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
        }

    def select(self, facet: tuple[Any, ...], hue: Any) -> list[_Run]:
        return [r for r in self.runs if r.facet == facet and r.hue == hue]


def _style() -> Any:
    plt = _plt()
    from cycler import cycler

    style = dict(STYLE)
    style["axes.prop_cycle"] = cycler(color=OKABE_ITO)
    return plt.rc_context(style)


def _layout(path: Path) -> tuple[_Layout, list[dict[str, Any]], dict[str, Any]]:
    from clustersim.results import build_rows, condition_keys, runs

    rows, info = build_rows(path)
    by = condition_keys(info["swept"])
    hue_key = "scheduler.name" if "scheduler.name" in by else (by[0] if by else None)
    facet_keys = [k for k in by if k != hue_key]
    row_of = {int(r["point"]): r for r in rows}
    out: list[_Run] = []
    hues: list[Any] = []
    facets: list[tuple[Any, ...]] = []
    for ref in runs(path):
        row = row_of[ref.point]
        hue = row.get(hue_key) if hue_key else None
        facet = tuple(row.get(k) for k in facet_keys)
        if hue not in hues:
            hues.append(hue)
        if facet not in facets:
            facets.append(facet)
        if ref.status == "ok":
            out.append(_Run(ref.point, row.get("seed"), hue, facet, ref.path, row))
    return _Layout(hue_key, facet_keys, hues, facets, out), rows, info


def _save(fig: Any, out_dir: Path, name: str, formats: tuple[str, ...]) -> list[Path]:
    paths = []
    for fmt in formats:
        p = out_dir / f"{name}.{fmt}"
        fig.savefig(p, dpi=150 if fmt == "png" else None, bbox_inches="tight")
        paths.append(p)
    _plt().close(fig)
    return paths


TIME_UNITS = (("s", 1.0), ("min", 60.0), ("h", 3600.0), ("days", 86400.0))


def time_unit(seconds: float) -> tuple[str, float]:
    """A readable unit for durations around ``seconds``: (name, seconds per unit)."""
    if not np.isfinite(seconds) or seconds < 120:
        return TIME_UNITS[0]
    if seconds < 2 * 3600:
        return TIME_UNITS[1]
    if seconds < 3 * 86400:
        return TIME_UNITS[2]
    return TIME_UNITS[3]


def _panels(n: int, width: float = 4.6, height: float = 3.3, sharey: bool = False) -> Any:
    plt = _plt()
    cols = 2 if n == 4 else min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=sharey
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend(fig: Any, axes: list[Any], title: str | None) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, title=title, loc="best", frameon=False)


# --------------------------------------------------------------------------- summary bars


METRIC_LABELS: dict[str, tuple[str, str]] = {
    "avg_jct_s": ("mean JCT", "time"),
    "p50_jct_s": ("median JCT", "time"),
    "p99_wait_s": ("p99 wait", "time"),
    "avg_queue_delay_s": ("mean queueing delay", "time"),
    "jobs_completed": ("jobs completed", "count"),
    "p99_jct_s": ("p99 JCT", "time"),
    "avg_wait_s": ("mean wait", "time"),
    "makespan_s": ("makespan", "time"),
    "gpu_utilization": ("device utilization", "percent"),
    "availability": ("availability", "percent"),
    "ettr": ("ETTR", "percent"),
    "preemptions": ("preemptions", "count"),
}


def metric_axis(metric: str, values: list[float]) -> tuple[str, float]:
    """Axis label (with unit) and the divisor that turns table values into plotted ones."""
    label, kind = METRIC_LABELS.get(metric, (metric, "value"))
    if kind == "time":
        finite = [abs(v) for v in values if np.isfinite(v)]
        unit, div = time_unit(max(finite) if finite else 0.0)
        return f"{label} ({unit})", div
    if kind == "percent":
        return f"{label} (%)", 0.01
    if kind == "count":
        return f"{label} (count)", 1.0
    unit = ""
    for suffix, u in (("_s", "s"), ("_hours", "h"), ("_bytes", "bytes"), ("_w", "W")):
        if metric.endswith(suffix):
            unit = u
    return (f"{label} ({unit})" if unit else f"{label} (value)"), 1.0


def draw_metric_bars(
    rows: list[dict[str, Any]], metrics: list[str], by: list[str], hue_key: str | None
) -> tuple[Any, dict[str, Any]]:
    """Bars of each metric per condition (mean across seeds, 95 % CI whiskers)."""
    from clustersim.results import group_stats

    plt = _plt()
    fig, axes = _panels(len(metrics), width=max(4.2, 0.55 * 10 + 1.5), height=3.4)
    data: dict[str, Any] = {}
    hue_vals: list[Any] = []
    for r in rows:
        h = r.get(hue_key) if hue_key else None
        if h not in hue_vals:
            hue_vals.append(h)
    for ax, metric in zip(axes, metrics, strict=True):
        stats = group_stats(rows, metric, by)
        label, div = metric_axis(metric, [s.mean for s in stats])
        x = np.arange(len(stats))
        heights = np.array([s.mean / div for s in stats])
        lo = np.array([s.ci_low / div for s in stats])
        hi = np.array([s.ci_high / div for s in stats])
        colours = []
        for s in stats:
            h = s.key[by.index(hue_key)] if hue_key in by else None
            colours.append(OKABE_ITO[hue_vals.index(h) % len(OKABE_ITO)] if h in hue_vals else "k")
        err = np.vstack([heights - lo, hi - heights])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.bar(x, heights, color=colours, yerr=err, capsize=3, ecolor="#333333")
        ax.set_xticks(
            x,
            [s.label for s in stats],
            rotation=30 if len(stats) > 3 else 0,
            ha="right" if len(stats) > 3 else "center",
        )
        ax.set_ylabel(label)
        if np.all(heights[np.isfinite(heights)] >= 0):
            ax.set_ylim(bottom=0)  # whiskers of non-negative metrics are cut at zero
        ax.set_title(METRIC_LABELS.get(metric, (metric, ""))[0])
        ax.grid(axis="x", visible=False)
        data[metric] = {
            "label": label,
            "divisor": div,
            "conditions": [s.label for s in stats],
            "mean": heights.tolist(),
            "ci_low": lo.tolist(),
            "ci_high": hi.tolist(),
            "n": [s.n for s in stats],
        }
    fig.suptitle("Summary metrics per condition (mean across seeds, whiskers: 95 % CI)")
    fig.tight_layout()
    del plt
    return fig, data


# --------------------------------------------------------------------------- JCT CDF


def _ecdf_on(x_sorted: np.ndarray, grid: np.ndarray) -> np.ndarray:
    n = len(x_sorted)
    if n == 0:
        return np.full(len(grid), np.nan)
    return np.searchsorted(x_sorted, grid, side="right") / n


def _done(jobs: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([s == "done" for s in jobs["state"]], dtype=bool)


def draw_jct_cdf(lay: _Layout) -> tuple[Any, dict[str, Any]]:
    """JCT CDFs per condition: exact steps for one seed, mean and 95 % CI band for several."""
    from clustersim.results import t_critical

    all_jct = [r.jobs()["jct"][_done(r.jobs())].astype(float) for r in lay.runs]
    pooled = np.concatenate(all_jct) if all_jct else np.array([])
    pos = pooled[pooled > 0]
    unit, div = time_unit(float(np.median(pos)) if len(pos) else 0.0)
    fig, axes = _panels(len(lay.facets))
    data: dict[str, Any] = {"unit": unit, "divisor": div, "panels": {}}
    for ax, facet in zip(axes, lay.facets, strict=True):
        panel: dict[str, Any] = {}
        for hue in lay.hues:
            runs = lay.select(facet, hue)
            if not runs:
                continue
            xs = [np.sort(r.jobs()["jct"][_done(r.jobs())].astype(float)) for r in runs]
            st = lay.style(hue)
            name = lay.hue_label(hue)
            if len(runs) == 1:
                x = xs[0] / div
                y = np.arange(1, len(x) + 1) / max(len(x), 1)
                ax.step(x, y, where="post", label=name, lw=1.4, **st)
                panel[name] = {"x": x.tolist(), "y": y.tolist(), "n": 1}
                continue
            lo_x = min(float(v[v > 0].min()) for v in xs if (v > 0).any()) if len(pos) else 1.0
            hi_x = max(float(v.max()) for v in xs if len(v))
            grid = np.geomspace(lo_x, max(hi_x, lo_x * 1.0001), GRID_POINTS)
            ys = np.vstack([_ecdf_on(v, grid) for v in xs])
            n = ys.shape[0]
            mean = ys.mean(axis=0)
            half = t_critical(n - 1) * ys.std(axis=0, ddof=1) / np.sqrt(n)
            ax.step(grid / div, mean, where="post", label=f"{name} (n={n})", lw=1.4, **st)
            ax.fill_between(
                grid / div,
                np.clip(mean - half, 0, 1),
                np.clip(mean + half, 0, 1),
                step="post",
                color=st["color"],
                alpha=0.15,
                lw=0,
            )
            panel[name] = {"x": (grid / div).tolist(), "y": mean.tolist(), "n": n}
        ax.set_xscale("log")
        ax.set_xlabel(f"job completion time ({unit}, log scale)")
        ax.set_ylabel("fraction of completed jobs")
        ax.set_ylim(0, 1.02)
        ax.set_title(lay.facet_label(facet) or "JCT CDF")
        data["panels"][lay.facet_label(facet) or "all"] = panel
    _legend(fig, axes, lay.hue_key)
    fig.suptitle(
        "Job completion time CDF" + (" (bands: 95 % CI across seeds)" if _multi(lay) else "")
    )
    fig.tight_layout()
    return fig, data


def _multi(lay: _Layout) -> bool:
    return any(len(lay.select(f, h)) > 1 for f in lay.facets for h in lay.hues)


# --------------------------------------------------------------------------- time series


def step_at(t: np.ndarray, v: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Value of the step function (``v[i]`` on ``[t[i], t[i+1])``) at each grid time."""
    idx = np.searchsorted(t, grid, side="right") - 1
    out = v[np.clip(idx, 0, len(v) - 1)].astype(float)
    out[idx < 0] = np.nan
    return out


def _series(run: _Run, column: str) -> tuple[np.ndarray, np.ndarray]:
    u = run.util()
    t = u["time"].astype(float) - float(u["time"][0])
    v = u[column].astype(float)
    if column == "allocated_devices":
        v = 100.0 * v / run.capacity()
    return t, v


def draw_timeseries(
    lay: _Layout, column: str, ylabel: str, title: str
) -> tuple[Any, dict[str, Any]]:
    """A utilization-table column over time per condition (exact steps for one seed)."""
    from clustersim.results import t_critical

    span = max((float(_series(r, column)[0][-1]) for r in lay.runs), default=0.0)
    unit, div = time_unit(span)
    fig, axes = _panels(len(lay.facets), width=5.2)
    data: dict[str, Any] = {"unit": unit, "divisor": div, "panels": {}}
    for ax, facet in zip(axes, lay.facets, strict=True):
        panel: dict[str, Any] = {}
        for hue in lay.hues:
            runs = lay.select(facet, hue)
            if not runs:
                continue
            st = lay.style(hue)
            name = lay.hue_label(hue)
            if len(runs) == 1:
                t, v = _series(runs[0], column)
                ax.step(t / div, v, where="post", label=name, lw=1.0, **st)
                panel[name] = {"t": (t / div).tolist(), "y": v.tolist(), "n": 1}
                continue
            end = max(float(_series(r, column)[0][-1]) for r in runs)
            grid = np.linspace(0.0, end, GRID_POINTS)
            ys = np.vstack([step_at(*_series(r, column), grid) for r in runs])
            # a run that already ended contributes its final value (0 for allocation)
            ys = np.where(np.isnan(ys), 0.0, ys)
            for i, r in enumerate(runs):
                t_end = float(_series(r, column)[0][-1])
                ys[i, grid > t_end] = 0.0
            n = ys.shape[0]
            mean = ys.mean(axis=0)
            half = t_critical(n - 1) * ys.std(axis=0, ddof=1) / np.sqrt(n)
            ax.plot(grid / div, mean, label=f"{name} (n={n})", lw=1.2, **st)
            ax.fill_between(
                grid / div, mean - half, mean + half, color=st["color"], alpha=0.15, lw=0
            )
            panel[name] = {"t": (grid / div).tolist(), "y": mean.tolist(), "n": n}
        ax.set_xlabel(f"simulated time ({unit})")
        ax.set_ylabel(ylabel)
        if column == "allocated_devices":
            ax.set_ylim(0, 105)
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(lay.facet_label(facet) or title)
        data["panels"][lay.facet_label(facet) or "all"] = panel
    _legend(fig, axes, lay.hue_key)
    fig.suptitle(title + (" (bands: 95 % CI across seeds)" if _multi(lay) else ""))
    fig.tight_layout()
    return fig, data


# --------------------------------------------------------------------------- occupancy


@dataclass
class Intervals:
    """Who held which devices when: one entry per (job, run segment).

    ``exact`` is False for a preempted job when only its first start, end and
    last devices are recorded (its segments are then approximated by one span).
    """

    job: np.ndarray  # job row index
    start: np.ndarray
    end: np.ndarray
    devices: list[np.ndarray]
    exact: np.ndarray
    job_ids: list[str]
    run_end: float


def job_intervals(run_dir: str | Path) -> Intervals:
    """Device-holding intervals of a run folder (``segments.parquet`` when the run has one)."""
    from clustersim.api import read_table

    d = Path(run_dir)
    jobs = read_table(d / "jobs.parquet" if (d / "jobs.parquet").exists() else d / "jobs.csv")
    util = read_table(
        d / "utilization.parquet" if (d / "utilization.parquet").exists() else d / "utilization.csv"
    )
    run_end = float(util["time"][-1])
    ids = [str(x) for x in jobs["job_id"]]
    seg = d / "segments.parquet"
    if seg.exists():
        s = read_table(seg)
        row = {j: i for i, j in enumerate(ids)}
        job = np.array([row[str(j)] for j in s["job_id"]], dtype=np.int64)
        end = np.where(np.isfinite(s["end"]), s["end"], run_end).astype(float)
        devs = [np.asarray(x, dtype=np.int64) for x in s["devices"]]
        return Intervals(
            job, s["start"].astype(float), end, devs, np.ones(len(job), bool), ids, run_end
        )
    start = jobs["first_start"].astype(float)
    end = np.where(np.isfinite(jobs["end"]), jobs["end"], run_end).astype(float)
    ok = np.isfinite(start) & (end > start)
    idx = np.flatnonzero(ok)
    devs = [np.asarray(jobs["devices"][i], dtype=np.int64) for i in idx]
    exact = jobs["preemptions"][idx] == 0
    if "failures" in jobs:
        exact &= jobs["failures"][idx] == 0
    return Intervals(idx, start[idx], end[idx], devs, exact, ids, run_end)


def occupancy_matrix(
    iv: Intervals, num_devices: int, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(job index or -1, state) per device and sample time; state 0 idle, 1 exact, 2 approx.

    Approximate spans are drawn first so exactly known segments win where they overlap.
    """
    owner = np.full((num_devices, len(times)), -1, dtype=np.int64)
    state = np.zeros((num_devices, len(times)), dtype=np.int8)
    order = np.argsort(iv.exact, kind="stable")  # approximate (False) first
    for k in order:
        c0 = int(np.searchsorted(times, iv.start[k], side="left"))
        c1 = int(np.searchsorted(times, iv.end[k], side="left"))
        if c1 <= c0:
            continue
        devs = iv.devices[k]
        devs = devs[(devs >= 0) & (devs < num_devices)]
        owner[devs, c0:c1] = iv.job[k]
        state[devs, c0:c1] = 1 if iv.exact[k] else 2
    return owner, state


def _cluster_of(run: _Run) -> Any:
    import yaml

    from clustersim.config import validate_scenario
    from clustersim.topology import build_cluster

    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    return build_cluster(validate_scenario(cfg, source=str(run.path / "config.yaml")))


def draw_occupancy(
    runs: list[tuple[str, _Run]], color_by: str = "job", bins: int = 600
) -> tuple[Any, dict[str, Any]]:
    """Devices x time heatmaps, coloured by job (cycled palette) or by state."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _plt()
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.6 + 1.6 * len(runs)), squeeze=False)
    data: dict[str, Any] = {"panels": {}}
    for ax, (label, run) in zip(axes[:, 0], runs, strict=True):
        iv = job_intervals(run.path)
        cluster = _cluster_of(run)
        span = iv.run_end - float(run.util()["time"][0])
        t0 = float(run.util()["time"][0])
        unit, div = time_unit(span)
        edges = np.linspace(t0, iv.run_end, bins + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        owner, state = occupancy_matrix(iv, cluster.num_devices, centres)
        extent = (0.0, span / div, cluster.num_devices - 0.5, -0.5)
        if color_by == "state":
            cmap = ListedColormap([IDLE_COLOUR, OKABE_ITO[0], OKABE_ITO[1]])
            ax.imshow(
                state,
                aspect="auto",
                interpolation="nearest",
                cmap=cmap,
                vmin=0,
                vmax=2,
                extent=extent,
            )
            handles = [
                Patch(color=IDLE_COLOUR, label="idle"),
                Patch(color=OKABE_ITO[0], label="running"),
                Patch(color=OKABE_ITO[1], label="held by a preempted job (segments approximated)"),
            ]
            ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)
        else:
            palette = [IDLE_COLOUR, *OKABE_ITO[:7]]
            idx = np.where(owner < 0, 0, 1 + owner % 7)
            ax.imshow(
                idx,
                aspect="auto",
                interpolation="nearest",
                cmap=ListedColormap(palette),
                vmin=0,
                vmax=7,
                extent=extent,
            )
        for n in range(1, cluster.num_nodes):
            if cluster.num_nodes <= 64:
                ax.axhline(cluster.node_first[n] - 0.5, color="white", lw=0.4)
        ax.set_ylabel("device index")
        ax.set_xlabel(f"simulated time ({unit})")
        ax.set_title(f"{label} — seed {run.seed}")
        ax.grid(False)
        busy = (owner >= 0).sum(axis=0)
        data["panels"][label] = {
            "devices": cluster.num_devices,
            "unit": unit,
            "divisor": div,
            "times": ((centres - t0) / div).tolist(),
            "busy_devices": busy.tolist(),
            "approximate_cells": int((state == 2).sum()),
        }
    note = (
        "colour: job (7 Okabe-Ito colours, cycled), grey: idle"
        if color_by == "job"
        else "colour: device state"
    )
    fig.suptitle(f"Cluster occupancy (devices x time; {note}; white lines: node boundaries)")
    fig.tight_layout()
    return fig, data


# --------------------------------------------------------------------------- fragmentation


def node_fragmentation(
    owner: np.ndarray, node_first: list[int], node_size: list[int]
) -> np.ndarray:
    """Share of free devices that sit on partly used nodes, per sample time (0 when none free).

    ``F(t) = sum_n free_n(t) * [0 < used_n(t) < size_n] / sum_n free_n(t)``.
    """
    used_dev = (owner >= 0).astype(np.int64)
    used = np.add.reduceat(used_dev, np.asarray(node_first, dtype=np.int64), axis=0)
    size = np.asarray(node_size, dtype=np.int64)[:, None]
    free = size - used
    partial = (used > 0) & (used < size)
    total_free = free.sum(axis=0)
    frag = (free * partial).sum(axis=0)
    return np.where(total_free > 0, frag / np.maximum(total_free, 1), 0.0)


def draw_fragmentation(lay: _Layout) -> tuple[Any, dict[str, Any]]:
    """Node fragmentation over time per condition (mean and 95 % CI across seeds)."""
    from clustersim.results import t_critical

    span = max((float(_series(r, "queue_length")[0][-1]) for r in lay.runs), default=0.0)
    unit, div = time_unit(span)
    fig, axes = _panels(len(lay.facets), width=5.2)
    data: dict[str, Any] = {"unit": unit, "divisor": div, "panels": {}}
    clusters: dict[int, Any] = {}
    for ax, facet in zip(axes, lay.facets, strict=True):
        panel: dict[str, Any] = {}
        for hue in lay.hues:
            runs = lay.select(facet, hue)
            if not runs:
                continue
            end = max(float(_series(r, "queue_length")[0][-1]) for r in runs)
            grid = np.linspace(0.0, end, GRID_POINTS)
            ys = []
            for r in runs:
                cl = clusters.setdefault(r.point, _cluster_of(r))
                iv = job_intervals(r.path)
                owner, _ = occupancy_matrix(iv, cl.num_devices, grid + float(r.util()["time"][0]))
                ys.append(100.0 * node_fragmentation(owner, cl.node_first, cl.node_size))
            arr = np.vstack(ys)
            n = arr.shape[0]
            mean = arr.mean(axis=0)
            st = lay.style(hue)
            name = lay.hue_label(hue) + (f" (n={n})" if n > 1 else "")
            ax.plot(grid / div, mean, label=name, lw=1.1, **st)
            if n > 1:
                half = t_critical(n - 1) * arr.std(axis=0, ddof=1) / np.sqrt(n)
                ax.fill_between(
                    grid / div, mean - half, mean + half, color=st["color"], alpha=0.15, lw=0
                )
            panel[lay.hue_label(hue)] = {"t": (grid / div).tolist(), "y": mean.tolist(), "n": n}
        ax.set_xlabel(f"simulated time ({unit})")
        ax.set_ylabel("free devices on partly used nodes (%)")
        ax.set_ylim(0, 105)
        ax.set_title(lay.facet_label(facet) or "Fragmentation")
        data["panels"][lay.facet_label(facet) or "all"] = panel
    _legend(fig, axes, lay.hue_key)
    fig.suptitle("Node fragmentation over time")
    fig.tight_layout()
    return fig, data


# --------------------------------------------------------------------------- Lorenz


def lorenz(values: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray, float]:
    """Lorenz curve at population shares ``p`` (0..1) and the Gini coefficient.

    ``L(p)`` = share of the total held by the ``p`` fraction with the smallest values
    (linear between order statistics); Gini = 1 − 2 ∫ L(p) dp (trapezoids on the
    exact curve), 0 when every value is equal or the total is 0.
    """
    x = np.sort(np.asarray(values, dtype=float))
    p = np.linspace(0.0, 1.0, points)
    n = len(x)
    total = float(x.sum())
    if n == 0 or total <= 0:
        return p, p.copy(), 0.0
    cum = np.concatenate([[0.0], np.cumsum(x) / total])
    q = np.arange(n + 1) / n
    gini = 1.0 - float(np.sum((cum[1:] + cum[:-1]) * np.diff(q)))
    return p, np.interp(p, q, cum), gini


def draw_lorenz(lay: _Layout) -> tuple[Any, dict[str, Any]]:
    """Lorenz curves of per-job waiting time (completed jobs) per condition, Gini in legend."""
    fig, axes = _panels(len(lay.facets), width=4.4, height=4.0)
    data: dict[str, Any] = {"panels": {}}
    for ax, facet in zip(axes, lay.facets, strict=True):
        panel: dict[str, Any] = {}
        ax.plot([0, 100], [0, 100], color="#777777", lw=0.8, ls="--", label="equal waits")
        for hue in lay.hues:
            runs = lay.select(facet, hue)
            if not runs:
                continue
            curves = []
            ginis = []
            for r in runs:
                j = r.jobs()
                p, lz, g = lorenz(j["wait"][_done(j)].astype(float))
                curves.append(lz)
                ginis.append(g)
            mean = np.mean(curves, axis=0)
            g = float(np.mean(ginis))
            st = lay.style(hue)
            ax.plot(100 * p, 100 * mean, label=f"{lay.hue_label(hue)} (Gini {g:.2f})", lw=1.3, **st)
            panel[lay.hue_label(hue)] = {
                "p": p.tolist(),
                "L": mean.tolist(),
                "gini": g,
                "n": len(runs),
            }
        ax.set_xlabel("jobs, ordered by waiting time (% of jobs)")
        ax.set_ylabel("cumulative share of total waiting (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_title(lay.facet_label(facet) or "Waiting-time inequality")
        ax.legend(loc="upper left", frameon=False)
        data["panels"][lay.facet_label(facet) or "all"] = panel
    fig.suptitle("Lorenz curves of per-job waiting time (Gini: mean across seeds)")
    fig.tight_layout()
    return fig, data


# --------------------------------------------------------------------------- reliability


def reliability_metrics(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(headline metrics, lost-time columns) the runs have, for the ETTR/lost-time figure."""
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)

    def nonzero(k: str) -> bool:
        return any(isinstance(r.get(k), int | float) and r.get(k) for r in rows)

    head: list[str] = [k for k in ("ettr", "goodput") if k in names]
    lost = [k for k in names if k.startswith("lost_s.")]
    if not lost:
        lost = [k for k in ("lost_work_device_hours", "down_device_hours") if nonzero(k)]
        if lost and "availability" in names:
            head.append("availability")
    return head, lost


def draw_reliability(
    rows: list[dict[str, Any]], by: list[str], head: list[str], lost: list[str]
) -> tuple[Any, dict[str, Any]]:
    """ETTR/availability bars with 95 % CI and stacked lost-time bars per condition."""
    from clustersim.results import group_stats

    n_panels = len(head) + (1 if lost else 0)
    fig, axes = _panels(n_panels, width=5.4, height=3.6)
    data: dict[str, Any] = {}
    for ax, metric in zip(axes, head, strict=False):
        stats = group_stats(rows, metric, by)
        x = np.arange(len(stats))
        m = np.array([s.mean for s in stats]) * 100
        err = np.vstack(
            [
                m - np.array([s.ci_low for s in stats]) * 100,
                np.array([s.ci_high for s in stats]) * 100 - m,
            ]
        )
        ax.bar(x, m, yerr=np.where(np.isfinite(err), err, 0), capsize=3, color=OKABE_ITO[2])
        ax.set_xticks(
            x,
            [s.label for s in stats],
            rotation=30 if len(stats) > 3 else 0,
            ha="right" if len(stats) > 3 else "center",
        )
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, (metric, ''))[0]} (%)")
        ax.set_ylim(0, 105)
        ax.set_title(METRIC_LABELS.get(metric, (metric, ""))[0])
        data[metric] = {"conditions": [s.label for s in stats], "mean_percent": m.tolist()}
    if lost:
        ax = axes[-1]
        hours = lost[0].startswith("lost_s.")
        div = 3600.0 if hours else 1.0
        bottom: np.ndarray | None = None
        labels: list[str] = []
        parts: dict[str, list[float]] = {}
        for i, k in enumerate(lost):
            stats = group_stats(rows, k, by)
            labels = [s.label for s in stats]
            v = np.array([0.0 if not np.isfinite(s.mean) else s.mean / div for s in stats])
            ax.bar(
                np.arange(len(v)),
                v,
                bottom=bottom,
                color=OKABE_ITO[i % len(OKABE_ITO)],
                label=k.removeprefix("lost_s.").replace("_", " "),
            )
            bottom = v if bottom is None else bottom + v
            parts[k] = v.tolist()
        ax.set_xticks(
            np.arange(len(labels)),
            labels,
            rotation=30 if len(labels) > 3 else 0,
            ha="right" if len(labels) > 3 else "center",
        )
        ax.set_ylabel("lost time per job (h)" if hours else "lost device-hours (device·h)")
        ax.set_title("Lost time by cause (mean across seeds)")
        ax.legend(frameon=False, fontsize=7)
        data["lost"] = {"conditions": labels, "parts": parts, "unit": "h" if hours else "device-h"}
    fig.suptitle("Effective training time and lost time")
    fig.tight_layout()
    return fig, data


# --------------------------------------------------------------------------- driver


CAPTIONS: dict[str, tuple[str, str]] = {
    "metrics": (
        "Summary metrics per condition",
        "Mean across seeds; whiskers: Student-t 95 % confidence interval.",
    ),
    "jct_cdf": (
        "Job completion time CDF",
        "Empirical CDF of completed jobs' JCT (log axis); one seed: exact steps; "
        "several seeds: mean CDF with a 95 % CI band.",
    ),
    "utilization": (
        "Device utilization over time",
        "Allocated devices as a share of the cluster; one seed: the exact step series; "
        "several seeds: mean and 95 % CI on a 400-point grid.",
    ),
    "queue_length": ("Queue length over time", "Jobs waiting in the queue."),
    "occupancy": (
        "Cluster occupancy",
        "Which job held each device over time (first seed of each condition shown). "
        "Jobs that were preempted or interrupted are drawn over their whole span on their "
        "last devices, as runs record no per-segment placement.",
    ),
    "fragmentation": (
        "Node fragmentation over time",
        "Share of free devices that sit on partly used nodes (definition in docs/metrics.md).",
    ),
    "lorenz": (
        "Waiting-time Lorenz curves",
        "Cumulative share of total waiting against the share of jobs with the least "
        "waiting; the diagonal is perfect equality.",
    ),
    "reliability": (
        "ETTR and lost time",
        "Effective training time ratio (or availability) with 95 % CI, and lost time by cause.",
    ),
}


def _function_metrics(rows: list[dict[str, Any]], by: list[str]) -> list[str]:
    skip = {"point", "seed", "wall_s", "engine_wall_s", *by}
    first = rows[0]
    return [
        k
        for k, v in first.items()
        if k not in skip and "." not in k and isinstance(v, int | float) and not isinstance(v, bool)
    ][:6]


def plot_sweep(
    path: str | Path,
    out_dir: str | Path | None = None,
    formats: tuple[str, ...] = FIGURE_FORMATS,
    color_by: str = "job",
    max_occupancy: int = 4,
) -> list[FigureInfo]:
    """Draw every figure the sweep (or results) folder supports into ``out_dir``.

    Default ``out_dir`` is ``path/plots``. Writes ``figures.json`` there: per
    figure its title, caption, files and the plotted values (in plotted units).
    """
    from clustersim.errors import ConfigError
    from clustersim.results import condition_keys
    from clustersim.sweep import atomic_write

    p = Path(path)
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise ConfigError(f"figure format(s) {', '.join(bad) or 'none'}: use png, svg, pdf")
    if color_by not in ("job", "state"):
        raise ConfigError(f"color_by '{color_by}': use 'job' or 'state'")
    lay, rows, info = _layout(p)
    by = condition_keys(info["swept"])
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    if not ok_rows:
        raise ConfigError(f"{p}: no finished runs to plot")
    out = Path(out_dir) if out_dir is not None else p / "plots"
    out.mkdir(parents=True, exist_ok=True)
    figs: list[FigureInfo] = []

    def add(name: str, fig: Any, data: dict[str, Any], extra: str = "") -> None:
        title, caption = CAPTIONS[name]
        figs.append(FigureInfo(name, title, caption + extra, _save(fig, out, name, formats), data))

    with _style():
        timed = ("avg_jct_s", "p99_jct_s", "avg_wait_s", "gpu_utilization")
        metrics = [m for m in timed if any(isinstance(r.get(m), int | float) for r in ok_rows)]
        metrics = metrics or _function_metrics(ok_rows, by)
        if metrics:
            fig, data = draw_metric_bars(ok_rows, metrics, by, lay.hue_key)
            add("metrics", fig, data, f" Colour: {lay.hue_key or 'all runs'}.")
        tabled = [r for r in lay.runs if r.has_tables()]
        if tabled:
            facets = [f for f in lay.facets if any(r.facet == f for r in tabled)]
            lt = _Layout(lay.hue_key, lay.facet_keys, lay.hues, facets, tabled)
            add("jct_cdf", *draw_jct_cdf(lt))
            add(
                "utilization",
                *draw_timeseries(
                    lt,
                    "allocated_devices",
                    "allocated devices (% of capacity)",
                    "Device utilization over time",
                ),
            )
            add(
                "queue_length",
                *draw_timeseries(
                    lt, "queue_length", "waiting jobs (jobs)", "Queue length over time"
                ),
            )
            picks: list[tuple[str, _Run]] = []
            seen: set[tuple[Any, ...]] = set()
            for r in tabled:
                key = (r.facet, r.hue)
                if key in seen or len(picks) >= max_occupancy:
                    continue
                seen.add(key)
                parts = [lay.hue_label(r.hue) if lay.hue_key else "", lay.facet_label(r.facet)]
                picks.append((", ".join(x for x in parts if x) or "run", r))
            add("occupancy", *draw_occupancy(picks, color_by=color_by))
            add("fragmentation", *draw_fragmentation(lt))
            add("lorenz", *draw_lorenz(lt))
        head, lost = reliability_metrics(ok_rows)
        if head or lost:
            add("reliability", *draw_reliability(ok_rows, by, head, lost))
    manifest = [
        {
            "name": f.name,
            "title": f.title,
            "caption": f.caption,
            "files": [x.name for x in f.files],
            "data": f.data,
        }
        for f in figs
    ]
    atomic_write(out / "figures.json", (json.dumps(manifest, default=float) + "\n").encode())
    return figs
