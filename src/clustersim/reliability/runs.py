"""Helpers the reliability experiments share: seeded repetitions and their summaries.

Owns :func:`run_seeds` (one simulation per seed, seeds ``base_seed + i``, each
with its own :class:`numpy.random.Generator`) and :func:`summarise_job` (mean and
standard deviation of ETTR, interruptions and the lost-time breakdown over
repetitions, in seconds, hours and shares of wall time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from clustersim.reliability.failures import ClusterLayout, FailureEvent
from clustersim.reliability.metrics import LOST_CATEGORIES, JobMetrics, ReliabilityResult
from clustersim.reliability.recovery import ReliabilityConfig
from clustersim.reliability.sim import JobSpec, simulate


def run_seeds(
    config: ReliabilityConfig,
    jobs: Sequence[JobSpec] | JobSpec,
    *,
    horizon: float,
    seeds: Sequence[int],
    failures: Sequence[Sequence[FailureEvent]] | None = None,
    layout: ClusterLayout | None = None,
    record_first_timeline: bool = False,
) -> list[ReliabilityResult]:
    """Simulate once per seed; ``failures[i]`` (if given) is the sequence for ``seeds[i]``."""
    out = []
    for i, s in enumerate(seeds):
        out.append(
            simulate(
                config,
                jobs,
                horizon=horizon,
                rng=np.random.default_rng(s),
                failures=None if failures is None else failures[i],
                layout=layout,
                record_timeline=record_first_timeline and i == 0,
            )
        )
    return out


def _ms(xs: Sequence[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    sd = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "std": sd}


def summarise_job(jobs: Sequence[JobMetrics]) -> dict[str, Any]:
    """Mean/std over repetitions of one job's metrics (same job in every repetition)."""
    if not jobs:
        raise ValueError("summarise_job needs at least one repetition")
    walls = [j.wall for j in jobs]
    lost_s = {c: float(np.mean([j.lost[c] for j in jobs])) for c in LOST_CATEGORIES}
    frac = {"productive": float(np.mean([j.productive / j.wall for j in jobs]))}
    frac.update({c: float(np.mean([j.lost[c] / j.wall for j in jobs])) for c in LOST_CATEGORIES})
    mttf = [j.mttf_observed for j in jobs if math.isfinite(j.mttf_observed)]
    return {
        "repetitions": len(jobs),
        "devices": jobs[0].devices,
        "nodes": jobs[0].nodes,
        "wall_days": float(np.mean(walls)) / 86400.0,
        "ettr": _ms([j.ettr for j in jobs]),
        "interruptions": _ms([float(j.interruptions) for j in jobs]),
        "interruptions_per_day": _ms([j.interruptions_per_day for j in jobs]),
        "absorbed_failures": _ms([float(j.absorbed_failures) for j in jobs]),
        "mttf_observed_h": float(np.mean(mttf)) / 3600.0 if mttf else math.inf,
        "checkpoint_interval_s": float(np.mean([j.checkpoint_interval for j in jobs])),
        "memory_fallbacks": _ms([float(j.memory_fallbacks) for j in jobs]),
        "capacity_waits": _ms([float(j.capacity_waits) for j in jobs]),
        "lost_hours": {c: v / 3600.0 for c, v in lost_s.items()},
        "fractions": frac,
        "max_unaccounted_s": float(max(abs(j.unaccounted) for j in jobs)),
    }


__all__ = ["run_seeds", "summarise_job"]
