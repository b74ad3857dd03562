"""Fast path: one single-model engine replaying its whole request stream in one tight loop.

When requests are assigned to engines by a rule that does not look at engine state
(``dedicated`` with round-robin dispatch), every engine is independent of the others
and can be replayed on its own. :func:`run_stream` does exactly what
:class:`~clustersim.serving.instance.EngineInstance` does for a single resident model
(same scheduling rule, same closed-form runs, same floating-point expressions — a
test checks bit-identical results) but keeps all state in local variables and C
arrays (``array.array``: no Python object per request survives the loop, so the
results reach numpy without a conversion pass); the per-request SLO maxima are
computed after the loop, vectorised. :func:`run_streams` spreads engines over worker
processes: with ``fork`` the workers inherit the inputs and write their results into
one shared anonymous memory map (nothing is pickled), and the calling process runs
one share itself.
"""

from __future__ import annotations

import heapq
import math
import mmap
import multiprocessing as mp
import sys
import traceback
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustersim.errors import SimulationError
from clustersim.serving.perf import _NEVER, ModelCost, PerfParams

__all__ = ["StreamJob", "StreamResult", "run_stream", "run_streams"]

_WATERMARK = 0.01

StreamJob = tuple[ModelCost, PerfParams, float, float, np.ndarray, np.ndarray, np.ndarray, float]
"""``(cost, perf, tbt, kv_cap, arrival, prompt, output, horizon)``: one :func:`run_stream`."""


@dataclass
class StreamResult:
    """Per-request outcome of one engine's stream (arrays aligned with the input)."""

    first_token: np.ndarray
    finish: np.ndarray
    max_lag: np.ndarray
    max_gap: np.ndarray
    preemptions: np.ndarray
    busy: float


def _as_list(x: Sequence[Any] | np.ndarray) -> list[Any]:
    return x.tolist() if isinstance(x, np.ndarray) else list(x)


def _steps_within(
    dt: float, c0: float, c1: float, d0: float, d1: float, n0: int, t0x: float, e0: float
) -> int:
    """Largest ``k >= 0`` whose first ``k`` steps take ``<= dt`` (``perf.seg_steps_within``).

    Same expressions as ``perf._solve`` / ``perf.seg_total``; the square-root guess is
    corrected against the exact sums, so the result only depends on those sums.
    """
    if dt <= 0:
        return 0
    sqrt = math.sqrt
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
            return kk
        kk = k1


def run_stream(
    cost: ModelCost,
    perf: PerfParams,
    tbt: float,
    kv_cap: float,
    arrival: Sequence[float] | np.ndarray,
    prompt: Sequence[int] | np.ndarray,
    output: Sequence[int] | np.ndarray,
    horizon: float = math.inf,
) -> StreamResult:
    """Replay one engine's requests (sorted by arrival; every one must fit the KV cache).

    ``kv_cap``: KV bytes of the engine; requests arriving after ``horizon`` are ignored
    and the engine stops at ``horizon`` (work in progress stays unfinished).
    """
    arr = _as_list(arrival)
    prm = _as_list(prompt)
    outp = _as_list(output)
    n = len(arr)
    inf = math.inf
    nan = math.nan
    n_in = bisect_right(arr, horizon)  # arrivals after the horizon are ignored
    arr = arr[:n_in]
    arr.append(inf)  # sentinel: no arrival left
    hz = horizon if horizon < inf else sys.float_info.max
    # per-request outputs (C arrays: no Python float objects kept alive)
    first = array("d", [nan]) * n
    fin = array("d", [nan]) * n
    lagv = array("d", [nan]) * n  # set here only for requests finished by a prefill
    gapv = array("d", [nan]) * n
    npre = array("h", [0]) * n
    s_end = array("q", [-1]) * n  # step count when it finished decoding (-1: not by decode)
    # per-request state of running sequences
    s_adm = array("q", [0]) * n  # step counter at (re)admission
    cs = [0] * n  # cached tokens at (re)admission minus s_adm: ctx = cs + S
    base = array("d", [0.0]) * n  # lag base: t_first + (gen - s_adm) * tbt
    pgap = array("d", [0.0]) * n  # gap before its first step after (re)admission
    fs, fc, mw, mc = cost.f_seq, cost.f_ctx, cost.m_w, cost.m_ctx
    cf, ct = cost.comm_fixed, cost.comm_tok
    kv = cost.kv_bytes_per_token
    ovh = perf.iteration_overhead
    max_seqs = perf.max_num_seqs
    budget = perf.max_batched_tokens
    cap_adm = kv_cap * (1.0 - _WATERMARK)
    heappush = heapq.heappush
    heappop = heapq.heappop
    sqrt = math.sqrt
    M = n + 1  # heap key of a running sequence: finish step * M + rid
    mode = 0  # 0 idle, 1 prefill, 2 decode
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
    heap: list[int] = []
    new: list[int] = []  # admitted, no decode step run yet ...
    new_t: list[float] = []  # ... and the time of their latest token
    # per decode run: step position and Lambda / gap value at its first and last step
    rp = array("q")
    rl = array("d")
    rg = array("d")
    rp_add = rp.append
    rl_add = rl.append
    rg_add = rg.append
    last_step_end = -1.0  # < 0: no step yet
    # FCFS queue: preempted requests (rid, L, rem, t_first, gen) first, then the fresh
    # arrivals wq .. p-1 (fresh requests are queued and admitted in arrival order)
    preq: deque[tuple[int, int, int, float, int]] = deque()
    wq = 0
    pf0 = pf1 = 0  # fresh requests in the prefill in progress
    pf_res: list[tuple[int, int, int, float, int]] = []  # resumed ones in it
    # admission order for LIFO preemption: a fresh request's key is (rid, 0); a
    # re-admitted one gets (last fresh rid admitted before it, counter)
    readm: dict[int, tuple[int, int]] = {}
    n_readm = 0
    final_prior: dict[int, tuple[float, float]] = {}
    prior: dict[int, tuple[float, float]] = {}
    preempt_lag: dict[int, tuple[float, float]] = {}
    last_tok: dict[int, float] = {}
    p = 0
    ta = arr[0]
    while True:
        if te <= ta:
            if te > hz:
                break
            t = te
            if mode == 1:  # a prefill ends
                busy += t - seg_t0
                if pf_res:
                    hi_fresh = pf0 - 1
                    for rid, L, rem, t_first, gen in pf_res:
                        tr = last_tok.pop(rid, t)
                        pr = preempt_lag.pop(rid, None)
                        if rem <= 0:
                            fin[rid] = t
                            lagv[rid] = pr[0] if pr else -inf
                            gapv[rid] = pr[1] if pr else 0.0
                            continue
                        base[rid] = t_first + (gen - S) * tbt
                        if pr is not None:
                            prior[rid] = pr
                        heappush(heap, (S + rem) * M + rid)
                        cs[rid] = L - S
                        s_adm[rid] = S
                        n_readm += 1
                        readm[rid] = (hi_fresh, n_readm)
                        B += 1
                        C += L
                        new.append(rid)
                        new_t.append(tr)
                    pf_res = []
                tb = t - S * tbt
                for rid in range(pf0, pf1):
                    first[rid] = t
                    rem = outp[rid] - 1
                    if rem <= 0:
                        fin[rid] = t
                        lagv[rid] = -inf
                        gapv[rid] = 0.0
                        continue
                    base[rid] = tb
                    heappush(heap, (S + rem) * M + rid)
                    L = prm[rid]
                    cs[rid] = L - S
                    s_adm[rid] = S
                    B += 1
                    C += L
                    new.append(rid)
                    new_t.append(t)
                pf0 = pf1
            else:  # a decode run of seg_k steps ends
                k = seg_k
                busy += t - seg_t0
                t1 = seg_t0 + c0  # == seg_t0 + (max(a_c, a_m) + o): c0 is that sum
                S0 = S
                # run record: (position, Lambda, gap) at its first and last step
                rp_add(S0 + 1)
                rl_add(t1 - (S0 + 1) * tbt)
                rg_add(t1 - (last_step_end if last_step_end >= 0.0 else seg_t0))
                if k > 1:
                    x = a_c + b_c * (k - 1)
                    y = a_m + b_m * (k - 1)
                    rp_add(S0 + k)
                    rl_add(t - (S0 + k) * tbt)
                    rg_add((x if x > y else y) + o)
                if new:
                    tau0 = t1 - seg_t0
                    for rid, tr in zip(new, new_t, strict=True):
                        pgap[rid] = (seg_t0 - tr) + tau0
                    new = []
                    new_t = []
                S = S0 + k
                C += B * k
                last_step_end = t
                lim = (S + 1) * M  # key < lim <=> finishes at step <= S
                while heap and heap[0] < lim:
                    rid = heappop(heap) % M
                    B -= 1
                    C -= cs[rid] + S
                    fin[rid] = t
                    s_end[rid] = S
                    if prior:
                        pr = prior.pop(rid, None)
                        if pr is not None:
                            final_prior[rid] = pr
        else:
            # an arrival (ta < te, so ta is finite)
            t = ta
            rid = p
            p += 1
            ta = arr[p]
            if mode:
                if mode == 2 and wq == rid and not preq and max_seqs > B:
                    L = prm[rid]
                    if C * kv + L * kv + (B * kv + kv) <= cap_adm:
                        # truncate the run after the step in progress: seg_steps_within
                        # + 1, inlined (same expressions as perf._solve / perf.seg_total)
                        dt = t - seg_t0
                        if n0 == _NEVER and c1 > 1e-18 and dt > 0:
                            # usual case, one arithmetic series: the square-root guess,
                            # corrected against the exact sums (as _steps_within)
                            bb = c0 - 0.5 * c1
                            kk = int((-bb + sqrt(bb * bb + 2.0 * c1 * dt)) / c1)
                            if kk < 0:
                                kk = 0
                            while kk > 0 and kk * c0 + c1 * kk * (kk - 1) * 0.5 > dt:
                                kk -= 1
                            while True:
                                nk = kk + 1
                                tot = nk * c0 + c1 * nk * (nk - 1) * 0.5
                                if tot > dt:
                                    break
                                kk = nk
                            if nk < seg_k:
                                seg_k = nk
                                te = seg_t0 + tot
                        else:
                            nk = _steps_within(dt, c0, c1, d0, d1, n0, t0x, e0) + 1
                            if nk < seg_k:
                                seg_k = nk
                                if nk <= n0:
                                    te = seg_t0 + (nk * c0 + c1 * nk * (nk - 1) * 0.5)
                                else:
                                    n1 = nk - n0
                                    te = seg_t0 + (t0x + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5)
                continue
        # ---- plan the next iteration at time t (EngineInstance._plan) ----
        while True:
            if wq < p or preq:
                used = C * kv
                growth = B * kv
                tok = 0
                nt = 0
                comp = mem = 0.0
                oo = ovh
                while preq:
                    e = preq[0]
                    L = e[1]
                    need = L * kv
                    if B + nt >= max_seqs or used + need + growth + kv > cap_adm:
                        break
                    if nt and tok + L > budget:
                        break
                    preq.popleft()
                    pf_res.append(e)
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
                if not preq:
                    pf0 = wq
                    while wq < p:
                        L = prm[wq]
                        need = L * kv
                        if B + nt >= max_seqs or used + need + growth + kv > cap_adm:
                            break
                        if nt and tok + L > budget:
                            break
                        wq += 1
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
                    pf1 = wq
                if nt:
                    mode = 1
                    seg_t0 = t
                    te = t + ((comp if comp > mem else mem) + oo)
                    break
            if B == 0:
                mode = 0
                te = inf
                break
            a_c = fs * B + fc * C
            b_c = fc * B
            a_m = mw + mc * C
            b_m = mc * B
            o = ovh + (cf + ct * B)
            k = heap[0] // M - S
            kv_free = kv_cap - kv * C
            kv_step = kv * B
            # room = int(kv_free // kv_step) matters only when it may be below k
            room = k if kv_free >= kv_step * (k + 1) else int(kv_free // kv_step)
            if room < 1:
                # preempt the most recently admitted running sequence (vLLM recompute)
                best = max(heap, key=lambda key: readm.get(key % M) or (key % M, 0))
                heap.remove(best)
                heapq.heapify(heap)
                vr = best % M
                s_i = s_adm[vr]
                rem_steps = best // M - S
                ctx_now = cs[vr] + S
                B -= 1
                C -= ctx_now
                if s_i < S:
                    i = bisect_left(rp, s_i + 1)
                    lg = max(rl[i:], default=-inf) - base[vr]
                else:
                    lg = -inf
                if s_i + 1 < S:
                    i = bisect_left(rp, s_i + 2)
                    gg = max(rg[i:], default=-inf)
                else:
                    gg = 0.0
                in_new = vr in new
                gg = max(gg, 0.0 if in_new else pgap[vr], 0.0)
                tl = last_step_end if last_step_end >= 0.0 else 0.0
                if in_new:
                    j = new.index(vr)
                    if s_i == S:
                        tl = new_t[j]
                    del new[j]
                    del new_t[j]
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
                gen_now = outp[vr] - 1 - rem_steps
                preq.appendleft((vr, ctx_now, rem_steps, first[vr], gen_now))
                continue
            if room < k:
                k = room
            # step_params inlined (same expressions as perf.step_params)
            seg_t0 = t
            seg_k = k
            mode = 2
            if a_c >= a_m:
                c0 = a_c + o
                c1 = b_c
                jx = -1.0 if b_c >= b_m else (a_c - a_m) / (b_m - b_c)
                if jx < 0.0 or jx > 1e18:
                    n0 = _NEVER
                    te = t + (k * c0 + c1 * k * (k - 1) * 0.5)
                    break
                d0 = a_m + o
                d1 = b_m
            else:
                c0 = a_m + o
                c1 = b_m
                jx = -1.0 if b_m >= b_c else (a_m - a_c) / (b_c - b_m)
                if jx < 0.0 or jx > 1e18:
                    n0 = _NEVER
                    te = t + (k * c0 + c1 * k * (k - 1) * 0.5)
                    break
                d0 = a_c + o
                d1 = b_c
            # the compute/memory bound switches at step n0 within this run
            n0 = math.ceil(jx)
            t0x = n0 * c0 + c1 * n0 * (n0 - 1) * 0.5
            e0 = d0 + d1 * n0
            if k <= n0:
                te = t + (k * c0 + c1 * k * (k - 1) * 0.5)
            else:
                n1 = k - n0
                te = t + (t0x + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5)
            break
    return _finish(
        n, first, fin, lagv, gapv, npre, s_end, s_adm, base, pgap, rp, rl, rg, final_prior, busy
    )


def _finish(
    n: int,
    first: array[float],
    fin: array[float],
    lagv: array[float],
    gapv: array[float],
    npre: array[int],
    s_end: array[int],
    s_adm: array[int],
    base: array[float],
    pgap: array[float],
    rp: array[int],
    rl: array[float],
    rg: array[float],
    final_prior: dict[int, tuple[float, float]],
    busy: float,
) -> StreamResult:
    """Assemble the result: worst lag / longest gap of every decode-finished sequence."""
    lag_a = np.frombuffer(lagv, dtype=np.float64) if n else np.zeros(0)
    gap_a = np.frombuffer(gapv, dtype=np.float64) if n else np.zeros(0)
    se_all = np.frombuffer(s_end, dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    idx = np.flatnonzero(se_all >= 0)
    if len(idx):
        # range maxima over the run records between its (last) admission and its
        # finish (vectorised, sparse table)
        pos = np.frombuffer(rp, dtype=np.int64)
        si = np.frombuffer(s_adm, dtype=np.int64)[idx]
        se = se_all[idx]
        hi = np.searchsorted(pos, se, side="right") - 1
        lo = np.searchsorted(pos, si + 1, side="left")
        lag_a[idx] = (
            _range_max(np.frombuffer(rl, dtype=np.float64), lo, hi)
            - np.frombuffer(base, dtype=np.float64)[idx]
        )
        lo2 = np.searchsorted(pos, si + 2, side="left")
        gap_a[idx] = np.maximum(
            _range_max(np.frombuffer(rg, dtype=np.float64), lo2, hi),
            np.frombuffer(pgap, dtype=np.float64)[idx],
        )
        for rid, (pl, pg) in final_prior.items():
            lag_a[rid] = max(lag_a[rid], pl)
            gap_a[rid] = max(gap_a[rid], pg)
    if not n:
        return StreamResult(
            np.zeros(0), np.zeros(0), lag_a, gap_a, np.zeros(0, dtype=np.int16), busy
        )
    return StreamResult(
        np.frombuffer(first, dtype=np.float64),
        np.frombuffer(fin, dtype=np.float64),
        lag_a,
        gap_a,
        np.frombuffer(npre, dtype=np.int16),
        busy,
    )


def _range_max(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``max(v[lo_i : hi_i + 1])`` for every i (``-inf`` where ``lo_i > hi_i``).

    One ``np.maximum.reduceat`` over the interleaved bounds ``lo_0, hi_0 + 1, lo_1, ...``
    (cost: the summed range lengths plus the gaps between consecutive ranges).
    """
    m = len(lo)
    out = np.full(m, -np.inf)
    if not m or not len(v):
        return out
    nv = len(v)
    ext = np.empty(nv + 1)
    ext[:nv] = v
    ext[nv] = -np.inf
    bounds = np.empty(2 * m, dtype=np.intp)
    bounds[0::2] = np.minimum(lo, nv)
    bounds[1::2] = np.clip(hi + 1, 0, nv)
    red = np.maximum.reduceat(ext, bounds)[0::2]
    ok = lo <= hi
    out[ok] = red[ok]
    return out


def _run_many(jobs: list[StreamJob]) -> list[StreamResult]:
    return [run_stream(*j) for j in jobs]


def _balance(sizes: list[int], processes: int) -> list[list[int]]:
    """Deal job indices to ``processes`` groups, greedy by request count (largest first,
    ties by index; a group with the least load, ties by group index, takes the next)."""
    groups: list[list[int]] = [[] for _ in range(processes)]
    load = [0] * processes
    for idx in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        g = min(range(processes), key=lambda q: (load[q], q))
        groups[g].append(idx)
        load[g] += sizes[idx]
    return [g for g in groups if g]


def _fill(
    jobs: list[StreamJob],
    grp: list[int],
    offs: list[int],
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Run the jobs of ``grp`` and write their results into the (shared) output arrays."""
    first, fin, lag, gap, pre, busy = out
    for j in grp:
        r = run_stream(*jobs[j])
        a, b = offs[j], offs[j + 1]
        first[a:b] = r.first_token
        fin[a:b] = r.finish
        lag[a:b] = r.max_lag
        gap[a:b] = r.max_gap
        pre[a:b] = r.preemptions
        busy[j] = r.busy


def _child(jobs: list[StreamJob], grp: list[int], offs: list[int], out: Any, conn: Any) -> None:
    try:
        _fill(jobs, grp, offs, out)
        conn.send("ok")
    except BaseException:  # report any failure to the parent, then exit
        conn.send(traceback.format_exc())
    finally:
        conn.close()


def run_streams(jobs: list[StreamJob], processes: int = 1) -> list[StreamResult]:
    """Run :func:`run_stream` for every job, optionally in ``processes`` worker processes.

    Jobs are dealt to processes in size-balanced groups (:func:`_balance`); the output
    order equals the input order, so results do not depend on ``processes``. Where the
    ``fork`` start method exists, ``processes - 1`` forked children inherit the jobs
    (no pickling) and every process, the caller included, writes its results into one
    shared anonymous memory map; the returned arrays are views of it. Elsewhere a
    process pool is used (inputs and results pickled).
    """
    if processes <= 1 or len(jobs) <= 1:
        return _run_many(jobs)
    sizes = [len(j[4]) for j in jobs]
    groups = _balance(sizes, processes)
    if "fork" not in mp.get_all_start_methods():
        out_pool: list[StreamResult | None] = [None] * len(jobs)
        with ProcessPoolExecutor(max_workers=len(groups), mp_context=mp.get_context()) as ex:
            futs = [(grp, ex.submit(_run_many, [jobs[i] for i in grp])) for grp in groups]
            for grp, f in futs:
                for i, r in zip(grp, f.result(), strict=True):
                    out_pool[i] = r
        return [r for r in out_pool if r is not None]
    offs = [0]
    for s in sizes:
        offs.append(offs[-1] + s)
    n, nj = offs[-1], len(jobs)
    mm = mmap.mmap(-1, max(1, 40 * n + 8 * nj))
    f64 = np.float64
    out = (
        np.frombuffer(mm, f64, n, 0),
        np.frombuffer(mm, f64, n, 8 * n),
        np.frombuffer(mm, f64, n, 16 * n),
        np.frombuffer(mm, f64, n, 24 * n),
        np.frombuffer(mm, np.int16, n, 32 * n),
        np.frombuffer(mm, f64, nj, 40 * n),
    )
    ctx = mp.get_context("fork")
    children = []
    for grp in groups[1:]:
        rd, wr = ctx.Pipe(duplex=False)
        pr = ctx.Process(target=_child, args=(jobs, grp, offs, out, wr), daemon=True)
        pr.start()
        wr.close()
        children.append((pr, rd))
    try:
        _fill(jobs, groups[0], offs, out)
    finally:
        errors = []
        for pr, rd in children:
            try:
                msg = rd.recv()
            except EOFError:
                msg = "worker process died without a result"
            pr.join()
            if msg != "ok":
                errors.append(str(msg))
    if errors:
        raise SimulationError("fast-path worker failed:\n" + "\n".join(errors))
    first, fin, lag, gap, pre, busy = out
    return [
        StreamResult(
            first[offs[j] : offs[j + 1]],
            fin[offs[j] : offs[j + 1]],
            lag[offs[j] : offs[j + 1]],
            gap[offs[j] : offs[j + 1]],
            pre[offs[j] : offs[j + 1]],
            float(busy[j]),
        )
        for j in range(nj)
    ]
