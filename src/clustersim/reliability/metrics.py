"""Per-job and cluster reliability metrics: ETTR, goodput, lost-time breakdown, MTTF.

Owns the result types of :func:`clustersim.reliability.sim.simulate`:

* :class:`JobMetrics` -- one job's wall time split exactly into productive time
  and the lost categories of :data:`LOST_CATEGORIES` (nothing unaccounted), its
  interruptions, the failures it absorbed while already down, and the MTTF it
  observed while running.
* :class:`ReliabilityResult` -- all jobs plus cluster-level goodput (useful
  device-hours over provisioned device-hours, spares included) and the failure
  counts; ``to_dict()`` gives a JSON-ready summary.

Definitions (seconds):
ETTR = productive / wall, wall = end - first start (Meta HPCA'25 ETTR without the
initial queue). Productive = compute progress the job keeps. Lost work = compute
rolled back to the last committed checkpoint. Checkpoint = blocking stalls, compute
slowdown while persisting, waits for a persist. The other categories are the
recovery stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LOST_CATEGORIES: tuple[str, ...] = (
    "checkpoint",
    "lost_work",
    "detection",
    "teardown",
    "queueing",
    "restart",
    "checkpoint_load",
)
"""Where non-productive wall time goes; productive + sum of these == wall time."""


@dataclass
class JobMetrics:
    """Outcome of one gang job."""

    name: str
    nodes: int
    devices: int
    start: float
    end: float
    productive: float
    lost: dict[str, float]
    interruptions: int
    absorbed_failures: int
    run_time: float
    run_interruptions: int
    memory_fallbacks: int
    capacity_waits: int
    completed: bool
    checkpoint_interval: float
    interruptions_by_kind: dict[str, int] = field(default_factory=dict)
    interruptions_by_category: dict[str, int] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        """Wall time from first start to completion or horizon (seconds)."""
        return self.end - self.start

    @property
    def ettr(self) -> float:
        """Effective training time ratio: productive / wall (nan before the job starts)."""
        return self.productive / self.wall if self.wall > 0 else math.nan

    @property
    def lost_total(self) -> float:
        """Sum of all lost categories (seconds)."""
        return sum(self.lost.values())

    @property
    def unaccounted(self) -> float:
        """wall - productive - lost_total; zero up to floating-point rounding."""
        return self.wall - self.productive - self.lost_total

    @property
    def interruptions_per_day(self) -> float:
        """Interruptions per day of wall time."""
        return self.interruptions / (self.wall / 86400.0) if self.wall > 0 else math.nan

    @property
    def mttf_observed(self) -> float:
        """Running time (incl. checkpoints) per interruption that hit while running (s)."""
        return self.run_time / self.run_interruptions if self.run_interruptions else math.inf

    @property
    def useful_device_hours(self) -> float:
        """Productive device-hours."""
        return self.productive * self.devices / 3600.0

    @property
    def allocated_device_hours(self) -> float:
        """Device-hours the job held (its devices for its whole wall time)."""
        return self.wall * self.devices / 3600.0

    @property
    def goodput(self) -> float:
        """Useful / allocated device-hours of the job (equals ETTR for one gang job)."""
        a = self.allocated_device_hours
        return self.useful_device_hours / a if a > 0 else math.nan

    def fractions(self) -> dict[str, float]:
        """Share of wall time per category, productive included (sums to 1)."""
        w = self.wall
        out = {"productive": self.productive / w if w > 0 else math.nan}
        out.update({k: (v / w if w > 0 else math.nan) for k, v in self.lost.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "name": self.name,
            "nodes": self.nodes,
            "devices": self.devices,
            "start_s": self.start,
            "end_s": self.end,
            "wall_s": self.wall,
            "productive_s": self.productive,
            "lost_s": dict(self.lost),
            "unaccounted_s": self.unaccounted,
            "ettr": self.ettr,
            "goodput": self.goodput,
            "interruptions": self.interruptions,
            "interruptions_per_day": self.interruptions_per_day,
            "absorbed_failures": self.absorbed_failures,
            "mttf_observed_h": self.mttf_observed / 3600.0,
            "memory_fallbacks": self.memory_fallbacks,
            "capacity_waits": self.capacity_waits,
            "completed": self.completed,
            "checkpoint_interval_s": self.checkpoint_interval,
            "interruptions_by_category": dict(self.interruptions_by_category),
            "interruptions_by_kind": dict(self.interruptions_by_kind),
        }


@dataclass
class ReliabilityResult:
    """Outcome of one reliability simulation."""

    jobs: list[JobMetrics]
    cluster_nodes: int
    cluster_devices: int
    horizon: float
    failures: int
    failures_by_kind: dict[str, int]
    timeline: list[tuple[str, str, float, float]] | None = None

    def job(self, name: str) -> JobMetrics:
        """The job called ``name``."""
        for j in self.jobs:
            if j.name == name:
                return j
        from clustersim.errors import UnknownNameError

        raise UnknownNameError("job", name, [j.name for j in self.jobs])

    @property
    def span(self) -> float:
        """Wall time covered: from the first job start to the last job end (seconds)."""
        if not self.jobs:
            return 0.0
        return max(j.end for j in self.jobs) - min(j.start for j in self.jobs)

    @property
    def goodput(self) -> float:
        """Useful device-hours / provisioned device-hours (all cluster devices over the span)."""
        prov = self.cluster_devices * self.span / 3600.0
        return sum(j.useful_device_hours for j in self.jobs) / prov if prov > 0 else math.nan

    @property
    def ettr(self) -> float:
        """Device-weighted ETTR over jobs (productive device-time / wall device-time)."""
        num = sum(j.productive * j.devices for j in self.jobs)
        den = sum(j.wall * j.devices for j in self.jobs)
        return num / den if den > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the timeline)."""
        return {
            "cluster_nodes": self.cluster_nodes,
            "cluster_devices": self.cluster_devices,
            "horizon_s": self.horizon,
            "failures": self.failures,
            "failures_by_kind": dict(self.failures_by_kind),
            "ettr": self.ettr,
            "goodput": self.goodput,
            "jobs": [j.to_dict() for j in self.jobs],
        }


__all__ = ["LOST_CATEGORIES", "JobMetrics", "ReliabilityResult"]
