"""Request-level elastic policies: ``serverless``, ``multiplexed`` and ``autoscaled``.

All three run :class:`~clustersim.serving.instance.EngineInstance` engines, so a
model switch can only happen on an engine with no outstanding request (request-level
auto-scaling, the limit Aegaeon analyses with ``E[m] = M (1 - exp(-lambda T))``).
Rules, tie-breaks and queue orders are pinned in each class docstring.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.errors import ConfigError
from clustersim.serving.instance import EngineInstance, fits_kv
from clustersim.serving.policies import (
    Autoscaler,
    AutoscalerView,
    ScaleAction,
    ServingPolicy,
    model_tp,
    register_serving_policy,
)

if TYPE_CHECKING:
    from clustersim.serving.simulator import ServingSim

__all__ = ["Autoscaled", "Multiplexed", "Serverless", "ServerlessAutoscaler"]

Entry = tuple[int, int, int, int, float, int]  # rid, model, prompt, remaining, t_first, gen


class _HostCache:
    """LRU set of models whose checkpoints sit in host DRAM (ServerlessLLM's fast tier)."""

    def __init__(self, capacity_bytes: float) -> None:
        self.capacity = capacity_bytes
        self.used = 0.0
        self.items: OrderedDict[int, float] = OrderedDict()

    def touch(self, model: int, size: float) -> bool:
        """Record a load of ``model``; return True if it was already cached (hit)."""
        if model in self.items:
            self.items.move_to_end(model)
            return True
        if size <= self.capacity:
            while self.used + size > self.capacity and self.items:
                _, s = self.items.popitem(last=False)
                self.used -= s
            self.items[model] = size
            self.used += size
        return False


class _RequestLevel(ServingPolicy):
    """Shared machinery: per-model engines, per-model FIFO of held requests."""

    def setup(self, sim: ServingSim) -> None:
        self.sim = sim
        nm = len(sim.market.models)
        self.tp = model_tp(sim.market, sim.device, sim.perf)
        self.engines: list[list[EngineInstance]] = [[] for _ in range(nm)]
        self.pending: list[deque[Entry]] = [deque() for _ in range(nm)]
        self.pending_since: dict[int, float] = {}  # model -> arrival of its oldest held request
        self.cold_starts = 0
        self.switches = 0
        self.idle_since: dict[int, float] = {}
        self._lheap: list[list[tuple[int, int]]] = [[] for _ in range(nm)]

    # -- helpers -------------------------------------------------------------------
    _indexed = False  # loads kept in per-model heaps (multiplexed, serverless)

    def _index(self, inst: EngineInstance) -> None:
        """Record ``inst``'s outstanding count in the load heaps of its models.

        The heaps hold ``(outstanding, iid)`` entries that are lower bounds: a count only
        falls when requests finish, at an iteration boundary, after which the engine
        (created with ``notify=True``) is indexed again; rises are corrected on lookup.
        A heap is rebuilt from the live counts when stale entries outnumber engines 4:1.
        """
        key = inst.outstanding()
        iid = inst.iid
        for m in inst.models:
            h = self._lheap[m]
            heapq.heappush(h, (key, iid))
            if len(h) > 4 * len(self.engines[m]) + 64:
                h[:] = [(e.outstanding(), e.iid) for e in self.engines[m]]
                heapq.heapify(h)

    def _least_loaded(self, model: int) -> EngineInstance | None:
        """The model's engine with the fewest outstanding requests (ties: lowest id)."""
        if self._indexed:
            h = self._lheap[model]
            workers = self.sim.workers
            while h:
                low, iid = h[0]
                inst = workers.get(iid)
                if not isinstance(inst, EngineInstance) or model not in inst.models:
                    heapq.heappop(h)  # stopped, or reloaded with another model
                    continue
                cur = inst.outstanding()
                if cur == low:
                    return inst
                heapq.heapreplace(h, (cur, iid))
            return None
        now = self.sim.now
        best: EngineInstance | None = None
        best_key = (math.inf, math.inf)
        for e in self.engines[model]:
            e.advance_to(now)
            key = (e.outstanding(), e.iid)
            if key < best_key:
                best, best_key = e, key
        return best

    def _send(self, inst: EngineInstance, e: Entry) -> None:
        rid, m, prompt, rem, t_first, gen = e
        self.idle_since.pop(inst.iid, None)
        if t_first < 0 and gen == 0:
            self.sim.dispatch(inst, rid, m, prompt, rem + 1)
        else:
            inst.enqueue(self.sim.now, rid, m, prompt, rem, t_first, gen)
        if self._indexed:
            self._index(inst)

    def on_wake(self, worker: Any) -> None:
        """Re-index an engine at each iteration boundary (requests may have finished)."""
        if self._indexed and isinstance(worker, EngineInstance):
            self._index(worker)
        super().on_wake(worker)

    def _hold(self, e: Entry) -> None:
        m = e[1]
        if not self.pending[m]:
            self.pending_since[m] = self.sim.now
        self.pending[m].append(e)

    def _fits_anywhere(self, model: int, prompt: int, output: int) -> bool:
        c = self.sim.cost(model, self.tp[model])
        cap = self.sim.perf.memory_utilization * self.tp[model] * self.sim.device.memory_bytes
        return fits_kv(c.kv_bytes_per_token, cap - c.weight_bytes, prompt, output)

    def _forget(self, inst: EngineInstance) -> None:
        for lst in self.engines:
            if inst in lst:
                lst.remove(inst)
        self.idle_since.pop(inst.iid, None)

    def on_requeue(self, entries: list[Entry]) -> None:
        """Requests from a stopped engine go back to their model's held FIFO (front)."""
        for e in reversed(entries):
            m = e[1]
            if not self.pending[m]:
                self.pending_since[m] = self.sim.now
            self.pending[m].appendleft(e)
        self._serve_pending()

    def _serve_pending(self) -> None:
        """Overridden by policies that can start engines for held requests."""

    def stats(self) -> dict[str, Any]:
        """Cold starts and model switches."""
        return {"cold_starts": self.cold_starts, "switches": self.switches}


@register_serving_policy("serverless")
class Serverless(_RequestLevel):
    """Scale to zero with cold starts on demand (ServerlessLLM-style), on a pool of devices.

    Rule, in the order applied on each arrival of model ``m``:

    1. if ``m`` has engines (loading or ready): queue on the one with the fewest
       outstanding requests (ties: lowest id; per-model load heaps, see
       :meth:`_RequestLevel._index`); if that engine already has
       ``>= scale_out_at`` outstanding requests and the pool has ``tp[m]`` free devices,
       start one more engine for ``m`` first and queue there instead;
    2. else cold start: allocate ``tp[m]`` free devices, or, if the pool is full,
       reclaim the engine that has been idle the longest (ties: lowest id) — request-level
       switching only, never preempting a busy engine — and load ``m`` there;
    3. else hold the request in ``m``'s FIFO.

    Loading: ``init_time + weights/tp / bw``; the tier is ``host`` (DRAM) if ``m`` is in
    the pool's LRU host cache of ``host_cache_bytes`` (ServerlessLLM's multi-tier
    checkpoint store), else ``ssd``. When an engine becomes idle it first takes held
    requests of its own model; otherwise, if any model has held requests, it is
    switched to the model whose oldest held request is oldest (ties: lowest model
    index). An engine idle for ``keep_alive`` seconds is released (scale to zero).

    Default ``scale_out_at = 1``: ServerlessLLM's deployment default, an auto-scaling
    ``metric: concurrency`` with ``target: 1`` (``sllm/cli/default_config.json``; it
    also sets ``keep_alive: 0``, here 60 s as on fal.ai's serverless runners, so that a
    warm engine serves the next request of a bursty model).
    """

    def __init__(
        self,
        scale_out_at: int = 1,
        keep_alive: float = 60.0,
        host_cache_bytes: float = 1.0e12,
    ) -> None:
        if scale_out_at < 1 or keep_alive < 0:
            raise ConfigError("serverless: scale_out_at >= 1 and keep_alive >= 0 required")
        self.scale_out_at = scale_out_at
        self.keep_alive = keep_alive
        self.host_cache_bytes = host_cache_bytes

    def setup(self, sim: ServingSim) -> None:
        """Start with no engines."""
        super().setup(sim)
        self.cache = _HostCache(self.host_cache_bytes)
        self._indexed = True

    def _tier(self, m: int) -> str:
        size = self.sim.market.models[m].spec.weight_bytes
        return "host" if self.cache.touch(m, size) else "ssd"

    def _start(self, m: int) -> EngineInstance | None:
        inst = self.sim.new_instance([m], self.tp[m], load_tier=self._tier(m), notify=True)
        if inst is not None:
            self.engines[m].append(inst)
            self.cold_starts += 1
            self._index(inst)
        return inst

    def _reclaim_for(self, m: int) -> EngineInstance | None:
        sim = self.sim
        now = sim.now
        idle: list[tuple[float, int, EngineInstance]] = []
        for lst in self.engines:
            for e in lst:
                e.advance_to(now)
                if e.is_idle() and e.tp == self.tp[m]:
                    idle.append((self.idle_since.get(e.iid, now), e.iid, e))
        if not idle:
            # a differently sized idle engine can be stopped to free devices
            for lst in self.engines:
                for e in lst:
                    if e.is_idle():
                        idle.append((self.idle_since.get(e.iid, now), e.iid, e))
            idle.sort(key=lambda x: (x[0], x[1]))
            for _, _, e in idle:
                self._forget(e)
                sim.stop_instance(e)
                if sim.free_gpus() >= self.tp[m]:
                    return self._start(m)
            return None
        idle.sort(key=lambda x: (x[0], x[1]))
        e = idle[0][2]
        old = e.models[0]
        self.engines[old].remove(e)
        t_load = sim.load_seconds(m, self.tp[m], self._tier(m))
        e.reload(now, [m], now + t_load)
        self.engines[m].append(e)
        self._index(e)
        self.idle_since.pop(e.iid, None)
        self.switches += 1
        self.cold_starts += 1
        return e

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """Apply the class rule to a new request."""
        if not self._fits_anywhere(model, prompt, output):
            self.sim.drop(rid, "exceeds_kv_capacity")
            return
        e: Entry = (rid, model, prompt, output - 1, -1.0, 0)
        self._route(e)

    def _route(self, e: Entry) -> None:
        m = e[1]
        if self.pending[m]:
            self._hold(e)  # FIFO: do not overtake held requests of the same model
            return
        inst = self._least_loaded(m)
        if inst is not None:
            if inst.outstanding() >= self.scale_out_at and self.sim.free_gpus() >= self.tp[m]:
                inst = self._start(m) or inst
            self._send(inst, e)
            return
        inst = self._start(m) if self.sim.free_gpus() >= self.tp[m] else self._reclaim_for(m)
        if inst is None:
            self._hold(e)
        else:
            self._send(inst, e)

    def on_idle(self, inst: EngineInstance) -> None:
        """Serve held requests (own model first), else arm the keep-alive timer."""
        m = inst.models[0]
        now = self.sim.now
        if self.pending[m]:
            while self.pending[m]:
                self._send(inst, self.pending[m].popleft())
            return
        self._serve_pending()
        if inst.is_idle() and inst.iid in self.sim.workers:
            self.idle_since[inst.iid] = now
            self.sim.at(now + self.keep_alive, partial(self._expire, inst))

    def _serve_pending(self) -> None:
        while True:
            waiting = [
                (self.pending_since[m], m) for m in range(len(self.pending)) if self.pending[m]
            ]
            if not waiting:
                return
            _, m = min(waiting)
            free = self.sim.free_gpus() >= self.tp[m]
            inst = self._start(m) if free else self._reclaim_for(m)
            if inst is None:
                return
            while self.pending[m]:
                self._send(inst, self.pending[m].popleft())

    def _expire(self, inst: EngineInstance, t: float) -> None:
        if inst.iid not in self.sim.workers:
            return
        inst.advance_to(t)
        since = self.idle_since.get(inst.iid)
        if inst.is_idle() and since is not None and t - since >= self.keep_alive - 1e-9:
            self._forget(inst)
            self.sim.stop_instance(inst)


@register_serving_policy("multiplexed")
class Multiplexed(_RequestLevel):
    """Several models resident per engine (MuxServe-style spatial-temporal multiplexing).

    Placement at setup (popularity-aware greedy, our simplification of MuxServe's
    placement search): models are grouped by tensor-parallel degree; each group gets
    engines in proportion to its load ``w_m = rate_m * params_m * mean_tokens_m``
    (at least one engine per group while devices last). Within a group, models in
    decreasing ``w_m`` (ties: lower index) get ``r_m = max(1, round(E_g * w_m / W_g))``
    replicas (at most ``E_g``), each placed on the engine with the lowest placed load
    (ties: lowest engine) among engines with fewer than ``max_models_per_engine``
    models whose weights plus this model still leave ``min_kv_fraction`` of the
    usable memory for the KV cache. A model that fits nowhere has its requests
    dropped (``model_does_not_fit``).

    Serving: an engine runs one fused iteration over all its resident models (roofline
    over the union of their work; one shared KV cache). Dispatch: the model's engine
    with the fewest outstanding requests (ties: lowest id), found in O(log engines)
    through per-model load heaps (:meth:`_RequestLevel._index`; the engines notify at
    each iteration boundary), not by a scan of the model's replicas.
    """

    def __init__(
        self, max_models_per_engine: int = 3, min_kv_fraction: float = 0.1, rates: Any = None
    ) -> None:
        if max_models_per_engine < 1:
            raise ConfigError("multiplexed: max_models_per_engine must be >= 1")
        self.max_models = max_models_per_engine
        self.min_kv_fraction = min_kv_fraction
        self.rates = rates

    def setup(self, sim: ServingSim) -> None:
        """Place models on engines and start them warm."""
        super().setup(sim)
        mk = sim.market
        nm = len(mk.models)
        r = mk.requests
        counts = np.bincount(r.model, minlength=nm).astype(float)
        tokens = np.bincount(r.model, weights=r.input_tokens + r.output_tokens, minlength=nm)
        rate = (
            np.asarray(self.rates, dtype=float)
            if self.rates is not None
            else counts / max(mk.duration, 1e-9)
        )
        mean_tok = np.where(counts > 0, tokens / np.maximum(counts, 1), 1.0)
        w = rate * np.array([m.spec.params for m in mk.models]) * mean_tok
        total = sim.capacity
        if not math.isfinite(total):
            raise ConfigError("multiplexed needs a finite pool size (gpus=...)")
        classes = sorted(set(self.tp))
        wsum = {k: float(sum(w[m] for m in range(nm) if self.tp[m] == k)) for k in classes}
        allw = sum(wsum.values()) or 1.0
        engines_of: dict[int, int] = {}
        left = int(total)
        for k in classes:  # at least one engine per class, then by load share
            if left >= k:
                engines_of[k] = 1
                left -= k
            else:
                engines_of[k] = 0
        for k in sorted(classes, key=lambda c: -wsum[c]):
            extra = math.floor((total * wsum[k] / allw - engines_of[k] * k) / k)
            extra = max(0, min(extra, left // k))
            engines_of[k] += extra
            left -= extra * k
        for k in sorted(classes, key=lambda c: -wsum[c]):  # leftover devices
            while left >= k:
                engines_of[k] += 1
                left -= k
        usable = sim.perf.memory_utilization * sim.device.memory_bytes
        self.placement: list[list[int]] = []
        for k in classes:
            E = engines_of[k]
            if E == 0:
                continue
            slots: list[list[int]] = [[] for _ in range(E)]
            load = [0.0] * E
            mem = [0.0] * E
            models = sorted((m for m in range(nm) if self.tp[m] == k), key=lambda m: (-w[m], m))
            W = wsum[k] or 1.0
            for m in models:
                size = mk.models[m].spec.weight_bytes
                reps = max(1, min(E, round(E * w[m] / W)))
                for _ in range(reps):
                    ok = [
                        j
                        for j in range(E)
                        if m not in slots[j]
                        and len(slots[j]) < self.max_models
                        and mem[j] + size <= usable * k * (1 - self.min_kv_fraction)
                    ]
                    if not ok:
                        break
                    j = min(ok, key=lambda x: (load[x], x))
                    slots[j].append(m)
                    mem[j] += size
                    load[j] += w[m] / reps
            for j in range(E):
                if slots[j]:
                    inst = sim.new_instance(sorted(slots[j]), k, warm=True, notify=True)
                    assert inst is not None
                    self.placement.append(sorted(slots[j]))
                    for m in slots[j]:
                        self.engines[m].append(inst)
                    self._index(inst)
        self._indexed = True

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """Least-loaded engine hosting ``model``; drop if none hosts it."""
        inst = self._least_loaded(model)
        if inst is None:
            self.sim.drop(rid, "model_does_not_fit")
            return
        self.sim.dispatch(inst, rid, model, prompt, output)
        self._index(inst)

    def on_requeue(self, entries: list[Entry]) -> None:
        """Re-queue on another engine hosting the model, else drop (``no_capacity``)."""
        for e in entries:
            inst = self._least_loaded(e[1])
            if inst is None:
                self.sim.drop(e[0], "no_capacity")
            else:
                self._send(inst, e)

    def stats(self) -> dict[str, Any]:
        """Placement (models per engine)."""
        return {
            "placement": self.placement,
            "models_per_engine_max": max((len(p) for p in self.placement), default=0),
        }


class ServerlessAutoscaler:
    """Example :class:`Autoscaler`: one engine per model with queued requests, scale
    out at ``scale_out_at`` outstanding per engine, scale down after ``keep_alive`` idle.

    Rule per tick, models in index order: if the model has held requests and no engine
    → up 1; if every engine of the model has ``>= scale_out_at`` outstanding → up 1;
    every engine idle for ``>= keep_alive`` seconds → down. Defaults as ``serverless``.
    """

    def __init__(self, interval: float = 1.0, scale_out_at: int = 1, keep_alive: float = 60.0):
        self.interval = interval
        self.scale_out_at = scale_out_at
        self.keep_alive = keep_alive

    def decide(self, view: AutoscalerView) -> list[ScaleAction]:
        """Return this tick's actions."""
        acts: list[ScaleAction] = []
        for m in range(len(view.queued)):
            eng = view.engines[m]
            busy = bool(eng) and all(view.outstanding[i] >= self.scale_out_at for i in eng)
            if (view.queued[m] and not eng) or busy:
                acts.append(ScaleAction("up", model=m))
            for i in eng:
                since = view.idle_since.get(i)
                if since is not None and view.now - since >= self.keep_alive:
                    acts.append(ScaleAction("down", iid=i))
        return acts


@register_serving_policy("autoscaled")
class Autoscaled(_RequestLevel):
    """Request-level engines whose count per model a pluggable :class:`Autoscaler` decides.

    Rule: every ``autoscaler.interval`` seconds the autoscaler sees an
    :class:`AutoscalerView` and returns actions, applied in order: ``up`` starts
    ``count`` engines of the model (loaded from ``load_tier``; skipped when the pool
    lacks devices), ``down`` stops the engine if idle, otherwise marks it draining (it
    takes no new requests and stops when idle). Arrivals go to the model's
    non-draining engine with the fewest outstanding requests (ties: lowest id), else
    wait in the model's FIFO; held requests move to an engine of their model as soon
    as one is ready (oldest first).
    """

    def __init__(self, autoscaler: Autoscaler | None = None, load_tier: str | None = None):
        self.autoscaler: Autoscaler = autoscaler or ServerlessAutoscaler()
        self.load_tier = load_tier

    def setup(self, sim: ServingSim) -> None:
        """Start with no engines; arm the first tick."""
        super().setup(sim)
        self.draining: set[int] = set()
        self.arrivals = [0] * len(sim.market.models)
        sim.at(0.0, self._tick)

    def _tick(self, t: float) -> None:
        sim = self.sim
        for lst in self.engines:
            for e in lst:
                e.advance_to(t)
                if e.is_idle():
                    self.idle_since.setdefault(e.iid, t)
        view = AutoscalerView(
            now=t,
            queued=[len(q) for q in self.pending],
            engines=[[e.iid for e in lst if e.iid not in self.draining] for lst in self.engines],
            outstanding={e.iid: e.outstanding() for lst in self.engines for e in lst},
            idle_since=dict(self.idle_since),
            arrivals=list(self.arrivals),
            free_gpus=sim.free_gpus(),
            tp=list(self.tp),
        )
        self.arrivals = [0] * len(self.arrivals)
        by_id = {e.iid: e for lst in self.engines for e in lst}
        for a in self.autoscaler.decide(view):
            if a.kind == "up":
                for _ in range(max(0, a.count)):
                    inst = sim.new_instance(
                        [a.model], self.tp[a.model], load_tier=self.load_tier, notify=True
                    )
                    if inst is None:
                        break
                    self.engines[a.model].append(inst)
                    self.cold_starts += 1
            elif a.kind == "down":
                victim = by_id.get(a.iid)
                if victim is None:
                    continue
                if victim.is_idle():
                    self._forget(victim)
                    sim.stop_instance(victim)
                else:
                    self.draining.add(victim.iid)
            else:
                raise ConfigError(f"autoscaler returned unknown action kind '{a.kind}'")
        arrivals_left = sim.n > 0 and t < float(sim.arrival[-1])
        busy = any(not e.is_idle() for lst in self.engines for e in lst)
        more = arrivals_left or any(self.pending) or busy or bool(self.draining)
        if not more and any(self.engines):
            # keep ticking until the autoscaler has released idle engines (bounded wait)
            more = t - float(sim.arrival[-1] if sim.n else 0.0) < 10 * max(
                getattr(self.autoscaler, "keep_alive", 0.0), self.autoscaler.interval
            )
        if more and t + self.autoscaler.interval <= sim.horizon:
            sim.at(t + self.autoscaler.interval, self._tick)

    def _pick(self, m: int) -> EngineInstance | None:
        now = self.sim.now
        best: EngineInstance | None = None
        for e in self.engines[m]:
            if e.iid in self.draining:
                continue
            e.advance_to(now)
            if best is None or (e.outstanding(), e.iid) < (best.outstanding(), best.iid):
                best = e
        return best

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """Route to a live engine or hold."""
        self.arrivals[model] += 1
        if not self._fits_anywhere(model, prompt, output):
            self.sim.drop(rid, "exceeds_kv_capacity")
            return
        e: Entry = (rid, model, prompt, output - 1, -1.0, 0)
        inst = self._pick(model) if not self.pending[model] else None
        if inst is None:
            self._hold(e)
        else:
            self._send(inst, e)

    def on_wake(self, worker: Any) -> None:
        """Drain held requests into ready engines; stop idle draining engines."""
        if not isinstance(worker, EngineInstance):
            return
        m = worker.models[0]
        if worker.iid in self.draining:
            if worker.is_idle():
                self.draining.discard(worker.iid)
                self._forget(worker)
                self.sim.stop_instance(worker)
            return
        if worker.mode != 3 and self.pending[m]:  # not LOADING
            while self.pending[m]:
                self._send(worker, self.pending[m].popleft())
        if worker.is_idle():
            self.idle_since.setdefault(worker.iid, self.sim.now)
        else:
            self.idle_since.pop(worker.iid, None)
