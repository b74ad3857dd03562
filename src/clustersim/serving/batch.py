"""One model's running decode batch: step counter, completions, KV growth and SLO bookkeeping.

A :class:`DecodeBatch` is the state every serving instance keeps per resident model:
the running sequences of that model, the number of decode steps the batch has
executed (``S``), the cached-token total ``C`` and the per-request data needed to
emit metrics when a sequence finishes. Time never advances token by token: the
owner runs ``k`` steps at once (:meth:`DecodeBatch.advance`) with timings from the
closed-form :class:`~clustersim.serving.perf.StepCost`.

SLO bookkeeping without per-token work. With ``TBT`` the time-between-tokens target,
token ``n`` (``n = 1, 2, ...`` after the first token at ``t_first``) is due at
``t_first + n * TBT``; its *lag* is ``T(n) - t_first - n * TBT`` (Aegaeon's token
deadline / slack view). Write ``Lambda(S) = T(S) - S * TBT`` for the time ``T(S)``
at which the batch finishes its step ``S``. A request admitted at step ``S_i`` then
has lag ``Lambda(S) - base_i`` at step ``S``, ``base_i = t_first - S_i * TBT``.
Within a run of steps step times only grow, so ``Lambda`` is convex there and its
maximum sits at the run's first or last step; the batch keeps those two values per
run in a monotone stack (:class:`SuffixMax`) and a request's worst lag is one
suffix-maximum query when it finishes. The longest gap between two tokens is kept
the same way (first step of a run including the pause before it, last step).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left

from clustersim.serving.perf import ModelCost

__all__ = ["DecodeBatch", "Finished", "SuffixMax"]


class SuffixMax:
    """Maximum of values pushed at increasing positions, queried over a suffix.

    ``push(pos, val)`` needs ``pos`` >= every earlier position; ``query(p)`` returns the
    maximum value among entries with position >= ``p`` (``-inf`` if none). Kept as a
    strictly decreasing stack: amortised O(1) push, O(log n) query.
    """

    __slots__ = ("pos", "val")

    def __init__(self) -> None:
        self.pos: list[int] = []
        self.val: list[float] = []

    def push(self, pos: int, val: float) -> None:
        """Add ``val`` at ``pos``."""
        vals = self.val
        while vals and vals[-1] <= val:
            vals.pop()
            self.pos.pop()
        self.pos.append(pos)
        vals.append(val)

    def query(self, p: int) -> float:
        """Max value at positions >= ``p``."""
        i = bisect_left(self.pos, p)
        if i < len(self.val):
            return self.val[i]
        return float("-inf")

    def prune(self, p: int) -> None:
        """Forget entries at positions < ``p`` (no query will start before ``p``)."""
        i = bisect_left(self.pos, p)
        if i:
            del self.pos[:i]
            del self.val[:i]


Finished = tuple[int, float, float, float]
"""(request id, finish time, worst lag, longest gap) of a sequence that completed."""


class DecodeBatch:
    """Running sequences of one model on one instance.

    Attributes:
        model: market model index.
        cost: linear cost coefficients of the model on this instance.
        S: decode steps executed so far.
        B: running sequences.
        C: cached tokens over running sequences (prompt + generated).
        kv_tok: KV bytes per token.
        last_step_end: time the last decode step ended (``None`` before the first).
    """

    __slots__ = (
        "B",
        "C",
        "S",
        "_seq",
        "cost",
        "gaps",
        "heap",
        "kv_tok",
        "lags",
        "last_step_end",
        "model",
        "new",
        "order",
        "pending_gap",
        "tbt",
    )

    def __init__(self, model: int, cost: ModelCost, tbt: float) -> None:
        self.model = model
        self.cost = cost
        self.tbt = tbt
        self.kv_tok = cost.kv_bytes_per_token
        self.S = 0
        self.B = 0
        self.C = 0
        # (finish step, seq, rid, prompt tokens at admission, admit step, lag base, gen)
        self.heap: list[tuple[int, int, int, int, int, float, int]] = []
        self.order: list[int] = []  # admission order (rids) for LIFO preemption
        self.new: list[tuple[int, float]] = []  # (rid, t_first) admitted, no step run yet
        self.pending_gap: dict[int, float] = {}
        self.lags = SuffixMax()
        self.gaps = SuffixMax()
        self.last_step_end: float | None = None
        self._seq = 0

    # -- admission -----------------------------------------------------------------
    def admit(self, rid: int, ctx: int, remaining: int, t_first: float, gen: int) -> None:
        """Add a sequence that just finished prefill at time ``t_first``-aligned base.

        ``ctx``: tokens now cached (prompt, plus regenerated tokens on resume);
        ``remaining``: decode steps still to run (>= 1); ``t_first``: time of its first
        token; ``gen``: decode tokens it produced before (0 unless resumed).
        """
        S = self.S
        base = t_first + (gen - S) * self.tbt
        self._seq += 1
        heapq.heappush(self.heap, (S + remaining, self._seq, rid, ctx, S, base, gen))
        self.order.append(rid)
        self.B += 1
        self.C += ctx

    def mark_new(self, rid: int, t_ready: float) -> None:
        """Remember that ``rid`` produced a token at ``t_ready`` and awaits its first step."""
        self.new.append((rid, t_ready))

    # -- stepping ------------------------------------------------------------------
    def next_finish(self) -> int:
        """Steps until the next sequence finishes (``>= 1`` when running, else a big number)."""
        if not self.heap:
            return 1 << 60
        return self.heap[0][0] - self.S

    def advance(
        self, k: int, t0: float, t_first_step: float, t_end: float, tau_last: float
    ) -> list[Finished]:
        """Run ``k >= 1`` steps from time ``t0``; return the sequences that finished.

        ``t_first_step``: end time of the first of the ``k`` steps; ``t_end``: end of the
        last; ``tau_last``: duration of the last step.
        """
        S0 = self.S
        tbt = self.tbt
        prev = self.last_step_end if self.last_step_end is not None else t0
        self.lags.push(S0 + 1, t_first_step - (S0 + 1) * tbt)
        self.gaps.push(S0 + 1, t_first_step - prev)
        if k > 1:
            self.lags.push(S0 + k, t_end - (S0 + k) * tbt)
            self.gaps.push(S0 + k, tau_last)
        if self.new:
            tau0 = t_first_step - t0
            pg = self.pending_gap
            for rid, t_ready in self.new:
                pg[rid] = (t0 - t_ready) + tau0
            self.new.clear()
        S = S0 + k
        self.S = S
        self.C += self.B * k
        self.last_step_end = t_end
        out: list[Finished] = []
        heap = self.heap
        while heap and heap[0][0] <= S:
            _, _, rid, ctx, s_i, base, _gen = heapq.heappop(heap)
            lag = self.lags.query(s_i + 1) - base
            g = self.gaps.query(s_i + 2)
            g0 = self.pending_gap.pop(rid, 0.0)
            if g0 > g:
                g = g0
            self.B -= 1
            self.C -= ctx + (S - s_i)
            out.append((rid, t_end, lag, g))
        if out:
            if self.B == 0:
                self.order.clear()
                self.lags = SuffixMax()
                self.gaps = SuffixMax()
            elif len(self.order) > 2 * self.B + 64:
                self._compact()
        return out

    def _compact(self) -> None:
        live = {e[2] for e in self.heap}
        self.order = [r for r in self.order if r in live]
        lo = min(e[4] for e in self.heap)
        self.lags.prune(lo + 1)
        self.gaps.prune(lo + 1)

    def kv_bytes(self) -> float:
        """Bytes of KV cache the running sequences hold."""
        return self.C * self.kv_tok

    # -- preemption ----------------------------------------------------------------
    def evict_latest(self) -> tuple[int, int, int, float, float, float] | None:
        """Remove the most recently admitted running sequence (vLLM recompute preemption).

        Returns ``(rid, ctx_now, remaining, worst_lag, longest_gap, t_last_token)`` so
        far, or ``None`` when nothing runs.
        """
        live = {e[2]: e for e in self.heap}
        while self.order:
            rid = self.order.pop()
            e = live.get(rid)
            if e is None:
                continue
            self.heap.remove(e)
            heapq.heapify(self.heap)
            finish, _, _, ctx, s_i, base, _gen = e
            S = self.S
            ctx_now = ctx + (S - s_i)
            self.B -= 1
            self.C -= ctx_now
            lag = self.lags.query(s_i + 1) - base if s_i < S else float("-inf")
            gap = self.gaps.query(s_i + 2) if s_i + 1 < S else 0.0
            g0 = self.pending_gap.pop(rid, 0.0)
            gap = max(gap, g0, 0.0)
            t_last = self.last_step_end if self.last_step_end is not None else 0.0
            if s_i == S:  # no decode step since (re)admission: last token is its prefill
                t_last = next((x[1] for x in self.new if x[0] == rid), t_last)
            self.new = [x for x in self.new if x[0] != rid]
            return rid, ctx_now, finish - S, lag, gap, t_last
        return None
