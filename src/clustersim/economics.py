"""Unit economics of a GPU cloud: cost per device-hour and per million tokens, revenue, margin.

This module owns:

* :class:`CostModel` / :class:`CostBreakdown` -- what one device-hour costs the
  operator::

      capital  = capex_usd * CRF / 8760           CRF = 1 / L (straight line) or
                                                  r / (1 - (1 + r)^-L) with interest r
      energy   = pue * it_w / 1000 * usd_per_kwh  it_w = idle + (tdp - idle) * u
                                                        + node_overhead_fraction * tdp
      facility = usd_per_kw_month * tdp * (1 + node_overhead_fraction) / 1000 / 730

  ``u`` is the device's busy fraction; ``facility`` is the operations share: data-centre
  space, cooling plant and operations billed per kW of provisioned IT power
  (colocation pricing); power itself is billed separately through ``energy``.
  The power terms match :class:`clustersim.power.PowerModel`.
* Revenue and margin: :func:`token_revenue`, :func:`rental_revenue`,
  :func:`gross_margin` ``= (revenue - cost) / revenue``, :func:`rental_margin`
  (renting a device at a list price at busy fraction ``u``), :func:`cost_per_mtok`.
* :func:`run_cost` -- the operator's cost of a cluster over a simulated span, with
  energy from the allocated device-hours per type.
* Serving throughput from the roofline: :func:`serving_capacity` sizes one instance
  of a model under a time-between-tokens SLO with the serving module's instance
  cost model (:func:`clustersim.serving.perf.model_cost`), and :func:`maas_fleet`
  sizes a model-as-a-service fleet under the ``dedicated`` or ``pooled`` policy and
  prices it (see the function docs for the exact rules).

Defaults, each cited with its grade in ``docs/hetero-power-economics.md``: lifetime 5
years (Amazon's FY2024 10-K: servers moved from 6 to 5 years from 2025; Meta 5 years
[S]); electricity 0.0806 USD/kWh (EIA, US industrial average 2023 [S]); facility 163.44
USD per kW-month (CBRE North America Data Center Trends H2 2023, average asking rate
[S]); PUE and node overhead from :mod:`clustersim.power`. Units: USD, hours where the
name says so, else seconds; W; tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clustersim.errors import ConfigError
from clustersim.hardware import DeviceSpec
from clustersim.power import DEFAULT_NODE_OVERHEAD_FRACTION, DEFAULT_PUE

__all__ = [
    "DEFAULT_ELECTRICITY_USD_PER_KWH",
    "DEFAULT_FACILITY_USD_PER_KW_MONTH",
    "DEFAULT_LIFETIME_YEARS",
    "HOURS_PER_MONTH",
    "HOURS_PER_YEAR",
    "CostBreakdown",
    "CostModel",
    "FleetPoint",
    "ServingCapacity",
    "cost_per_mtok",
    "gross_margin",
    "maas_fleet",
    "rental_margin",
    "rental_revenue",
    "run_cost",
    "serving_capacity",
    "token_revenue",
    "zipf_shares",
]

DEFAULT_LIFETIME_YEARS = 5.0
"""Depreciation life of accelerator servers: Amazon FY2024 10-K (6 -> 5 years from 2025),
Meta (5 years since Q4 2022) [S]."""
DEFAULT_ELECTRICITY_USD_PER_KWH = 0.0806
"""US industrial average retail electricity price 2023, EIA (via Statista) [S]."""
DEFAULT_FACILITY_USD_PER_KW_MONTH = 163.44
"""CBRE North America Data Center Trends H2 2023: average asking rate, 250-500 kW [S]."""
HOURS_PER_YEAR = 8760.0
HOURS_PER_MONTH = HOURS_PER_YEAR / 12.0


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Operator cost split (USD)."""

    capital_usd: float = 0.0
    energy_usd: float = 0.0
    facility_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        """Sum of the parts."""
        return self.capital_usd + self.energy_usd + self.facility_usd

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        return CostBreakdown(
            self.capital_usd + other.capital_usd,
            self.energy_usd + other.energy_usd,
            self.facility_usd + other.facility_usd,
        )

    def scaled(self, k: float) -> CostBreakdown:
        """Every part times ``k``."""
        return CostBreakdown(self.capital_usd * k, self.energy_usd * k, self.facility_usd * k)

    def as_dict(self) -> dict[str, float]:
        """For summaries."""
        return {
            "capital_usd": self.capital_usd,
            "energy_usd": self.energy_usd,
            "facility_usd": self.facility_usd,
            "total_usd": self.total_usd,
        }


@dataclass(frozen=True, slots=True)
class CostModel:
    """Operator cost of devices (formulas in the module docstring).

    Attributes:
        lifetime_years: depreciation life of the capital.
        electricity_usd_per_kwh: price of facility energy.
        pue: facility power / IT power.
        node_overhead_fraction: node overhead (CPU, NICs, fans) / GPU TDP.
        facility_usd_per_kw_month: space, cooling plant and operations per kW of
            provisioned IT power.
        annual_interest: cost of capital per year (0 = straight-line depreciation).
    """

    lifetime_years: float = DEFAULT_LIFETIME_YEARS
    electricity_usd_per_kwh: float = DEFAULT_ELECTRICITY_USD_PER_KWH
    pue: float = DEFAULT_PUE
    node_overhead_fraction: float = DEFAULT_NODE_OVERHEAD_FRACTION
    facility_usd_per_kw_month: float = DEFAULT_FACILITY_USD_PER_KW_MONTH
    annual_interest: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lifetime_years",):
            if not getattr(self, name) > 0:
                raise ConfigError(f"CostModel.{name} must be > 0, got {getattr(self, name)!r}")
        for name in (
            "electricity_usd_per_kwh",
            "node_overhead_fraction",
            "facility_usd_per_kw_month",
            "annual_interest",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"CostModel.{name} must be >= 0, got {v!r}")
        if not self.pue >= 1.0:
            raise ConfigError(f"CostModel.pue must be >= 1, got {self.pue!r}")

    @property
    def capital_recovery_factor(self) -> float:
        """Share of the capex charged per year."""
        r, n = self.annual_interest, self.lifetime_years
        if r == 0:
            return 1.0 / n
        return float(r / (1.0 - (1.0 + r) ** -n))

    def capital_per_hour(self, spec: DeviceSpec) -> float:
        """USD of capital per device-hour."""
        return spec.capex_usd * self.capital_recovery_factor / HOURS_PER_YEAR

    def it_power_w(self, spec: DeviceSpec, utilization: float = 1.0) -> float:
        """IT power (W) of one device at busy fraction ``utilization``, node overhead included."""
        _check_fraction(utilization, "utilization")
        return (
            spec.idle_w
            + (spec.tdp_w - spec.idle_w) * utilization
            + self.node_overhead_fraction * spec.tdp_w
        )

    def energy_per_hour(self, spec: DeviceSpec, utilization: float = 1.0) -> float:
        """USD of facility energy per device-hour."""
        return self.pue * self.it_power_w(spec, utilization) / 1000.0 * self.electricity_usd_per_kwh

    def facility_per_hour(self, spec: DeviceSpec) -> float:
        """USD of facility (operations share) per device-hour, per provisioned IT kW."""
        kw = spec.tdp_w * (1.0 + self.node_overhead_fraction) / 1000.0
        return self.facility_usd_per_kw_month * kw / HOURS_PER_MONTH

    def device_hour(self, spec: DeviceSpec, utilization: float = 1.0) -> CostBreakdown:
        """Cost of one device-hour at busy fraction ``utilization``."""
        return CostBreakdown(
            self.capital_per_hour(spec),
            self.energy_per_hour(spec, utilization),
            self.facility_per_hour(spec),
        )


def _check_fraction(x: float, name: str) -> None:
    if not (math.isfinite(x) and 0.0 <= x <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {x!r}")


def run_cost(
    specs: Mapping[str, DeviceSpec],
    devices_by_type: Mapping[str, int],
    span_hours: float,
    allocated_device_hours_by_type: Mapping[str, float],
    cost: CostModel | None = None,
) -> CostBreakdown:
    """Operator cost of a cluster over ``span_hours``.

    Capital and facility are paid for every device for the whole span; energy for
    the idle power of every device-hour plus the dynamic power of the allocated ones
    (busy fraction = allocated / available device-hours per type).
    """
    cm = cost or CostModel()
    total = CostBreakdown()
    for t, n in devices_by_type.items():
        if n <= 0:
            continue
        dev_h = n * span_hours
        alloc = float(allocated_device_hours_by_type.get(t, 0.0))
        if alloc < 0 or alloc > dev_h * (1 + 1e-9):
            raise ConfigError(
                f"run_cost: {alloc:.1f} allocated device-hours of '{t}' is outside 0..{dev_h:.1f}"
            )
        u = min(alloc / dev_h, 1.0) if dev_h > 0 else 0.0
        total = total + cm.device_hour(specs[t], u).scaled(dev_h)
    return total


# --------------------------------------------------------------------------- revenue, margin


def token_revenue(
    input_tokens: float, output_tokens: float, usd_per_mtok_in: float, usd_per_mtok_out: float
) -> float:
    """USD billed for tokens at per-million-token list prices."""
    return (input_tokens * usd_per_mtok_in + output_tokens * usd_per_mtok_out) / 1e6


def rental_revenue(
    allocated_device_hours_by_type: Mapping[str, float], price_per_hour: Mapping[str, float]
) -> float:
    """USD billed for allocated device-hours at per-device-hour prices."""
    return float(sum(h * price_per_hour[t] for t, h in allocated_device_hours_by_type.items() if h))


def gross_margin(revenue_usd: float, cost_usd: float) -> float:
    """``(revenue - cost) / revenue``; ``-inf`` for a cost with no revenue, 0 for neither."""
    if revenue_usd <= 0:
        return -math.inf if cost_usd > 0 else 0.0
    return (revenue_usd - cost_usd) / revenue_usd


def cost_per_mtok(cost_usd: float, tokens: float) -> float:
    """USD per million tokens (``inf`` when no token was served)."""
    return math.inf if tokens <= 0 else cost_usd / tokens * 1e6


def rental_margin(
    spec: DeviceSpec,
    utilization: float,
    cost: CostModel | None = None,
    price_per_hour: float | None = None,
) -> float:
    """Gross margin of renting ``spec`` at ``price_per_hour`` (default: list) when a
    fraction ``utilization`` of its hours is sold (sold hours are busy hours)."""
    _check_fraction(utilization, "utilization")
    cm = cost or CostModel()
    price = spec.price_per_hour if price_per_hour is None else price_per_hour
    return gross_margin(utilization * price, cm.device_hour(spec, utilization).total_usd)


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True, slots=True)
class ServingCapacity:
    """Steady-state capacity of one serving instance (``tp`` devices, one model).

    Attributes:
        batch: decode batch size (largest meeting the TBT SLO, KV room and batch cap).
        step_s: decode step time at that batch (s).
        prefill_s_per_request: instance seconds of prefill per request (s).
        requests_per_s: requests one instance completes per second at full load.
        input_tokens_per_s / output_tokens_per_s: token rates at full load.
        devices: ``tp``.
    """

    batch: int
    step_s: float
    prefill_s_per_request: float
    requests_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    devices: int


def serving_capacity(
    model: str,
    device: DeviceSpec,
    *,
    prompt_tokens: float,
    output_tokens: float,
    tbt_s: float,
    tp: int | None = None,
    perf: Any = None,
) -> ServingCapacity:
    """Roofline capacity of one instance of ``model`` on ``tp`` x ``device``.

    Uses the serving module's instance cost (``clustersim.serving.perf.model_cost``:
    ``t_step = max(FLOPs / (tp F eta_c), Bytes / (tp BW eta_b)) + overhead + comm``).
    Rule: ``B`` = the largest decode batch (<= ``max_num_seqs``) whose step at the
    mean context ``B * (prompt + output / 2)`` takes <= ``tbt_s`` and whose KV cache
    at full context ``B * (prompt + output)`` fits; prefills run in batches of
    ``max_batched_tokens // prompt`` prompts between decode steps. One request costs
    the instance ``prefill + output * t_step / B`` seconds, so
    ``requests_per_s = 1 / (prefill_s_per_request + output * t_step / B)``.
    ``tp`` defaults to the smallest that holds the weights
    (``clustersim.serving.models.min_tensor_parallel``).

    Raises:
        ConfigError: no batch meets the SLO (even ``B = 1``).
    """
    from clustersim.serving.models import get_model, min_tensor_parallel
    from clustersim.serving.perf import PerfParams, model_cost

    spec_m = get_model(model)
    p = perf if perf is not None else PerfParams()
    if tp is None:
        tp = min_tensor_parallel(spec_m, device.memory_bytes)
    mc = model_cost(spec_m, device, tp, p)
    if prompt_tokens <= 0 or output_tokens <= 0:
        raise ConfigError("serving_capacity: prompt_tokens and output_tokens must be > 0")
    per_seq_kv = prompt_tokens + output_tokens
    max_b = min(int(p.max_num_seqs), int(mc.kv_capacity_tokens // per_seq_kv))
    ctx_mean = prompt_tokens + output_tokens / 2.0

    def step(b: int) -> float:
        return float(mc.decode_step_time(b, b * ctx_mean, p.iteration_overhead))

    if max_b < 1 or step(1) > tbt_s:
        raise ConfigError(
            f"serving_capacity: {model} on {tp} x {device.name} cannot meet TBT {tbt_s * 1e3:.0f} "
            "ms even with batch 1 (or the KV cache holds no full sequence)"
        )
    lo, hi = 1, max_b  # step() grows with b: binary search for the largest b meeting the SLO
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if step(mid) <= tbt_s:
            lo = mid
        else:
            hi = mid - 1
    b = lo
    t_step = step(b)
    lp = max(1, round(prompt_tokens))
    k = max(1, int(p.max_batched_tokens) // lp)
    prefill = float(mc.prefill_time([lp] * k, p.iteration_overhead)) / k
    per_req = prefill + output_tokens * t_step / b
    rps = 1.0 / per_req
    return ServingCapacity(
        batch=b,
        step_s=t_step,
        prefill_s_per_request=prefill,
        requests_per_s=rps,
        input_tokens_per_s=rps * prompt_tokens,
        output_tokens_per_s=rps * output_tokens,
        devices=tp,
    )


def zipf_shares(n: int, s: float) -> np.ndarray:
    """Request shares of ``n`` models with Zipf(``s``) popularity (rank 1 first)."""
    if n < 1 or not s >= 0:
        raise ConfigError(f"zipf_shares needs n >= 1 and s >= 0, got n={n}, s={s}")
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return np.asarray(w / w.sum(), dtype=np.float64)


@dataclass(frozen=True)
class FleetPoint:
    """A MaaS fleet at one aggregate load (see :func:`maas_fleet`)."""

    policy: str
    load_rps: float
    instances: int
    devices: int
    utilization: float
    cost: CostBreakdown
    revenue_usd_per_h: float
    tokens_per_h: float
    cost_per_mtok: float
    gross_margin: float
    energy_kwh_per_mtok: float
    per_model_instances: list[int] = field(default_factory=list)


def maas_fleet(
    policy: str,
    load_rps: float,
    shares: Sequence[float],
    capacity: ServingCapacity,
    device: DeviceSpec,
    *,
    prompt_tokens: float,
    output_tokens: float,
    usd_per_mtok_in: float,
    usd_per_mtok_out: float,
    cost: CostModel | None = None,
    max_utilization: float = 1.0,
    pooled_efficiency: float = 1.0,
) -> FleetPoint:
    """Size and price a model-as-a-service fleet for one hour at ``load_rps`` requests/s.

    Policies (``mu`` = ``capacity.requests_per_s``, ``lambda_m = load * share_m``):

    * ``dedicated`` -- every model keeps its own instances, at least one even when
      idle (today's practice, literature.md §1.1): ``n_m = max(1, ceil(lambda_m /
      (mu * max_utilization)))``;
    * ``pooled`` -- one shared pool serves every model, token-level (Aegaeon-style):
      ``n = max(1, ceil(load / (mu * max_utilization * pooled_efficiency)))``. With
      ``pooled_efficiency = 1`` model switches are free: an upper bound on pooling.

    Device busy fraction ``u = load / (n_total * mu)`` sets the energy term; cost per
    hour = ``devices * CostModel.device_hour(device, u)``; revenue = tokens x list
    prices; ``cost_per_mtok`` counts input + output tokens.
    """
    if policy not in ("dedicated", "pooled"):
        raise ConfigError(f"maas_fleet: policy must be 'dedicated' or 'pooled', got {policy!r}")
    if not load_rps >= 0:
        raise ConfigError(f"maas_fleet: load must be >= 0 req/s, got {load_rps!r}")
    _check_fraction(max_utilization, "max_utilization")
    _check_fraction(pooled_efficiency, "pooled_efficiency")
    if max_utilization == 0 or pooled_efficiency == 0:
        raise ConfigError("maas_fleet: max_utilization and pooled_efficiency must be > 0")
    cm = cost or CostModel()
    mu = capacity.requests_per_s
    sh = np.asarray(shares, dtype=np.float64)
    per_model: list[int] = []
    if policy == "dedicated":
        lam = load_rps * sh
        per_model = [max(1, math.ceil(x / (mu * max_utilization) - 1e-12)) for x in lam]
        n = int(sum(per_model))
    else:
        n = max(1, math.ceil(load_rps / (mu * max_utilization * pooled_efficiency) - 1e-12))
    util = min(1.0, load_rps / (n * mu)) if n else 0.0
    devices = n * capacity.devices
    c = cm.device_hour(device, util).scaled(devices)
    tok_in = load_rps * prompt_tokens * 3600.0
    tok_out = load_rps * output_tokens * 3600.0
    rev = token_revenue(tok_in, tok_out, usd_per_mtok_in, usd_per_mtok_out)
    # energy: facility kWh of the fleet for the hour
    it_w = cm.it_power_w(device, util) * devices
    kwh = cm.pue * it_w / 1000.0
    tokens = tok_in + tok_out
    return FleetPoint(
        policy=policy,
        load_rps=load_rps,
        instances=n,
        devices=devices,
        utilization=util,
        cost=c,
        revenue_usd_per_h=rev,
        tokens_per_h=tokens,
        cost_per_mtok=cost_per_mtok(c.total_usd, tokens),
        gross_margin=gross_margin(rev, c.total_usd),
        energy_kwh_per_mtok=(kwh / tokens * 1e6) if tokens > 0 else math.inf,
        per_model_instances=per_model,
    )
