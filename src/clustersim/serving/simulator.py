"""The serving simulator's event loop: arrivals, timers, a device pool and the policy hooks.

Why a specialised loop instead of the project's simpy engine: a day of one Bailian
model class is ~10^7 requests and ~10^9 tokens. A simpy process per request or an
event per token/step would take hours. Here the only global events are request
arrivals (read in order from arrays, never pushed on a heap), policy timers and the
wake-ups of instances whose policy asked to be told (``notify``). Instances advance
*lazily* and in closed-form multi-step runs (:mod:`clustersim.serving.instance`), so
the cost is a few Python operations per request. The loop is a ``heapq`` of
``(time, seq, kind, payload)``; ties are broken by ``seq`` (insertion order) and at
equal times timers/wake-ups run before arrivals.

The device pool has a capacity (devices the policy may allocate) that may change over
time (``capacity_schedule``), e.g. when a co-located training job takes devices;
allocated devices over time are recorded (:attr:`ServingSim.gpu_timeline`).

Conservation: every request that arrives before the horizon ends up *served*
(``finish`` set), *dropped* (``drop_reason`` > 0) or *pending* at the horizon (queued
or running); :meth:`ServingResult.conservation` checks it.
"""

from __future__ import annotations

import heapq
import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clustersim.errors import ConfigError, SimulationError
from clustersim.hardware import DeviceSpec, get_device
from clustersim.serving.instance import EngineInstance
from clustersim.serving.perf import LoadModel, ModelCost, PerfParams, model_cost
from clustersim.serving.sharedmem import shared_full
from clustersim.serving.workload import Market

if TYPE_CHECKING:
    from clustersim.serving.policies import ServingPolicy

__all__ = [
    "DROP_REASONS",
    "SLO",
    "InstanceRecord",
    "ServingResult",
    "ServingSim",
    "Worker",
    "simulate",
]

DROP_REASONS: dict[int, str] = {
    1: "exceeds_kv_capacity",
    2: "model_does_not_fit",
    3: "no_capacity",
    4: "rejected_by_policy",
}
"""Drop-reason codes stored in :attr:`ServingResult.drop_reason` (0 = not dropped)."""
_REASON_CODE = {v: k for k, v in DROP_REASONS.items()}

_WAKE, _TIMER, _CAPACITY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency targets (Aegaeon's defaults: TTFT 10 s, TBT 100 ms) and how TBT is judged.

    Token ``n`` of a request (``n = 0`` is the first token) has a deadline; the request
    meets the SLO when its first token comes within ``ttft`` of arrival and no token
    misses its deadline. ``anchor`` fixes the deadlines:

    * ``"arrival"`` (default; Aegaeon's token-slack view): ``arrival + ttft + n * tbt`` —
      a fast first token banks slack that later pauses (model switches) may spend;
    * ``"first_token"`` (strict): ``t_first + n * tbt`` — no slack from a fast prefill.

    ``tbt`` is needed during simulation (lags are measured against it); ``ttft`` and
    ``anchor`` only when scoring, so one run can be scored under both anchors.
    """

    ttft: float = 10.0
    tbt: float = 0.1
    anchor: str = "arrival"

    def __post_init__(self) -> None:
        if not (self.ttft > 0 and self.tbt > 0):
            raise ConfigError(f"SLO targets must be > 0, got ttft={self.ttft}, tbt={self.tbt}")
        if self.anchor not in ("arrival", "first_token"):
            raise ConfigError(f"SLO.anchor must be 'arrival' or 'first_token', not {self.anchor!r}")


class Worker(Protocol):
    """What the loop needs from anything that holds devices and does work."""

    iid: int
    version: int
    gpus: list[int]

    def advance_to(self, t: float) -> None:
        """Simulate up to ``t``."""

    def next_event(self) -> float:
        """Time of its next internal event (``inf`` if none)."""


@dataclass(slots=True)
class InstanceRecord:
    """Life of one instance/worker for per-GPU metrics.

    Attributes:
        iid: instance id. models: models it served (last resident set).
        tp: devices. gpus: device ids. created/stopped: allocation interval
        (``stopped`` = horizon when still alive). busy: seconds computing.
        load_time: seconds loading weights. switches: model switches. kind: label.
    """

    iid: int
    models: list[int]
    tp: int
    gpus: list[int]
    created: float
    stopped: float
    busy: float
    load_time: float
    switches: int
    kind: str


@dataclass
class ServingResult:
    """Outcome of one serving simulation (arrays indexed by request id).

    Attributes:
        market: the replayed market.
        policy: policy name. device: device type.
        pool_gpus: pool size the policy was given (``None`` = unlimited).
        horizon: end of the simulated time.
        slo: latency targets used.
        first_token, finish: times (NaN when it did not happen).
        max_lag: worst token lag behind ``t_first + n * tbt`` (s; <= 0 on time;
            ``-inf`` for one-token outputs).
        max_gap: longest gap between consecutive tokens (s).
        drop_reason: 0 or a :data:`DROP_REASONS` code.
        served_by: instance id that finished the request (-1 if none).
        preemptions: times the request lost its KV cache and was recomputed.
        instances: :class:`InstanceRecord` of every instance/worker.
        gpu_timeline: ``(time, allocated devices, pool capacity)`` change points.
        wall_seconds: simulation run time.
        arrived: number of requests that arrived before the horizon.
        extra: policy-specific counters.
    """

    market: Market
    policy: str
    device: DeviceSpec
    pool_gpus: int | None
    horizon: float
    slo: SLO
    first_token: np.ndarray
    finish: np.ndarray
    max_lag: np.ndarray
    max_gap: np.ndarray
    drop_reason: np.ndarray
    served_by: np.ndarray
    preemptions: np.ndarray
    instances: list[InstanceRecord]
    gpu_timeline: list[tuple[float, int, float]]
    wall_seconds: float
    arrived: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def served(self) -> np.ndarray:
        """Boolean mask of finished requests."""
        out: np.ndarray = ~np.isnan(self.finish)
        return out

    @property
    def dropped(self) -> np.ndarray:
        """Boolean mask of dropped requests."""
        return self.drop_reason > 0

    def conservation(self) -> dict[str, int]:
        """Counts of served / dropped / running / queued / not-arrived requests.

        Raises:
            SimulationError: a request is both served and dropped, or counts do not add up.
        """
        n = len(self.finish)
        arrived = np.zeros(n, dtype=bool)
        arrived[: self.arrived] = True
        served = self.served
        dropped = self.dropped
        if np.any(served & dropped):
            raise SimulationError("a request is both served and dropped")
        if np.any((served | dropped) & ~arrived):
            raise SimulationError("a request that never arrived was served or dropped")
        pending = arrived & ~served & ~dropped
        running = pending & ~np.isnan(self.first_token)
        counts = {
            "total": n,
            "arrived": int(arrived.sum()),
            "served": int(served.sum()),
            "dropped": int(dropped.sum()),
            "running_at_horizon": int(running.sum()),
            "queued_at_horizon": int((pending & ~running).sum()),
            "not_arrived": int((~arrived).sum()),
        }
        if (
            counts["served"]
            + counts["dropped"]
            + counts["running_at_horizon"]
            + counts["queued_at_horizon"]
            != counts["arrived"]
        ):
            raise SimulationError(f"request conservation broken: {counts}")
        return counts


class ServingSim:
    """One serving simulation: a market replayed on a device pool under a policy.

    Args:
        market: models and requests (:class:`~clustersim.serving.workload.Market`).
        policy: a :class:`~clustersim.serving.policies.ServingPolicy` instance.
        device: device type name or spec of every pool device.
        gpus: pool capacity in devices (``None`` = as many as the policy allocates).
        capacity_schedule: ``[(time, devices), ...]`` changes of the capacity.
        slo: latency targets. perf: roofline knobs. load: model-load cost model.
        horizon: stop time in seconds (``None`` = until every request is done).
        rng: the one random generator (policies may draw from it).
    """

    def __init__(
        self,
        market: Market,
        policy: ServingPolicy,
        *,
        device: str | DeviceSpec = "H20",
        gpus: int | None = None,
        capacity_schedule: Sequence[tuple[float, int]] = (),
        slo: SLO | None = None,
        perf: PerfParams | None = None,
        load: LoadModel | None = None,
        horizon: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.market = market
        self.policy = policy
        self.device = device if isinstance(device, DeviceSpec) else get_device(device)
        self.slo = slo or SLO()
        self.perf = perf or PerfParams()
        self.load = load or LoadModel()
        self.rng = rng if rng is not None else np.random.default_rng(0)
        if gpus is not None and gpus < 0:
            raise ConfigError(f"pool size must be >= 0, got {gpus}")
        self.pool_gpus = gpus
        self.capacity: float = math.inf if gpus is None else float(gpus)
        self.horizon = math.inf if horizon is None else float(horizon)
        self._schedule = sorted((float(t), int(n)) for t, n in capacity_schedule)
        reqs = market.requests
        n = len(reqs)
        self.n = n
        self.arrival = reqs.arrival
        self.req_model = reqs.model
        self.in_tokens = reqs.input_tokens
        self.out_tokens = reqs.output_tokens
        # per-request results, in shared memory when large: forked fast-path workers write them
        self.first_token = shared_full(n, np.nan)
        self.finish_time = shared_full(n, np.nan)
        self.max_lag = shared_full(n, np.nan)
        self.max_gap = shared_full(n, np.nan)
        self.drop_reason = np.zeros(n, dtype=np.int8)
        self.served_by = shared_full(n, -1, np.int32)
        self.preemptions = shared_full(n, 0, np.int16)
        self.preempt_lag: dict[int, tuple[float, float]] = {}
        self.last_token_before_preempt: dict[int, float] = {}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, int]] = []
        self._seq = 0
        self._next_iid = 0
        self.workers: dict[int, Any] = {}
        self.records: dict[int, InstanceRecord] = {}
        self._free: list[int] = []
        self._next_gpu = 0
        self.used = 0
        self.gpu_timeline: list[tuple[float, int, float]] = [(0.0, 0, self.capacity)]
        self._costs: dict[tuple[int, int], ModelCost] = {}
        self.arrived = 0
        self.extra: dict[str, Any] = {}

    # -- costs -------------------------------------------------------------------------
    def cost(self, model: int, tp: int) -> ModelCost:
        """Cached :class:`ModelCost` of market model ``model`` on ``tp`` pool devices."""
        key = (model, tp)
        c = self._costs.get(key)
        if c is None:
            c = model_cost(self.market.models[model].spec, self.device, tp, self.perf)
            self._costs[key] = c
        return c

    def load_seconds(self, model: int, tp: int, tier: str | None = None) -> float:
        """Seconds to load ``model`` onto ``tp`` devices from ``tier`` (default tier if None)."""
        return self.load.load_time(self.market.models[model].spec, self.device, tp, tier, self.rng)

    # -- devices -----------------------------------------------------------------------
    def free_gpus(self) -> float:
        """Devices the policy may still allocate (``inf`` for an unlimited pool)."""
        return self.capacity - self.used

    def allocate(self, n: int) -> list[int] | None:
        """Take ``n`` devices (lowest free ids first) or return ``None`` if not enough."""
        if n > self.capacity - self.used:
            return None
        out: list[int] = []
        while len(out) < n and self._free:
            out.append(heapq.heappop(self._free))
        while len(out) < n:
            out.append(self._next_gpu)
            self._next_gpu += 1
        self.used += n
        self.gpu_timeline.append((self.now, self.used, self.capacity))
        return out

    def release(self, gpus: list[int]) -> None:
        """Return devices to the pool."""
        for g in gpus:
            heapq.heappush(self._free, g)
        self.used -= len(gpus)
        self.gpu_timeline.append((self.now, self.used, self.capacity))

    def new_instance(
        self,
        models: list[int],
        tp: int,
        *,
        load_tier: str | None = None,
        notify: bool = False,
        warm: bool = False,
    ) -> EngineInstance | None:
        """Allocate ``tp`` devices and start an :class:`EngineInstance` for ``models``.

        Loading takes :meth:`load_seconds` summed over ``models`` unless ``warm``
        (weights already resident, e.g. provisioned before the horizon). Returns
        ``None`` when the pool has too few free devices.
        """
        gpus = self.allocate(tp)
        if gpus is None:
            return None
        t = self.now
        ready = t if warm else t + sum(self.load_seconds(m, tp, load_tier) for m in models)
        iid = self._next_iid
        self._next_iid += 1
        inst = EngineInstance(self, iid, models, tp, gpus, t, ready, notify)
        self.workers[iid] = inst
        self.records[iid] = InstanceRecord(
            iid, list(models), tp, gpus, t, math.nan, 0.0, ready - t, 0, "engine"
        )
        return inst

    def register_worker(self, worker: Any, models: list[int], tp: int, kind: str) -> int:
        """Give a policy-defined worker an id and a record; it must already hold ``gpus``."""
        iid = self._next_iid
        self._next_iid += 1
        worker.iid = iid
        self.workers[iid] = worker
        self.records[iid] = InstanceRecord(
            iid, list(models), tp, list(worker.gpus), self.now, math.nan, 0.0, 0.0, 0, kind
        )
        return iid

    def stop_instance(self, inst: EngineInstance) -> list[tuple[int, int, int, int, float, int]]:
        """Stop an engine now, free its devices and return the requests it held."""
        inst.advance_to(self.now)
        entries = inst.stop(self.now)
        self._retire(inst)
        return entries

    def retire_worker(self, worker: Any) -> None:
        """Free a worker's devices and close its record (the worker must be empty)."""
        self._retire(worker)

    def _retire(self, w: Any) -> None:
        rec = self.records[w.iid]
        rec.stopped = self.now
        self._fill_record(w, rec)
        self.release(w.gpus)
        del self.workers[w.iid]

    @staticmethod
    def _fill_record(w: Any, rec: InstanceRecord) -> None:
        rec.busy = float(getattr(w, "busy", 0.0))
        rec.load_time = float(getattr(w, "load_time", rec.load_time))
        rec.switches = int(getattr(w, "switches", 0))
        rec.models = list(getattr(w, "models", rec.models))

    # -- requests ----------------------------------------------------------------------
    def dispatch(
        self, inst: EngineInstance, rid: int, model: int, prompt: int, output: int
    ) -> bool:
        """Queue a fresh request on an engine; drop it (False) if it can never fit its KV cache."""
        if not inst.fits(model, prompt, output):
            self.drop(rid, "exceeds_kv_capacity")
            return False
        inst.enqueue(self.now, rid, model, prompt, output - 1)
        return True

    def drop(self, rid: int, reason: str) -> None:
        """Drop request ``rid`` with a :data:`DROP_REASONS` reason."""
        code = _REASON_CODE.get(reason)
        if code is None:
            raise ConfigError(f"unknown drop reason '{reason}'; use one of {sorted(_REASON_CODE)}")
        self.drop_reason[rid] = code

    def complete(self, rid: int, t: float, lag: float, gap: float, iid: int) -> None:
        """Record that ``rid`` produced its last token at ``t`` (called by workers)."""
        self.finish_time[rid] = t
        self.max_lag[rid] = lag
        self.max_gap[rid] = gap
        self.served_by[rid] = iid

    def note_preempted(self, rid: int, lag: float, gap: float, t_last: float) -> None:
        """Remember a preempted request's worst lag/gap so far and its last token time."""
        self.preemptions[rid] += 1
        old = self.preempt_lag.get(rid)
        if old is not None:
            lag, gap = max(lag, old[0]), max(gap, old[1])
        self.preempt_lag[rid] = (lag, gap)
        self.last_token_before_preempt[rid] = t_last

    # -- events ------------------------------------------------------------------------
    def _post_wake(self, w: Any) -> None:
        t = w.next_event()
        if t < math.inf:
            self._seq += 1
            heapq.heappush(self._heap, (t, self._seq, _WAKE, w, w.version))

    def post_wake(self, w: Any) -> None:
        """Ask to be woken (``policy.on_wake``) at ``w.next_event()``; bump ``w.version`` first."""
        self._post_wake(w)

    def at(self, t: float, callback: Callable[[float], None]) -> None:
        """Call ``callback(t)`` at time ``t`` (>= now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(t, self.now), self._seq, _TIMER, callback, 0))

    # -- main loop ---------------------------------------------------------------------
    def run(self) -> ServingResult:
        """Replay every arrival up to the horizon and return the result."""
        wall0 = _time.perf_counter()
        for t, n in self._schedule:
            self._seq += 1
            heapq.heappush(self._heap, (t, self._seq, _CAPACITY, n, 0))
        policy = self.policy
        policy.setup(self)
        if policy.replay(self):
            return self._result(wall0, replayed=True)
        on_arrival = policy.on_arrival
        heap = self._heap
        H = self.horizon
        arr = self.arrival
        n = self.n
        i = 0
        block = 1 << 16
        tl: list[float] = []
        ml: list[int] = []
        il: list[int] = []
        ol: list[int] = []
        j = 0
        inf = math.inf
        more = n > 0  # arrivals left before the horizon
        while True:
            if more and j >= len(tl):
                hi = min(n, i + block)
                tl = arr[i:hi].tolist()
                ml = self.req_model[i:hi].tolist()
                il = self.in_tokens[i:hi].tolist()
                ol = self.out_tokens[i:hi].tolist()
                j = 0
            t_arr = tl[j] if more else inf
            if t_arr > H:
                more = False
                t_arr = inf
            t_evt = heap[0][0] if heap else inf
            if t_arr == inf and (not heap or t_evt > H):
                break
            if t_arr < t_evt:
                # tight path: consecutive arrivals before the next timer/wake-up
                while True:
                    self.now = t_arr
                    on_arrival(i, ml[j], il[j], ol[j])
                    i += 1
                    j += 1
                    if j >= len(tl):
                        more = i < n
                        break
                    t_arr = tl[j]
                    if t_arr > H or (heap and heap[0][0] <= t_arr):
                        break
                continue
            _, _, kind, obj, ver = heapq.heappop(heap)
            self.now = t_evt
            if kind == _WAKE:
                if obj.version == ver and obj.iid in self.workers:
                    obj.advance_to(t_evt)
                    policy.on_wake(obj)
            elif kind == _TIMER:
                obj(t_evt)
            else:
                old = self.capacity
                self.capacity = float(obj)
                policy.on_capacity_change(old, self.capacity)
                self.gpu_timeline.append((t_evt, self.used, self.capacity))
        self.arrived = i
        if inf > H:
            end = H
        else:
            for w in list(self.workers.values()):
                w.advance_to(inf)
            done = self.finish_time[~np.isnan(self.finish_time)]
            end = max(self.now, float(done.max()) if len(done) else 0.0)
        self.now = end
        for w in list(self.workers.values()):
            w.advance_to(end)
        return self._result(wall0)

    def _result(self, wall0: float, replayed: bool = False) -> ServingResult:
        policy = self.policy
        if replayed:
            if self.horizon < math.inf:
                end = self.horizon
            else:
                done = self.finish_time[~np.isnan(self.finish_time)]
                end = float(done.max()) if len(done) else 0.0
            self.now = end
        end = self.now
        for w in self.workers.values():
            rec = self.records[w.iid]
            rec.stopped = end
            self._fill_record(w, rec)
        policy.finish(end)
        return ServingResult(
            market=self.market,
            policy=policy.name,
            device=self.device,
            pool_gpus=self.pool_gpus,
            horizon=end,
            slo=self.slo,
            first_token=self.first_token,
            finish=self.finish_time,
            max_lag=self.max_lag,
            max_gap=self.max_gap,
            drop_reason=self.drop_reason,
            served_by=self.served_by,
            preemptions=self.preemptions,
            instances=sorted(self.records.values(), key=lambda r: r.iid),
            gpu_timeline=self.gpu_timeline,
            wall_seconds=_time.perf_counter() - wall0,
            arrived=self.arrived,
            extra={**self.extra, **policy.stats()},
        )


def simulate(
    market: Market,
    policy: str | ServingPolicy,
    *,
    device: str | DeviceSpec = "H20",
    gpus: int | None = None,
    capacity_schedule: Sequence[tuple[float, int]] = (),
    slo: SLO | None = None,
    perf: PerfParams | None = None,
    load: LoadModel | None = None,
    horizon: float | None = None,
    seed: int = 0,
    **policy_kwargs: Any,
) -> ServingResult:
    """Run ``market`` under ``policy`` (a registered name or an instance).

    ``policy_kwargs`` go to the policy factory when ``policy`` is a name. The random
    generator is ``numpy.random.default_rng(seed)``.
    """
    from clustersim.serving.policies import make_serving_policy

    pol = make_serving_policy(policy, **policy_kwargs) if isinstance(policy, str) else policy
    sim = ServingSim(
        market,
        pol,
        device=device,
        gpus=gpus,
        capacity_schedule=capacity_schedule,
        slo=slo,
        perf=perf,
        load=load,
        horizon=horizon,
        rng=np.random.default_rng(seed),
    )
    return sim.run()
