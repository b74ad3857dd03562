"""Cluster topology: devices in nodes, nodes in nested domains (supernode, rack, pod, fabric).

A :class:`Cluster` is static hardware: how many devices, which node each sits
in, each node's device model, and a stack of :class:`Level` s above the node,
innermost first. ``levels[0]`` is the node itself (its scale-up link, e.g.
NVLink); each further level groups whole nodes (a supernode, a rack, a pod)
and carries the per-device bandwidth (bytes/s, one direction) and latency (s)
available between devices that are in the same group of that level but in
different groups of the level below. The last level spans every node.

Fast placement uses the flat arrays (``node_first``, ``node_size``,
``group_of``); :meth:`Cluster.graph` builds the equivalent networkx graph on
demand for analysis and drawing.

Topology YAML (paths in scenarios are relative to the scenario file)::

    name: dgx-h100-64
    nodes:                                   # node groups, in device-id order
      - {count: 64, gpus: 8, device: H100}
    node_link: {name: nvlink, bandwidth: 450.0e9, latency: 1.0e-6}
    levels:                                  # above the node, innermost first
      - {name: leaf, nodes: 4, bandwidth: 50.0e9, latency: 2.0e-6}
      - {name: spine, nodes: 64, bandwidth: 50.0e9, latency: 3.0e-6}

Errors (a domain smaller than the one below it, zero bandwidth, an unknown
device, groups that do not tile the nodes) name the file and the element.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from clustersim.errors import ClusterSimError, TopologyError

DEFAULT_NODE_BW = 150e9
"""Fallback scale-up bandwidth (bytes/s) when a device has none in the catalogue."""
DEFAULT_FABRIC_BW = 12.5e9
"""Fallback scale-out bandwidth (bytes/s) per device: 100 Gb/s."""


@dataclass(frozen=True, slots=True)
class Level:
    """One level of the hierarchy.

    Attributes:
        name: e.g. ``node``, ``supernode``, ``rack``, ``pod``, ``fabric``.
        nodes: nodes per group at this level (1 for the node level).
        bandwidth: bytes/s per device, one direction, between devices whose
            lowest common group is at this level.
        latency: seconds per hop at this level.
    """

    name: str
    nodes: int
    bandwidth: float
    latency: float


class Cluster:
    """Static description of a cluster; see the module docstring."""

    def __init__(
        self,
        name: str,
        node_sizes: list[int],
        node_types: list[str],
        levels: list[Level],
    ) -> None:
        if not node_sizes:
            raise TopologyError(f"topology '{name}': no nodes")
        if len(node_sizes) != len(node_types):
            raise TopologyError(f"topology '{name}': node sizes and types differ in length")
        self.name = name
        self.node_size: list[int] = list(node_sizes)
        self.node_type: list[str] = list(node_types)
        self.num_nodes = len(node_sizes)
        first = np.concatenate([[0], np.cumsum(node_sizes)]).astype(np.int64)
        self.node_first: list[int] = [int(x) for x in first[:-1]]
        self.num_devices = int(first[-1])
        self.node_of = np.repeat(np.arange(self.num_nodes, dtype=np.int64), node_sizes)
        self.levels: list[Level] = list(levels)
        self.group_of: list[np.ndarray] = [
            np.arange(self.num_nodes, dtype=np.int64) // lv.nodes for lv in self.levels
        ]
        self.device_types: list[str] = sorted(set(node_types))

    # ------------------------------------------------------------------ builders
    @classmethod
    def uniform(
        cls,
        nodes: int,
        gpus_per_node: int,
        device: str,
        node_bandwidth: float | None = None,
        fabric_bandwidth: float | None = None,
        name: str | None = None,
    ) -> Cluster:
        """``nodes`` identical nodes of ``gpus_per_node`` devices behind one flat fabric."""
        spec = _device(device, f"cluster.device '{device}'")
        nbw = node_bandwidth or float(getattr(spec, "scale_up_bw", 0.0)) or DEFAULT_NODE_BW
        fbw = fabric_bandwidth or float(getattr(spec, "scale_out_bw", 0.0)) or DEFAULT_FABRIC_BW
        levels = [Level("node", 1, nbw, 1e-6), Level("fabric", nodes, fbw, 5e-6)]
        return cls(
            name or f"{nodes}x{gpus_per_node}-{spec.name}",
            [gpus_per_node] * nodes,
            [spec.name] * nodes,
            levels,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Cluster:
        """Load a topology file (format in the module docstring)."""
        from clustersim.config import load_yaml

        data, _ = load_yaml(path)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<topology>") -> Cluster:
        """Build from the parsed YAML mapping; errors name ``source`` and the element."""
        if not isinstance(data, dict):
            raise TopologyError(f"{source}: a topology must be a mapping")
        allowed = {"name", "nodes", "node_link", "levels", "description"}
        for key in data:
            if key not in allowed:
                raise TopologyError(
                    f"{source}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})"
                )
        name = str(data.get("name", Path(source).stem))
        groups = data.get("nodes")
        if not isinstance(groups, list) or not groups:
            raise TopologyError(f"{source}: 'nodes' must be a non-empty list of node groups")
        sizes: list[int] = []
        types: list[str] = []
        for i, g in enumerate(groups):
            where = f"{source}: nodes[{i}]"
            if not isinstance(g, dict):
                raise TopologyError(
                    f"{where}: expected a mapping like {{count: 4, gpus: 8, device: H100}}"
                )
            count = _pos_int(g.get("count", 1), f"{where}.count")
            gpus = _pos_int(g.get("gpus"), f"{where}.gpus")
            spec = _device(str(g.get("device", "")), f"{where}.device")
            sizes += [gpus] * count
            types += [spec.name] * count
        link = data.get("node_link") or {}
        if not isinstance(link, dict):
            raise TopologyError(f"{source}: node_link must be a mapping")
        first_spec = _device(types[0], f"{source}: nodes[0].device")
        node_level = Level(
            str(link.get("name", "node")),
            1,
            _pos_float(
                link.get("bandwidth", getattr(first_spec, "scale_up_bw", DEFAULT_NODE_BW)),
                f"{source}: node_link.bandwidth",
            ),
            _nonneg_float(link.get("latency", 1e-6), f"{source}: node_link.latency"),
        )
        levels = [node_level]
        n_nodes = len(sizes)
        raw_levels = data.get("levels") or []
        if not isinstance(raw_levels, list):
            raise TopologyError(f"{source}: 'levels' must be a list")
        for i, lv in enumerate(raw_levels):
            where = f"{source}: levels[{i}]"
            if not isinstance(lv, dict):
                raise TopologyError(f"{where}: expected a mapping")
            lname = str(lv.get("name", f"level{i + 1}"))
            where = f"{source}: level '{lname}'"
            nodes = _pos_int(lv.get("nodes"), f"{where}.nodes")
            prev = levels[-1]
            if nodes < prev.nodes:
                raise TopologyError(
                    f"{where}: groups of {nodes} nodes are smaller than the level below "
                    f"('{prev.name}', {prev.nodes} nodes): a domain cannot be larger than "
                    "its parent"
                )
            if nodes % prev.nodes:
                raise TopologyError(
                    f"{where}: {nodes} nodes per group is not a multiple of "
                    f"'{prev.name}' ({prev.nodes} nodes per group)"
                )
            bw = _pos_float(lv.get("bandwidth"), f"{where}.bandwidth")
            oversub = _pos_float(lv.get("oversubscription", 1.0), f"{where}.oversubscription")
            levels.append(
                Level(
                    lname,
                    nodes,
                    bw / oversub,
                    _nonneg_float(lv.get("latency", 5e-6), f"{where}.latency"),
                )
            )
        if len(levels) == 1 and n_nodes > 1:
            raise TopologyError(
                f"{source}: {n_nodes} nodes but no 'levels' connect them; add e.g. "
                "'levels: [{name: fabric, nodes: %d, bandwidth: 50.0e9}]'" % n_nodes
            )
        top = levels[-1]
        if top.nodes < n_nodes:
            raise TopologyError(
                f"{source}: top level '{top.name}' spans {top.nodes} nodes but the cluster has "
                f"{n_nodes}; add a level that spans all nodes"
            )
        for lv in levels[1:]:
            if n_nodes % lv.nodes and lv is not top:
                raise TopologyError(
                    f"{source}: level '{lv.name}' groups {lv.nodes} nodes, which does not divide "
                    f"the {n_nodes} nodes"
                )
        return cls(name, sizes, types, levels)

    # ------------------------------------------------------------------ queries
    def node_devices(self, node: int) -> range:
        """Device ids of ``node``."""
        f = self.node_first[node]
        return range(f, f + self.node_size[node])

    def common_level(self, devices: list[int]) -> int:
        """Index of the innermost level whose single group holds all ``devices``."""
        nodes = np.unique(self.node_of[np.asarray(devices, dtype=np.int64)])
        if len(nodes) <= 1:
            return 0
        for i, groups in enumerate(self.group_of):
            g = groups[nodes]
            if (g == g[0]).all():
                return i
        return len(self.levels) - 1

    @cached_property
    def max_node_size(self) -> int:
        """Devices in the largest node."""
        return max(self.node_size)

    def graph(self) -> Any:
        """The hierarchy as a networkx graph.

        Vertices: ``("device", i)``, ``("node", n)`` and ``(level_name, g)``;
        edges carry ``bandwidth`` (bytes/s) and ``latency`` (s) of the level
        they enter. Built on demand; O(devices + nodes x levels).
        """
        import networkx as nx

        g = nx.Graph(name=self.name)
        node_lv = self.levels[0]
        for n in range(self.num_nodes):
            g.add_node(("node", n), device_type=self.node_type[n])
            for d in self.node_devices(n):
                g.add_edge(
                    ("device", d), ("node", n), bandwidth=node_lv.bandwidth, latency=node_lv.latency
                )
        for i in range(1, len(self.levels)):
            lower, upper = self.levels[i - 1], self.levels[i]
            lower_name = "node" if i == 1 else lower.name
            n_lower = -(-self.num_nodes // lower.nodes)
            for c in range(n_lower):
                parent = (c * lower.nodes) // upper.nodes
                g.add_edge(
                    (lower_name, c),
                    (upper.name, parent),
                    bandwidth=upper.bandwidth,
                    latency=upper.latency,
                )
        return g

    def describe(self) -> str:
        """One-line human summary."""
        types = ", ".join(self.device_types)
        lv = " > ".join(f"{x.name}({x.nodes})" for x in reversed(self.levels))
        return f"{self.name}: {self.num_devices} devices ({types}) in {self.num_nodes} nodes; {lv}"


def _device(name: str, where: str) -> Any:
    from clustersim.hardware import get_device

    try:
        return get_device(name)
    except ClusterSimError as exc:
        raise TopologyError(f"{where}: {exc}") from None


def _pos_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TopologyError(f"{where}: must be a positive whole number, got {value!r}")
    return value


def _pos_float(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TopologyError(f"{where}: must be a number, got {value!r}") from None
    if not v > 0:
        raise TopologyError(f"{where}: must be > 0, got {value!r}")
    return v


def _nonneg_float(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TopologyError(f"{where}: must be a number, got {value!r}") from None
    if v < 0:
        raise TopologyError(f"{where}: must be >= 0, got {value!r}")
    return v


def build_cluster(scenario: Any) -> Cluster:
    """The :class:`Cluster` a scenario describes."""
    c = scenario.cluster
    if c.topology is not None:
        path = scenario.resolve_path(c.topology)
        return Cluster.from_yaml(path)
    return Cluster.uniform(c.nodes, c.gpus_per_node, c.device)
