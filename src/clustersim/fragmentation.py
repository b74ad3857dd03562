"""GPU-sharing placement and the FGD fragmentation measure (Weng et al., USENIX ATC'23).

This module owns:

* :class:`GpuShareState` -- a vectorised node state for GPU-sharing placement: per
  node free CPU (milli-cores), free memory (MiB), free milli-GPU per GPU (array
  ``nodes x max_gpus``, padded with 0 for GPUs a node does not have), GPU model,
  and the per-node count of placed pods by GPU-request class (used by
  GpuClustering). It checks every allocation and keeps the FGD caches current.
* :class:`TypicalMix` -- the *target workload* of FGD: the most popular pod shapes
  (CPU, GPU count, milli-GPU per GPU, GPU model constraint) covering ~95 % of a
  pod list, CPU-only pods included, with their normalised frequencies.
* The fragmentation measure (:func:`node_fragment`, :func:`cluster_fragmentation`)
  and stranded-GPU helpers (:func:`stranded_gpu_milli`, :func:`count_stranded_gpus`).
* Six placement policies with one signature, ``choose(state, pod, rng) ->
  (node, gpu_ids) | None``: :func:`fgd`, :func:`bestfit`, :func:`dotproduct`,
  :func:`gpupacking`, :func:`gpuclustering` and :func:`random`; registry
  :data:`POLICIES`. They are pure (never mutate the state) and break ties at random
  with the passed :class:`numpy.random.Generator`.
* :func:`replay` -- place a sequence of pods one by one (no departures), dropping
  pods that fit nowhere, and record allocation and fragmentation after each pod.
* :func:`gpu_only_mix` -- the typical mix without the CPU dimension, for the
  event-driven engine (which models no CPU); the engine placements built on this
  module live in :mod:`clustersim.schedulers.share_placement`.
* :func:`fragmentation_timeline` / :func:`run_fragmentation` -- the FGD fragment
  amount, fragmentation ratio and unallocated share of an engine run (its segments,
  or a results folder's ``segments.parquet`` + ``jobs.parquet``) at sample times,
  vectorised over samples and devices (:class:`FragTimeline`).

Rules follow the authors' simulator, hkust-adsl/kubernetes-scheduler-simulator
(``pkg/utils/frag.go``, ``pkg/simulator/plugin/*_score.go``, ``open_gpu_share.go``,
``pkg/type/resource.go``) and the Kubernetes framework it runs in: a node is
*feasible* for a pod when free CPU >= request and free memory >= request
(NodeResourcesFit) and, for GPU pods, the node's model is acceptable and at least
``num_gpu`` of its GPUs each have ``>= gpu_milli`` free (Open-Gpu-Share filter).
Each policy gives every feasible node an integer score in 0..100 exactly as the
plugin does (including Go's integer truncation), the scheduler keeps the nodes with
the highest score and breaks ties by ``tie_break``: ``"name"`` (default) takes the
lowest node name, as the authors' kube-scheduler fork does (mental2008/kubernetes
v1.20.5-minor, ``selectHost``: "for reproducibility, choose the smallest
lexicographical order"); ``"random"`` picks uniformly with the passed generator, as
stock kube-scheduler does. Then the GPUs are chosen by the policy's GPU-selection
rule. Units: CPU milli-cores,
memory MiB, GPU milli-GPU (1000 = one whole GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from clustersim.errors import ConfigError, SchedulerError, UnknownNameError
from clustersim.workload.openb import OpenbNodes, OpenbPods

if TYPE_CHECKING:
    from clustersim.topology import Cluster

MILLI = 1000
"""One whole GPU in milli-GPU."""
MAX_NODE_SCORE = 100
"""Kubernetes ``framework.MaxNodeScore``."""
MAX_SPEC_CPU = 128_000
"""Normaliser for CPU in BestFit/DotProduct (authors' ``MaxSpecCpu``, milli-cores)."""
MAX_SPEC_GPU = 8_000
"""Normaliser for GPU in BestFit/DotProduct/GpuClustering (``MaxSpecGpu``, milli-GPU)."""
DEFAULT_CPU_REQUEST = 100
"""Kubernetes ``GetNonzeroRequests`` default for a zero CPU request (milli-cores)."""
TYPICAL_COVERAGE = 0.95
"""Share of pods the typical mix covers (authors' ``podPopularityThreshold: 95``)."""
N_TAGS = 9
"""GPU-request classes for GpuClustering: 0 = share-gpu, k = k whole GPUs (1..8)."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Placement = tuple[int, tuple[int, ...]]


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What one pod asks for.

    Attributes:
        cpu_milli: CPU request, milli-cores.
        memory_mib: memory request, MiB.
        num_gpu: GPUs requested (0 = CPU-only).
        gpu_milli: share of each requested GPU, milli-GPU (1..1000; 0 if CPU-only).
        gpu_spec: acceptable GPU models joined by ``|``; ``''`` = any model.
        name: optional identifier (not used for placement).
    """

    cpu_milli: int
    memory_mib: int = 0
    num_gpu: int = 0
    gpu_milli: int = 0
    gpu_spec: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0 or self.num_gpu < 0:
            raise ConfigError(f"pod '{self.name}': negative request {self}")
        if not 0 <= self.gpu_milli <= MILLI or (self.num_gpu == 0) != (self.gpu_milli == 0):
            raise ConfigError(
                f"pod '{self.name}': num_gpu={self.num_gpu} with gpu_milli={self.gpu_milli}"
                " (CPU-only pods have both 0; GPU pods have gpu_milli in 1..1000)"
            )
        if self.num_gpu > 1 and self.gpu_milli < MILLI:
            raise ConfigError(f"pod '{self.name}': only single-GPU pods may share a GPU")

    @property
    def total_gpu_milli(self) -> int:
        """GPU demand in milli-GPU (``num_gpu * gpu_milli``)."""
        return self.num_gpu * self.gpu_milli

    @property
    def is_shared(self) -> bool:
        """True for a pod that takes a fraction of one GPU."""
        return self.num_gpu == 1 and self.gpu_milli < MILLI

    @property
    def tag(self) -> int:
        """GpuClustering class: -1 CPU-only, 0 share-gpu, k for k whole GPUs."""
        if self.num_gpu == 0:
            return -1
        return 0 if self.is_shared else self.num_gpu


def pods_from_openb(pods: OpenbPods) -> list[PodRequest]:
    """Turn a loaded openb pod list into :class:`PodRequest` objects (file order)."""
    return [
        PodRequest(
            int(pods.cpu_milli[i]),
            int(pods.memory_mib[i]),
            int(pods.num_gpu[i]),
            int(pods.gpu_milli[i]),
            pods.gpu_spec[i],
            pods.name[i],
        )
        for i in range(len(pods))
    ]


def _accepts(spec: str, model: str) -> bool:
    """Authors' ``IsNodeAccessibleToPodByType``: empty spec takes any model."""
    models = [s for s in spec.split("|") if s]
    if not models:
        return True
    return bool(model) and model in models


# --------------------------------------------------------------------------- typical mix


@dataclass(frozen=True)
class TypicalMix:
    """The FGD target workload: popular pod shapes and their frequencies.

    Row ``m`` is one shape. ``freq`` sums to 1 (renormalised over the kept
    shapes); ``coverage`` is the share of all pods the kept shapes account for.
    """

    cpu_milli: IntArray
    num_gpu: IntArray
    gpu_milli: IntArray
    gpu_spec: tuple[str, ...]
    freq: FloatArray
    coverage: float

    def __len__(self) -> int:
        return len(self.freq)

    @property
    def is_gpu(self) -> BoolArray:
        """True for shapes that request GPUs."""
        return self.num_gpu > 0

    @classmethod
    def from_pods(cls, pods: OpenbPods, threshold: float = TYPICAL_COVERAGE) -> TypicalMix:
        """Typical mix of an openb pod list (see :func:`typical_mix`)."""
        return typical_mix(pods.cpu_milli, pods.num_gpu, pods.gpu_milli, pods.gpu_spec, threshold)


def typical_mix(
    cpu_milli: Sequence[int] | IntArray,
    num_gpu: Sequence[int] | IntArray,
    gpu_milli: Sequence[int] | IntArray,
    gpu_spec: Sequence[str],
    threshold: float = TYPICAL_COVERAGE,
) -> TypicalMix:
    """Most popular pod shapes covering ``threshold`` of the pods (authors' ``GetTypicalPods``).

    A shape is ``(cpu, gpu_milli, num_gpu, gpu_spec)``; memory is not part of it
    and a zero CPU request counts as 100 m (Kubernetes non-zero default). Shapes
    are sorted by count, most frequent first; equal counts are ordered by larger
    CPU, then larger milli-GPU, larger GPU count, and lexicographically larger
    spec first (the reverse of the authors' ``Less``). Shapes are taken one at a
    time until their cumulative count reaches ``threshold`` of all pods, then the
    kept frequencies are renormalised to sum to 1. CPU-only pods are included
    (``isInvolvedCpuPods: true``; ``gpuResWeight: 0``).
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"typical-mix threshold {threshold} must be in (0, 1]")
    n = len(gpu_spec)
    if n == 0:
        raise ConfigError("typical mix of an empty pod list")
    counts: dict[tuple[int, int, int, str], int] = {}
    for i in range(n):
        cpu = int(cpu_milli[i]) or DEFAULT_CPU_REQUEST
        key = (cpu, int(gpu_milli[i]), int(num_gpu[i]), gpu_spec[i])
        counts[key] = counts.get(key, 0) + 1
    order = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    kept: list[tuple[tuple[int, int, int, str], int]] = []
    cum = 0
    for key, cnt in order:
        if cum >= threshold * n:
            break
        kept.append((key, cnt))
        cum += cnt
    freq = np.asarray([c for _, c in kept], dtype=np.float64) / cum
    return TypicalMix(
        cpu_milli=np.asarray([k[0] for k, _ in kept], dtype=np.int64),
        num_gpu=np.asarray([k[2] for k, _ in kept], dtype=np.int64),
        gpu_milli=np.asarray([k[1] for k, _ in kept], dtype=np.int64),
        gpu_spec=tuple(k[3] for k, _ in kept),
        freq=freq,
        coverage=cum / n,
    )


def gpu_only_mix(
    num_gpu: Sequence[int] | IntArray,
    gpu_milli: Sequence[int] | IntArray,
    gpu_spec: Sequence[str] | None = None,
    threshold: float = TYPICAL_COVERAGE,
) -> TypicalMix:
    """Typical mix of GPU requests alone, for clusters whose CPU is not modelled.

    :func:`typical_mix` with every pod given the same CPU request, so shapes are
    ``(gpu_milli, num_gpu, gpu_spec)`` (pods differing only in CPU merge; count ties
    are ordered by larger milli-GPU, larger GPU count, larger spec), then the mix's
    CPU column is set to 0 so that nodes with no CPU capacity (``cpu_free`` 0) pass
    every shape's CPU test. ``gpu_spec`` None means ``''`` (any model) for every pod.
    """
    n = len(num_gpu)
    spec = [""] * n if gpu_spec is None else [str(x) for x in gpu_spec]
    mix = typical_mix(np.zeros(n, dtype=np.int64), num_gpu, gpu_milli, spec, threshold)
    return replace(mix, cpu_milli=np.zeros(len(mix), dtype=np.int64))


# --------------------------------------------------------------------------- state


class GpuShareState:
    """Vectorised free capacity of a GPU-sharing cluster (mutable, checked).

    Arrays (``N`` nodes, ``G`` = largest GPU count):

    * ``cpu_cap``/``cpu_free`` (N,), milli-cores; ``mem_cap``/``mem_free`` (N,), MiB;
    * ``gpu_count`` (N,); ``gpu_exists`` (N, G) bool;
    * ``gpu_free`` (N, G) milli-GPU free per GPU; 0 where ``gpu_exists`` is False;
    * ``tags`` (N, 9) number of placed pods per GPU-request class (share, 1..8 GPUs);
    * FGD caches when a :class:`TypicalMix` is attached: ``access`` (N, M) (model
      accepted), ``cnt_ge`` (N, M) GPUs with free >= the shape's milli-GPU,
      ``sum_lt`` (N, M) free milli-GPU on GPUs with less than that, and
      ``frag`` (N,) the node's fragment amount.

    Only :meth:`allocate`, :meth:`set_gpu_free` and :meth:`set_mix` mutate; the first two
    refuse any over-allocation.
    """

    def __init__(
        self,
        names: Sequence[str],
        cpu_milli: Sequence[int] | IntArray,
        memory_mib: Sequence[int] | IntArray,
        gpu_count: Sequence[int] | IntArray,
        model: Sequence[str],
        mix: TypicalMix | None = None,
    ) -> None:
        self.names = list(names)
        n = len(self.names)
        if not (len(cpu_milli) == len(memory_mib) == len(gpu_count) == len(model) == n):
            raise ConfigError("node arrays of unequal length")
        if n == 0:
            raise ConfigError("a cluster needs at least one node")
        self.model = list(model)
        order = sorted(range(n), key=self.names.__getitem__)
        self.name_rank = np.empty(n, dtype=np.int64)
        self.name_rank[order] = np.arange(n)
        self.cpu_cap = np.asarray(cpu_milli, dtype=np.int64).copy()
        self.mem_cap = np.asarray(memory_mib, dtype=np.int64).copy()
        self.gpu_count = np.asarray(gpu_count, dtype=np.int64).copy()
        if (self.cpu_cap < 0).any() or (self.mem_cap < 0).any() or (self.gpu_count < 0).any():
            raise ConfigError("negative node capacity")
        g = max(int(self.gpu_count.max()), 1)
        self.gpu_exists: BoolArray = np.arange(g)[None, :] < self.gpu_count[:, None]
        self.gpu_free: IntArray = np.where(self.gpu_exists, MILLI, 0).astype(np.int64)
        self.cpu_free = self.cpu_cap.copy()
        self.mem_free = self.mem_cap.copy()
        self.tags: IntArray = np.zeros((n, N_TAGS), dtype=np.int64)
        self._models = sorted(set(self.model))
        self.model_id = np.asarray([self._models.index(m) for m in self.model], dtype=np.int64)
        self._spec_cache: dict[str, BoolArray] = {}
        self.mix: TypicalMix | None = None
        self.set_mix(mix)

    def set_mix(self, mix: TypicalMix | None) -> None:
        """Attach ``mix`` (or detach with None) and rebuild the FGD caches of every node.

        Cost O(N x G x M) for ``M`` shapes; the occupancy is kept.
        """
        self.mix = mix
        if mix is None:
            return
        n = len(self.names)
        self.access: BoolArray = np.stack([self.accepts(s) for s in mix.gpu_spec], axis=1).reshape(
            n, len(mix)
        )
        self.cnt_ge, self.sum_lt = _thresholds(self.gpu_free, mix.gpu_milli)
        self.frag: FloatArray = _frag(
            self.cnt_ge, self.sum_lt, self.gpu_free.sum(axis=1), self.cpu_free, self.access, mix
        )

    @classmethod
    def from_openb(cls, nodes: OpenbNodes, mix: TypicalMix | None = None) -> GpuShareState:
        """Build the state of an openb node list (all nodes start empty)."""
        return cls(nodes.sn, nodes.cpu_milli, nodes.memory_mib, nodes.gpu, nodes.model, mix)

    def __len__(self) -> int:
        return len(self.names)

    # ---- read-only views
    @property
    def total_gpu_milli(self) -> int:
        """GPU capacity of the cluster, milli-GPU."""
        return int(self.gpu_count.sum()) * MILLI

    @property
    def idle_gpu_milli(self) -> int:
        """Unallocated GPU capacity, milli-GPU."""
        return int(self.gpu_free.sum())

    @property
    def allocated_gpu_milli(self) -> int:
        """Allocated GPU capacity, milli-GPU."""
        return self.total_gpu_milli - self.idle_gpu_milli

    def accepts(self, spec: str) -> BoolArray:
        """Nodes whose GPU model a pod with ``spec`` accepts (all nodes for ``''``)."""
        hit = self._spec_cache.get(spec)
        if hit is None:
            ok = np.asarray([_accepts(spec, m) for m in self._models], dtype=np.bool_)
            hit = ok[self.model_id]
            self._spec_cache[spec] = hit
        return hit

    def feasible(self, pod: PodRequest) -> BoolArray:
        """Nodes that can host ``pod`` now (CPU, memory, model and per-GPU free share)."""
        ok: BoolArray = (self.cpu_free >= pod.cpu_milli) & (self.mem_free >= pod.memory_mib)
        if pod.num_gpu > 0:
            fits = (self.gpu_free >= pod.gpu_milli).sum(axis=1) >= pod.num_gpu
            ok &= fits & self.accepts(pod.gpu_spec)
        return ok

    def copy(self) -> GpuShareState:
        """An independent copy (same mix object)."""
        out = object.__new__(GpuShareState)
        out.__dict__.update(self.__dict__)
        for key, val in self.__dict__.items():
            if isinstance(val, np.ndarray):
                out.__dict__[key] = val.copy()
        out._spec_cache = dict(self._spec_cache)
        return out

    # ---- mutation
    def allocate(
        self, node: int, gpu_ids: Sequence[int], pod: PodRequest, policy: str = "placement"
    ) -> None:
        """Place ``pod`` on ``node`` using GPUs ``gpu_ids`` (checked; raises SchedulerError)."""
        n = len(self.names)
        if not 0 <= node < n:
            raise SchedulerError(policy, f"node {node} out of range 0..{n - 1}", pod.name)
        ids = [int(g) for g in gpu_ids]
        where = f"node '{self.names[node]}'"
        if len(ids) != pod.num_gpu or len(set(ids)) != len(ids):
            raise SchedulerError(
                policy, f"{where}: needs {pod.num_gpu} distinct GPUs, got {ids}", pod.name
            )
        if self.cpu_free[node] < pod.cpu_milli or self.mem_free[node] < pod.memory_mib:
            raise SchedulerError(policy, f"{where}: not enough free CPU or memory", pod.name)
        for g in ids:
            if not (0 <= g < self.gpu_count[node]) or self.gpu_free[node, g] < pod.gpu_milli:
                raise SchedulerError(
                    policy, f"{where}: GPU {g} cannot take {pod.gpu_milli} milli", pod.name, ids
                )
        if pod.num_gpu > 0 and not self.accepts(pod.gpu_spec)[node]:
            raise SchedulerError(
                policy, f"{where}: model {self.model[node]} not in '{pod.gpu_spec}'", pod.name
            )
        self.cpu_free[node] -= pod.cpu_milli
        self.mem_free[node] -= pod.memory_mib
        for g in ids:
            self.gpu_free[node, g] -= pod.gpu_milli
        if pod.tag >= 0:
            self.tags[node, min(pod.tag, N_TAGS - 1)] += 1
        if self.mix is not None:
            row = self.gpu_free[node : node + 1]
            cnt, slt = _thresholds(row, self.mix.gpu_milli)
            self.cnt_ge[node], self.sum_lt[node] = cnt[0], slt[0]
            self.frag[node] = _frag(
                cnt,
                slt,
                row.sum(axis=1),
                self.cpu_free[node : node + 1],
                self.access[node : node + 1],
                self.mix,
            )[0]

    def set_gpu_free(self, nodes: Sequence[int] | IntArray, gpu_free: IntArray) -> None:
        """Overwrite the free milli-GPU of ``nodes`` and refresh their FGD caches.

        ``gpu_free`` has one row of ``G`` values per node (padded with 0 beyond the
        node's GPU count); values must lie in 0..1000 on existing GPUs. This is how
        departures, failures and external mirrors (the event-driven engine's
        :mod:`clustersim.schedulers.share_placement`) update the state; CPU, memory and
        ``tags`` are left alone. Cost O(k x G x M) for ``k`` nodes and ``M`` shapes.
        """
        idx = np.asarray(nodes, dtype=np.int64).reshape(-1)
        rows = np.asarray(gpu_free, dtype=np.int64).reshape(idx.size, self.gpu_free.shape[1])
        if idx.size == 0:
            return
        if (idx < 0).any() or (idx >= len(self.names)).any():
            raise ConfigError(f"set_gpu_free: node index out of range 0..{len(self.names) - 1}")
        exists = self.gpu_exists[idx]
        bad = (rows < 0) | (rows > MILLI) | (~exists & (rows != 0))
        if bad.any():
            k, g = (int(x[0]) for x in np.nonzero(bad))
            raise ConfigError(
                f"set_gpu_free: node '{self.names[int(idx[k])]}' GPU {g}: free {int(rows[k, g])}"
                f" milli is outside 0..{MILLI} or the GPU does not exist"
            )
        self.gpu_free[idx] = rows
        mix = self.mix
        if mix is not None:
            cnt, slt = _thresholds(rows, mix.gpu_milli)
            self.cnt_ge[idx], self.sum_lt[idx] = cnt, slt
            self.frag[idx] = _frag(
                cnt, slt, rows.sum(axis=1), self.cpu_free[idx], self.access[idx], mix
            )


def _thresholds(gpu_free: IntArray, milli: IntArray) -> tuple[IntArray, IntArray]:
    """Per node and shape: GPUs with free >= milli, and free milli on GPUs below it."""
    f = gpu_free[:, :, None]
    t = milli[None, None, :]
    ge = f >= t
    cnt = ge.sum(axis=1).astype(np.int64)
    slt = np.where(ge, 0, f).sum(axis=1).astype(np.int64)
    return cnt, slt


def _frag(
    cnt_ge: IntArray,
    sum_lt: IntArray,
    total: IntArray,
    cpu_free: IntArray,
    access: BoolArray,
    mix: TypicalMix,
) -> FloatArray:
    """FGD fragment amount from the per-shape parts; leading axes broadcast.

    ``cnt_ge``/``sum_lt``/``access`` end with the shape axis ``M``; ``total`` and
    ``cpu_free`` have the leading axes only.
    """
    ok = access & (cnt_ge >= mix.num_gpu) & (cpu_free[..., None] >= mix.cpu_milli) & mix.is_gpu
    contrib = np.where(ok, sum_lt, total[..., None])
    out: FloatArray = contrib.astype(np.float64) @ mix.freq
    return out


# --------------------------------------------------------------------------- measure


def node_fragment(state: GpuShareState, mix: TypicalMix | None = None) -> FloatArray:
    """FGD fragment amount of every node, milli-GPU (authors' ``NodeGpuShareFragAmountScore``).

    For node ``n`` and typical shape ``m`` with frequency ``p_m``:

    * ``m`` CPU-only: all of ``n``'s free GPU capacity counts (the authors' code
      sums the ``xl_satisfied`` and ``xr_lack_cpu`` bins alike -- a task that uses no
      GPU cannot use any of them);
    * ``m`` requests GPUs and ``n`` can host it (model accepted, free CPU >= its CPU,
      at least ``num_gpu`` GPUs with free >= its milli-GPU; quadrant Q3): only the
      free capacity on GPUs with less free than ``m``'s milli-GPU counts;
    * otherwise (Q1 lack both, Q2 lack GPU, Q4 lack CPU, no access): all free GPU
      capacity counts.

    ``F_n = sum_m p_m F_n(m)``. Memory is not part of the measure. With ``mix``
    None the state's attached mix is used; the result is computed from scratch
    (the state's cached ``frag`` must agree).
    """
    use = mix if mix is not None else state.mix
    if use is None:
        raise ConfigError("the fragmentation measure needs a TypicalMix")
    cnt, slt = _thresholds(state.gpu_free, use.gpu_milli)
    access = np.stack([state.accepts(s) for s in use.gpu_spec], axis=1).reshape(
        len(state), len(use)
    )
    return _frag(cnt, slt, state.gpu_free.sum(axis=1), state.cpu_free, access, use)


@dataclass(frozen=True)
class FragReport:
    """Cluster fragmentation: fragment and idle GPU capacity (milli-GPU) and their ratio."""

    fragment_milli: float
    idle_milli: int
    total_milli: int

    @property
    def ratio(self) -> float:
        """Fragmentation ratio = fragment / idle GPU capacity (0 if nothing is idle)."""
        return self.fragment_milli / self.idle_milli if self.idle_milli else 0.0

    @property
    def unallocated_share(self) -> float:
        """1 - allocated / total GPU capacity."""
        return self.idle_milli / self.total_milli if self.total_milli else 0.0


def cluster_fragmentation(state: GpuShareState) -> FragReport:
    """Cluster fragment amount (sum over nodes, cached) and the fragmentation ratio."""
    if state.mix is None:
        raise ConfigError("the fragmentation measure needs a TypicalMix attached to the state")
    return FragReport(float(state.frag.sum()), state.idle_gpu_milli, state.total_gpu_milli)


# --------------------------------------------------------------------------- engine runs


CHUNK_CELLS = 1 << 22
"""Working-set bound of :func:`fragmentation_timeline`, in array cells per chunk of samples."""


@dataclass(frozen=True)
class FragTimeline:
    """FGD fragmentation of an event-driven engine run, sampled over time.

    Index ``i`` is the state at ``times[i]`` after every event at that instant.

    Attributes:
        times: sample times, s.
        fragment_milli: cluster fragment amount ``F = sum_n F_n``, milli-GPU.
        idle_milli: unallocated GPU capacity, milli-GPU.
        total_milli: GPU capacity of the cluster, milli-GPU.
    """

    times: FloatArray
    fragment_milli: FloatArray
    idle_milli: IntArray
    total_milli: int

    @property
    def ratio(self) -> FloatArray:
        """Fragmentation ratio ``F / idle`` per sample (0 where nothing is idle)."""
        idle = self.idle_milli.astype(np.float64)
        out: FloatArray = np.divide(
            self.fragment_milli, idle, out=np.zeros_like(idle), where=idle > 0
        )
        return out

    @property
    def unallocated_share(self) -> FloatArray:
        """``idle / total`` GPU capacity per sample."""
        out: FloatArray = self.idle_milli / float(self.total_milli)
        return out

    def time_average(self, values: FloatArray) -> float:
        """Time-weighted mean of per-sample ``values`` (each holds until the next sample).

        The last sample carries no weight; with a single sample its value is returned.
        """
        v = np.asarray(values, dtype=np.float64)
        if v.shape != self.times.shape:
            raise ConfigError(f"{v.size} values for {self.times.size} samples")
        if v.size == 0:
            return 0.0
        w = np.diff(self.times)
        total = float(w.sum())
        if total <= 0:
            return float(v[-1])
        return float((v[:-1] * w).sum() / total)


def fragmentation_timeline(
    cluster: Cluster,
    start: Sequence[float] | FloatArray,
    end: Sequence[float] | FloatArray,
    devices: Sequence[Sequence[int] | IntArray],
    milli: Sequence[int] | IntArray,
    mix: TypicalMix,
    times: Sequence[float] | FloatArray,
) -> FragTimeline:
    """FGD fragment amount and idle GPU capacity of an engine run at ``times``.

    Segment ``i`` (an engine ``segments`` row) holds ``milli[i]`` of each device in
    ``devices[i]`` for ``start[i] <= t < end[i]``, so a sample at ``t`` sees the state
    after every event at ``t``; a NaN ``end`` means held to the end. Each node of
    ``cluster`` is a GPU-only :class:`GpuShareState` node (no CPU or memory: the
    engine does not track them) of model ``cluster.node_type``, so the mix must have
    CPU 0 on every shape (:func:`gpu_only_mix`) and name models as the cluster does.
    ``F_n`` is :func:`node_fragment`'s. Devices down for repair are not in the
    segments and count as free.

    Vectorised: per chunk of samples, a (samples x devices) occupancy built from a
    difference array (``np.bincount``), then the per-shape thresholds on
    (samples x nodes, G); a chunk holds about :data:`CHUNK_CELLS` cells.

    Raises:
        ConfigError: unequal segment columns, decreasing times, a device out of
            range, a device holding more than 1000 milli at a sample, or a mix with CPU.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size > 1 and (np.diff(t) < 0).any():
        raise ConfigError("fragmentation_timeline: sample times must be non-decreasing")
    if (np.asarray(mix.cpu_milli) != 0).any():
        raise ConfigError(
            "fragmentation_timeline: the engine does not model CPU; build the mix with "
            "gpu_only_mix (CPU 0 on every shape)"
        )
    st = np.asarray(start, dtype=np.float64).reshape(-1)
    en = np.asarray(end, dtype=np.float64).reshape(-1)
    ml = np.asarray(milli, dtype=np.int64).reshape(-1)
    nseg = st.size
    if not (en.size == ml.size == len(devices) == nseg):
        raise ConfigError(
            f"fragmentation_timeline: {nseg} starts, {en.size} ends, {len(devices)} device"
            f" lists and {ml.size} milli values; give one of each per segment"
        )
    en = np.where(np.isnan(en), np.inf, en)
    n_dev = cluster.num_devices
    lens = np.fromiter((len(d) for d in devices), dtype=np.int64, count=nseg)
    dev = (
        np.concatenate([np.asarray(d, dtype=np.int64).reshape(-1) for d in devices])
        if nseg
        else np.zeros(0, dtype=np.int64)
    )
    if dev.size and (dev.min() < 0 or dev.max() >= n_dev):
        bad = int(dev[(dev < 0) | (dev >= n_dev)][0])
        raise ConfigError(
            f"fragmentation_timeline: device {bad} does not exist (cluster has 0..{n_dev - 1})"
        )
    seg = np.repeat(np.arange(nseg, dtype=np.int64), lens)
    s0 = np.searchsorted(t, st, side="left")[seg]  # first sample at or after the start
    s1 = np.searchsorted(t, en, side="left")[seg]  # first sample at or after the end
    pm = ml[seg]
    live = s1 > s0
    dev, s0, s1, pm = dev[live], s0[live], s1[live], pm[live]

    sizes = np.asarray(cluster.node_size, dtype=np.int64)
    first = np.asarray(cluster.node_first, dtype=np.int64)
    n, g = sizes.size, int(sizes.max())
    exists = np.arange(g)[None, :] < sizes[:, None]
    pos = np.where(exists, first[:, None] + np.arange(g)[None, :], 0)
    models = sorted(set(cluster.node_type))
    mid = np.asarray([models.index(x) for x in cluster.node_type], dtype=np.int64)
    m = len(mix)
    access = np.ones((n, m), dtype=np.bool_)
    for j, spec in enumerate(mix.gpu_spec):
        ok = np.asarray([_accepts(spec, x) for x in models], dtype=np.bool_)
        access[:, j] = ok[mid]

    frag = np.zeros(t.size, dtype=np.float64)
    idle = np.zeros(t.size, dtype=np.int64)
    step = max(1, CHUNK_CELLS // max(n * g * max(m, 1), n_dev))
    for a in range(0, t.size, step):
        b = min(a + step, t.size)
        c = b - a
        sel = (s0 < b) & (s1 > a)
        lo = np.maximum(s0[sel], a) - a
        hi = np.minimum(s1[sel], b) - a
        d, w = dev[sel], pm[sel].astype(np.float64)
        diff = np.bincount(lo * n_dev + d, weights=w, minlength=(c + 1) * n_dev)
        diff -= np.bincount(hi * n_dev + d, weights=w, minlength=(c + 1) * n_dev)
        used = np.rint(np.cumsum(diff.reshape(c + 1, n_dev)[:-1], axis=0)).astype(np.int64)
        over = used > MILLI
        if over.any():
            k, x = (int(v[0]) for v in np.nonzero(over))
            raise ConfigError(
                f"fragmentation_timeline: device {x} holds {int(used[k, x])} milli at"
                f" t={t[a + k]} (overlapping segments)"
            )
        free = np.where(exists[None], MILLI - used[:, pos], 0)  # (c, N, G)
        flat = free.reshape(c * n, g)
        cnt, slt = _thresholds(flat, mix.gpu_milli)
        acc = np.broadcast_to(access[None], (c, n, m)).reshape(c * n, m)
        fn = _frag(cnt, slt, flat.sum(axis=1), np.zeros(c * n, dtype=np.int64), acc, mix)
        frag[a:b] = fn.reshape(c, n).sum(axis=1)
        idle[a:b] = free.sum(axis=(1, 2))
    return FragTimeline(t, frag, idle, int(sizes.sum()) * MILLI)


def run_fragmentation(
    run_dir: str | Path,
    cluster: Cluster,
    mix: TypicalMix | None = None,
    times: Sequence[float] | FloatArray | None = None,
    samples: int = 200,
) -> FragTimeline:
    """:func:`fragmentation_timeline` of a results folder (``segments.parquet`` + ``jobs.parquet``).

    ``cluster`` must be the run's cluster (e.g. ``Cluster.from_yaml(...)``). Each
    segment's share is its job's ``gpu_milli`` from ``jobs.parquet``. ``mix`` None:
    :func:`gpu_only_mix` of every job in ``jobs.parquet`` (``num_gpus``,
    ``gpu_milli``; the table has no device type, so every shape accepts any model --
    pass a mix built from the workload, e.g.
    :func:`clustersim.schedulers.share_placement.mix_from_jobs`, when jobs are
    type-constrained). ``times`` None: ``samples`` evenly spaced times from the first
    segment start to the last segment end.
    """
    import pyarrow.parquet as pq

    d = Path(run_dir)
    seg_path, jobs_path = d / "segments.parquet", d / "jobs.parquet"
    for p in (seg_path, jobs_path):
        if not p.exists():
            raise ConfigError(f"{p}: missing; write the run with the parquet output format")
    seg = pq.read_table(seg_path).to_pydict()
    jobs = pq.read_table(jobs_path, columns=["job_id", "num_gpus", "gpu_milli"]).to_pydict()
    milli_of = {str(j): int(x) for j, x in zip(jobs["job_id"], jobs["gpu_milli"], strict=True)}
    try:
        ml = np.asarray([milli_of[str(j)] for j in seg["job_id"]], dtype=np.int64)
    except KeyError as exc:
        raise ConfigError(f"{seg_path}: job {exc} is not in {jobs_path}") from None
    st = np.asarray(seg["start"], dtype=np.float64)
    en = np.asarray(seg["end"], dtype=np.float64)
    if mix is None:
        if not jobs["job_id"]:
            raise ConfigError(f"{jobs_path}: no jobs to build the typical mix from")
        mix = gpu_only_mix(jobs["num_gpus"], jobs["gpu_milli"])
    if times is None:
        if samples < 1:
            raise ConfigError(f"samples must be >= 1, got {samples}")
        lo = float(st.min()) if st.size else 0.0
        hi = float(np.nanmax(en)) if st.size else 0.0
        times = np.linspace(lo, hi, samples)
    return fragmentation_timeline(cluster, st, en, seg["devices"], ml, mix, times)


# --------------------------------------------------------------------------- stranded GPUs


def typical_job(mix: TypicalMix) -> PodRequest:
    """The most frequent GPU-requesting shape of ``mix`` (memory 0)."""
    idx = np.flatnonzero(mix.is_gpu)
    if idx.size == 0:
        raise ConfigError("the typical mix has no GPU shape")
    m = int(idx[np.argmax(mix.freq[idx])])
    return PodRequest(
        int(mix.cpu_milli[m]),
        0,
        int(mix.num_gpu[m]),
        int(mix.gpu_milli[m]),
        mix.gpu_spec[m],
        "typical",
    )


def stranded_gpu_milli(
    state: GpuShareState, job: PodRequest, *, partly_used_only: bool = True
) -> IntArray:
    """Free milli-GPU per node that ``job`` cannot use because the node cannot host it.

    A node's free GPU capacity is *stranded* for ``job`` when the node cannot host
    the job (CPU, memory, model or per-GPU free share insufficient). With
    ``partly_used_only`` (default) only nodes that already carry some allocation
    (any CPU, memory or GPU in use) count -- capacity on a node too *partly used*
    to host the job; untouched nodes too small for it are left out. Returns an
    (N,) array, 0 on nodes that can host the job.
    """
    free = state.gpu_free.sum(axis=1)
    mask = ~state.feasible(job)
    if partly_used_only:
        used = (
            (state.cpu_free < state.cpu_cap)
            | (state.mem_free < state.mem_cap)
            | (free < state.gpu_count * MILLI)
        )
        mask &= used
    out: IntArray = np.where(mask, free, 0).astype(np.int64)
    return out


def count_stranded_gpus(
    state: GpuShareState, job: PodRequest, *, partly_used_only: bool = True
) -> float:
    """Stranded free GPU capacity for ``job`` in GPUs (see :func:`stranded_gpu_milli`)."""
    return float(stranded_gpu_milli(state, job, partly_used_only=partly_used_only).sum()) / MILLI


# --------------------------------------------------------------------------- helpers


TIE_BREAKS = ("name", "random")
"""``name``: lowest node name among the top scores (the authors' kube-scheduler fork);
``random``: uniformly random among them (stock kube-scheduler ``selectHost``)."""


def _pick(
    state: GpuShareState,
    cands: IntArray,
    scores: IntArray,
    rng: np.random.Generator,
    tie_break: str,
) -> int:
    """Choose among the nodes with the highest score (``selectHost``)."""
    top = cands[scores == scores.max()]
    if top.size == 1:
        return int(top[0])
    if tie_break == "name":
        return int(top[np.argmin(state.name_rank[top])])
    if tie_break == "random":
        return int(top[int(rng.integers(top.size))])
    raise UnknownNameError("tie-break rule", tie_break, TIE_BREAKS)


def _exclusive(state: GpuShareState, node: int, k: int) -> tuple[int, ...]:
    """Authors' ``AllocateExclusiveGpuId``: the ``k`` lowest-index fully free GPUs."""
    free = np.flatnonzero(state.gpu_free[node] == MILLI)
    return tuple(int(g) for g in free[:k])


def _best_gpu(state: GpuShareState, node: int, pod: PodRequest) -> tuple[int, ...]:
    """GPU selection ``best``: a share pod takes the GPU with the least free share that
    still fits (lowest index on ties); whole-GPU pods take the lowest-index free GPUs."""
    if not pod.is_shared:
        return _exclusive(state, node, pod.num_gpu)
    row = state.gpu_free[node]
    cost = np.where(row >= pod.gpu_milli, row, np.iinfo(np.int64).max)
    return (int(np.argmin(cost)),)


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


# --------------------------------------------------------------------------- policies


def fgd_scores(state: GpuShareState, pod: PodRequest) -> tuple[IntArray, IntArray, IntArray]:
    """FGD score of every feasible node: ``(nodes, scores, best_gpu)``.

    Score = ``int(sigmoid((F_before - F_after) / 1000) * 100)`` with ``F`` the node's
    fragment amount (:func:`node_fragment`). For a share pod every GPU with enough
    free share is tried; the node's score is the best GPU's and ``best_gpu`` is the
    lowest-index GPU with that score (-1 for other pods). Whole-GPU and CPU-only pods
    are evaluated as the authors' ``NodeResource.Sub`` places them (on fully free GPUs).
    """
    mix = state.mix
    if mix is None:
        raise ConfigError("policy 'fgd' needs a TypicalMix attached to the state")
    cand = np.flatnonzero(state.feasible(pod))
    before = state.frag[cand]
    cpu_after = state.cpu_free[cand] - pod.cpu_milli
    total = state.gpu_free[cand].sum(axis=1)
    access = state.access[cand]
    if pod.is_shared and cand.size:
        a = state.gpu_free[cand]  # (K, G)
        g = a.shape[1]
        # Candidate GPUs: enough free share, and the first GPU of the node with its
        # free value (later GPUs with the same value give the same after-state and
        # lose the plugin's lowest-index tie-break anyway).
        lower = np.tri(g, g, -1, dtype=np.bool_)  # [i, j] = j < i
        dup = ((a[:, :, None] == a[:, None, :]) & lower).any(axis=2)
        kk, gg = np.nonzero((a >= pod.gpu_milli) & ~dup)  # row-major: grouped by node
        av = a[kk, gg][:, None]
        bv = av - pod.gpu_milli
        t = mix.gpu_milli[None, :]
        ge_a, ge_b = av >= t, bv >= t
        cnt = state.cnt_ge[cand[kk]] - ge_a + ge_b.astype(np.int64)
        slt = state.sum_lt[cand[kk]] - np.where(ge_a, 0, av) + np.where(ge_b, 0, bv)
        after = _frag(cnt, slt, total[kk] - pod.gpu_milli, cpu_after[kk], access[kk], mix)
        raw = _sigmoid((before[kk] - after) / 1000.0) * MAX_NODE_SCORE
        pair = np.trunc(raw).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, kk[1:] != kk[:-1]])
        scores = np.maximum.reduceat(pair, starts)
        top = np.flatnonzero(pair == scores[kk])
        first = np.unique(kk[top], return_index=True)[1]
        best = gg[top[first]].astype(np.int64)
        return cand, scores.astype(np.int64), best
    k = pod.num_gpu
    cnt = state.cnt_ge[cand] - k
    after = _frag(cnt, state.sum_lt[cand], total - k * MILLI, cpu_after, access, mix)
    raw = _sigmoid((before - after) / 1000.0) * MAX_NODE_SCORE
    scores = np.trunc(raw).astype(np.int64)
    return cand, scores, np.full(cand.size, -1, dtype=np.int64)


def fgd(
    state: GpuShareState, pod: PodRequest, rng: np.random.Generator, tie_break: str = "name"
) -> Placement | None:
    """Fragmentation Gradient Descent (FGD score plugin + its own GPU selection).

    Rule: among feasible nodes, maximise ``int(sigmoid(ΔF / 1000) * 100)`` where
    ``ΔF = F_n(before) - F_n(after placing the pod)`` (the fragment decrease,
    :func:`fgd_scores`). Share pods: each GPU with enough free share is a candidate
    and the node keeps its best GPU (lowest index among equal integer scores).
    Ties between nodes: ``tie_break`` (default ``name``: lowest node name; ``random``:
    uniform with ``rng``). GPUs: the chosen GPU for a share pod; the lowest-index fully
    free GPUs otherwise. CPU-only pods are scored
    the same way (only the CPU changes). Returns None if no node is feasible.
    """
    cand, scores, best = fgd_scores(state, pod)
    if cand.size == 0:
        return None
    node = _pick(state, cand, scores, rng, tie_break)
    if pod.is_shared:
        g = int(best[np.searchsorted(cand, node)])
        return node, (g,)
    return node, _exclusive(state, node, pod.num_gpu)


def bestfit_scores(state: GpuShareState, pod: PodRequest) -> tuple[IntArray, IntArray]:
    """BestFit scores of the feasible nodes after the plugin's NormalizeScore."""
    cand = np.flatnonzero(state.feasible(pod))
    fc = state.cpu_free[cand].astype(np.float64)
    fg = state.gpu_free[cand].sum(axis=1).astype(np.float64)
    s = ((fc - pod.cpu_milli) / MAX_SPEC_CPU) * 0.5
    s = s + ((fg - pod.total_gpu_milli) / MAX_SPEC_GPU) * 0.5
    raw = np.trunc((1.0 - s) * MAX_NODE_SCORE).astype(np.int64)
    if raw.size == 0:
        return cand, raw
    hi, lo = int(raw.max()), int(raw.min())
    if hi == lo:
        return cand, np.zeros_like(raw)
    return cand, (raw - lo) * MAX_NODE_SCORE // (hi - lo)


def bestfit(
    state: GpuShareState, pod: PodRequest, rng: np.random.Generator, tie_break: str = "name"
) -> Placement | None:
    """Best Fit: the node with the least weighted leftover CPU and GPU.

    Rule: ``s = 0.5 (cpu_free - cpu) / 128000 + 0.5 (gpu_free_total - gpu) / 8000``,
    score ``int((1 - s) * 100)``, then min-max normalised over the feasible nodes to
    ``(score - lo) * 100 // (hi - lo)`` (all 0 when equal), highest wins. Ties:
    ``tie_break`` (default ``name``: lowest node name; ``random``: uniform with ``rng``).
    GPUs: ``best`` selection (least free share that fits, lowest index; whole GPUs
    lowest index first). Returns None if nothing fits.
    """
    cand, scores = bestfit_scores(state, pod)
    if cand.size == 0:
        return None
    node = _pick(state, cand, scores, rng, tie_break)
    return node, _best_gpu(state, node, pod)


def dotproduct_scores(state: GpuShareState, pod: PodRequest) -> tuple[IntArray, IntArray]:
    """DotProduct scores (``merge`` dimensions, ``max`` normalisation) of the feasible nodes."""
    cand = np.flatnonzero(state.feasible(pod))
    nv0 = state.cpu_free[cand].astype(np.float64) / MAX_SPEC_CPU
    nv1 = state.gpu_free[cand].sum(axis=1).astype(np.float64) / MAX_SPEC_GPU
    pv0 = pod.cpu_milli / MAX_SPEC_CPU
    pv1 = pod.total_gpu_milli / MAX_SPEC_GPU
    cur = (nv0 * pv0 + nv1 * pv1) / 2.0
    scores = np.trunc(MAX_NODE_SCORE * (1.0 - cur)).astype(np.int64)
    return cand, scores


def dotproduct(
    state: GpuShareState, pod: PodRequest, rng: np.random.Generator, tie_break: str = "name"
) -> Placement | None:
    """Dot Product (Tetris alignment), as configured in the FGD artifact.

    Rule: node vector ``(cpu_free / 128000, gpu_free_total / 8000)``, pod vector
    ``(cpu / 128000, gpu / 8000)``; score ``int(100 * (1 - dot / 2))`` -- the
    *smaller* the dot product the higher the score (the plugin's ``1 - curScore``).
    No normalisation. Ties: ``tie_break`` (default ``name``: lowest node name;
    ``random``: uniform with ``rng``). GPUs: ``best`` selection.
    Returns None if nothing fits.
    """
    cand, scores = dotproduct_scores(state, pod)
    if cand.size == 0:
        return None
    node = _pick(state, cand, scores, rng, tie_break)
    return node, _best_gpu(state, node, pod)


def gpupacking_scores(state: GpuShareState, pod: PodRequest) -> tuple[IntArray, IntArray]:
    """GpuPacking scores of the feasible nodes."""
    cand = np.flatnonzero(state.feasible(pod))
    if pod.num_gpu == 0:
        return cand, np.zeros(cand.size, dtype=np.int64)
    free = state.gpu_free[cand]
    n_gpu = state.gpu_count[cand]
    full = (free == MILLI).sum(axis=1)
    untouched = full == n_gpu
    case3 = np.maximum(MAX_NODE_SCORE // 3 - full, full)
    if pod.is_shared:
        v = np.where(free >= pod.gpu_milli, free, np.iinfo(np.int64).max).min(axis=1)
        case1 = np.maximum(MAX_NODE_SCORE - (v * 100 // MILLI) // 10, MAX_NODE_SCORE // 2)
        case2 = max(MAX_NODE_SCORE // 2 - 1, MAX_NODE_SCORE // 3)
        other = np.where(v == MILLI, case2, case1)
    else:
        other = np.full(cand.size, max(MAX_NODE_SCORE // 2 - pod.num_gpu, MAX_NODE_SCORE // 3))
    return cand, np.where(untouched, case3, other).astype(np.int64)


def gpupacking(
    state: GpuShareState, pod: PodRequest, rng: np.random.Generator, tie_break: str = "name"
) -> Placement | None:
    """GPU Packing: share used GPUs first, then free GPUs of used nodes, then empty nodes.

    Rule (integer scores, highest wins): CPU-only pods score 0 everywhere. A node
    whose GPUs are all fully free scores ``max(33 - free_gpus, free_gpus)``.
    Otherwise the pod's GPUs are the least-free ones that fit: if any of them is
    fully free the score is ``max(50 - fully_free_used, 33)``; if only shared GPUs
    are used it is ``max(100 - (free_milli * 100 // 1000) // 10, 50)``. Ties:
    ``tie_break`` (default ``name``: lowest node name; ``random``: uniform with ``rng``).
    GPUs: ``best`` selection. Returns None if nothing fits.
    """
    cand, scores = gpupacking_scores(state, pod)
    if cand.size == 0:
        return None
    node = _pick(state, cand, scores, rng, tie_break)
    return node, _best_gpu(state, node, pod)


def gpuclustering_scores(state: GpuShareState, pod: PodRequest) -> tuple[IntArray, IntArray]:
    """GpuClustering scores of the feasible nodes."""
    cand = np.flatnonzero(state.feasible(pod))
    if pod.tag < 0:
        return cand, np.zeros(cand.size, dtype=np.int64)
    tags = state.tags[cand]
    has = tags[:, min(pod.tag, N_TAGS - 1)] > 0
    kinds = (tags > 0).sum(axis=1)
    left = state.gpu_free[cand].sum(axis=1)
    base = (MAX_NODE_SCORE // 4) * (MAX_SPEC_GPU - left) // MAX_SPEC_GPU
    bonus = np.where(has, np.where(kinds == 1, 75, 50), np.where(kinds == 0, 25, 0))
    return cand, (base + bonus).astype(np.int64)


def gpuclustering(
    state: GpuShareState, pod: PodRequest, rng: np.random.Generator, tie_break: str = "name"
) -> Placement | None:
    """GPU Clustering: co-locate pods of the same GPU-request class.

    Classes: share-gpu (any fraction of one GPU) and ``k``-gpu (``k`` whole GPUs).
    Score ``25 * (8000 - gpu_free_total) // 8000`` plus 75 if the node hosts only
    this class, 50 if it hosts this class among others, 25 if it hosts no GPU pod,
    0 if it hosts only other classes; CPU-only pods score 0 everywhere. Ties:
    ``tie_break`` (default ``name``: lowest node name; ``random``: uniform with ``rng``).
    GPUs: ``best`` selection. Returns None if nothing fits.
    """
    cand, scores = gpuclustering_scores(state, pod)
    if cand.size == 0:
        return None
    node = _pick(state, cand, scores, rng, tie_break)
    return node, _best_gpu(state, node, pod)


def random(
    state: GpuShareState, pod: PodRequest, rng: np.random.Generator, tie_break: str = "name"
) -> Placement | None:
    """Random fit: a uniformly random feasible node.

    GPUs: a share pod takes a uniformly random GPU among those with enough free
    share; whole-GPU pods take the lowest-index fully free GPUs. Returns None if
    nothing fits.
    """
    cand = np.flatnonzero(state.feasible(pod))
    if cand.size == 0:
        return None
    node = int(cand[int(rng.integers(cand.size))])
    if pod.is_shared:
        gpus = np.flatnonzero(state.gpu_free[node] >= pod.gpu_milli)
        return node, (int(gpus[int(rng.integers(gpus.size))]),)
    return node, _exclusive(state, node, pod.num_gpu)


class Policy(Protocol):
    """A placement policy: ``choose(state, pod, rng, tie_break="name") -> placement | None``."""

    def __call__(
        self,
        state: GpuShareState,
        pod: PodRequest,
        rng: np.random.Generator,
        tie_break: str = ...,
    ) -> Placement | None: ...


POLICIES: dict[str, Policy] = {
    "fgd": fgd,
    "bestfit": bestfit,
    "dotproduct": dotproduct,
    "gpupacking": gpupacking,
    "gpuclustering": gpuclustering,
    "random": random,
}
"""Placement policies by name, in the order the paper's figures list them (FGD first)."""


def get_policy(name: str) -> Policy:
    """The policy called ``name`` (raises UnknownNameError listing the known ones)."""
    try:
        return POLICIES[name]
    except KeyError:
        raise UnknownNameError("fragmentation policy", name, POLICIES) from None


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayTrace:
    """Per-pod record of a replay (index ``i`` = state after pod ``i`` arrived).

    Attributes:
        arrived_milli: cumulative GPU demand of arrived pods (placed or not), milli-GPU.
        allocated_milli: allocated GPU capacity, milli-GPU.
        fragment_milli: cluster fragment amount (0 if no mix), milli-GPU.
        placed: whether the pod was placed.
        node: node index of each placed pod (-1 if dropped).
        total_milli: GPU capacity of the cluster, milli-GPU.
    """

    arrived_milli: IntArray
    allocated_milli: IntArray
    fragment_milli: FloatArray
    placed: BoolArray
    node: IntArray
    total_milli: int

    @property
    def idle_milli(self) -> IntArray:
        """Unallocated GPU capacity after each pod, milli-GPU."""
        out: IntArray = self.total_milli - self.allocated_milli
        return out


def replay(
    state: GpuShareState,
    pods: Sequence[PodRequest],
    policy: Policy | str,
    rng: np.random.Generator,
    tie_break: str = "name",
) -> ReplayTrace:
    """Place ``pods`` in order on ``state`` (mutated); no departures.

    ``tie_break`` is passed to the policy (see :data:`TIE_BREAKS`).

    A pod no node can host is counted and dropped. After each pod the arrived GPU
    demand, the allocated GPU capacity and (with a mix attached) the cluster
    fragment amount are recorded.
    """
    choose = get_policy(policy) if isinstance(policy, str) else policy
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", "policy")
    n = len(pods)
    arrived = np.zeros(n, dtype=np.int64)
    alloc = np.zeros(n, dtype=np.int64)
    frag = np.zeros(n, dtype=np.float64)
    placed = np.zeros(n, dtype=np.bool_)
    where = np.full(n, -1, dtype=np.int64)
    demand = 0
    allocated = state.allocated_gpu_milli
    track = state.mix is not None
    fsum = float(state.frag.sum()) if track else 0.0
    for i, pod in enumerate(pods):
        demand += pod.total_gpu_milli
        choice = choose(state, pod, rng, tie_break)
        if choice is not None:
            node, gpus = choice
            old = float(state.frag[node]) if track else 0.0
            state.allocate(node, gpus, pod, name)
            if track:
                fsum += float(state.frag[node]) - old
            allocated += pod.total_gpu_milli
            placed[i] = True
            where[i] = node
        arrived[i] = demand
        alloc[i] = allocated
        frag[i] = fsum
    return ReplayTrace(arrived, alloc, frag, placed, where, state.total_gpu_milli)
