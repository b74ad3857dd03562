"""Fast path: one single-model engine replaying its whole request stream in one tight loop.

When requests are assigned to engines by a rule that does not look at engine state
(``dedicated`` with round-robin dispatch), every engine is independent of the others
and can be replayed on its own. :func:`run_stream` does exactly what
:class:`~clustersim.serving.instance.EngineInstance` does for a single resident model
(same scheduling rule, same closed-form runs, same floating-point expressions — a
test checks bit-identical results) with all state in local variables and flat arrays.

The loop (:func:`_stream_kernel`) is written in the subset of Python that numba
compiles, and it runs compiled when numba is installed (a core dependency; the
compiled code is cached on disk; ``CLUSTERSIM_JIT=0`` switches it off). The same
source also runs as plain Python, on ``array.array`` / list containers, and gives
bit-identical results (tested): interpreted, per-request SLO maxima are computed after
the loop, vectorised; compiled, in one pass inside the kernel, with the work arrays
reused from one stream to the next. :func:`replay_into` spreads engines given by request
ids over worker processes: with ``fork`` the workers inherit everything, gather their
engines' inputs and scatter the results into shared per-request arrays (nothing is
pickled or copied back), and the calling process runs one share itself;
:func:`run_streams` does the same for self-contained jobs (laid end to end in one table).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import threading
import traceback
import warnings
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from math import sqrt
from typing import Any, TypeVar

import numpy as np

from clustersim.errors import SimulationError
from clustersim.serving.perf import _NEVER, ModelCost, PerfParams
from clustersim.serving.sharedmem import is_shared, prefault, shared_copy

__all__ = [
    "IndexedStream",
    "StreamJob",
    "StreamResult",
    "replay_into",
    "run_stream",
    "run_streams",
]

_WATERMARK = 0.01

_F = TypeVar("_F", bound=Callable[..., Any])


def register_jitable(fn: _F) -> _F:
    """Mark ``fn`` as callable from the compiled kernel (numba); as Python it is unchanged."""
    try:
        from numba.extending import register_jitable as jitable
    except ImportError:  # pragma: no cover - numba missing: everything runs interpreted
        return fn
    jitable(fn)  # registers an overload; returns fn itself
    return fn


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


@register_jitable
def _steps_within(
    dt: float, c0: float, c1: float, d0: float, d1: float, n0: int, t0x: float, e0: float
) -> int:
    """Largest ``k >= 0`` whose first ``k`` steps take ``<= dt`` (``perf.seg_steps_within``).

    Same expressions as ``perf._solve`` / ``perf.seg_total``; the square-root guess is
    corrected against the exact sums, so the result only depends on those sums.
    """
    if dt <= 0:
        return 0
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


_JIT: Any = None  # None: not decided yet; False: interpreted; else the compiled kernel


def jit_enabled() -> bool:
    """Whether the fast path runs compiled (numba installed and ``CLUSTERSIM_JIT`` not ``0``)."""
    return _jit_kernel() is not None


def _jit_kernel() -> Callable[..., Any] | None:
    """The numba-compiled :func:`_stream_kernel`, or None (decided once per process).

    Compiled eagerly here, on a two-request stream with the argument types every call
    uses, so that it happens once and before worker processes fork (the machine code
    is cached on disk: ≈ 10-15 s the first time on a machine, then about a second).
    If numba is missing, ``CLUSTERSIM_JIT=0``, or compiling fails (a warning says why),
    the same kernel runs interpreted.
    """
    global _JIT
    if _JIT is None:
        _JIT = False
        if os.environ.get("CLUSTERSIM_JIT", "1") != "0":
            try:
                from numba import njit
            except ImportError:  # pragma: no cover - exercised where numba is absent
                return None
            try:
                kernel = njit(cache=True, nogil=True)(_stream_kernel)
                _smoke(kernel)
            except Exception as exc:
                warnings.warn(
                    f"clustersim: compiling the serving fast path failed "
                    f"({type(exc).__name__}: {exc}); it runs interpreted (slower, same results)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                _JIT = kernel
    return _JIT or None


def _smoke(kernel: Callable[..., Any]) -> None:
    """Compile ``kernel`` (first call) on a two-request stream and check its answer."""
    i64, f64 = np.int64, np.float64
    out = [np.full(2, math.nan) for _ in range(4)]
    work = [np.zeros(2, dtype=i64) for _ in range(4)]
    work[2][:] = -1  # r_hi
    kernel(
        np.array([0.0, 1.0, math.inf]),
        np.array([10, 10], dtype=i64),
        np.array([3, 1], dtype=i64),
        *out,
        np.zeros(2, dtype=np.int16),
        *work,
        np.zeros(2, dtype=f64),
        np.zeros(2, dtype=f64),
        True,
        *(1e-3, 1e-6, 1e-2, 1e-6, 0.0, 0.0, 1.0, 1e-3),
        8,
        64,
        1e6,
        0.1,
        sys.float_info.max,
    )
    if not (out[1][0] > out[0][0] > 0.0 and out[1][1] == out[0][1] > 1.0):
        raise SimulationError(f"compiled kernel gave first={out[0]}, finish={out[1]}")


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
    and the engine stops at ``horizon`` (work in progress stays unfinished). Runs the
    compiled kernel when numba is available (see :func:`jit_enabled`), else the same
    kernel as Python; both give bit-identical results.
    """
    n = len(arrival)
    if _jit_kernel() is not None:
        out = (np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=np.int16))
        job = (cost, perf, tbt, kv_cap, arrival, prompt, output, horizon)
        busy = _run_compiled(job, out)
        return StreamResult(*out, busy)
    arr = _as_list(arrival)
    n_in = bisect_right(arr, horizon)  # arrivals after the horizon are ignored
    arr = arr[:n_in]
    arr.append(math.inf)  # sentinel: no arrival left
    # C arrays: no Python float object per request is kept alive
    first = array("d", [math.nan]) * n
    fin = array("d", [math.nan]) * n
    lagv = array("d", [math.nan]) * n
    gapv = array("d", [math.nan]) * n
    npre = array("h", [0]) * n
    r_hi = array("q", [-1]) * n
    r_lo = array("q", [0]) * n
    base = array("d", [0.0]) * n
    pgap = array("d", [0.0]) * n
    s_adm = array("q", [0]) * n
    cs = [0] * n
    prm, outp = _as_list(prompt), _as_list(output)
    scal = _scalars(cost, perf, tbt, kv_cap, horizon)
    busy, rl, rg, fp_id, fp_lag, fp_gap = _stream_kernel(
        arr, prm, outp, first, fin, lagv, gapv, npre, s_adm, r_lo, r_hi, cs, base, pgap, False,
        *scal,
    )  # fmt: skip
    lag_a = np.frombuffer(lagv, dtype=np.float64) if n else np.zeros(0)
    gap_a = np.frombuffer(gapv, dtype=np.float64) if n else np.zeros(0)
    if n:
        _finish(
            lag_a,
            gap_a,
            np.frombuffer(r_lo, dtype=np.int64),
            np.frombuffer(r_hi, dtype=np.int64),
            np.frombuffer(base, dtype=np.float64),
            np.frombuffer(pgap, dtype=np.float64),
            rl,
            rg,
            fp_id,
            fp_lag,
            fp_gap,
        )
        return StreamResult(
            np.frombuffer(first, dtype=np.float64),
            np.frombuffer(fin, dtype=np.float64),
            lag_a,
            gap_a,
            np.frombuffer(npre, dtype=np.int16),
            busy,
        )
    z = np.zeros(0)
    return StreamResult(z, z.copy(), lag_a, gap_a, np.zeros(0, dtype=np.int16), busy)


def _scalars(
    cost: ModelCost, perf: PerfParams, tbt: float, kv_cap: float, horizon: float
) -> tuple[float, float, float, float, float, float, float, float, int, int, float, float, float]:
    """The kernel's scalar arguments, with fixed types (one compiled specialisation)."""
    if not isinstance(kv_cap, (int, float)):
        raise TypeError(f"kv_cap must be a number, got {type(kv_cap).__name__}")
    return (
        float(cost.f_seq),
        float(cost.f_ctx),
        float(cost.m_w),
        float(cost.m_ctx),
        float(cost.comm_fixed),
        float(cost.comm_tok),
        float(cost.kv_bytes_per_token),
        float(perf.iteration_overhead),
        int(perf.max_num_seqs),
        int(perf.max_batched_tokens),
        float(kv_cap),
        float(tbt),
        float(horizon if horizon < math.inf else sys.float_info.max),
    )


_LOCAL = threading.local()  # per-thread work arrays of the compiled kernel, reused


def _run_compiled(
    job: tuple[Any, ...], out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> float:
    """One stream (``job``: the arguments of :func:`run_stream`) through the compiled
    kernel, writing into ``out`` (first, finish, lag, gap, preemptions; filled with NaN /
    0 here first); returns the busy time.

    The work arrays are kept per thread and reused (fresh memory costs a page fault per
    4 KiB: a third of a day's replay on the test machine before they were reused).
    """
    kernel = _jit_kernel()
    assert kernel is not None
    cost, perf, tbt, kv_cap, arrival, prompt, output, horizon = job
    n = len(arrival)
    a = np.asarray(arrival, dtype=np.float64)
    n_in = int(np.searchsorted(a, horizon, side="right"))
    work: list[np.ndarray] | None = getattr(_LOCAL, "work", None)
    if work is None or len(work[0]) < n + 1:
        size = max(n + 1, 2 * len(work[0]) if work else 0)
        work = [np.empty(size, dtype=np.int64) for _ in range(6)]
        work += [np.empty(size) for _ in range(3)]
        _LOCAL.work = work
    prm, outp, s_adm, r_lo, r_hi, cs, base, pgap = (x[:n] for x in work[:8])
    arr = work[8][: n_in + 1]
    arr[:n_in] = a[:n_in]
    arr[n_in] = math.inf  # sentinel: no arrival left
    prm[:] = prompt
    outp[:] = output
    for x in out[:4]:
        x[:] = math.nan
    out[4][:] = 0
    for x in (s_adm, r_lo, cs):
        x[:] = 0
    r_hi[:] = -1
    base[:] = 0.0
    pgap[:] = 0.0
    scal = _scalars(cost, perf, tbt, kv_cap, horizon)
    res = kernel(arr, prm, outp, *out, s_adm, r_lo, r_hi, cs, base, pgap, True, *scal)
    return float(res[0])


def _stream_kernel(
    arr: Any,
    prm: Any,
    outp: Any,
    first: Any,
    fin: Any,
    lagv: Any,
    gapv: Any,
    npre: Any,
    s_adm: Any,
    r_lo: Any,
    r_hi: Any,
    cs: Any,
    base: Any,
    pgap: Any,
    fold: bool,
    fs: float,
    fc: float,
    mw: float,
    mc: float,
    cf: float,
    ct: float,
    kv: float,
    ovh: float,
    max_seqs: int,
    budget: int,
    kv_cap: float,
    tbt: float,
    hz: float,
) -> tuple[float, np.ndarray, np.ndarray, list[int], list[float], list[float]]:
    """The event loop of one engine: :class:`~clustersim.serving.instance.EngineInstance`
    for a single resident model, in locals.

    Written in the subset of Python that numba compiles (one source for both modes):
    the containers it is given are numpy arrays when compiled and ``array.array`` /
    lists when interpreted. ``arr`` ends with an ``inf`` sentinel. Writes the per-request
    outputs in place and returns ``busy``, the decode-run records ``(position, Lambda,
    gap)`` and the carried lag/gap maxima ``(rid, lag, gap)`` of preempted sequences.
    """
    n = len(fin)
    inf = math.inf
    cap_adm = kv_cap * (1.0 - _WATERMARK)
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
    heap = [0][:0]  # typed empty list (numba infers element types from the literal)
    new = [0][:0]  # admitted, no decode step run yet ...
    new_t = [0.0][:0]  # ... and the time of their latest token
    # per decode run: Lambda and gap value at its first and last step
    rl = [0.0][:0]
    rg = [0.0][:0]
    last_step_end = -1.0  # < 0: no step yet
    # FCFS queue: preempted requests (rid, L, rem, t_first, gen) first (a stack: the
    # latest preempted is served first), then the fresh arrivals wq .. p-1 (queued and
    # admitted in arrival order)
    preq = [(0, 0, 0, 0.0, 0)][:0]
    wq = 0
    pf0 = pf1 = 0  # fresh requests in the prefill in progress
    pf_res = [(0, 0, 0, 0.0, 0)][:0]  # resumed ones in it
    # admission order for LIFO preemption: a fresh request's key is (rid, 0); a
    # re-admitted one gets (last fresh rid admitted before it, counter)
    readm = {0: (0, 0)}
    readm.clear()
    n_readm = 0
    final_prior = {0: (0.0, 0.0)}
    final_prior.clear()
    prior = {0: (0.0, 0.0)}
    prior.clear()
    preempt_lag = {0: (0.0, 0.0)}
    preempt_lag.clear()
    last_tok = {0: 0.0}
    last_tok.clear()
    p = 0
    ta = arr[0]
    while True:
        if te <= ta:
            if te > hz:
                break
            t = te
            if mode == 1:  # a prefill ends
                busy += t - seg_t0
                if len(pf_res):
                    hi_fresh = pf0 - 1
                    for rid, L, rem, t_first, gen in pf_res:
                        tr = t
                        if rid in last_tok:
                            tr = last_tok[rid]
                            del last_tok[rid]
                        has_pr = rid in preempt_lag
                        if has_pr:
                            pr = preempt_lag[rid]
                            del preempt_lag[rid]
                        if rem <= 0:
                            fin[rid] = t
                            lagv[rid] = pr[0] if has_pr else -inf
                            gapv[rid] = pr[1] if has_pr else 0.0
                            continue
                        base[rid] = t_first + (gen - S) * tbt
                        if has_pr:
                            prior[rid] = pr
                        heappush(heap, (S + rem) * M + rid)
                        cs[rid] = L - S
                        s_adm[rid] = S
                        r_lo[rid] = len(rl)
                        n_readm += 1
                        readm[rid] = (hi_fresh, n_readm)
                        B += 1
                        C += L
                        new.append(rid)
                        new_t.append(tr)
                    pf_res.clear()
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
                    r_lo[rid] = len(rl)
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
                # run records: Lambda and gap at its first and last step (a sequence
                # admitted at step s has its first record, at step s + 1, at r_lo)
                rl.append(t1 - (S0 + 1) * tbt)
                rg.append(t1 - (last_step_end if last_step_end >= 0.0 else seg_t0))
                if k > 1:
                    x = a_c + b_c * (k - 1)
                    y = a_m + b_m * (k - 1)
                    rl.append(t - (S0 + k) * tbt)
                    rg.append((x if x > y else y) + o)
                if len(new):
                    tau0 = t1 - seg_t0
                    for j in range(len(new)):
                        pgap[new[j]] = (seg_t0 - new_t[j]) + tau0
                    new.clear()
                    new_t.clear()
                S = S0 + k
                C += B * k
                last_step_end = t
                lim = (S + 1) * M  # key < lim <=> finishes at step <= S
                while len(heap) and heap[0] < lim:
                    rid = heappop(heap) % M
                    B -= 1
                    C -= cs[rid] + S
                    fin[rid] = t
                    r_hi[rid] = len(rl) - 1  # the record of step S
                    if len(prior) and rid in prior:
                        final_prior[rid] = prior[rid]
                        del prior[rid]
        else:
            # an arrival (ta < te, so ta is finite)
            t = ta
            rid = p
            p += 1
            ta = arr[p]
            if mode:
                if mode == 2 and wq == rid and not len(preq) and max_seqs > B:
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
            if wq < p or len(preq):
                used = C * kv
                growth = B * kv
                tok = 0
                nt = 0
                comp = mem = 0.0
                oo = ovh
                while len(preq):
                    e = preq[-1]
                    L = e[1]
                    need = L * kv
                    if B + nt >= max_seqs or used + need + growth + kv > cap_adm:
                        break
                    if nt and tok + L > budget:
                        break
                    preq.pop()
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
                if not len(preq):
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
                # (readm.get(rid) or (rid, 0)) is unique per running sequence
                bi = 0
                b0 = b1 = 0
                for j in range(len(heap)):
                    r = heap[j] % M
                    k0, k1 = readm.get(r, (r, 0))
                    if j == 0 or k0 > b0 or (k0 == b0 and k1 > b1):
                        bi, b0, b1 = j, k0, k1
                best = heap.pop(bi)
                heapify(heap)
                vr = best % M
                s_i = s_adm[vr]
                rem_steps = best // M - S
                ctx_now = cs[vr] + S
                B -= 1
                C -= ctx_now
                lg = _max_from(rl, r_lo[vr]) - base[vr] if s_i < S else -inf
                gg = _max_from(rg, r_lo[vr] + 1) if s_i + 1 < S else 0.0
                in_new = vr in new
                gg = max(gg, 0.0 if in_new else pgap[vr], 0.0)
                tl = last_step_end if last_step_end >= 0.0 else 0.0
                if in_new:
                    j = new.index(vr)
                    if s_i == S:
                        tl = new_t[j]
                    new.pop(j)
                    new_t.pop(j)
                pgap[vr] = 0.0
                if vr in prior:
                    old = prior[vr]
                    del prior[vr]
                    lg = max(lg, old[0])
                    gg = max(gg, old[1])
                npre[vr] += 1
                if vr in preempt_lag:
                    prev_pl = preempt_lag[vr]
                    lg, gg = max(lg, prev_pl[0]), max(gg, prev_pl[1])
                preempt_lag[vr] = (lg, gg)
                last_tok[vr] = tl
                gen_now = outp[vr] - 1 - rem_steps
                preq.append((vr, ctx_now, rem_steps, first[vr], gen_now))
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
    fp_id = [0][:0]
    fp_lag = [0.0][:0]
    fp_gap = [0.0][:0]
    for rid, v in final_prior.items():
        fp_id.append(rid)
        fp_lag.append(v[0])
        fp_gap.append(v[1])
    if fold:  # compiled: the maxima in one pass here, no temporaries
        _fold_maxima(lagv, gapv, r_lo, r_hi, base, pgap, rl, rg, fp_id, fp_lag, fp_gap)
        return busy, np.zeros(0), np.zeros(0), fp_id, fp_lag, fp_gap
    # np.array: one C conversion for the vectorised maxima of _finish
    return busy, np.array(rl), np.array(rg), fp_id, fp_lag, fp_gap


@register_jitable
def _fold_maxima(
    lagv: Any,
    gapv: Any,
    r_lo: Any,
    r_hi: Any,
    base: Any,
    pgap: Any,
    rl: Any,
    rg: Any,
    fp_id: Any,
    fp_lag: Any,
    fp_gap: Any,
) -> None:
    """Worst lag / longest gap of every decode-finished sequence, as a loop (compiled).

    The same values as the vectorised :func:`_finish`: ``max(rl[lo..hi]) - base`` and
    ``max(max(rg[lo+1..hi]), pgap)`` (an empty range is ``-inf``), then the maxima
    carried over from before a preemption.
    """
    ninf = -math.inf
    for rid in range(len(r_hi)):
        hi = r_hi[rid]
        if hi < 0:
            continue
        lo = r_lo[rid]
        m = ninf
        for j in range(lo, hi + 1):
            if rl[j] > m:
                m = rl[j]
        lagv[rid] = m - base[rid]
        g = ninf
        for j in range(lo + 1, hi + 1):
            if rg[j] > g:
                g = rg[j]
        gapv[rid] = g if g > pgap[rid] else pgap[rid]
    for i in range(len(fp_id)):
        rid = fp_id[i]
        lagv[rid] = max(lagv[rid], fp_lag[i])
        gapv[rid] = max(gapv[rid], fp_gap[i])


@register_jitable
def _max_from(a: Any, i: int) -> float:
    """``max(a[i:], default=-inf)`` (numba-compilable)."""
    m = -math.inf
    for j in range(i, len(a)):
        if a[j] > m:
            m = a[j]
    return m


def _finish(
    lag_a: np.ndarray,
    gap_a: np.ndarray,
    r_lo: np.ndarray,
    r_hi: np.ndarray,
    base: np.ndarray,
    pgap: np.ndarray,
    rl: np.ndarray,
    rg: np.ndarray,
    fp_id: list[int],
    fp_lag: list[float],
    fp_gap: list[float],
) -> None:
    """Worst lag / longest gap of every decode-finished sequence (vectorised, in place).

    Its run records go from ``r_lo`` (the first step after its last admission) to
    ``r_hi`` (its last step); the gap skips the first record (the gap before that step
    is ``pgap``, measured from its previous token).
    """
    idx = np.flatnonzero(r_hi >= 0)
    if not len(idx):
        return
    lo = r_lo[idx]
    hi = r_hi[idx]
    lag_a[idx] = _range_max(rl, lo, hi) - base[idx]
    gap_a[idx] = np.maximum(_range_max(rg, lo + 1, hi), pgap[idx])
    for rid, pl, pg in zip(fp_id, fp_lag, fp_gap, strict=True):
        lag_a[rid] = max(lag_a[rid], pl)
        gap_a[rid] = max(gap_a[rid], pg)


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


def _child(work: Callable[[list[int]], None], grp: list[int], conn: Any) -> None:
    try:
        work(grp)
        conn.send("ok")
    except BaseException:  # report any failure to the parent, then exit
        conn.send(traceback.format_exc())
    finally:
        conn.close()


def _fan_out(groups: list[list[int]], work: Callable[[list[int]], None]) -> None:
    """``work(group)`` for every group: ``groups[1:]`` in forked children (they inherit
    everything, nothing is pickled), ``groups[0]`` in this process; then wait for all.

    A failure in any process raises :class:`SimulationError` with its traceback.
    """
    ctx = mp.get_context("fork")
    _jit_kernel()  # compile (or load the cached kernel) once, before forking
    children = []
    for grp in groups[1:]:
        rd, wr = ctx.Pipe(duplex=False)
        pr = ctx.Process(target=_child, args=(work, grp, wr), daemon=True)
        pr.start()
        wr.close()
        children.append((pr, rd))
    try:
        work(groups[0])
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


def _can_fork(processes: int, jobs: int) -> bool:
    return processes > 1 and jobs > 1 and "fork" in mp.get_all_start_methods()


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
    if not _can_fork(processes, len(jobs)):
        out_pool: list[StreamResult | None] = [None] * len(jobs)
        with ProcessPoolExecutor(max_workers=len(groups), mp_context=mp.get_context()) as ex:
            futs = [(grp, ex.submit(_run_many, [jobs[i] for i in grp])) for grp in groups]
            for grp, f in futs:
                for i, r in zip(grp, f.result(), strict=True):
                    out_pool[i] = r
        return [r for r in out_pool if r is not None]
    # fork: one request table, each job a contiguous range of it, through replay_into
    offs = np.cumsum([0, *sizes])
    arrival, prompt, output = (np.concatenate([np.asarray(j[c]) for j in jobs]) for c in (4, 5, 6))
    streams: list[IndexedStream] = [
        (*jobs[q][:4], jobs[q][7], np.arange(offs[q], offs[q + 1]), q) for q in range(len(jobs))
    ]
    dst = _outputs(int(offs[-1]))
    src = (arrival, prompt, output)
    busy, (first, fin, lag, gap, pre, _) = replay_into(streams, src, dst, processes)
    return [
        StreamResult(
            first[offs[q] : offs[q + 1]],
            fin[offs[q] : offs[q + 1]],
            lag[offs[q] : offs[q + 1]],
            gap[offs[q] : offs[q + 1]],
            pre[offs[q] : offs[q + 1]],
            float(busy[q]),
        )
        for q in range(len(jobs))
    ]


def _outputs(n: int) -> tuple[np.ndarray, ...]:
    """Empty per-request outputs in shared memory: first, finish, lag, gap, preemptions,
    served-by (NaN / 0 / -1)."""
    nan = np.full(n, math.nan)
    return (
        shared_copy(nan),
        shared_copy(nan),
        shared_copy(nan),
        shared_copy(nan),
        shared_copy(np.zeros(n, dtype=np.int16)),
        shared_copy(np.full(n, -1, dtype=np.int32)),
    )


def _run_reused(job: StreamJob) -> StreamResult:
    """:func:`run_stream`, compiled into per-thread output buffers when possible (the
    result's arrays are overwritten by the thread's next call: copy or scatter them)."""
    if _jit_kernel() is None:
        return run_stream(*job)
    n = len(job[4])
    bufs: list[np.ndarray] | None = getattr(_LOCAL, "out", None)
    if bufs is None or len(bufs[0]) < n:
        size = max(n, 2 * len(bufs[0]) if bufs else 0)
        bufs = [np.empty(size) for _ in range(4)] + [np.empty(size, dtype=np.int16)]
        _LOCAL.out = bufs
    out = (bufs[0][:n], bufs[1][:n], bufs[2][:n], bufs[3][:n], bufs[4][:n])
    busy = _run_compiled(job, out)
    return StreamResult(*out, busy)


IndexedStream = tuple[ModelCost, PerfParams, float, float, float, np.ndarray, int]
"""``(cost, perf, tbt, kv_cap, horizon, ids, owner)``: one engine's requests by id."""


def _as_slice(ids: np.ndarray) -> slice | np.ndarray:
    """``ids`` as a slice when they step evenly (round-robin engines of one model).

    Strided slices gather and scatter several times faster than index arrays on 10^7
    requests; other id sets are returned unchanged.
    """
    n = len(ids)
    if n < 2:
        return ids
    first = int(ids[0])
    step = int(ids[1]) - first
    if step <= 0 or int(ids[-1]) != first + step * (n - 1):
        return ids
    if n > 2 and not bool(np.all(np.diff(ids) == step)):
        return ids
    return slice(first, first + step * (n - 1) + 1, step)


def replay_into(
    streams: list[IndexedStream],
    src: tuple[np.ndarray, np.ndarray, np.ndarray],
    dst: tuple[np.ndarray, ...],
    processes: int = 1,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Replay engines whose requests are given by id, writing results in place.

    ``src`` = (arrival, prompt, output) and ``dst`` = (first token, finish, worst lag,
    longest gap, preemptions, served-by) are indexed by request id; stream ``j`` reads
    and writes only its ``ids`` (in arrival order) and marks the requests it finished
    with its ``owner``. Returns each stream's busy seconds and the six arrays written.
    With ``processes > 1`` and ``fork`` the workers gather their own inputs and scatter
    their own results into shared memory: a ``dst`` array that is not shared
    (:mod:`~clustersim.serving.sharedmem`) is replaced by a shared copy, returned in its
    place. Without ``fork`` the jobs go through :func:`run_streams` and this process
    scatters. Same results either way (tested).
    """
    arrival, prompt, output = src
    forking = _can_fork(processes, len(streams))
    if forking:
        dst = tuple(a if is_shared(a) else shared_copy(a) for a in dst)
    first, fin, lag, gap, pre, served = dst
    busy = shared_copy(np.zeros(len(streams))) if forking else np.zeros(len(streams))

    sel = [_as_slice(s[5]) for s in streams]  # each stream's ids, as a slice if they can be

    def scatter(j: int, r: StreamResult) -> None:
        ids, owner = sel[j], streams[j][6]
        first[ids] = r.first_token
        fin[ids] = r.finish
        lag[ids] = r.max_lag
        gap[ids] = r.max_gap
        pre[ids] = r.preemptions
        done = ~np.isnan(r.finish)
        if isinstance(ids, slice):
            served[ids][done] = owner  # a basic slice is a view: this writes through
        else:
            served[ids[done]] = owner
        busy[j] = r.busy

    def job(j: int) -> StreamJob:
        cost, perf, tbt, cap, hz, _, _ = streams[j]
        sl = sel[j]
        return (cost, perf, tbt, cap, arrival[sl], prompt[sl], output[sl], hz)

    def work(grp: list[int]) -> None:
        if forking:  # every worker scatters over the whole id range: map it in bulk
            prefault((*dst, busy))
        for j in grp:
            scatter(j, _run_reused(job(j)))

    if forking:
        _fan_out(_balance([len(s[5]) for s in streams], processes), work)
    elif processes > 1 and len(streams) > 1:
        for j, r in enumerate(run_streams([job(j) for j in range(len(streams))], processes)):
            scatter(j, r)
    else:
        work(list(range(len(streams))))
    return np.array(busy), dst
