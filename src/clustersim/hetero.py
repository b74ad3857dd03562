"""Heterogeneous clusters: workload classes, the (class x device type) speed matrix, node lists.

This module owns:

* :class:`WorkloadClass` -- a kind of work described by its arithmetic intensity
  (FLOP per byte of device-memory traffic); built-ins :data:`WORKLOAD_CLASSES`:
  ``compute`` (intensity -> infinity: dense GEMM-bound training, runs at the peak
  FLOP/s ratio) and ``memory`` (intensity -> 0: bandwidth-bound work such as
  small-batch decoding, runs at the memory-bandwidth ratio).
* :class:`SpeedMatrix` -- speed of every workload class on every device type,
  relative to a *reference* device type (speed 1.0). The default comes from the
  roofline of the device catalogue, ``throughput = min(peak_flops, I * mem_bw)``
  (Williams et al., CACM 2009); any cell can be overridden by a measurement
  (:meth:`SpeedMatrix.with_overrides`, :meth:`SpeedMatrix.with_measurements`).
* :func:`hetero_speed_model` -- the engine's ``SpeedModel`` built from a matrix: a
  job's work (seconds at speed 1 on the reference device) advances at
  ``M[class, type] / M[class, reference]`` per second; a gang spanning several types
  runs at its slowest member's speed.
* Job acceptance: :func:`accepted_types` (``Job.device_type`` and/or
  ``job.attrs["accepts"]``, a tuple of device-type names; ``None`` = any) and
  :func:`job_class` (``job.attrs["workload_class"]``).
* Real heterogeneous node lists as clusters: :func:`openb_cluster` (Alibaba openb,
  1,213 GPU nodes, 6,212 GPUs) and :func:`spot_cluster` (Alibaba spot 2026, 4,278
  nodes, 10,412 GPUs), returning a :class:`HeteroCluster` (the
  :class:`~clustersim.topology.Cluster` plus the :class:`~clustersim.hardware.DeviceSpec`
  every node type uses for speed, power and price), and :func:`openb_hetero_jobs`.

Device-type mapping (see ``docs/hetero-power-economics.md``):

* openb: ``V100M32`` -> ``V100``, ``V100M16`` -> ``V100-16GB``, ``T4``, ``P100``,
  ``A10`` map to the catalogue; ``G1``/``G2``/``G3`` are undisclosed Alibaba codes.
* spot: ``A100-SXM4-80GB`` -> ``A100``, ``H800``, ``A10``; ``A800-SXM4-80GB`` is kept
  as its own type ``A800`` that borrows the ``A100`` numbers (the A800 is the
  export variant of the A100 SXM4 80 GB with NVLink cut to 400 GB/s; compute, memory
  and power are the A100's [U]); ``GPU-series-1`` / ``GPU-series-2`` are undisclosed.
* Undisclosed codes are never given invented specs. ``undisclosed="neutral"``
  (default) keeps them as their own device types whose speed, power and price are
  *equal to the reference device's* -- heterogeneity-neutral, so any gain a
  heterogeneity-aware policy shows comes from the disclosed devices only;
  ``undisclosed="exclude"`` drops their nodes (and :func:`openb_hetero_jobs` then
  drops jobs that accept only them).

Units: FLOP/s, bytes/s, seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from clustersim.errors import ConfigError, TraceError, UnknownNameError
from clustersim.hardware import DeviceSpec, get_device
from clustersim.topology import Cluster, Level
from clustersim.workload.job import Job

__all__ = [
    "OPENB_CODES",
    "OPENB_UNDISCLOSED",
    "SPOT_CODES",
    "SPOT_PROXIES",
    "SPOT_UNDISCLOSED",
    "WORKLOAD_CLASSES",
    "HeteroCluster",
    "HeteroRun",
    "SpeedMatrix",
    "WorkloadClass",
    "accepted_types",
    "cluster_from_node_counts",
    "compress_arrivals",
    "device_hours_by_type",
    "hetero_speed_model",
    "inflate_jobs",
    "job_class",
    "openb_cluster",
    "openb_hetero_jobs",
    "replay_hetero",
    "resolve_specs",
    "roofline_throughput",
    "spot_cluster",
]


# --------------------------------------------------------------------------- workload classes


@dataclass(frozen=True, slots=True)
class WorkloadClass:
    """A kind of work, characterised by its arithmetic intensity.

    Attributes:
        name: class name (a key of the speed matrix).
        flops_per_byte: FLOP per byte of device-memory traffic; ``math.inf`` for
            purely compute-bound work, ``0`` for purely bandwidth-bound work.
        description: what the class stands for.
    """

    name: str
    flops_per_byte: float
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ConfigError(f"workload class name {self.name!r} must be non-empty, no spaces")
        if math.isnan(self.flops_per_byte) or self.flops_per_byte < 0:
            raise ConfigError(
                f"workload class '{self.name}': flops_per_byte must be >= 0 (inf allowed), "
                f"got {self.flops_per_byte!r}"
            )


WORKLOAD_CLASSES: Mapping[str, WorkloadClass] = MappingProxyType(
    {
        "compute": WorkloadClass(
            "compute",
            math.inf,
            "compute-bound (large-batch GEMM training): speed ratio = peak FLOP/s ratio",
        ),
        "memory": WorkloadClass(
            "memory",
            0.0,
            "bandwidth-bound (small-batch decoding, embedding lookups): "
            "speed ratio = memory-bandwidth ratio",
        ),
    }
)
"""Built-in classes: the two limits of the roofline (no fitted intensity)."""


def roofline_throughput(flops_per_byte: float, spec: DeviceSpec) -> float:
    """Attainable throughput of work with intensity ``flops_per_byte`` on ``spec``.

    ``min(peak_flops, I * memory_bw)`` in FLOP/s; the limits are special-cased so that
    ratios stay meaningful: ``I = inf`` gives ``peak_flops`` and ``I = 0`` gives
    ``memory_bw`` (bytes/s -- only ratios within one class are ever used).
    """
    if math.isinf(flops_per_byte):
        return spec.flops
    if flops_per_byte == 0:
        return spec.memory_bw
    return min(spec.flops, flops_per_byte * spec.memory_bw)


# --------------------------------------------------------------------------- speed matrix


class SpeedMatrix:
    """Speed of each workload class on each device type, relative to a reference type.

    ``speed(c, t)`` is the rate at which a job of class ``c`` progresses on type
    ``t`` when its work is measured in seconds on the ``reference`` type, so the
    reference column is 1.0 for every class. Immutable: the ``with_*`` methods
    return new matrices.
    """

    __slots__ = ("_cidx", "_tidx", "classes", "device_types", "reference", "values")

    def __init__(
        self,
        classes: Sequence[str],
        device_types: Sequence[str],
        values: npt.ArrayLike,
        reference: str,
    ) -> None:
        self.classes: tuple[str, ...] = tuple(classes)
        self.device_types: tuple[str, ...] = tuple(device_types)
        arr = np.array(values, dtype=np.float64)
        if arr.shape != (len(self.classes), len(self.device_types)):
            raise ConfigError(
                f"speed matrix must be {len(self.classes)} classes x "
                f"{len(self.device_types)} device types, got shape {arr.shape}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"speed matrix: duplicate workload class in {self.classes}")
        if len(set(self.device_types)) != len(self.device_types):
            raise ConfigError(f"speed matrix: duplicate device type in {self.device_types}")
        if reference not in self.device_types:
            raise UnknownNameError("reference device type", reference, self.device_types)
        if not (np.isfinite(arr).all() and (arr > 0).all()):
            bad = np.argwhere(~(np.isfinite(arr) & (arr > 0)))[0]
            raise ConfigError(
                f"speed matrix: speed of class '{self.classes[bad[0]]}' on "
                f"'{self.device_types[bad[1]]}' must be a positive finite number, "
                f"got {arr[bad[0], bad[1]]!r}"
            )
        ref = self.device_types.index(reference)
        arr = arr / arr[:, ref : ref + 1]  # normalise: reference column == 1
        arr.setflags(write=False)
        self.values: npt.NDArray[np.float64] = arr
        self.reference = reference
        self._cidx = {c: i for i, c in enumerate(self.classes)}
        self._tidx = {t: i for i, t in enumerate(self.device_types)}

    # -- construction
    @classmethod
    def from_roofline(
        cls,
        specs: Mapping[str, DeviceSpec],
        reference: str,
        classes: Iterable[WorkloadClass | str] = ("compute", "memory"),
    ) -> SpeedMatrix:
        """Roofline speeds of ``classes`` on every device type in ``specs`` (type -> spec)."""
        wcs = [c if isinstance(c, WorkloadClass) else _builtin_class(c) for c in classes]
        types = list(specs)
        vals = [[roofline_throughput(w.flops_per_byte, specs[t]) for t in types] for w in wcs]
        return cls([w.name for w in wcs], types, vals, reference)

    def with_overrides(self, overrides: Mapping[tuple[str, str], float]) -> SpeedMatrix:
        """A copy where ``overrides[(class, device_type)]`` replaces that cell.

        Values are speeds relative to this matrix's reference type (measure the
        workload on both devices and divide). Overriding a reference cell is an error
        (it is 1.0 by definition).
        """
        arr = self.values.copy()
        for (c, t), v in overrides.items():
            i, j = self._index(c, t)
            if t == self.reference and v != 1.0:
                raise ConfigError(
                    f"speed override ({c}, {t}): '{t}' is the reference type, whose speed is "
                    "1.0 by definition; give speeds relative to it"
                )
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ConfigError(f"speed override ({c}, {t}) must be > 0, got {v!r}")
            arr[i, j] = float(v)
        return SpeedMatrix(self.classes, self.device_types, arr, self.reference)

    def with_measurements(self, path: str | Path) -> SpeedMatrix:
        """Override cells from a CSV ``workload_class,device_type,speed`` (relative speeds).

        Raises:
            TraceError: ``file:line:field`` for an unknown class or device type or a
                speed that is not a positive number.
        """
        p = Path(path)
        try:
            fh = p.open(newline="", encoding="utf-8")
        except FileNotFoundError:
            raise TraceError(str(p), None, None, "file not found", "check the path") from None
        overrides: dict[tuple[str, str], float] = {}
        with fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            for col in ("workload_class", "device_type", "speed"):
                if col not in header:
                    raise TraceError(
                        str(p), 1, col, "missing column", "header: workload_class,device_type,speed"
                    )
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                c = (row.get("workload_class") or "").strip()
                t = (row.get("device_type") or "").strip()
                if c not in self._cidx:
                    raise TraceError(
                        str(p),
                        line,
                        "workload_class",
                        f"unknown class '{c}'",
                        f"known: {', '.join(self.classes)}",
                    )
                if t not in self._tidx:
                    raise TraceError(
                        str(p),
                        line,
                        "device_type",
                        f"unknown device type '{t}'",
                        f"known: {', '.join(self.device_types)}",
                    )
                text = (row.get("speed") or "").strip()
                try:
                    v = float(text)
                except ValueError:
                    raise TraceError(str(p), line, "speed", f"'{text}' is not a number") from None
                if not (math.isfinite(v) and v > 0):
                    raise TraceError(
                        str(p),
                        line,
                        "speed",
                        f"{text} is not a positive speed",
                        f"speed relative to the reference device '{self.reference}'",
                    )
                if t == self.reference and v != 1.0:
                    raise TraceError(
                        str(p),
                        line,
                        "speed",
                        f"'{t}' is the reference device (speed 1.0)",
                        "give speeds relative to the reference device",
                    )
                overrides[(c, t)] = v
        return self.with_overrides(overrides)

    def renormalized(self, reference: str) -> SpeedMatrix:
        """The same matrix with speeds relative to another device type."""
        return SpeedMatrix(self.classes, self.device_types, self.values, reference)

    # -- queries
    def _index(self, cls_name: str, device_type: str) -> tuple[int, int]:
        i = self._cidx.get(cls_name)
        if i is None:
            raise UnknownNameError("workload class", cls_name, self.classes)
        j = self._tidx.get(device_type)
        if j is None:
            raise UnknownNameError("device type", device_type, self.device_types)
        return i, j

    def speed(self, cls_name: str, device_type: str) -> float:
        """Speed of class ``cls_name`` on ``device_type`` (reference = 1.0)."""
        i, j = self._index(cls_name, device_type)
        return float(self.values[i, j])

    def class_index(self, cls_name: str) -> int:
        """Row of ``cls_name``."""
        return self._index(cls_name, self.reference)[0]

    def type_index(self, device_type: str) -> int:
        """Column of ``device_type``."""
        return self._index(self.classes[0], device_type)[1]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{class: {device_type: speed}}`` (for summaries)."""
        return {
            c: {t: float(self.values[i, j]) for j, t in enumerate(self.device_types)}
            for i, c in enumerate(self.classes)
        }

    def __repr__(self) -> str:
        return (
            f"SpeedMatrix(classes={self.classes}, device_types={self.device_types}, "
            f"reference={self.reference!r})"
        )


def _builtin_class(name: str) -> WorkloadClass:
    wc = WORKLOAD_CLASSES.get(name)
    if wc is None:
        raise UnknownNameError("workload class", name, WORKLOAD_CLASSES)
    return wc


# --------------------------------------------------------------------------- jobs


def accepted_types(job: Job) -> tuple[str, ...] | None:
    """Device types ``job`` may run on, or ``None`` for any.

    ``job.device_type`` (one type) and ``job.attrs["accepts"]`` (a tuple of types,
    or a ``|``-separated string) combine by intersection.
    """
    acc = job.attrs.get("accepts")
    types: tuple[str, ...] | None
    if acc is None or acc == "" or acc == ():
        types = None
    elif isinstance(acc, str):
        types = tuple(sorted({a for a in acc.split("|") if a}))
    else:
        types = tuple(sorted({str(a) for a in acc}))
    if job.device_type is not None:
        if types is None:
            return (job.device_type,)
        return tuple(t for t in types if t == job.device_type)
    return types


def job_class(job: Job, default: str = "compute") -> str:
    """Workload class of ``job``: ``job.attrs["workload_class"]`` or ``default``."""
    c = job.attrs.get("workload_class")
    return default if c is None else str(c)


def hetero_speed_model(
    matrix: SpeedMatrix,
    reference: str | None = None,
    *,
    default_class: str = "compute",
    classify: Callable[[Job], str] | None = None,
) -> Callable[[Job, tuple[int, ...], Cluster], float]:
    """The engine ``SpeedModel`` of ``matrix``.

    Rule: class ``c`` = ``classify(job)`` if given, else ``job.attrs["workload_class"]``,
    else ``default_class``; the job's speed on devices of types ``T`` is
    ``min_{t in T} M[c, t] / M[c, reference]`` (a synchronous gang runs at its
    slowest member). ``reference`` defaults to the matrix's own; a job's ``duration``
    is its work in seconds on that reference device. Speeds may exceed 1 (a device
    faster than the reference). Per call: O(k) for a k-device job (type lookups in a
    per-cluster array built once).

    Raises:
        UnknownNameError: a job's class or a device's type is not in the matrix.
    """
    m = (
        matrix
        if reference is None or reference == matrix.reference
        else (matrix.renormalized(reference))
    )
    vals = m.values
    cache: dict[int, tuple[Cluster, list[int]]] = {}
    rows: dict[str, int] = {}

    def type_cols(cluster: Cluster) -> list[int]:
        hit = cache.get(id(cluster))
        if hit is not None and hit[0] is cluster:
            return hit[1]
        col_of_type = {t: m.type_index(t) for t in cluster.device_types}
        node_col = [col_of_type[t] for t in cluster.node_type]
        dev_col = [int(x) for x in np.repeat(node_col, cluster.node_size)]
        cache[id(cluster)] = (cluster, dev_col)
        return dev_col

    def speed(job: Job, devices: tuple[int, ...], cluster: Cluster) -> float:
        c = classify(job) if classify is not None else job_class(job, default_class)
        row = rows.get(c)
        if row is None:
            row = rows[c] = m.class_index(c)
        cols = type_cols(cluster)
        r = vals[row]
        first = cols[devices[0]]
        s = float(r[first])
        for d in devices[1:]:
            col = cols[d]
            if col != first:
                s = min(s, float(r[col]))
        return s

    return speed


# --------------------------------------------------------------------------- clusters

OPENB_CODES: Mapping[str, str] = MappingProxyType(
    {"V100M32": "V100", "V100M16": "V100-16GB", "T4": "T4", "P100": "P100", "A10": "A10"}
)
"""openb GPU model code -> catalogue device (docs/hardware.md, "openb GPU codes")."""
OPENB_UNDISCLOSED = frozenset({"G1", "G2", "G3"})
"""openb codes whose hardware Alibaba never disclosed."""

SPOT_CODES: Mapping[str, str] = MappingProxyType(
    {"A100-SXM4-80GB": "A100", "H800": "H800", "A10": "A10"}
)
"""Alibaba spot-2026 ``gpu_model`` -> catalogue device."""
SPOT_PROXIES: Mapping[str, tuple[str, str]] = MappingProxyType({"A800-SXM4-80GB": ("A800", "A100")})
"""spot ``gpu_model`` -> (device type name, catalogue device whose numbers it uses)."""
SPOT_UNDISCLOSED = frozenset({"GPU-series-1", "GPU-series-2"})
"""spot codes whose hardware Alibaba never disclosed."""


@dataclass(frozen=True)
class HeteroCluster:
    """A cluster plus the device numbers each node type uses.

    Attributes:
        cluster: the topology (node types are the device-type names).
        specs: node type -> :class:`DeviceSpec` used for speed, power and price (the
            catalogue spec, or a documented proxy renamed to the type).
        reference: device type whose speed is 1.0 (a job's duration is measured on it).
        assumptions: node type -> how its spec was obtained (``catalogue``,
            ``proxy:<device>``, ``neutral:<reference>``).
        excluded_gpus: undisclosed type -> GPUs dropped (``undisclosed="exclude"``).
        source: where the node list came from.
    """

    cluster: Cluster
    specs: Mapping[str, DeviceSpec]
    reference: str
    assumptions: Mapping[str, str]
    excluded_gpus: Mapping[str, int] = field(default_factory=dict)
    source: str = ""

    def speed_matrix(
        self, classes: Iterable[WorkloadClass | str] = ("compute", "memory")
    ) -> SpeedMatrix:
        """Roofline speed matrix over this cluster's device types."""
        return SpeedMatrix.from_roofline(
            {t: self.specs[t] for t in self.cluster.device_types}, self.reference, classes
        )

    def gpus_by_type(self) -> dict[str, int]:
        """Device type -> number of devices."""
        out: dict[str, int] = {}
        for t, n in zip(self.cluster.node_type, self.cluster.node_size, strict=True):
            out[t] = out.get(t, 0) + n
        return dict(sorted(out.items()))


def resolve_specs(
    device_types: Iterable[str], proxies: Mapping[str, DeviceSpec] | None = None
) -> dict[str, DeviceSpec]:
    """Device type -> spec: ``proxies[type]`` if given, else the catalogue's.

    Raises:
        UnknownNameError: a type is neither in ``proxies`` nor in the catalogue (for
            openb's G1/G2/G3 the catalogue raises ``UndisclosedDeviceError``).
    """
    out: dict[str, DeviceSpec] = {}
    for t in device_types:
        if proxies is not None and t in proxies:
            out[t] = proxies[t]
        else:
            out[t] = get_device(t)
    return out


def _proxy(spec: DeviceSpec, name: str, why: str) -> DeviceSpec:
    return dataclasses.replace(spec, name=name, source=f"{why}; numbers of {spec.name}")


def cluster_from_node_counts(
    name: str,
    nodes: Sequence[tuple[str, int]],
    specs: Mapping[str, DeviceSpec],
) -> Cluster:
    """A flat cluster (node level + one fabric level) from ``(device_type, gpus)`` per node.

    Each node's scale-up bandwidth is its spec's ``scale_up_bw`` and its fabric
    bandwidth its ``scale_out_bw`` (per-node link exceptions); the nominal level
    bandwidths are the first node's.
    """
    if not nodes:
        raise ConfigError(f"cluster '{name}': no GPU nodes")
    types = [t for t, _ in nodes]
    sizes = [g for _, g in nodes]
    up = np.array([specs[t].scale_up_bw for t in types], dtype=np.float64)
    out = np.array([specs[t].scale_out_bw for t in types], dtype=np.float64)
    levels = [
        Level("node", 1, float(up[0]), 1e-6, True),
        Level("fabric", len(nodes), float(out[0]), 5e-6),
    ]
    return Cluster(name, sizes, types, levels, link_bandwidth={0: up, 1: out})


def _assemble(
    name: str,
    rows: list[tuple[str, str, int]],  # (code, type name, gpus)
    catalogue: Mapping[str, str],
    proxies: Mapping[str, tuple[str, str]],
    undisclosed_codes: frozenset[str],
    undisclosed: str,
    reference: str,
    source: str,
) -> HeteroCluster:
    if undisclosed not in ("neutral", "exclude"):
        raise ConfigError(f"undisclosed must be 'neutral' or 'exclude', got {undisclosed!r}")
    ref_spec = get_device(reference)
    ref_type = ref_spec.name
    specs: dict[str, DeviceSpec] = {}
    assumptions: dict[str, str] = {}
    excluded: dict[str, int] = {}
    nodes: list[tuple[str, int]] = []
    for code, tname, gpus in rows:
        if code in undisclosed_codes:
            if undisclosed == "exclude":
                excluded[tname] = excluded.get(tname, 0) + gpus
                continue
            if tname not in specs:
                specs[tname] = _proxy(ref_spec, tname, f"UNDISCLOSED {code}: neutral")
                assumptions[tname] = f"neutral:{ref_type}"
        elif code in proxies:
            if tname not in specs:
                specs[tname] = _proxy(get_device(proxies[code][1]), tname, f"PROXY {code}")
                assumptions[tname] = f"proxy:{proxies[code][1]}"
        elif tname not in specs:
            specs[tname] = get_device(catalogue[code])
            assumptions[tname] = "catalogue"
        nodes.append((tname, gpus))
    if ref_type not in specs:
        raise ConfigError(
            f"{source}: reference device '{reference}' has no node in this list "
            f"(types: {', '.join(sorted(specs))})"
        )
    cluster = cluster_from_node_counts(name, nodes, specs)
    return HeteroCluster(cluster, specs, ref_type, assumptions, excluded, source)


def openb_cluster(
    path: str | Path, *, undisclosed: str = "neutral", reference: str = "T4", every: int = 1
) -> HeteroCluster:
    """The GPU nodes of an openb node list as a heterogeneous cluster.

    CPU-only nodes are left out. Node types: catalogue names for disclosed codes
    (:data:`OPENB_CODES`), the code itself (``G2``...) for undisclosed ones. The
    default reference ``T4`` is the disclosed type with the most GPUs (842); with
    ``undisclosed="neutral"`` G1-G3 behave exactly like it. ``every=k`` keeps every
    k-th GPU node (a smaller cluster with the same type mix, for quick runs).

    Raises:
        TraceError: a malformed row (from the openb loader) or an unknown GPU model.
    """
    from clustersim.workload.openb import load_openb_nodes

    nodes = load_openb_nodes(path)
    rows: list[tuple[str, str, int]] = []
    for i in range(len(nodes)):
        g = int(nodes.gpu[i])
        if g == 0:
            continue
        code = nodes.model[i]
        if code in OPENB_UNDISCLOSED:
            rows.append((code, code, g))
        elif code in OPENB_CODES:
            rows.append((code, get_device(OPENB_CODES[code]).name, g))
        else:
            raise TraceError(
                str(path),
                i + 2,
                "model",
                f"unknown GPU model '{code}'",
                f"known: {', '.join(sorted({*OPENB_CODES, *OPENB_UNDISCLOSED}))}",
            )
    return _assemble(
        "openb",
        rows[:: _stride(every)],
        OPENB_CODES,
        {},
        OPENB_UNDISCLOSED,
        undisclosed,
        reference,
        str(path),
    )


def _stride(every: int) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"every must be a whole number >= 1, got {every!r}")
    return every


def spot_cluster(
    path: str | Path, *, undisclosed: str = "neutral", reference: str = "A100", every: int = 1
) -> HeteroCluster:
    """The Alibaba spot-2026 node list (``gpu_model,gpu_capacity_num,cpu_num,node_name``).

    Node types: ``A100``, ``H800``, ``A10`` (catalogue), ``A800`` (A100 numbers, see
    module doc), ``GPU-series-1`` / ``GPU-series-2`` (undisclosed). The default
    reference ``A100`` is the disclosed type with the most GPUs (3,456). ``every=k``
    keeps every k-th GPU node.

    Raises:
        TraceError: missing column, bad GPU count, duplicate node, unknown model.
    """
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(str(p), None, None, "file not found", "check the node-list path") from None
    rows: list[tuple[str, str, int]] = []
    seen: dict[str, int] = {}
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        for col in ("gpu_model", "gpu_capacity_num", "node_name"):
            if col not in header:
                raise TraceError(
                    str(p),
                    1,
                    col,
                    "missing column",
                    "header must hold gpu_model,gpu_capacity_num,cpu_num,node_name",
                )
        reader.fieldnames = header
        for row in reader:
            line = reader.line_num
            name = (row.get("node_name") or "").strip()
            if name in seen:
                raise TraceError(
                    str(p),
                    line,
                    "node_name",
                    f"duplicate node '{name}'",
                    f"first seen on line {seen[name]}",
                )
            seen[name] = line
            text = (row.get("gpu_capacity_num") or "").strip()
            try:
                g = int(text)
            except ValueError:
                raise TraceError(
                    str(p), line, "gpu_capacity_num", f"'{text}' is not a whole number"
                ) from None
            if not 0 <= g <= 64:
                raise TraceError(str(p), line, "gpu_capacity_num", f"{g} is out of range 0..64")
            if g == 0:
                continue
            code = (row.get("gpu_model") or "").strip()
            if code in SPOT_UNDISCLOSED:
                rows.append((code, code, g))
            elif code in SPOT_PROXIES:
                rows.append((code, SPOT_PROXIES[code][0], g))
            elif code in SPOT_CODES:
                rows.append((code, get_device(SPOT_CODES[code]).name, g))
            else:
                known = sorted({*SPOT_CODES, *SPOT_PROXIES, *SPOT_UNDISCLOSED})
                raise TraceError(
                    str(p),
                    line,
                    "gpu_model",
                    f"unknown GPU model '{code}'",
                    f"known: {', '.join(known)}",
                )
    return _assemble(
        "alibaba-spot-2026",
        rows,
        SPOT_CODES,
        SPOT_PROXIES,
        SPOT_UNDISCLOSED,
        undisclosed,
        reference,
        str(p),
    )


def openb_hetero_jobs(
    path: str | Path,
    hc: HeteroCluster | None = None,
    *,
    keep_gpu_spec: bool = True,
    shared_class: str = "memory",
    whole_class: str = "compute",
) -> tuple[list[Job], dict[str, int]]:
    """openb pods as jobs for heterogeneous scheduling.

    Each job gets ``device_type=None`` and, in ``attrs``:

    * ``accepts`` -- the pod's ``gpu_spec`` mapped to device-type names
      (:data:`OPENB_CODES`; undisclosed codes kept), or absent when it accepts any
      GPU. With ``keep_gpu_spec=False`` (e.g. on a node list that has none of the
      openb models, like the spot list) every job accepts any type. With ``hc``
      given, accepted types absent from its cluster are dropped and a job left with
      none is dropped and counted.
    * ``workload_class`` -- ``shared_class`` for GPU-sharing pods (``gpu_milli`` <
      1000; inference/notebook-style work, bandwidth-bound) and ``whole_class``
      otherwise (training-style work). This split is an assumption, documented in
      ``docs/hetero-power-economics.md``.

    Returns:
        ``(jobs, dropped)`` with ``dropped`` counting left-out jobs by reason.
    """
    from clustersim.workload.loaders import load_openb

    raw, report = load_openb(path)
    dropped: dict[str, int] = dict(report.dropped)
    present = set(hc.cluster.device_types) if hc is not None else None
    out: list[Job] = []
    for j in raw:
        attrs: dict[str, Any] = dict(j.attrs)
        attrs["workload_class"] = shared_class if j.gpu_milli < 1000 else whole_class
        if keep_gpu_spec and j.device_type:
            types = sorted({_openb_type(c) for c in j.device_type.split("|") if c})
            if present is not None:
                types = [t for t in types if t in present]
                if not types:
                    dropped["accepts no device type of this cluster"] = (
                        dropped.get("accepts no device type of this cluster", 0) + 1
                    )
                    continue
            attrs["accepts"] = tuple(types)
        out.append(
            Job(j.id, j.submit_time, j.num_gpus, j.duration, j.gpu_milli, None, len(out), attrs)
        )
    return out, dropped


def _openb_type(code: str) -> str:
    target = OPENB_CODES.get(code)
    return get_device(target).name if target is not None else code


def inflate_jobs(
    jobs: Sequence[Job], capacity_devices: float, *, target: float = 1.3, window_s: float = 3600.0
) -> list[Job]:
    """FGD-style load inflation: tile ``jobs`` until their GPU demand reaches ``target`` x capacity.

    The FGD evaluation (Weng et al., ATC'23; literature.md §5.1) submits pods until
    the arrived GPU demand is 130 % of the cluster's GPUs. Here the job list is
    repeated ``copies = ceil(target * capacity / sum(gpu_demand))`` times (copy ``c``
    gets ids ``<id>#c``), and the arrival times of the whole list are compressed
    linearly into ``[t0, t0 + window_s]`` (relative order kept; copies of a job arrive
    together, copy order breaking ties). Durations and shapes are unchanged.
    """
    if not jobs:
        return []
    demand = sum(j.gpu_demand for j in jobs)
    copies = max(1, math.ceil(target * capacity_devices / demand - 1e-12))
    t0 = min(j.submit_time for j in jobs)
    t1 = max(j.submit_time for j in jobs)
    k = window_s / (t1 - t0) if t1 > t0 else 0.0
    out: list[Job] = []
    for j in sorted(jobs, key=lambda x: (x.submit_time, x.seq)):
        t = t0 + (j.submit_time - t0) * k
        for c in range(copies):
            jid = j.id if copies == 1 else f"{j.id}#{c}"
            out.append(dataclasses.replace(j, id=jid, submit_time=t, seq=len(out)))
    return out


def compress_arrivals(jobs: Sequence[Job], scale: float) -> list[Job]:
    """Arrival times divided by ``scale`` around the first arrival (load x ``scale``)."""
    if not scale > 0:
        raise ConfigError(f"load scale must be > 0, got {scale!r}")
    if not jobs:
        return []
    t0 = min(j.submit_time for j in jobs)
    return [dataclasses.replace(j, submit_time=t0 + (j.submit_time - t0) / scale) for j in jobs]


@dataclass
class HeteroRun:
    """One simulated run on a :class:`HeteroCluster` (see :func:`replay_hetero`).

    Attributes:
        policy: policy name.
        summary: the engine summary (:func:`clustersim.metrics.summarize`) plus
            ``cost`` (USD: allocated device-hours x each type's list price),
            ``operator_cost_usd`` (:func:`clustersim.economics.run_cost` over the span),
            ``energy_kwh`` (facility energy), ``peak_draw_w``,
            ``device_hours_by_type`` and ``jct_p95_completion_s`` (time from the first
            arrival to the completion of 95 % of jobs).
        records: the engine's job records.
        engine: the raw :class:`~clustersim.engine.EngineResult`.
    """

    policy: str
    summary: dict[str, Any]
    records: list[Any]
    engine: Any


def device_hours_by_type(records: Iterable[Any], cluster: Cluster) -> dict[str, float]:
    """Allocated device-hours per device type (shares counted as fractions)."""
    type_of = np.repeat(np.arange(len(cluster.node_type)), cluster.node_size)
    out: dict[str, float] = {}
    for r in records:
        if not r.devices or not r.run_time:
            continue
        share = r.job.gpu_milli / 1000.0 * r.run_time / 3600.0
        for d in r.devices:
            t = cluster.node_type[int(type_of[d])]
            out[t] = out.get(t, 0.0) + share
    return dict(sorted(out.items()))


def replay_hetero(
    hc: HeteroCluster,
    jobs: Sequence[Job],
    scheduler: Any,
    *,
    matrix: SpeedMatrix | None = None,
    speed_model: Callable[[Job, tuple[int, ...], Cluster], float] | None = None,
    placement: str = "first_fit",
    policy_name: str | None = None,
    power_model: Any = None,
    power_series: Any = None,
) -> HeteroRun:
    """Run ``jobs`` on ``hc`` under ``scheduler`` with the heterogeneous speed model.

    ``speed_model`` defaults to :func:`hetero_speed_model` of ``matrix`` (default: the
    cluster's roofline matrix). Energy comes from ``power_series`` (a
    :class:`~clustersim.power.PowerSeries` recorded during the run, e.g. by a
    :class:`~clustersim.schedulers.hetero_policies.PowerCapGuard`; pass a callable
    ``t_end -> PowerSeries``) or is rebuilt exactly from the job records with
    ``power_model`` (default: :class:`~clustersim.power.PowerModel` of ``hc``).
    """
    from clustersim.economics import rental_revenue, run_cost
    from clustersim.engine import Engine
    from clustersim.metrics import job_table, summarize
    from clustersim.power import PowerModel, draw_series_from_records
    from clustersim.schedulers.placement import get_placement

    m = matrix or hc.speed_matrix()
    sm = speed_model or hetero_speed_model(m)
    name = policy_name or str(getattr(scheduler, "name", "policy"))
    eng = Engine(
        hc.cluster, jobs, scheduler, get_placement(placement), speed_model=sm, policy_name=name
    )
    raw = eng.run()
    table = job_table(raw.records)
    s = summarize(table, raw.util_t, raw.util_milli, raw.capacity, raw.start_time, raw.end_time)
    dh = device_hours_by_type(raw.records, hc.cluster)
    s["device_hours_by_type"] = dh
    s["cost"] = rental_revenue(dh, {t: hc.specs[t].price_per_hour for t in hc.specs})
    span_h = (raw.end_time - raw.start_time) / 3600.0
    s["operator_cost_usd"] = run_cost(hc.specs, hc.gpus_by_type(), span_h, dh).total_usd
    pm = power_model or PowerModel(hc.cluster, hc.specs)
    if power_series is not None:
        series = power_series(raw.end_time)
    else:
        series = draw_series_from_records(raw.records, pm, raw.start_time, raw.end_time)
    s["energy_kwh"] = series.energy_kwh
    s["peak_draw_w"] = series.peak_w
    ends = np.sort(np.asarray(table["end"], dtype=np.float64))
    ends = ends[np.isfinite(ends)]
    s["jct_p95_completion_s"] = (
        float(ends[max(0, math.ceil(0.95 * len(ends)) - 1)] - raw.start_time) if len(ends) else None
    )
    s["stopped_by"] = raw.stopped_by
    s["wall_s"] = raw.wall_s
    return HeteroRun(name, s, raw.records, raw)
