"""The scheduler contract: actions, the read-only cluster view, and the Scheduler base class.

A policy sees a :class:`ClusterView` (time, free devices, waiting and running
jobs, a placement helper) and returns or yields **actions**:

* :class:`Start` ``(job_id, devices)`` — run a waiting job on these devices;
* :class:`Preempt` ``(job_id)`` — stop a running job; it returns to the queue
  keeping its progress (after the scenario's checkpoint time);
* :class:`WakeUp` ``(at)`` — call the policy again at time ``at`` even if no
  job arrives or ends (for time-driven rules such as LAS demotion).

The engine validates each action the moment it is produced and applies it, so
a policy written as a generator sees the effect of its previous actions
(``view.place`` will not hand out devices it already started a job on). Any
impossible action stops the run with a :class:`~clustersim.errors.SchedulerError`
naming the policy, the job and the devices. Policies never import the engine
or simpy.

A complete strict FIFO::

    class MyFifo(Scheduler):
        def schedule(self, view):
            for job in view.queue:            # waiting jobs, in submission order
                devices = view.place(job)     # None when it does not fit now
                if devices is None:
                    return                    # head-of-line blocking
                yield Start(job.id, devices)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from clustersim.workload.job import Job

if TYPE_CHECKING:
    from clustersim.state import ClusterState
    from clustersim.topology import Cluster


@dataclass(slots=True)
class Start:
    """Start waiting job ``job`` on ``devices`` (all of them, as one gang)."""

    job: str
    devices: tuple[int, ...]


@dataclass(slots=True)
class Preempt:
    """Preempt running job ``job``; it goes back to the queue with its progress."""

    job: str


@dataclass(slots=True)
class WakeUp:
    """Run the scheduler again at simulated time ``at`` (seconds)."""

    at: float


Action = Start | Preempt | WakeUp


class JobState(Enum):
    """Life cycle of a job in the engine."""

    PENDING = "pending"  # not yet submitted
    QUEUED = "queued"
    RUNNING = "running"
    CHECKPOINTING = "checkpointing"  # preempted, still holding devices while saving
    RECOVERING = "recovering"  # interrupted by a failure, waiting out detection/teardown
    DONE = "done"
    SKIPPED = "skipped"  # rejected up front (e.g. wider than the cluster)


_PENDING = JobState.PENDING  # aliases: enum member lookups are slow on the hot path
_RUNNING = JobState.RUNNING
_NAN = float("nan")


class JobRecord:
    """A job's run-time state, owned by the engine; policies must treat it as read-only.

    Work is in seconds at full speed. ``remaining`` and ``attained`` are exact
    at ``updated``; use :meth:`remaining_at` / :meth:`attained_at` for "now".
    """

    __slots__ = (
        "attained",
        "devices",
        "end",
        "epoch",
        "failures",
        "first_start",
        "id",
        "job",
        "lost_work",
        "num_gpus",
        "order",
        "overhead_until",
        "preemptions",
        "queue_level",
        "queue_order",
        "reclaimed",
        "remaining",
        "run_start",
        "run_time",
        "saved",
        "speed",
        "state",
        "updated",
    )

    def __init__(self, job: Job, order: int) -> None:
        self.job = job
        self.id = job.id
        self.num_gpus = job.num_gpus
        self.order = order  # FIFO position: (submit_time, trace seq) rank
        self.state = _PENDING
        self.remaining = job.duration
        self.attained = 0.0  # seconds spent running (wall, incl. restore overhead)
        self.run_time = 0.0  # total seconds holding devices
        self.devices: tuple[int, ...] = ()
        self.first_start = _NAN
        self.end = _NAN
        self.run_start = _NAN
        self.updated = 0.0
        self.overhead_until = 0.0  # restore overhead ends at this time
        self.speed = 1.0
        self.preemptions = 0
        self.reclaimed = 0  # of those preemptions, by another tenant reclaiming nodes
        self.failures = 0  # interruptions by outages
        self.lost_work = 0.0  # work (s at full speed) redone because of failures
        self.saved = 0.0  # work safely checkpointed (s at full speed)
        self.epoch = 0  # bumped at every start/stop; stale completion events are ignored
        self.queue_level = 0  # free for policies that keep priority queues (e.g. LAS)
        self.queue_order = float(order)

    # convenience proxies (``id`` and ``num_gpus`` are copied into slots for speed)
    @property
    def submit_time(self) -> float:
        """Arrival time (s)."""
        return self.job.submit_time

    @property
    def duration(self) -> float:
        """Total work (s at full speed)."""
        return self.job.duration

    def remaining_at(self, now: float) -> float:
        """Work left at ``now`` (s at full speed)."""
        if self.state is not _RUNNING:
            return self.remaining
        # = max(0, remaining - max(0, now - max(updated, overhead_until)) * speed), unrolled:
        # policies call this for every running job at every pass
        start = self.updated if self.updated >= self.overhead_until else self.overhead_until
        if now <= start:
            return self.remaining
        left = self.remaining - (now - start) * self.speed
        return left if left > 0.0 else 0.0

    def attained_at(self, now: float) -> float:
        """Seconds this job has executed by ``now`` (LAS' attained service)."""
        if self.state is not _RUNNING:
            return self.attained
        return self.attained + (now - self.updated)

    def __repr__(self) -> str:
        return f"JobRecord({self.job.id!r}, {self.state.value}, remaining={self.remaining:.1f})"


PlacementFn = Callable[[Job, "ClusterState"], "tuple[int, ...] | None"]
"""A placement policy: devices for a job on a cluster state, or None if it does not fit."""


class ClusterView:
    """What a scheduler may read. Built by the engine; do not mutate what it returns.

    Valid only during the engine's run: when the run ends the engine detaches it (so the
    finished engine is not kept alive by a cycle), and reading it then raises.
    """

    def __init__(self, engine: Any) -> None:
        self._e = engine
        self._state = engine.state
        self._placement = engine.placement

    def _detach(self) -> None:
        """Called by the engine when its run ends: the view is valid only during a run."""
        self._e = None

    @property
    def now(self) -> float:
        """Current simulated time (s)."""
        return float(self._e.now)

    @property
    def cluster(self) -> Cluster:
        """Static hardware description."""
        return self._e.cluster  # type: ignore[no-any-return]

    @property
    def state(self) -> ClusterState:
        """Device occupancy and placement indexes (read-only)."""
        return self._e.state  # type: ignore[no-any-return]

    @property
    def capacity(self) -> int:
        """Number of devices in the cluster."""
        return self._e.cluster.num_devices  # type: ignore[no-any-return]

    @property
    def free_count(self) -> int:
        """Fully free devices right now."""
        return self._state.free_total  # type: ignore[no-any-return]

    @property
    def queue(self) -> Iterator[JobRecord]:
        """Waiting jobs in FIFO order (submit time, then trace order)."""
        return self._e.iter_queue()  # type: ignore[no-any-return]

    @property
    def queue_length(self) -> int:
        """Number of waiting jobs."""
        return self._e.queue_length()  # type: ignore[no-any-return]

    @property
    def running(self) -> Iterable[JobRecord]:
        """Running jobs (in start order)."""
        return self._e.running.values()  # type: ignore[no-any-return]

    @property
    def power_draw_w(self) -> float | None:
        """Facility power draw now (W), or None when the scenario has no power model."""
        pc = self._e.power_cap
        return None if pc is None else float(pc.draw_w)

    @property
    def power_headroom_w(self) -> float | None:
        """Power cap minus draw (W); None without a power model, inf without a cap."""
        pc = self._e.power_cap
        return None if pc is None else float(pc.headroom_w)

    def power_fits(self, devices: tuple[int, ...], milli: int = 1000) -> bool:
        """Whether starting a job on ``devices`` keeps the draw within the cap."""
        pc = self._e.power_cap
        return True if pc is None else bool(pc.fits(devices, milli))

    def job(self, job_id: str) -> JobRecord:
        """The record of a submitted job."""
        return self._e.records[job_id]  # type: ignore[no-any-return]

    def place(
        self, job: JobRecord | Job, placement: PlacementFn | None = None
    ) -> tuple[int, ...] | None:
        """Devices for ``job`` under the scenario's placement policy (or ``placement``)."""
        j = job.job if type(job) is JobRecord else job
        return (placement or self._placement)(j, self._state)  # type: ignore[arg-type]

    def fits_count(self, job: JobRecord | Job) -> bool:
        """Cheap necessary condition: enough fully free devices for a whole-device job."""
        j = job.job if isinstance(job, JobRecord) else job
        return j.is_shared or j.num_gpus <= self._e.state.free_total


class Scheduler:
    """Base class of scheduling policies. Override :meth:`schedule`; hooks are optional.

    ``params`` from the scenario arrive as keyword arguments of ``__init__``.
    """

    name: ClassVar[str] = "scheduler"
    preemptive: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"unexpected parameters {sorted(params)}")

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        """A job arrived (it is already in ``view.queue``)."""

    def on_finish(self, job: JobRecord, view: ClusterView) -> None:
        """A job completed and released its devices."""

    def on_requeue(self, job: JobRecord, view: ClusterView) -> None:
        """A preempted job is back in the queue (checkpoint done, devices released)."""

    def on_interrupt(self, job: JobRecord, view: ClusterView) -> None:
        """A failure stopped ``job`` (it no longer runs; it is requeued after recovery)."""

    def on_outage(self, nodes: tuple[int, ...], view: ClusterView) -> None:
        """Nodes failed (their devices are down until repaired)."""

    def schedule(self, view: ClusterView) -> Iterable[Action]:
        """Actions to take now; a generator is applied action by action."""
        raise NotImplementedError
