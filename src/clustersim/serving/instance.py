"""A request-level serving instance: continuous batching on ``tp`` devices, advanced lazily.

:class:`EngineInstance` is one inference engine (vLLM-like) holding the weights of
one or more resident models (several only under multiplexing) and serving their
requests with iteration-level continuous batching:

* **scheduling rule** (vLLM V0 default, prefill first): at every iteration boundary,
  if the FCFS waiting queue's head can be admitted, the next iteration is a prefill
  of as many queue-head requests as fit (stop at the first that does not fit: batch
  cap ``max_num_seqs``, KV room for its prompt, prompt-token budget
  ``max_batched_tokens`` — a single longer prompt still runs alone); otherwise it is
  a decode step of every running sequence of every resident model (one fused
  iteration; roofline over the union of their work);
* **KV cache**: a sequence holds ``kv_bytes_per_token * (prompt + generated)``; the
  capacity is ``memory_utilization * tp * memory - resident weights``. When the next
  decode step would overflow it, the most recently admitted sequence is preempted
  (vLLM recompute mode) and goes back to the head of the queue; on re-admission it
  re-prefills prompt + generated tokens and continues;
* **time**: decode runs in closed-form multi-step *runs* that end at the next
  completion, the next KV overflow or (when a newly queued request could be
  admitted) the end of the step in progress. The instance is advanced lazily: it only
  computes up to a time when someone asks (:meth:`EngineInstance.advance_to`), so a
  day of traffic costs O(requests), not O(tokens) or O(steps).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from clustersim.serving.batch import DecodeBatch
from clustersim.serving.perf import ModelCost, StepCost

if TYPE_CHECKING:
    from clustersim.serving.simulator import ServingSim

__all__ = ["DECODE", "IDLE", "LOADING", "PREFILL", "STOPPED", "EngineInstance"]

IDLE, PREFILL, DECODE, LOADING, STOPPED = 0, 1, 2, 3, 4

_WATERMARK = 0.01
"""Share of the KV cache admission keeps free (vLLM's block-manager watermark, 1 %)."""


def fits_kv(kv_tok: float, cap: float, prompt: int, output: int) -> bool:
    """Whether a request can ever be admitted alone on an engine with ``cap`` KV bytes."""
    return (prompt + output + 1) * kv_tok <= cap * (1.0 - _WATERMARK)


# waiting entry: (rid, model, prefill tokens, remaining decode steps, t_first or -1, gen)
Waiting = tuple[int, int, int, int, float, int]


class EngineInstance:
    """One engine on ``tp`` devices; see the module docstring for its scheduling rule.

    Attributes:
        iid: instance id (unique within a simulation).
        tp: devices it occupies.
        gpus: ids of those devices in the pool.
        models: resident market-model indices.
        mode: ``IDLE``, ``PREFILL``, ``DECODE``, ``LOADING`` or ``STOPPED``.
        t_end: end time of the iteration (or load) in progress.
        busy: seconds spent in prefill/decode iterations.
        load_time: seconds spent loading weights.
        created: time the instance was created (devices allocated).
    """

    __slots__ = (
        "_admit_log",
        "_blist",
        "_cap",
        "_max_seqs",
        "_overhead",
        "_prefilling",
        "_prior",
        "_res",
        "_tok_budget",
        "batches",
        "busy",
        "created",
        "gpus",
        "iid",
        "load_time",
        "mode",
        "models",
        "notify",
        "seg_cost",
        "seg_k",
        "seg_t0",
        "sim",
        "stopped_at",
        "switches",
        "t_end",
        "tp",
        "version",
        "waiting",
    )

    def __init__(
        self,
        sim: ServingSim,
        iid: int,
        models: list[int],
        tp: int,
        gpus: list[int],
        t_now: float,
        t_ready: float,
        notify: bool = False,
    ) -> None:
        self.sim = sim
        self.iid = iid
        self.tp = tp
        self.gpus = gpus
        self.created = t_now
        self.stopped_at: float | None = None
        self.notify = notify
        self.version = 0
        self.busy = 0.0
        self.switches = 0
        self.load_time = t_ready - t_now
        p = sim.perf
        self._overhead = p.iteration_overhead
        self._max_seqs = p.max_num_seqs
        self._tok_budget = p.max_batched_tokens
        self.waiting: deque[Waiting] = deque()
        self._prefilling: list[Waiting] = []
        self._res = 0.0
        self._admit_log: list[int] = []
        self._prior: dict[int, tuple[float, float]] = {}
        self.seg_t0 = 0.0
        self.seg_k = 0
        self.seg_cost: StepCost | None = None
        self.models: list[int] = []
        self.batches: dict[int, DecodeBatch] = {}
        self._blist: list[DecodeBatch] = []
        self._cap = 0.0
        self._set_models(models)
        if t_ready > t_now:
            self.mode = LOADING
            self.t_end = t_ready
            self._post()
        else:
            self.mode = IDLE
            self.t_end = t_now

    def _set_models(self, models: list[int]) -> None:
        sim = self.sim
        costs: list[ModelCost] = [sim.cost(m, self.tp) for m in models]
        self.models = list(models)
        self.batches = {
            m: DecodeBatch(m, c, sim.slo.tbt) for m, c in zip(models, costs, strict=True)
        }
        self._blist = list(self.batches.values())
        dev = sim.device
        self._cap = sim.perf.memory_utilization * self.tp * dev.memory_bytes - sum(
            c.weight_bytes for c in costs
        )

    # -- queries -------------------------------------------------------------------
    @property
    def kv_capacity(self) -> float:
        """Bytes of KV cache this instance can hold."""
        return self._cap

    def kv_used(self) -> float:
        """Bytes of KV cache in use (running sequences plus prompts being prefilled)."""
        return self._res + sum(b.C * b.kv_tok for b in self._blist)

    def running(self) -> int:
        """Running sequences (decode batch plus prefill in progress)."""
        return sum(b.B for b in self._blist) + len(self._prefilling)

    def outstanding(self) -> int:
        """Running plus queued requests."""
        return self.running() + len(self.waiting)

    def is_idle(self) -> bool:
        """True when nothing is queued, prefilling or running and no load is in progress."""
        return self.mode == IDLE and not self.waiting

    def fits(self, model: int, prompt: int, output: int) -> bool:
        """True if a request of ``prompt + output`` tokens can ever run alone.

        Rule: ``(prompt + output + 1) * kv_bytes_per_token <= (1 - watermark) * capacity``
        (admission keeps the watermark free and room for one more decode token).
        """
        return fits_kv(self.batches[model].kv_tok, self._cap, prompt, output)

    # -- control -------------------------------------------------------------------
    def _post(self) -> None:
        if self.notify:
            self.version += 1
            self.sim._post_wake(self)

    def enqueue(
        self,
        t: float,
        rid: int,
        model: int,
        prompt: int,
        remaining: int,
        t_first: float = -1.0,
        gen: int = 0,
    ) -> None:
        """Queue request ``rid`` at ``t`` (FCFS; ``remaining`` = decode steps after prefill)."""
        if self.mode != IDLE and self.t_end <= t:
            self.advance_to(t)
        self.waiting.append((rid, model, prompt, remaining, t_first, gen))
        mode = self.mode
        if mode == IDLE:
            self._plan(t)
        elif mode == DECODE and len(self.waiting) == 1 and self._head_fits():
            cost = self.seg_cost
            assert cost is not None
            nk = cost.steps_within(t - self.seg_t0) + 1
            if nk < self.seg_k:
                self.seg_k = nk
                self.t_end = self.seg_t0 + cost.total(nk)
                self._post()

    def _head_fits(self) -> bool:
        _, m, L, _, _, _ = self.waiting[0]
        if self.running() >= self._max_seqs:
            return False
        kv = self.batches[m].kv_tok
        growth = sum(b.B * b.kv_tok for b in self._blist) + kv
        return self.kv_used() + L * kv + growth <= self._cap * (1.0 - _WATERMARK)

    def advance_to(self, t: float) -> None:
        """Simulate every iteration that ends at or before ``t``."""
        while self.mode and self.mode != STOPPED and self.t_end <= t:
            te = self.t_end
            mode = self.mode
            if mode == DECODE:
                self._end_decode(te)
            elif mode == PREFILL:
                self._end_prefill(te)
            else:  # LOADING finished
                self.mode = IDLE
            self._plan(te)

    def next_event(self) -> float:
        """End of the iteration in progress (``inf`` when idle or stopped)."""
        if self.mode in (IDLE, STOPPED):
            return float("inf")
        return self.t_end

    def stop(self, t: float) -> list[Waiting]:
        """Stop at ``t`` (call :meth:`advance_to` first); return the requests it held.

        Running sequences come back as resumable entries (prompt + generated tokens to
        re-prefill); the instance releases nothing itself — the simulator frees devices.
        """
        out: list[Waiting] = []
        if self.mode == PREFILL:
            out.extend(self._prefilling)
            self._prefilling = []
            self._res = 0.0
        for b in self._blist:
            while b.B:
                ev = b.evict_latest()
                if ev is None:
                    break
                out.append(self._resume_entry(b, ev))
        out.extend(self.waiting)
        self.waiting.clear()
        self.mode = STOPPED
        self.stopped_at = t
        self.t_end = t
        return out

    def reload(self, t: float, models: list[int], t_ready: float) -> None:
        """Replace the resident models (only when idle): weights load until ``t_ready``."""
        assert self.is_idle(), "reload needs an idle instance"
        self._set_models(models)
        self.switches += 1
        self.load_time += t_ready - t
        if t_ready > t:
            self.mode = LOADING
            self.t_end = t_ready
            self._post()
        else:
            self.mode = IDLE
            self.t_end = t

    # -- internals -----------------------------------------------------------------
    def _resume_entry(
        self, b: DecodeBatch, ev: tuple[int, int, int, float, float, float]
    ) -> Waiting:
        rid, ctx_now, remaining, lag, gap, t_last = ev
        sim = self.sim
        t_first = float(sim.first_token[rid])
        gen = int(sim.out_tokens[rid]) - 1 - remaining
        old = self._prior.pop(rid, None)
        if old is not None:
            lag = max(lag, old[0])
            gap = max(gap, old[1])
        sim.note_preempted(rid, lag, gap, t_last)
        return (rid, b.model, ctx_now, remaining, t_first, gen)

    def _plan(self, t: float) -> None:
        if self.waiting and self._admit(t):
            return
        blist = self._blist
        a_c = b_c = a_m = b_m = 0.0
        o = self._overhead
        growth = 0.0
        k = 1 << 60
        used = self._res
        for b in blist:
            B = b.B
            if not B:
                continue
            c = b.cost
            C = b.C
            a_c += c.f_seq * B + c.f_ctx * C
            b_c += c.f_ctx * B
            a_m += c.m_w + c.m_ctx * C
            b_m += c.m_ctx * B
            o += c.comm_fixed + c.comm_tok * B
            growth += b.kv_tok * B
            used += b.kv_tok * C
            nf = b.heap[0][0] - b.S
            if nf < k:
                k = nf
        if growth == 0.0:
            self.mode = IDLE
            self.t_end = t
            return
        room = int((self._cap - used) // growth)
        if room < 1:
            self._preempt(t)
            self._plan(t)
            return
        if room < k:
            k = room
        cost = StepCost(a_c, b_c, a_m, b_m, o)
        self.seg_cost = cost
        self.seg_t0 = t
        self.seg_k = k
        self.mode = DECODE
        self.t_end = t + cost.total(k)
        self._post()

    def _admit(self, t: float) -> bool:
        w = self.waiting
        batches = self.batches
        used = self.kv_used()
        cap = self._cap * (1.0 - _WATERMARK)
        nrun = 0
        growth = 0.0  # KV bytes the next decode step adds
        for b in self._blist:
            nrun += b.B
            growth += b.B * b.kv_tok
        taken: list[Waiting] = []
        tok = 0
        budget = self._tok_budget
        max_seqs = self._max_seqs
        while w:
            e = w[0]
            L = e[2]
            kv = batches[e[1]].kv_tok
            need = L * kv
            if nrun + len(taken) >= max_seqs or used + need + growth + kv > cap:
                break
            if taken and tok + L > budget:
                break
            w.popleft()
            taken.append(e)
            used += need
            growth += kv
            tok += L
        if not taken:
            return False
        # fused prefill iteration: roofline over the union of the prompts
        comp = mem = 0.0
        o = self._overhead
        seen: set[int] = set()
        for e in taken:
            c = batches[e[1]].cost
            L = e[2]
            comp += c.f_seq * L + 0.5 * c.f_ctx * L * L
            mem += c.m_ctx * L
            o += c.comm_tok * L
            if e[1] not in seen:
                seen.add(e[1])
                mem += c.m_w
                o += c.comm_fixed
        d = (comp if comp > mem else mem) + o
        self._prefilling = taken
        self._res = sum(e[2] * batches[e[1]].kv_tok for e in taken)
        self.mode = PREFILL
        self.seg_t0 = t
        self.t_end = t + d
        self._post()
        return True

    def _end_prefill(self, te: float) -> None:
        self.busy += te - self.seg_t0
        sim = self.sim
        batches = self.batches
        log = self._admit_log
        for rid, m, L, rem, t_first, gen in self._prefilling:
            b = batches[m]
            prior: tuple[float, float] | None = None
            if t_first < 0:
                sim.first_token[rid] = te
                t_first = te
                t_ready = te
            else:
                t_ready = sim.last_token_before_preempt.pop(rid, te)
                prior = sim.preempt_lag.pop(rid, None)
            if rem <= 0:
                sim.complete(
                    rid,
                    te,
                    prior[0] if prior else float("-inf"),
                    prior[1] if prior else 0.0,
                    self.iid,
                )
                continue
            b.admit(rid, L, rem, t_first, gen)
            b.mark_new(rid, t_ready)
            log.append(m)
            if prior is not None:
                self._prior[rid] = prior
        self._prefilling = []
        self._res = 0.0
        if len(log) > 4096:
            self._admit_log = log[-1024:]

    def _end_decode(self, te: float) -> None:
        cost = self.seg_cost
        assert cost is not None
        k = self.seg_k
        t0 = self.seg_t0
        self.busy += te - t0
        t1 = t0 + cost.tau(0)
        tau_last = cost.tau(k - 1)
        sim = self.sim
        prior = self._prior
        iid = self.iid
        for b in self._blist:
            if not b.B:
                continue
            for rid, tf, lag, gap in b.advance(k, t0, t1, te, tau_last):
                if prior:
                    p = prior.pop(rid, None)
                    if p is not None:
                        lag = max(lag, p[0])
                        gap = max(gap, p[1])
                sim.complete(rid, tf, lag, gap, iid)

    def _preempt(self, t: float) -> None:
        log = self._admit_log
        victim: DecodeBatch | None = None
        while log:
            m = log.pop()
            b = self.batches.get(m)
            if b is not None and b.B:
                victim = b
                break
        if victim is None:
            victim = max(self._blist, key=lambda x: x.B)
        ev = victim.evict_latest()
        assert ev is not None, "KV overflow with no running sequence"
        self.waiting.appendleft(self._resume_entry(victim, ev))
