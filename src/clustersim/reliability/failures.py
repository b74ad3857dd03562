"""Failure model: sources, cluster layout, failure-event generation and CSV failure traces.

Owns everything that decides *when what breaks*:

* :class:`FailureSource` -- one failure mechanism (a GPU's HBM, a ToR switch, a
  software bug) with a per-component rate, an exponential or Weibull inter-failure
  law, the level it lives at (device, node, link, switch, power domain), the
  repair time it forces on the nodes it takes down, and whether it shows up as a
  crash or as a hang (which decides the detection latency).
* :class:`FailureModel` -- the list of sources plus the default grouping of nodes
  under switches and power domains.
* :class:`ClusterLayout` -- the concrete nodes (device count, device type, switch
  and power domain of each node) the events are drawn for.
* :func:`generate_failures` -- a deterministic, time-ordered tuple of
  :class:`FailureEvent` for a layout over ``[0, horizon)`` from one
  :class:`numpy.random.Generator` (vectorised: superposed Poisson processes are
  drawn as one Poisson count plus sorted uniform times per source).
* :func:`load_failure_trace` / :func:`write_failure_trace` -- the CSV failure trace
  that can replace the random model.
* Presets built from published rates (:func:`meta_rsc_sources`,
  :func:`llama3_table5_sources`, :func:`alibaba_hpn_network_sources`); every number
  is cited in ``docs/reliability.md``.

Units: time in seconds; rates in failures per component per day (as published).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustersim.errors import ConfigError, TraceError
from clustersim.reliability.distributions import Duration, Fixed, Lognormal

DAY = 86400.0
"""Seconds per day."""

Level = Literal["device", "node", "link", "switch", "power_domain"]
Category = Literal["hardware", "network", "software", "maintenance"]
Manifests = Literal["crash", "hang"]
LEVELS: tuple[str, ...] = ("device", "node", "link", "switch", "power_domain")
CATEGORIES: tuple[str, ...] = ("hardware", "network", "software", "maintenance")

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class FailureSource(_Model):
    """One failure mechanism with its own rate, law, level and repair.

    ``rate_per_day`` is per *component* of ``level`` (per device, per node, per
    NIC link, per switch, per power domain). A failure takes down every node the
    component feeds: its node (device, link, node levels) or all nodes under the
    switch / in the power domain (correlated failures). Those nodes are drained
    for ``repair`` seconds; ``repair`` = 0 means nothing needs fixing (software,
    restart in place). ``manifests`` picks the detection latency of the recovery
    pipeline (a crash is seen by health checks, a hang only by a timeout).
    """

    name: str = Field(min_length=1)
    category: Category
    level: Level
    rate_per_day: float = Field(ge=0.0, description="failures per component per day")
    distribution: Literal["exponential", "weibull"] = "exponential"
    weibull_shape: float = Field(default=1.0, gt=0.0, description="k < 1: infant mortality")
    repair: Duration = Field(default_factory=lambda: Fixed(value=0.0))
    manifests: Manifests = "crash"
    device_types: tuple[str, ...] | None = Field(
        default=None, description="node device types this applies to; None = all"
    )
    ref: str = Field(default="", description="citation key in docs/reliability.md")


class FailureModel(_Model):
    """All failure sources plus the default node grouping used for correlated failures.

    ``trace`` (a CSV path) replaces the random sources entirely when set.
    """

    sources: tuple[FailureSource, ...] = Field(default_factory=lambda: meta_rsc_sources())
    devices_per_node: int = Field(default=8, gt=0)
    links_per_node: int = Field(default=8, gt=0, description="scale-out NIC ports per node")
    nodes_per_switch: int = Field(default=2, gt=0, description="nodes under one ToR")
    nodes_per_power_domain: int = Field(default=2, gt=0, description="nodes per power feed")
    trace: str | None = Field(default=None, description="CSV failure trace replacing sources")

    @model_validator(mode="after")
    def _unique(self) -> FailureModel:
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"failure source '{s.name}' appears twice; names must be unique")
            seen.add(s.name)
        return self

    def source(self, name: str) -> FailureSource:
        """The source called ``name`` (raises :class:`~clustersim.errors.UnknownNameError`)."""
        from clustersim.errors import UnknownNameError

        for s in self.sources:
            if s.name == name:
                return s
        raise UnknownNameError("failure source", name, [s.name for s in self.sources])


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """One failure: at ``time`` component ``component`` of ``level`` fails (source ``kind``).

    ``nodes`` are the node indices it takes down (sorted); they are unavailable
    until ``time + repair_time`` (0 = no repair, restart in place).
    """

    time: float
    kind: str
    level: str
    component: int
    nodes: tuple[int, ...]
    repair_time: float
    category: str = "hardware"
    manifests: str = "crash"


@dataclass(frozen=True)
class ClusterLayout:
    """The nodes failures are drawn for.

    Attributes:
        devices_per_node: devices on each node (int array, one entry per node).
        switch_of_node: ToR switch id of each node (nodes sharing an id fail together).
        power_domain_of_node: power-domain id of each node.
        device_type_of_node: device model of each node (for per-type sources).
        links_per_node: scale-out NIC links per node.
    """

    devices_per_node: IntArray
    switch_of_node: IntArray
    power_domain_of_node: IntArray
    device_type_of_node: tuple[str, ...]
    links_per_node: int = 8

    def __post_init__(self) -> None:
        n = len(self.devices_per_node)
        if n == 0:
            raise ConfigError("cluster layout has no nodes")
        for name, arr in (
            ("switch_of_node", self.switch_of_node),
            ("power_domain_of_node", self.power_domain_of_node),
        ):
            if len(arr) != n:
                raise ConfigError(f"layout {name} has {len(arr)} entries for {n} nodes")
        if len(self.device_type_of_node) != n:
            raise ConfigError("layout device_type_of_node must have one entry per node")
        if np.any(self.devices_per_node <= 0):
            raise ConfigError("every node needs at least one device")

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.devices_per_node)

    @property
    def num_devices(self) -> int:
        """Number of devices."""
        return int(self.devices_per_node.sum())

    @classmethod
    def uniform(
        cls,
        num_nodes: int,
        devices_per_node: int = 8,
        nodes_per_switch: int = 2,
        nodes_per_power_domain: int = 2,
        links_per_node: int = 8,
        device_type: str = "H100",
    ) -> ClusterLayout:
        """``num_nodes`` identical nodes; consecutive nodes share switches and power domains."""
        if num_nodes <= 0:
            raise ConfigError(f"cluster layout needs num_nodes > 0, got {num_nodes}")
        idx = np.arange(num_nodes, dtype=np.int64)
        return cls(
            devices_per_node=np.full(num_nodes, devices_per_node, dtype=np.int64),
            switch_of_node=idx // nodes_per_switch,
            power_domain_of_node=idx // nodes_per_power_domain,
            device_type_of_node=(device_type,) * num_nodes,
            links_per_node=links_per_node,
        )

    @classmethod
    def for_model(
        cls, model: FailureModel, num_nodes: int, device_type: str = "H100"
    ) -> ClusterLayout:
        """A uniform layout using the model's devices/links per node and group sizes."""
        return cls.uniform(
            num_nodes,
            devices_per_node=model.devices_per_node,
            nodes_per_switch=model.nodes_per_switch,
            nodes_per_power_domain=model.nodes_per_power_domain,
            links_per_node=model.links_per_node,
            device_type=device_type,
        )

    def eligible_nodes(self, device_types: tuple[str, ...] | None) -> IntArray:
        """Node indices a source with this ``device_types`` filter applies to."""
        if device_types is None:
            return np.arange(self.num_nodes, dtype=np.int64)
        wanted = set(device_types)
        return np.array(
            [i for i, t in enumerate(self.device_type_of_node) if t in wanted], dtype=np.int64
        )

    def group_members(self, level: str, group: int) -> tuple[int, ...]:
        """Nodes under switch / in power domain ``group``."""
        arr = self.switch_of_node if level == "switch" else self.power_domain_of_node
        return tuple(int(x) for x in np.flatnonzero(arr == group))


# ---------------------------------------------------------------------------------------------
# Component enumeration and exact job-level rates


def _components(layout: ClusterLayout, source: FailureSource) -> tuple[IntArray, IntArray]:
    """(component ids, node of each component; -1 for group levels) for a source."""
    nodes = layout.eligible_nodes(source.device_types)
    if source.level == "node":
        return nodes, nodes
    if source.level == "device":
        counts = layout.devices_per_node[nodes]
        first = np.concatenate(([0], np.cumsum(layout.devices_per_node)[:-1])).astype(np.int64)
        node_of = np.repeat(nodes, counts)
        local = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(
            np.concatenate(([0], np.cumsum(counts)[:-1])), counts
        )
        return first[node_of] + local, node_of
    if source.level == "link":
        lpn = layout.links_per_node
        node_of = np.repeat(nodes, lpn)
        comp = node_of * lpn + np.tile(np.arange(lpn, dtype=np.int64), len(nodes))
        return comp, node_of
    groups = layout.switch_of_node if source.level == "switch" else layout.power_domain_of_node
    ids = np.unique(groups[nodes])
    return ids.astype(np.int64), np.full(len(ids), -1, dtype=np.int64)


def job_failure_rate(model: FailureModel, layout: ClusterLayout, job_nodes: Iterable[int]) -> float:
    """Expected failures per second that hit a job holding ``job_nodes``.

    Counts every component whose failure takes down at least one job node (a
    switch counts once however many job nodes it feeds). Exact for exponential
    sources; for Weibull sources it is the long-run (renewal) rate 1/mean.
    """
    nodes = np.unique(np.asarray(list(job_nodes), dtype=np.int64))
    total = 0.0
    for s in model.sources:
        if s.rate_per_day <= 0:
            continue
        elig = layout.eligible_nodes(s.device_types)
        mine = np.intersect1d(nodes, elig)
        if s.level == "node":
            n = len(mine)
        elif s.level == "device":
            n = int(layout.devices_per_node[mine].sum())
        elif s.level == "link":
            n = len(mine) * layout.links_per_node
        else:
            groups = layout.switch_of_node if s.level == "switch" else layout.power_domain_of_node
            n = len(np.unique(groups[nodes]))
        total += n * s.rate_per_day / DAY
    return total


# ---------------------------------------------------------------------------------------------
# Generation


def _event_times(
    source: FailureSource, n: int, horizon: float, rng: np.random.Generator
) -> tuple[FloatArray, IntArray]:
    """Failure times and component positions (0..n-1) of one source over [0, horizon)."""
    lam = source.rate_per_day / DAY
    if n == 0 or lam <= 0.0 or horizon <= 0.0:
        return np.empty(0), np.empty(0, dtype=np.int64)
    if source.distribution == "exponential" or source.weibull_shape == 1.0:
        count = int(rng.poisson(n * lam * horizon))
        times = rng.uniform(0.0, horizon, count)
        comps = rng.integers(0, n, count, dtype=np.int64)
        return times, comps
    # Weibull renewal process per component, every component new at t = 0.
    k = source.weibull_shape
    scale = 1.0 / (lam * math.gamma(1.0 + 1.0 / k))
    cols = max(2, math.ceil(2.0 * lam * horizon) + 2)
    t = np.cumsum(scale * rng.weibull(k, (n, cols)), axis=1)
    parts_t = [t[t < horizon]]
    parts_c = [np.nonzero(t < horizon)[0].astype(np.int64)]
    active = np.flatnonzero(t[:, -1] < horizon)
    last = t[active, -1]
    while active.size:
        more = last[:, None] + np.cumsum(scale * rng.weibull(k, (active.size, cols)), axis=1)
        mask = more < horizon
        parts_t.append(more[mask])
        parts_c.append(active[np.nonzero(mask)[0]])
        keep = more[:, -1] < horizon
        active, last = active[keep], more[keep, -1]
    return np.concatenate(parts_t), np.concatenate(parts_c)


def generate_failures(
    model: FailureModel,
    layout: ClusterLayout,
    horizon: float,
    rng: np.random.Generator,
) -> tuple[FailureEvent, ...]:
    """Draw every failure of ``model`` on ``layout`` in ``[0, horizon)``, time-ordered.

    Sources are drawn in the model's order, each consuming the generator in a
    fixed pattern, so the same seed gives the same sequence. Events are sorted by
    (time, source order, component). Exponential sources are superposed Poisson
    processes (exact); Weibull sources are renewal processes per component with
    every component new at time 0. A failure of a node already under repair is
    still reported; the consumer extends the repair (see ``simulate``).
    If ``model.trace`` is set the trace is loaded instead (``rng`` unused).
    """
    if model.trace is not None:
        return load_failure_trace(model.trace, layout)
    if horizon < 0 or not math.isfinite(horizon):
        raise ConfigError(f"failure horizon must be a finite number >= 0, got {horizon}")
    all_t: list[FloatArray] = []
    all_s: list[IntArray] = []
    all_c: list[IntArray] = []
    all_n: list[IntArray] = []
    all_r: list[FloatArray] = []
    for si, src in enumerate(model.sources):
        comp_ids, node_of = _components(layout, src)
        times, pos = _event_times(src, len(comp_ids), horizon, rng)
        if times.size == 0:
            continue
        all_t.append(times)
        all_s.append(np.full(times.size, si, dtype=np.int64))
        all_c.append(comp_ids[pos])
        all_n.append(node_of[pos])
        all_r.append(src.repair.sample(rng, times.size))
    if not all_t:
        return ()
    t = np.concatenate(all_t)
    s = np.concatenate(all_s)
    c = np.concatenate(all_c)
    nd = np.concatenate(all_n)
    r = np.concatenate(all_r)
    order = np.lexsort((c, s, t))
    group_cache: dict[tuple[str, int], tuple[int, ...]] = {}
    events: list[FailureEvent] = []
    for i in order.tolist():
        src = model.sources[int(s[i])]
        comp = int(c[i])
        if src.level in ("switch", "power_domain"):
            key = (src.level, comp)
            if key not in group_cache:
                group_cache[key] = layout.group_members(src.level, comp)
            nodes = group_cache[key]
        else:
            nodes = (int(nd[i]),)
        events.append(
            FailureEvent(
                time=float(t[i]),
                kind=src.name,
                level=src.level,
                component=comp,
                nodes=nodes,
                repair_time=float(r[i]),
                category=src.category,
                manifests=src.manifests,
            )
        )
    return tuple(events)


# ---------------------------------------------------------------------------------------------
# CSV failure traces

TRACE_COLUMNS = ("time", "kind", "level", "component", "nodes", "repair_time")
"""Required columns of a failure trace; ``category`` and ``manifests`` are optional."""


def _nodes_for(layout: ClusterLayout | None, level: str, component: int) -> tuple[int, ...] | None:
    if layout is None:
        return None
    if level in ("switch", "power_domain"):
        return layout.group_members(level, component)
    if level == "node":
        return (component,)
    if level == "link":
        return (component // layout.links_per_node,)
    first = np.concatenate(([0], np.cumsum(layout.devices_per_node)))
    node = int(np.searchsorted(first, component, side="right") - 1)
    return (node,) if 0 <= component < first[-1] else None


def load_failure_trace(
    path: str | Path, layout: ClusterLayout | None = None
) -> tuple[FailureEvent, ...]:
    """Read a CSV failure trace (:data:`TRACE_COLUMNS`, optional ``category``, ``manifests``).

    ``nodes`` lists node indices separated by ``;`` (``"4;5"``); when empty it is
    derived from ``level`` and ``component`` with ``layout``. Lines starting with
    ``#`` are comments. Rows are returned sorted by time (stable: file order
    breaks ties). Every bad value raises :class:`~clustersim.errors.TraceError`
    naming ``file:line`` and the field.
    """
    p = Path(path)
    name = str(p)
    if not p.is_file():
        raise TraceError(name, None, None, "failure trace file not found", "check the path")
    with p.open(newline="") as fh:
        lines = [(i + 1, ln) for i, ln in enumerate(fh.read().splitlines())]
    lines = [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise TraceError(name, None, None, "failure trace is empty", "add a header row")
    header_line, header = lines[0]
    cols = [h.strip() for h in next(csv.reader([header]))]
    missing = [c for c in TRACE_COLUMNS if c not in cols]
    if missing:
        raise TraceError(
            name,
            header_line,
            missing[0],
            "missing column",
            f"header needs {','.join(TRACE_COLUMNS)}",
        )
    known = {*TRACE_COLUMNS, "category", "manifests"}
    extra = [c for c in cols if c not in known]
    if extra:
        raise TraceError(name, header_line, extra[0], "unknown column", f"allowed: {sorted(known)}")
    n_nodes = layout.num_nodes if layout is not None else None
    rows: list[FailureEvent] = []
    for lineno, text in lines[1:]:
        vals = next(csv.reader([text]))
        if len(vals) != len(cols):
            raise TraceError(name, lineno, None, f"{len(vals)} fields, header has {len(cols)}")
        rec = dict(zip(cols, (v.strip() for v in vals), strict=True))

        def num(field: str, rec: dict[str, str] = rec, lineno: int = lineno) -> float:
            try:
                x = float(rec[field])
            except ValueError:
                raise TraceError(name, lineno, field, f"'{rec[field]}' is not a number") from None
            if not math.isfinite(x) or x < 0:
                raise TraceError(name, lineno, field, f"{x} must be finite and >= 0")
            return x

        t = num("time")
        rep = num("repair_time")
        level = rec["level"]
        if level not in LEVELS:
            raise TraceError(
                name, lineno, "level", f"unknown level '{level}'", f"use one of {LEVELS}"
            )
        comp_f = num("component")
        if comp_f != int(comp_f):
            raise TraceError(name, lineno, "component", "component must be an integer")
        comp = int(comp_f)
        if not rec["kind"]:
            raise TraceError(name, lineno, "kind", "empty failure kind", "name the source")
        category = rec.get("category") or "hardware"
        if category not in CATEGORIES:
            raise TraceError(name, lineno, "category", f"unknown '{category}'", f"use {CATEGORIES}")
        manifests = rec.get("manifests") or "crash"
        if manifests not in ("crash", "hang"):
            raise TraceError(name, lineno, "manifests", f"unknown '{manifests}'", "crash or hang")
        if rec["nodes"]:
            try:
                nodes = tuple(sorted({int(x) for x in rec["nodes"].split(";") if x.strip()}))
            except ValueError:
                raise TraceError(
                    name,
                    lineno,
                    "nodes",
                    f"'{rec['nodes']}' is not a list of node indices",
                    "write integers separated by ';', e.g. 4;5",
                ) from None
        else:
            derived = _nodes_for(layout, level, comp)
            if derived is None:
                raise TraceError(
                    name,
                    lineno,
                    "nodes",
                    "empty and cannot be derived",
                    "list the nodes or pass the cluster layout",
                )
            nodes = derived
        if not nodes:
            raise TraceError(name, lineno, "nodes", "a failure must take down at least one node")
        if any(x < 0 for x in nodes) or (n_nodes is not None and max(nodes) >= n_nodes):
            raise TraceError(
                name,
                lineno,
                "nodes",
                f"node index out of range in {list(nodes)}",
                f"the cluster has nodes 0..{(n_nodes or 1) - 1}",
            )
        rows.append(FailureEvent(t, rec["kind"], level, comp, nodes, rep, category, manifests))
    order = sorted(range(len(rows)), key=lambda i: rows[i].time)
    return tuple(rows[i] for i in order)


def write_failure_trace(events: Sequence[FailureEvent], path: str | Path) -> None:
    """Write events as a CSV failure trace that :func:`load_failure_trace` reads back exactly."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*TRACE_COLUMNS, "category", "manifests"])
        for e in events:
            w.writerow(
                [
                    repr(e.time),
                    e.kind,
                    e.level,
                    e.component,
                    ";".join(map(str, e.nodes)),
                    repr(e.repair_time),
                    e.category,
                    e.manifests,
                ]
            )


# ---------------------------------------------------------------------------------------------
# Published rates

LLAMA3_DAYS = 54.0
LLAMA3_GPUS = 16384
LLAMA3_NODES = 2048
LLAMA3_GPUS_PER_NODE = 8
LLAMA3_NODES_PER_TOR = 2
"""Llama 3 (arXiv 2407.21783 §3.3.1): a rack holds 16 GPUs in two servers under one ToR."""

LLAMA3_TABLE5: tuple[tuple[str, str, str, int, str], ...] = (
    # name, category, level, count in 54 days, manifests
    ("faulty_gpu", "hardware", "device", 126, "crash"),  # printed 148 (30.1 %); see docs
    ("gpu_hbm3", "hardware", "device", 72, "crash"),
    ("software_bug", "software", "node", 54, "crash"),
    ("network_switch_cable", "network", "switch", 35, "hang"),
    ("host_maintenance", "maintenance", "node", 32, "crash"),
    ("gpu_sram", "hardware", "device", 19, "crash"),
    ("gpu_system_processor", "hardware", "device", 17, "crash"),
    ("nic", "network", "link", 7, "hang"),
    ("nccl_watchdog_timeout", "software", "node", 7, "hang"),
    ("silent_data_corruption", "hardware", "device", 6, "crash"),
    ("gpu_thermal_interface_sensor", "hardware", "device", 6, "crash"),
    ("ssd", "hardware", "node", 3, "crash"),
    ("power_supply", "hardware", "node", 3, "crash"),
    ("server_chassis", "hardware", "node", 2, "crash"),
    ("io_expansion_board", "hardware", "node", 2, "crash"),
    ("dependency", "software", "node", 2, "crash"),
    ("cpu", "hardware", "node", 2, "crash"),
    ("system_memory", "hardware", "node", 2, "crash"),
)
"""Llama 3 Table 5: root causes of the 419 unexpected interruptions in 54 days (16,384 H100)."""

META_RSC1_RF = 6.50e-3
"""Meta RSC-1 (16k A100, 11 months): failures per node-day (HPCA'25)."""
META_RSC2_RF = 2.34e-3
"""Meta RSC-2 (8k A100, 11 months): failures per node-day (HPCA'25)."""
META_RSC_POOLED_RF = (2000 * META_RSC1_RF + 1000 * META_RSC2_RF) / 3000
"""Both RSC clusters pooled by node-days (2,000 + 1,000 nodes, same 11 months): 5.11e-3."""

HPN_LINK_FAIL_PER_MONTH = 0.057e-2
"""Alibaba HPN (SIGCOMM'24 §2.3): share of NIC-ToR links failing per month."""
HPN_TOR_CRASH_PER_MONTH = 0.051e-2
"""Alibaba HPN (SIGCOMM'24 §2.3): share of ToR switches crashing per month."""

DEFAULT_REPAIR = Lognormal(median=DAY, sigma=1.0, max=14 * DAY)
"""Drain-and-repair time of a node: median 1 day, clipped at 14 days ([U] assumption, see docs)."""

_INFRA = ("hardware", "network")


def _row_source(
    name: str,
    category: str,
    level: str,
    per_node_day: float,
    manifests: str,
    devices_per_node: int,
    links_per_node: int,
    nodes_per_switch: int,
    repair: Lognormal,
    device_types: tuple[str, ...] | None,
    ref: str,
) -> FailureSource:
    if level == "device":
        rate = per_node_day / devices_per_node
    elif level == "link":
        rate = per_node_day / links_per_node
    elif level == "switch":
        rate = per_node_day * nodes_per_switch
    else:
        rate = per_node_day
    needs_repair = category in ("hardware", "network", "maintenance")
    return FailureSource(
        name=name,
        category=category,
        level=level,
        rate_per_day=rate,
        repair=repair if needs_repair else Fixed(value=0.0),
        manifests=manifests,
        device_types=device_types,
        ref=ref,
    )


def meta_rsc_sources(
    r_f: float = META_RSC_POOLED_RF,
    *,
    devices_per_node: int = 8,
    links_per_node: int = 8,
    nodes_per_switch: int = LLAMA3_NODES_PER_TOR,
    repair: Lognormal = DEFAULT_REPAIR,
    device_types: tuple[str, ...] | None = None,
    include_software: bool = True,
) -> tuple[FailureSource, ...]:
    """Per-component sources whose absolute level comes from Meta's RSC rate ``r_f``.

    ``r_f`` (failures per node-day, HPCA'25) is taken as the rate of
    infrastructure failures (hardware + network). It is split over the
    hardware/network rows of Llama 3 Table 5 by their *shares*; software and
    maintenance rows are added at their Table-5 ratio to the infrastructure rows
    (95/302). Only shares come from Llama 3, never its 419 count, so comparing the
    result with 419 is a consistency check, not a fit.
    """
    infra = sum(c for _, cat, _, c, _ in LLAMA3_TABLE5 if cat in _INFRA)
    out = []
    for name, cat, level, count, man in LLAMA3_TABLE5:
        if cat not in _INFRA and not include_software:
            continue
        out.append(
            _row_source(
                name,
                cat,
                level,
                r_f * count / infra,
                man,
                devices_per_node,
                links_per_node,
                nodes_per_switch,
                repair,
                device_types,
                "meta-rsc+llama3-shares",
            )
        )
    return tuple(out)


def llama3_table5_sources(
    *,
    faulty_gpu_count: int = 126,
    repair: Lognormal = DEFAULT_REPAIR,
    device_types: tuple[str, ...] | None = None,
) -> tuple[FailureSource, ...]:
    """Per-component rates read straight off Llama 3 Table 5 (counts / component-days).

    Circular if used to "reproduce" Llama 3's 419 count: use it as a simulator
    self-check or as H100-specific rates for other experiments.
    """
    out = []
    for name, cat, level, count, man in LLAMA3_TABLE5:
        c = faulty_gpu_count if name == "faulty_gpu" else count
        per_node_day = c / (LLAMA3_NODES * LLAMA3_DAYS)
        out.append(
            _row_source(
                name,
                cat,
                level,
                per_node_day,
                man,
                LLAMA3_GPUS_PER_NODE,
                8,
                LLAMA3_NODES_PER_TOR,
                repair,
                device_types,
                "llama3-table5",
            )
        )
    return tuple(out)


def alibaba_hpn_network_sources(
    *, repair: Lognormal = DEFAULT_REPAIR, device_types: tuple[str, ...] | None = None
) -> tuple[FailureSource, ...]:
    """NIC-ToR link failures and ToR crashes at Alibaba HPN's published monthly shares."""
    per_day = 1.0 / 30.0
    return (
        FailureSource(
            name="hpn_nic_tor_link",
            category="network",
            level="link",
            rate_per_day=HPN_LINK_FAIL_PER_MONTH * per_day,
            repair=repair,
            manifests="hang",
            device_types=device_types,
            ref="alibaba-hpn",
        ),
        FailureSource(
            name="hpn_tor_crash",
            category="network",
            level="switch",
            rate_per_day=HPN_TOR_CRASH_PER_MONTH * per_day,
            repair=repair,
            manifests="hang",
            device_types=device_types,
            ref="alibaba-hpn",
        ),
    )


__all__ = [
    "CATEGORIES",
    "DAY",
    "DEFAULT_REPAIR",
    "LEVELS",
    "LLAMA3_TABLE5",
    "META_RSC1_RF",
    "META_RSC2_RF",
    "META_RSC_POOLED_RF",
    "TRACE_COLUMNS",
    "ClusterLayout",
    "FailureEvent",
    "FailureModel",
    "FailureSource",
    "alibaba_hpn_network_sources",
    "generate_failures",
    "job_failure_rate",
    "llama3_table5_sources",
    "load_failure_trace",
    "meta_rsc_sources",
    "write_failure_trace",
]
