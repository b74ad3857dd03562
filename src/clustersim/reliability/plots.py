"""Figures of the reliability experiments (matplotlib, Agg backend, imported lazily).

Owns: ETTR versus job size, the stacked bar of where wall time went, the
timeline of one job's life, the checkpoint-interval sweep and a grouped bar
chart. Colours are the Okabe-Ito colour-blind-safe palette. Every function
writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clustersim.reliability.metrics import LOST_CATEGORIES

OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#56B4E9",
    "#CC79A7",
    "#F0E442",
    "#000000",
)
"""Okabe-Ito palette (blue, orange, green, vermillion, sky blue, purple, yellow, black)."""

CATEGORY_COLOURS = {
    "productive": "#009E73",
    "checkpoint": "#56B4E9",
    "lost_work": "#D55E00",
    "detection": "#E69F00",
    "teardown": "#F0E442",
    "queueing": "#CC79A7",
    "restart": "#0072B2",
    "checkpoint_load": "#000000",
}
PHASE_COLOURS = {"run": "#009E73", "launch": "#0072B2", **CATEGORY_COLOURS}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ettr_vs_size(
    sizes: Sequence[int],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "ETTR versus job size",
    targets: Sequence[float] = (0.95,),
    errors: Mapping[str, Sequence[float]] | None = None,
    claims: Sequence[tuple[int, float, str]] = (),
) -> Path:
    """ETTR per job size (devices, log axis) for each series; dashed target lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (label, ys) in enumerate(series.items()):
        err = errors.get(label) if errors else None
        ax.errorbar(
            sizes,
            ys,
            yerr=err,
            marker="os^dv<>"[i % 7],
            color=OKABE_ITO[i % 8],
            label=label,
            capsize=3,
        )
    for t in targets:
        ax.axhline(t, color="grey", ls="--", lw=1)
        ax.text(sizes[-1], t, f"{t:.0%} ", va="bottom", ha="right", color="grey", fontsize=8)
    for k, (x, y, text) in enumerate(claims):
        ax.scatter([x], [y], marker="*", s=120, color="#CC79A7", zorder=5)
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(10, -22 - 22 * k),
            fontsize=7,
            arrowprops={"arrowstyle": "-", "color": "#CC79A7", "lw": 0.6},
        )
    ax.set_xscale("log")
    ax.set_xlabel("job size (devices)")
    ax.set_ylabel("ETTR (productive / wall time)")
    ax.set_title(title)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_breakdown(
    labels: Sequence[str],
    fractions: Sequence[Mapping[str, float]],
    path: str | Path,
    *,
    title: str = "Where the wall time went",
    xlabel: str = "",
) -> Path:
    """Stacked bars: share of wall time that was productive and each lost category."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 3), 4.8))
    cats = ("productive", *LOST_CATEGORIES)
    bottom = [0.0] * len(labels)
    for c in cats:
        vals = [f.get(c, 0.0) * 100.0 for f in fractions]
        ax.bar(
            labels,
            vals,
            bottom=bottom,
            color=CATEGORY_COLOURS[c],
            label=c.replace("_", " "),
            edgecolor="white",
            linewidth=0.5,
        )
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("share of wall time (%)")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_timeline(
    timeline: Sequence[tuple[str, str, float, float]],
    job: str,
    path: str | Path,
    *,
    title: str = "Life of one job",
    zoom_hours: float = 24.0,
) -> Path:
    """Phases of ``job`` over its whole life (top) and over the first ``zoom_hours`` (bottom)."""
    plt = _plt()
    rows = [(p, s, e) for j, p, s, e in timeline if j == job]
    fig, axes = plt.subplots(2, 1, figsize=(10, 4.8))
    phases = [p for p in PHASE_COLOURS if any(r[0] == p for r in rows)]
    end = max((e for _, _, e in rows), default=1.0)
    for ax, scale, span, unit in (
        (axes[0], 86400.0, end, "days"),
        (axes[1], 3600.0, min(end, zoom_hours * 3600.0), "hours"),
    ):
        for k, p in enumerate(phases):
            bars = [(s / scale, (e - s) / scale) for q, s, e in rows if q == p and s < span]
            ax.broken_barh(bars, (k - 0.4, 0.8), color=PHASE_COLOURS[p])
        ax.set_yticks(range(len(phases)))
        ax.set_yticklabels([p.replace("_", " ") for p in phases], fontsize=8)
        ax.set_xlim(0, span / scale)
        ax.set_xlabel(f"time since first start ({unit})")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_title(title)
    axes[1].set_title(f"first {zoom_hours:g} hours", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_interval_sweep(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    markers: Mapping[str, Sequence[tuple[float, str]]],
    path: str | Path,
    *,
    title: str = "ETTR versus checkpoint interval",
) -> Path:
    """Mean ETTR (+- std) versus interval per curve; vertical lines for optima."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = ("--", ":", "-.")
    for i, (label, (xs, ys, sd)) in enumerate(curves.items()):
        col = OKABE_ITO[i % 8]
        xm = [x / 60.0 for x in xs]
        ax.plot(xm, ys, marker="o", color=col, label=label)
        lo = [y - s for y, s in zip(ys, sd, strict=True)]
        hi = [y + s for y, s in zip(ys, sd, strict=True)]
        ax.fill_between(xm, lo, hi, color=col, alpha=0.2)
        for k, (x, name) in enumerate(markers.get(label, ())):
            ax.axvline(x / 60.0, color=col, ls=styles[k % 3], lw=1, label=f"{name}")
    ax.set_xscale("log")
    ax.set_xlabel("checkpoint interval (minutes of compute)")
    ax.set_ylabel("ETTR (productive / wall time)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_grouped_bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "",
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(12.0, max(7.0, 0.35 * len(groups) * len(series) + 2)), 5.2))
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (label, vals) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, vals, width=width, color=OKABE_ITO[i % 8], label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


__all__ = [
    "CATEGORY_COLOURS",
    "OKABE_ITO",
    "plot_breakdown",
    "plot_ettr_vs_size",
    "plot_grouped_bars",
    "plot_interval_sweep",
    "plot_timeline",
]
