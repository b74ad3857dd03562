"""Scheduling policies: the contract (:mod:`.base`), the registry, placement rules and built-ins."""

from __future__ import annotations

from clustersim.schedulers.base import (
    Action,
    ClusterView,
    JobRecord,
    JobState,
    Preempt,
    Scheduler,
    Start,
    WakeUp,
)
from clustersim.schedulers.registry import (
    create_scheduler,
    get_scheduler,
    register,
    scheduler_names,
)

__all__ = [
    "Action",
    "ClusterView",
    "JobRecord",
    "JobState",
    "Preempt",
    "Scheduler",
    "Start",
    "WakeUp",
    "create_scheduler",
    "get_scheduler",
    "register",
    "scheduler_names",
]
