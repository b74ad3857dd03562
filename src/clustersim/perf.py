"""Communication-aware job speed: where a training job lands decides how fast it runs.

This module owns :class:`PerfConfig` (the scenario's ``perf:`` section), the
per-job communication profile read from :attr:`Job.attrs` (:func:`job_profile`),
the collective cost formulas (:func:`allreduce_time`, :func:`p2p_time`) and
:class:`CommSpeedModel`, the engine's speed model for ``cluster.network:
topology`` (built by :func:`speed_model_for`). ``docs/speed-model.md`` derives
every formula and cites every default.

Model (alpha-beta with NCCL's bus-bandwidth conventions, literature.md §3.2):

* a training step is compute ``C`` plus the communication of the job's
  collectives on its placement: tensor-parallel all-reduces (4 per layer per
  micro-batch, Megatron-LM), pipeline point-to-point sends between stages and
  the data-parallel gradient all-reduce. Ranks follow Megatron's order (tensor
  fastest, then data, then pipeline) over the job's devices in increasing id;
* an all-reduce over a group that touches ``D_l`` distinct groups of level
  ``l`` (``D_-1`` = group size ``n``) costs, hierarchically
  (reduce-scatter up the levels, all-gather down)::

      t = (2 S / n) * sum_l (D_{l-1} - D_l) / B_l  +  2 * sum_l (D_{l-1} / D_l - 1) * a_l

  which is NCCL's ``2 (n-1)/n * S/B`` on one level and the textbook
  two-level formula on two; ``algorithm: ring`` instead charges one flat ring
  at the slowest crossed link: ``2 (n-1)/n * S / min B + 2 (n-1) max a``;
* speed (``reference: scale_up``, default) is ``(C + T_ref) / (C + T)``, where
  ``T_ref`` is the same communication with every level above the job's
  scale-up domain as fast as that domain. A job inside one scale-up domain
  (node, NVL72 rack, CloudMatrix supernode) runs at exactly 1.0; a job spread
  across the scale-out fabric slows down by the formula. With ``reference:
  compute_only`` the trace duration is pure compute and speed is ``C / (C + T)``,
  so faster scale-up links also count (for comparing different hardware).

Per-job inputs come from ``Job.attrs`` (optional trace CSV columns, numbers),
falling back to :class:`PerfConfig`: ``comm_fraction``, ``model_params``,
``tp``, ``pp``, ``dp``, ``hidden_size``, ``num_layers``, ``tokens_per_step``,
``step_time_s``, ``micro_batches`` (see :data:`ATTR_KEYS`). Single-device and
fractional jobs always run at 1.0. Cost per job start: O(k * levels) numpy work
for a job of ``k`` devices (the profile is resolved once per job).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustersim.errors import ClusterSimError, ConfigError
from clustersim.topology import Cluster
from clustersim.workload.job import FULL_GPU_MILLI, Job

if TYPE_CHECKING:
    from clustersim.engine import SpeedModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BF16_BYTES = 2.0
"""Bytes per BF16 element (gradients and activations), literature.md §3.2 [D]."""
DEFAULT_MFU = 0.40
"""Model FLOPs utilisation used to turn FLOPs into compute time: Llama 3 BF16 MFU
38-43 % (literature.md §3.2) [S]."""
FLOPS_PER_PARAM_TOKEN = 6.0
"""Training FLOPs per parameter per token (forward + backward), literature.md §3.2 [U]."""
TP_ALLREDUCES_PER_LAYER = 4
"""Megatron-LM tensor parallelism: 2 all-reduces forward + 2 backward per layer per
micro-batch (Narayanan et al. SC'21; literature.md §3.2) [S]."""

ATTR_KEYS = (
    "comm_fraction",
    "model_params",
    "tp",
    "pp",
    "dp",
    "hidden_size",
    "num_layers",
    "tokens_per_step",
    "step_time_s",
    "micro_batches",
)
"""Job attributes (trace CSV columns) the speed model reads."""


class PerfConfig(BaseModel):
    """Scenario section ``perf:``: the speed model's options and defaults for jobs lacking attrs.

    Each per-job field is the default for jobs whose trace has no such column;
    a job's own attribute always wins. ``comm_fraction`` and ``model_params``
    are exclusive here (a job without either runs at speed 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    algorithm: Literal["hierarchical", "ring"] = Field(
        default="hierarchical",
        description="all-reduce cost: hierarchical (per-level reduce-scatter/all-gather, "
        "rail-optimised NCCL) or one flat ring at the slowest crossed link",
    )
    reference: Literal["scale_up", "compute_only"] = Field(
        default="scale_up",
        description="what a trace duration means: run time with all communication on the "
        "scale-up fabric (jobs inside one domain run at 1.0), or pure compute",
    )
    comm_fraction: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="share of step time spent communicating inside one scale-up domain",
    )
    model_params: float | None = Field(default=None, gt=0, description="parameters")
    tp: int = Field(default=1, ge=1, description="tensor-parallel degree")
    pp: int = Field(default=1, ge=1, description="pipeline-parallel degree")
    hidden_size: int | None = Field(default=None, gt=0, description="model width h")
    num_layers: int | None = Field(default=None, gt=0, description="transformer layers")
    tokens_per_step: float | None = Field(
        default=None, gt=0, description="global batch in tokens per step"
    )
    step_time_s: float | None = Field(
        default=None, gt=0, description="compute seconds per step (else from FLOPs)"
    )
    micro_batches: int = Field(
        default=1, ge=1, description="micro-batches per step (latency terms of TP and PP)"
    )
    grad_bytes: float = Field(default=BF16_BYTES, gt=0, description="bytes per gradient")
    act_bytes: float = Field(default=BF16_BYTES, gt=0, description="bytes per activation")
    mfu: float = Field(default=DEFAULT_MFU, gt=0, le=1, description="model FLOPs utilisation")
    dp_overlap: float = Field(
        default=0.0, ge=0, le=1, description="share of the DP all-reduce hidden behind compute"
    )
    ecmp_penalty: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="bandwidth lost to ECMP hash collisions on multi-hop scale-out levels",
    )

    @model_validator(mode="after")
    def _exclusive(self) -> PerfConfig:
        if self.comm_fraction is not None and self.model_params is not None:
            raise ValueError("give either 'comm_fraction' or 'model_params' as the default")
        return self


# --------------------------------------------------------------------------- job profiles


@dataclass(frozen=True, slots=True)
class JobProfile:
    """What the speed model knows about one job's communication (see :func:`job_profile`).

    ``kind``: ``none`` (runs at 1.0), ``fraction`` (one all-reduce over all
    ranks carrying ``fraction`` of the step at the reference) or ``model``
    (3D-parallel transformer). Byte counts are per step; ``tp_bytes`` is what
    each TP group all-reduces in total, ``pp_bytes`` what each device sends
    across one stage boundary in one direction.
    """

    kind: Literal["none", "fraction", "model"]
    tp: int = 1
    pp: int = 1
    dp: int = 1
    fraction: float = 0.0
    compute_s: float | None = None
    flops: float = 0.0
    dp_bytes: float = 0.0
    tp_bytes: float = 0.0
    tp_calls: int = 0
    pp_bytes: float = 0.0
    pp_calls: int = 0


_NONE = JobProfile("none")


def _attr(job: Job, key: str) -> float | None:
    v = job.attrs.get(key)
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(
            f"job '{job.id}': attribute '{key}' must be a number, got {v!r}"
        ) from None
    if math.isnan(f):
        return None
    return f


def _int_of(job: Job, key: str, value: float, minimum: int = 1) -> int:
    if not (value >= minimum and float(value).is_integer()):
        raise ConfigError(
            f"job '{job.id}': '{key}' must be a whole number >= {minimum}, got {value}"
        )
    return int(value)


def job_profile(job: Job, cfg: PerfConfig) -> JobProfile:
    """Resolve ``job``'s communication profile from its attrs and ``cfg`` defaults.

    Precedence: the job's ``comm_fraction``, then its ``model_params``, then
    the config's default of either; none of them: no communication (speed 1).
    Raises :class:`ConfigError` naming the job and the attribute when the
    description is inconsistent (degrees that do not divide the job, a
    transformer without the sizes its collectives need).
    """
    n = job.num_gpus
    if n <= 1 or job.gpu_milli < FULL_GPU_MILLI:
        return _NONE
    frac = _attr(job, "comm_fraction")
    params = _attr(job, "model_params")
    if frac is None and params is None:
        frac, params = cfg.comm_fraction, cfg.model_params
    if frac is not None:
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"job '{job.id}': comm_fraction must be in [0, 1), got {frac}")
        return JobProfile("fraction", dp=n, fraction=frac) if frac > 0 else _NONE
    if params is None:
        return _NONE
    if params <= 0:
        raise ConfigError(f"job '{job.id}': model_params must be > 0, got {params}")

    def get(key: str) -> float | None:
        v = _attr(job, key)
        return v if v is not None else getattr(cfg, key, None)

    tp = _int_of(job, "tp", get("tp") or 1)
    pp = _int_of(job, "pp", get("pp") or 1)
    if n % (tp * pp):
        raise ConfigError(
            f"job '{job.id}': tp={tp} x pp={pp} = {tp * pp} does not divide its {n} devices"
        )
    dp = n // (tp * pp)
    dp_attr = _attr(job, "dp")
    if dp_attr is not None and _int_of(job, "dp", dp_attr) != dp:
        raise ConfigError(
            f"job '{job.id}': tp={tp} x pp={pp} x dp={int(dp_attr)} != its {n} devices"
        )
    tokens = get("tokens_per_step")
    step = get("step_time_s")
    m = _int_of(job, "micro_batches", get("micro_batches") or 1)
    if step is None and tokens is None:
        raise ConfigError(
            f"job '{job.id}': a model_params job needs 'tokens_per_step' (compute from FLOPs) "
            "or 'step_time_s' (trace columns, or perf defaults)"
        )
    flops = FLOPS_PER_PARAM_TOKEN * params * tokens if tokens is not None else 0.0
    tp_bytes = pp_bytes = 0.0
    tp_calls = pp_calls = 0
    if tp > 1 or pp > 1:
        h, layers = get("hidden_size"), get("num_layers")
        missing = [
            k
            for k, v in (("hidden_size", h), ("num_layers", layers), ("tokens_per_step", tokens))
            if v is None
        ]
        if missing:
            raise ConfigError(
                f"job '{job.id}': tp={tp}, pp={pp} needs {', '.join(missing)} to size its "
                "tensor/pipeline traffic (trace columns, or perf defaults)"
            )
        assert h is not None and layers is not None and tokens is not None
        per_replica = tokens / dp
        if tp > 1:
            stage_layers = layers / pp
            tp_bytes = TP_ALLREDUCES_PER_LAYER * stage_layers * per_replica * h * cfg.act_bytes
            tp_calls = TP_ALLREDUCES_PER_LAYER * math.ceil(stage_layers) * m
        if pp > 1:
            pp_bytes = per_replica * h * cfg.act_bytes / tp
            pp_calls = m
    return JobProfile(
        "model",
        tp=tp,
        pp=pp,
        dp=dp,
        compute_s=step,
        flops=flops,
        dp_bytes=params / (tp * pp) * cfg.grad_bytes if dp > 1 else 0.0,
        tp_bytes=tp_bytes,
        tp_calls=tp_calls,
        pp_bytes=pp_bytes,
        pp_calls=pp_calls,
    )


# --------------------------------------------------------------------------- formulas


def level_counts(rows: IntArray, group_nodes: Sequence[int]) -> IntArray:
    """``D``: distinct groups per level each row touches.

    ``rows`` holds node ids (each row non-decreasing, one row per collective
    group); ``group_nodes[l]`` is the nodes per group of level ``l``. Column 0
    is the row length (``D_-1``), column ``l + 1`` the number of distinct
    level-``l`` groups.
    """
    r, w = rows.shape
    out = np.empty((r, len(group_nodes) + 1), dtype=np.int64)
    out[:, 0] = w
    for i, s in enumerate(group_nodes):
        ids = rows // s if s > 1 else rows
        out[:, i + 1] = 1 + np.count_nonzero(ids[:, 1:] != ids[:, :-1], axis=1)
    return out


def allreduce_rows(
    size: float,
    counts: IntArray,
    bandwidth: FloatArray,
    latency: FloatArray,
    algorithm: str = "hierarchical",
) -> FloatArray:
    """All-reduce time (s) of ``size`` bytes for each row of ``counts`` (see module doc).

    ``bandwidth`` is (levels,) or (rows, levels) bytes/s per device; ``latency``
    is (levels,) seconds.
    """
    d = counts.astype(np.float64)
    n = d[:, 0]
    crossed = d[:, :-1] - d[:, 1:]  # (rows, levels): members joined at each level
    bw = np.broadcast_to(bandwidth, crossed.shape)
    if algorithm == "ring":
        used = crossed > 0
        bmin = np.where(used, bw, np.inf).min(axis=1)
        amax = np.where(used, latency, 0.0).max(axis=1)
        t = np.where(n > 1, 2.0 * (n - 1) / n * size / bmin + 2.0 * (n - 1) * amax, 0.0)
        return np.asarray(t, dtype=np.float64)
    bw_t = 2.0 * size / n * (crossed / bw).sum(axis=1)
    lat_t = 2.0 * ((d[:, :-1] / d[:, 1:] - 1.0) * latency).sum(axis=1)
    return np.asarray(bw_t + lat_t, dtype=np.float64)


def allreduce_time(
    size: float,
    counts: Sequence[int],
    bandwidth: Sequence[float],
    latency: Sequence[float],
    algorithm: str = "hierarchical",
) -> float:
    """All-reduce time (s) of one group: ``counts`` = ``[n, D_0, D_1, ..., 1]``.

    Example: 16 ranks on 2 nodes of one leaf, 450 GB/s NVLink, 50 GB/s NIC::

        allreduce_time(S, [16, 2, 1], [450e9, 50e9], [0, 0])
        == 2*(8-1)/8 * S/450e9 + 2*(2-1)/2 * (S/8)/50e9
    """
    c = np.asarray([counts], dtype=np.int64)
    bw = np.asarray(bandwidth, dtype=np.float64)
    lat = np.asarray(latency, dtype=np.float64)
    if c.shape[1] != len(bw) + 1 or len(lat) != len(bw):
        raise ValueError("counts needs one more entry than bandwidth and latency")
    return float(allreduce_rows(size, c, bw, lat, algorithm)[0])


def p2p_time(size: float, bandwidth: float, latency: float, messages: int = 1) -> float:
    """Point-to-point transfer of ``size`` bytes in ``messages`` messages: ``S/B + m * a``."""
    return size / bandwidth + messages * latency


@dataclass(frozen=True, slots=True)
class StepTime:
    """One step of a job on a placement (seconds); ``*_ref`` at the reference fabric."""

    compute: float
    tp: float
    pp: float
    dp: float
    comm: float
    comm_ref: float
    speed: float


# --------------------------------------------------------------------------- model


class CommSpeedModel:
    """The engine's speed model for ``network: topology`` (see the module docstring).

    Call it as ``model(job, devices, cluster) -> speed``. Precomputes the
    cluster's per-level arrays once; job profiles are cached by job id.
    """

    def __init__(self, cluster: Cluster, cfg: PerfConfig | None = None) -> None:
        self.cfg = cfg or PerfConfig()
        self._profiles: dict[str, JobProfile] = {}
        self._flops: dict[str, float] = {}
        self.kinds: dict[str, int] = {"none": 0, "fraction": 0, "model": 0}
        self._bind(cluster)

    def _bind(self, cluster: Cluster) -> None:
        self.cluster = cluster
        levels = cluster.levels
        self.sizes = [lv.nodes for lv in levels]
        self.bw = np.array([lv.bandwidth for lv in levels], dtype=np.float64)
        self.lat = np.array([lv.latency for lv in levels], dtype=np.float64)
        u = cluster.scale_up_top
        self.u = u
        pen = np.ones(len(levels))
        pen[u + 2 :] = 1.0 - self.cfg.ecmp_penalty
        self.penalty = pen
        self.lat_ref = self.lat.copy()
        self.lat_ref[u + 1 :] = self.lat[u]
        self.node_bw: list[FloatArray] | None = None
        if not cluster.uniform_links:
            self.node_bw = [cluster.node_bandwidth(i) for i in range(len(levels))]

    # -- profiles
    def profile(self, job: Job) -> JobProfile:
        """The cached :class:`JobProfile` of ``job``."""
        p = self._profiles.get(job.id)
        if p is None:
            p = job_profile(job, self.cfg)
            self._profiles[job.id] = p
            self.kinds[p.kind] += 1
        return p

    def _device_flops(self, nodes: IntArray, job: Job) -> float:
        types = self.cluster.node_type
        names = (
            {types[int(n)] for n in np.unique(nodes)}
            if len(self.cluster.device_types) > 1
            else {self.cluster.device_types[0]}
        )
        best = math.inf
        for t in names:
            f = self._flops.get(t)
            if f is None:
                from clustersim.hardware import get_device

                try:
                    f = float(get_device(t).flops)
                except ClusterSimError as exc:
                    raise ConfigError(
                        f"job '{job.id}': compute time from FLOPs needs the peak of device "
                        f"'{t}' ({exc}); give 'step_time_s' instead"
                    ) from None
                self._flops[t] = f
            best = min(best, f)
        return best

    # -- per-level parameters of a set of rows
    def _row_bw(self, rows: IntArray) -> tuple[FloatArray, FloatArray]:
        """(actual, reference) bandwidth per row and level, shape (rows, levels) or (levels,)."""
        if self.node_bw is None:
            bw = self.bw
            ref = bw.copy()
            ref[self.u + 1 :] = bw[self.u]
            return bw * self.penalty, ref
        cols = [arr[rows].min(axis=1) for arr in self.node_bw]
        b = np.stack(cols, axis=1)
        ref = b.copy()
        ref[:, self.u + 1 :] = b[:, self.u : self.u + 1]
        return b * self.penalty, ref

    def _allreduce(self, size: float, rows: IntArray, calls: int = 1) -> tuple[float, float]:
        """Slowest group: all-reduce ``size`` bytes in ``calls`` collectives (latency x calls)."""
        if size <= 0 or rows.shape[1] <= 1:
            return 0.0, 0.0
        counts = level_counts(rows, self.sizes)
        bw, ref = self._row_bw(rows)
        alg = self.cfg.algorithm
        k = float(max(calls, 1))
        t = allreduce_rows(size, counts, bw, self.lat * k, alg)
        t_ref = allreduce_rows(size, counts, ref, self.lat_ref * k, alg)
        i = int(np.argmax(t))
        return float(t[i]), float(t_ref[i])

    def _p2p(self, size: float, calls: int, a: IntArray, b: IntArray) -> tuple[float, float]:
        """Both directions across the slowest stage boundary (pairs of nodes ``a``, ``b``)."""
        if size <= 0 or a.size == 0:
            return 0.0, 0.0
        lev = np.zeros(a.shape, dtype=np.int64)
        for s in self.sizes:
            lev += (a // s) != (b // s)
        rows = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
        bw, ref = self._row_bw(rows)
        if bw.ndim == 1:
            b_act, b_ref = bw[lev], ref[lev]
        else:
            idx = np.arange(len(lev))
            b_act, b_ref = bw[idx, lev], ref[idx, lev]
        t = 2.0 * size / b_act + 2.0 * calls * self.lat[lev]
        t_ref = 2.0 * size / b_ref + 2.0 * calls * self.lat_ref[lev]
        i = int(np.argmax(t))
        return float(t[i]), float(t_ref[i])

    # -- the step
    def step_time(self, job: Job, devices: Sequence[int]) -> StepTime:
        """Step breakdown of ``job`` on ``devices`` (``speed`` is what :meth:`__call__` returns)."""
        p = self.profile(job)
        if p.kind == "none":
            return StepTime(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        devs = np.sort(np.asarray(devices, dtype=np.int64))
        nodes = self.cluster.node_of[devs]
        cfg = self.cfg
        if p.kind == "fraction":
            row = nodes.reshape(1, -1)
            counts = level_counts(row, self.sizes)
            bw, ref = self._row_bw(row)
            zero = np.zeros_like(self.lat)
            t = float(allreduce_rows(1.0, counts, bw, zero, cfg.algorithm)[0])
            t_ref = float(allreduce_rows(1.0, counts, ref, zero, cfg.algorithm)[0])
            ratio = t / t_ref if t_ref > 0 else 1.0
            f = p.fraction
            comm, comm_ref, comp = f * ratio, f, 1.0 - f
            return self._finish(comp, 0.0, 0.0, comm, comm, comm_ref)
        grid = nodes.reshape(p.pp, p.dp, p.tp)
        tp_t, tp_r = self._allreduce(p.tp_bytes, grid.reshape(p.pp * p.dp, p.tp), p.tp_calls)
        dp_rows = grid.transpose(0, 2, 1).reshape(p.pp * p.tp, p.dp)
        dp_t, dp_r = self._allreduce(p.dp_bytes, dp_rows)
        stages = nodes.reshape(p.pp, p.dp * p.tp)
        pp_t, pp_r = self._p2p(p.pp_bytes, p.pp_calls, stages[:-1].ravel(), stages[1:].ravel())
        keep = 1.0 - cfg.dp_overlap
        comm = tp_t + pp_t + keep * dp_t
        comm_ref = tp_r + pp_r + keep * dp_r
        if p.compute_s is not None:
            comp = p.compute_s
        else:
            comp = p.flops / (job.num_gpus * self._device_flops(nodes, job) * cfg.mfu)
        return self._finish(comp, tp_t, pp_t, keep * dp_t, comm, comm_ref)

    def _finish(
        self, comp: float, tp: float, pp: float, dp: float, comm: float, comm_ref: float
    ) -> StepTime:
        if self.cfg.reference == "compute_only":
            speed = comp / (comp + comm) if comp + comm > 0 else 1.0
        else:
            speed = (comp + comm_ref) / (comp + comm) if comp + comm > 0 else 1.0
        speed = min(1.0, speed)
        return StepTime(comp, tp, pp, dp, comm, comm_ref, speed)

    def __call__(self, job: Job, devices: tuple[int, ...], cluster: Cluster) -> float:
        """Speed in (0, 1] of ``job`` on ``devices``."""
        if cluster is not self.cluster:
            self._bind(cluster)
        if job.num_gpus <= 1:
            return 1.0
        return self.step_time(job, devices).speed

    def check(self, jobs: Sequence[Job]) -> Mapping[str, int]:
        """Resolve every job's profile now (errors up front); returns counts by kind."""
        for j in jobs:
            self.profile(j)
        return dict(self.kinds)


def speed_model_for(scenario: Any, cluster: Cluster) -> SpeedModel:
    """The speed model a scenario with ``cluster.network: topology`` uses."""
    cfg = getattr(scenario, "perf", None)
    return CommSpeedModel(cluster, cfg if isinstance(cfg, PerfConfig) else None)
