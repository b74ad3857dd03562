"""Heterogeneity-, cost- and power-aware policies, the Gavel allocation LP, and a power-cap guard.

Registered policies (each class docstring pins its rule, tie-breaks and queue order):

* ``blind_backfill`` -- FIFO backfill that honours ``attrs["accepts"]`` but ignores
  device speed (the heterogeneity-blind baseline; identical to ``fifo_backfill``
  for jobs that accept any type);
* ``gavel_throughput`` / ``gavel_maxmin`` -- Gavel-style (Narayanan et al., OSDI'20)
  allocations over (workload class x device type), realised at job starts;
* ``cost_aware`` -- the cheapest device type that still meets the job's deadline;
* ``power_aware`` -- FIFO backfill that only starts a job if the power cap allows.

Shared conventions:

* Jobs declare acceptable device types with ``Job.device_type`` and/or
  ``job.attrs["accepts"]`` (:func:`clustersim.hetero.accepted_types`) and their
  workload class with ``job.attrs["workload_class"]`` (default ``compute``).
* Aware policies place a job inside one device type: they ask the scenario's
  placement policy for devices with the job restricted to that type. The blind
  policy lets the placement pick among all acceptable nodes.
* Waiting jobs live in per-shape heaps, shape = (devices, share, accepted types,
  class); a pass costs O(shapes x types) per started job, never a scan of the queue.
  Within a pass a shape that cannot start stays blocked (capacity and power headroom
  only shrink during a pass); other shapes may still start (backfill, no reservation).
* Speeds come from a :class:`~clustersim.hetero.SpeedMatrix` passed as ``matrix``
  (Python API) or, by default, the roofline of the catalogue for the cluster's types
  (``specs`` maps types the catalogue does not know, e.g. undisclosed codes).

The Gavel LPs are solved exactly by :func:`solve_lp`, a dense two-phase simplex
(Dantzig pricing, Bland's rule once pivots stall; numpy only) over *kinds* (class x
accepted-type set), which is small (kinds x types variables). Aggregating jobs into
kinds is exact: jobs of one kind are interchangeable, and averaging an optimal
per-job solution over them stays optimal. What is approximate is the realisation,
documented in ``docs/hetero-power-economics.md``: Gavel time-slices jobs in rounds
(preempting to follow the allocation); here jobs are non-preemptive and the
allocation only steers which type each job starts on.

:class:`PowerCapGuard` wraps any policy, keeps the running facility draw, exposes
``power_draw_w`` / ``power_headroom_w`` on the view it passes on, rejects a start
that would exceed the cap, and records the exact draw series -- the stand-in for the
engine hook until the engine carries the cap itself.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from clustersim.errors import ConfigError, SchedulerError
from clustersim.hardware import DeviceSpec
from clustersim.hetero import SpeedMatrix, accepted_types, job_class, resolve_specs
from clustersim.power import PowerCap, PowerModel, PowerSeries
from clustersim.schedulers.base import (
    Action,
    ClusterView,
    JobRecord,
    Scheduler,
    Start,
)
from clustersim.schedulers.registry import register
from clustersim.topology import Cluster
from clustersim.workload.job import Job

__all__ = [
    "BlindBackfill",
    "CostAware",
    "GavelMaxMin",
    "GavelThroughput",
    "LPError",
    "PowerAware",
    "PowerCapGuard",
    "PowerView",
    "gavel_allocation",
    "solve_lp",
]

FloatArray = npt.NDArray[np.float64]
ShapeKey = tuple[int, int, tuple[str, ...] | None, str]


# --------------------------------------------------------------------------- LP


class LPError(ConfigError):
    """The linear program is infeasible or unbounded."""


def _pivot(T: FloatArray, basis: npt.NDArray[np.int64], r: int, c: int) -> None:
    T[r] /= T[r, c]
    col = T[:, c].copy()
    col[r] = 0.0
    T -= np.outer(col, T[r])
    basis[r] = c


def _simplex(
    T: FloatArray, basis: npt.NDArray[np.int64], obj: FloatArray, cols: int, tol: float
) -> None:
    """Maximise ``obj @ x`` over the tableau ``T`` (last column = rhs) in place."""
    m = T.shape[0]
    stall = 0
    limit = 50 * (m + cols) + 100
    for it in range(20 * limit):
        cb = obj[basis]
        red = obj[:cols] - cb @ T[:, :cols]
        if it > limit or stall > m:  # Bland: lowest index with positive reduced cost
            cand = np.flatnonzero(red > tol)
            if cand.size == 0:
                return
            c = int(cand[0])
        else:  # Dantzig: largest reduced cost, lowest index on ties
            c = int(np.argmax(red))
            if red[c] <= tol:
                return
        colv = T[:, c]
        pos = colv > tol
        if not pos.any():
            raise LPError("linear program is unbounded")
        ratios = np.full(m, np.inf)
        ratios[pos] = T[pos, -1] / colv[pos]
        best = ratios.min()
        ties = np.flatnonzero(ratios <= best + tol * max(1.0, abs(best)))
        r = int(ties[np.argmin(basis[ties])])  # Bland's leaving rule
        stall = stall + 1 if best <= tol else 0
        _pivot(T, basis, r, c)
    raise LPError("simplex did not converge")


def solve_lp(
    c: npt.ArrayLike, A: npt.ArrayLike, b: npt.ArrayLike, *, tol: float = 1e-9
) -> tuple[FloatArray, float]:
    """Maximise ``c @ x`` subject to ``A @ x <= b``, ``x >= 0``.

    Dense two-phase tableau simplex (numpy only): phase 1 finds a feasible basis
    when some ``b_i < 0``; pricing is Dantzig's largest reduced cost with Bland's
    anti-cycling rule once pivots stall. Meant for the small allocation LPs here
    (hundreds of variables).

    Returns:
        ``(x, objective)``.

    Raises:
        LPError: infeasible or unbounded.
    """
    cv = np.asarray(c, dtype=np.float64)
    Am = np.atleast_2d(np.asarray(A, dtype=np.float64))
    bv = np.asarray(b, dtype=np.float64)
    m, n = Am.shape
    if cv.shape != (n,) or bv.shape != (m,):
        raise ConfigError(f"solve_lp: shapes c{cv.shape}, A{Am.shape}, b{bv.shape} disagree")
    neg = bv < 0
    n_art = int(neg.sum())
    ncols = n + m + n_art
    T = np.zeros((m, ncols + 1))
    T[:, :n] = Am
    T[:, n : n + m] = np.eye(m)
    T[:, -1] = bv
    T[neg] *= -1.0
    basis = np.arange(n, n + m, dtype=np.int64)
    art = np.flatnonzero(neg)
    for j, ai in enumerate(art):
        T[int(ai), n + m + j] = 1.0
        basis[int(ai)] = n + m + j
    if n_art:
        obj1 = np.zeros(ncols)
        obj1[n + m :] = -1.0
        _simplex(T, basis, obj1, ncols, tol)
        infeas = float(T[basis >= n + m, -1].sum())
        if infeas > 1e-7 * max(1.0, float(np.abs(bv).max())):
            raise LPError("linear program is infeasible")
        keep = np.ones(m, dtype=bool)
        for i in range(m):  # drive artificials out of the basis
            if basis[i] >= n + m:
                row = T[i, : n + m]
                nz = np.flatnonzero(np.abs(row) > tol)
                if nz.size:
                    _pivot(T, basis, i, int(nz[0]))
                else:
                    keep[i] = False  # redundant row
        T = np.concatenate([T[keep, : n + m], T[keep, -1:]], axis=1)
        basis = basis[keep]
        ncols = n + m
    obj2 = np.zeros(ncols)
    obj2[:n] = cv
    _simplex(T, basis, obj2, ncols, tol)
    x = np.zeros(n)
    for row_i, bi in enumerate(basis):
        if bi < n:
            x[int(bi)] = T[row_i, -1]
    x = np.maximum(x, 0.0)
    return x, float(cv @ x)


def gavel_allocation(
    speed: npt.ArrayLike,
    allowed: npt.ArrayLike,
    demand: npt.ArrayLike,
    capacity: npt.ArrayLike,
    objective: str = "throughput",
) -> FloatArray:
    """Gavel-style allocation of device types to job kinds (fluid, exact LP).

    Args:
        speed: ``(K, T)`` speed of kind k on type t (reference = 1).
        allowed: ``(K, T)`` bool, kind k may run on type t.
        demand: ``(K,)`` devices kind k asks for in total (jobs x devices x share).
        capacity: ``(T,)`` devices of each type.
        objective: ``throughput`` -- maximise ``sum_kt speed * y``; ``maxmin`` --
            maximise the smallest normalised rate ``rate_k / (demand_k * e_k)`` where
            ``rate_k = sum_t speed_kt y_kt`` and ``e_k`` is kind k's rate per device on
            a capacity-weighted mix of its allowed types (its "equal share", as Gavel
            normalises by the isolated equal-share throughput), then, at that minimum,
            maximise total throughput (so no capacity is left idle needlessly).

    Constraints: ``sum_t y_kt <= demand_k`` (a job never runs faster than on its own
    devices), ``sum_k y_kt <= capacity_t``, ``y >= 0``.

    Returns:
        ``y`` of shape ``(K, T)``: devices of type t allotted to kind k on average.
    """
    S = np.asarray(speed, dtype=np.float64)
    M = np.asarray(allowed, dtype=bool)
    D = np.asarray(demand, dtype=np.float64)
    C = np.asarray(capacity, dtype=np.float64)
    K, Tn = S.shape
    idx = np.argwhere(M)
    nv = len(idx)
    y = np.zeros((K, Tn))
    if nv == 0 or K == 0:
        return y
    kk, tt = idx[:, 0], idx[:, 1]
    s = S[kk, tt]
    A_dem = np.zeros((K, nv))
    A_dem[kk, np.arange(nv)] = 1.0
    A_cap = np.zeros((Tn, nv))
    A_cap[tt, np.arange(nv)] = 1.0
    if objective == "throughput":
        x, _ = solve_lp(s, np.vstack([A_dem, A_cap]), np.concatenate([D, C]))
    elif objective == "maxmin":
        cw = np.where(M, C[None, :], 0.0)
        e = (S * cw).sum(axis=1) / np.maximum(cw.sum(axis=1), 1e-300)
        A_rate = np.zeros((K, nv))
        A_rate[kk, np.arange(nv)] = -s
        need = D * e
        # stage 1: max rho s.t. rho * need_k - rate_k <= 0, demand and capacity rows
        A1 = np.zeros((2 * K + Tn, nv + 1))
        A1[:K, :nv] = A_rate
        A1[:K, nv] = need
        A1[K : 2 * K, :nv] = A_dem
        A1[2 * K :, :nv] = A_cap
        b1 = np.concatenate([np.zeros(K), D, C])
        c1 = np.zeros(nv + 1)
        c1[nv] = 1.0
        _, rho = solve_lp(c1, A1, b1)
        # stage 2: max throughput s.t. rate_k >= rho * need_k (slightly relaxed)
        A2 = np.vstack([A_rate, A_dem, A_cap])
        b2 = np.concatenate([-rho * need * (1.0 - 1e-9), D, C])
        x, _ = solve_lp(s, A2, b2)
    else:
        raise ConfigError(f"gavel objective must be 'throughput' or 'maxmin', got {objective!r}")
    y[kk, tt] = x
    return y


# --------------------------------------------------------------------------- shared machinery


class _Shape:
    __slots__ = ("accepts", "cls", "heap", "key", "need", "types")

    def __init__(self, key: ShapeKey) -> None:
        self.key = key
        self.need = key[0] if key[1] >= 1000 else 0
        self.accepts = key[2]
        self.cls = key[3]
        self.heap: list[tuple[Any, int, JobRecord]] = []
        self.types: tuple[str, ...] = ()  # candidate types in this cluster, set lazily


def _typed(job: Job, device_type: str) -> Job:
    return dataclasses.replace(job, device_type=device_type)


class _TypedBackfill(Scheduler):
    """Per-shape FIFO heaps plus a per-job device-type choice (see module doc)."""

    def __init__(
        self,
        matrix: SpeedMatrix | None = None,
        specs: Mapping[str, DeviceSpec] | None = None,
        default_class: str = "compute",
    ) -> None:
        self.matrix = matrix
        self.specs_in = specs
        self.default_class = default_class
        self.shapes: dict[ShapeKey, _Shape] = {}
        self.size = 0
        self.cluster: Cluster | None = None
        self.specs: dict[str, DeviceSpec] = {}
        self.running_type: dict[str, str] = {}

    # -- lazy cluster set-up
    def _setup(self, view: ClusterView) -> None:
        c = view.cluster
        self.cluster = c
        self.specs = resolve_specs(c.device_types, self.specs_in)
        if self.matrix is None:
            classes = sorted(
                {s.cls for s in self.shapes.values()} | {self.default_class, "compute", "memory"}
            )
            known = [x for x in classes if x in ("compute", "memory")]
            ref = max(c.device_types, key=lambda t: (self._count(c, t), t))
            self.matrix = SpeedMatrix.from_roofline(self.specs, ref, known)
        for s in self.shapes.values():
            s.types = self._candidates(s.accepts)
        self._on_setup(view)

    @staticmethod
    def _count(c: Cluster, t: str) -> int:
        return sum(n for nt, n in zip(c.node_type, c.node_size, strict=True) if nt == t)

    def _on_setup(self, view: ClusterView) -> None:
        """Hook for subclasses (called once, at the first pass)."""

    def _candidates(self, accepts: tuple[str, ...] | None) -> tuple[str, ...]:
        assert self.cluster is not None
        types = self.cluster.device_types
        return tuple(types) if accepts is None else tuple(t for t in types if t in accepts)

    def speed(self, cls: str, t: str) -> float:
        """Speed of class ``cls`` on type ``t`` from the policy's matrix."""
        assert self.matrix is not None
        return self.matrix.speed(cls, t)

    # -- queue
    def _key(self, rec: JobRecord) -> ShapeKey:
        j = rec.job
        return (j.num_gpus, j.gpu_milli, accepted_types(j), job_class(j, self.default_class))

    def _push(self, rec: JobRecord, prio: Any = 0) -> None:
        key = self._key(rec)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = _Shape(key)
            if self.cluster is not None:
                shape.types = self._candidates(shape.accepts)
        heapq.heappush(shape.heap, (prio, rec.order, rec))
        self.size += 1

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        self._push(job)
        self._arrived(job)

    def on_requeue(self, job: JobRecord, view: ClusterView) -> None:
        self._stopped(job)
        self._push(job)

    def on_finish(self, job: JobRecord, view: ClusterView) -> None:
        self._stopped(job)
        self._departed(job)

    def on_interrupt(self, job: JobRecord, view: ClusterView) -> None:
        self._stopped(job)

    def _arrived(self, rec: JobRecord) -> None:
        """Hook: a job arrived."""

    def _departed(self, rec: JobRecord) -> None:
        """Hook: a job finished."""

    def _stopped(self, rec: JobRecord) -> None:
        self.running_type.pop(rec.id, None)

    def _started(self, rec: JobRecord, t: str | None, devices: tuple[int, ...]) -> None:
        if t is not None:
            self.running_type[rec.id] = t

    # -- one pass
    def _shape_key(self, shape: _Shape) -> tuple[Any, ...]:
        """Order of shape heads (smaller first); default FIFO."""
        h = shape.heap[0]
        return (h[0], h[1])

    def _best(self, free: int, blocked: set[ShapeKey]) -> _Shape | None:
        best: _Shape | None = None
        best_key: tuple[Any, ...] | None = None
        for shape in self.shapes.values():
            if not shape.heap or shape.need > free or shape.key in blocked:
                continue
            k = self._shape_key(shape)
            if best_key is None or k < best_key:
                best, best_key = shape, k
        return best

    def _choose(
        self, rec: JobRecord, shape: _Shape, view: ClusterView
    ) -> tuple[tuple[int, ...], str | None] | None:
        """Devices (and their type) to start ``rec`` on, or None. Default: ``_order``."""
        for t in self._order(rec, shape, view):
            devices = view.place(_typed(rec.job, t))
            if devices is not None and self._admit(rec, devices, view):
                return devices, t
        return None

    def _order(self, rec: JobRecord, shape: _Shape, view: ClusterView) -> Iterable[str]:
        """Device types to try, most preferred first."""
        return shape.types

    def _admit(self, rec: JobRecord, devices: tuple[int, ...], view: ClusterView) -> bool:
        """Last check before a start (power cap)."""
        return True

    def schedule(self, view: ClusterView) -> Iterator[Action]:
        if self.cluster is not view.cluster:
            self._setup(view)
        if not self.size:
            return
        self._before_pass(view)
        blocked: set[ShapeKey] = set()
        while self.size:
            free = view.free_count
            shape = self._best(free, blocked)
            if shape is None:
                return
            rec = shape.heap[0][2]
            choice = self._choose(rec, shape, view)
            if choice is None:
                blocked.add(shape.key)
                continue
            heapq.heappop(shape.heap)
            self.size -= 1
            devices, t = choice
            self._started(rec, t, devices)
            yield Start(rec.id, devices)

    def _before_pass(self, view: ClusterView) -> None:
        """Hook run before each pass with waiting jobs."""


# --------------------------------------------------------------------------- policies


@register("blind_backfill")
class BlindBackfill(_TypedBackfill):
    """Heterogeneity-blind FIFO backfill that honours accepted device types.

    Rule: walk waiting jobs in FIFO order (submit time, then trace position) and
    start each one that can be placed, skipping those that cannot (no reservation).
    A job that accepts any type is placed by the scenario's placement policy over
    all nodes (exactly ``fifo_backfill``; a gang may span device types and then
    runs at its slowest member's speed). A job with accepted types is placed on the
    accepted type whose placement starts at the lowest device id -- first fit over
    the union of its acceptable nodes (ties: type name). Speeds are never looked at.
    """

    def _choose(
        self, rec: JobRecord, shape: _Shape, view: ClusterView
    ) -> tuple[tuple[int, ...], str | None] | None:
        return _blind_choose(self, rec, shape, view)


def _blind_choose(
    policy: _TypedBackfill, rec: JobRecord, shape: _Shape, view: ClusterView
) -> tuple[tuple[int, ...], str | None] | None:
    """First fit over the union of accepted nodes (``blind_backfill``'s device rule)."""
    if shape.accepts is None:
        devices = view.place(rec)
        if devices is None or not policy._admit(rec, devices, view):
            return None
        return devices, None
    best: tuple[int, str, tuple[int, ...]] | None = None
    for t in shape.types:
        devices = view.place(_typed(rec.job, t))
        if devices is None:
            continue
        cand = (min(devices), t, devices)
        if best is None or cand[:2] < best[:2]:
            best = cand
    if best is None or not policy._admit(rec, best[2], view):
        return None
    return best[2], best[1]


class _Gavel(_TypedBackfill):
    objective = "throughput"

    def __init__(
        self,
        matrix: SpeedMatrix | None = None,
        specs: Mapping[str, DeviceSpec] | None = None,
        default_class: str = "compute",
        round_s: float = 360.0,
    ) -> None:
        super().__init__(matrix, specs, default_class)
        if not round_s >= 0:
            raise ConfigError(f"{self.name}.round_s must be >= 0, got {round_s!r}")
        self.round_s = float(round_s)
        self.kinds: dict[tuple[str, tuple[str, ...] | None], int] = {}
        self.kind_list: list[tuple[str, tuple[str, ...] | None]] = []
        self.demand: list[float] = []  # active (waiting + running) devices per kind
        self.use: dict[tuple[int, str], float] = {}  # (kind, type) -> devices in use
        self.alloc: dict[tuple[int, str], float] = {}
        self.alloc_rate: list[float] = []
        self.dirty = True
        self.last_solve = -math.inf
        self.solves = 0

    def _kind(self, j: Job) -> int:
        key = (job_class(j, self.default_class), accepted_types(j))
        k = self.kinds.get(key)
        if k is None:
            k = self.kinds[key] = len(self.kind_list)
            self.kind_list.append(key)
            self.demand.append(0.0)
            self.alloc_rate.append(0.0)
        return k

    def _arrived(self, rec: JobRecord) -> None:
        self.demand[self._kind(rec.job)] += rec.job.gpu_demand
        self.dirty = True

    def _departed(self, rec: JobRecord) -> None:
        k = self._kind(rec.job)
        self.demand[k] = max(0.0, self.demand[k] - rec.job.gpu_demand)
        self.dirty = True

    def _started(self, rec: JobRecord, t: str | None, devices: tuple[int, ...]) -> None:
        super()._started(rec, t, devices)
        if t is not None:
            key = (self._kind(rec.job), t)
            self.use[key] = self.use.get(key, 0.0) + rec.job.gpu_demand

    def _stopped(self, rec: JobRecord) -> None:
        t = self.running_type.pop(rec.id, None)
        if t is not None:
            key = (self._kind(rec.job), t)
            self.use[key] = self.use.get(key, 0.0) - rec.job.gpu_demand

    def _before_pass(self, view: ClusterView) -> None:
        if self.dirty and view.now - self.last_solve >= self.round_s:
            self._solve()
            self.last_solve = view.now
            self.dirty = False

    def _solve(self) -> None:
        assert self.cluster is not None
        types = list(self.cluster.device_types)
        active = [k for k, d in enumerate(self.demand) if d > 1e-12]
        self.alloc = {}
        if not active:
            return
        cap = [float(self._count(self.cluster, t)) for t in types]
        S = np.zeros((len(active), len(types)))
        allowed = np.zeros_like(S, dtype=bool)
        for i, k in enumerate(active):
            cls, acc = self.kind_list[k]
            for j, t in enumerate(types):
                if acc is None or t in acc:
                    allowed[i, j] = True
                    S[i, j] = self.speed(cls, t)
        y = gavel_allocation(S, allowed, [self.demand[k] for k in active], cap, self.objective)
        self.solves += 1
        for i, k in enumerate(active):
            self.alloc_rate[k] = float((S[i] * y[i]).sum())
            for j, t in enumerate(types):
                if y[i, j] > 0:
                    self.alloc[(k, t)] = float(y[i, j])

    def _order(self, rec: JobRecord, shape: _Shape, view: ClusterView) -> Iterable[str]:
        k = self._kind(rec.job)
        cls = shape.cls

        def pref(t: str) -> tuple[float, float, str]:
            deficit = self.alloc.get((k, t), 0.0) - self.use.get((k, t), 0.0)
            return (-deficit, -self.speed(cls, t), t)

        return sorted(shape.types, key=pref)


@register("gavel_throughput")
class GavelThroughput(_Gavel):
    """Gavel-style maximum total throughput over heterogeneous device types.

    Parameters: ``round_s`` (default 360 s, Gavel's round length): the allocation is
    re-solved at most once per round, at the first pass after a job arrived or
    finished. Python API also: ``matrix`` (:class:`~clustersim.hetero.SpeedMatrix`),
    ``specs`` (type -> DeviceSpec for types not in the catalogue), ``default_class``.

    Allocation: jobs are grouped into kinds (workload class x accepted types);
    :func:`gavel_allocation` with ``objective="throughput"`` gives ``y[k, t]``, the
    devices of type t kind k should hold, maximising ``sum speed * y`` over all
    waiting and running jobs' demand.

    Rule: walk waiting jobs in FIFO order (skipping those that cannot start, no
    reservation). A job of kind k tries its accepted types in decreasing *deficit*
    ``y[k, t] - in_use[k, t]`` (ties: faster type first, then type name) and starts
    on the first that can place it -- work-conserving, so it may start where the
    deficit is negative when nothing better fits. Non-preemptive.
    """

    objective = "throughput"


@register("gavel_maxmin")
class GavelMaxMin(_Gavel):
    """Gavel-style max-min fairness of normalised throughput over heterogeneous types.

    Parameters as ``gavel_throughput``. Allocation: :func:`gavel_allocation` with
    ``objective="maxmin"`` (maximise the smallest rate per device of demand relative
    to the kind's capacity-weighted equal share, then total throughput at that
    level).

    Rule: waiting jobs are served kind-fairly: among shape heads that may fit, the
    next job is the one whose kind has the lowest ratio of current rate
    (``sum_t speed * in_use``) to allotted rate (``sum_t speed * y``), ties in FIFO
    order; it then tries its types in decreasing deficit exactly as in
    ``gavel_throughput``. Non-preemptive.
    """

    objective = "maxmin"

    def _shape_key(self, shape: _Shape) -> tuple[Any, ...]:
        h = shape.heap[0]
        rec = h[2]
        k = self._kind(rec.job)
        target = self.alloc_rate[k]
        cur = sum(self.speed(shape.cls, t) * self.use.get((k, t), 0.0) for t in shape.types)
        ratio = cur / target if target > 0 else math.inf
        return (ratio, h[1])


@register("cost_aware")
class CostAware(_TypedBackfill):
    """Cheapest device type that meets the job's deadline.

    Parameters: ``price`` -- ``"list"`` (default: the catalogue's on-demand USD per
    device-hour) or ``"tco"`` (the operator's cost, :class:`~clustersim.economics.CostModel`
    at full load); ``deadline_factor`` -- a job's deadline is
    ``submit + deadline_factor * duration`` (default 1.0: finish no later than the
    traced run, whose duration is measured on the reference device) unless it
    carries ``attrs["deadline"]`` (absolute seconds). Python API also ``matrix``,
    ``specs``, ``default_class``.

    Rule: walk waiting jobs in FIFO order (skipping those that cannot start, no
    reservation). For a job with ``w`` seconds of reference work left, type t would
    finish at ``now + w / speed(class, t)`` and cost ``price_t * devices * share * w /
    speed / 3600``. Among accepted types that can place it now, start on the
    cheapest whose finish meets the deadline (ties: earlier finish, then type name);
    if none meets it, on the one with the earliest finish (ties: cheaper, then name).
    Non-preemptive.
    """

    def __init__(
        self,
        price: str = "list",
        deadline_factor: float = 1.0,
        matrix: SpeedMatrix | None = None,
        specs: Mapping[str, DeviceSpec] | None = None,
        default_class: str = "compute",
    ) -> None:
        super().__init__(matrix, specs, default_class)
        if price not in ("list", "tco"):
            raise ConfigError(f"cost_aware.price must be 'list' or 'tco', got {price!r}")
        if not deadline_factor > 0:
            raise ConfigError(f"cost_aware.deadline_factor must be > 0, got {deadline_factor!r}")
        self.price_kind = price
        self.deadline_factor = float(deadline_factor)
        self.price: dict[str, float] = {}

    def _on_setup(self, view: ClusterView) -> None:
        if self.price_kind == "list":
            self.price = {t: s.price_per_hour for t, s in self.specs.items()}
        else:
            from clustersim.economics import CostModel

            cm = CostModel()
            self.price = {t: cm.device_hour(s, 1.0).total_usd for t, s in self.specs.items()}

    def _order(self, rec: JobRecord, shape: _Shape, view: ClusterView) -> Iterable[str]:
        now = view.now
        j = rec.job
        dl = j.attrs.get("deadline")
        deadline = (
            float(dl) if dl is not None else j.submit_time + self.deadline_factor * j.duration
        )
        work = rec.remaining
        demand = j.gpu_demand
        meets: list[tuple[float, float, str]] = []
        late: list[tuple[float, float, str]] = []
        for t in shape.types:
            sp = self.speed(shape.cls, t)
            finish = now + work / sp
            cost = self.price[t] * demand * work / sp / 3600.0
            if finish <= deadline + 1e-9:
                meets.append((cost, finish, t))
            else:
                late.append((finish, cost, t))
        meets.sort()
        late.sort()
        return [x[2] for x in meets] + [x[2] for x in late]


@register("power_aware")
class PowerAware(_TypedBackfill):
    """FIFO backfill that only starts a job if the facility power cap allows it.

    Parameters: ``cap_w`` (facility W) or ``cap_fraction`` (of the cluster's peak
    draw with every device allocated; default 1.0, a cap that never binds); ``pue``,
    ``node_overhead_fraction`` (power model, defaults of
    :mod:`clustersim.power`); ``type_order`` -- ``"first_fit"`` (default: blind, as
    ``blind_backfill``) or ``"perf_per_watt"`` (accepted types by decreasing
    speed / active W, ties by type name). Python API also ``matrix``, ``specs``,
    ``default_class``.

    Headroom, first available of: ``view.power_fits(devices, milli)`` (the engine's or
    guard's exact check), ``view.power_headroom_w`` (added draw must be <= it), else
    the policy's own running draw (a :class:`~clustersim.power.PowerCap` seeded from
    ``view.state`` at the first pass and updated on every start, finish, requeue and
    interrupt; draw after the start must be <= the cap). The added draw of a start is
    its devices' active minus idle power times PUE.

    Rule: walk waiting jobs in FIFO order; start each one that can be placed *and*
    fits the headroom, skipping the others (no reservation, so a wide job may wait
    while narrower ones pass it). Non-preemptive; the cap holds at every instant
    because draw only rises at starts.
    """

    def __init__(
        self,
        cap_w: float | None = None,
        cap_fraction: float | None = None,
        pue: float | None = None,
        node_overhead_fraction: float | None = None,
        type_order: str = "first_fit",
        matrix: SpeedMatrix | None = None,
        specs: Mapping[str, DeviceSpec] | None = None,
        default_class: str = "compute",
    ) -> None:
        super().__init__(matrix, specs, default_class)
        if cap_w is not None and cap_fraction is not None:
            raise ConfigError("power_aware takes one of cap_w or cap_fraction, not both")
        if cap_w is None and cap_fraction is None:
            cap_fraction = 1.0  # the all-busy peak: a cap that never binds
        if cap_fraction is not None and not 0 < cap_fraction <= 1:
            raise ConfigError(f"power_aware.cap_fraction must be in (0, 1], got {cap_fraction!r}")
        if type_order not in ("first_fit", "perf_per_watt"):
            raise ConfigError(
                f"power_aware.type_order must be 'first_fit' or 'perf_per_watt', got {type_order!r}"
            )
        self.cap_w_in = cap_w
        self.cap_fraction = cap_fraction
        self.pue = pue
        self.node_overhead_fraction = node_overhead_fraction
        self.type_order = type_order
        self.model: PowerModel | None = None
        self.meter: PowerCap | None = None
        self.held: dict[str, tuple[tuple[int, ...], int]] = {}

    def _on_setup(self, view: ClusterView) -> None:
        assert self.cluster is not None
        kw: dict[str, float] = {}
        if self.pue is not None:
            kw["pue"] = self.pue
        if self.node_overhead_fraction is not None:
            kw["node_overhead_fraction"] = self.node_overhead_fraction
        self.model = PowerModel(self.cluster, self.specs, **kw)
        cap = (
            self.cap_w_in
            if self.cap_w_in is not None
            else self.model.cap_w(
                float(self.cap_fraction)  # type: ignore[arg-type]
            )
        )
        self.meter = PowerCap(self.model, cap)
        used = view.state.used
        for d, u in enumerate(used):  # seed from the state (normally all idle)
            if u:
                self.meter.allocate((d,), int(u), check=False)

    @property
    def cap_w(self) -> float | None:
        """The cap in facility W (known after the first pass)."""
        return self.meter.cap_w if self.meter is not None else self.cap_w_in

    def _admit(self, rec: JobRecord, devices: tuple[int, ...], view: ClusterView) -> bool:
        milli = rec.job.gpu_milli
        fits = getattr(view, "power_fits", None)
        if callable(fits):  # the engine's (or guard's) own exact check
            return bool(fits(devices, milli))
        h = getattr(view, "power_headroom_w", None)
        assert self.model is not None and self.meter is not None
        if h is not None:
            return self.model.delta_w(devices, milli) <= float(h)
        return self.meter.fits(devices, milli)

    def _order(self, rec: JobRecord, shape: _Shape, view: ClusterView) -> Iterable[str]:
        if self.type_order == "first_fit":
            return shape.types
        assert self.model is not None
        active = dict(zip(self.model.types, self.model.active_t, strict=True))
        return sorted(shape.types, key=lambda t: (-self.speed(shape.cls, t) / float(active[t]), t))

    def _choose(
        self, rec: JobRecord, shape: _Shape, view: ClusterView
    ) -> tuple[tuple[int, ...], str | None] | None:
        if self.type_order == "first_fit":
            return _blind_choose(self, rec, shape, view)
        return super()._choose(rec, shape, view)

    def _started(self, rec: JobRecord, t: str | None, devices: tuple[int, ...]) -> None:
        super()._started(rec, t, devices)
        assert self.meter is not None
        self.meter.allocate(devices, rec.job.gpu_milli, check=False)
        self.held[rec.id] = (devices, rec.job.gpu_milli)

    def _stopped(self, rec: JobRecord) -> None:
        super()._stopped(rec)
        h = self.held.pop(rec.id, None)
        if h is not None and self.meter is not None:
            self.meter.release(*h)


# --------------------------------------------------------------------------- guard


class PowerView(ClusterView):
    """A :class:`ClusterView` that also exposes the guard's power draw and headroom."""

    def __init__(self, base: ClusterView, meter: PowerCap) -> None:
        super().__init__(base._e)
        self._meter = meter

    @property
    def power_draw_w(self) -> float:
        """Current facility draw (W)."""
        return self._meter.draw_w

    @property
    def power_headroom_w(self) -> float:
        """Cap minus draw (W); ``inf`` without a cap."""
        return self._meter.headroom_w

    def power_fits(self, devices: tuple[int, ...], milli: int = 1000) -> bool:
        """True when starting ``milli`` of each of ``devices`` keeps the draw <= the cap."""
        return self._meter.fits(devices, milli)


class PowerCapGuard(Scheduler):
    """Wrap a policy so that no start ever exceeds a facility power cap.

    The guard keeps a :class:`~clustersim.power.PowerCap` updated on every start
    (as the inner policy yields it) and every finish, requeue and interrupt; passes
    the inner policy a :class:`PowerView` (``power_draw_w``, ``power_headroom_w``);
    and raises :class:`~clustersim.errors.SchedulerError` on a start that would take
    the draw above the cap (``strict=True``) or silently withholds it (``strict=False``;
    the job stays queued in the engine but the inner policy has forgotten it, so use
    this only with policies that re-offer jobs). ``cap_w=None`` makes it a meter.
    :meth:`series` returns the exact facility draw over the run.
    """

    def __init__(
        self, inner: Scheduler, model: PowerModel, cap_w: float | None, *, strict: bool = True
    ) -> None:
        self.inner = inner
        self.model = model
        self.meter = PowerCap(model, cap_w)
        self.strict = strict
        self.preemptive = inner.preemptive  # type: ignore[misc]
        self.held: dict[str, tuple[tuple[int, ...], int]] = {}
        self._t: list[float] = []
        self._w: list[float] = []
        self.withheld = 0

    def _log(self, t: float) -> None:
        w = self.meter.draw_w
        if self._t and self._t[-1] == t:
            self._w[-1] = w
        else:
            self._t.append(t)
            self._w.append(w)

    def _release(self, rec: JobRecord, view: ClusterView) -> None:
        h = self.held.pop(rec.id, None)
        if h is not None:
            self.meter.release(*h)
            self._log(view.now)

    def on_submit(self, job: JobRecord, view: ClusterView) -> None:
        if not self._t:
            self._log(view.now)
        self.inner.on_submit(job, PowerView(view, self.meter))

    def on_finish(self, job: JobRecord, view: ClusterView) -> None:
        self._release(job, view)
        self.inner.on_finish(job, PowerView(view, self.meter))

    def on_requeue(self, job: JobRecord, view: ClusterView) -> None:
        self._release(job, view)
        self.inner.on_requeue(job, PowerView(view, self.meter))

    def on_interrupt(self, job: JobRecord, view: ClusterView) -> None:
        self._release(job, view)
        self.inner.on_interrupt(job, PowerView(view, self.meter))

    def on_outage(self, nodes: tuple[int, ...], view: ClusterView) -> None:
        self.inner.on_outage(nodes, PowerView(view, self.meter))

    def schedule(self, view: ClusterView) -> Iterator[Action]:
        pv = PowerView(view, self.meter)
        for a in self.inner.schedule(pv) or ():
            if isinstance(a, Start):
                rec = view.job(a.job)
                milli = rec.job.gpu_milli
                if not self.meter.fits(a.devices, milli):
                    if self.strict:
                        raise SchedulerError(
                            self.inner.name,
                            f"start would raise the facility draw to "
                            f"{self.meter.draw_after(a.devices, milli):.0f} W, above the cap "
                            f"{self.meter.cap_w:.0f} W",
                            a.job,
                            a.devices,
                            view.now,
                        )
                    self.withheld += 1
                    continue
                self.meter.allocate(a.devices, milli)
                self.held[a.job] = (tuple(a.devices), milli)
                self._log(view.now)
            yield a

    def series(self, t_end: float) -> PowerSeries:
        """The facility draw recorded so far, as a step series ending at ``t_end``."""
        return PowerSeries(
            np.asarray(self._t, dtype=np.float64), np.asarray(self._w, dtype=np.float64), t_end
        )
