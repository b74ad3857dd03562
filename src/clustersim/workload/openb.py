"""Loaders for the Alibaba ``openb`` node and pod lists (cluster-trace-gpu-v2023).

This module owns reading the two CSV kinds shipped with the FGD paper's trace
(``../shared/traces/alibaba-gpu-2023-openb``) into column arrays:

* node lists (``openb_node_list_*.csv``): ``sn,cpu_milli,memory_mib,gpu,model``;
* pod lists (``openb_pod_list_*.csv``): ``name,cpu_milli,memory_mib,num_gpu,gpu_milli``
  plus the optional ``gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time``
  (the ``multigpu*`` lists ship only the five required columns).

Units are the trace's own: CPU in milli-cores, memory in MiB, GPU share in
milli-GPU per device (1000 = one whole GPU), times in seconds. Empty times become
NaN; an empty ``gpu_spec`` (``''``) means any GPU model is acceptable, otherwise it
is a ``|``-separated list of acceptable models. Every malformed row raises
:class:`~clustersim.errors.TraceError` naming ``file:line``, the field and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from clustersim.errors import TraceError

MILLI_PER_GPU = 1000
"""A whole GPU in the trace's ``gpu_milli`` unit."""

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_REQUIRED = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_OPTIONAL = ("gpu_spec", "qos", "creation_time", "deletion_time", "scheduled_time")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OpenbNodes:
    """An openb node list as column arrays (row ``i`` is one node).

    Attributes:
        sn: node names (serial numbers) in file order.
        cpu_milli: allocatable CPU per node, milli-cores.
        memory_mib: allocatable memory per node, MiB.
        gpu: number of GPUs per node (0 for CPU-only nodes).
        model: GPU model per node (``''`` for CPU-only nodes).
    """

    sn: list[str]
    cpu_milli: IntArray
    memory_mib: IntArray
    gpu: IntArray
    model: list[str]

    def __len__(self) -> int:
        return len(self.sn)


@dataclass(frozen=True)
class OpenbPods:
    """An openb pod list as column arrays (row ``i`` is one pod, file order).

    Attributes:
        name: pod names.
        cpu_milli: CPU request, milli-cores.
        memory_mib: memory request, MiB.
        num_gpu: GPUs requested (0 = CPU-only pod).
        gpu_milli: share of each requested GPU, milli-GPU (0 for CPU-only pods,
            < 1000 only for single-GPU sharing pods).
        gpu_spec: acceptable GPU models joined by ``|``; ``''`` = any model.
        qos: QoS class (``LS``, ``BE``, ``Burstable``, ``Guaranteed``) or ``''``.
        creation_time: creation timestamp, seconds (NaN if empty or absent).
        deletion_time: deletion timestamp, seconds (NaN if empty or absent).
        scheduled_time: scheduling timestamp, seconds (NaN if empty or absent).
    """

    name: list[str]
    cpu_milli: IntArray
    memory_mib: IntArray
    num_gpu: IntArray
    gpu_milli: IntArray
    gpu_spec: list[str]
    qos: list[str]
    creation_time: FloatArray
    deletion_time: FloatArray
    scheduled_time: FloatArray

    def __len__(self) -> int:
        return len(self.name)

    @property
    def total_gpu_milli(self) -> IntArray:
        """GPU demand of each pod in milli-GPU (``num_gpu * gpu_milli``)."""
        return self.num_gpu * self.gpu_milli


def _read(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` with stripped values after checking the header."""
    from clustersim.workload.loaders import csv_rows

    for line, row in csv_rows(path, required):
        yield line, {k: (v or "").strip() for k, v in row.items()}


def _int(
    path: Path, line: int, name: str, text: str, minimum: int = 0, maximum: int | None = None
) -> int:
    """Parse a whole number in ``[minimum, maximum]`` or raise a TraceError."""
    if text == "":
        raise TraceError(str(path), line, name, "empty value", f"give a whole number for '{name}'")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(str(path), line, name, f"'{text}' is not a number") from None
    if not math.isfinite(value) or value != int(value):
        raise TraceError(
            str(path), line, name, f"'{text}' is not a whole number", f"'{name}' counts units"
        )
    out = int(value)
    if out < minimum or (maximum is not None and out > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise TraceError(
            str(path), line, name, f"{out} is out of range", f"use at least {minimum}{upper}"
        )
    return out


def _time(path: Path, line: int, name: str, text: str) -> float:
    """Parse an optional timestamp in seconds; empty gives NaN."""
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise TraceError(
            str(path), line, name, f"'{text}' is not a number", "give seconds or leave it empty"
        ) from None
    if not math.isfinite(value):
        raise TraceError(str(path), line, name, f"'{text}' is not finite", "leave it empty")
    return value


def load_openb_nodes(path: str | Path) -> OpenbNodes:
    """Read an openb node list (``sn,cpu_milli,memory_mib,gpu,model``).

    ``model`` must be set for nodes with GPUs; CPU-only nodes may leave it empty
    (the trace writes nothing or ``nan``, both read as ``''``). Node names must
    be unique.
    """
    p = Path(path)
    sn: list[str] = []
    cpu: list[int] = []
    mem: list[int] = []
    gpu: list[int] = []
    model: list[str] = []
    seen: dict[str, int] = {}
    for line, row in _read(p, NODE_COLUMNS):
        name = row["sn"]
        if not name:
            raise TraceError(str(p), line, "sn", "empty node name", "give every node a name")
        if name in seen:
            raise TraceError(
                str(p), line, "sn", f"duplicate node '{name}'", f"first seen on line {seen[name]}"
            )
        seen[name] = line
        n_gpu = _int(p, line, "gpu", row["gpu"], 0, 64)
        mdl = "" if row["model"].lower() == "nan" else row["model"]
        if n_gpu > 0 and not mdl:
            raise TraceError(
                str(p), line, "model", "GPU node without a GPU model", "name the model, e.g. 'T4'"
            )
        if "|" in mdl:
            raise TraceError(
                str(p), line, "model", f"'{mdl}' lists several models", "give one model per node"
            )
        sn.append(name)
        cpu.append(_int(p, line, "cpu_milli", row["cpu_milli"], 0))
        mem.append(_int(p, line, "memory_mib", row["memory_mib"], 0))
        gpu.append(n_gpu)
        model.append(mdl)
    return OpenbNodes(
        sn=sn,
        cpu_milli=np.asarray(cpu, dtype=np.int64),
        memory_mib=np.asarray(mem, dtype=np.int64),
        gpu=np.asarray(gpu, dtype=np.int64),
        model=model,
    )


def load_openb_pods(path: str | Path) -> OpenbPods:
    """Read an openb pod list into :class:`OpenbPods`.

    Checks per row: whole non-negative CPU/memory/GPU numbers; ``num_gpu`` in
    0..64; ``gpu_milli`` in 0..1000; ``num_gpu == 0`` exactly when
    ``gpu_milli == 0``; fractional shares (< 1000) only for single-GPU pods (the
    authors' simulator rejects a multi-GPU pod with a partial share); unique names.
    Optional columns absent from the header are filled with ``''`` / NaN.
    """
    p = Path(path)
    names: list[str] = []
    cpu: list[int] = []
    mem: list[int] = []
    ngpu: list[int] = []
    milli: list[int] = []
    spec: list[str] = []
    qos: list[str] = []
    created: list[float] = []
    deleted: list[float] = []
    scheduled: list[float] = []
    seen: dict[str, int] = {}
    for line, row in _read(p, POD_REQUIRED):
        name = row["name"]
        if not name:
            raise TraceError(str(p), line, "name", "empty pod name", "give every pod a name")
        if name in seen:
            raise TraceError(
                str(p), line, "name", f"duplicate pod '{name}'", f"first seen on line {seen[name]}"
            )
        seen[name] = line
        n = _int(p, line, "num_gpu", row["num_gpu"], 0, 64)
        m = _int(p, line, "gpu_milli", row["gpu_milli"], 0, MILLI_PER_GPU)
        if (n == 0) != (m == 0):
            field = "gpu_milli" if n == 0 else "num_gpu"
            raise TraceError(
                str(p),
                line,
                field,
                f"num_gpu={n} with gpu_milli={m}",
                "a CPU-only pod has num_gpu=0 and gpu_milli=0; a GPU pod has both > 0",
            )
        if n > 1 and m < MILLI_PER_GPU:
            raise TraceError(
                str(p),
                line,
                "gpu_milli",
                f"{n} GPUs each with a partial share {m}",
                "only single-GPU pods may share a GPU; use gpu_milli=1000",
            )
        gspec = row.get("gpu_spec", "")
        if gspec.lower() == "nan":
            gspec = ""
        models = [s for s in gspec.split("|") if s]
        names.append(name)
        cpu.append(_int(p, line, "cpu_milli", row["cpu_milli"], 0))
        mem.append(_int(p, line, "memory_mib", row["memory_mib"], 0))
        ngpu.append(n)
        milli.append(m)
        spec.append("|".join(models))
        qos.append(row.get("qos", ""))
        created.append(_time(p, line, "creation_time", row.get("creation_time", "")))
        deleted.append(_time(p, line, "deletion_time", row.get("deletion_time", "")))
        scheduled.append(_time(p, line, "scheduled_time", row.get("scheduled_time", "")))
    return OpenbPods(
        name=names,
        cpu_milli=np.asarray(cpu, dtype=np.int64),
        memory_mib=np.asarray(mem, dtype=np.int64),
        num_gpu=np.asarray(ngpu, dtype=np.int64),
        gpu_milli=np.asarray(milli, dtype=np.int64),
        gpu_spec=spec,
        qos=qos,
        creation_time=np.asarray(created, dtype=np.float64),
        deletion_time=np.asarray(deleted, dtype=np.float64),
        scheduled_time=np.asarray(scheduled, dtype=np.float64),
    )
