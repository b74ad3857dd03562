"""Fast path: one single-model engine replaying its whole request stream in one tight loop.

When requests are assigned to engines by a rule that does not look at engine state
(``dedicated`` with round-robin dispatch), every engine is independent of the others
and can be replayed on its own. :func:`run_stream` does exactly what
:class:`~clustersim.serving.instance.EngineInstance` does for a single resident model
(same scheduling rule, same closed-form runs, same floating-point expressions — a
test checks bit-identical results) but keeps all state in local variables, which
makes it several times faster; :func:`run_streams` spreads engines over worker
processes. This is what lets a day of a Bailian model class (~10^7 requests) replay
in about a minute.
"""

from __future__ import annotations

import heapq
import math
import multiprocessing as mp
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from clustersim.serving.perf import _NEVER, ModelCost, PerfParams

__all__ = ["StreamResult", "run_stream", "run_streams"]

_WATERMARK = 0.01


@dataclass
class StreamResult:
    """Per-request outcome of one engine's stream (arrays aligned with the input)."""

    first_token: np.ndarray
    finish: np.ndarray
    max_lag: np.ndarray
    max_gap: np.ndarray
    preemptions: np.ndarray
    busy: float


def run_stream(
    cost: ModelCost,
    perf: PerfParams,
    tbt: float,
    kv_cap: float,
    arrival: Sequence[float],
    prompt: Sequence[int],
    output: Sequence[int],
    horizon: float = math.inf,
) -> StreamResult:
    """Replay one engine's requests (sorted by arrival; every one must fit the KV cache).

    ``kv_cap``: KV bytes of the engine; requests arriving after ``horizon`` are ignored
    and the engine stops at ``horizon`` (work in progress stays unfinished).
    """
    n = len(arrival)
    nan = math.nan
    inf = math.inf
    first = [nan] * n
    fin = [nan] * n
    lagv = [nan] * n
    gapv = [nan] * n
    npre = [0] * n
    # per-request state of running sequences
    ctx0 = [0] * n  # cached tokens at (re)admission
    s_adm = [0] * n  # step counter at (re)admission
    base = [0.0] * n  # lag base: t_first + (gen - s_adm) * tbt
    pgap = [0.0] * n  # gap before its first step after (re)admission
    t_rdy = [0.0] * n  # time of its latest token when (re)admitted
    adm_seq = [0] * n  # admission order (for LIFO preemption)
    fs, fc, mw, mc = cost.f_seq, cost.f_ctx, cost.m_w, cost.m_ctx
    cf, ct = cost.comm_fixed, cost.comm_tok
    kv = cost.kv_bytes_per_token
    ovh = perf.iteration_overhead
    max_seqs = perf.max_num_seqs
    budget = perf.max_batched_tokens
    cap_adm = kv_cap * (1.0 - _WATERMARK)
    heappush = heapq.heappush
    heappop = heapq.heappop
    bis = bisect_left
    sqrt = math.sqrt
    IDLE, PREFILL, DECODE = 0, 1, 2
    mode = IDLE
    te = inf
    seg_t0 = 0.0
    seg_k = 0
    c0 = c1 = d0 = d1 = t0x = e0 = 0.0
    n0 = 0
    a_c = b_c = a_m = b_m = o = 0.0
    S = 0
    B = 0
    C = 0
    busy = 0.0
    aseq = 0
    heap: list[tuple[int, int]] = []
    new: list[int] = []
    # per decode run: step position and Lambda / gap value at its first and last step
    rp: list[int] = []
    rl: list[float] = []
    rg: list[float] = []
    rp_add = rp.append
    rl_add = rl.append
    rg_add = rg.append
    s_end = [-1] * n  # step count when a sequence finished decoding (-1: not by decode)
    done: list[int] = []
    final_prior: dict[int, tuple[float, float]] = {}
    last_step_end = -1.0  # < 0: no step yet
    waiting: deque[tuple[int, int, int, float, int]] = deque()  # rid, L, rem, t_first, gen
    prefilling: list[tuple[int, int, int, float, int]] = []
    prior: dict[int, tuple[float, float]] = {}
    preempt_lag: dict[int, tuple[float, float]] = {}
    last_tok: dict[int, float] = {}
    p = 0
    ta = arrival[0] if n else inf
    if ta > horizon:
        ta = inf
    while True:
        if mode != IDLE and te <= ta:
            if te > horizon:
                break
            t = te
            if mode == PREFILL:
                busy += t - seg_t0
                for rid, L, rem, t_first, gen in prefilling:
                    if t_first < 0:
                        first[rid] = t
                        if rem <= 0:
                            fin[rid] = t
                            lagv[rid] = -inf
                            gapv[rid] = 0.0
                            continue
                        base[rid] = t - S * tbt
                        t_rdy[rid] = t
                    else:
                        tr = last_tok.pop(rid, t)
                        pr = preempt_lag.pop(rid, None)
                        if rem <= 0:
                            fin[rid] = t
                            lagv[rid] = pr[0] if pr else -inf
                            gapv[rid] = pr[1] if pr else 0.0
                            continue
                        base[rid] = t_first + (gen - S) * tbt
                        t_rdy[rid] = tr
                        if pr is not None:
                            prior[rid] = pr
                    heappush(heap, (S + rem, rid))
                    ctx0[rid] = L
                    s_adm[rid] = S
                    aseq += 1
                    adm_seq[rid] = aseq
                    B += 1
                    C += L
                    new.append(rid)
                prefilling = []
            else:  # a decode run of seg_k steps ends
                k = seg_k
                busy += t - seg_t0
                t1 = seg_t0 + ((a_c if a_c > a_m else a_m) + o)
                x = a_c + b_c * (k - 1)
                y = a_m + b_m * (k - 1)
                tau_last = (x if x > y else y) + o
                S0 = S
                # run record: (position, Lambda, gap) at its first and last step
                rp_add(S0 + 1)
                rl_add(t1 - (S0 + 1) * tbt)
                rg_add(t1 - (last_step_end if last_step_end >= 0.0 else seg_t0))
                if k > 1:
                    rp_add(S0 + k)
                    rl_add(t - (S0 + k) * tbt)
                    rg_add(tau_last)
                if new:
                    tau0 = t1 - seg_t0
                    for rid in new:
                        pgap[rid] = (seg_t0 - t_rdy[rid]) + tau0
                    new = []
                S = S0 + k
                C += B * k
                last_step_end = t
                while heap and heap[0][0] <= S:
                    rid = heappop(heap)[1]
                    B -= 1
                    C -= ctx0[rid] + (S - s_adm[rid])
                    fin[rid] = t
                    s_end[rid] = S
                    done.append(rid)
                    if prior:
                        pr = prior.pop(rid, None)
                        if pr is not None:
                            final_prior[rid] = pr
        elif ta < inf:
            t = ta
            rid = p
            p += 1
            L = prompt[rid]
            waiting.append((rid, L, output[rid] - 1, -1.0, 0))
            ta = arrival[p] if p < n else inf
            if ta > horizon:
                ta = inf
            if mode != IDLE:
                if (
                    mode == DECODE
                    and len(waiting) == 1
                    and max_seqs > B
                    and C * kv + L * kv + (B * kv + kv) <= cap_adm
                ):
                    # truncate the run after the step in progress: seg_steps_within + 1,
                    # inlined (same expressions as perf._solve / perf.seg_total)
                    dt = t - seg_t0
                    if dt <= 0:
                        kk = 0
                    else:
                        if c1 <= 1e-18:
                            kk = int(dt / c0)
                        else:
                            bb = c0 - 0.5 * c1
                            kk = max(0, int((-bb + sqrt(bb * bb + 2.0 * c1 * dt)) / c1))
                        if kk > n0:
                            dt2 = dt - t0x
                            if dt2 <= 0:
                                k2 = 0
                            elif d1 <= 1e-18:
                                k2 = int(dt2 / e0)
                            else:
                                bb = e0 - 0.5 * d1
                                k2 = max(0, int((-bb + sqrt(bb * bb + 2.0 * d1 * dt2)) / d1))
                            kk = n0 + k2
                        while kk > 0:
                            if kk <= n0:
                                tot = kk * c0 + c1 * kk * (kk - 1) * 0.5
                            else:
                                n1 = kk - n0
                                tot = t0x + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5
                            if tot <= dt:
                                break
                            kk -= 1
                        while True:
                            k1 = kk + 1
                            if k1 <= n0:
                                tot = k1 * c0 + c1 * k1 * (k1 - 1) * 0.5
                            else:
                                n1 = k1 - n0
                                tot = t0x + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5
                            if tot > dt:
                                break
                            kk = k1
                    nk = kk + 1
                    if nk < seg_k:
                        seg_k = nk
                        if nk <= n0:
                            te = seg_t0 + (nk * c0 + c1 * nk * (nk - 1) * 0.5)
                        else:
                            n1 = nk - n0
                            te = seg_t0 + (t0x + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5)
                continue
        else:
            break
        # ---- plan the next iteration at time t (EngineInstance._plan) ----
        while True:
            if waiting:
                used = C * kv
                growth = B * kv
                tok = 0
                nt = 0
                comp = mem = 0.0
                oo = ovh
                while waiting:
                    e = waiting[0]
                    L = e[1]
                    need = L * kv
                    if B + nt >= max_seqs or used + need + growth + kv > cap_adm:
                        break
                    if nt and tok + L > budget:
                        break
                    waiting.popleft()
                    prefilling.append(e)
                    nt += 1
                    used += need
                    growth += kv
                    tok += L
                    comp += fs * L + 0.5 * fc * L * L
                    mem += mc * L
                    oo += ct * L
                    if nt == 1:
                        mem += mw
                        oo += cf
                if nt:
                    mode = PREFILL
                    seg_t0 = t
                    te = t + ((comp if comp > mem else mem) + oo)
                    break
            if B == 0:
                mode = IDLE
                te = inf
                break
            a_c = fs * B + fc * C
            b_c = fc * B
            a_m = mw + mc * C
            b_m = mc * B
            o = ovh + (cf + ct * B)
            k = heap[0][0] - S
            room = int((kv_cap - kv * C) // (kv * B))
            if room < 1:
                # preempt the most recently admitted running sequence (vLLM recompute)
                ent = max(heap, key=lambda e: adm_seq[e[1]])
                heap.remove(ent)
                heapq.heapify(heap)
                vr = ent[1]
                s_i = s_adm[vr]
                rem_steps = ent[0] - S
                ctx_now = ctx0[vr] + (S - s_i)
                B -= 1
                C -= ctx_now
                if s_i < S:
                    i = bis(rp, s_i + 1)
                    lg = max(rl[i:], default=-inf) - base[vr]
                else:
                    lg = -inf
                if s_i + 1 < S:
                    i = bis(rp, s_i + 2)
                    gg = max(rg[i:], default=-inf)
                else:
                    gg = 0.0
                in_new = vr in new
                gg = max(gg, 0.0 if in_new else pgap[vr], 0.0)
                tl = last_step_end if last_step_end >= 0.0 else 0.0
                if in_new:
                    if s_i == S:
                        tl = t_rdy[vr]
                    new.remove(vr)
                pgap[vr] = 0.0
                old = prior.pop(vr, None)
                if old is not None:
                    lg = max(lg, old[0])
                    gg = max(gg, old[1])
                npre[vr] += 1
                prev_pl = preempt_lag.get(vr)
                if prev_pl is not None:
                    lg, gg = max(lg, prev_pl[0]), max(gg, prev_pl[1])
                preempt_lag[vr] = (lg, gg)
                last_tok[vr] = tl
                gen_now = output[vr] - 1 - rem_steps
                waiting.appendleft((vr, ctx_now, rem_steps, float(first[vr]), gen_now))
                continue
            if room < k:
                k = room
            # step_params inlined (same expressions as perf.step_params)
            if a_c >= a_m:
                c0, c1, d0, d1 = a_c + o, b_c, a_m + o, b_m
                jx = -1.0 if b_c >= b_m else (a_c - a_m) / (b_m - b_c)
            else:
                c0, c1, d0, d1 = a_m + o, b_m, a_c + o, b_c
                jx = -1.0 if b_m >= b_c else (a_m - a_c) / (b_c - b_m)
            if jx < 0.0 or jx > 1e18:
                n0 = _NEVER
                t0x = e0 = 0.0
            else:
                n0 = math.ceil(jx)
                t0x = n0 * c0 + c1 * n0 * (n0 - 1) * 0.5
                e0 = d0 + d1 * n0
            seg_t0 = t
            seg_k = k
            mode = DECODE
            if k <= n0:
                te = t + (k * c0 + c1 * k * (k - 1) * 0.5)
            else:
                n1 = k - n0
                te = t + (t0x + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5)
            break
    lag_a = np.asarray(lagv)
    gap_a = np.asarray(gapv)
    if done:
        # worst lag / longest gap of each sequence: range maxima over the run records
        # between its (last) admission and its finish (vectorised, sparse table)
        idx = np.asarray(done)
        pos = np.asarray(rp)
        si = np.asarray(s_adm)[idx]
        se = np.asarray(s_end)[idx]
        hi = np.searchsorted(pos, se, side="right") - 1
        lo = np.searchsorted(pos, si + 1, side="left")
        lag_a[idx] = _range_max(np.asarray(rl), lo, hi) - np.asarray(base)[idx]
        lo2 = np.searchsorted(pos, si + 2, side="left")
        gap_a[idx] = np.maximum(_range_max(np.asarray(rg), lo2, hi), np.asarray(pgap)[idx])
        for rid, (pl, pg) in final_prior.items():
            lag_a[rid] = max(lag_a[rid], pl)
            gap_a[rid] = max(gap_a[rid], pg)
    return StreamResult(
        np.asarray(first),
        np.asarray(fin),
        lag_a,
        gap_a,
        np.asarray(npre, dtype=np.int16),
        busy,
    )


def _range_max(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``max(v[lo_i : hi_i + 1])`` for every i (``-inf`` where ``lo_i > hi_i``)."""
    out = np.full(len(lo), -np.inf)
    ok = lo <= hi
    if not np.any(ok) or not len(v):
        return out
    length = (hi - lo + 1)[ok]
    kmax = int(np.floor(np.log2(length.max())))
    levels = [v]
    for j in range(1, kmax + 1):
        prev = levels[-1]
        half = 1 << (j - 1)
        levels.append(np.maximum(prev[:-half], prev[half:]))
    k = np.floor(np.log2(length)).astype(np.int64)
    lo_ok = lo[ok]
    hi_ok = hi[ok]
    res = np.empty(len(lo_ok))
    for j in np.unique(k):
        sel = k == j
        lvl = levels[int(j)]
        res[sel] = np.maximum(lvl[lo_ok[sel]], lvl[hi_ok[sel] - (1 << int(j)) + 1])
    out[ok] = res
    return out


def _run_many(
    args: list[
        tuple[ModelCost, PerfParams, float, float, np.ndarray, np.ndarray, np.ndarray, float]
    ],
) -> list[StreamResult]:
    return [
        run_stream(c, p, tbt, cap, a.tolist(), i.tolist(), o.tolist(), h)
        for c, p, tbt, cap, a, i, o, h in args
    ]


def run_streams(
    jobs: list[
        tuple[ModelCost, PerfParams, float, float, np.ndarray, np.ndarray, np.ndarray, float]
    ],
    processes: int = 1,
) -> list[StreamResult]:
    """Run :func:`run_stream` for every job, optionally in ``processes`` worker processes.

    Jobs are dealt to processes in contiguous, size-balanced groups; the output order
    equals the input order, so results do not depend on ``processes``.
    """
    if processes <= 1 or len(jobs) <= 1:
        return _run_many(jobs)
    sizes = [len(j[4]) for j in jobs]
    # greedy balance by request count, deterministic (largest first, ties by index)
    groups: list[list[int]] = [[] for _ in range(processes)]
    load = [0] * processes
    for idx in sorted(range(len(jobs)), key=lambda i: (-sizes[i], i)):
        g = min(range(processes), key=lambda q: (load[q], q))
        groups[g].append(idx)
        load[g] += sizes[idx]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    out: list[StreamResult | None] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as ex:
        futs = [(grp, ex.submit(_run_many, [jobs[i] for i in grp])) for grp in groups if grp]
        for grp, f in futs:
            for i, r in zip(grp, f.result(), strict=True):
                out[i] = r
    return [r for r in out if r is not None]
