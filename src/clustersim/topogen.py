"""Topology generator: fat-tree, rail-optimised, rail-only and supernode fabrics from a few numbers.

This module owns building topology mappings (the YAML format of
:mod:`clustersim.topology`) programmatically, at any size: a 100,000-device
fabric is one node group plus a handful of levels, so :func:`build` returns
its :class:`~clustersim.topology.Cluster` in well under a second.

Builders (each returns a topology mapping; :func:`build` turns it into a
Cluster, :func:`to_yaml` into a file with a header comment):

* :func:`fabric` -- the general form: nodes of ``gpus_per_node`` devices and
  an explicit list of :class:`Tier` s above the node;
* :func:`fat_tree` -- a folded-Clos fat tree of radix-``radix`` switches,
  rail-optimised (every device has its own NIC; the devices of one rank in
  ``radix/2`` nodes share a leaf, NVIDIA's scalable unit) or classic
  top-of-rack (a leaf serves ``radix/2`` NIC ports, i.e. ``radix/2/gpus``
  nodes), two or three tiers as the size needs, with per-tier
  oversubscription;
* :func:`rail_only` -- rail-only network (arXiv 2307.12169): one rail fabric
  per GPU rank spanning all nodes, no spine;
* :func:`supernode_cluster` -- scale-up domains of ``domain`` devices (NVL72,
  CloudMatrix384, Kunlun 512) joined by a rail-optimised scale-out fabric;
* :func:`openb_topology` -- the Alibaba openb GPU cluster from its node list.

Tier sizing rule (:func:`fat_tree`): a leaf group holds ``L = radix/2`` nodes
(rail-optimised) or ``radix/2/gpus_per_node`` nodes (top-of-rack); a
two-tier Clos reaches ``radix * L`` nodes; beyond that a three-tier Clos with
pods of ``radix/2`` leaf groups and a core over all. Group sizes that do not
divide the node count leave the last group partly populated
(``allow_partial``). Units: bytes/s per device per direction, seconds.
Default latencies are per tier (literature.md §3.2: NVLink/UB hop ~1 us,
IB/RoCE end to end ~2-5 us [U]); sources for every default are in
``docs/speed-model.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustersim.errors import ConfigError
from clustersim.topology import Cluster

SCALE_UP_LATENCY = 1.0e-6
"""NVLink/UB hop, s (literature.md §3.2, [U])."""
LEAF_LATENCY = 2.0e-6
"""Scale-out, one switch (leaf) between devices, s (IB/RoCE 2-5 us end to end, [U])."""
SPINE_LATENCY = 3.0e-6
"""Scale-out through the spine (3 switch hops), s ([U], inside the 2-5 us range)."""
CORE_LATENCY = 5.0e-6
"""Scale-out through the core (5 switch hops), s ([U], top of the 2-5 us range)."""
DEFAULT_RADIX = 64
"""Ports per scale-out switch: NVIDIA Quantum-2 QM9700, 64 x 400 Gb/s ([U])."""
PCIE3_X16 = 8e9 * 16 * 128 / 130 / 8
"""PCIe 3.0 x16 bytes/s per direction (8 GT/s x 16 lanes x 128/130 / 8) [D]."""


@dataclass(frozen=True, slots=True)
class Tier:
    """One level above the node: groups of ``nodes`` nodes.

    ``bandwidth`` is bytes/s per device (one direction) before
    ``oversubscription``; ``scale_up`` marks a supernode level.
    """

    name: str
    nodes: int
    bandwidth: float
    latency: float
    oversubscription: float = 1.0
    scale_up: bool = False


def _spec(device: str) -> Any:
    from clustersim.hardware import get_device

    return get_device(device)


def _check_counts(devices: int, gpus_per_node: int, what: str) -> int:
    if devices <= 0 or gpus_per_node <= 0:
        raise ConfigError(f"{what}: devices and gpus_per_node must be positive")
    if devices % gpus_per_node:
        raise ConfigError(
            f"{what}: {devices} devices is not a multiple of {gpus_per_node} devices per node"
        )
    return devices // gpus_per_node


def fabric(
    name: str,
    nodes: int,
    gpus_per_node: int,
    device: str,
    tiers: Sequence[Tier],
    *,
    node_bandwidth: float | None = None,
    node_latency: float = SCALE_UP_LATENCY,
    description: str | None = None,
) -> dict[str, Any]:
    """A topology mapping: ``nodes`` x ``gpus_per_node`` of ``device`` under ``tiers``.

    Tiers must grow (each a multiple of the one below); the last is widened to
    span every node. ``node_bandwidth`` defaults to the device's catalogue
    scale-up bandwidth.
    """
    if nodes <= 0:
        raise ConfigError(f"topology '{name}': needs at least one node")
    spec = _spec(device)
    bw = float(node_bandwidth if node_bandwidth is not None else spec.scale_up_bw)
    levels: list[dict[str, Any]] = []
    prev = 1
    partial = False
    for t in tiers:
        if t.nodes < prev or t.nodes % prev:
            raise ConfigError(
                f"topology '{name}': tier '{t.name}' ({t.nodes} nodes) must be a multiple of "
                f"the tier below ({prev} nodes)"
            )
        lv: dict[str, Any] = {
            "name": t.name,
            "nodes": int(t.nodes),
            "bandwidth": float(t.bandwidth),
            "latency": float(t.latency),
        }
        if t.oversubscription != 1.0:
            lv["oversubscription"] = float(t.oversubscription)
        if t.scale_up:
            lv["scale_up"] = True
        levels.append(lv)
        prev = t.nodes
    if not levels and nodes > 1:
        raise ConfigError(f"topology '{name}': {nodes} nodes need at least one tier")
    if levels:
        if levels[-1]["nodes"] < nodes:  # widen the top to span every node
            below = levels[-2]["nodes"] if len(levels) > 1 else 1
            levels[-1]["nodes"] = _span(nodes, below)
        partial = any(nodes % lv["nodes"] for lv in levels[:-1])
    out: dict[str, Any] = {"name": name}
    if description:
        out["description"] = description
    out["nodes"] = [{"count": int(nodes), "gpus": int(gpus_per_node), "device": spec.name}]
    out["node_link"] = {"name": "node", "bandwidth": bw, "latency": float(node_latency)}
    out["levels"] = levels
    if partial:
        out["allow_partial"] = True
    return out


def _span(nodes: int, below: int) -> int:
    """Smallest multiple of ``below`` that is >= ``nodes`` (a top level spanning all)."""
    return -(-nodes // below) * below


def _clos_tiers(
    nodes: int,
    leaf_nodes: int,
    radix: int,
    nic: float,
    oversubscription: float | Sequence[float],
) -> list[Tier]:
    """Leaf / spine or leaf / pod / core tiers of a radix-``radix`` folded Clos."""
    over = (
        [float(oversubscription)] * 2
        if isinstance(oversubscription, int | float)
        else [float(x) for x in oversubscription]
    )
    if len(over) == 1:
        over = [over[0], 1.0]
    if len(over) != 2 or any(o < 1.0 for o in over):
        raise ConfigError(
            "oversubscription: one ratio >= 1 (leaf uplinks) or two (leaf uplinks, pod uplinks)"
        )
    tiers = [Tier("leaf", leaf_nodes, nic, LEAF_LATENCY)]
    if nodes <= leaf_nodes:
        return tiers
    if nodes <= radix * leaf_nodes:
        tiers.append(Tier("spine", _span(nodes, leaf_nodes), nic, SPINE_LATENCY, over[0]))
        return tiers
    pod = (radix // 2) * leaf_nodes
    tiers.append(Tier("pod", pod, nic, SPINE_LATENCY, over[0]))
    tiers.append(Tier("core", _span(nodes, pod), nic, CORE_LATENCY, over[0] * over[1]))
    return tiers


def fat_tree(
    devices: int,
    *,
    gpus_per_node: int = 8,
    device: str = "H100",
    nic_bandwidth: float | None = None,
    node_bandwidth: float | None = None,
    radix: int = DEFAULT_RADIX,
    rail_optimized: bool = True,
    oversubscription: float | Sequence[float] = 1.0,
    name: str | None = None,
) -> dict[str, Any]:
    """Nodes of ``gpus_per_node`` devices (scale-up inside) under a fat-tree scale-out fabric.

    ``nic_bandwidth`` (bytes/s per device) defaults to the device's catalogue
    ``scale_out_bw``; ``oversubscription`` is the leaf-uplink ratio, or
    ``(leaf, pod)`` ratios for three tiers (e.g. ``(1, 7)``: Llama 3's 1:7
    between pods). See the module docstring for the tier sizes.
    """
    what = f"fat_tree({devices})"
    nodes = _check_counts(devices, gpus_per_node, what)
    if radix < 4 or radix % 2:
        raise ConfigError(f"{what}: radix must be an even number >= 4, got {radix}")
    spec = _spec(device)
    nic = float(nic_bandwidth if nic_bandwidth is not None else spec.scale_out_bw)
    leaf = radix // 2 if rail_optimized else max(1, radix // 2 // gpus_per_node)
    tiers = _clos_tiers(nodes, leaf, radix, nic, oversubscription)
    kind = "rail-optimised" if rail_optimized else "top-of-rack"
    return fabric(
        name or f"fat-tree-{devices}x{spec.name}",
        nodes,
        gpus_per_node,
        spec.name,
        tiers,
        node_bandwidth=node_bandwidth,
        description=f"{kind} fat tree, radix {radix}, {nodes} nodes x {gpus_per_node} {spec.name}",
    )


def rail_only(
    devices: int,
    *,
    gpus_per_node: int = 8,
    device: str = "H100",
    nic_bandwidth: float | None = None,
    node_bandwidth: float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Rail-only network (Wang et al., arXiv 2307.12169): per-rank rails over all nodes, no spine.

    Same-rank devices talk over their rail at the NIC bandwidth; other traffic
    is forwarded through the scale-up domain first, which a hierarchical
    all-reduce does anyway, so one scale-out level spanning every node models it.
    """
    nodes = _check_counts(devices, gpus_per_node, f"rail_only({devices})")
    spec = _spec(device)
    nic = float(nic_bandwidth if nic_bandwidth is not None else spec.scale_out_bw)
    tiers = [Tier("rail", nodes, nic, SPINE_LATENCY)] if nodes > 1 else []
    return fabric(
        name or f"rail-only-{devices}x{spec.name}",
        nodes,
        gpus_per_node,
        spec.name,
        tiers,
        node_bandwidth=node_bandwidth,
        description=f"rail-only network, {nodes} nodes x {gpus_per_node} {spec.name}",
    )


def supernode_cluster(
    devices: int,
    *,
    domain: int,
    gpus_per_node: int = 8,
    device: str = "H100",
    scale_up_bandwidth: float | None = None,
    domain_bandwidth: float | None = None,
    domain_latency: float = SCALE_UP_LATENCY,
    nic_bandwidth: float | None = None,
    radix: int = DEFAULT_RADIX,
    leaf_domains: int | None = None,
    oversubscription: float | Sequence[float] = 1.0,
    name: str | None = None,
) -> dict[str, Any]:
    """Scale-up domains of ``domain`` devices (servers of ``gpus_per_node``) on a scale-out fabric.

    The node link and the domain level run at ``scale_up_bandwidth`` (default:
    the device's catalogue ``scale_up_bw``; ``domain_bandwidth`` overrides the
    domain level, e.g. CloudMatrix's < 3 % inter-server degradation). Above
    the domains a rail-optimised Clos: leaf groups of ``leaf_domains`` domains
    (default: as many whole domains as a ``radix/2``-node scalable unit holds,
    no leaf tier when that is one), then a spine over all.
    """
    what = f"supernode_cluster({devices}, domain={domain})"
    nodes = _check_counts(devices, gpus_per_node, what)
    if domain <= 0 or domain % gpus_per_node:
        raise ConfigError(f"{what}: domain must be a multiple of {gpus_per_node} devices per node")
    spec = _spec(device)
    up = float(scale_up_bandwidth if scale_up_bandwidth is not None else spec.scale_up_bw)
    dom_bw = float(domain_bandwidth if domain_bandwidth is not None else up)
    nic = float(nic_bandwidth if nic_bandwidth is not None else spec.scale_out_bw)
    dom_nodes = domain // gpus_per_node
    tiers: list[Tier] = []
    if dom_nodes > 1:
        tiers.append(Tier("supernode", dom_nodes, dom_bw, domain_latency, scale_up=True))
    if nodes > dom_nodes:
        per_leaf = (
            leaf_domains
            if leaf_domains is not None
            else max(1, (radix // 2) * gpus_per_node // domain)
        )
        if per_leaf < 1:
            raise ConfigError(f"{what}: leaf_domains must be >= 1")
        leaf_nodes = per_leaf * dom_nodes
        if per_leaf > 1 and nodes > leaf_nodes:
            tiers.append(Tier("leaf", leaf_nodes, nic, LEAF_LATENCY))
            over = oversubscription if isinstance(oversubscription, int | float) else 1.0
            tiers.append(Tier("spine", _span(nodes, leaf_nodes), nic, SPINE_LATENCY, float(over)))
        else:
            tiers.append(Tier("spine", _span(nodes, dom_nodes), nic, SPINE_LATENCY))
    return fabric(
        name or f"supernode{domain}-{devices}x{spec.name}",
        nodes,
        gpus_per_node,
        spec.name,
        tiers,
        node_bandwidth=up,
        description=(
            f"{devices // domain if devices >= domain else 1} scale-up domains of {domain} "
            f"{spec.name} ({gpus_per_node} per server) on a rail-optimised scale-out fabric"
        ),
    )


def build(spec: dict[str, Any], source: str = "<generated>") -> Cluster:
    """The :class:`Cluster` of a topology mapping (validated like a YAML file)."""
    return Cluster.from_dict(spec, source=source)


def to_yaml(spec: dict[str, Any], header: Sequence[str] = ()) -> str:
    """The mapping as topology YAML, ``header`` lines first as ``#`` comments."""
    import yaml

    lines = [f"# {h}".rstrip() for h in header]
    body = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)
    return "\n".join([*lines, body]) if lines else body


# --------------------------------------------------------------------------- openb


def openb_topology(
    csv_path: str | Path,
    *,
    undisclosed_bandwidth: float = PCIE3_X16,
    fabric_bandwidth: float | None = None,
) -> dict[str, Any]:
    """The Alibaba openb GPU cluster (cluster-trace-gpu-v2023) as a topology mapping.

    Nodes come from ``openb_node_list_gpu_node.csv`` (CPU-only rows are left
    out), grouped by (GPU model, GPUs per node) in that sorted order, file
    order within a group. Catalogue models keep their catalogue links;
    undisclosed codes (G1/G2/G3) become ``undisclosed`` groups with
    ``undisclosed_bandwidth`` (default PCIe 3.0 x16, a lower bound). The trace
    does not describe the network: one flat ``fabric`` level at
    ``fabric_bandwidth`` (default 100 Gb/s, :data:`topology.DEFAULT_FABRIC_BW`).
    """
    from clustersim.errors import UnknownNameError
    from clustersim.hardware import UndisclosedDeviceError, get_device
    from clustersim.topology import DEFAULT_FABRIC_BW
    from clustersim.workload.openb import load_openb_nodes

    nodes = load_openb_nodes(csv_path)
    keys: dict[tuple[str, int], int] = {}
    for i in range(len(nodes)):
        g = int(nodes.gpu[i])
        if g > 0:
            k = (nodes.model[i], g)
            keys[k] = keys.get(k, 0) + 1
    if not keys:
        raise ConfigError(f"{csv_path}: no GPU nodes")
    groups: list[dict[str, Any]] = []
    for (model, g), count in sorted(keys.items()):
        entry: dict[str, Any] = {"count": count, "gpus": g}
        try:
            entry["device"] = get_device(model).name
        except UndisclosedDeviceError:
            entry["device"] = model
            entry["undisclosed"] = True
            entry["link_bandwidth"] = float(undisclosed_bandwidth)
        except UnknownNameError as exc:
            raise ConfigError(f"{csv_path}: GPU model '{model}': {exc}") from None
        groups.append(entry)
    total = sum(keys.values())
    return {
        "name": "alibaba-openb-gpu",
        "description": "Alibaba cluster-trace-gpu-v2023 (openb) GPU nodes",
        "nodes": groups,
        "node_link": {"name": "node", "latency": SCALE_UP_LATENCY},
        "levels": [
            {
                "name": "fabric",
                "nodes": total,
                "bandwidth": float(fabric_bandwidth or DEFAULT_FABRIC_BW),
                "latency": SPINE_LATENCY,
            }
        ],
    }
