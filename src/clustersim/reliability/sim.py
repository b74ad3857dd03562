"""Fast discrete-event simulation of gang training jobs under failures, repairs and checkpoints.

Owns :func:`simulate`. The only events are failures (pre-drawn, time-ordered,
from :func:`~clustersim.reliability.failures.generate_failures` or a trace) and
the ends of recovery stages; checkpoints inside a run are handled in closed form
by :class:`~clustersim.reliability.checkpoint.CycleTimeline`, so a 60-day run of a
100k-device job costs a few thousand loop steps.

Model (pinned; the tests rely on it):

* Pool: jobs get consecutive node ids in list order, then warm spares, then the
  cold reserve (:class:`~clustersim.reliability.recovery.SparePool`).
* A failure drains its nodes until ``time + repair_time`` (a later failure of a
  node under repair extends it to the later end). It hits every job that owns
  one of its nodes, in job order; a job also reacts when a node it has reserved
  as a replacement is drained.
* Job phases: launch -> run -> [detect -> teardown -> queue -> restart -> load ->
  run]... A failure while *running* (compute or checkpoint) rolls the job back to
  its last committed checkpoint (lost work) and starts detection (crash:
  ``detection``, hang: ``hang_detection``). A failure during launch, restart or
  load aborts the stage (its elapsed time stays in its category) and starts a
  new detection: both count as interruptions. A failure during detection,
  teardown or queueing is *absorbed*: its nodes are drained and replaced at
  (re)scheduling, with no new detection.
* Rescheduling at teardown end: drained job nodes are released; if none and
  ``restart_in_place`` the job restarts on its nodes. Otherwise the scheduler
  decides after ``reschedule`` and takes, for each missing node, the free node
  available earliest -- warm spare: max(decision, warm time) + ``hot_swap``;
  healthy cold node: decision + ``reserve_provision``; node under repair: its
  repair end + ``reserve_provision`` -- ties broken by lowest node id. The queue
  ends when the last replacement is available. A reserved node or kept node that
  fails during the queue is replaced the same way (decision time unchanged).
* After each queue the warm pool is refilled to its target from healthy cold
  nodes, lowest id first, each warm ``reserve_provision`` later; repaired nodes
  come back cold.
* A job whose first start finds drained nodes queues for replacements and then
  launches. After a restart the checkpoint is loaded, unless the job has no
  committed progress yet (then it runs straight away).
* Restore: from the in-memory tier unless every node of some peer group was
  drained at once (peer groups are strided across the job -- slot i with slots
  i + k * (n // replicas) -- so replicas sit under different switches); then
  the job rolls back to the storage tier and the extra rolled-back compute is
  lost work. Load time comes from the checkpoint cost model.
* Ties: a stage ending at the same instant as a failure ends first; failures at
  the same instant are applied in sequence order; jobs are visited in list order.
* At the horizon every open stage is closed; compute not yet checkpointed is
  counted as productive (the job goes on past the window).

RNG: the failure sequence is drawn first (unless given), then one draw per
stage in event order. Same seed and inputs give identical results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from clustersim.errors import ConfigError
from clustersim.reliability.checkpoint import (
    CheckpointCosts,
    CycleTimeline,
    checkpoint_costs,
    resolve_interval,
)
from clustersim.reliability.failures import (
    ClusterLayout,
    FailureEvent,
    generate_failures,
    job_failure_rate,
)
from clustersim.reliability.metrics import LOST_CATEGORIES, JobMetrics, ReliabilityResult
from clustersim.reliability.recovery import ReliabilityConfig

_WAIT, _LAUNCH, _RUN, _DETECT, _TEARDOWN, _QUEUE, _RESTART, _LOAD, _DONE = range(9)
_PHASE_NAME = {
    _WAIT: "not_started",
    _LAUNCH: "launch",
    _RUN: "run",
    _DETECT: "detection",
    _TEARDOWN: "teardown",
    _QUEUE: "queueing",
    _RESTART: "restart",
    _LOAD: "checkpoint_load",
    _DONE: "done",
}
_PHASE_CATEGORY = {
    _LAUNCH: "restart",
    _DETECT: "detection",
    _TEARDOWN: "teardown",
    _QUEUE: "queueing",
    _RESTART: "restart",
    _LOAD: "checkpoint_load",
}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A gang job for the reliability simulator.

    ``nodes``: nodes it holds; ``start``: first start (s); ``work``: compute
    seconds to finish (``None`` = runs until the horizon).
    """

    name: str
    nodes: int
    start: float = 0.0
    work: float | None = None


class _Job:
    def __init__(self, idx: int, spec: JobSpec, nodes: NDArray[np.int64], devices: int) -> None:
        self.idx = idx
        self.spec = spec
        self.nodes = nodes.copy()
        self.devices = devices
        self.phase = _WAIT
        self.phase_start = spec.start
        self.phase_end = spec.start
        self.t0 = 0.0
        self.base = 0.0
        self.progress = 0.0
        self.storage_abs = 0.0
        self.mem_ok = True
        self.acc = dict.fromkeys(LOST_CATEGORIES, 0.0)
        self.interruptions = 0
        self.absorbed = 0
        self.run_time = 0.0
        self.run_interruptions = 0
        self.memory_fallbacks = 0
        self.capacity_waits = 0
        self.by_kind: dict[str, int] = {}
        self.by_category: dict[str, int] = {}
        self.pending = np.empty(0, dtype=np.int64)
        self.sched_time = 0.0
        self.end = math.nan
        self.completed = False
        self.launched = False
        self.interval = math.inf
        self.costs: CheckpointCosts | None = None
        self.timeline: CycleTimeline | None = None


class _Sim:
    def __init__(
        self,
        config: ReliabilityConfig,
        jobs: Sequence[JobSpec],
        horizon: float,
        rng: np.random.Generator,
        failures: Sequence[FailureEvent] | None,
        layout: ClusterLayout | None,
        record_timeline: bool,
    ) -> None:
        self.cfg = config
        self.rng = rng
        self.horizon = horizon
        fm = config.failures
        job_nodes = sum(j.nodes for j in jobs)
        self.hot_target, reserve = config.spares.counts(job_nodes)
        pool = job_nodes + self.hot_target + reserve
        if layout is None:
            layout = ClusterLayout.for_model(fm, pool)
        elif layout.num_nodes < job_nodes:
            raise ConfigError(f"layout has {layout.num_nodes} nodes but the jobs need {job_nodes}")
        self.layout = layout
        n = layout.num_nodes
        explicit = failures is not None or fm.trace is not None
        if failures is None:
            failures = generate_failures(fm, layout, horizon, rng)
        self.events = failures
        self.owner = np.full(n, -1, dtype=np.int64)
        self.reserved_by = np.full(n, -1, dtype=np.int64)
        self.reserved_avail = np.full(n, math.inf)
        self.repair_until = np.zeros(n)
        self.warm = np.zeros(n, dtype=bool)
        self.warm_at = np.zeros(n)
        self.ids = np.arange(n, dtype=np.int64)
        self.timeline: list[tuple[str, str, float, float]] | None = [] if record_timeline else None
        self.jobs: list[_Job] = []
        first = 0
        for i, spec in enumerate(jobs):
            if spec.nodes <= 0:
                raise ConfigError(f"job '{spec.name}' needs nodes > 0, got {spec.nodes}")
            if spec.work is not None and spec.work <= 0:
                raise ConfigError(f"job '{spec.name}' needs work > 0 seconds, got {spec.work}")
            ids = np.arange(first, first + spec.nodes, dtype=np.int64)
            first += spec.nodes
            self.owner[ids] = i
            devices = int(layout.devices_per_node[ids].sum())
            job = _Job(i, spec, ids, devices)
            mttf = self._mttf(ids, explicit)
            job.interval = resolve_interval(config.checkpoint, devices, mttf)
            job.costs = checkpoint_costs(config.checkpoint, devices, job.interval)
            job.timeline = CycleTimeline(job.interval, job.costs)
            self.jobs.append(job)
        hot_end = min(n, first + self.hot_target)
        self.warm[first:hot_end] = True

    # -- helpers ---------------------------------------------------------------------------

    def _mttf(self, ids: NDArray[np.int64], explicit: bool) -> float:
        fm = self.cfg.failures
        if not explicit:
            rate = job_failure_rate(fm, self.layout, ids.tolist())
            return 1.0 / rate if rate > 0 else math.inf
        mine = set(ids.tolist())
        hits = sum(1 for e in self.events if e.time < self.horizon and mine.intersection(e.nodes))
        return self.horizon / hits if hits else math.inf

    def _record(self, job: _Job, phase: int, start: float, end: float) -> None:
        if self.timeline is not None and end > start:
            self.timeline.append((job.spec.name, _PHASE_NAME[phase], start, end))

    def _enter(self, job: _Job, phase: int, t: float, duration: float) -> None:
        job.phase, job.phase_start, job.phase_end = phase, t, t + duration

    def _close_stage(self, job: _Job, t: float) -> None:
        job.acc[_PHASE_CATEGORY[job.phase]] += t - job.phase_start
        self._record(job, job.phase, job.phase_start, t)

    def _start_run(self, job: _Job, t: float) -> None:
        job.launched = True
        job.t0 = t
        job.base = job.progress
        job.mem_ok = True
        assert job.timeline is not None
        end = math.inf
        if job.spec.work is not None:
            end = t + job.timeline.time_to_progress(max(job.spec.work - job.base, 0.0))
        self._enter(job, _RUN, t, end - t)

    def _close_run(self, job: _Job, t: float, final: bool) -> None:
        """Account a run segment ending at ``t``; on failure roll back to the fast tier."""
        tl, costs = job.timeline, job.costs
        assert tl is not None and costs is not None
        e = t - job.t0
        st = tl.state(e)
        job.acc["checkpoint"] += st.overhead
        job.run_time += e
        self._record(job, _RUN, job.t0, t)
        reached = job.base + st.progress
        if final:
            job.progress = reached
            return
        n_store = tl.committed(e, costs.storage_persist, costs.persist_every)
        job.storage_abs = max(job.storage_abs, job.base + n_store * tl.dt)
        n_fast = tl.committed(e, costs.persist)
        fast = job.base + n_fast * tl.dt if costs.in_memory else job.storage_abs
        job.acc["lost_work"] += reached - fast
        job.progress = fast

    def _check_memory(self, job: _Job, t: float) -> None:
        """Drop the in-memory tier if a whole peer group is drained; roll back to storage."""
        costs = job.costs
        assert costs is not None
        if not costs.in_memory or not job.mem_ok:
            return
        r = costs.replicas
        nodes = job.nodes
        down = np.ones(len(nodes), dtype=bool)
        held = nodes >= 0
        down[held] = self.repair_until[nodes[held]] > t
        n = len(nodes)
        if r <= 1 or n < r:
            lost = bool(down.any()) if r <= 1 else bool(down.all())
        else:
            # strided peer groups: slot i holds its replicas with slots i + k * (n // r)
            g = n // r
            lost = bool(down[: g * r].reshape(r, g).all(axis=0).any())
            if g * r < n:
                lost = lost or bool(down[g * r :].all() and down[: n - g * r].all())
        if lost:
            job.mem_ok = False
            job.memory_fallbacks += 1
            if job.progress > job.storage_abs:
                job.acc["lost_work"] += job.progress - job.storage_abs
                job.progress = job.storage_abs

    def _begin_detection(self, job: _Job, ev: FailureEvent, t: float) -> None:
        job.interruptions += 1
        job.by_kind[ev.kind] = job.by_kind.get(ev.kind, 0) + 1
        job.by_category[ev.category] = job.by_category.get(ev.category, 0) + 1
        rec = self.cfg.recovery
        dist = rec.hang_detection if ev.manifests == "hang" else rec.detection
        self._enter(job, _DETECT, t, dist.draw(self.rng))

    def _reserve(self, job: _Job, k: int, decision: float) -> None:
        """Reserve ``k`` replacement nodes for ``job`` (earliest available, then lowest id)."""
        if k <= 0:
            return
        sp = self.cfg.spares
        swap = sp.hot_swap.draw(self.rng)
        prov = sp.reserve_provision.draw(self.rng)
        cand = self.ids[(self.owner < 0) & (self.reserved_by < 0)]
        rep = self.repair_until[cand]
        down = rep > decision
        warm = self.warm[cand]
        avail = np.where(
            down,
            rep + prov,
            np.where(warm, np.maximum(decision, self.warm_at[cand]) + swap, decision + prov),
        )
        order = np.lexsort((cand, avail))[:k]
        chosen = cand[order]
        self.reserved_by[chosen] = job.idx
        self.reserved_avail[chosen] = avail[order]
        if np.any(down[order]):
            job.capacity_waits += 1
        job.pending = np.concatenate((job.pending, chosen))

    def _queue_end(self, job: _Job) -> float:
        missing = int(np.count_nonzero(job.nodes < 0)) - len(job.pending)
        if missing > 0:
            return math.inf  # the pool cannot staff the job (other jobs hold the nodes)
        if len(job.pending) == 0:
            return job.sched_time
        return max(job.sched_time, float(self.reserved_avail[job.pending].max()))

    def _begin_reschedule(self, job: _Job, t: float) -> None:
        down = self.repair_until[job.nodes] > t
        if not down.any() and self.cfg.recovery.restart_in_place:
            self._enter(job, _RESTART, t, self.cfg.recovery.restart.draw(self.rng))
            return
        gone = job.nodes[down]
        self.owner[gone] = -1
        self.warm[gone] = False
        job.nodes[down] = -1
        job.sched_time = t + self.cfg.recovery.reschedule.draw(self.rng)
        self._reserve(job, int(down.sum()), job.sched_time)
        self._enter(job, _QUEUE, t, self._queue_end(job) - t)

    def _replan(self, job: _Job, t: float) -> None:
        """A kept or reserved node of a queued job was drained: replace it."""
        kept = job.nodes >= 0
        down = np.zeros(len(job.nodes), dtype=bool)
        down[kept] = self.repair_until[job.nodes[kept]] > t
        gone = job.nodes[down]
        self.owner[gone] = -1
        self.warm[gone] = False
        job.nodes[down] = -1
        bad = job.pending[self.repair_until[job.pending] > t]
        if len(bad):
            self.reserved_by[bad] = -1
            self.reserved_avail[bad] = math.inf
            job.pending = job.pending[self.repair_until[job.pending] <= t]
        need = int(np.count_nonzero(job.nodes < 0)) - len(job.pending)
        self._reserve(job, need, max(t, job.sched_time))
        job.phase_end = self._queue_end(job)

    def _refill_warm(self, t: float) -> None:
        free = (self.owner < 0) & (self.reserved_by < 0) & (self.repair_until <= t)
        have = int(np.count_nonzero(free & self.warm))
        deficit = self.hot_target - have
        if deficit <= 0:
            return
        cold = self.ids[free & ~self.warm][:deficit]
        if len(cold) == 0:
            return
        prov = self.cfg.spares.reserve_provision.draw(self.rng)
        self.warm[cold] = True
        self.warm_at[cold] = t + prov

    # -- transitions ----------------------------------------------------------------------

    def _advance(self, job: _Job, t: float) -> None:
        rec = self.cfg.recovery
        ph = job.phase
        if ph == _WAIT:
            if np.any(self.repair_until[job.nodes] > t):
                self._begin_reschedule(job, t)
            elif self.cfg.include_initial_launch:
                self._enter(job, _LAUNCH, t, rec.restart.draw(self.rng))
            else:
                self._start_run(job, t)
            return
        if ph == _RUN:
            self._close_run(job, t, final=True)
            job.phase, job.end, job.completed = _DONE, t, True
            self.owner[job.nodes] = -1
            self.warm[job.nodes] = False
            return
        self._close_stage(job, t)
        if ph == _LAUNCH:
            self._start_run(job, t)
        elif ph == _DETECT:
            self._enter(job, _TEARDOWN, t, rec.teardown.draw(self.rng))
        elif ph == _TEARDOWN:
            self._begin_reschedule(job, t)
        elif ph == _QUEUE:
            slots = np.flatnonzero(job.nodes < 0)
            job.nodes[slots] = job.pending
            self.owner[job.pending] = job.idx
            self.warm[job.pending] = False
            self.reserved_by[job.pending] = -1
            self.reserved_avail[job.pending] = math.inf
            job.pending = np.empty(0, dtype=np.int64)
            self._refill_warm(t)
            nxt = _RESTART if job.launched else _LAUNCH
            self._enter(job, nxt, t, rec.restart.draw(self.rng))
        elif ph == _RESTART:
            costs = job.costs
            assert costs is not None
            if job.progress <= 0.0:
                self._start_run(job, t)  # no checkpoint yet: nothing to load
                return
            load = costs.load_fast if job.mem_ok else costs.load_storage
            self._enter(job, _LOAD, t, load + rec.load_extra.draw(self.rng))
        elif ph == _LOAD:
            self._start_run(job, t)

    def _fail(self, ev: FailureEvent) -> None:
        t = ev.time
        nodes = np.asarray(ev.nodes, dtype=np.int64)
        if nodes.size and (nodes.min() < 0 or nodes.max() >= len(self.owner)):
            raise ConfigError(
                f"failure '{ev.kind}' at t={t} names nodes outside the cluster "
                f"(0..{len(self.owner) - 1}): {list(ev.nodes)}"
            )
        drains = ev.repair_time > 0
        if drains:
            self.repair_until[nodes] = np.maximum(self.repair_until[nodes], t + ev.repair_time)
            self.warm[nodes] = False
        hit = set(self.owner[nodes][self.owner[nodes] >= 0].tolist())
        if drains:
            hit.update(self.reserved_by[nodes][self.reserved_by[nodes] >= 0].tolist())
        for j in sorted(hit):
            job = self.jobs[j]
            ph = job.phase
            if ph == _RUN:
                self._close_run(job, t, final=False)
                job.run_interruptions += 1
                self._check_memory(job, t)
                self._begin_detection(job, ev, t)
            elif ph in (_LAUNCH, _RESTART, _LOAD):
                self._close_stage(job, t)
                self._check_memory(job, t)
                self._begin_detection(job, ev, t)
            elif ph in (_DETECT, _TEARDOWN):
                job.absorbed += 1
                self._check_memory(job, t)
            elif ph == _QUEUE:
                job.absorbed += 1
                self._check_memory(job, t)
                if drains:
                    self._replan(job, t)

    def run(self) -> ReliabilityResult:
        events, horizon = self.events, self.horizon
        fi, nf = 0, len(events)
        jobs = self.jobs
        while True:
            tj, jj = math.inf, -1
            for job in jobs:
                if job.phase != _DONE and job.phase_end < tj:
                    tj, jj = job.phase_end, job.idx
            tf = events[fi].time if fi < nf else math.inf
            if min(tj, tf) >= horizon:
                break
            if tj <= tf:
                self._advance(jobs[jj], tj)
            else:
                self._fail(events[fi])
                fi += 1
        for job in jobs:
            if job.phase == _DONE:
                continue
            if job.phase == _WAIT:
                job.end = job.spec.start
                continue
            if job.phase == _RUN:
                self._close_run(job, horizon, final=True)
            else:
                self._close_stage(job, horizon)
            job.end = horizon
        n_in = 0
        by_kind: dict[str, int] = {}
        for e in events:
            if e.time < horizon:
                n_in += 1
                by_kind[e.kind] = by_kind.get(e.kind, 0) + 1
        metrics = [
            JobMetrics(
                name=j.spec.name,
                nodes=j.spec.nodes,
                devices=j.devices,
                start=j.spec.start,
                end=j.end,
                productive=j.progress,
                lost=dict(j.acc),
                interruptions=j.interruptions,
                absorbed_failures=j.absorbed,
                run_time=j.run_time,
                run_interruptions=j.run_interruptions,
                memory_fallbacks=j.memory_fallbacks,
                capacity_waits=j.capacity_waits,
                completed=j.completed,
                checkpoint_interval=j.interval,
                interruptions_by_kind=dict(sorted(j.by_kind.items())),
                interruptions_by_category=dict(sorted(j.by_category.items())),
            )
            for j in jobs
        ]
        return ReliabilityResult(
            jobs=metrics,
            cluster_nodes=self.layout.num_nodes,
            cluster_devices=self.layout.num_devices,
            horizon=horizon,
            failures=n_in,
            failures_by_kind=dict(sorted(by_kind.items())),
            timeline=self.timeline,
        )


def simulate(
    config: ReliabilityConfig,
    jobs: Sequence[JobSpec] | JobSpec,
    *,
    horizon: float,
    rng: np.random.Generator,
    failures: Sequence[FailureEvent] | None = None,
    layout: ClusterLayout | None = None,
    record_timeline: bool = False,
) -> ReliabilityResult:
    """Simulate ``jobs`` over ``[0, horizon)`` seconds under ``config``.

    Args:
        config: failure model, recovery pipeline, spare pool and checkpoint policy.
        jobs: one job or several (they share the spare pool).
        horizon: end of the simulated window (seconds).
        rng: the only source of randomness.
        failures: a time-ordered failure sequence to use instead of drawing one
            (e.g. a trace, or the same draw reused across a parameter sweep).
        layout: the cluster; default: a uniform layout of jobs + spares from
            ``config.failures`` (devices per node, switch and power grouping).
        record_timeline: keep every phase interval for plotting.

    Young/Daly intervals use the job MTTF from the failure model (exact rate of
    the components feeding the job's initial nodes); when ``failures`` is given
    or the model reads a trace, the MTTF is estimated from that sequence.
    """
    if not math.isfinite(horizon) or horizon <= 0:
        raise ConfigError(f"horizon must be a finite number of seconds > 0, got {horizon}")
    job_list = [jobs] if isinstance(jobs, JobSpec) else list(jobs)
    if not job_list:
        raise ConfigError("simulate needs at least one job")
    names = [j.name for j in job_list]
    if len(set(names)) != len(names):
        raise ConfigError(f"job names must be unique, got {names}")
    for prev, cur in zip(failures or (), (failures or ())[1:], strict=False):
        if cur.time < prev.time:
            raise ConfigError(
                f"failure sequence is not time-ordered: t={cur.time} after t={prev.time}"
            )
    return _Sim(config, job_list, horizon, rng, failures, layout, record_timeline).run()


__all__ = ["JobSpec", "simulate"]
