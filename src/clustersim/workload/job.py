"""The training/batch job as clustersim sees it.

A :class:`Job` is immutable trace data: when it arrives, how many devices it
needs as one gang, and how much work it carries. Work is measured in seconds of
execution at full speed on the devices it asked for (``duration``); the engine
turns placement-dependent speed into wall time. Units: seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FULL_GPU_MILLI = 1000
"""A whole device in milli-device units (the openb trace's ``gpu_milli`` scale)."""


@dataclass(slots=True, eq=True)
class Job:
    """One gang-scheduled job (treat as immutable: the engine never changes it).

    Attributes:
        id: unique job identifier (string, as in the trace).
        submit_time: arrival time in seconds from the start of the simulation.
        num_gpus: devices requested; all must be granted at once (gang).
        duration: work in seconds of execution at full speed (speed 1.0).
        gpu_milli: share of each device in milli-devices (1000 = whole device,
            < 1000 = a fractional share of one device, as in Alibaba openb).
        device_type: required device model, or ``None`` for any.
        seq: position in the trace; the final FIFO tie-break.
        attrs: optional extra columns (model size, parallelism, tenant, ...).
    """

    id: str
    submit_time: float
    num_gpus: int
    duration: float
    gpu_milli: int = FULL_GPU_MILLI
    device_type: str | None = None
    seq: int = 0
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def gpu_demand(self) -> float:
        """Devices requested, counting fractional shares (``num_gpus * gpu_milli / 1000``)."""
        return self.num_gpus * self.gpu_milli / FULL_GPU_MILLI

    @property
    def is_shared(self) -> bool:
        """True for a job that takes a fraction of a device."""
        return self.gpu_milli < FULL_GPU_MILLI
