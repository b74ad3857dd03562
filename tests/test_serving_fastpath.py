"""Serving fast path internals: process fan-out, range maxima, stream inputs, ServeGen merge."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.errors import SimulationError
from clustersim.hardware import get_device
from clustersim.serving import PerfParams, get_model, model_cost, servegen_arrivals
from clustersim.serving.fastpath import _range_max, run_stream, run_streams
from clustersim.serving.workload import ServeGenClient

FIELDS = ("first_token", "finish", "max_lag", "max_gap", "preemptions")


def _jobs(n_jobs: int, n: int, seed: int, kv_tokens: float | None = None) -> list:  # type: ignore[type-arg]
    c = model_cost(get_model("Qwen2.5-7B"), get_device("H800"), 1)
    cap = (kv_tokens or c.kv_capacity_tokens) * c.kv_bytes_per_token
    rng = np.random.default_rng(seed)
    jobs = []
    for j in range(n_jobs):
        m = n + 7 * j
        arr = np.cumsum(rng.exponential(0.05, m))
        pr = rng.integers(1, 3000, m).astype(np.int32)
        out = rng.integers(1, 400, m).astype(np.int32)
        jobs.append((c, PerfParams(), 0.1, cap, arr, pr, out, float(arr[-1]) * 0.95))
    return jobs


def test_run_streams_forked_equals_serial() -> None:
    # a small KV cache forces preemptions; a horizon leaves work unfinished
    jobs = _jobs(5, 300, 3, kv_tokens=6000)
    ref = run_streams(jobs, 1)
    assert sum(int(r.preemptions.sum()) for r in ref) > 0
    assert any(np.isnan(r.finish).any() for r in ref)
    for procs in (2, 3, 8):
        got = run_streams(jobs, procs)
        assert len(got) == len(ref)
        for a, b in zip(ref, got, strict=True):
            for f in FIELDS:
                assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
            assert a.busy == b.busy


def test_run_streams_reports_worker_failure() -> None:
    jobs = _jobs(2, 400, 4)
    c, p, tbt, _cap, arr, pr, out, h = jobs[1]
    small = (c, p, tbt, None, arr[:5], pr[:5], out[:5], h)  # no KV capacity: TypeError
    # the small (failing) job goes to the forked worker, the large one stays in the caller
    with pytest.raises(SimulationError, match="TypeError"):
        run_streams([jobs[0], small], 2)


def test_run_stream_inputs_lists_arrays_and_horizon() -> None:
    (c, p, tbt, cap, arr, pr, out, _h) = _jobs(1, 200, 5)[0]
    a = run_stream(c, p, tbt, cap, arr, pr, out)
    b = run_stream(c, p, tbt, cap, arr.tolist(), pr.tolist(), out.tolist())
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
    assert np.all(np.isfinite(a.finish))  # no horizon: everything is served
    h = float(arr[120])
    r = run_stream(c, p, tbt, cap, arr, pr, out, horizon=h)
    assert np.all(np.isnan(r.first_token[121:]))  # arrivals after the horizon are ignored
    assert np.nanmax(r.finish) <= h
    assert r.busy <= h
    empty = run_stream(c, p, tbt, cap, [], [], [])
    assert len(empty.finish) == 0 and empty.busy == 0.0


@settings(max_examples=60, deadline=None)
@given(
    v=st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=40),
    pairs=st.lists(st.tuples(st.integers(0, 45), st.integers(-1, 45)), max_size=30),
)
def test_range_max_matches_brute_force(v: list[float], pairs: list[tuple[int, int]]) -> None:
    arr = np.asarray(v, dtype=np.float64)
    nv = len(arr)
    lo = np.asarray([a for a, _ in pairs], dtype=np.int64)
    hi = np.asarray([min(b, nv - 1) for _, b in pairs], dtype=np.int64)
    got = _range_max(arr, lo, hi)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        want = max(arr[a : b + 1], default=-np.inf) if a <= b else -np.inf
        assert got[i] == want


def _client(cid: int, starts: list[float], rate: float, shape: float, pat: int) -> ServeGenClient:
    k = len(starts)
    # mean gap 1 / rate: Gamma shape * scale, Weibull scale * Gamma(1 + 1 / shape)
    scale = 1.0 / (rate * shape) if pat == 1 else 1.0 / (rate * math.gamma(1.0 + 1.0 / shape))
    return ServeGenClient(
        cid,
        np.asarray(starts, dtype=np.float64),
        np.full(k, rate),
        np.full(k, 1.0 / np.sqrt(shape)),
        np.full(k, pat, dtype=np.int8),
        np.full(k, shape),
        np.full(k, scale),
        600.0,
    )


def test_servegen_slot_merge_equals_global_stable_sort() -> None:
    cl = [
        _client(0, [0.0, 600.0, 1200.0], 5.0, 0.5, 1),
        _client(1, [0.0, 600.0, 1200.0], 3.0, 0.7, 2),
        _client(2, [600.0, 1200.0], 8.0, 2.0, 1),
    ]
    t, o = servegen_arrivals(cl, np.random.default_rng(1), start=100.0, end=1500.0)
    t2, o2 = servegen_arrivals(cl, np.random.default_rng(1), start=100.0, end=1500.0)
    assert np.array_equal(t, t2) and np.array_equal(o, o2)  # deterministic for a seed
    assert np.all(np.diff(t) >= 0) and t.min() >= 0.0 and t.max() < 1400.0
    # the same multiset merged client by client with one global stable sort
    ct = np.concatenate([t[o == ci] for ci in range(3)])
    co = np.concatenate([np.full(int((o == ci).sum()), ci) for ci in range(3)])
    order = np.argsort(ct, kind="stable")
    assert np.array_equal(ct[order], t) and np.array_equal(co[order], o)
    # every client keeps its rate (Gamma mean gap = shape * scale = 1 / rate)
    for ci, (rate, span) in enumerate(((5.0, 1400.0), (3.0, 1400.0), (8.0, 900.0))):
        assert (o == ci).sum() == pytest.approx(rate * span, rel=0.1)


def test_servegen_overlapping_windows_fall_back_to_global_sort() -> None:
    # client 1's windows are shifted by 300 s: windows of different clients overlap
    cl = [_client(0, [0.0, 600.0], 4.0, 0.8, 1), _client(1, [300.0, 900.0], 6.0, 1.5, 2)]
    t, o = servegen_arrivals(cl, np.random.default_rng(2), start=0.0, end=1200.0)
    assert np.all(np.diff(t) >= 0) and t.min() >= 0.0 and t.max() < 1200.0
    assert (o == 0).sum() == pytest.approx(4.0 * 1200.0, rel=0.1)
    assert (o == 1).sum() == pytest.approx(6.0 * 900.0, rel=0.1)
    assert t[o == 1].min() >= 300.0


def test_servegen_rate_mismatch_draws_more_chunks() -> None:
    # the trace rate says 1 req/s but the gaps average 0.1 s: the window needs many chunks
    c = _client(0, [0.0], 10.0, 1.0, 1)
    c = dataclasses.replace(c, rate=np.array([1.0]))
    t, _ = servegen_arrivals([c], np.random.default_rng(3), start=0.0, end=600.0)
    assert len(t) == pytest.approx(6000, rel=0.05)
    assert np.all(np.diff(t) >= 0) and t.max() < 600.0


def test_compiled_kernel_equals_interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    # one kernel source, two modes: numba-compiled (maxima folded in the kernel, work
    # arrays reused across streams) and interpreted (vectorised maxima) agree bit for bit
    from clustersim.serving import fastpath

    if not fastpath.jit_enabled():
        pytest.skip("the kernel runs interpreted here (numba missing or CLUSTERSIM_JIT=0)")
    jobs = _jobs(4, 250, 11, kv_tokens=5000)
    jobs.append(_jobs(1, 40, 12)[0])  # a shorter stream after longer ones: reused arrays
    comp = [run_stream(*j) for j in jobs]
    forked = run_streams(jobs, 2)
    assert sum(int(r.preemptions.sum()) for r in comp) > 0
    monkeypatch.setattr(fastpath, "_JIT", False)
    assert not fastpath.jit_enabled()
    interp = [run_stream(*j) for j in jobs]
    for a, b, c in zip(comp, interp, forked, strict=True):
        for f in FIELDS:
            assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
            assert np.array_equal(getattr(a, f), getattr(c, f), equal_nan=True), f
        assert a.busy == b.busy == c.busy


def test_jit_switch_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from clustersim.serving import fastpath

    monkeypatch.setattr(fastpath, "_JIT", None)
    monkeypatch.setenv("CLUSTERSIM_JIT", "0")
    assert not fastpath.jit_enabled()
    (c, p, tbt, cap, arr, pr, out, _h) = _jobs(1, 50, 2)[0]
    r = run_stream(c, p, tbt, cap, arr, pr, out)
    assert np.all(np.isfinite(r.finish))


def test_failed_compile_warns_and_runs_interpreted(monkeypatch: pytest.MonkeyPatch) -> None:
    from clustersim.serving import fastpath

    pytest.importorskip("numba", reason="numba is not installed: nothing to compile")

    def broken(_kernel: object) -> None:
        raise RuntimeError("no C compiler today")

    monkeypatch.setattr(fastpath, "_JIT", None)
    monkeypatch.delenv("CLUSTERSIM_JIT", raising=False)
    monkeypatch.setattr(fastpath, "_smoke", broken)
    with pytest.warns(RuntimeWarning, match="no C compiler today.*runs interpreted"):
        assert not fastpath.jit_enabled()
    (c, p, tbt, cap, arr, pr, out, _h) = _jobs(1, 60, 3)[0]
    r = run_stream(c, p, tbt, cap, arr, pr, out)
    assert np.all(np.isfinite(r.finish)) and len(r.finish) == 60


def test_threads_do_not_share_work_arrays() -> None:
    # the compiled kernel releases the GIL and reuses work arrays: per thread, not shared
    from concurrent.futures import ThreadPoolExecutor

    jobs = _jobs(4, 30000, 21)  # long enough for the kernels to overlap
    ref = [run_stream(*j) for j in jobs]
    with ThreadPoolExecutor(max_workers=3) as ex:
        got = list(ex.map(lambda j: run_stream(*j), jobs * 2))
    for a, b in zip(ref * 2, got, strict=True):
        for f in FIELDS:
            assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


@pytest.mark.parametrize("mode", ["fork", "pool", "interpreted"])
def test_dedicated_replay_in_processes_equals_event_loop(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several models and engines, a horizon and a small KV cache (preemptions, drops):
    # workers that gather and scatter by request id give the event loop's results
    from clustersim.serving import Market, MarketModel, Requests, simulate
    from clustersim.serving import fastpath as fp

    rng = np.random.default_rng(5)
    n = 3000
    arr = np.cumsum(rng.exponential(0.02, n))
    models = (MarketModel("a", get_model("Qwen2.5-7B")), MarketModel("b", get_model("Qwen2.5-32B")))
    reqs = Requests(
        arr,
        rng.integers(0, 2, n).astype(np.int32),
        rng.integers(1, 4000, n).astype(np.int32),
        rng.integers(1, 500, n).astype(np.int32),
    )
    mk = Market(models, reqs, float(arr[-1]), "fan-out test")
    kw = dict(device="H800", instances=[3, 2], tp=[1, 1], horizon=float(arr[-1]) * 0.95)
    slow = simulate(mk, "dedicated", fast=False, **kw)  # type: ignore[arg-type]
    if mode == "pool":  # the path for platforms without fork: pickled jobs, scatter here
        monkeypatch.setattr(fp, "_can_fork", lambda processes, jobs: False)
    if mode == "interpreted":
        monkeypatch.setattr(fp, "_JIT", False)
    fast = simulate(mk, "dedicated", fast=True, processes=2, **kw)  # type: ignore[arg-type]
    assert int(slow.preemptions.sum()) > 0 and np.isnan(slow.finish).any()
    for f in ("first_token", "finish", "max_lag", "max_gap", "preemptions", "served_by"):
        assert np.array_equal(getattr(slow, f), getattr(fast, f), equal_nan=True), f
    busy = sorted(r.busy for r in fast.instances)
    assert busy == sorted(r.busy for r in slow.instances)


def test_as_slice_only_for_even_steps() -> None:
    from clustersim.serving.fastpath import _as_slice

    assert _as_slice(np.array([4, 7, 10, 13])) == slice(4, 14, 3)
    assert _as_slice(np.array([2, 3])) == slice(2, 4, 1)
    for ids in ([4, 7, 11, 13], [4, 7, 9, 13], [5], [], [3, 3, 3], [9, 6, 3]):
        a = np.array(ids, dtype=np.int64)
        assert _as_slice(a) is a


@pytest.mark.parametrize("processes", [1, 2])
def test_one_model_round_robin_replay_uses_slices_and_equals_event_loop(
    processes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one model on 3 engines: each engine's ids step by 3, so they gather and scatter
    # through slices; results must equal the event loop's bit for bit
    from clustersim.serving import Market, MarketModel, Requests, simulate
    from clustersim.serving import fastpath as fp

    seen: list[bool] = []
    real = fp._as_slice

    def spy(ids: np.ndarray) -> slice | np.ndarray:
        out = real(ids)
        seen.append(isinstance(out, slice))
        return out

    monkeypatch.setattr(fp, "_as_slice", spy)
    rng = np.random.default_rng(11)
    n = 2000
    arr = np.cumsum(rng.exponential(0.01, n))
    reqs = Requests(
        arr,
        np.zeros(n, dtype=np.int32),
        rng.integers(1, 3000, n).astype(np.int32),
        rng.integers(1, 400, n).astype(np.int32),
    )
    mk = Market((MarketModel("a", get_model("Qwen2.5-7B")),), reqs, float(arr[-1]), "rr")
    kw = dict(device="H800", instances=[3], tp=[1], horizon=float(arr[-1]) * 0.9)
    slow = simulate(mk, "dedicated", fast=False, **kw)  # type: ignore[arg-type]
    fast = simulate(mk, "dedicated", fast=True, processes=processes, **kw)  # type: ignore[arg-type]
    if processes == 1:  # (forked workers record in their own memory)
        assert seen and all(seen)
    assert np.isnan(slow.finish).any()  # the horizon cut some
    for f in ("first_token", "finish", "max_lag", "max_gap", "preemptions", "served_by"):
        assert np.array_equal(getattr(slow, f), getattr(fast, f), equal_nan=True), f
