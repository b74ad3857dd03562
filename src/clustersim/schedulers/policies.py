"""Built-in scheduling policies: fifo, fifo_backfill, sjf, srtf and las (Tiresias' discretized LAS).

Shared conventions (they move results by tens of percent, so they are pinned):

* **FIFO order** is ``(submit_time, trace position)``; every tie below falls
  back to it.
* Devices come from the scenario's placement policy (``scheduler.placement``,
  default ``first_fit``); a job "fits" when that policy returns devices.
* **Greedy passes** examine candidates in the policy's order and start every
  job that fits in what is left, skipping those that do not (so smaller jobs
  may overtake a blocked one), except ``fifo`` which stops at the first job
  that does not fit.
* The scheduler runs after every batch of events at one instant (arrivals,
  completions, requeues) and at the wake-up times a policy asks for.

Waiting jobs are kept in per-shape queues (same device count, share and device
type) so a pass costs O(shapes) per started job instead of O(queue): within a
shape, jobs that fit are interchangeable for capacity, so the earliest head
among shapes that fit is exactly the job a linear scan would start next.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import Any

from clustersim.errors import ConfigError
from clustersim.schedulers.base import (
    Action,
    ClusterView,
    JobRecord,
    Preempt,
    Scheduler,
    Start,
    WakeUp,
)
from clustersim.schedulers.registry import register

EPS = 1e-6


def _need(rec: JobRecord) -> int:
    """Whole devices a job holds against the device count (0 for fractional jobs)."""
    j = rec.job
    return j.num_gpus if j.gpu_milli >= 1000 else 0


class _Shape:
    __slots__ = ("heap", "key", "need")

    def __init__(self, key: tuple[int, int, str | None]) -> None:
        self.key = key
        self.need = key[0] if key[1] >= 1000 else 0  # whole devices counted against free
        self.heap: list[tuple[Any, int, JobRecord]] = []


class ShapeQueues:
    """Waiting jobs grouped by shape, each shape a heap ordered by a policy key."""

    def __init__(self) -> None:
        self.shapes: dict[tuple[int, int, str | None], _Shape] = {}
        self.size = 0
        self.shared = 0  # waiting jobs that take a fractional device

    def push(self, rec: JobRecord, key: Any) -> None:
        """Add a waiting job with priority ``key`` (smaller first; ties by FIFO order)."""
        j = rec.job
        skey = (j.num_gpus, j.gpu_milli, j.device_type)
        shape = self.shapes.get(skey)
        if shape is None:
            shape = self.shapes[skey] = _Shape(skey)
        heapq.heappush(shape.heap, (key, rec.order, rec))
        self.size += 1
        if not shape.need:
            self.shared += 1

    def best(self, free: int, skip: set[tuple[int, int, str | None]]) -> _Shape | None:
        """The shape whose head has the smallest key among shapes that may fit ``free``."""
        best: _Shape | None = None
        best_key: tuple[Any, int] | None = None
        for shape in self.shapes.values():
            h = shape.heap
            if not h or shape.need > free or shape.key in skip:
                continue
            k = (h[0][0], h[0][1])
            if best_key is None or k < best_key:
                best, best_key = shape, k
        return best

    def has_shared(self) -> bool:
        """True when some waiting job takes a fractional device (it may fit with 0 free)."""
        return self.shared > 0

    def pop(self, shape: _Shape) -> JobRecord:
        """Remove and return the head of ``shape``."""
        self.size -= 1
        if not shape.need:
            self.shared -= 1
        return heapq.heappop(shape.heap)[2]

    def head_key(self, shape: _Shape) -> tuple[Any, int]:
        """Priority of the head of ``shape``."""
        h = shape.heap[0]
        return (h[0], h[1])


def _greedy_starts(
    view: ClusterView, queues: ShapeQueues, free: int | None = None
) -> Iterator[Action]:
    """Start waiting jobs in key order, skipping shapes that do not fit (see module doc).

    Equivalent to repeatedly taking ``queues.best`` (inlined: this is the hot path).
    """
    blocked: set[tuple[int, int, str | None]] = set()
    shapes = queues.shapes.values()
    place = view.place
    state = view.state
    while queues.size:
        left = state.free_total if free is None else free
        best: _Shape | None = None
        best_key: tuple[Any, int] | None = None
        for shape in shapes:
            h = shape.heap
            if not h or shape.need > left or (blocked and shape.key in blocked):
                continue
            head = h[0]
            if best_key is None or (head[0], head[1]) < best_key:
                best, best_key = shape, (head[0], head[1])
        if best is None:
            return
        rec = best.heap[0][2]
        devices = place(rec)
        if devices is None:
            blocked.add(best.key)
            continue
        queues.pop(best)
        yield Start(rec.id, devices)


@register("fifo")
class Fifo(Scheduler):
    """Strict FIFO with head-of-line blocking.

    Rule: walk waiting jobs in FIFO order (submit time, then trace position);
    start each one the placement policy can place; stop at the first job that
    cannot be placed (no job overtakes it). Non-preemptive.
    """

    def schedule(self, view: ClusterView) -> Iterator[Action]:
        for job in view.queue:
            devices = view.place(job)
            if devices is None:
                return
            yield Start(job.id, devices)


@register("fifo_backfill")
class FifoBackfill(Scheduler):
    """Greedy FIFO backfill: every waiting job, in FIFO order, that fits now.

    Rule: walk waiting jobs in FIFO order and start each one the placement
    policy can place, skipping jobs that cannot (no reservation for the
    blocked head, so large jobs may starve). Non-preemptive.
    """

    def __init__(self) -> None:
        self.q = ShapeQueues()

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        self.q.push(job, job.order)  # FIFO order (== the tie-break; one comparison per level)

    on_requeue = on_submit

    def schedule(self, view: ClusterView) -> Iterator[Action] | tuple[()]:
        if not self.q.size or (view.free_count == 0 and not self.q.has_shared()):
            return ()
        return _greedy_starts(view, self.q)


@register("sjf")
class ShortestJobFirst(Scheduler):
    """Shortest job first, non-preemptive, greedy.

    Rule: order waiting jobs by total work ``duration`` (ascending; ties in
    FIFO order) and start each one that can be placed, skipping those that
    cannot. Running jobs are never preempted.
    """

    def __init__(self) -> None:
        self.q = ShapeQueues()

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        self.q.push(job, job.duration)

    def on_requeue(self, job: JobRecord, view: ClusterView) -> None:
        self.q.push(job, job.remaining)

    def schedule(self, view: ClusterView) -> Iterator[Action] | tuple[()]:
        if not self.q.size or (view.free_count == 0 and not self.q.has_shared()):
            return ()
        return _greedy_starts(view, self.q)


@register("srtf")
class ShortestRemainingTimeFirst(Scheduler):
    """Preemptive shortest remaining time first.

    Rule, at every pass: rank all running and waiting jobs by remaining work
    (seconds at full speed; ties in FIFO order). Walk the ranking with the
    cluster's usable devices (free + held by running jobs) and select every
    job whose device count fits in what is left, skipping those that do not.
    Running jobs not selected are preempted; selected waiting jobs are started
    in rank order (a selected job that cannot be placed waits for the next
    pass). Remaining work of a waiting job does not change, so passes at
    arrivals and completions suffice.
    """

    preemptive = True

    def __init__(self) -> None:
        self.q = ShapeQueues()

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        self.q.push(job, job.remaining)

    def on_requeue(self, job: JobRecord, view: ClusterView) -> None:
        self.q.push(job, job.remaining)

    def schedule(self, view: ClusterView) -> Iterator[Action]:
        q = self.q
        if not q.size:
            return
        now = view.now
        left = view.free_count
        for r in view.running:
            left += _need(r)
        none: set[tuple[int, int, str | None]] = set()
        # The best waiting shape only changes when a head is popped or when ``left`` drops
        # below its need (the eligible set only shrinks as ``left`` falls), so it is cached.
        shape = q.best(left, none)
        if shape is None:  # nothing waiting fits even with every device: no change
            return
        running = sorted([(r.remaining_at(now), r.order, r) for r in view.running])
        chosen: list[JobRecord] = []
        preempt: list[JobRecord] = []
        nrun = len(running)
        i = 0
        while shape is not None or i < nrun:
            if shape is not None and shape.need > left:
                shape = q.best(left, none)
                continue
            if shape is not None and (i >= nrun or q.head_key(shape) < running[i][:2]):
                chosen.append(q.pop(shape))
                left -= shape.need
                shape = q.best(left, none)
                continue
            rec = running[i][2]
            i += 1
            need = _need(rec)
            if need <= left:
                left -= need
            else:
                preempt.append(rec)
        for rec in preempt:
            yield Preempt(rec.id)
        for rec in chosen:
            devices = view.place(rec)
            if devices is None:
                q.push(rec, rec.remaining)
                continue
            yield Start(rec.id, devices)


@register("las")
class DiscretizedLAS(Scheduler):
    """Tiresias' discretized least-attained-service (2D-LAS with K queues), preemptive.

    Parameters: ``thresholds`` (seconds of attained service separating the
    queues; default ``[3600]``, i.e. two queues) and ``service`` (``"time"``:
    seconds executed, the default; ``"gpu_time"``: seconds x devices, as in
    Tiresias' 2D-LAS).

    Rule: a job sits in queue q = number of thresholds its attained service
    has reached (queue 0 first). Within a queue, running jobs come before
    waiting ones; each group is ordered by entry into the queue (arrival for
    queue 0, the demotion instant for lower queues; ties in FIFO order). At
    every pass, walk that order with the cluster's usable devices (free + held
    by running jobs), keeping or selecting every job whose device count fits
    in what is left and skipping the others. Running jobs not kept are
    preempted and selected waiting jobs start. Hence a job is only preempted
    by jobs of a higher queue. The policy asks to be woken exactly when a
    running job's attained service reaches its next threshold. Tiresias'
    starvation promotion is not applied.
    """

    preemptive = True

    def __init__(self, thresholds: list[float] | None = None, service: str = "time") -> None:
        th = [3600.0] if thresholds is None else [float(x) for x in thresholds]
        if any(b <= a for a, b in itertools.pairwise(th)) or any(x <= 0 for x in th):
            raise ConfigError(f"las.thresholds must be positive and increasing, got {th}")
        if service not in ("time", "gpu_time"):
            raise ConfigError(f"las.service must be 'time' or 'gpu_time', got {service!r}")
        self.thresholds = th
        self.gpu_time = service == "gpu_time"
        self.levels = len(th) + 1
        self.waiting = [ShapeQueues() for _ in range(self.levels)]
        self.level: dict[str, int] = {}
        self.entry: dict[str, tuple[float, int]] = {}
        self.running: list[dict[str, JobRecord]] = [{} for _ in range(self.levels)]
        self.run_need = [0] * self.levels  # whole devices held by running jobs, per queue
        self.run_sorted: list[list[tuple[tuple[float, int], str, int]]] = [
            [] for _ in range(self.levels)
        ]  # running jobs of each queue in entry order
        self.crossings: list[tuple[float, int, int, str]] = []  # (time, order, epoch, id)

    def _service(self, rec: JobRecord, now: float) -> float:
        s = rec.attained_at(now)
        return s * rec.num_gpus if self.gpu_time else s

    def _rate(self, rec: JobRecord) -> float:
        return float(rec.num_gpus) if self.gpu_time else 1.0

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        self.level[job.id] = 0
        self.entry[job.id] = (job.submit_time, job.order)
        self.waiting[0].push(job, self.entry[job.id])

    def _leave_running(self, job: JobRecord, lv: int) -> None:
        if self.running[lv].pop(job.id, None) is not None:
            self.run_need[lv] -= _need(job)
            lst = self.run_sorted[lv]
            del lst[bisect_left(lst, (self.entry[job.id], job.id))]  # ids are unique

    def _enter_running(self, job: JobRecord, lv: int) -> None:
        self.running[lv][job.id] = job
        self.run_need[lv] += _need(job)
        insort(self.run_sorted[lv], (self.entry[job.id], job.id, _need(job)))

    def on_requeue(self, job: JobRecord, view: ClusterView) -> None:
        lv = self.level[job.id]
        self._leave_running(job, lv)
        self.waiting[lv].push(job, self.entry[job.id])

    def on_interrupt(self, job: JobRecord, view: ClusterView) -> None:
        self._leave_running(job, self.level[job.id])

    def on_finish(self, job: JobRecord, view: ClusterView) -> None:
        lv = self.level.pop(job.id)
        self._leave_running(job, lv)
        self.entry.pop(job.id, None)

    def _demote_due(self, now: float) -> None:
        while self.crossings and self.crossings[0][0] <= now + EPS:
            _, _, epoch, jid = heapq.heappop(self.crossings)
            lv = self.level.get(jid)
            if lv is None:
                continue
            rec = self.running[lv].get(jid)
            if rec is None or rec.epoch != epoch:
                continue
            new = bisect_right(self.thresholds, self._service(rec, now) + EPS)
            if new > lv:
                self._leave_running(rec, lv)
                self.level[jid] = new
                self.entry[jid] = (now, rec.order)
                self._enter_running(rec, new)
            self._push_crossing(rec, now)

    def _push_crossing(self, rec: JobRecord, now: float) -> None:
        lv = self.level[rec.id]
        if lv >= len(self.thresholds):
            return
        t = now + (self.thresholds[lv] - self._service(rec, now)) / self._rate(rec)
        heapq.heappush(self.crossings, (max(t, now), rec.order, rec.epoch, rec.id))

    def _next_wakeup(self) -> float | None:
        while self.crossings:
            _, _, epoch, jid = self.crossings[0]
            lv = self.level.get(jid)
            rec = self.running[lv].get(jid) if lv is not None else None
            if rec is not None and rec.epoch == epoch:
                return self.crossings[0][0]
            heapq.heappop(self.crossings)
        return None

    def schedule(self, view: ClusterView) -> Iterator[Action]:
        now = view.now
        self._demote_due(now)
        if any(q.size for q in self.waiting):
            yield from self._pass(view, now)
        t = self._next_wakeup()
        if t is not None:
            yield WakeUp(t)

    def _pass(self, view: ClusterView, now: float) -> Iterator[Action]:
        running_need = self.run_need
        left = view.free_count + sum(running_need)
        chosen: list[tuple[int, JobRecord]] = []
        preempt: list[JobRecord] = []
        for lv in range(self.levels):
            if running_need[lv] <= left:
                left -= running_need[lv]
            else:
                run = self.running[lv]
                for _, jid, nd in self.run_sorted[lv]:
                    if nd <= left:
                        left -= nd
                    else:
                        preempt.append(run[jid])
            q = self.waiting[lv]
            while q.size:
                shape = q.best(left, set())
                if shape is None:
                    break
                chosen.append((lv, q.pop(shape)))
                left -= shape.need
        for r in preempt:
            self._leave_running(r, self.level[r.id])
            yield Preempt(r.id)
        for lv, rec in chosen:
            devices = view.place(rec)
            if devices is None:
                self.waiting[lv].push(rec, self.entry[rec.id])
                continue
            yield Start(rec.id, devices)
            self._enter_running(rec, lv)
            self._push_crossing(rec, now)
