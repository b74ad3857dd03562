"""Serving workloads: a market of models and its request streams; loaders for real traces.

This module owns the serving-side workload data model and every trace reader:

* :class:`MarketModel` (a model offered on the market: name + architecture),
  :class:`Requests` (struct-of-arrays request stream sorted by arrival) and
  :class:`Market` (both together);
* readers for the public traces in ``../shared/traces``:
  :func:`load_genai_requests` / :func:`load_genai_load_latencies` (Alibaba GenAI
  Stable-Diffusion serving, per-model request log, measured model-load latencies),
  :func:`load_servegen_clients` / :func:`servegen_arrivals` /
  :func:`load_servegen_lengths` (ServeGen, Bailian per-client 10-minute rate windows
  and length distributions; dict-like fields parsed with ``ast.literal_eval``, never
  ``eval``), :func:`load_azure_llm` (Azure LLM 2023) and :func:`load_mooncake`
  (Mooncake FAST'25) — the last two give :class:`LengthTrace` (arrivals + token lengths);
* :func:`synthetic_market`: a market with a long-tailed popularity, a diurnal cycle
  and bursty (Gamma renewal) arrivals, calibrated to those traces (see
  ``docs/serving.md`` §Calibration).

Units: seconds (arrival times start at 0 at the first request of a trace), tokens.
Bad input raises :class:`~clustersim.errors.TraceError` naming ``file:line:field``.
"""

from __future__ import annotations

import ast
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from clustersim.errors import ConfigError, TraceError
from clustersim.serving.models import ModelSpec, get_model

__all__ = [
    "AEGAEON_SIZE_MIX",
    "Calibration",
    "GenAIRequestLog",
    "LengthTrace",
    "Market",
    "MarketModel",
    "Requests",
    "ServeGenClient",
    "calibrated_market",
    "diurnal_profile",
    "fit_zipf_tail",
    "genai_popularity",
    "load_azure_llm",
    "load_genai_load_latencies",
    "load_genai_requests",
    "load_mooncake",
    "load_servegen_clients",
    "load_servegen_lengths",
    "lorenz_shares",
    "servegen_arrivals",
    "synthetic_market",
    "zipf_shares",
]


# ----------------------------------------------------------------------------------------
# data model
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MarketModel:
    """A model offered on the market: its market name and its architecture."""

    name: str
    spec: ModelSpec


@dataclass(frozen=True)
class Requests:
    """Request stream as parallel arrays sorted by arrival.

    Attributes:
        arrival: arrival times, seconds, non-decreasing, >= 0.
        model: market-model index of each request.
        input_tokens: prompt tokens (>= 1).
        output_tokens: generated tokens (>= 1, includes the first token).
    """

    arrival: np.ndarray
    model: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.arrival)
        for name in ("model", "input_tokens", "output_tokens"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"Requests.{name} has {len(getattr(self, name))} rows, not {n}")
        if n:
            a = self.arrival
            if np.any(a[1:] < a[:-1]):
                raise ConfigError("Requests.arrival must be sorted (use Requests.build)")
            # sorted and a[0] >= 0: the sum is finite exactly when every value is
            if not a[0] >= 0 or not math.isfinite(float(a.sum())):
                raise ConfigError("Requests.arrival must be finite and >= 0")
            if self.input_tokens.min() < 1 or self.output_tokens.min() < 1:
                raise ConfigError("Requests need input_tokens >= 1 and output_tokens >= 1")

    def __len__(self) -> int:
        return len(self.arrival)

    @classmethod
    def build(
        cls,
        arrival: np.ndarray | Sequence[float],
        model: np.ndarray | Sequence[int],
        input_tokens: np.ndarray | Sequence[int],
        output_tokens: np.ndarray | Sequence[int],
    ) -> Requests:
        """Sort by (arrival, model) stably and coerce dtypes (float64 / int32)."""
        a = np.asarray(arrival, dtype=np.float64)
        m = np.asarray(model, dtype=np.int32)
        order = np.lexsort((m, a))
        return cls(
            a[order],
            m[order],
            np.maximum(np.asarray(input_tokens, dtype=np.int32)[order], 1),
            np.maximum(np.asarray(output_tokens, dtype=np.int32)[order], 1),
        )


@dataclass(frozen=True)
class Market:
    """Models on offer and the requests they receive.

    Attributes:
        models: market models; ``Requests.model`` indexes this tuple.
        requests: the request stream.
        duration: span of the arrival process in seconds (>= last arrival).
        source: human-readable provenance.
    """

    models: tuple[MarketModel, ...]
    requests: Requests
    duration: float
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.requests) and int(self.requests.model.max()) >= len(self.models):
            raise ConfigError("Market: a request names a model index outside Market.models")

    def request_counts(self) -> np.ndarray:
        """Requests per market model."""
        return np.bincount(self.requests.model, minlength=len(self.models))

    def window_rates(self, window: float = 600.0) -> np.ndarray:
        """Arrival rate (req/s) per model per window: shape ``(models, windows)``."""
        nw = max(1, math.ceil(self.duration / window))
        nm = len(self.models)
        a, m = self.requests.arrival, self.requests.model
        # arrivals are sorted: window w holds [w * window, (w + 1) * window), the last one
        # everything after; one bincount per window, no request-sized temporaries
        edges = np.concatenate(
            ([0], np.searchsorted(a, np.arange(1, nw) * window, side="left"), [len(a)])
        ).tolist()
        counts = np.zeros((nm, nw))
        for w in range(nw):
            if edges[w + 1] > edges[w]:
                counts[:, w] = np.bincount(m[edges[w] : edges[w + 1]], minlength=nm)
        out: np.ndarray = counts / window
        return out

    def slice_time(self, start: float, end: float) -> Market:
        """Requests arriving in ``[start, end)``, re-based to start at 0."""
        r = self.requests
        sel = (r.arrival >= start) & (r.arrival < end)
        return Market(
            self.models,
            Requests(
                r.arrival[sel] - start, r.model[sel], r.input_tokens[sel], r.output_tokens[sel]
            ),
            end - start,
            f"{self.source}[{start:g},{end:g})",
        )


MAX_TOKENS = 2**31 - 1
"""Largest token count a trace row may hold (token arrays are int32, as in :class:`Requests`)."""


def _bad_tokens(v: int) -> str:
    return "negative token count" if v < 0 else f"token count {v} exceeds {MAX_TOKENS}"


@dataclass(frozen=True)
class LengthTrace:
    """Arrivals and token lengths (int32) of an LLM request trace (one model)."""

    arrival: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.arrival)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (input, output) pairs jointly, with replacement."""
        idx = rng.integers(0, len(self.arrival), size=n)
        return self.input_tokens[idx], self.output_tokens[idx]


# ----------------------------------------------------------------------------------------
# GenAI Stable-Diffusion trace (Alibaba cluster-trace-v2026-GenAI)
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenAIRequestLog:
    """``lora_request_trace.csv``: one row per image-generation request.

    Attributes:
        time: request creation, seconds from the first request.
        model: index into ``model_ids`` (base model of the request).
        model_ids: anonymised base-model ids (``checkpoint_model_version_id``).
        exec_time: execution seconds (NaN when empty).
        succeeded: ``predict_status == SUCCEED``.
        steps: diffusion steps (NaN when empty). images: images per prompt (NaN if empty).
        skipped: rows without a model id (request parameters all empty), not loaded.
    """

    time: np.ndarray
    model: np.ndarray
    model_ids: tuple[str, ...]
    exec_time: np.ndarray
    succeeded: np.ndarray
    steps: np.ndarray
    images: np.ndarray
    skipped: int = 0

    def counts(self) -> np.ndarray:
        """Requests per base model (index order of ``model_ids``)."""
        return np.bincount(self.model, minlength=len(self.model_ids))


def _float_or_nan(text: str, path: str, line: int, field: str) -> float:
    if text == "" or text.upper() in ("NULL", "NONE", "NAN"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise TraceError(
            path, line, field, f"'{text}' is not a number", "fix or blank the cell"
        ) from None


def _open_csv(path: Path, required: Sequence[str]) -> tuple[csv.DictReader[str], TextIO]:
    if not path.exists():
        raise TraceError(str(path), None, None, "file not found", "check the trace folder")
    fh = path.open(newline="", encoding="utf-8")
    reader = csv.DictReader(fh)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        fh.close()
        raise TraceError(
            str(path),
            1,
            missing[0],
            "required column missing",
            f"header must contain {', '.join(required)}",
        )
    return reader, fh


def load_genai_requests(path: str | Path) -> GenAIRequestLog:
    """Read ``lora_request_trace.csv`` of the GenAI trace (GenTD26, SoCC'25).

    Every row with a base-model id is kept (failed requests too: they were real
    demand); rows without one (25 ``PENDING`` rows whose parameters are all empty) are
    skipped and counted in ``skipped``.
    """
    p = Path(path)
    cols = ("gmt_create", "predict_status", "exec_time_seconds", "checkpoint_model_version_id")
    reader, fh = _open_csv(p, cols)
    times: list[float] = []
    mids: list[str] = []
    ex: list[float] = []
    ok: list[bool] = []
    steps: list[float] = []
    imgs: list[float] = []
    skipped = 0
    try:
        for ln, row in enumerate(reader, start=2):
            ts = row["gmt_create"]
            try:
                times.append(datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").timestamp())
            except ValueError:
                raise TraceError(
                    str(p), ln, "gmt_create", f"'{ts}' is not 'YYYY-MM-DD HH:MM:SS'", ""
                ) from None
            mid = row["checkpoint_model_version_id"]
            if not mid:  # 25 PENDING rows carry no request parameters at all
                skipped += 1
                times.pop()
                continue
            mids.append(mid)
            ex.append(_float_or_nan(row["exec_time_seconds"], str(p), ln, "exec_time_seconds"))
            ok.append(row["predict_status"] == "SUCCEED")
            steps.append(_float_or_nan(row.get("num_inference_steps", ""), str(p), ln, "steps"))
            imgs.append(_float_or_nan(row.get("num_images_per_prompt", ""), str(p), ln, "images"))
    finally:
        fh.close()
    if not times:
        raise TraceError(str(p), None, None, "no requests", "")
    t = np.asarray(times)
    ids = tuple(sorted(set(mids)))
    index = {m: i for i, m in enumerate(ids)}
    order = np.argsort(t, kind="stable")
    return GenAIRequestLog(
        time=(t - t.min())[order],
        model=np.array([index[m] for m in mids], dtype=np.int32)[order],
        model_ids=ids,
        exec_time=np.asarray(ex)[order],
        succeeded=np.asarray(ok)[order],
        steps=np.asarray(steps)[order],
        images=np.asarray(imgs)[order],
        skipped=skipped,
    )


def load_genai_load_latencies(path: str | Path) -> np.ndarray:
    """Measured load latencies in **seconds** from a GenAI ``*_update_latency_anon.csv``.

    (``basemodel_update_latency_anon.csv`` = base-model loads, the cold-start path;
    ``lora_update_latency_anon.csv`` = LoRA adapter loads.) Values are milliseconds in
    the file.
    """
    p = Path(path)
    reader, fh = _open_csv(p, ("timestamp_anon", "value"))
    out: list[float] = []
    try:
        for ln, row in enumerate(reader, start=2):
            v = _float_or_nan(row["value"], str(p), ln, "value")
            if not v >= 0:
                raise TraceError(str(p), ln, "value", f"latency must be >= 0 ms, got {v}")
            out.append(v / 1000.0)
    finally:
        fh.close()
    return np.asarray(out)


def genai_popularity(log: GenAIRequestLog) -> np.ndarray:
    """Request shares of the base models, sorted from most to least requested (sum 1)."""
    c = np.sort(log.counts())[::-1].astype(np.float64)
    out: np.ndarray = c / c.sum()
    return out


def lorenz_shares(shares: np.ndarray, n: int) -> np.ndarray:
    """Resample a popularity curve to ``n`` models through its Lorenz curve.

    ``shares`` (descending) define ``L(x)``, the request share of the top fraction ``x``
    of models (piecewise linear). Model ``r`` (``r = 1..n``) of the new market gets
    ``L(r/n) - L((r-1)/n)``; for ``n == len(shares)`` this returns ``shares``.
    """
    s = np.sort(np.asarray(shares, dtype=np.float64))[::-1]
    s = s / s.sum()
    x = np.concatenate([[0.0], np.arange(1, len(s) + 1) / len(s)])
    y = np.concatenate([[0.0], np.cumsum(s)])
    q = np.interp(np.arange(0, n + 1) / n, x, y)
    out: np.ndarray = np.diff(q)
    out = out / out.sum()
    return out


def zipf_shares(n: int, s: float) -> np.ndarray:
    """Zipf popularity: share of rank ``r`` proportional to ``r**-s`` (descending, sum 1)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** (-float(s))
    out: np.ndarray = w / w.sum()
    return out


# ----------------------------------------------------------------------------------------
# ServeGen (Alibaba Bailian)
# ----------------------------------------------------------------------------------------
_PATTERNS = {"": 0, "Gamma": 1, "Weibull": 2}


@dataclass(frozen=True)
class ServeGenClient:
    """One ServeGen client's rate windows (``chunk-<id>-trace.csv``).

    Attributes:
        client_id: the ``<id>`` of the file name.
        start: window start times (s). rate: mean arrival rate (req/s) in the window.
        cv: coefficient of variation of inter-arrival times.
        pattern: 0 = no traffic, 1 = Gamma, 2 = Weibull inter-arrivals.
        arg1, arg2: distribution (shape, scale) of inter-arrival seconds.
        window: window length in seconds.
    """

    client_id: int
    start: np.ndarray
    rate: np.ndarray
    cv: np.ndarray
    pattern: np.ndarray
    arg1: np.ndarray
    arg2: np.ndarray
    window: float


def load_servegen_clients(directory: str | Path) -> list[ServeGenClient]:
    """Read every ``chunk-*-trace.csv`` (header-less ``timestamp,rate,cv,pattern,a1,a2``).

    Clients are returned sorted by id (deterministic order for arrival generation).
    """
    d = Path(directory)
    files = sorted(d.glob("chunk-*-trace.csv"), key=lambda f: int(f.name.split("-")[1]))
    if not files:
        raise TraceError(str(d), None, None, "no chunk-*-trace.csv files", "point at a model dir")
    out: list[ServeGenClient] = []
    for f in files:
        cid = int(f.name.split("-")[1])
        arr = _fast_servegen(f)
        if arr is None:  # something is off: the line-by-line reader names the line
            arr = _slow_servegen(f)
        start = arr[:, 0].copy()
        window = float(np.median(np.diff(start))) if len(start) > 1 else 600.0
        out.append(
            ServeGenClient(
                cid,
                start,
                arr[:, 1].copy(),
                arr[:, 2].copy(),
                arr[:, 3].astype(np.int8),
                arr[:, 4].copy(),
                arr[:, 5].copy(),
                window,
            )
        )
    return out


def _fast_servegen(f: Path) -> np.ndarray | None:
    """Parse a clean ServeGen trace file in C (``np.loadtxt``); ``None`` if anything is odd."""
    text = f.read_text(encoding="utf-8")
    text = text.replace(",Gamma,", ",1,").replace(",Weibull,", ",2,").replace(",,", ",0,")
    try:
        arr = np.loadtxt(text.splitlines(), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError:
        return None
    if arr.shape[1] != 6 or np.any(arr[:, 1] < 0) or not np.all(np.isin(arr[:, 3], (0, 1, 2))):
        return None
    return arr


def _slow_servegen(f: Path) -> np.ndarray:
    rows: list[list[float]] = []
    with f.open(encoding="utf-8") as fh:
        for ln, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split(",")
            if len(parts) != 6:
                raise TraceError(
                    str(f),
                    ln,
                    None,
                    f"expected 6 comma-separated fields, got {len(parts)}",
                    "timestamp,rate,cv,pattern,arg1,arg2",
                )
            if parts[3] not in _PATTERNS:
                raise TraceError(
                    str(f),
                    ln,
                    "pattern",
                    f"unknown arrival pattern '{parts[3]}'",
                    "expected Gamma, Weibull or empty",
                )
            try:
                vals = [float(x) for i, x in enumerate(parts) if i != 3]
            except ValueError:
                raise TraceError(str(f), ln, None, "non-numeric field", "") from None
            if vals[1] < 0:
                raise TraceError(str(f), ln, "rate", "negative rate")
            rows.append([vals[0], vals[1], vals[2], float(_PATTERNS[parts[3]]), vals[3], vals[4]])
    if not rows:
        raise TraceError(str(f), None, None, "empty trace file")
    return np.asarray(rows, dtype=np.float64)


def servegen_arrivals(
    clients: Sequence[ServeGenClient],
    rng: np.random.Generator,
    *,
    start: float = 0.0,
    end: float | None = None,
    rate_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate arrival times from ServeGen windows; returns ``(times, client_index)``.

    Rule per client window ``[ts, ts + window)`` with a pattern: a renewal process whose
    inter-arrival gaps follow the window's distribution — Gamma(shape=arg1, scale=arg2)
    or Weibull(shape=arg1, scale=arg2) — with the scale divided by ``rate_scale``
    (rate multiplied, burstiness ``cv`` kept). The first arrival falls a uniform fraction
    of one gap after ``ts``. Windows outside ``[start, end)`` are skipped and times are
    returned relative to ``start``, sorted (ties: client order). Clients are visited in
    the given order and windows in time order, and gaps are drawn in chunks of the
    window's expected count plus a margin of three standard deviations (more chunks
    until the window is covered), so a seeded ``rng`` gives identical output.

    Speed: when every client uses the same window length on one grid (the ServeGen
    files do), arrivals are merged window slot by window slot (a small stable sort per
    10-minute slot instead of one global sort); the result is the same as a global
    stable sort.
    """
    if rate_scale <= 0:
        raise ConfigError(f"rate_scale must be > 0, got {rate_scale}")
    # per window start: [(arrivals relative to start, client index)] in client order
    slots: dict[float, list[tuple[np.ndarray, int]]] = {}
    windows = {c.window for c in clients}
    for ci, c in enumerate(clients):
        w = c.window
        k0 = int(np.searchsorted(c.start, start - w, side="right"))
        k1 = len(c.start) if end is None else int(np.searchsorted(c.start, end, side="left"))
        starts = c.start[k0:k1].tolist()
        rates = c.rate[k0:k1].tolist()
        cvs = c.cv[k0:k1].tolist()
        pats = c.pattern[k0:k1].tolist()
        a1s = c.arg1[k0:k1].tolist()
        a2s = c.arg2[k0:k1].tolist()
        for ts, rate, cv, pat, shape, sc in zip(starts, rates, cvs, pats, a1s, a2s, strict=True):
            if ts + w <= start or pat == 0 or rate <= 0:
                continue
            scale = sc / rate_scale
            lo = max(ts, start)
            hi = ts + w if end is None else min(ts + w, end)
            spread = 3.0 * (cv if cv > 1.0 else 1.0)
            got: list[np.ndarray] = []
            t = ts
            first = True
            while t < hi:
                mean_n = (hi - t) * rate * rate_scale
                need = int(mean_n + spread * math.sqrt(mean_n)) + 16
                g = (
                    rng.gamma(shape, scale, size=need)
                    if pat == 1
                    else (rng.weibull(shape, size=need) * scale)
                )
                if first:
                    g[0] *= rng.random()
                    first = False
                a = t + np.cumsum(g)
                got.append(a)
                t = float(a[-1])
            a = got[0] if len(got) == 1 else np.concatenate(got)
            # a is non-decreasing: keep [lo, hi) by binary search
            i0 = int(np.searchsorted(a, lo, side="left"))
            i1 = int(np.searchsorted(a, hi, side="left"))
            if i1 > i0:
                slots.setdefault(ts, []).append((a[i0:i1] - start, ci))
    if not slots:
        return np.zeros(0), np.zeros(0, dtype=np.int32)
    keys = sorted(slots)
    w0 = next(iter(windows))
    aligned = len(windows) == 1 and all(keys[q + 1] - keys[q] >= w0 for q in range(len(keys) - 1))
    if not aligned:  # windows overlap across clients: one global stable sort
        parts = [x for k in keys for x in slots[k]]
        parts.sort(key=lambda x: x[1])  # client order (stable: windows in time order)
        t_all = np.concatenate([x[0] for x in parts])
        o_all = np.concatenate([np.full(len(x[0]), x[1], dtype=np.int32) for x in parts])
        order = np.argsort(t_all, kind="stable")
        return t_all[order], o_all[order]
    total = sum(len(x[0]) for k in keys for x in slots[k])
    t_out = np.empty(total)
    o_out = np.empty(total, dtype=np.int32)
    pos = 0
    for k in keys:
        parts = slots.pop(k)
        m = sum(len(x[0]) for x in parts)
        if len(parts) == 1:
            t_out[pos : pos + m] = parts[0][0]
            o_out[pos : pos + m] = parts[0][1]
        else:
            ts_k = np.concatenate([x[0] for x in parts])
            ow_k = np.repeat(
                np.array([x[1] for x in parts], dtype=np.int32), [len(x[0]) for x in parts]
            )
            order = np.argsort(ts_k, kind="stable")
            t_out[pos : pos + m] = ts_k[order]
            o_out[pos : pos + m] = ow_k[order]
        pos += m
    return t_out, o_out


def load_servegen_lengths(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Input/output token distributions from ServeGen ``chunk-*-dataset.json`` files.

    Each file maps a window start to fields whose values are dict literals
    ``{tokens: probability}`` (parsed with :func:`ast.literal_eval`). Returns the pooled
    probability mass over ``(input_pmf, output_pmf)`` as arrays indexed by token count
    (mixing windows and clients with equal weight). Language models of the public copy
    ship without these files (see its ``MISSING_FILES.txt``): the reader then raises
    :class:`TraceError` and callers fall back to Azure/Mooncake lengths.
    """
    d = Path(directory)
    files = sorted(d.glob("chunk-*-dataset.json"), key=lambda f: int(f.name.split("-")[1]))
    if not files:
        raise TraceError(
            str(d),
            None,
            None,
            "no chunk-*-dataset.json files",
            "this ServeGen class has no length data; use Azure or Mooncake lengths",
        )
    acc: dict[str, dict[int, float]] = {"in": {}, "out": {}}
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TraceError(str(f), e.lineno, None, f"invalid JSON: {e.msg}") from None
        for window, fields in data.items():
            for key, tgt in (
                ("input_tokens", "in"),
                ("text_tokens", "in"),
                ("output_tokens", "out"),
            ):
                if key not in fields:
                    continue
                try:
                    pmf = ast.literal_eval(fields[key])
                except (ValueError, SyntaxError):
                    raise TraceError(
                        str(f), None, f"{window}.{key}", "not a dict literal", ""
                    ) from None
                if not isinstance(pmf, dict):
                    raise TraceError(str(f), None, f"{window}.{key}", "not a dict literal", "")
                for tok, pr in pmf.items():
                    ti = int(tok)
                    acc[tgt][ti] = acc[tgt].get(ti, 0.0) + float(pr)

    def dense(m: dict[int, float]) -> np.ndarray:
        if not m:
            raise TraceError(str(d), None, None, "no token-length fields found", "")
        arr = np.zeros(max(m) + 1)
        for k, v in m.items():
            arr[k] += v
        arr[0] = 0.0
        res: np.ndarray = arr / arr.sum()
        return res

    return dense(acc["in"]), dense(acc["out"])


# ----------------------------------------------------------------------------------------
# Azure LLM 2023 and Mooncake
# ----------------------------------------------------------------------------------------
def load_azure_llm(path: str | Path) -> LengthTrace:
    """Read ``AzureLLMInferenceTrace_{code,conv}.csv`` (Splitwise, ISCA'24)."""
    p = Path(path)
    reader, fh = _open_csv(p, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
    t: list[float] = []
    i: list[int] = []
    o: list[int] = []
    try:
        for ln, row in enumerate(reader, start=2):
            ts = row["TIMESTAMP"]
            head, _, frac = ts.partition(".")
            try:
                base = datetime.strptime(head, "%Y-%m-%d %H:%M:%S").timestamp()
                t.append(base + (float("0." + frac) if frac else 0.0))
            except ValueError:
                raise TraceError(str(p), ln, "TIMESTAMP", f"bad timestamp '{ts}'") from None
            for name, dst in (("ContextTokens", i), ("GeneratedTokens", o)):
                try:
                    v = int(row[name])
                except ValueError:
                    raise TraceError(str(p), ln, name, f"'{row[name]}' is not an integer") from None
                if not 0 <= v <= MAX_TOKENS:
                    raise TraceError(str(p), ln, name, _bad_tokens(v))
                dst.append(v)
    finally:
        fh.close()
    a = np.asarray(t)
    order = np.argsort(a, kind="stable")
    return LengthTrace(
        (a - a.min())[order],
        np.maximum(np.asarray(i, dtype=np.int32)[order], 1),
        np.maximum(np.asarray(o, dtype=np.int32)[order], 1),
        p.name,
    )


def load_mooncake(path: str | Path) -> LengthTrace:
    """Read a Mooncake JSONL trace (``timestamp`` ms, ``input_length``, ``output_length``)."""
    p = Path(path)
    if not p.exists():
        raise TraceError(str(p), None, None, "file not found", "check the trace folder")
    t: list[float] = []
    i: list[int] = []
    o: list[int] = []
    with p.open(encoding="utf-8") as fh:
        for ln, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceError(str(p), ln, None, f"invalid JSON: {e.msg}") from None
            for k in ("timestamp", "input_length", "output_length"):
                if k not in d:
                    raise TraceError(str(p), ln, k, "missing field")
            t.append(float(d["timestamp"]) / 1000.0)
            for k, dst in (("input_length", i), ("output_length", o)):
                v = int(d[k])
                if not 0 <= v <= MAX_TOKENS:
                    raise TraceError(str(p), ln, k, _bad_tokens(v))
                dst.append(v)
    a = np.asarray(t)
    order = np.argsort(a, kind="stable")
    return LengthTrace(
        (a - a.min())[order],
        np.maximum(np.asarray(i, dtype=np.int32)[order], 1),
        np.maximum(np.asarray(o, dtype=np.int32)[order], 1),
        p.name,
    )


# ----------------------------------------------------------------------------------------
# synthetic market
# ----------------------------------------------------------------------------------------
AEGAEON_SIZE_MIX: tuple[str, ...] = (
    "Qwen1.5-1.8B",
    "Qwen2.5-7B",
    "Qwen2.5-14B",
    "Qwen2.5-32B",
    "Qwen2.5-72B",
)
"""Architectures spanning Aegaeon's beta market ("tens of models, 1.8B-72B") [S]."""


def diurnal_profile(clients: Sequence[ServeGenClient], bins: int = 144) -> np.ndarray:
    """Mean aggregate rate by time of day from ServeGen windows, normalised to mean 1.

    The aggregate rate of all clients per window is folded onto a 24-hour clock
    (``bins`` slots) and averaged over days.
    """
    if not clients:
        raise ConfigError("diurnal_profile needs at least one client")
    day = 86400.0
    acc = np.zeros(bins)
    cnt = np.zeros(bins)
    for c in clients:
        slot = ((c.start % day) / day * bins).astype(np.int64) % bins
        np.add.at(acc, slot, c.rate)
    starts = np.unique(np.concatenate([c.start for c in clients]))
    slots = ((starts % day) / day * bins).astype(np.int64) % bins
    np.add.at(cnt, slots, 1.0)
    prof = np.where(cnt > 0, acc / np.maximum(cnt, 1.0), 0.0)
    if prof.mean() <= 0:
        raise ConfigError("ServeGen clients carry no traffic")
    out: np.ndarray = prof / prof.mean()
    return out


def synthetic_market(
    n_models: int,
    duration: float,
    total_rate: float,
    rng: np.random.Generator,
    *,
    shares: np.ndarray | None = None,
    zipf_s: float = 1.0,
    specs: Sequence[str | ModelSpec] = AEGAEON_SIZE_MIX,
    lengths: LengthTrace | None = None,
    profile: np.ndarray | None = None,
    cv: float | np.ndarray = 1.0,
    t0: float = 0.0,
) -> Market:
    """A market of ``n_models`` models with long-tailed popularity, a daily cycle and bursts.

    Rule (every draw from ``rng``, in this order, so a seed fixes the market):

    1. popularity: ``shares`` (descending, resampled to ``n_models`` with
       :func:`lorenz_shares`) or Zipf(``zipf_s``); model ``r`` gets ``total_rate*share_r``;
    2. architecture of each model: uniform draw from ``specs``;
    3. arrivals of model ``r``: a Gamma renewal process with coefficient of variation
       ``cv`` (scalar or per model; cv = 1 is Poisson) whose rate is modulated by
       ``profile`` — a daily curve of multipliers with mean 1 sampled at equal slots
       (time-rescaling: gaps are drawn in "operational time" and mapped back through the
       cumulative profile), starting at clock time ``t0``;
    4. lengths: ``(input, output)`` pairs drawn jointly from ``lengths`` (default: 1,000
       prompt and 200 output tokens, about Azure conversation's means, if ``None``).
    """
    if n_models < 1 or duration <= 0 or total_rate <= 0:
        raise ConfigError("synthetic_market needs n_models >= 1, duration > 0, total_rate > 0")
    sh = zipf_shares(n_models, zipf_s) if shares is None else lorenz_shares(shares, n_models)
    resolved = [s if isinstance(s, ModelSpec) else get_model(s) for s in specs]
    if not resolved:
        raise ConfigError("synthetic_market needs at least one architecture in specs")
    pick = rng.integers(0, len(resolved), size=n_models)
    models = tuple(MarketModel(f"m{r:03d}", resolved[int(pick[r])]) for r in range(n_models))
    cvs = np.broadcast_to(np.asarray(cv, dtype=np.float64), (n_models,))
    if np.any(cvs <= 0):
        raise ConfigError("cv must be > 0")
    # cumulative operational time Lambda(t) = integral of the profile multiplier
    day = 86400.0
    prof = np.ones(1) if profile is None else np.asarray(profile, dtype=np.float64)
    if np.any(prof < 0) or prof.mean() <= 0:
        raise ConfigError("profile multipliers must be >= 0 with a positive mean")
    prof = prof / prof.mean()
    slot = day / len(prof)
    n_slots = math.ceil((t0 + duration) / slot) + 1
    mult = np.resize(prof, n_slots)
    grid = np.arange(n_slots + 1) * slot
    cum = np.concatenate([[0.0], np.cumsum(mult * slot)])
    op_lo = float(np.interp(t0, grid, cum))
    op_hi = float(np.interp(t0 + duration, grid, cum))
    times: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    for r in range(n_models):
        lam = total_rate * sh[r]
        if lam <= 0:
            continue
        k = 1.0 / cvs[r] ** 2  # Gamma shape for the requested cv
        scale = 1.0 / (lam * k)
        span = op_hi - op_lo
        need = int(span * lam * 1.2) + 32
        got: list[np.ndarray] = []
        t = op_lo
        first = True
        while t < op_hi:
            g = rng.gamma(k, scale, size=need)
            if first:
                g[0] *= rng.random()
                first = False
            a = t + np.cumsum(g)
            got.append(a)
            t = float(a[-1])
        op = np.concatenate(got)
        op = op[op < op_hi]
        real = np.interp(op, cum, grid) - t0
        times.append(real)
        owner.append(np.full(len(real), r, dtype=np.int32))
    t_all = np.concatenate(times) if times else np.zeros(0)
    m_all = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int32)
    order = np.argsort(t_all, kind="stable")
    t_all, m_all = np.maximum(t_all[order], 0.0), m_all[order]
    if lengths is None:
        inp = np.full(len(t_all), 1000, dtype=np.int32)
        out = np.full(len(t_all), 200, dtype=np.int32)
    else:
        inp, out = lengths.sample(len(t_all), rng)
    src = "synthetic(" + ("trace-shaped" if shares is not None else f"zipf s={zipf_s:g}") + ")"
    return Market(models, Requests.build(t_all, m_all, inp, out), duration, src)


def fit_zipf_tail(n_models: int, tail_fraction: float, tail_request_share: float) -> float:
    """Zipf exponent ``s`` whose least-requested ``tail_fraction`` of ``n_models`` models
    get ``tail_request_share`` of the requests (bisection; literature §1.3's fit)."""
    if not (0 < tail_fraction < 1 and 0 < tail_request_share < 1 and n_models >= 2):
        raise ConfigError("fit_zipf_tail needs 0 < fractions < 1 and n_models >= 2")
    k = round(tail_fraction * n_models)
    lo, hi = 0.0, 20.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        tail = zipf_shares(n_models, mid)[::-1][:k].sum()
        if tail > tail_request_share:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Calibration:
    """Where a calibrated market's numbers came from (JSON-ready via ``asdict``)."""

    popularity: str
    zipf_s: float | None
    total_rate: float
    rate_source: str
    cv_source: str
    cv_median: float
    profile_source: str
    lengths_source: str
    window_start_s: float
    duration_s: float


def calibrated_market(
    traces: str | Path,
    n_models: int,
    duration: float,
    rng: np.random.Generator,
    *,
    shape: str = "genai",
    total_rate: float | None = None,
    servegen_class: str = "m-large",
    specs: Sequence[str | ModelSpec] = AEGAEON_SIZE_MIX,
    at_peak: bool = True,
    tail: tuple[float, float] = (0.941, 0.0135),
) -> tuple[Market, Calibration]:
    """A market built from the public traces (the calibration ``docs/serving.md`` describes).

    * popularity: ``shape="genai"`` — per-model request shares of the GenAI trace's base
      models, resampled to ``n_models`` (:func:`lorenz_shares`); ``shape="paper"`` —
      Zipf fitted to Aegaeon's two-point statistic ``tail`` (94.1 % of models get 1.35 %
      of requests; :func:`fit_zipf_tail`);
    * total rate: ``total_rate`` or the mean aggregate rate of ServeGen
      ``servegen_class`` (all its clients' windows);
    * daily cycle: :func:`diurnal_profile` of that class; the window starts at the
      profile's peak slot if ``at_peak`` (else at midnight);
    * burstiness: each model's Gamma cv is drawn from the ServeGen windows' cv values
      weighted by their rates;
    * lengths: Azure LLM 2023 conversation trace; architectures: uniform over ``specs``.
    """
    base = Path(traces)
    sg = base / "alibaba-servegen-2025" / "data" / "language" / servegen_class
    clients = load_servegen_clients(sg)
    agg = np.sum([c.rate for c in clients], axis=0)
    rate = float(agg.mean()) if total_rate is None else float(total_rate)
    prof = diurnal_profile(clients)
    cvs = np.concatenate([c.cv[c.pattern > 0] for c in clients])
    w = np.concatenate([c.rate[c.pattern > 0] for c in clients])
    order = np.argsort(cvs, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    cv_med = float(cvs[order][np.searchsorted(cum, 0.5)])
    model_cv = cvs[order][np.minimum(np.searchsorted(cum, rng.random(n_models)), len(cvs) - 1)]
    model_cv = np.clip(model_cv, 0.2, 10.0)
    if shape == "genai":
        shares = genai_popularity(
            load_genai_requests(base / "alibaba-genai-2026-sd" / "lora_request_trace.csv")
        )
        zs = None
    elif shape == "paper":
        zs = fit_zipf_tail(n_models, *tail)
        shares = None
    else:
        raise ConfigError(f"calibrated_market: shape must be 'genai' or 'paper', not {shape!r}")
    lengths = load_azure_llm(base / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv")
    slot = 86400.0 / len(prof)
    t0 = float(np.argmax(prof)) * slot if at_peak else 0.0
    if at_peak and duration < 86400.0:  # centre the window on the peak slot
        t0 = max(0.0, t0 + slot / 2 - duration / 2)
    mk = synthetic_market(
        n_models,
        duration,
        rate,
        rng,
        shares=shares,
        zipf_s=zs if zs is not None else 1.0,
        specs=specs,
        lengths=lengths,
        profile=prof,
        cv=model_cv,
        t0=t0,
    )
    cal = Calibration(
        popularity=(
            "GenAI SD trace per-model shares (86 base models)"
            if shape == "genai"
            else f"Zipf fitted to {tail[0]:.1%} of models -> {tail[1]:.2%} of requests"
        ),
        zipf_s=zs,
        total_rate=rate,
        rate_source=(
            f"ServeGen {servegen_class} mean aggregate rate" if total_rate is None else "given"
        ),
        cv_source=f"ServeGen {servegen_class} window cv, rate-weighted draws",
        cv_median=cv_med,
        profile_source=f"ServeGen {servegen_class} daily profile (10-min slots)",
        lengths_source="Azure LLM 2023 conversation (joint prompt/output pairs)",
        window_start_s=t0,
        duration_s=duration,
    )
    return mk, cal
