"""The discrete-event engine: owns simulated time, every state change, and the invariants.

This is the only module that imports simpy. Events are simpy timeouts with
callbacks (no per-job processes): job arrivals (one chained timeout per
distinct arrival instant), completions (one per run segment; a stale one is
recognised by the job's ``epoch`` and ignored), checkpoint ends, scheduler
wake-ups and the optional round interval. After every batch of events at one
instant the scheduler runs once (a zero-delay timeout queued behind the
events already scheduled for that instant).

Each action a policy produces is validated before it is applied: the job must
exist and be in the right state, a gang gets exactly the devices it asked for,
of its device type, none over-booked or down. A violation stops the run with
a :class:`~clustersim.errors.SchedulerError` naming the policy, the job and the
devices; the partial result so far rides on the exception as ``.partial``.

Per-event work is O(k + log N) for a job of k devices on N nodes (see
:mod:`clustersim.state`); the utilization series is recorded at change
points, so integrating it is exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
import simpy

from clustersim.errors import ClusterSimError, SchedulerError, SimulationError
from clustersim.gcpause import paused_gc
from clustersim.schedulers.base import (
    ClusterView,
    JobRecord,
    JobState,
    PlacementFn,
    Preempt,
    Scheduler,
    Start,
    WakeUp,
)
from clustersim.state import FULL, CapacityError, ClusterState
from clustersim.topology import Cluster
from clustersim.workload.job import Job

# enum member lookups cost ~0.2 us each on Python 3.11; the hot path uses these aliases
_QUEUED = JobState.QUEUED
_RUNNING = JobState.RUNNING
_CHECKPOINTING = JobState.CHECKPOINTING
_RECOVERING = JobState.RECOVERING
_DONE = JobState.DONE
_SKIPPED = JobState.SKIPPED


@dataclass(frozen=True, slots=True)
class Outage:
    """Nodes that fail at ``time`` (absolute simulated seconds).

    Every job holding a device on those nodes is interrupted: it loses the work
    done since its last checkpoint and re-enters the queue after the recovery
    delay. The nodes' devices leave the free pool for ``repair_s`` seconds
    (0 = restart in place: jobs are interrupted, devices stay available).
    Overlapping outages of a node keep it down until the latest repair ends.
    """

    time: float
    nodes: tuple[int, ...]
    repair_s: float
    kind: str = "failure"


@dataclass(frozen=True, slots=True)
class Reclaim:
    """From ``time`` on, another tenant (e.g. a serving pool) holds ``nodes`` whole nodes.

    A step function: each ``Reclaim`` sets the number of nodes held, it does not add.
    Growing the holding takes nodes that are not down and not already held, fewest
    allocated devices first (idle nodes first), ties by lowest node index; every job
    with a device on a taken node is preempted exactly as by a scheduler's ``Preempt``
    (progress kept, ``checkpoint_s`` spent holding its devices, ``restore_s`` on
    restart) and counted in ``preemptions``/``reclaimed``; a taken device leaves the
    free pool as soon as it is idle. Shrinking returns the most recently taken nodes
    first (LIFO). If fewer nodes are available than asked, all available ones are
    taken and the shortfall is reported in the result's notes.
    """

    time: float
    nodes: int


SpeedModel = Callable[[Job, tuple[int, ...], Cluster], float]
"""Speed (0 < s <= 1) of ``job`` on ``devices``; work advances ``s`` seconds per second."""


def ideal_speed(job: Job, devices: tuple[int, ...], cluster: Cluster) -> float:
    """``network: ideal``: placement never slows a job."""
    return 1.0


@dataclass
class EngineResult:
    """Raw tables recorded by one run (metrics are computed from these)."""

    records: list[JobRecord]
    util_t: np.ndarray  # change-point times (s)
    util_milli: np.ndarray  # allocated milli-devices from util_t[i] to util_t[i+1]
    queue_len: np.ndarray  # waiting jobs from util_t[i]
    running: np.ndarray  # running jobs from util_t[i]
    down: np.ndarray  # devices down (failed, under repair, reclaimed) from util_t[i]
    segments: list[tuple[str, float, float, tuple[int, ...]]]  # (job, start, end, devices)
    power_w: np.ndarray  # facility power draw (W) from util_t[i]; zeros without a model
    power_cap_w: float | None  # the cap the run enforced
    outages: int  # outage events processed
    capacity: int
    end_time: float
    start_time: float
    events: int
    passes: int
    wall_s: float
    stopped_by: str  # "drained" | "horizon" | "stalled" | "error"
    notes: list[str] = field(default_factory=list)
    reclaim_preemptions: int = 0  # jobs preempted because another tenant took their nodes
    held: np.ndarray = field(  # of ``down``, devices held by reclaims from util_t[i]
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )


class Engine:
    """Runs jobs on a cluster under a scheduling policy. Use :meth:`run` once."""

    def __init__(
        self,
        cluster: Cluster,
        jobs: Sequence[Job],
        scheduler: Scheduler,
        placement: PlacementFn,
        *,
        speed_model: SpeedModel = ideal_speed,
        checkpoint_s: float = 0.0,
        restore_s: float = 0.0,
        horizon: float | None = None,
        interval: float | None = None,
        progress: bool = False,
        policy_name: str | None = None,
        outages: Sequence[Outage] = (),
        power_cap: Any = None,
        checkpoint_interval: float | None = None,
        recovery_s: float = 0.0,
        reclaims: Sequence[Reclaim] = (),
    ) -> None:
        self.cluster = cluster
        self.state = ClusterState(cluster)
        self.scheduler = scheduler
        self.policy = policy_name or scheduler.name
        self.placement = placement
        self.speed_model = speed_model
        self._ideal = speed_model is ideal_speed
        self.checkpoint_s = checkpoint_s
        self.restore_s = restore_s
        self.horizon = horizon
        self.interval = interval
        self.progress = progress
        ordered = sorted(jobs, key=attrgetter("submit_time", "seq"))
        self.records: dict[str, JobRecord] = {}
        with paused_gc():
            records = self.records
            for i, j in enumerate(ordered):
                records[j.id] = JobRecord(j, i)
        if len(records) != len(ordered):
            seen: set[str] = set()
            for j in ordered:
                if j.id in seen:
                    raise ClusterSimError(f"duplicate job id '{j.id}' in the workload")
                seen.add(j.id)
        self._arrivals: list[JobRecord] = list(self.records.values())
        self.queue: dict[str, JobRecord] = {}
        self._queue_sorted = True
        self._queue_holes = 0  # deletions since the queue dict was last rebuilt
        self.running: dict[str, JobRecord] = {}
        self.view = ClusterView(self)
        self.env = simpy.Environment(initial_time=ordered[0].submit_time if ordered else 0.0)
        self._pass_pending = False
        self._in_pass = False
        self._deferred_out: list[str] = []
        self._deferred_in: list[JobRecord] = []
        self._wakeups: set[float] = set()
        self._done = 0
        self._events = 0
        self._passes = 0
        self._series: list[float] = []  # flat rows: time, milli, queue, running, down, held
        self._segments: list[tuple[str, float, float, tuple[int, ...]]] = []
        self.outages = sorted(outages, key=lambda o: o.time)
        self.checkpoint_interval = checkpoint_interval
        self.recovery_s = recovery_s
        self.checkpointing: dict[str, JobRecord] = {}
        self.power_cap = power_cap  # clustersim.power.PowerCap or None
        self._power: list[float] = []
        self._up_at: dict[int, float] = {}
        self._outages_seen = 0
        self._bar: Any = None
        for r in reclaims:
            if not (r.nodes >= 0 and math.isfinite(r.time)):
                raise ClusterSimError(f"reclaim at t={r.time} asks for {r.nodes} nodes (need >= 0)")
        self.reclaims = sorted(reclaims, key=lambda r: r.time)
        self._held: list[int] = []  # reclaimed nodes, in the order they were taken
        self._held_set: set[int] = set()
        self._held_devices = 0  # devices of reclaimed nodes out of the free pool
        self._reclaim_short = 0  # largest shortfall seen (nodes)
        self.reclaim_preemptions = 0

    # ------------------------------------------------------------------ view support
    @property
    def now(self) -> float:
        """Current simulated time."""
        return float(self.env.now)

    def iter_queue(self) -> Iterator[JobRecord]:
        """Waiting jobs in FIFO order (used by :attr:`ClusterView.queue`)."""
        if not self._queue_sorted:
            self.queue = dict(sorted(self.queue.items(), key=lambda kv: kv[1].order))
            self._queue_sorted = True
            self._queue_holes = 0
        queued = _QUEUED
        return (r for r in self.queue.values() if r.state is queued)

    def queue_length(self) -> int:
        """Number of waiting jobs."""
        return len(self.queue) - len(self._deferred_out)

    # ------------------------------------------------------------------ recording
    def _record(self) -> None:
        if self.power_cap is not None:
            self._power.append(self.power_cap.draw_w)
        state = self.state
        self._series += (
            self.env.now,
            state.used_milli_total,
            len(self.queue) - len(self._deferred_out),
            len(self.running),
            len(state.down),
            self._held_devices,
        )

    def _series_arrays(self) -> tuple[np.ndarray, ...]:
        """Change-point series: the last record of each instant, unchanged steps merged.

        Returns time, allocated milli-devices, queue length, running jobs, devices down,
        of those the ones held by reclaims, and facility power (W; zeros without a power
        model).
        """
        if not self._series:
            z = np.zeros(0)
            zi = z.astype(np.int64)
            return z, zi, zi, zi, zi, zi, z
        a = np.array(self._series, dtype=float).reshape(-1, 6)
        p = np.array(self._power, dtype=float) if self._power else np.zeros(len(a))
        t = a[:, 0]
        keep = np.append(t[1:] != t[:-1], True)
        a, p = a[keep], p[keep]
        vals = np.column_stack([a[:, 1:], p])
        changed = np.append(True, (vals[1:] != vals[:-1]).any(axis=1))
        a, p = a[changed], p[changed]
        ints = a[:, 1:].astype(np.int64)
        return a[:, 0], ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3], ints[:, 4], p

    # ------------------------------------------------------------------ scheduling
    def _after_event(self) -> None:
        """Run the pending pass if no other event is due at this instant (called by callbacks)."""
        if self._pass_pending and self.env.peek() != self.env.now:
            self._run_pass()

    def _run_pass(self) -> None:
        self._pass_pending = False
        self._passes += 1
        self._in_pass = True
        try:
            actions = self.scheduler.schedule(self.view)
            if actions is not None:
                start = self._start
                for action in actions:
                    if type(action) is Start:
                        start(action)
                    else:
                        self._apply(action)
        except ClusterSimError:
            raise
        except Exception as exc:
            raise SchedulerError(
                self.policy, f"raised {type(exc).__name__}: {exc}", time=self.now
            ) from exc
        finally:
            self._in_pass = False
        out = self._deferred_out
        if out:
            queue = self.queue
            for jid in out:
                del queue[jid]
            self._queue_holes += len(out)
            out.clear()
            if self._queue_holes > 64 + len(queue):
                # a dict keeps deleted slots until it grows again, and iterating it walks
                # them: FIFO deletes at the front, so without this ``view.queue`` would cost
                # O(jobs started so far) per pass. Compacting is amortised O(1) per start.
                self.queue = dict(queue)
                self._queue_holes = 0
        if self._deferred_in:
            back, self._deferred_in = self._deferred_in, []
            for rec in back:
                self._enqueue(rec, requeue=True)
            self._pass_pending = True
        self._record()
        if self._pass_pending:  # requeued jobs: one more pass at this instant
            self.env.timeout(0).callbacks.append(self._zero_delay)

    def _zero_delay(self, _ev: Any) -> None:
        self._events += 1
        self._after_event()

    def _apply(self, action: Any) -> None:
        if isinstance(action, Start):
            self._start(action)
        elif isinstance(action, Preempt):
            self._preempt(action.job)
        elif isinstance(action, WakeUp):
            self._wake_at(action.at)
        else:
            raise SchedulerError(
                self.policy,
                f"returned {action!r}, which is not an action (Start, Preempt or WakeUp)",
                time=self.now,
            )

    def _start(self, action: Start) -> None:
        rec = self.records.get(action.job)
        devices = action.devices
        if type(devices) is not tuple:
            devices = tuple(devices)
        if rec is None:
            raise SchedulerError(
                self.policy, "asked to start an unknown job", action.job, devices, self.now
            )
        if rec.state is not _QUEUED:
            raise SchedulerError(
                self.policy,
                f"asked to start a job that is {rec.state.value}",
                rec.id,
                devices,
                self.now,
            )
        job = rec.job
        if len(devices) != job.num_gpus:
            raise SchedulerError(
                self.policy,
                f"gang needs exactly {job.num_gpus} devices, got {len(devices)}",
                rec.id,
                devices,
                self.now,
            )
        if job.device_type is not None:
            node_of, types = self.cluster.node_of, self.cluster.node_type
            n = self.cluster.num_devices
            ok = set(job.device_type.split("|"))
            wrong = [d for d in devices if 0 <= d < n and types[int(node_of[d])] not in ok]
            if wrong:
                raise SchedulerError(
                    self.policy,
                    f"job needs device type {job.device_type}; device {wrong[0]} is "
                    f"{types[int(node_of[wrong[0]])]}",
                    rec.id,
                    devices,
                    self.now,
                )
        pc = self.power_cap
        if pc is not None and not pc.fits(devices, job.gpu_milli):
            raise SchedulerError(
                self.policy,
                f"starting it would draw {pc.draw_after(devices, job.gpu_milli) / 1e3:.1f} kW, "
                f"over the power cap of {pc.cap_w / 1e3:.1f} kW (read view.power_headroom_w)",
                rec.id,
                devices,
                self.now,
            )
        try:
            self.state.allocate(devices, job.gpu_milli)
        except CapacityError as exc:
            raise SchedulerError(self.policy, str(exc), rec.id, devices, self.now) from None
        if pc is not None:
            pc.allocate(devices, job.gpu_milli, check=False)
        now = self.env.now
        if self._in_pass:
            self._deferred_out.append(rec.id)
        else:
            del self.queue[rec.id]
            self._queue_holes += 1
        rec.state = _RUNNING
        rec.devices = devices
        rec.epoch += 1
        rec.run_start = now
        rec.updated = now
        if math.isnan(rec.first_start):
            rec.first_start = now
            rec.overhead_until = now
        else:
            rec.overhead_until = now + self.restore_s
        speed = 1.0 if self._ideal else self.speed_model(job, devices, self.cluster)
        if not (speed > 0.0 and math.isfinite(speed)):
            raise SimulationError(f"speed model returned {speed} for job '{rec.id}'")
        rec.speed = speed
        self.running[rec.id] = rec
        delay = (rec.overhead_until - now) + rec.remaining / speed
        self.env.timeout(delay, (rec, rec.epoch)).callbacks.append(self._on_complete)

    def _preempt(self, jid: str) -> None:
        rec = self.records.get(jid)
        if rec is None:
            raise SchedulerError(self.policy, "asked to preempt an unknown job", jid, time=self.now)
        if rec.state is not _RUNNING:
            raise SchedulerError(
                self.policy,
                f"asked to preempt a job that is {rec.state.value}",
                jid,
                rec.devices,
                self.now,
            )
        now = self.now
        rec.remaining = rec.remaining_at(now)
        rec.attained += now - rec.updated
        rec.updated = now
        rec.epoch += 1
        rec.preemptions += 1
        del self.running[jid]
        if self.checkpoint_s > 0:
            rec.state = _CHECKPOINTING
            self.checkpointing[jid] = rec
            epoch = rec.epoch
            self.env.timeout(self.checkpoint_s, (rec, epoch)).callbacks.append(
                self._checkpoint_done
            )
        else:
            rec.saved = rec.job.duration - rec.remaining
            self._release(rec)
            rec.state = _QUEUED
            if self._in_pass:
                self._deferred_in.append(rec)
            else:
                self._enqueue(rec, requeue=True)

    def _release(self, rec: JobRecord) -> None:
        now = self.env.now
        rec.run_time += now - rec.run_start
        self._segments.append((rec.id, rec.run_start, now, rec.devices))
        self.state.release(rec.devices, rec.job.gpu_milli)
        if self.power_cap is not None:
            self.power_cap.release(rec.devices, rec.job.gpu_milli)
        if self._held_set:
            self._hand_over(rec.devices)

    def _checkpoint_done(self, ev: Any) -> None:
        self._events += 1
        rec, epoch = ev.value
        if rec.epoch == epoch and rec.state is _CHECKPOINTING:
            del self.checkpointing[rec.id]
            rec.saved = rec.job.duration - rec.remaining
            self._release(rec)
            rec.state = _QUEUED
            self._enqueue(rec, requeue=True)
            self._pass_pending = True
        self._after_event()

    def _wake_at(self, at: float) -> None:
        now = self.now
        if not math.isfinite(at):
            raise SchedulerError(self.policy, f"asked to wake up at t={at}", time=now)
        at = max(at, now)
        if at in self._wakeups:
            return
        self._wakeups.add(at)

        def fire(_e: Any) -> None:
            self._events += 1
            self._wakeups.discard(at)
            self._pass_pending = True
            self._after_event()

        self.env.timeout(at - now).callbacks.append(fire)

    # ------------------------------------------------------------------ events
    def _enqueue(self, rec: JobRecord, requeue: bool = False) -> None:
        if self.queue and not requeue:
            pass
        elif self.queue and rec.order < next(reversed(self.queue.values())).order:
            self._queue_sorted = False
        self.queue[rec.id] = rec
        if requeue:
            self.scheduler.on_requeue(rec, self.view)
        else:
            self.scheduler.on_submit(rec, self.view)

    def _arrive(self, index: int) -> None:
        arrivals = self._arrivals
        t = arrivals[index].job.submit_time
        i = index
        n = len(arrivals)
        queue, on_submit, view = self.queue, self.scheduler.on_submit, self.view
        while i < n and arrivals[i].job.submit_time == t:
            rec = arrivals[i]
            i += 1
            self._events += 1
            if rec.state is _SKIPPED:
                continue
            rec.state = _QUEUED
            rec.updated = t
            queue[rec.id] = rec  # arrivals come in FIFO order: the queue stays sorted
            on_submit(rec, view)
        if i < n:
            self.env.timeout(arrivals[i].job.submit_time - t, i).callbacks.append(self._on_arrive)
        self._pass_pending = True
        self._after_event()

    def _on_arrive(self, ev: Any) -> None:
        self._arrive(ev.value)

    def _on_complete(self, ev: Any) -> None:
        self._events += 1
        rec, epoch = ev.value
        if rec.epoch == epoch and rec.state is _RUNNING:
            self._complete(rec)
        self._after_event()

    def _complete(self, rec: JobRecord) -> None:
        now = self.env.now
        rec.attained += now - rec.updated
        rec.updated = now
        rec.remaining = 0.0
        rec.end = now
        rec.state = _DONE
        rec.epoch += 1
        self._release(rec)
        del self.running[rec.id]
        self._done += 1
        self.scheduler.on_finish(rec, self.view)
        if self._bar is not None and self._done % 512 == 0:
            self._bar.update(512)
            self._bar.set_postfix_str(f"t={now / 86400:.2f} d", refresh=False)
        self._pass_pending = True

    def _tick(self, _e: Any = None) -> None:
        self._events += 1
        if self._done + self._skipped >= len(self.records):
            return
        assert self.interval is not None
        self.env.timeout(self.interval).callbacks.append(self._tick)
        self._pass_pending = True
        self._after_event()

    # ------------------------------------------------------------------ failures
    def _on_outage(self, ev: Any) -> None:
        self._events += 1
        self._outages_seen += 1
        outage: Outage = ev.value
        now = self.now
        nodes = set(outage.nodes)
        node_of = self.cluster.node_of
        hit = [
            rec
            for rec in (*self.running.values(), *self.checkpointing.values())
            if any(int(node_of[d]) in nodes for d in rec.devices)
        ]
        for rec in sorted(hit, key=lambda r: r.order):
            self._interrupt(rec, now)
        if outage.repair_s > 0:
            devices: list[int] = []
            until = now + outage.repair_s
            for n in sorted(nodes):
                if self._up_at.get(n, -1.0) < until:
                    self._up_at[n] = until
                devices.extend(self.cluster.node_devices(n))
            self.state.set_down(devices)
            self.env.timeout(outage.repair_s, tuple(sorted(nodes))).callbacks.append(
                self._on_repair
            )
        self.scheduler.on_outage(tuple(sorted(nodes)), self.view)
        self._pass_pending = True
        self._after_event()

    def _interrupt(self, rec: JobRecord, now: float) -> None:
        """A failure kills ``rec``: work since the last checkpoint is lost."""
        if rec.state is _RUNNING:
            progress = rec.remaining_at(now)
            rec.attained += now - rec.updated
            del self.running[rec.id]
        else:  # checkpointing after a preemption: that checkpoint never completes
            progress = rec.remaining
            del self.checkpointing[rec.id]
        done = rec.job.duration - progress
        saved = rec.saved
        c = self.checkpoint_interval
        if c:
            saved = max(saved, math.floor(done / c + 1e-9) * c)
        saved = min(saved, done)
        rec.lost_work += done - saved
        rec.remaining = rec.job.duration - saved
        rec.updated = now
        rec.epoch += 1
        rec.failures += 1
        self._release(rec)
        self.scheduler.on_interrupt(rec, self.view)
        if self.recovery_s > 0:
            rec.state = _RECOVERING
            self.env.timeout(self.recovery_s, (rec, rec.epoch)).callbacks.append(self._recovered)
        else:
            rec.state = _QUEUED
            self._enqueue(rec, requeue=True)

    def _recovered(self, ev: Any) -> None:
        self._events += 1
        rec, epoch = ev.value
        if rec.epoch == epoch and rec.state is _RECOVERING:
            rec.state = _QUEUED
            self._enqueue(rec, requeue=True)
            self._pass_pending = True
        self._after_event()

    def _on_repair(self, ev: Any) -> None:
        self._events += 1
        now = self.now
        back: list[int] = []
        for n in ev.value:
            if self._up_at.get(n, 0.0) <= now + 1e-9:
                self._up_at.pop(n, None)
                if n not in self._held_set:
                    back.extend(self.cluster.node_devices(n))
        if back:
            self.state.set_up(back)
            self._pass_pending = True
        self._after_event()

    # ------------------------------------------------------------------ reclaims
    def _hand_over(self, devices: Sequence[int]) -> None:
        """Take the now idle ``devices`` of reclaimed nodes out of the free pool."""
        node_of, used, held = self.state.node_of, self.state.used, self._held_set
        idle = [d for d in devices if node_of[d] in held and not used[d]]
        if idle:
            before = len(self.state.down)
            self.state.set_down(idle)
            self._held_devices += len(self.state.down) - before

    def _on_reclaim(self, ev: Any) -> None:
        self._events += 1
        want: int = ev.value.nodes
        now = self.now
        c = self.cluster
        if want > len(self._held):
            node_free, down = self.state.node_free, self.state.down
            cand = [
                n
                for n in range(c.num_nodes)
                if n not in self._held_set and self._up_at.get(n, -1.0) <= now
            ]
            # allocated devices = size - fully free - down (idle nodes first), then node index
            cand.sort(
                key=lambda n: (
                    int(c.node_size[n])
                    - node_free[n]
                    - sum(1 for d in c.node_devices(n) if d in down),
                    n,
                )
            )
            take = cand[: want - len(self._held)]
            self._reclaim_short = max(self._reclaim_short, want - len(self._held) - len(take))
            self._held.extend(take)
            self._held_set.update(take)
            nodes = set(take)
            node_of = c.node_of
            hit = [
                rec
                for rec in self.running.values()
                if any(int(node_of[d]) in nodes for d in rec.devices)
            ]
            for rec in sorted(hit, key=lambda r: r.order):
                self.reclaim_preemptions += 1
                rec.reclaimed += 1
                self._preempt(rec.id)
            devs = [d for n in take for d in c.node_devices(n)]
            self._hand_over(devs)
        elif want < len(self._held):
            give = self._held[want:][::-1]
            del self._held[want:]
            back: list[int] = []
            down = self.state.down
            for n in give:
                self._held_set.discard(n)
                downs = [d for d in c.node_devices(n) if d in down]
                self._held_devices -= len(downs)
                if self._up_at.get(n, -1.0) <= now:  # not also down for repair
                    back.extend(downs)
            if back:
                self.state.set_up(back)
        self._pass_pending = True
        self._after_event()

    # ------------------------------------------------------------------ run
    def run(self) -> EngineResult:
        """Simulate until every job ended, the horizon, or nothing can happen any more."""
        wall0 = time.perf_counter()
        self._skipped = sum(1 for r in self._arrivals if r.state is _SKIPPED)
        start_time = float(self.env.now)
        if self._arrivals:
            self.env.timeout(0, 0).callbacks.append(self._on_arrive)
        if self.interval is not None:
            self.env.timeout(self.interval).callbacks.append(self._tick)
        for outage in self.outages:
            if outage.time >= start_time:
                self.env.timeout(outage.time - start_time, outage).callbacks.append(self._on_outage)
        for rc in self.reclaims:
            self.env.timeout(max(rc.time - start_time, 0.0), rc).callbacks.append(self._on_reclaim)
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(self.records) - self._skipped,
                unit="job",
                delay=2.0,
                desc=f"simulating ({self.policy})",
                leave=False,
            )
        self._record()
        stopped = "drained"
        try:
            with paused_gc():
                if self.horizon is not None:
                    self.env.run(until=start_time + self.horizon)
                    if self._done + self._skipped < len(self.records):
                        stopped = "horizon"
                else:
                    self.env.run()
        except ClusterSimError as exc:
            exc.partial = self._result(wall0, start_time, "error")  # type: ignore[attr-defined]
            raise
        finally:
            if self._bar is not None:
                self._bar.close()
            # The view points back at the engine: cut that cycle so the engine, its
            # 10^5 records and jobs are freed by reference counting once the caller
            # drops them, instead of waiting for (and lengthening) a full cyclic-GC
            # pass, e.g. ~0.2 s at interpreter exit after a Philly replay.
            self.view._detach()
        if stopped == "drained" and self._done + self._skipped < len(self.records):
            stopped = "stalled"
        self._record()
        return self._result(wall0, start_time, stopped)

    def _result(self, wall0: float, start_time: float, stopped: str) -> EngineResult:
        now = self.now
        notes: list[str] = []
        for rec in (*self.running.values(), *self.checkpointing.values()):
            self._segments.append((rec.id, rec.run_start, now, rec.devices))
        for rec in self.running.values():  # cut open segments at the end of the run
            rec.remaining = rec.remaining_at(now)
            rec.attained += now - rec.updated
            rec.run_time += now - rec.run_start
            rec.run_start = now
            rec.updated = now
        if stopped == "stalled":
            waiting = [r for r in self.records.values() if r.state is _QUEUED]
            sample = ", ".join(
                f"'{r.id}' ({r.num_gpus} x {r.job.device_type or 'any'})" for r in waiting[:3]
            )
            notes.append(
                f"{len(waiting)} job(s) never started because nothing more could happen "
                f"(no arrival, completion or wake-up left), e.g. {sample}: scheduler "
                f"'{self.policy}' with this placement never placed them"
            )
        if self._reclaim_short:
            notes.append(
                f"reclaims asked for up to {self._reclaim_short} node(s) more than were up and "
                "free of other reclaims; the tenant got fewer nodes than asked"
            )
        util_t, util_milli, queue_len, running, down, held, power = self._series_arrays()
        return EngineResult(
            records=list(self.records.values()),
            util_t=util_t,
            util_milli=util_milli,
            queue_len=queue_len,
            running=running,
            down=down,
            power_w=power,
            power_cap_w=None if self.power_cap is None else self.power_cap.cap_w,
            segments=self._segments,
            outages=self._outages_seen,
            capacity=self.cluster.num_devices,
            end_time=now,
            start_time=start_time,
            events=self._events,
            passes=self._passes,
            wall_s=time.perf_counter() - wall0,
            stopped_by=stopped,
            notes=notes,
            reclaim_preemptions=self.reclaim_preemptions,
            held=held,
        )

    def mark_skipped(self, job_ids: Sequence[str]) -> None:
        """Leave these jobs out of the run (e.g. wider than the cluster); they are counted."""
        for jid in job_ids:
            self.records[jid].state = _SKIPPED


FULL_MILLI = FULL
