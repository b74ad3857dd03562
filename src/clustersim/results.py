"""The result store: one table of every run of a sweep (parameters + summary metrics).

:func:`build_table` reads a sweep folder written by :func:`clustersim.sweep.run_sweep`
(``sweep.json`` and the ``runs/`` and ``failed/`` folders) or a single results
folder written by ``clustersim run --out``, and returns one row per point:

* ``point`` (position in the sweep), ``run_id`` (result folder name under
  ``runs/``), ``status`` (``ok``, ``failed`` or ``pending`` for a point not run
  yet), the swept parameters by their dotted names, ``seed``;
* the run's ``summary.json`` metrics (nested mappings flattened to dotted
  names, lists joined);
* every field of the resolved scenario as a dotted column (``cluster.nodes``,
  ``workload.format``, ...);
* provenance: ``clustersim_version``, ``git_rev``, ``wall_s`` (seconds the
  point took in its worker), ``engine_wall_s``, ``host``, ``executor``,
  ``finished_at``; ``error_type`` and ``error`` for failed points.

Rows are sorted by ``point``, so the table depends only on the sweep and its
results, never on which executor ran the points or in which order;
:data:`HOST_COLUMNS` lists the columns that do depend on the machine.
:func:`write_table` stores it as ``OUT/results.parquet``; :func:`load` returns
it as a pandas DataFrame (pandas is the optional ``[pandas]`` extra).

Confidence intervals (:func:`group_stats`) are Student-t intervals across seeds:
mean ± t(0.975, n−1) · s / √n with the sample standard deviation s (n − 1 in
the denominator); none for n = 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clustersim.errors import ConfigError

TABLE = "results.parquet"
HOST_COLUMNS = (
    "wall_s",
    "engine_wall_s",
    "host",
    "executor",
    "python",
    "started_at",
    "finished_at",
)
"""Columns that depend on the machine or the moment, not on the simulation."""

DEFAULT_METRICS = (
    "jobs_completed",
    "avg_jct_s",
    "p50_jct_s",
    "p99_jct_s",
    "avg_wait_s",
    "makespan_s",
    "gpu_utilization",
    "preemptions",
)
"""Metrics ``clustersim results`` shows by default (when present)."""

_SUMMARY_DUPLICATES = {"scenario", "scheduler", "placement", "seed"}  # already config columns

# two-sided 95 % Student-t critical values t(0.975, df)
_T975 = {
    1: 12.7062,
    2: 4.3027,
    3: 3.1824,
    4: 2.7764,
    5: 2.5706,
    6: 2.4469,
    7: 2.3646,
    8: 2.3060,
    9: 2.2622,
    10: 2.2281,
    11: 2.2010,
    12: 2.1788,
    13: 2.1604,
    14: 2.1448,
    15: 2.1314,
    16: 2.1199,
    17: 2.1098,
    18: 2.1009,
    19: 2.0930,
    20: 2.0860,
    21: 2.0796,
    22: 2.0739,
    23: 2.0687,
    24: 2.0639,
    25: 2.0595,
    26: 2.0555,
    27: 2.0518,
    28: 2.0484,
    29: 2.0452,
    30: 2.0423,
    40: 2.0211,
    50: 2.0086,
    60: 2.0003,
    80: 1.9901,
    100: 1.9840,
    120: 1.9799,
}


def t_critical(df: int) -> float:
    """t(0.975, df); between tabulated values the next smaller df (a slightly wider CI)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df in _T975:
        return _T975[df]
    if df > 120:
        return 1.9600
    return _T975[max(k for k in _T975 if k <= df)]


# --------------------------------------------------------------------------- flattening


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys; lists of scalars to JSON text."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if v:
                out.update(flatten(v, name + "."))
            else:
                out[name] = None
        elif isinstance(v, list | tuple):
            out[name] = json.dumps(list(v), default=str) if v else None
        else:
            out[name] = v
    return out


def _metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if k in _SUMMARY_DUPLICATES:
            continue
        if k == "wall_s":
            out["engine_wall_s"] = v
        elif k == "notes" and isinstance(v, list):
            out["notes"] = "; ".join(map(str, v)) if v else None
        elif isinstance(v, Mapping):
            out.update(flatten(v, k + "."))
        elif isinstance(v, list | tuple):
            out[k] = json.dumps(list(v), default=str) if v else None
        else:
            out[k] = v
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def read_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """The ``sweep.json`` manifest of a sweep folder."""
    return _read_json(Path(sweep_dir) / "sweep.json")


def is_sweep(path: str | Path) -> bool:
    """True for a sweep folder (has ``sweep.json``)."""
    return (Path(path) / "sweep.json").is_file()


def is_run(path: str | Path) -> bool:
    """True for a single results folder (has ``summary.json``)."""
    return (Path(path) / "summary.json").is_file()


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class RunRef:
    """One point of a sweep and where its results are."""

    point: int
    run_id: str
    status: str
    params: dict[str, Any]
    path: Path


def runs(path: str | Path) -> list[RunRef]:
    """Every point of a sweep folder (or the one run of a results folder), in point order."""
    p = Path(path)
    if is_sweep(p):
        man = read_manifest(p)
        refs = []
        for pt in man["points"]:
            folder = pt["folder"]
            run_dir = p / "runs" / folder
            if (run_dir / "run.json").is_file():
                status = "ok"
            elif (p / "failed" / f"{folder}.json").is_file():
                status = "failed"
            else:
                status = "pending"
            refs.append(RunRef(int(pt["point"]), folder, status, dict(pt["params"]), run_dir))
        return refs
    if is_run(p):
        summary = _read_json(p / "summary.json")
        params = {"seed": summary.get("seed", 0)}
        return [RunRef(0, p.name, "ok", params, p)]
    raise ConfigError(
        f"{p}: not a sweep folder (no sweep.json) nor a results folder (no summary.json)"
    )


def swept_keys(path: str | Path) -> list[str]:
    """The swept parameter names of a sweep folder (empty for a single run)."""
    p = Path(path)
    return list(read_manifest(p)["swept"]) if is_sweep(p) else []


def _config_of_run(run_dir: Path) -> dict[str, Any]:
    import yaml

    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        return {}
    data = yaml.safe_load(cfg.read_text())
    if not isinstance(data, dict):
        return {}
    data.pop("base_dir", None)
    return data


def _version_of_run(run_dir: Path) -> str | None:
    for name in ("jobs.parquet", "utilization.parquet"):
        f = run_dir / name
        if f.is_file():
            import pyarrow.parquet as pq

            meta = pq.read_schema(f).metadata or {}
            v = meta.get(b"clustersim.clustersim_version")
            return v.decode() if v else None
    return None


def build_rows(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table's rows (dicts, point order) and its metadata (name, kind, swept keys)."""
    p = Path(path)
    rows: list[dict[str, Any]] = []
    if is_sweep(p):
        man = read_manifest(p)
        swept = list(man["swept"])
        configs = {int(pt["point"]): pt.get("config") or {} for pt in man["points"]}
        info = {"name": man.get("name", p.name), "kind": man.get("kind", "scenario")}
    else:
        swept = []
        configs = {0: _config_of_run(p)}
        info = {"name": p.name, "kind": "run"}
    info["swept"] = swept
    for ref in runs(p):
        row: dict[str, Any] = {"point": ref.point, "run_id": ref.run_id, "status": ref.status}
        for k in swept:
            row[k] = ref.params.get(k)
        row["seed"] = ref.params.get("seed")
        meta: dict[str, Any] = {}
        if ref.status == "ok":
            row.update(_metrics(_read_json(ref.path / "summary.json")))
            if (ref.path / "run.json").is_file():
                meta = _read_json(ref.path / "run.json")
            else:
                meta = {"clustersim_version": _version_of_run(ref.path)}
        elif ref.status == "failed":
            meta = _read_json(p / "failed" / f"{ref.run_id}.json")
        for k, v in flatten(configs.get(ref.point, {})).items():
            row.setdefault(k, v)
        row["clustersim_version"] = meta.get("clustersim_version")
        row["git_rev"] = meta.get("git_rev")
        for k in ("wall_s", "host", "executor", "python", "started_at", "finished_at"):
            row[k] = meta.get(k)
        row["error_type"] = meta.get("error_type")
        row["error"] = meta.get("error")
        rows.append(row)
    rows.sort(key=lambda r: int(r["point"]))
    return rows, info


def _column(values: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def rows_to_table(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> Any:
    """A ``pyarrow.Table`` from row dicts (union of keys, first-seen order)."""
    import pyarrow as pa

    names: list[str] = []
    seen: set[str] = set()
    tail = ("clustersim_version", "git_rev", *HOST_COLUMNS, "error_type", "error")
    for r in rows:
        for k in r:
            if k not in seen and k not in tail:
                seen.add(k)
                names.append(k)
    names += [k for k in tail if any(k in r for r in rows)]
    cols = {k: _column([r.get(k) for r in rows]) for k in names}
    table = pa.table(cols) if cols else pa.table({"point": pa.array([], type=pa.int64())})
    meta = {
        b"clustersim.name": str(info.get("name", "")).encode(),
        b"clustersim.kind": str(info.get("kind", "")).encode(),
        b"clustersim.swept": json.dumps(list(info.get("swept", []))).encode(),
    }
    return table.replace_schema_metadata(meta)


def build_table(path: str | Path) -> Any:
    """The runs table (``pyarrow.Table``) of a sweep or results folder."""
    rows, info = build_rows(path)
    return rows_to_table(rows, info)


def write_table(path: str | Path) -> Path:
    """Rebuild ``results.parquet`` in a sweep folder (atomically); returns its path."""
    import io

    import pyarrow.parquet as pq

    from clustersim.sweep import atomic_write

    p = Path(path)
    buf = io.BytesIO()
    pq.write_table(build_table(p), buf)
    atomic_write(p / TABLE, buf.getvalue())
    return p / TABLE


def load_table(path: str | Path) -> Any:
    """The runs table as ``pyarrow.Table``: from a sweep folder (rebuilt from its runs, so
    never stale), a single results folder, or a ``.parquet`` table file."""
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p)
    if not p.exists():
        raise ConfigError(f"{p}: no such folder")
    return build_table(p)


def load(path: str | Path) -> Any:
    """The runs table as a pandas DataFrame (needs pandas: ``pip install 'clustersim[pandas]'``).

    Example::

        import clustersim.results
        df = clustersim.results.load("out/policies")
        df.groupby("scheduler.name")["avg_jct_s"].mean()
    """
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ConfigError(
            "clustersim.results.load needs pandas: pip install 'clustersim[pandas]' "
            "(or use load_table for a pyarrow.Table)"
        ) from None
    return load_table(path).to_pandas()


def table_info(table: Any) -> dict[str, Any]:
    """Name, kind and swept keys stored in a runs table's metadata."""
    meta = table.schema.metadata or {}
    return {
        "name": meta.get(b"clustersim.name", b"").decode(),
        "kind": meta.get(b"clustersim.kind", b"").decode(),
        "swept": json.loads(meta.get(b"clustersim.swept", b"[]").decode()),
    }


# --------------------------------------------------------------------------- printing


def default_columns(table: Any) -> list[str]:
    """The columns ``clustersim results`` prints by default."""
    info = table_info(table)
    names = table.column_names
    cols = ["point", "status", *info["swept"], "seed"]
    metrics = [m for m in DEFAULT_METRICS if m in names]
    if not metrics:  # function sweeps: their own numeric summary columns
        skip = set(cols) | {"run_id", "clustersim_version", "git_rev", *HOST_COLUMNS}
        metrics = [
            c for c in names if c not in skip and "." not in c and _is_numeric(table.column(c).type)
        ][:8]
    return [c for c in dict.fromkeys([*cols, *metrics, "wall_s"]) if c in names]


def _is_numeric(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


def fmt_value(v: Any) -> str:
    """A table cell: floats with 4 significant digits, None as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def format_table(table: Any, columns: Sequence[str] | None = None) -> str:
    """A plain-text rendering of ``table`` (the chosen columns)."""
    cols = list(columns) if columns else default_columns(table)
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise ConfigError(
            f"unknown column(s) {', '.join(missing)}; available: {', '.join(table.column_names)}"
        )
    data = {c: [fmt_value(v) for v in table.column(c).to_pylist()] for c in cols}
    widths = {c: max([len(c), *(len(x) for x in data[c])]) for c in cols}
    lines = ["  ".join(f"{c:>{widths[c]}}" for c in cols)]
    lines.append("  ".join("-" * widths[c] for c in cols))
    for i in range(table.num_rows):
        lines.append("  ".join(f"{data[c][i]:>{widths[c]}}" for c in cols))
    return "\n".join(lines)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class GroupStat:
    """A metric over the seeds of one condition (the swept values other than the seed)."""

    key: tuple[Any, ...]
    label: str
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def condition_keys(swept: Sequence[str]) -> list[str]:
    """Swept keys that define a condition (everything but the seed)."""
    return [k for k in swept if k != "seed"]


def condition_label(key: Sequence[Any], by: Sequence[str]) -> str:
    """``scheduler.name=las, workload.load_scale=2`` (short names) or ``all runs``."""
    if not by:
        return "all runs"
    parts = []
    for k, v in zip(by, key, strict=True):
        short = k.split(".")[-1]
        parts.append(f"{v}" if short == "name" else f"{short}={v}")
    return ", ".join(parts)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, sample std, CI low, CI high) with the Student-t 95 % interval."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    m = math.fsum(values) / n
    if n < 2:
        return (m, math.nan, m, m)
    if min(values) == max(values):  # identical replicas: exactly no spread
        return (values[0], 0.0, values[0], values[0])
    s = math.sqrt(math.fsum((x - m) ** 2 for x in values) / (n - 1))
    h = t_critical(n - 1) * s / math.sqrt(n)
    return (m, s, m - h, m + h)


def group_stats(
    rows: Sequence[Mapping[str, Any]], metric: str, by: Sequence[str]
) -> list[GroupStat]:
    """Mean and 95 % CI of ``metric`` per condition (first-appearance order), ok rows only."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        key = tuple(r.get(k) for k in by)
        groups.setdefault(key, [])
        v = r.get(metric)
        if r.get("status", "ok") == "ok" and isinstance(v, int | float) and math.isfinite(v):
            groups[key].append(float(v))
    out = []
    for key, vals in groups.items():
        m, s, lo, hi = mean_ci(vals)
        out.append(GroupStat(key, condition_label(key, by), len(vals), m, s, lo, hi))
    return out
