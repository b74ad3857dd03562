"""Per-model daily traffic from real ServeGen client days (the "temporal" market).

This module owns the market in which **every model has its own temporal pattern**, taken
from the ServeGen per-client 10-minute rate windows of one Bailian model class, and the
window bookkeeping the pooling experiment needs:

* :class:`TemporalMarket` — models, popularity, the per-model per-window rate matrix
  (``rates``, req/s, shape ``(models, 144)`` for a day of 10-minute windows), which client
  days each model is made of, and deterministic on-demand request generation
  (:meth:`TemporalMarket.span`, :meth:`TemporalMarket.peak_stack`);
* :func:`temporal_market` — the construction rule (below) from the shared traces;
* :func:`assign_client_days` — the client-day assignment rule on plain arrays
  (hand-checkable);
* :func:`window_work` / :func:`busiest_windows` — estimated device-seconds per window
  and the K busiest aggregate windows;
* :func:`scored_attainment` — SLO attainment of the requests arriving after a warm-up;
* :func:`repair_dedicated` — grows a per-model peak sizing until given windows pass.

**Rule** (every draw from the one ``rng``, in this order):

1. popularity ``shares`` as in :func:`~clustersim.serving.workload.calibrated_market`
   (GenAI per-model shares resampled with ``lorenz_shares``, or Aegaeon's Zipf); model
   ``m`` has daily mean rate ``lambda_m = share_m * total_rate``;
2. ``rng.random(n_models)`` (the cv draw of ``calibrated_market``, unused here, so that)
   step 3 gives the same architectures as the shared-profile market of the same seed;
3. architectures: ``rng.integers(0, len(specs), n_models)``;
4. client days: the pool is every (client, day) of the class whose 24-hour mean rate is
   > 0 (a day = 144 windows from midnight of the trace clock; m-large: 1,396 client days
   from 162 clients x 14 days), in ``rng.permutation`` order. Models are visited from most
   to least popular; each takes client days from the front of the queue until their
   natural daily mean rates sum to at least ``lambda_m`` (at least one). *A model's
   traffic is the sum of its customers' traffic*: popular models aggregate many client
   days, tail models one. The model's rate multiplier ``scale_m = lambda_m / sum``
   makes its daily mean exactly ``lambda_m``;
5. one integer ``base = rng.integers(2**63)``: the arrivals and lengths of model ``m`` in
   window ``w`` come from ``default_rng([base, m, w])``, so any subset of windows is
   generated identically whatever else is generated.

Arrivals of model ``m`` in window ``w`` (start ``w * 600`` s): the superposition of its
client days' renewal processes in that window, visited in assignment order. A client
window with rate ``r > 0`` and coefficient of variation ``cv`` (clipped to [0.2, 10]) is a
stationary renewal process of rate ``scale_m * r`` with Gamma gaps (shape ``1/cv**2``):
the first arrival is a uniform fraction of a length-biased gap (Gamma shape ``1/cv**2 +
1``), so the expected count is exactly ``rate * 600``. (ServeGen's Gamma parameters match
the window's rate and cv; its Weibull fits do not reproduce them — mean gap x rate 0.83–2.5
— so the window's measured rate and cv are used for every pattern.) Lengths: ``(input,
output)`` pairs drawn jointly from ``lengths`` with the same generator, after the arrivals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clustersim.errors import ConfigError
from clustersim.hardware import DeviceSpec
from clustersim.serving.models import ModelSpec, get_model
from clustersim.serving.perf import PerfParams, model_cost
from clustersim.serving.simulator import SLO, ServingResult
from clustersim.serving.workload import (
    AEGAEON_SIZE_MIX,
    LengthTrace,
    Market,
    MarketModel,
    Requests,
    ServeGenClient,
    fit_zipf_tail,
    genai_popularity,
    load_azure_llm,
    load_genai_requests,
    load_servegen_clients,
    lorenz_shares,
    zipf_shares,
)

__all__ = [
    "COLD_TAIL_MODEL_SHARE",
    "DAY",
    "TemporalMarket",
    "assign_client_days",
    "busiest_windows",
    "client_day_rates",
    "repair_dedicated",
    "scored_attainment",
    "temporal_market",
    "window_work",
]

DAY = 86400.0
"""Seconds in the simulated day."""

COLD_TAIL_MODEL_SHARE = 0.941
"""Aegaeon's cut: the 94.1 % least-requested models are the market's cold tail."""

CV_CLIP = (0.2, 10.0)
"""Bounds on a window's cv (as in ``calibrated_market``): Gamma shape 0.01..25."""


def client_day_rates(
    clients: Sequence[ServeGenClient], window: float = 600.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every client's windows into whole days.

    Returns ``(rate, cv, client, day)``: ``rate`` and ``cv`` of shape ``(n, windows/day)``,
    one row per (client, day) whose daily mean rate is > 0, rows ordered by client then
    day; ``client`` indexes ``clients``, ``day`` counts days from the first window. A
    trailing partial day is dropped.
    """
    if not clients:
        raise ConfigError("client_day_rates needs at least one ServeGen client")
    per_day = round(DAY / window)
    rates: list[np.ndarray] = []
    cvs: list[np.ndarray] = []
    who: list[int] = []
    days: list[int] = []
    for ci, c in enumerate(clients):
        if abs(c.window - window) > 1e-6:
            raise ConfigError(f"client {c.client_id}: window {c.window} s, expected {window} s")
        n_days = len(c.rate) // per_day
        r = np.where(c.pattern > 0, c.rate, 0.0)[: n_days * per_day].reshape(n_days, per_day)
        v = c.cv[: n_days * per_day].reshape(n_days, per_day)
        for d in range(n_days):
            if r[d].mean() > 0:
                rates.append(r[d])
                cvs.append(v[d])
                who.append(ci)
                days.append(d)
    if not rates:
        raise ConfigError("ServeGen clients carry no traffic")
    return (
        np.asarray(rates),
        np.asarray(cvs),
        np.asarray(who, dtype=np.int64),
        np.asarray(days, dtype=np.int64),
    )


def assign_client_days(
    targets: np.ndarray, day_means: np.ndarray, order: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Step 4 of the rule on arrays: which client days make up each model.

    ``targets`` (req/s) are visited in the given index order (callers pass them most
    popular first); each takes the next entries of ``order`` (indices into ``day_means``)
    until the taken day means sum to at least its target (at least one entry). Returns
    ``(members, scale)`` with ``scale[m] = targets[m] / sum(day_means[members[m]])``.

    Raises:
        ConfigError: the pool runs out of client days.
    """
    members: list[np.ndarray] = []
    scale = np.zeros(len(targets))
    pos = 0
    n = len(order)
    for m, lam in enumerate(np.asarray(targets, dtype=np.float64)):
        if lam <= 0:
            raise ConfigError(f"model {m}: target rate must be > 0, got {lam}")
        start = pos
        got = 0.0
        while pos < n and (pos == start or got < lam):
            got += float(day_means[order[pos]])
            pos += 1
        if got < lam or pos == start:
            raise ConfigError(
                f"the ServeGen class has {n} client days, too few for {len(targets)} models "
                f"at {float(np.sum(targets)):.4g} req/s (ran out at model {m}); lower the "
                "total rate or the number of models"
            )
        members.append(np.asarray(order[start:pos], dtype=np.int64))
        scale[m] = lam / got
    return members, scale


@dataclass(frozen=True)
class TemporalMarket:
    """A market whose models each follow their own real daily traffic (see module rule).

    Attributes:
        models: market models (most popular first).
        shares: popularity shares (sum 1). total_rate: daily mean aggregate rate (req/s).
        rates: expected rate (req/s) of each model in each window, ``(models, windows)``.
        members: per model, the indices of its client days (rows of ``day_rate``).
        scale: per model, the rate multiplier applied to its client days.
        day_rate, day_cv: rate and cv of every pool client day, ``(client days, windows)``.
        day_client, day_index: ServeGen client index and trace day of each client day.
        lengths: the (input, output) pairs drawn per request.
        base: entropy of the per-(model, window) generators.
        window: window length (s). source: provenance.
        keys: per model, the model number in the generators' seed ``[base, key, w]``
            (``None``: its index). :meth:`subset` keeps the original numbers, so a
            sub-market generates exactly the requests its models had in the full one.
    """

    models: tuple[MarketModel, ...]
    shares: np.ndarray
    total_rate: float
    rates: np.ndarray
    members: tuple[np.ndarray, ...]
    scale: np.ndarray
    day_rate: np.ndarray
    day_cv: np.ndarray
    day_client: np.ndarray
    day_index: np.ndarray
    lengths: LengthTrace | None
    base: int
    window: float = 600.0
    source: str = ""
    keys: np.ndarray | None = None

    @property
    def n_windows(self) -> int:
        """Windows in the day (144 for 10-minute windows)."""
        return int(self.rates.shape[1])

    def peak_windows(self) -> np.ndarray:
        """Each model's busiest window: ``argmax`` of its expected rate (ties: earliest)."""
        out: np.ndarray = np.argmax(self.rates, axis=1)
        return out

    def _window(self, m: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arrival times (absolute, s), inputs and outputs of model ``m`` in window ``w``."""
        key = m if self.keys is None else int(self.keys[m])
        rng = np.random.default_rng([self.base, key, w])
        ts = w * self.window
        te = ts + self.window
        got: list[np.ndarray] = []
        sc = float(self.scale[m])
        for row in self.members[m].tolist():
            rate = float(self.day_rate[row, w]) * sc
            if rate <= 0:
                continue
            cv = min(max(float(self.day_cv[row, w]), CV_CLIP[0]), CV_CLIP[1])
            k = 1.0 / (cv * cv)
            theta = 1.0 / (rate * k)
            first = ts + rng.random() * rng.gamma(k + 1.0, theta)  # stationary start
            if first >= te:
                continue
            need = int((te - first) * rate * 1.3) + 16
            parts = [np.array([first])]
            t = first
            while t < te:
                a = t + np.cumsum(rng.gamma(k, theta, size=need))
                parts.append(a)
                t = float(a[-1])
            a = np.concatenate(parts)
            got.append(a[a < te])
        times = np.sort(np.concatenate(got)) if got else np.zeros(0)
        if self.lengths is None:
            inp = np.full(len(times), 1000, dtype=np.int32)
            out = np.full(len(times), 200, dtype=np.int32)
        else:
            inp, out = self.lengths.sample(len(times), rng)
        return times, inp, out

    def span(self, start: float, end: float) -> Market:
        """Requests arriving in ``[start, end)`` of the day, re-based to start at 0."""
        if not 0 <= start < end <= self.n_windows * self.window:
            raise ConfigError(f"span [{start}, {end}) outside the day [0, {self.n_windows * 600})")
        w0 = int(start // self.window)
        w1 = math.ceil(end / self.window)
        ts: list[np.ndarray] = []
        ms: list[np.ndarray] = []
        ins: list[np.ndarray] = []
        outs: list[np.ndarray] = []
        for m in range(len(self.models)):
            for w in range(w0, w1):
                if self.rates[m, w] <= 0:
                    continue
                t, i, o = self._window(m, w)
                sel = (t >= start) & (t < end)
                ts.append(t[sel] - start)
                ms.append(np.full(int(sel.sum()), m, dtype=np.int32))
                ins.append(i[sel])
                outs.append(o[sel])
        return Market(
            self.models,
            Requests.build(_cat(ts), _cat(ms), _cat(ins), _cat(outs)),
            end - start,
            f"{self.source}[{start:g},{end:g})",
        )

    def peak_stack(self) -> Market:
        """Every model's own busiest window overlaid on ``[0, window)``.

        Model ``m`` contributes exactly its requests of window ``peak_windows()[m]``
        (re-based to the window start): the input of per-model peak sizing.
        """
        ts: list[np.ndarray] = []
        ms: list[np.ndarray] = []
        ins: list[np.ndarray] = []
        outs: list[np.ndarray] = []
        for m, w in enumerate(self.peak_windows().tolist()):
            t, i, o = self._window(m, w)
            ts.append(t - w * self.window)
            ms.append(np.full(len(t), m, dtype=np.int32))
            ins.append(i)
            outs.append(o)
        return Market(
            self.models,
            Requests.build(_cat(ts), _cat(ms), _cat(ins), _cat(outs)),
            self.window,
            f"{self.source}[per-model peak windows]",
        )

    def day(self) -> Market:
        """The whole day."""
        return self.span(0.0, self.n_windows * self.window)

    def subset(self, models: Sequence[int], label: str = "") -> TemporalMarket:
        """The market of only ``models`` (indices, kept in the order given).

        Each kept model keeps its rates, client days and generator seed, so every window
        of the sub-market holds exactly the requests those models have in this market;
        ``shares`` are renormalised over the kept models and ``total_rate`` is their
        summed daily mean.
        """
        idx = np.asarray(list(models), dtype=np.int64)
        if idx.size == 0:
            raise ConfigError("TemporalMarket.subset needs at least one model")
        if len(set(idx.tolist())) != idx.size or idx.min() < 0 or idx.max() >= len(self.models):
            raise ConfigError(
                f"TemporalMarket.subset: model indices must be distinct and in "
                f"0..{len(self.models) - 1}"
            )
        keys = idx if self.keys is None else self.keys[idx]
        shares = self.shares[idx]
        return replace(  # the client-day pool, lengths, base and window are shared
            self,
            models=tuple(self.models[i] for i in idx.tolist()),
            shares=shares / shares.sum(),
            total_rate=float(self.rates[idx].mean(axis=1).sum()),
            rates=self.rates[idx],
            members=tuple(self.members[i] for i in idx.tolist()),
            scale=self.scale[idx],
            source=f"{self.source}{label or f'[{idx.size} models]'}",
            keys=keys.copy(),
        )

    def cold_tail(self, model_share: float = COLD_TAIL_MODEL_SHARE) -> list[int]:
        """Indices of the least-requested ``model_share`` of the models (Aegaeon's cut).

        Models ranked by daily mean rate, ascending (ties: higher index first, i.e. the
        later, less popular model of the construction order); the tail is the
        ``round(model_share * models)`` lowest, returned in market order.
        """
        if not 0.0 < model_share <= 1.0:
            raise ConfigError(f"cold_tail: model_share must be in (0, 1], not {model_share}")
        n = len(self.models)
        k = max(1, min(n, round(model_share * n)))
        mean = self.rates.mean(axis=1)
        order = sorted(range(n), key=lambda m: (float(mean[m]), -m))
        return sorted(order[:k])


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def temporal_market(
    traces: str | Path,
    n_models: int,
    rng: np.random.Generator,
    *,
    shape: str = "genai",
    total_rate: float | None = None,
    servegen_class: str = "m-large",
    specs: Sequence[str | ModelSpec] = AEGAEON_SIZE_MIX,
    tail: tuple[float, float] = (0.941, 0.0135),
    lengths: LengthTrace | None = None,
) -> TemporalMarket:
    """Build the temporal market from ``traces`` (the rule in the module docstring).

    ``total_rate`` defaults to the mean aggregate rate of the ServeGen class over all its
    windows (m-large: 195.8 req/s, as ``calibrated_market``); ``lengths`` defaults to the
    Azure LLM 2023 conversation trace.
    """
    if n_models < 1:
        raise ConfigError("temporal_market needs n_models >= 1")
    base_dir = Path(traces)
    sg = base_dir / "alibaba-servegen-2025" / "data" / "language" / servegen_class
    clients = load_servegen_clients(sg)
    window = clients[0].window
    rate = float(np.sum([c.rate for c in clients], axis=0).mean())
    rate = rate if total_rate is None else float(total_rate)
    if rate <= 0:
        raise ConfigError("total_rate must be > 0")
    if shape == "genai":
        shares = lorenz_shares(
            genai_popularity(
                load_genai_requests(base_dir / "alibaba-genai-2026-sd" / "lora_request_trace.csv")
            ),
            n_models,
        )
        src = "genai"
    elif shape == "paper":
        shares = zipf_shares(n_models, fit_zipf_tail(n_models, *tail))
        src = "paper"
    else:
        raise ConfigError(f"temporal_market: shape must be 'genai' or 'paper', not {shape!r}")
    if lengths is None:
        lengths = load_azure_llm(base_dir / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv")
    rng.random(n_models)  # calibrated_market's cv draw: keeps the architectures aligned
    resolved = [s if isinstance(s, ModelSpec) else get_model(s) for s in specs]
    if not resolved:
        raise ConfigError("temporal_market needs at least one architecture in specs")
    pick = rng.integers(0, len(resolved), size=n_models)
    models = tuple(MarketModel(f"m{r:03d}", resolved[int(pick[r])]) for r in range(n_models))
    d_rate, d_cv, d_client, d_day = client_day_rates(clients, window)
    order = rng.permutation(len(d_rate))
    members, scale = assign_client_days(shares * rate, d_rate.mean(axis=1), order)
    rates = np.stack([d_rate[mem].sum(axis=0) * s for mem, s in zip(members, scale, strict=True)])
    base = int(rng.integers(2**63))
    return TemporalMarket(
        models=models,
        shares=shares,
        total_rate=rate,
        rates=rates,
        members=tuple(members),
        scale=scale,
        day_rate=d_rate,
        day_cv=d_cv,
        day_client=d_client,
        day_index=d_day,
        lengths=lengths,
        base=base,
        window=window,
        source=f"temporal({src}, ServeGen {servegen_class} client days)",
    )


def window_work(
    tm: TemporalMarket,
    device: DeviceSpec,
    slo: SLO | None = None,
    perf: PerfParams | None = None,
    tps: Sequence[int] | None = None,
) -> np.ndarray:
    """Estimated busy device-seconds per second of each model in each window.

    Per model and window with expected rate ``lam`` (the same steady-state estimate as
    ``token_pooled``'s pool split): ``tp * lam * prefill(mean prompt)`` plus ``tp * lam *
    out * tau(B) / B``, ``B = clamp(lam * out * TBT / 2, 1, 256)`` sequences in flight.
    Mean prompt and output lengths are those of ``tm.lengths``; ``tps`` default to the
    smallest tensor-parallel degree holding the weights (``model_tp``).
    Returns shape ``(models, windows)``.
    """
    from clustersim.serving.policies import model_tp

    p = perf or PerfParams()
    s = slo or SLO()
    if tps is None:
        empty = Market(tm.models, Requests.build([], [], [], []), tm.window)
        tps = model_tp(empty, device, p)
    if tm.lengths is None:
        mi, mo = 1000.0, 200.0
    else:
        mi = float(tm.lengths.input_tokens.mean())
        mo = float(tm.lengths.output_tokens.mean())
    out = np.zeros_like(tm.rates)
    ovh = p.iteration_overhead
    for m, mm in enumerate(tm.models):
        k = int(tps[m])
        c = model_cost(mm.spec, device, k, p)
        pre = c.prefill_time([max(1, round(mi))], ovh)
        ctx = mi + 0.5 * mo
        for w in np.nonzero(tm.rates[m] > 0)[0].tolist():
            lam = float(tm.rates[m, w])
            b = max(1, round(min(256.0, max(1.0, lam * mo * s.tbt / 2))))
            dec = mo * c.decode_step_time(b, b * ctx, ovh) / b
            out[m, w] = k * lam * (pre + dec)
    return out


def busiest_windows(work: np.ndarray, k: int) -> list[int]:
    """The ``k`` windows with the most aggregate estimated work, busiest first.

    ``work`` is ``(models, windows)`` (:func:`window_work`); ties go to the earlier window.
    """
    if k < 1:
        raise ConfigError(f"busiest_windows needs k >= 1, got {k}")
    agg = np.asarray(work).sum(axis=0)
    order = np.lexsort((np.arange(len(agg)), -agg))
    return [int(w) for w in order[:k]]


def scored_attainment(res: ServingResult, t_from: float, slo: SLO | None = None) -> float:
    """SLO attainment of the requests arriving at or after ``t_from`` (warm-up excluded).

    Requests that never arrived before the horizon count as misses, as in ``attainment``;
    1.0 if no request is scored.
    """
    from clustersim.serving.metrics import slo_met

    arr = res.market.requests.arrival
    sel = arr >= t_from
    n = int(sel.sum())
    if n == 0:
        return 1.0
    return float(slo_met(res, slo)[sel].sum() / n)


def repair_dedicated(
    replays: Sequence[tuple[Market, float]],
    device: DeviceSpec,
    instances: Sequence[int],
    tp: Sequence[int],
    target: float,
    slo: SLO | None = None,
    max_steps: int = 10_000,
) -> tuple[list[int], int]:
    """Grow a dedicated sizing until every replayed window reaches ``target``.

    ``replays`` are ``(market, t_from)`` pairs scored from ``t_from`` (after a warm-up).
    Rule: replay each window in order with the current engine counts; while a window's
    scored attainment is below ``target``, add one engine to the model with the most
    scored SLO misses in it (ties: lowest index) and replay it again. Returns the new
    counts and the number of engines added (0 when the sizing already passes).
    """
    from clustersim.serving.metrics import slo_met
    from clustersim.serving.simulator import simulate

    n = [int(x) for x in instances]
    added = 0
    for mk, t_from in replays:
        sel = mk.requests.arrival >= t_from
        for _ in range(max_steps):
            res = simulate(mk, "dedicated", device=device, slo=slo, instances=n, tp=list(tp))
            if scored_attainment(res, t_from, slo) >= target:
                break
            miss = sel & ~slo_met(res, slo)
            per = np.bincount(mk.requests.model[miss], minlength=len(n))
            n[int(np.argmax(per))] += 1
            added += 1
        else:
            raise ConfigError(f"repair_dedicated: no sizing reached {target} in {max_steps} steps")
    return n, added
