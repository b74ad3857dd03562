"""Serving policies and their registry: who serves which model on which devices, and when.

Registry: :func:`register_serving_policy` (decorator), :func:`make_serving_policy`,
:func:`serving_policy_names`. Built-in policies (each class docstring pins its rule,
tie-breaks and queue order):

* ``dedicated`` — each model keeps its reserved instances (today's market);
* ``serverless`` — scale to zero, cold start on demand (ServerlessLLM-style);
* ``multiplexed`` — several models resident per instance (MuxServe-style);
* ``token_pooled`` — Aegaeon-style token-level scheduling over a shared pool
  (in :mod:`clustersim.serving.tokenpool`);
* ``hybrid_pooled`` — ours: hot models pinned, the tail token-pooled
  (in :mod:`clustersim.serving.tokenpool`);
* ``autoscaled`` — request-level engines driven by a pluggable :class:`Autoscaler`.

A researcher's policy subclasses :class:`ServingPolicy` (or implements an
:class:`Autoscaler` and runs under ``autoscaled``) and registers itself::

    @register_serving_policy("mine")
    class Mine(ServingPolicy):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np

from clustersim.errors import ConfigError, UnknownNameError
from clustersim.serving.instance import EngineInstance
from clustersim.serving.models import min_tensor_parallel
from clustersim.serving.perf import ModelCost, PerfParams

if TYPE_CHECKING:
    from clustersim.hardware import DeviceSpec
    from clustersim.serving.simulator import SLO, ServingSim
    from clustersim.serving.workload import Market

__all__ = [
    "Autoscaler",
    "AutoscalerView",
    "Dedicated",
    "Multiplexed",
    "ScaleAction",
    "Serverless",
    "ServingPolicy",
    "dedicated_sizing",
    "instance_capacity",
    "make_serving_policy",
    "model_tp",
    "peak_rates",
    "register_serving_policy",
    "serving_policy_names",
]

_REGISTRY: dict[str, Callable[..., ServingPolicy]] = {}
P = TypeVar("P", bound=Callable[..., "ServingPolicy"])


def register_serving_policy(name: str) -> Callable[[P], P]:
    """Class/factory decorator: make a serving policy available as ``name``.

    Raises:
        ConfigError: ``name`` is already registered.
    """

    def deco(factory: P) -> P:
        if name in _REGISTRY:
            raise ConfigError(f"serving policy '{name}' is already registered")
        _REGISTRY[name] = factory
        if isinstance(factory, type):
            factory.name = name  # type: ignore[attr-defined]
        return factory

    return deco


def serving_policy_names() -> list[str]:
    """Registered serving-policy names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def make_serving_policy(name: str, **kwargs: Any) -> ServingPolicy:
    """Instantiate the policy registered as ``name`` with ``kwargs``.

    Raises:
        UnknownNameError: no such policy (suggests the closest name).
    """
    _load_builtin()
    f = _REGISTRY.get(name)
    if f is None:
        raise UnknownNameError("serving policy", name, _REGISTRY)
    return f(**kwargs)


def _load_builtin() -> None:
    import clustersim.serving.tokenpool  # noqa: F401  (registers token_pooled, hybrid_pooled)


class ServingPolicy:
    """Base class: hooks the simulator calls. Override what you need.

    Hooks (all at ``self.sim.now``):

    * :meth:`setup` once before the first arrival (create instances here);
    * :meth:`on_arrival` for every request, in arrival order;
    * :meth:`on_wake` when a worker created with ``notify=True`` reaches an iteration
      boundary (default: call :meth:`on_idle` if it is an idle engine);
    * :meth:`on_capacity_change` when the pool's capacity changes (default: stop the
      engines with the fewest outstanding requests until the pool fits, and hand their
      requests to :meth:`on_requeue`);
    * :meth:`finish` at the horizon; :meth:`stats` adds counters to the result.
    """

    name: ClassVar[str] = "base"
    sim: ServingSim

    def setup(self, sim: ServingSim) -> None:
        """Bind to the simulator; create initial instances."""
        self.sim = sim

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """Route a new request (``output`` tokens in total, >= 1)."""
        raise NotImplementedError

    def replay(self, sim: ServingSim) -> bool:
        """Optionally replay the whole run without the event loop; return True if done.

        Called after :meth:`setup`. A policy whose dispatch never looks at engine state
        can run each engine's stream independently here (see ``dedicated``).
        """
        return False

    def on_wake(self, worker: Any) -> None:
        """A notifying worker reached an iteration boundary."""
        if isinstance(worker, EngineInstance) and worker.is_idle():
            self.on_idle(worker)

    def on_idle(self, inst: EngineInstance) -> None:
        """A notifying engine has nothing queued or running."""

    def on_requeue(self, entries: list[tuple[int, int, int, int, float, int]]) -> None:
        """Requests taken back from a stopped engine (default: dropped, ``no_capacity``)."""
        for e in entries:
            self.sim.drop(e[0], "no_capacity")

    def on_capacity_change(self, old: float, new: float) -> None:
        """Shrink to the new capacity by stopping the least-loaded engines first.

        Rule: while allocated devices exceed the capacity, stop the engine with the
        fewest outstanding requests (ties: highest instance id) and pass its requests to
        :meth:`on_requeue`. Growing capacity needs no action.
        """
        sim = self.sim
        while sim.used > sim.capacity:
            engines = [w for w in sim.workers.values() if isinstance(w, EngineInstance)]
            if not engines:
                break
            for e in engines:
                e.advance_to(sim.now)
            victim = min(engines, key=lambda e: (e.outstanding(), -e.iid))
            self._forget(victim)
            self.on_requeue(sim.stop_instance(victim))

    def _forget(self, inst: EngineInstance) -> None:
        """Remove ``inst`` from the policy's own structures (override with state)."""

    def finish(self, t: float) -> None:
        """The horizon was reached at ``t``."""

    def stats(self) -> dict[str, Any]:
        """Policy counters merged into :attr:`ServingResult.extra`."""
        return {}


# ----------------------------------------------------------------------------------------
# sizing helpers
# ----------------------------------------------------------------------------------------
def model_tp(market: Market, device: DeviceSpec, perf: PerfParams | None = None) -> list[int]:
    """Tensor-parallel degree of each market model: :func:`min_tensor_parallel` on ``device``."""
    p = perf or PerfParams()
    return [
        min_tensor_parallel(m.spec, device.memory_bytes, memory_utilization=p.memory_utilization)
        for m in market.models
    ]


def peak_rates(market: Market, window: float = 600.0) -> np.ndarray:
    """Highest windowed arrival rate (req/s) of each model (ServeGen's 10-minute windows)."""
    out: np.ndarray = market.window_rates(window).max(axis=1)
    return out


def instance_capacity(
    cost: ModelCost,
    mean_input: float,
    mean_output: float,
    slo: SLO,
    perf: PerfParams | None = None,
    *,
    tbt_headroom: float = 0.8,
) -> float:
    """Highest request rate (req/s) one instance sustains within the TBT target.

    Steady-state model of the prefill-first engine at arrival rate ``lam``: prefill
    occupies ``lam * p`` of the time (``p`` = prefill of a mean prompt), so a sequence
    gets one token every ``tau(B) / (1 - lam * p)`` seconds, where ``tau(B)`` is the
    decode step time at batch ``B`` with each sequence holding ``input + output/2``
    tokens. Little's law gives ``B = lam * output * tau / (1 - lam*p)``. The capacity is
    the largest ``lam`` with ``tau/(1 - lam*p) <= tbt_headroom * TBT``, ``B <=
    max_num_seqs`` and ``B * (input + output) <= KV capacity`` (bisection).
    """
    p = perf or PerfParams()
    ctx = mean_input + 0.5 * mean_output
    t_pre = cost.prefill_time([max(1, round(mean_input))], p.iteration_overhead)
    b_max = min(p.max_num_seqs, cost.kv_capacity_tokens / max(1.0, mean_input + mean_output))
    if b_max < 1:
        return 0.0

    def feasible(lam: float) -> bool:
        busy = lam * t_pre
        if busy >= 1.0:
            return False
        # fixed point B = lam * out * tau(B) / (1 - busy)
        b = 1.0
        for _ in range(60):
            tau = cost.decode_step_time(max(1, math.ceil(b)), b * ctx, p.iteration_overhead)
            nb = lam * mean_output * tau / (1.0 - busy)
            if abs(nb - b) < 1e-6:
                break
            b = nb
            if b > b_max:
                return False
        tau = cost.decode_step_time(max(1, math.ceil(b)), b * ctx, p.iteration_overhead)
        return b <= b_max and tau / (1.0 - busy) <= tbt_headroom * slo.tbt

    lo, hi = 0.0, 1.0 / t_pre
    if not feasible(1e-9):
        return 0.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return lo


def engine_capacities(
    market: Market,
    device: DeviceSpec,
    tps: Sequence[int],
    slo: SLO,
    perf: PerfParams,
    tbt_headroom: float = 0.8,
) -> np.ndarray:
    """Sustainable request rate (req/s) of one engine per model (:func:`instance_capacity`).

    Each model's engine runs on ``tps[m]`` devices and is evaluated at the model's own
    mean prompt and output lengths (the market-wide means for a model without requests);
    0 where the engine cannot meet the TBT target at any rate.
    """
    from clustersim.serving.perf import model_cost

    r = market.requests
    counts = market.request_counts()
    mean_in_all = float(r.input_tokens.mean()) if len(r) else 1000.0
    mean_out_all = float(r.output_tokens.mean()) if len(r) else 200.0
    sum_in = np.bincount(r.model, weights=r.input_tokens, minlength=len(market.models))
    sum_out = np.bincount(r.model, weights=r.output_tokens, minlength=len(market.models))
    caps = np.zeros(len(market.models))
    for m, mm in enumerate(market.models):
        c = model_cost(mm.spec, device, tps[m], perf)
        mi = sum_in[m] / counts[m] if counts[m] else mean_in_all
        mo = sum_out[m] / counts[m] if counts[m] else mean_out_all
        caps[m] = instance_capacity(c, mi, mo, slo, perf, tbt_headroom=tbt_headroom)
    return caps


def dedicated_sizing(
    market: Market,
    device: DeviceSpec,
    slo: SLO,
    perf: PerfParams | None = None,
    *,
    window: float = 600.0,
    min_instances: int = 1,
    tbt_headroom: float = 0.8,
    method: str = "analytic",
    target: float = 0.99,
    max_instances: int = 100_000,
) -> tuple[list[int], list[int]]:
    """Instances per model "sized for its peak": returns ``(instances, tp)`` per model.

    ``method="analytic"``: ``n_m = max(min_instances, ceil(peak_m / capacity_m))`` with
    ``peak_m`` the highest ``window``-second arrival rate of model ``m``
    (:func:`peak_rates`) and ``capacity_m`` from :func:`instance_capacity` at the model's
    own mean prompt and output lengths (market-wide means for a model without requests).

    ``method="simulate"`` (a load test per model): replay the model's busiest
    ``window``-second window alone on ``n`` round-robin engines and take the smallest
    ``n >= min_instances`` whose SLO attainment reaches ``target`` (doubling from the
    analytic estimate's lower neighbour, then bisection). Models are independent under
    ``dedicated``, so per-model sizing is exact for that window.
    """
    p = perf or PerfParams()
    tps = model_tp(market, device, p)
    peaks = peak_rates(market, window)
    caps = engine_capacities(market, device, tps, slo, p, tbt_headroom)
    out_n: list[int] = []
    for m in range(len(market.models)):
        cap = float(caps[m])
        need = math.ceil(peaks[m] / cap) if cap > 0 else min_instances
        out_n.append(max(min_instances, need))
    if method == "analytic":
        return out_n, tps
    if method != "simulate":
        raise ConfigError(f"dedicated_sizing: method must be analytic or simulate, not {method}")
    return [
        _load_test(
            market,
            m,
            tps[m],
            device,
            slo,
            p,
            window,
            min_instances,
            target,
            max_instances,
            out_n[m],
        )
        for m in range(len(market.models))
    ], tps


def _load_test(
    market: Market,
    m: int,
    tp: int,
    device: DeviceSpec,
    slo: SLO,
    perf: PerfParams,
    window: float,
    lo: int,
    target: float,
    hi_cap: int,
    guess: int,
) -> int:
    """Smallest engine count meeting ``target`` on model ``m``'s busiest window."""
    from clustersim.serving.metrics import attainment
    from clustersim.serving.simulator import simulate
    from clustersim.serving.workload import Market, Requests

    r = market.requests
    sel = r.model == m
    if not np.any(sel):
        return lo
    t = r.arrival[sel]
    nw = max(1, math.ceil(market.duration / window))
    k = int(
        np.argmax(np.bincount(np.minimum((t // window).astype(np.int64), nw - 1), minlength=nw))
    )
    w0 = k * window
    win = sel & (r.arrival >= w0) & (r.arrival < w0 + window)
    sub = Market(
        (market.models[m],),
        Requests(
            r.arrival[win] - w0,
            np.zeros(int(win.sum()), dtype=np.int32),
            r.input_tokens[win],
            r.output_tokens[win],
        ),
        window,
        f"{market.source}[model {m} peak window]",
    )

    def ok(n: int) -> bool:
        res = simulate(sub, "dedicated", device=device, slo=slo, perf=perf, instances=[n], tp=[tp])
        return attainment(res) >= target

    a = max(lo, guess // 2)
    if ok(a):
        b = a
        a = lo
        if b == lo:
            return lo
    else:
        b = max(a + 1, guess)
        while not ok(b):
            a = b
            b *= 2
            if b > hi_cap:
                return hi_cap
        a += 1
    while a < b:  # b passes, everything below a fails
        mid = (a + b) // 2
        if ok(mid):
            b = mid
        else:
            a = mid + 1
    return b


# ----------------------------------------------------------------------------------------
# dedicated
# ----------------------------------------------------------------------------------------
@register_serving_policy("dedicated")
class Dedicated(ServingPolicy):
    """Each model keeps ``instances[m]`` reserved engines of ``tp[m]`` devices, all run long.

    Rule: at setup, for models in index order, create ``instances[m]`` warm engines
    (weights already loaded: provisioning happens before the horizon). ``instances``
    defaults to :func:`dedicated_sizing` with ``sizing`` = ``analytic`` or ``simulate``
    (peak-sized, at least one per model — the "reserve at least one instance per
    model" practice). Dispatch: ``round_robin``
    (default; the model's engines in creation order, cyclically) or ``least_loaded``
    (fewest outstanding requests; ties: lowest instance id). Inside an engine: FCFS
    with continuous batching (:class:`~clustersim.serving.instance.EngineInstance`).
    A model with no engine (``instances[m] == 0``) drops its requests
    (``rejected_by_policy``). If the pool is too small for the plan, setup raises.
    """

    def __init__(
        self,
        instances: Sequence[int] | None = None,
        tp: Sequence[int] | None = None,
        dispatch: str = "round_robin",
        sizing_window: float = 600.0,
        tbt_headroom: float = 0.8,
        fast: bool = True,
        processes: int = 1,
        sizing: str = "analytic",
        sizing_target: float = 0.99,
    ) -> None:
        if dispatch not in ("round_robin", "least_loaded"):
            raise ConfigError(
                f"dedicated: dispatch must be round_robin or least_loaded, not {dispatch}"
            )
        self.instances = list(instances) if instances is not None else None
        self.tp = list(tp) if tp is not None else None
        self.dispatch = dispatch
        self.sizing_window = sizing_window
        self.tbt_headroom = tbt_headroom
        self.fast = fast
        self.processes = processes
        self.sizing = sizing
        self.sizing_target = sizing_target
        self.by_model: list[list[EngineInstance]] = []
        self._rr: list[int] = []

    def setup(self, sim: ServingSim) -> None:
        """Create every model's reserved engines."""
        self.sim = sim
        nm = len(sim.market.models)
        if self.instances is None or self.tp is None:
            n_auto, tp_auto = dedicated_sizing(
                sim.market,
                sim.device,
                sim.slo,
                sim.perf,
                window=self.sizing_window,
                tbt_headroom=self.tbt_headroom,
            )
            self.instances = self.instances or n_auto
            self.tp = self.tp or tp_auto
        if len(self.instances) != nm or len(self.tp) != nm:
            raise ConfigError(f"dedicated: need instances and tp for all {nm} models")
        need = sum(n * t for n, t in zip(self.instances, self.tp, strict=True))
        if need > sim.capacity:
            raise ConfigError(
                f"dedicated: plan needs {need} devices but the pool has {sim.capacity:g}"
            )
        self.by_model = []
        for m in range(nm):
            insts = []
            for _ in range(self.instances[m]):
                inst = sim.new_instance([m], self.tp[m], warm=True)
                assert inst is not None
                insts.append(inst)
            self.by_model.append(insts)
        self._rr = [0] * nm

    def replay(self, sim: ServingSim) -> bool:
        """Round-robin dispatch ignores engine state: replay each engine on its own.

        Used when ``fast`` and dispatch is ``round_robin`` and the pool capacity never
        changes; engines are spread over ``processes`` worker processes. Results are
        identical to the event loop (tested).
        """
        if not (self.fast and self.dispatch == "round_robin") or sim._schedule:
            return False
        from clustersim.serving.fastpath import IndexedStream, replay_into
        from clustersim.serving.instance import fits_kv

        arr = sim.arrival
        arrived = int(np.searchsorted(arr, sim.horizon, side="right"))
        model = sim.req_model[:arrived]
        order = np.argsort(model, kind="stable")
        bounds = np.searchsorted(model[order], np.arange(len(self.by_model) + 1))
        streams: list[IndexedStream] = []
        owners: list[EngineInstance] = []
        for m, insts in enumerate(self.by_model):
            ids = order[bounds[m] : bounds[m + 1]]
            if not len(ids):
                continue
            if not insts:
                sim.drop_reason[ids] = 4
                continue
            inst = insts[0]
            kv_tok = inst.batches[m].kv_tok
            cap = inst.kv_capacity
            ok = (
                np.array(
                    [
                        fits_kv(kv_tok, cap, int(a), int(b))
                        for a, b in zip(sim.in_tokens[ids], sim.out_tokens[ids], strict=True)
                    ]
                )
                if len(ids) < 64
                else (
                    (sim.in_tokens[ids].astype(np.float64) + sim.out_tokens[ids] + 1) * kv_tok
                    <= cap * (1.0 - 0.01)
                )
            )
            sim.drop_reason[ids[~ok]] = 1
            nk = len(insts)
            for k, e in enumerate(insts):
                mine = ids[k::nk]
                mine = mine[ok[k::nk]]
                if not len(mine):
                    continue
                cost = inst.batches[m].cost
                streams.append((cost, sim.perf, sim.slo.tbt, cap, sim.horizon, mine, e.iid))
                owners.append(e)
        outs = ("first_token", "finish_time", "max_lag", "max_gap", "preemptions", "served_by")
        src = (arr, sim.in_tokens, sim.out_tokens)
        dst = tuple(getattr(sim, name) for name in outs)
        busy, written = replay_into(streams, src, dst, self.processes)
        for name, a in zip(outs, written, strict=True):  # shared copies when it forked
            setattr(sim, name, a)
        for e, b in zip(owners, busy.tolist(), strict=True):
            e.busy = b
        sim.arrived = arrived
        return True

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """Send to the model's next engine (round robin) or its least-loaded engine."""
        insts = self.by_model[model]
        if not insts:
            self.sim.drop(rid, "rejected_by_policy")
            return
        if self.dispatch == "round_robin":
            k = self._rr[model]
            inst = insts[k]
            k += 1
            self._rr[model] = 0 if k == len(insts) else k
        else:
            now = self.sim.now
            for e in insts:
                e.advance_to(now)
            inst = min(insts, key=lambda e: (e.outstanding(), e.iid))
        self.sim.dispatch(inst, rid, model, prompt, output)

    def _forget(self, inst: EngineInstance) -> None:
        for lst in self.by_model:
            if inst in lst:
                lst.remove(inst)
        self._rr = [0] * len(self.by_model)

    def on_requeue(self, entries: list[tuple[int, int, int, int, float, int]]) -> None:
        """Re-queue on another engine of the same model (round robin), else drop."""
        for rid, m, prompt, rem, t_first, gen in entries:
            insts = self.by_model[m]
            if not insts:
                self.sim.drop(rid, "no_capacity")
                continue
            k = self._rr[m] % len(insts)
            self._rr[m] = (k + 1) % len(insts)
            insts[k].enqueue(self.sim.now, rid, m, prompt, rem, t_first, gen)

    def stats(self) -> dict[str, Any]:
        """Instances and tensor-parallel degree per model."""
        return {"instances": list(self.instances or []), "tp": list(self.tp or [])}


@dataclass(frozen=True)
class ScaleAction:
    """An autoscaler decision: ``kind`` = ``"up"`` (start ``count`` engines of ``model``)
    or ``"down"`` (stop engine ``iid`` once it is idle)."""

    kind: str
    model: int = -1
    count: int = 1
    iid: int = -1


@dataclass(frozen=True)
class AutoscalerView:
    """What an autoscaler sees at a tick (all per market model unless noted).

    Attributes:
        now: simulation time. queued: requests waiting for an engine of the model
        (held by the policy). engines: live engine ids per model. outstanding:
        queued+running requests on each engine (``iid -> count``). idle_since: for idle
        engines, when they became idle. arrivals: arrivals per model since the last tick.
        free_gpus: devices still free in the pool. tp: devices one engine of the model needs.
    """

    now: float
    queued: list[int]
    engines: list[list[int]]
    outstanding: dict[int, int]
    idle_since: dict[int, float]
    arrivals: list[int]
    free_gpus: float
    tp: list[int]


class Autoscaler(Protocol):
    """Pluggable request-level autoscaling rule used by the ``autoscaled`` policy.

    ``interval`` seconds between calls; :meth:`decide` returns actions. Start with
    :class:`clustersim.serving.policies.ServerlessAutoscaler` as an example.
    """

    interval: float

    def decide(self, view: AutoscalerView) -> list[ScaleAction]:
        """Return scale actions for this tick."""
        ...


# The request-level elastic policies live in a second module to keep this one readable.
from clustersim.serving.elastic import (  # noqa: E402
    Autoscaled,
    Multiplexed,
    Serverless,
    ServerlessAutoscaler,
)

__all__ += ["Autoscaled", "ServerlessAutoscaler"]
