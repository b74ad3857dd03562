"""Workloads: the :class:`~clustersim.workload.job.Job` model, trace loaders and generators."""

from __future__ import annotations

from clustersim.workload.job import FULL_GPU_MILLI, Job

__all__ = ["FULL_GPU_MILLI", "Job"]
