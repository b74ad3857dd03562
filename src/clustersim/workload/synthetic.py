"""Seeded synthetic job streams.

Arrivals are a Poisson process (exponential inter-arrival times at
``arrival_rate`` jobs/s); durations are lognormal with the given median and
shape ``sigma`` (heavy-tailed, as production GPU traces are: Philly's and
Helios' run times span seconds to weeks), truncated at ``max_duration``;
device counts are drawn from ``gpu_mix``. Everything comes from the one
``numpy.random.Generator`` of the run, so a seed fixes the stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from clustersim.workload.job import Job

if TYPE_CHECKING:
    from clustersim.config import SyntheticConfig


def generate_jobs(cfg: SyntheticConfig, rng: np.random.Generator) -> list[Job]:
    """Draw ``cfg.jobs`` jobs; job ids are ``syn-0``, ``syn-1``, ... in arrival order."""
    n = cfg.jobs
    gaps = rng.exponential(1.0 / cfg.arrival_rate, size=n)
    gaps[0] = 0.0
    arrivals = np.cumsum(gaps)
    durations = np.minimum(
        cfg.duration_median * np.exp(cfg.duration_sigma * rng.standard_normal(n)),
        cfg.max_duration,
    )
    sizes = np.array(sorted(cfg.gpu_mix), dtype=np.int64)
    weights = np.array([cfg.gpu_mix[int(s)] for s in sizes], dtype=float)
    gpus = rng.choice(sizes, size=n, p=weights / weights.sum())
    return [
        Job(f"syn-{i}", float(arrivals[i]), int(gpus[i]), float(max(durations[i], 1.0)), seq=i)
        for i in range(n)
    ]
