"""Shared plumbing of the experiment scripts: their points run through :mod:`clustersim.sweep`.

Owns:

* :func:`add_sweep_args`: the ``--executor``, ``--workers`` and ``--force`` flags;
* :func:`run_points`: builds a function sweep calling ``experiments.<script>:run_point``
  once per point (parameters + ``seed``), runs it into ``OUT/points`` with
  :func:`clustersim.sweep.run_sweep` (content-addressed: a finished point is never
  recomputed, so a killed or repeated run resumes; any executor gives the same results)
  and returns every point's stored ``summary.json`` (and tables) in point order;
* :func:`reliability_point` / :func:`job_metrics`: one reliability-simulator job as a
  JSON point summary and back (exact: floats survive the JSON round trip), so scripts
  aggregate with :func:`clustersim.reliability.runs.summarise_job` as before.

Scripts aggregate only from the stored points, and every timing they report is the
time a point measured when it was computed (stored with it), so a re-run that reuses
all points writes a byte-identical ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

from clustersim.reliability.metrics import JobMetrics, ReliabilityResult  # noqa: E402
from clustersim.sweep import Sweep, SweepReport, make_sweep, run_sweep  # noqa: E402

POINTS = "points"
"""Folder under ``--out`` holding the sweep (``sweep.json``, ``runs/``, ``results.parquet``)."""


def add_sweep_args(ap: argparse.ArgumentParser, *, workers: int | None = None) -> None:
    """Add ``--executor``, ``--workers`` (default ``workers``) and ``--force`` to ``ap``."""
    ap.add_argument(
        "--executor",
        default=None,
        help="where points run: local (default), local:N, serial, dask, dask://HOST:PORT, "
        "ray, ray://HOST:PORT (remote workers need this checkout on PYTHONPATH)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=workers,
        help="worker processes of the local/dask executor (default: "
        f"{workers if workers else 'all cores'}; 1 without --executor = in this process)",
    )
    ap.add_argument("--force", action="store_true", help="recompute points already in OUT/points")


@dataclass(frozen=True)
class PointResult:
    """One finished point: its full parameters, stored summary and result folder."""

    params: dict[str, Any]
    summary: dict[str, Any]
    folder: Path

    def table(self, name: str) -> dict[str, list[Any]]:
        """The point's ``NAME.parquet`` table as columns of Python values."""
        import pyarrow.parquet as pq

        cols: dict[str, list[Any]] = pq.read_table(self.folder / f"{name}.parquet").to_pydict()
        return cols


@dataclass(frozen=True)
class PointsRun:
    """What :func:`run_points` ran and found."""

    results: list[PointResult]
    report: SweepReport
    sweep: Sweep
    store: Path

    def compute_seconds(self, key: str) -> float:
        """Sum of ``summary[key]`` (seconds a point measured) over distinct points."""
        seen: dict[Path, float] = {}
        for r in self.results:
            seen[r.folder] = float(r.summary[key])
        return float(sum(seen.values()))

    def line(self) -> str:
        """One-line account: points computed/reused and where they are stored."""
        rep = self.report
        return (
            f"{rep.total} points ({rep.computed} computed on {rep.executor}, {rep.reused} "
            f"reused) in {self.store}"
        )


def _check_importable(script: str) -> None:
    import importlib

    pkg = importlib.import_module("experiments")
    where = [Path(p).resolve() for p in getattr(pkg, "__path__", [])]
    if ROOT / "experiments" not in where:
        raise RuntimeError(
            f"'experiments' resolves to {where}, not {ROOT / 'experiments'}: another package "
            f"called 'experiments' shadows this checkout; put {ROOT} first on PYTHONPATH"
        )
    importlib.import_module(f"experiments.{script}")


def run_points(
    out: Path,
    *,
    script: str,
    name: str,
    seeds: Sequence[int],
    base: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    points: Sequence[Mapping[str, Any]] | None = None,
    executor: str | None = None,
    workers: int | None = None,
    force: bool = False,
) -> PointsRun:
    """Run ``experiments.<script>:run_point`` over the points into ``out/points``.

    Points expand as in a sweep file: each entry of ``points`` crossed with ``grid``
    (last key fastest), each with every seed (fastest). ``executor=None`` with
    ``workers == 1`` runs in this process; otherwise ``executor`` (default ``local``)
    with ``workers``. Raises ``RuntimeError`` naming the failures if any point failed
    (finished points stay stored, so a re-run retries only the failed ones).
    """
    _check_importable(script)
    sweep = make_sweep(
        base=dict(base or {}),
        grid={k: list(v) for k, v in (grid or {}).items()},
        points=[dict(p) for p in points or []],
        seeds=list(seeds),
        name=name,
        function=f"experiments.{script}:run_point",
        base_dir=ROOT,
    )
    store = out / POINTS
    spec = executor if executor is not None else ("serial" if workers == 1 else "local")
    report = run_sweep(sweep, store, spec, workers, force=force, progress=sys.stderr.isatty())
    if report.failed:
        lines = "\n".join(f"  point {i}: {err}" for i, err in report.failures[:5])
        raise RuntimeError(
            f"{report.failed} of {report.total} points failed (details in "
            f"{store / 'failed'}; a re-run retries only those):\n{lines}"
        )
    results = []
    for p in sweep.points:
        folder = store / "runs" / p.folder
        summary = json.loads((folder / "summary.json").read_text())
        results.append(PointResult(dict(p.config), summary, folder))
    return PointsRun(results, report, sweep, store)


# --------------------------------------------------------------------------- reliability


def reliability_point(
    res: ReliabilityResult, sim_seconds: float, *, timeline: bool = False
) -> dict[str, Any]:
    """A point summary for the first job of ``res``: headline metrics plus the exact job record.

    ``ettr`` and ``lost_s`` are what ``clustersim report`` draws; ``job`` holds every
    :class:`JobMetrics` field (see :func:`job_metrics`); ``sim_seconds`` is the time the
    simulation took. With ``timeline`` the recorded phases are stored as table ``timeline``.
    """
    j = res.jobs[0]
    out: dict[str, Any] = {
        "ettr": j.ettr,
        "interruptions": j.interruptions,
        "interruptions_per_day": j.interruptions_per_day,
        "lost_s": dict(j.lost),
        "sim_seconds": sim_seconds,
        "job": dataclasses.asdict(j),
    }
    if timeline and res.timeline is not None:
        rows = res.timeline
        out["tables"] = {
            "timeline": {
                "job": [r[0] for r in rows],
                "phase": [r[1] for r in rows],
                "start_s": [float(r[2]) for r in rows],
                "end_s": [float(r[3]) for r in rows],
            }
        }
    return out


def job_metrics(summary: Mapping[str, Any]) -> JobMetrics:
    """The :class:`JobMetrics` stored by :func:`reliability_point` (bit-identical)."""
    return JobMetrics(**summary["job"])


def timeline_of(result: PointResult) -> list[tuple[str, str, float, float]]:
    """The phase timeline a point stored (see :func:`reliability_point`)."""
    t = result.table("timeline")
    return list(zip(t["job"], t["phase"], t["start_s"], t["end_s"], strict=True))
