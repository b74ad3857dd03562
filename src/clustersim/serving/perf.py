"""Instance performance model: prefill/decode time, KV-cache capacity and model-load cost.

This module owns the roofline cost of one serving instance (``tp`` devices running
one model with tensor parallelism) and the model-load/switch cost.

Iteration time (formulas; sources and defaults in ``docs/serving.md``)::

    t_iter = max(FLOPs / (tp * peak_flops * eta_c),  Bytes / (tp * hbm_bw * eta_b))
             + t_overhead + t_comm

* decode step of ``B`` sequences holding ``C`` cached tokens in total:
  ``FLOPs = 2 * params * B + A * C`` with ``A = 4 * n_layers * n_heads * head_dim``
  (linear layers ``2N`` per token [Kaplan et al. 2020]; attention ``q.k`` and ``a.v``);
  ``Bytes = weight_bytes + kv_bytes_per_token * C`` (weights and the whole KV cache
  are read once per step);
* prefill of prompts ``L_i``: ``FLOPs = 2 * params * sum(L_i) + (A / 2) * sum(L_i^2)``
  (causal attention), ``Bytes = weight_bytes + kv_bytes_per_token * sum(L_i)``;
* tensor parallelism adds two all-reduces per layer of ``tokens * hidden * dtype``
  bytes (Megatron-LM): ``t_comm = 2 * n_layers * (alpha + 2 (tp-1)/tp * tokens * hidden
  * dtype / scale_up_bw)`` for ``tp > 1``.

Everything is linear in ``B`` and ``C``, so a run of ``k`` decode steps with a fixed
batch (``C`` grows by ``B`` per step) has a closed-form duration — the simulator
never loops over tokens. :class:`StepCost` holds those linear coefficients and
:meth:`StepCost.steps_within` inverts the sum.

Model loading: ``t_load = t_init + (weight_bytes / tp) / tier_bandwidth`` per device
(:class:`LoadModel`), tiers remote store / local SSD / host DRAM / pinned host
memory over PCIe / peer device over the scale-up link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from clustersim.errors import ConfigError
from clustersim.hardware import DeviceSpec
from clustersim.serving.models import ModelSpec

__all__ = [
    "DEFAULT_LOAD_BW",
    "LoadModel",
    "ModelCost",
    "PerfParams",
    "StepCost",
    "host_link_bw",
    "model_cost",
    "seg_steps_within",
    "seg_total",
    "step_params",
]

# PCIe x16 per direction: GT/s * 16 lanes * 128/130 / 8 bits [D]
_PCIE4_X16 = 16e9 * 16 * 128 / 130 / 8
_PCIE5_X16 = 32e9 * 16 * 128 / 130 / 8
_PCIE_GEN = {
    "H100": _PCIE5_X16,
    "H800": _PCIE5_X16,
    "H20": _PCIE5_X16,
    "H200": _PCIE5_X16,
    "B200": _PCIE5_X16 * 2,  # PCIe Gen6 x16 [U]
    "GB200": 450e9,  # NVLink-C2C to Grace, 900 GB/s bidirectional [S]
    "A100": _PCIE4_X16,
    "A10": _PCIE4_X16,
}


def host_link_bw(device: DeviceSpec) -> float:
    """Host-to-device bandwidth in bytes/s: the device's PCIe generation x16 (theoretical).

    Hopper (H100/H800/H20/H200) is PCIe Gen5, Ampere Gen4; unknown devices get Gen4.
    """
    return _PCIE_GEN.get(device.name, _PCIE4_X16)


@dataclass(frozen=True, slots=True)
class PerfParams:
    """Efficiency and engine knobs of the roofline (defaults in ``docs/serving.md``).

    Attributes:
        compute_efficiency: achieved fraction of peak FLOP/s (``eta_c``).
        bandwidth_efficiency: achieved fraction of peak HBM bandwidth (``eta_b``, "MBU").
        iteration_overhead: seconds of scheduling/launch overhead per engine iteration.
        allreduce_latency: seconds of latency per all-reduce (``alpha``), ``tp > 1`` only.
        memory_utilization: share of device memory the engine may use (vLLM
            ``gpu_memory_utilization``); weights come out of it, the rest is KV cache.
        max_num_seqs: most sequences in one decode batch (vLLM ``max_num_seqs``).
        max_batched_tokens: prompt-token budget of one prefill iteration (a single
            longer prompt still runs alone).
    """

    compute_efficiency: float = 0.5
    bandwidth_efficiency: float = 0.7
    iteration_overhead: float = 2e-3
    allreduce_latency: float = 10e-6
    memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192

    def __post_init__(self) -> None:
        for f in ("compute_efficiency", "bandwidth_efficiency", "memory_utilization"):
            v = getattr(self, f)
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"PerfParams.{f} must be in (0, 1], got {v!r}")
        for f in ("iteration_overhead", "allreduce_latency"):
            if getattr(self, f) < 0:
                raise ConfigError(f"PerfParams.{f} must be >= 0")
        if self.max_num_seqs < 1 or self.max_batched_tokens < 1:
            raise ConfigError("PerfParams.max_num_seqs and max_batched_tokens must be >= 1")


@dataclass(frozen=True, slots=True)
class ModelCost:
    """Per-model linear cost coefficients on one instance (all in seconds).

    A decode step of a batch of ``B`` sequences holding ``C`` cached tokens costs
    ``max(f_seq*B + f_ctx*C, m_w + m_ctx*C) + comm_fixed + comm_tok*B`` plus the
    engine's per-iteration overhead. Prefill of prompts ``L_i`` costs
    ``max(f_seq*sum(L) + f_ctx/2*sum(L^2), m_w + m_ctx*sum(L)) + comm_fixed + comm_tok*sum(L)``.

    Attributes:
        model: the architecture.
        device: device type of the instance.
        tp: devices per instance.
        f_seq: compute seconds per token through the linear layers.
        f_ctx: compute seconds per (new token x cached token) of attention.
        m_w: seconds to stream the weights once.
        m_ctx: seconds to stream one cached token's K and V.
        comm_fixed: all-reduce latency per iteration.
        comm_tok: all-reduce transfer seconds per token in the iteration.
        kv_capacity_tokens: tokens of KV cache the instance can hold.
        kv_bytes_per_token: bytes per cached token.
        weight_bytes: bytes of weights over all ``tp`` devices.
    """

    model: ModelSpec
    device: DeviceSpec
    tp: int
    f_seq: float
    f_ctx: float
    m_w: float
    m_ctx: float
    comm_fixed: float
    comm_tok: float
    kv_capacity_tokens: int
    kv_bytes_per_token: float
    weight_bytes: float

    def prefill_time(self, lengths: list[int] | tuple[int, ...], overhead: float) -> float:
        """Seconds for one prefill iteration over prompts of ``lengths`` tokens."""
        s1 = float(sum(lengths))
        s2 = float(sum(x * x for x in lengths))
        comp = self.f_seq * s1 + 0.5 * self.f_ctx * s2
        mem = self.m_w + self.m_ctx * s1
        return max(comp, mem) + overhead + self.comm_fixed + self.comm_tok * s1

    def decode_step_time(self, batch: int, ctx_tokens: float, overhead: float) -> float:
        """Seconds for one decode step of ``batch`` sequences holding ``ctx_tokens``."""
        if batch <= 0:
            return 0.0
        comp = self.f_seq * batch + self.f_ctx * ctx_tokens
        mem = self.m_w + self.m_ctx * ctx_tokens
        return max(comp, mem) + overhead + self.comm_fixed + self.comm_tok * batch


def model_cost(
    model: ModelSpec, device: DeviceSpec, tp: int, params: PerfParams | None = None
) -> ModelCost:
    """Linear cost coefficients of ``model`` on an instance of ``tp`` x ``device``.

    KV capacity = ``memory_utilization * tp * memory_bytes - weight_bytes`` bytes.

    Raises:
        ConfigError: the weights leave no room for the KV cache.
    """
    p = params or PerfParams()
    if tp < 1:
        raise ConfigError(f"tensor parallel degree must be >= 1, got {tp}")
    flops = tp * device.flops * p.compute_efficiency
    bw = tp * device.memory_bw * p.bandwidth_efficiency
    kv_free = p.memory_utilization * tp * device.memory_bytes - model.weight_bytes
    kv_tok = model.kv_bytes_per_token
    if kv_free < kv_tok * 16:
        raise ConfigError(
            f"model '{model.name}' ({model.weight_bytes / 1e9:.1f} GB) leaves no KV-cache room on "
            f"{tp} x {device.name} ({device.memory_bytes / 1e9:.0f} GB each); raise tp"
        )
    if tp > 1:
        comm_fixed = 2 * model.n_layers * p.allreduce_latency
        comm_tok = (
            2 * model.n_layers * 2 * (tp - 1) / tp * model.hidden * model.dtype_bytes
        ) / device.scale_up_bw
    else:
        comm_fixed = comm_tok = 0.0
    return ModelCost(
        model=model,
        device=device,
        tp=tp,
        f_seq=2.0 * model.params / flops,
        f_ctx=model.attn_flops_per_ctx_token / flops,
        m_w=model.weight_bytes / bw,
        m_ctx=kv_tok / bw,
        comm_fixed=comm_fixed,
        comm_tok=comm_tok,
        kv_capacity_tokens=int(kv_free // kv_tok),
        kv_bytes_per_token=kv_tok,
        weight_bytes=model.weight_bytes,
    )


_NEVER = 1 << 62


def step_params(
    a_c: float, b_c: float, a_m: float, b_m: float, o: float
) -> tuple[float, float, float, float, int, float, float]:
    """Piecewise-linear step-time parameters ``(c0, c1, d0, d1, n0, t0, e0)``.

    Step ``j`` lasts ``tau(j) = max(a_c + b_c*j, a_m + b_m*j) + o``. The branch that
    dominates at ``j = 0`` (ties: compute) gives ``c0 + c1*j`` for ``j < n0``; from
    ``j = n0`` (the first step at or after the crossing) the other branch gives
    ``d0 + d1*j``. ``t0`` = duration of steps ``0..n0-1``; ``e0 = d0 + d1*n0``.
    ``n0`` is a huge number when the first branch dominates forever.
    """
    if a_c >= a_m:
        c0, c1, d0, d1 = a_c + o, b_c, a_m + o, b_m
        jx = -1.0 if b_c >= b_m else (a_c - a_m) / (b_m - b_c)
    else:
        c0, c1, d0, d1 = a_m + o, b_m, a_c + o, b_c
        jx = -1.0 if b_m >= b_c else (a_m - a_c) / (b_c - b_m)
    if jx < 0.0 or jx > 1e18:  # the other branch never (or only after 10^18 steps) wins
        return c0, c1, d0, d1, _NEVER, 0.0, 0.0
    n0 = math.ceil(jx)
    return c0, c1, d0, d1, n0, n0 * c0 + c1 * n0 * (n0 - 1) * 0.5, d0 + d1 * n0


def seg_total(
    c0: float, c1: float, d0: float, d1: float, n0: int, t0: float, e0: float, k: int
) -> float:
    """Seconds for steps ``0 .. k-1`` (see :func:`step_params`)."""
    if k <= n0:
        return k * c0 + c1 * k * (k - 1) * 0.5
    n1 = k - n0
    return t0 + n1 * e0 + d1 * n1 * (n1 - 1) * 0.5


def seg_steps_within(
    c0: float, c1: float, d0: float, d1: float, n0: int, t0: float, e0: float, dt: float
) -> int:
    """Largest ``k >= 0`` with ``seg_total(k) <= dt``."""
    if dt <= 0:
        return 0
    k = _solve(c0, c1, dt)
    if k > n0:
        k = n0 + _solve(e0, d1, dt - t0)
    while k > 0 and seg_total(c0, c1, d0, d1, n0, t0, e0, k) > dt:
        k -= 1
    while seg_total(c0, c1, d0, d1, n0, t0, e0, k + 1) <= dt:
        k += 1
    return k


class StepCost:
    """Closed-form duration of ``k`` decode steps with a fixed batch.

    Step ``j`` (``j = 0, 1, ...``) lasts ``tau(j) = max(a_c + b_c*j, a_m + b_m*j) + o``:
    the compute and memory terms grow linearly because every step adds ``B`` cached
    tokens. ``total(k)`` sums ``tau`` over ``j < k`` exactly (arithmetic series on each
    side of the crossing point, :func:`seg_total`) and ``steps_within(dt)`` returns the
    largest ``k`` with ``total(k) <= dt``.
    """

    __slots__ = ("a_c", "a_m", "b_c", "b_m", "o", "p")

    def __init__(self, a_c: float, b_c: float, a_m: float, b_m: float, o: float) -> None:
        self.a_c, self.b_c, self.a_m, self.b_m, self.o = a_c, b_c, a_m, b_m, o
        self.p = step_params(a_c, b_c, a_m, b_m, o)

    def tau(self, j: float) -> float:
        """Duration of step ``j``."""
        x = self.a_c + self.b_c * j
        y = self.a_m + self.b_m * j
        return (x if x > y else y) + self.o

    def total(self, k: int) -> float:
        """Seconds for steps ``0 .. k-1``."""
        if k <= 0:
            return 0.0
        c0, c1, d0, d1, n0, t0, e0 = self.p
        return seg_total(c0, c1, d0, d1, n0, t0, e0, k)

    def steps_within(self, dt: float) -> int:
        """Largest ``k >= 0`` with ``total(k) <= dt``."""
        c0, c1, d0, d1, n0, t0, e0 = self.p
        return seg_steps_within(c0, c1, d0, d1, n0, t0, e0, dt)


def _solve(c0: float, c1: float, dt: float) -> int:
    """Largest integer k >= 0 with ``k*c0 + c1*k*(k-1)/2 <= dt`` (``c0 > 0``, ``c1 >= 0``)."""
    if dt <= 0:
        return 0
    if c1 <= 1e-18:
        return int(dt / c0)
    # c1/2 k^2 + (c0 - c1/2) k - dt = 0
    b = c0 - 0.5 * c1
    disc = b * b + 2.0 * c1 * dt
    return max(0, int((-b + math.sqrt(disc)) / c1))


DEFAULT_LOAD_BW: dict[str, float] = {
    "remote": 5.0e9,
    "ssd": 16.06e9 / 3.3,
    "host": 16.06e9 / 1.1,
}
"""Per-device load bandwidth (bytes/s) by tier.

``remote``: ServerlessLLM's example, 130 GB in ~26 s at 5 GB/s [S]; ``ssd``: DeepServe
DRAM-miss load of Llama3-8B (16.06 GB) in 3.3 s [D from S]; ``host``: DeepServe
DRAM-hit load of the same model in 1.1 s [D from S]. Two more tiers come from the
device: ``host_pinned`` = PCIe x16 of the device (Aegaeon's page-locked staging) and
``peer`` = the device's scale-up link (load from a peer that holds the weights).
"""


@dataclass(frozen=True, slots=True)
class LoadModel:
    """Cost of bringing a model's weights onto an instance.

    ``t_load = init_time + (weight_bytes / tp) / bw(tier)``; ``bw`` from
    :data:`DEFAULT_LOAD_BW` overridden by ``bandwidth``, or from the device for
    ``host_pinned`` (PCIe) and ``peer`` (scale-up link).

    Attributes:
        tier: default tier (``remote``, ``ssd``, ``host``, ``host_pinned``, ``peer``).
        init_time: engine initialisation seconds on each load (0 = components reused /
            pre-warmed as in Aegaeon and DeepServe; DeepServe measured 26.45 s without).
        bandwidth: per-tier bandwidth overrides in bytes/s.
        empirical: measured cold-start latencies in seconds (e.g. the GenAI trace's
            ``load_genai_load_latencies``). When set, :meth:`load_time` with an ``rng``
            returns ``init_time`` plus one draw from them for the default tier instead of
            the bandwidth formula (size-independent: the trace does not give model sizes).
    """

    tier: str = "ssd"
    init_time: float = 0.0
    bandwidth: dict[str, float] = field(default_factory=dict)
    empirical: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.tier not in (*DEFAULT_LOAD_BW, "host_pinned", "peer"):
            raise ConfigError(
                f"unknown load tier '{self.tier}'; use remote, ssd, host, host_pinned or peer"
            )
        if self.init_time < 0:
            raise ConfigError("LoadModel.init_time must be >= 0")
        if any(not x >= 0 for x in self.empirical):
            raise ConfigError("LoadModel.empirical latencies must be >= 0 seconds")

    def tier_bw(self, tier: str, device: DeviceSpec) -> float:
        """Bytes/s per device of ``tier`` on ``device``."""
        if tier in self.bandwidth:
            return self.bandwidth[tier]
        if tier == "host_pinned":
            return host_link_bw(device)
        if tier == "peer":
            return device.scale_up_bw
        if tier not in DEFAULT_LOAD_BW:
            raise ConfigError(f"unknown load tier '{tier}'")
        return DEFAULT_LOAD_BW[tier]

    def load_time(
        self,
        model: ModelSpec,
        device: DeviceSpec,
        tp: int,
        tier: str | None = None,
        rng: np.random.Generator | None = None,
    ) -> float:
        """Seconds to load ``model`` onto ``tp`` devices of ``device`` from ``tier``."""
        if self.empirical and rng is not None and (tier is None or tier == self.tier):
            return self.init_time + float(self.empirical[int(rng.integers(len(self.empirical)))])
        bw = self.tier_bw(tier or self.tier, device)
        return self.init_time + model.weight_bytes / tp / bw
