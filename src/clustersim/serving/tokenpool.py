"""Token-level GPU pooling: ``token_pooled`` (Aegaeon-style) and ``hybrid_pooled`` (ours).

A pool of devices is split into **prefill workers** and **decode workers** (prefill /
decode disaggregation). Any worker can serve any model of its tensor-parallel class;
it switches models *between* tokens — preemptively, not only when a request ends —
paying a weight load from pinned host memory over PCIe (``LoadModel`` tier
``host_pinned``), partly hidden by prefetching the next model into a spare buffer.

* :class:`PrefillWorker` — grouped FCFS: a queue of same-model groups, prefill batch
  size 1, hand-off of the KV cache to a decode worker over the scale-out link.
* :class:`DecodeWorker` — weighted round-robin over the per-model decode batches it
  holds; a batch runs a quota of steps derived from the TBT target and the round's
  switching overhead, then the next batch's model is switched in.

:class:`TokenPooled` pins the Aegaeon rule in its docstring; :class:`HybridPooled`
(ours) gives the hot models their own non-switching lanes and token-pools the tail.
"""

from __future__ import annotations

import math
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.errors import ConfigError
from clustersim.serving.batch import DecodeBatch
from clustersim.serving.perf import ModelCost, StepCost
from clustersim.serving.policies import ServingPolicy, model_tp, register_serving_policy

if TYPE_CHECKING:
    from clustersim.serving.simulator import ServingSim

__all__ = ["DecodeWorker", "HybridPooled", "PrefillWorker", "TokenPooled"]

IDLE, RUN, SWITCH = 0, 1, 2
_BIG = 1 << 60


# ----------------------------------------------------------------------------------------
# prefill worker
# ----------------------------------------------------------------------------------------
class PrefillWorker:
    """Grouped-FCFS prefill worker (batch size 1), see module docstring.

    Queue order: groups in the order they were created; a group holds requests of one
    model in arrival order. The worker finishes its current group, then takes the next
    group, switching models if needed. Prefetch: when a group starts, the model of the
    next queued group (if different) starts loading into the spare buffer; the later
    switch costs ``max(0, load - time since prefetch start)``.
    """

    def __init__(self, pol: TokenPooled, gpus: list[int], tp: int, models: list[int]) -> None:
        self.pol = pol
        self.sim = pol.sim
        self.gpus = gpus
        self.tp = tp
        self.iid = -1
        self.version = 0
        self.queue: deque[list[Any]] = deque()  # [model, entries(list), est_seconds]
        self.open: dict[int, int] = {}  # model -> queued groups of it not yet full
        self.group: list[Any] | None = None
        self.gi = 0
        self.cur = -1
        self.mode = IDLE
        self.t_end = 0.0
        self.t0 = 0.0
        self.switch_to = -1
        self.prefetch: tuple[int, float] | None = None
        self.busy = 0.0
        self.load_time = 0.0
        self.switches = 0
        self.models = list(models)
        self.queued_work = 0.0
        self.entry: tuple[int, int, int, float] | None = None
        self.draining = False

    def next_event(self) -> float:
        """End of the current prefill/switch (``inf`` when idle)."""
        return self.t_end if self.mode != IDLE else math.inf

    def load_estimate(self, now: float) -> float:
        """Seconds of queued work (remaining current item + queued prefills/switches)."""
        rem = max(0.0, self.t_end - now) if self.mode != IDLE else 0.0
        return rem + self.queued_work

    def add(self, t: float, rid: int, model: int, prompt: int, output: int) -> None:
        """Queue a request (the policy decided the group); then plan if idle."""
        self.advance_to(t)
        est = self.pol.prefill_seconds(model, prompt, self.tp)
        g = self.pol.find_group(self, model)
        full = self.pol.max_group
        if g is None:
            sw = self.pol.switch_seconds(model, self.tp) if self._last_model() != model else 0.0
            g = [model, [], sw]
            self.queue.append(g)
            self.queued_work += sw
            if full > 1:
                self.open[model] = self.open.get(model, 0) + 1
        elif g is not self.group and len(g[1]) + 1 == full:
            self.open[model] -= 1  # a queued group fills up
        g[1].append((rid, prompt, output, t))
        self.queued_work += est
        if self.mode == IDLE:
            self._plan(t)
        elif self.prefetch is None:
            self._maybe_prefetch(t)

    def _last_model(self) -> int:
        if self.queue:
            return int(self.queue[-1][0])
        if self.group is not None:
            return int(self.group[0])
        return self.cur

    def _maybe_prefetch(self, t: float) -> None:
        if self.pol.prefetch and self.queue and self.queue[0][0] != self.cur:
            self.prefetch = (int(self.queue[0][0]), t)

    def advance_to(self, t: float) -> None:
        """Process every prefill/switch that ends at or before ``t``."""
        while self.mode != IDLE and self.t_end <= t:
            te = self.t_end
            if self.mode == SWITCH:
                self.cur = self.switch_to
                self.mode = IDLE
            else:
                self.busy += te - self.t0
                assert self.entry is not None
                rid, prompt, output, _ = self.entry
                self.entry = None
                self.mode = IDLE
                self.pol.prefill_done(self, te, rid, self.cur, prompt, output)
            self._plan(te)

    def _plan(self, t: float) -> None:
        while True:
            if self.group is not None and self.gi < len(self.group[1]):
                if self.group[0] != self.cur:
                    self._start_switch(t, int(self.group[0]))
                    return
                e = self.group[1][self.gi]
                self.gi += 1
                _, prompt, _, _ = e
                d = self.pol.prefill_seconds(self.cur, prompt, self.tp)
                self.queued_work = max(0.0, self.queued_work - d)
                self.entry = e
                self.mode = RUN
                self.t0 = t
                self.t_end = t + d
                self._post()
                return
            self.group = None
            self.gi = 0
            if not self.queue:
                self.mode = IDLE
                self.queued_work = 0.0
                return
            self.group = self.queue.popleft()
            if len(self.group[1]) < self.pol.max_group:
                self.open[self.group[0]] -= 1  # leaves the queue not full
            self.queued_work = max(0.0, self.queued_work - self.group[2])
            if self.group[0] == self.cur:
                self._maybe_prefetch(t)

    def _start_switch(self, t: float, model: int) -> None:
        load = self.pol.switch_seconds(model, self.tp)
        if self.prefetch is not None and self.prefetch[0] == model:
            load = max(0.0, load - (t - self.prefetch[1]))
        self.prefetch = None
        self.switches += 1
        self.load_time += load
        self.switch_to = model
        if model not in self.models:
            self.models.append(model)
        if load <= 0.0:
            self.cur = model
            self._maybe_prefetch(t)
            self._plan(t)
            return
        self.mode = SWITCH
        self.t_end = t + load
        self._post()

    def _post(self) -> None:
        self.version += 1
        self.sim.post_wake(self)


# ----------------------------------------------------------------------------------------
# decode worker
# ----------------------------------------------------------------------------------------
Join = tuple[int, int, int, int, float, int, float]  # rid, model, ctx, rem, t_first, gen, t_ready


class DecodeWorker:
    """Weighted round-robin decode worker over per-model batches (see module docstring).

    Rule: batches rotate in the order they were created. A turn runs the batch's model
    for ``quota`` steps (or until it has no sequence): with ``a`` active batches,
    ``quota = clamp(ceil(S / (margin * TBT - sum tau)), 1, max_quota)`` where ``S`` is
    the sum of their model-load times (a round's switching overhead) and ``sum tau``
    the sum of their current step times; ``quota = max_quota`` if
    ``margin * TBT <= sum tau`` (overloaded); a single active batch runs without limit.
    New sequences of the running batch join at the next step boundary; others join
    their batch at once. The KV caches of all batches stay resident; capacity =
    ``memory_utilization * tp * memory - 2 * largest weights`` (current model + prefetch
    buffer; one weight copy for a pinned worker). Requests that do not fit wait FIFO.
    On KV overflow the running batch's most recent sequence is swapped to host memory
    and re-queued (FIFO head); the swap costs ``ctx * kv_bytes / PCIe`` on re-admission.
    """

    def __init__(
        self, pol: TokenPooled, gpus: list[int], tp: int, kv_cap: float, pinned: int = -1
    ) -> None:
        self.pol = pol
        self.sim = pol.sim
        self.gpus = gpus
        self.tp = tp
        self.iid = -1
        self.version = 0
        self.kv_cap = kv_cap
        self.pinned = pinned
        self.batches: dict[int, DecodeBatch] = {}
        self.rotation: list[int] = []
        self.cur = pinned
        self.run_model = -1
        self.quota_left = 0
        self.mode = IDLE
        self.t_end = 0.0
        self.seg_t0 = 0.0
        self.seg_k = 0
        self.seg_cost: StepCost | None = None
        self.switch_to = -1
        self.prefetch: tuple[int, float] | None = None
        self.joins: list[Join] = []
        self.waiting: deque[Join] = deque()
        self._wait_bytes: float | None = None  # KV bytes of ``waiting`` (None: stale)
        self.reserved = 0.0
        self.inbound = 0.0  # KV bytes of handed-off sequences still in transit
        self.busy = 0.0
        self.load_time = 0.0
        self.switches = 0
        self.models: list[int] = [pinned] if pinned >= 0 else []
        self.swap_debt = 0.0
        self.draining = False
        self.next_turn = -1
        self.last_turn = -1
        self.decoded: dict[int, list[int]] = {}  # model -> [sequence-steps, steps] run

    # -- queries -------------------------------------------------------------------
    def next_event(self) -> float:
        """End of the current run/switch (``inf`` when idle)."""
        return self.t_end if self.mode != IDLE else math.inf

    def _footprint(self) -> tuple[float, float]:
        """KV bytes of the resident batches and what one step of each adds, in one pass."""
        used = grow = 0.0
        for b in self.batches.values():
            kt = b.kv_tok
            used += b.C * kt
            grow += b.B * kt
        return used, grow

    def kv_used(self) -> float:
        """KV bytes of all resident batches plus joins waiting for the step boundary."""
        return self.reserved + self._footprint()[0]

    def growth(self) -> float:
        """KV bytes one step of every batch adds (upper bound for admission)."""
        return self._footprint()[1]

    def active(self) -> list[int]:
        """Models with running sequences, in rotation order."""
        return [m for m in self.rotation if self.batches[m].B > 0]

    def has_room(self, model: int, ctx: int, extra: float = 0.0) -> bool:
        """Whether a sequence of ``ctx`` cached tokens can join now (KV room, with
        ``extra`` bytes already promised, and the batch below ``max_num_seqs``)."""
        b = self.batches.get(model)
        if b is not None:
            joining = sum(1 for j in self.joins if j[1] == model) if self.joins else 0
            if b.B + joining >= self.sim.perf.max_num_seqs:
                return False
        kv = self.pol.cost(model, self.tp).kv_bytes_per_token
        used, grow = self._footprint()
        return self.reserved + used + extra + (ctx + 1) * kv + grow <= self.kv_cap

    def can_take(self, model: int, ctx: int) -> bool:
        """Hand-off test: no KV-blocked sequence waits here (a newcomer would queue
        behind it, FIFO) and the sequence fits with the KV caches in transit counted."""
        return not self.waiting and self.has_room(model, ctx, self.inbound)

    def backlog(self) -> float:
        """KV bytes promised beyond the resident batches: in transit plus waiting."""
        w = self._wait_bytes
        if w is None:  # recomputed once per change of the queue, in queue order
            cost, tp = self.pol.cost, self.tp
            w = self._wait_bytes = sum(
                e[2] * cost(e[1], tp).kv_bytes_per_token for e in self.waiting
            )
        return self.inbound + w

    def round_time_with(self, model: int, ctx: int) -> float:
        """Sum of step times of the active batches if one more sequence of ``model``
        (``ctx`` cached tokens) joined: the round length without switching."""
        ovh = self.sim.perf.iteration_overhead
        tot = 0.0
        seen = False
        for m in self.rotation:
            b = self.batches[m]
            B, C = b.B, b.C
            if m == model:
                B += 1
                C += ctx
                seen = True
            if B:
                tot += b.cost.decode_step_time(B, C, ovh)
        if not seen:
            tot += self.pol.cost(model, self.tp).decode_step_time(1, ctx, ovh)
        return tot

    def round_load(self) -> float:
        """Sum of current step times of the active batches (a round without switching)."""
        tot = 0.0
        ovh = self.sim.perf.iteration_overhead
        for m in self.active():
            b = self.batches[m]
            tot += b.cost.decode_step_time(b.B, b.C, ovh)
        return tot

    # -- admission -----------------------------------------------------------------
    def accept(self, t: float, e: Join) -> None:
        """A sequence arrives at ``t`` (its KV cache transferred)."""
        self.advance_to(t)
        if self.waiting or not self.has_room(e[1], e[2]):
            self.waiting.append(e)
            self._wait_bytes = None
            return
        self._admit(t, e)
        if self.mode == IDLE:
            self._plan(t)

    def _admit(self, t: float, e: Join) -> None:
        rid, m, ctx, rem, t_first, gen, t_ready = e
        if m not in self.batches:
            self.batches[m] = DecodeBatch(m, self.pol.cost(m, self.tp), self.sim.slo.tbt)
            self.rotation.append(m)
            if m not in self.models:
                self.models.append(m)
        if self.mode == RUN and self.run_model == m:
            self.joins.append(e)
            self.reserved += ctx * self.batches[m].kv_tok
            cost = self.seg_cost
            assert cost is not None
            nk = cost.steps_within(t - self.seg_t0) + 1
            if nk < self.seg_k:
                self.seg_k = nk
                self.t_end = self.seg_t0 + cost.total(nk)
                self._post()
            return
        b = self.batches[m]
        b.admit(rid, ctx, rem, t_first, gen)
        b.mark_new(rid, t_ready)

    # -- time ----------------------------------------------------------------------
    def advance_to(self, t: float) -> None:
        """Process every run/switch that ends at or before ``t``."""
        while self.mode != IDLE and self.t_end <= t:
            te = self.t_end
            if self.mode == SWITCH:
                self.cur = self.switch_to
                self.mode = IDLE
                if self.next_turn != self.run_model:
                    self.quota_left = 0
            else:
                self._end_run(te)
            self._plan(te)

    def _end_run(self, te: float) -> None:
        cost = self.seg_cost
        assert cost is not None
        k = self.seg_k
        t0 = self.seg_t0
        self.busy += te - t0
        m = self.run_model
        b = self.batches[m]
        d = self.decoded.get(m)
        if d is None:
            d = self.decoded[m] = [0, 0]
        d[0] += b.B * k
        d[1] += k
        t1 = t0 + cost.tau(0)
        for rid, tf, lag, gap in b.advance(k, t0, t1, te, cost.tau(k - 1)):
            self.pol.complete(rid, tf, lag, gap, self.iid)
        self.quota_left -= k
        self.mode = IDLE
        if self.joins:
            for rid, _m, ctx, rem, t_first, gen, t_ready in self.joins:
                b.admit(rid, ctx, rem, t_first, gen)
                b.mark_new(rid, t_ready)
            self.joins = []
            self.reserved = 0.0

    def _plan(self, t: float) -> None:
        sim = self.sim
        # admit KV-blocked sequences (FIFO)
        while self.waiting and self.has_room(self.waiting[0][1], self.waiting[0][2]):
            e = self.waiting.popleft()
            self._wait_bytes = None
            if e[5] > 0 and e[4] >= 0 and self.pol.swapped.pop(e[0], False):
                self.swap_debt += (
                    e[2] * self.pol.cost(e[1], self.tp).kv_bytes_per_token / (self.pol.pcie_bw)
                )
            self._admit(t, e)
        active = self.active()
        if not active:
            self.mode = IDLE
            self.run_model = -1
            self.next_turn = -1
            if len(self.rotation) > 64:
                self.rotation = []
                self.batches = {}
            return
        if self.swap_debt > 0:
            d = self.swap_debt
            self.swap_debt = 0.0
            self.switch_to = self.cur
            self.next_turn = self.run_model if self.run_model in active else -1
            self.mode = SWITCH
            self.t_end = t + d
            self.load_time += d
            self._post()
            return
        if self.run_model in active and self.quota_left > 0 and self.cur == self.run_model:
            nxt = self.run_model
        elif self.next_turn in active:
            nxt = self.next_turn
        else:
            rot = self.rotation
            start = rot.index(self.last_turn) + 1 if self.last_turn in self.batches else 0
            nxt = active[0]
            for j in range(len(rot)):
                cand = rot[(start + j) % len(rot)]
                if self.batches[cand].B > 0:
                    nxt = cand
                    break
        self.next_turn = -1
        if nxt != self.cur:
            load = self.pol.switch_seconds(nxt, self.tp)
            if self.prefetch is not None and self.prefetch[0] == nxt:
                load = max(0.0, load - (t - self.prefetch[1]))
            self.prefetch = None
            self.switches += 1
            self.load_time += load
            self.run_model = -1
            if load > 0.0:
                self.switch_to = nxt
                self.next_turn = nxt
                self.mode = SWITCH
                self.t_end = t + load
                self._post()
                return
            self.cur = nxt
        if nxt != self.run_model or self.quota_left <= 0:
            self.run_model = nxt
            self.last_turn = nxt
            self.quota_left = self._quota(active)
            if self.pol.prefetch and len(active) > 1:
                j = (active.index(nxt) + 1) % len(active)
                if active[j] != nxt:
                    self.prefetch = (active[j], t)
        b = self.batches[nxt]
        c = b.cost
        B, C = b.B, b.C
        ovh = sim.perf.iteration_overhead
        k = min(self.quota_left, b.next_finish())
        growth = b.kv_tok * B
        room = int((self.kv_cap - self.kv_used()) // growth)
        if room < 1:
            self._swap_out(b)
            self._plan(t)
            return
        k = min(k, room)
        cost = StepCost(
            c.f_seq * B + c.f_ctx * C,
            c.f_ctx * B,
            c.m_w + c.m_ctx * C,
            c.m_ctx * B,
            ovh + (c.comm_fixed + c.comm_tok * B),
        )
        self.seg_cost = cost
        self.seg_t0 = t
        self.seg_k = k
        self.mode = RUN
        self.t_end = t + cost.total(k)
        self._post()

    def _quota(self, active: list[int]) -> int:
        mq = self.pol.max_quota
        if len(active) <= 1:
            return _BIG
        ovh = self.sim.perf.iteration_overhead
        tau = 0.0
        s = 0.0
        for m in active:
            b = self.batches[m]
            tau += b.cost.decode_step_time(b.B, b.C, ovh)
            s += self.pol.switch_seconds(m, self.tp)
        room = self.pol.margin * self.sim.slo.tbt - tau
        if room <= 0:
            return mq
        return int(min(mq, max(1, math.ceil(s / room))))

    def _swap_out(self, b: DecodeBatch) -> None:
        ev = b.evict_latest()
        assert ev is not None, "KV overflow with an empty batch"
        rid, ctx_now, remaining, lag, gap, t_last = ev
        sim = self.sim
        gen = int(sim.out_tokens[rid]) - 1 - remaining
        sim.note_preempted(rid, lag, gap, t_last)
        self.pol.swapped[rid] = True
        self.waiting.appendleft(
            (rid, b.model, ctx_now, remaining, float(sim.first_token[rid]), gen, t_last)
        )
        self._wait_bytes = None

    def _post(self) -> None:
        self.version += 1
        self.sim.post_wake(self)


def _deliver(dw: DecodeWorker, e: Join, t: float) -> None:
    """Timer callback: the KV cache of ``e`` reached ``dw`` at ``t``."""
    dw.inbound = max(0.0, dw.inbound - e[2] * dw.pol.cost(e[1], dw.tp).kv_bytes_per_token)
    dw.accept(t, e)


# ----------------------------------------------------------------------------------------
# policies
# ----------------------------------------------------------------------------------------
@register_serving_policy("token_pooled")
class TokenPooled(ServingPolicy):
    """Aegaeon-style token-level pooling over a fixed pool of ``gpus`` devices.

    Rule:

    * **pool split**: models are grouped by tensor-parallel degree (the smallest power
      of two holding two weight copies plus 10 % KV room, see :meth:`_pool_tp`); each
      class has a prefill and a decode sub-pool whose offered loads are estimated by
      :meth:`_class_loads` (decode at a Little's-law batch); the devices are split by
      square-root staffing (``staffing="sqrt"``: ``load + beta * sqrt(load)`` workers,
      one ``beta`` for the pool) or in proportion to the loads
      (``staffing="proportional"``), at least one prefill and one decode worker per
      class (:meth:`_staff` pins the rounding). ``prefill_fraction``, if set, fixes
      the prefill share of each class's load.
    * **prefill** (grouped FCFS): a request joins a not-yet-full group (size <
      ``max_group``) of its model — the executing group of a worker or any queued group,
      earliest first (ties: lowest worker id) — else opens a new group at the end of the
      queue of the prefill worker with the least queued work (ties: lowest id). Batch size
      1; each request's first token is emitted at the end of its prefill.
    * **hand-off**: at the first token the request goes to a decode worker with room
      (:meth:`DecodeWorker.can_take`: no KV-blocked sequence waiting there — the newcomer
      would queue behind it, FIFO — and KV cache for it with the caches already handed
      to the worker but still in transit counted, and its batch below
      ``max_num_seqs``) whose round — the sum of its active batches' step times with
      this sequence added — stays within ``margin * TBT``, preferring one that already
      runs a batch of the model; among those the shortest round (ties: lowest id). If
      no worker keeps its round within the target: the shortest round among workers
      with room; if none has room, the most free KV after its backlog (in transit plus
      waiting; it queues). Transfer: ``prompt * kv_bytes / scale_out_bw`` seconds.
    * **decode**: :class:`DecodeWorker` (weighted round-robin with TBT-derived quotas).
    * **switch cost**: ``weights / tp / PCIe`` (``host_pinned``), hidden by prefetch
      when ``prefetch`` (Aegaeon's prefetch; engine components reused, no re-init).
    """

    def __init__(
        self,
        prefill_fraction: float | None = None,
        max_group: int = 8,
        max_quota: int = 256,
        margin: float = 0.9,
        prefetch: bool = True,
        switch_tier: str = "host_pinned",
        rates: Any = None,
        staffing: str = "sqrt",
    ) -> None:
        if staffing not in ("sqrt", "proportional"):
            raise ConfigError(
                f"token_pooled: staffing must be 'sqrt' or 'proportional', not {staffing!r}"
            )
        if prefill_fraction is not None and not 0.0 < prefill_fraction < 1.0:
            raise ConfigError("token_pooled: prefill_fraction must be in (0, 1)")
        if max_group < 1 or max_quota < 1 or not 0.0 < margin <= 1.0:
            raise ConfigError("token_pooled: max_group, max_quota >= 1 and 0 < margin <= 1")
        self.prefill_fraction = prefill_fraction
        self.max_group = max_group
        self.max_quota = max_quota
        self.margin = margin
        self.prefetch = prefetch
        self.switch_tier = switch_tier
        self.rates = rates
        self.staffing = staffing

    # -- setup -----------------------------------------------------------------------
    def setup(self, sim: ServingSim) -> None:
        """Split the pool into prefill and decode workers per tensor-parallel class."""
        self.sim = sim
        if not math.isfinite(sim.capacity):
            raise ConfigError(f"{self.name} needs a finite pool size (gpus=...)")
        mk = sim.market
        nm = len(mk.models)
        self.tp = self._pool_tp()
        self.pcie_bw = sim.load.tier_bw("host_pinned", sim.device)
        self.swapped: dict[int, bool] = {}
        self._switch_cache: dict[tuple[int, int], float] = {}
        self._prefill_cache: dict[tuple[int, int, int], float] = {}
        r = mk.requests
        counts = np.bincount(r.model, minlength=nm).astype(float)
        self.rate = (
            np.asarray(self.rates, dtype=float)
            if self.rates is not None
            else counts / max(mk.duration, 1e-9)
        )
        self.mean_in = np.where(
            counts > 0,
            np.bincount(r.model, weights=r.input_tokens, minlength=nm) / np.maximum(counts, 1),
            1000.0,
        )
        self.mean_out = np.where(
            counts > 0,
            np.bincount(r.model, weights=r.output_tokens, minlength=nm) / np.maximum(counts, 1),
            200.0,
        )
        self.prefill_workers: dict[int, list[PrefillWorker]] = {}
        self.decode_workers: dict[int, list[DecodeWorker]] = {}
        self.all_workers: list[Any] = []
        self.lanes: dict[int, tuple[list[PrefillWorker], list[DecodeWorker]]] = {}
        self._build(int(sim.capacity))

    def _pool_tp(self) -> list[int]:
        """Tensor-parallel degree per model for switching workers.

        Rule: the smallest power of two ``tp >= model_tp`` whose devices hold two weight
        copies (current + prefetch buffer) and still keep ``min_kv_fraction`` (10 %) of
        the usable memory for KV caches (Aegaeon runs 72B models with TP=4).
        """
        sim = self.sim
        base = model_tp(sim.market, sim.device, sim.perf)
        usable = sim.perf.memory_utilization * sim.device.memory_bytes
        out = []
        for m, t in enumerate(base):
            w = sim.market.models[m].spec.weight_bytes
            while t < 64 and usable * t - 2 * w < 0.1 * usable * t:
                t *= 2
            out.append(t)
        return out

    def cost(self, model: int, tp: int) -> ModelCost:
        """Model cost on ``tp`` devices (cached by the simulator)."""
        return self.sim.cost(model, tp)

    def switch_seconds(self, model: int, tp: int) -> float:
        """Seconds to load ``model``'s weights from pinned host memory (no prefetch)."""
        key = (model, tp)
        v = self._switch_cache.get(key)
        if v is None:
            v = self.sim.load_seconds(model, tp, self.switch_tier)
            self._switch_cache[key] = v
        return v

    def prefill_seconds(self, model: int, prompt: int, tp: int) -> float:
        """Prefill time of one prompt (batch size 1)."""
        key = (model, prompt, tp)
        v = self._prefill_cache.get(key)
        if v is None:
            v = self.cost(model, tp).prefill_time([prompt], self.sim.perf.iteration_overhead)
            if len(self._prefill_cache) < 1_000_000:
                self._prefill_cache[key] = v
        return v

    def _class_loads(self, models: list[int], k: int) -> tuple[float, float]:
        """Estimated prefill and decode busy worker-seconds per second of a set of models.

        Prefill: ``rate * prefill(mean prompt)`` plus one model switch per group
        (``rate * switch / min(max_group, 1 + rate)``: a group gathers about a second of
        the model's requests). Decode: ``rate * output * tau(B) / B``
        with the batch from Little's law, ``B = clamp(rate * output * TBT/2, 1, 256)``
        (sequences in flight if a token takes half the TBT target); without prefetch, plus
        one model switch per 16 TBT periods for a model that is active (``1 - exp(-rate
        * output * TBT)``, the chance it has a sequence in flight) and shares a worker
        (with prefetch the next model loads during the current turn).
        """
        p = d = 0.0
        for m in models:
            pm, dm, sw = self._model_load(m, k)
            p += pm
            d += dm + sw
        return p, d

    def planned_batch(self, m: int) -> float:
        """Decode sequences in flight of model ``m`` the staffing assumes, as one batch:
        ``clamp(rate * mean output * TBT / 2, 1, 256)`` (a token every half TBT)."""
        lam, out = self.rate[m], self.mean_out[m]
        return float(min(256.0, max(1.0, lam * out * self.sim.slo.tbt / 2)))

    def _model_load(self, m: int, k: int) -> tuple[float, float, float]:
        """(prefill, decode compute, decode switching) busy worker-seconds/s of model m."""
        c = self.cost(m, k)
        ovh = self.sim.perf.iteration_overhead
        tbt = self.sim.slo.tbt
        lam, out = self.rate[m], self.mean_out[m]
        p = lam * c.prefill_time([max(1, round(self.mean_in[m]))], ovh)
        # one switch per prefill group; a group gathers the requests of about a second
        p += lam * self.switch_seconds(m, k) / min(float(self.max_group), 1.0 + lam)
        ctx = self.mean_in[m] + 0.5 * out
        b = self.planned_batch(m)
        bi = max(1, round(b))
        d = lam * out * c.decode_step_time(bi, bi * ctx, ovh) / bi
        sw = 0.0
        if b < 16 and not self.prefetch:  # shares workers; switches not hidden by prefetch
            active = 1.0 - math.exp(-lam * out * tbt)
            sw = active * self.switch_seconds(m, k) / max(1.0, 16 * tbt)
        return p, d, sw

    def _build(self, gpus: int, pinned: frozenset[int] = frozenset()) -> None:
        """Split ``gpus`` devices into prefill and decode workers per TP class.

        Models in ``pinned`` have their own decode workers already (``hybrid_pooled``):
        they count towards the class's prefill load only.
        """
        sim = self.sim
        nm = len(sim.market.models)
        classes_models: dict[int, list[int]] = {}
        for m in range(nm):
            classes_models.setdefault(self.tp[m], []).append(m)
        loads: dict[int, tuple[float, float]] = {}
        for k, ms in classes_models.items():
            p = d = 0.0
            for m in ms:
                pm, dm, sw = self._model_load(m, k)
                p += pm
                if m not in pinned:
                    d += dm + sw
            loads[k] = (p, d)
        order = sorted(classes_models, key=lambda k: -(loads[k][0] + loads[k][1]) * k)
        if sum(2 * k for k in order) > gpus:
            k = max(order)
            raise ConfigError(
                f"{self.name}: {gpus} devices cannot hold one prefill and one decode "
                f"worker of {k} devices for every tensor-parallel class"
            )
        n_pre, n_dec = self._staff(gpus, order, loads)
        mem = sim.perf.memory_utilization * sim.device.memory_bytes
        for k in order:
            ms = classes_models[k]
            n_p = n_pre[k]
            E = n_p + n_dec[k]
            wmax = max(sim.market.models[m].spec.weight_bytes for m in ms)
            kv_cap = mem * k - 2 * wmax
            if kv_cap <= 0:
                raise ConfigError(
                    f"{self.name}: a {k}-device worker cannot hold two copies of the "
                    f"largest weights ({wmax / 1e9:.0f} GB)"
                )
            pws: list[PrefillWorker] = []
            dws: list[DecodeWorker] = []
            for i in range(E):
                g = sim.allocate(k)
                assert g is not None
                if i < n_p:
                    pw = PrefillWorker(self, g, k, [])
                    sim.register_worker(pw, [], k, "prefill")
                    pws.append(pw)
                    self.all_workers.append(pw)
                else:
                    dw = DecodeWorker(self, g, k, kv_cap)
                    sim.register_worker(dw, [], k, "decode")
                    dws.append(dw)
                    self.all_workers.append(dw)
            self.prefill_workers[k] = pws
            self.decode_workers[k] = dws
            for m in ms:
                self.lanes[m] = (pws, self.lanes[m][1] if m in pinned else dws)

    def _staff(
        self, gpus: int, order: list[int], loads: dict[int, tuple[float, float]]
    ) -> tuple[dict[int, int], dict[int, int]]:
        """Prefill and decode workers per TP class (``order``: classes, largest load first).

        Each class has two sub-pools, prefill and decode, with offered loads ``R`` in busy
        workers (:meth:`_class_loads`; with ``prefill_fraction`` set, the class's total
        split by it). Target workers per sub-pool:

        * ``staffing="sqrt"`` (default): square-root staffing, ``x = R + beta * sqrt(R)``
          with one ``beta >= 0`` for the whole pool solving ``sum(k * x) = gpus`` —
          the spare capacity is shared in proportion to ``sqrt(R)``, not ``R``, which
          keeps the chance of waiting about equal across sub-pools of different size
          (Halfin & Whitt 1981; the classic call-centre staffing rule). Small sub-pools
          — e.g. the decode workers rotating many cold models — get relatively more
          headroom than under a proportional split, large ones less.
        * ``staffing="proportional"``: ``x = R * gpus / sum(k * R)`` — the targets of the
          earlier rule (which rounded per class first, then split each class into
          prefill and decode; that two-step rounding is gone).

        If the pool is smaller than the offered load both rules fall back to the
        proportional one. Integer workers: every sub-pool starts with one; then, one
        worker at a time, the sub-pool with the largest shortfall ``x - workers`` among
        those whose ``k`` devices still fit gets the next one (ties: class order, then
        prefill before decode), until no device is left that fits a worker.
        """
        subs: list[tuple[int, int, float]] = []  # (class k, 0 prefill / 1 decode, load)
        for k in order:
            p, d = loads[k]
            if self.prefill_fraction is not None:
                tot = p + d
                p, d = tot * self.prefill_fraction, tot * (1.0 - self.prefill_fraction)
            subs += [(k, 0, max(p, 0.0)), (k, 1, max(d, 0.0))]
        dev_load = sum(k * r for k, _, r in subs)
        if self.staffing == "sqrt" and gpus > dev_load:
            root = sum(k * math.sqrt(r) for k, _, r in subs)
            beta = (gpus - dev_load) / root if root > 0 else 0.0
            target = [r + beta * math.sqrt(r) for _, _, r in subs]
        else:
            scale = gpus / dev_load if dev_load > 0 else 0.0
            target = [r * scale for _, _, r in subs]
        workers = [1] * len(subs)
        left = gpus - sum(k for k, _, _ in subs)
        while True:
            best = -1
            gap = -math.inf
            for i, (k, _, _) in enumerate(subs):
                if k <= left and target[i] - workers[i] > gap:
                    best, gap = i, target[i] - workers[i]
            if best < 0:
                break
            workers[best] += 1
            left -= subs[best][0]
        n_pre = {k: workers[i] for i, (k, kind, _) in enumerate(subs) if kind == 0}
        n_dec = {k: workers[i] for i, (k, kind, _) in enumerate(subs) if kind == 1}
        return n_pre, n_dec

    # -- routing -----------------------------------------------------------------------
    def find_group(self, w: PrefillWorker, model: int) -> list[Any] | None:
        """The not-full queued group of ``model`` on ``w`` to join (set by :meth:`on_arrival`)."""
        g = self._join
        self._join = None
        return g

    _join: list[Any] | None = None

    def on_arrival(self, rid: int, model: int, prompt: int, output: int) -> None:
        """Grouped FCFS prefill placement (see class docstring)."""
        sim = self.sim
        now = sim.now
        pws, dws = self.lanes[model]
        k = pws[0].tp
        c = self.cost(model, k)
        mem = sim.perf.memory_utilization * sim.device.memory_bytes * k
        if (prompt + 1) * c.kv_bytes_per_token > mem - 2 * c.weight_bytes or (
            (prompt + output + 1) * c.kv_bytes_per_token > dws[0].kv_cap
        ):
            sim.drop(rid, "exceeds_kv_capacity")
            return
        for w in pws:
            w.advance_to(now)
        target: PrefillWorker | None = None
        for w in pws:
            if w.draining:
                continue
            g = w.group
            if g is not None and g[0] == model and len(g[1]) < self.max_group:
                target, self._join = w, g
                break
            if not w.open.get(model):  # no queued group of the model with room here
                continue
            for q in w.queue:
                if q[0] == model and len(q[1]) < self.max_group:
                    target, self._join = w, q
                    break
            if target is not None:
                break
        if target is None:
            live = [w for w in pws if not w.draining] or pws
            target = min(live, key=lambda w: (w.load_estimate(now), w.iid))
            self._join = None
        target.add(now, rid, model, prompt, output)

    def prefill_done(
        self, w: PrefillWorker, t: float, rid: int, model: int, prompt: int, output: int
    ) -> None:
        """First token of ``rid`` at ``t``: complete it or hand it to a decode worker."""
        sim = self.sim
        sim.first_token[rid] = t
        if output <= 1:
            sim.complete(rid, t, -math.inf, 0.0, w.iid)
            return
        _, dws = self.lanes[model]
        dw = self.pick_decode(dws, model, prompt, t)
        kv = self.cost(model, dw.tp).kv_bytes_per_token
        dw.inbound += prompt * kv
        t_arr = t + prompt * kv / sim.device.scale_out_bw
        e: Join = (rid, model, prompt, output - 1, t, 0, t)
        sim.at(t_arr, partial(_deliver, dw, e))

    def pick_decode(self, dws: list[DecodeWorker], model: int, ctx: int, t: float) -> DecodeWorker:
        """Decode worker for a new sequence (class docstring, hand-off rule)."""
        for w in dws:
            w.advance_to(t)
        live = [w for w in dws if not w.draining] or dws
        limit = self.margin * self.sim.slo.tbt
        # fast path, same result: the preferred set (room, round within the target, a
        # batch of the model running) only contains workers already running the model
        same: list[tuple[float, DecodeWorker]] = []
        for w in live:
            b = w.batches.get(model)
            if b is not None and b.B > 0 and w.can_take(model, ctx):
                r = w.round_time_with(model, ctx)
                if r <= limit:
                    same.append((r, w))
        if same:
            return min(same, key=lambda x: (x[0], x[1].iid))[1]
        fit: list[tuple[float, DecodeWorker]] = []
        for w in live:
            if w.can_take(model, ctx):
                fit.append((w.round_time_with(model, ctx), w))
        ok = [(r, w) for r, w in fit if r <= limit]
        if ok:
            return min(ok, key=lambda x: (x[0], x[1].iid))[1]
        if fit:
            return min(fit, key=lambda x: (x[0], x[1].iid))[1]
        return max(live, key=lambda w: (w.kv_cap - w.kv_used() - w.backlog(), -w.iid))

    def complete(self, rid: int, t: float, lag: float, gap: float, iid: int) -> None:
        """Record a finished request (merging lag/gap from before a swap-out)."""
        sim = self.sim
        p = sim.preempt_lag.pop(rid, None)
        if p is not None:
            lag, gap = max(lag, p[0]), max(gap, p[1])
            sim.last_token_before_preempt.pop(rid, None)
        sim.complete(rid, t, lag, gap, iid)

    def on_wake(self, worker: Any) -> None:
        """Workers run themselves; retire drained workers when capacity shrank."""
        if (
            getattr(worker, "draining", False)
            and worker.mode == IDLE
            and not getattr(worker, "queue", getattr(worker, "waiting", None))
        ):
            self._retire(worker)

    def _retire(self, worker: Any) -> None:
        groups: list[list[Any]] = [*self.prefill_workers.values(), *self.decode_workers.values()]
        for lst in groups:
            if worker in lst and len(lst) > 1:
                lst.remove(worker)
                self.sim.retire_worker(worker)
                return

    def on_capacity_change(self, old: float, new: float) -> None:
        """Shrink softly: drain the least-loaded workers (never the last of a kind per
        class), free their devices when they are empty. Growth adds decode workers."""
        sim = self.sim
        if new > sim.used:
            for k in sorted(self.decode_workers):
                while sim.free_gpus() >= k:
                    g = sim.allocate(k)
                    assert g is not None
                    cap = self.decode_workers[k][0].kv_cap
                    dw = DecodeWorker(self, g, k, cap)
                    sim.register_worker(dw, [], k, "decode")
                    self.decode_workers[k].append(dw)
                    self.all_workers.append(dw)
            return
        excess = sim.used - new
        cands: list[Any] = []
        groups: list[list[Any]] = [*self.decode_workers.values(), *self.prefill_workers.values()]
        for lst in groups:
            cands.extend(sorted(lst, key=lambda w: (w.mode != IDLE, w.iid))[: len(lst) - 1])
        for w in cands:
            if excess <= 0:
                break
            w.draining = True
            excess -= w.tp
            w.advance_to(sim.now)
            self.on_wake(w)

    def stats(self) -> dict[str, Any]:
        """Worker counts and switching totals (all workers, pinned lanes included)."""
        pw = [w for w in self.all_workers if isinstance(w, PrefillWorker)]
        dw = [w for w in self.all_workers if isinstance(w, DecodeWorker)]
        return {
            "prefill_workers": len(pw),
            "decode_workers": len(dw),
            "switches": int(sum(w.switches for w in pw + dw)),
            "switch_seconds": float(sum(w.load_time for w in pw + dw)),
            "max_models_per_decode_worker": max((len(w.models) for w in dw), default=0),
            "decode_batches": self._batch_stats(dw),
        }

    def _batch_stats(self, dw: list[DecodeWorker]) -> dict[str, list[float]]:
        """Per model (index order): decode steps run, time-averaged batch (sequences per
        step, over all workers), the batch the staffing planned, and the workers that ran
        it (models that never decoded: 0 steps, batch 0)."""
        nm = len(self.sim.market.models)
        seq = [0] * nm
        steps = [0] * nm
        workers = [0] * nm
        for w in dw:
            for m, (q, k) in w.decoded.items():
                seq[m] += q
                steps[m] += k
                workers[m] += 1
        return {
            "steps": [float(k) for k in steps],
            "mean_batch": [q / k if k else 0.0 for q, k in zip(seq, steps, strict=True)],
            "planned_batch": [self.planned_batch(m) for m in range(nm)],
            "workers": [float(x) for x in workers],
        }


@register_serving_policy("hybrid_pooled")
class HybridPooled(TokenPooled):
    """Ours: hot models get their own non-switching decode lanes, the rest is token-pooled.

    Rule: a model is *hot* if its estimated decode compute load (``_model_load``,
    without the switching term) fills at least ``hot_threshold`` of one decode worker.
    In decreasing order of that load (ties: lower index), each hot model gets
    ``max(1, min(ceil(load / target_util), round(gpus * load / total device load)))``
    pinned decode workers (one model, weights loaded once and never switched, KV
    capacity = memory - weights), as long as every TP class keeps one prefill and one
    pooled decode worker. The remaining devices run ``token_pooled`` exactly: a shared
    grouped-FCFS prefill pool per TP class for **all** models (hot ones included: a
    prefill lane per model would lose statistical multiplexing), and round-robin
    decode workers for the non-hot models. A hot model's first token is handed to its
    pinned lane with the ``token_pooled`` hand-off rule.

    Why it can beat token-level pooling: a hot model never pays a switch, its batch is
    never paused for other models' turns (smaller gaps, tail TBT) and grows large
    (weights read once per step for many sequences); rounds in the shared pool get
    shorter because hot batches left them.
    """

    def __init__(self, hot_threshold: float = 0.5, target_util: float = 0.7, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 < target_util <= 1.0 or hot_threshold <= 0:
            raise ConfigError("hybrid_pooled: 0 < target_util <= 1 and hot_threshold > 0")
        self.hot_threshold = hot_threshold
        self.target_util = target_util

    def _build(self, gpus: int, pinned: frozenset[int] = frozenset()) -> None:
        sim = self.sim
        nm = len(sim.market.models)
        loads3 = {m: self._model_load(m, self.tp[m]) for m in range(nm)}
        total = sum((p + d + sw) * self.tp[m] for m, (p, d, sw) in loads3.items()) or 1.0
        order = sorted(range(nm), key=lambda m: (-(loads3[m][1]), m))
        classes: dict[int, list[int]] = {}
        for m in range(nm):
            classes.setdefault(self.tp[m], []).append(m)
        reserve = sum(2 * k for k in classes)  # each class keeps 1 prefill + 1 pooled decode
        left = gpus
        self.hot: list[int] = []
        mem = sim.perf.memory_utilization * sim.device.memory_bytes
        plan: list[tuple[int, int]] = []
        for m in order:
            d = loads3[m][1]
            if d < self.hot_threshold:  # decode compute alone must fill a worker
                continue
            k = self.tp[m]
            n_d = max(1, min(math.ceil(d / self.target_util), round(gpus * d / total)))
            if left - n_d * k < reserve:
                continue
            left -= n_d * k
            self.hot.append(m)
            plan.append((m, n_d))
        for m, n_d in plan:
            k = self.tp[m]
            w = sim.market.models[m].spec.weight_bytes
            dws: list[DecodeWorker] = []
            for _ in range(n_d):
                g = sim.allocate(k)
                assert g is not None
                dw = DecodeWorker(self, g, k, mem * k - w, pinned=m)
                sim.register_worker(dw, [m], k, "decode-pinned")
                dws.append(dw)
                self.all_workers.append(dw)
            self.lanes[m] = ([], dws)
        super()._build(left, frozenset(self.hot))

    def stats(self) -> dict[str, Any]:
        """Token-pool counters plus the hot models."""
        s = super().stats()
        s["hot_models"] = list(self.hot)
        return s
