"""Serving metrics: SLO attainment, goodput, per-model / per-GPU stats, Lorenz curves,
cost per million tokens, pool utilisation, GPUs over time, the GPUs-needed search and
the active-model analysis of Aegaeon (``E[m] = M (1 - exp(-lambda T))``).

Everything here reads a :class:`~clustersim.serving.simulator.ServingResult`; nothing
re-simulates except :func:`gpus_needed`, which calls a user function per pool size.
Units: seconds, USD, tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clustersim.errors import ConfigError
from clustersim.serving.simulator import SLO, ServingResult

__all__ = [
    "Lorenz",
    "active_models_expected",
    "active_models_observed",
    "attainment",
    "cost_summary",
    "gpu_lorenz",
    "gpus_needed",
    "gpus_over_time",
    "model_lorenz",
    "per_gpu",
    "per_model",
    "slo_met",
    "summary",
    "tail_share",
]


SLO_CHUNK = 1 << 20
"""Requests scored per chunk by :func:`slo_met` (a few MB of temporaries)."""


def slo_met(res: ServingResult, slo: SLO | None = None) -> np.ndarray:
    """Boolean per request: arrived, served and within the SLO (see :class:`SLO`).

    ``slo`` may change ``ttft`` and ``anchor`` but must keep the simulated ``tbt``
    (lags were measured against it).

    Raises:
        ConfigError: ``slo.tbt`` differs from the simulated one.
    """
    s = slo or res.slo
    if not math.isclose(s.tbt, res.slo.tbt):
        raise ConfigError(
            f"lags were measured for TBT {res.slo.tbt}s; re-simulate to score TBT {s.tbt}s"
        )
    arr = res.market.requests.arrival
    n = len(arr)
    out: np.ndarray = np.zeros(n, dtype=bool)
    # In chunks: a day of one ServeGen class is ~10^8 requests, and full-size float
    # temporaries (several GB) cost more in page faults than the arithmetic.
    step = SLO_CHUNK
    with np.errstate(invalid="ignore"):
        for lo in range(0, min(n, res.arrived), step):
            hi = min(lo + step, res.arrived)
            ttft = res.first_token[lo:hi] - arr[lo:hi]
            lag = res.max_lag[lo:hi]
            ok = ~np.isnan(res.finish[lo:hi])  # served
            ok &= ttft <= s.ttft + 1e-9
            if s.anchor == "arrival":  # a fast first token banks slack for later tokens
                ok &= np.isnan(lag) | (lag <= (s.ttft - ttft) + 1e-9)
            else:
                ok &= np.isnan(lag) | (lag <= 1e-9)
            out[lo:hi] = ok
    return out


def attainment(res: ServingResult, slo: SLO | None = None) -> float:
    """Share of arrived requests that were served within the SLO (1.0 if none arrived).

    Dropped, unfinished and late requests all count as misses.
    """
    if res.arrived == 0:
        return 1.0
    return float(slo_met(res, slo).sum() / res.arrived)


def per_model(res: ServingResult, slo: SLO | None = None) -> dict[str, np.ndarray]:
    """Per market model: requests, served, dropped, input/output tokens served,
    attainment, p50/p99 TTFT and p99 longest token gap (NaN without served requests)."""
    r = res.market.requests
    nm = len(res.market.models)
    arrived = np.zeros(len(r), dtype=bool)
    arrived[: res.arrived] = True
    m = r.model
    served = res.served
    ok = slo_met(res, slo)
    out: dict[str, np.ndarray] = {
        "requests": np.bincount(m[arrived], minlength=nm),
        "served": np.bincount(m[served], minlength=nm),
        "dropped": np.bincount(m[res.dropped], minlength=nm),
        "input_tokens": np.bincount(m[served], weights=r.input_tokens[served], minlength=nm),
        "output_tokens": np.bincount(m[served], weights=r.output_tokens[served], minlength=nm),
        "slo_met": np.bincount(m[ok], minlength=nm),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        out["attainment"] = np.where(
            out["requests"] > 0, out["slo_met"] / np.maximum(out["requests"], 1), np.nan
        )
    ttft = res.first_token - r.arrival
    p50 = np.full(nm, np.nan)
    p99 = np.full(nm, np.nan)
    g99 = np.full(nm, np.nan)
    order = np.argsort(m, kind="stable")
    bounds = np.searchsorted(m[order], np.arange(nm + 1))
    for k in range(nm):
        ids = order[bounds[k] : bounds[k + 1]]
        ids = ids[served[ids]]
        if len(ids):
            p50[k], p99[k] = np.percentile(ttft[ids], [50, 99])
            g99[k] = np.percentile(res.max_gap[ids], 99)
    out["ttft_p50"] = p50
    out["ttft_p99"] = p99
    out["max_gap_p99"] = g99
    return out


def per_gpu(res: ServingResult) -> dict[str, np.ndarray]:
    """Per pool device id: allocated, busy and idle seconds, requests served and output
    tokens (an instance's requests count 1/tp towards each of its devices)."""
    n = 1 + max((g for rec in res.instances for g in rec.gpus), default=-1)
    alloc = np.zeros(n)
    busy = np.zeros(n)
    reqs = np.zeros(n)
    toks = np.zeros(n)
    served = res.served
    by = res.served_by[served]
    out_tok = res.market.requests.output_tokens[served]
    n_inst = 1 + max((rec.iid for rec in res.instances), default=-1)
    req_per_inst = np.bincount(by, minlength=n_inst).astype(float)
    tok_per_inst = np.bincount(by, weights=out_tok, minlength=n_inst)
    for rec in res.instances:
        span = max(0.0, rec.stopped - rec.created)
        for g in rec.gpus:
            alloc[g] += span
            busy[g] += min(rec.busy, span)
            reqs[g] += req_per_inst[rec.iid] / rec.tp
            toks[g] += tok_per_inst[rec.iid] / rec.tp
    return {
        "allocated_s": alloc,
        "busy_s": busy,
        "idle_s": alloc - busy,
        "requests": reqs,
        "output_tokens": toks,
    }


@dataclass(frozen=True)
class Lorenz:
    """A Lorenz curve: ``x`` cumulative share of units (GPUs or models) sorted by
    increasing requests, ``y`` cumulative share of requests they serve (both from 0)."""

    x: np.ndarray
    y: np.ndarray

    def y_at(self, x: float) -> float:
        """Request share of the least-requested ``x`` share of units (interpolated)."""
        return float(np.interp(x, self.x, self.y))

    def x_at(self, y: float) -> float:
        """Unit share that serves the least-requested ``y`` share of requests."""
        return float(np.interp(y, self.y, self.x))


def gpu_lorenz(res: ServingResult) -> Lorenz:
    """Lorenz curve of devices vs requests served (devices sorted by requests, ascending)."""
    reqs = np.sort(per_gpu(res)["requests"])
    tot = reqs.sum()
    y = (
        np.concatenate([[0.0], np.cumsum(reqs) / tot])
        if tot > 0
        else np.linspace(0, 1, len(reqs) + 1)
    )
    return Lorenz(np.linspace(0.0, 1.0, len(reqs) + 1), y)


def model_lorenz(requests: np.ndarray, gpus: np.ndarray) -> Lorenz:
    """Lorenz curve of devices vs requests when each model owns its devices.

    Models sorted by increasing requests (ties: fewer devices first, then index);
    ``x`` = cumulative device share, ``y`` = cumulative request share.
    """
    req = np.asarray(requests, dtype=float)
    g = np.asarray(gpus, dtype=float)
    order = np.lexsort((np.arange(len(req)), g, req))
    x = np.concatenate([[0.0], np.cumsum(g[order]) / g.sum()])
    y = np.concatenate([[0.0], np.cumsum(req[order]) / max(req.sum(), 1e-300)])
    return Lorenz(x, y)


def tail_share(requests: np.ndarray, gpus: np.ndarray, model_fraction: float) -> dict[str, float]:
    """Request and device shares of the least-requested ``model_fraction`` of models.

    The tail is the ``round(model_fraction * M)`` models with the fewest requests (ties:
    fewer devices first, then index) — Aegaeon's "94.1 % of models" cut.
    """
    req = np.asarray(requests, dtype=float)
    g = np.asarray(gpus, dtype=float)
    n = len(req)
    k = round(model_fraction * n)
    order = np.lexsort((np.arange(n), g, req))
    tail = order[:k]
    return {
        "models": float(k),
        "model_share": k / n if n else 0.0,
        "request_share": float(req[tail].sum() / max(req.sum(), 1e-300)),
        "gpu_share": float(g[tail].sum() / max(g.sum(), 1e-300)),
        "gpus": float(g[tail].sum()),
    }


def gpus_over_time(res: ServingResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step series ``(time, allocated devices, pool capacity)`` from the change points."""
    tl = res.gpu_timeline
    t = np.array([x[0] for x in tl] + [res.horizon])
    used = np.array([x[1] for x in tl] + [tl[-1][1]], dtype=float)
    cap = np.array([x[2] for x in tl] + [tl[-1][2]], dtype=float)
    return t, used, cap


def cost_summary(res: ServingResult, pool_gpus: float | None = None) -> dict[str, float]:
    """Dollars and utilisation.

    ``provisioned`` = pool size (``pool_gpus``, else the result's pool, else the peak
    allocation) x horizon x ``price_per_hour`` — what a market pays for a pool it owns;
    ``allocated`` = sum of instance device-hours x price. ``cost_per_mtok`` divides the
    provisioned dollars by the million tokens (prompt + output) of served requests;
    ``pool_utilization`` = busy device-seconds / (pool size x horizon).
    """
    price = res.device.price_per_hour
    hours = res.horizon / 3600.0
    peak = max((x[1] for x in res.gpu_timeline), default=0)
    pool = float(pool_gpus if pool_gpus is not None else (res.pool_gpus or peak))
    alloc_h = sum(rec.tp * max(0.0, rec.stopped - rec.created) for rec in res.instances) / 3600
    busy_s = sum(rec.tp * rec.busy for rec in res.instances)
    r = res.market.requests
    sv = res.served
    tokens = float(r.input_tokens[sv].sum() + r.output_tokens[sv].sum())
    out_tokens = float(r.output_tokens[sv].sum())
    provisioned = pool * hours * price
    return {
        "pool_gpus": pool,
        "peak_allocated_gpus": float(peak),
        "provisioned_usd": provisioned,
        "allocated_usd": alloc_h * price,
        "tokens_served": tokens,
        "output_tokens_served": out_tokens,
        "cost_per_mtok": provisioned / (tokens / 1e6) if tokens > 0 else math.inf,
        "cost_per_m_output_tok": provisioned / (out_tokens / 1e6) if out_tokens > 0 else math.inf,
        "pool_utilization": busy_s / (pool * res.horizon) if pool > 0 and res.horizon > 0 else 0.0,
    }


def summary(res: ServingResult, slo: SLO | None = None) -> dict[str, Any]:
    """Headline numbers of one run (JSON-ready)."""
    r = res.market.requests
    ok = slo_met(res, slo)
    sv = res.served
    ttft = (res.first_token - r.arrival)[sv]
    cons = res.conservation()
    cost = cost_summary(res)
    horizon = max(res.horizon, 1e-9)

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q)) if len(a) else math.nan

    return {
        "policy": res.policy,
        "device": res.device.name,
        "horizon_s": res.horizon,
        "requests": cons,
        "slo": {
            "ttft_s": (slo or res.slo).ttft,
            "tbt_s": res.slo.tbt,
            "anchor": (slo or res.slo).anchor,
        },
        "slo_attainment": attainment(res, slo),
        "goodput_rps": float(ok.sum() / horizon),
        "goodput_tokens_per_s": float(r.output_tokens[ok].sum() / horizon),
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99),
        "max_gap_p50_s": pct(res.max_gap[sv], 50),
        "max_gap_p99_s": pct(res.max_gap[sv], 99),
        "preemptions": int(res.preemptions.sum()),
        **cost,
        "wall_seconds": res.wall_seconds,
        "extra": {k: v for k, v in res.extra.items() if _jsonable(v)},
    }


def _jsonable(v: Any) -> bool:
    return isinstance(v, int | float | str | bool | list | dict) or v is None


def gpus_needed(
    run: Callable[[int], ServingResult],
    target: float,
    lo: int,
    hi: int,
    slo: SLO | None = None,
) -> tuple[int, ServingResult | None, dict[int, float]]:
    """Smallest pool size in ``[lo, hi]`` whose run reaches ``target`` attainment.

    Binary search assuming attainment grows with the pool (checked only where
    sampled). ``run(g)`` simulates with ``g`` devices; a ``ConfigError`` (pool too
    small for the policy) counts as attainment 0. Returns ``(g, result, tried)`` with
    ``tried`` mapping each sampled size to its attainment; ``g = hi + 1`` and
    ``result = None`` if even ``hi`` misses the target.
    """
    if lo > hi or lo < 0:
        raise ConfigError(f"gpus_needed: need 0 <= lo <= hi, got lo={lo}, hi={hi}")
    tried: dict[int, float] = {}
    results: dict[int, ServingResult] = {}

    def ok(g: int) -> bool:
        try:
            res = run(g)
        except ConfigError:
            tried[g] = 0.0
            return False
        a = attainment(res, slo)
        tried[g] = a
        results[g] = res
        return a >= target

    if not ok(hi):
        return hi + 1, None, tried
    a, b = lo, hi  # invariant: b passes
    while a < b:
        mid = (a + b) // 2
        if ok(mid):
            b = mid
        else:
            a = mid + 1
    return b, results.get(b), tried


def active_models_expected(n_models: int, rate: float, service_time: float) -> float:
    """Aegaeon's ``E[m] = M (1 - exp(-lambda T))``: expected models with a request in
    service, for ``M`` models each with Poisson rate ``lambda`` and mean service ``T``.

    It is the probability that a model saw an arrival in the last ``T`` seconds (its
    previous request is still in service) summed over models.
    """
    if n_models < 0 or rate < 0 or service_time < 0:
        raise ConfigError("active_models_expected needs non-negative inputs")
    return n_models * (1.0 - math.exp(-rate * service_time))


def active_models_observed(
    arrival: np.ndarray, model: np.ndarray, end: np.ndarray, t0: float, t1: float
) -> float:
    """Time-average number of models with at least one request in ``[arrival, end)``
    over the window ``[t0, t1)`` (union of each model's busy intervals)."""
    if t1 <= t0:
        raise ConfigError("active_models_observed needs t1 > t0")
    a = np.clip(np.asarray(arrival, dtype=float), t0, t1)
    e = np.clip(np.asarray(end, dtype=float), t0, t1)
    m = np.asarray(model)
    order = np.lexsort((a, m))
    a, e, m = a[order], e[order], m[order]
    total = 0.0
    bounds = np.flatnonzero(np.diff(m)) + 1
    for s, f in zip(np.r_[0, bounds], np.r_[bounds, len(m)], strict=True):
        aa, ee = a[s:f], e[s:f]
        run_end = np.maximum.accumulate(ee)
        # a new busy period starts where an arrival comes after all earlier ends
        starts = np.r_[True, aa[1:] > run_end[:-1]]
        idx = np.flatnonzero(starts)
        ends = np.r_[idx[1:], len(aa)] - 1
        total += float(np.sum(run_end[ends] - aa[idx]))
    return total / (t1 - t0)
