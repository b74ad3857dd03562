"""Parameter sweeps: a base scenario, a grid or list of overrides, seeds; resumable and parallel.

A sweep file (YAML)::

    name: policies-vs-load
    base: scenario.yaml            # a scenario file (relative to this file), an inline
                                   # mapping, or omitted for the embedded default scenario
    overrides: {workload.limit: 500}            # applied to every point
    grid:                                       # cartesian product, in this key order
      scheduler.name: [fifo, sjf, las]
      workload.load_scale: [0.5, 1.0, 2.0]
    points:                                     # optional explicit list, crossed with the grid
      - {scheduler.placement: first_fit}
      - {scheduler.placement: pack}
    seeds: 3                                    # 0, 1, 2 (or an explicit list [7, 11])

Expansion order (the order of the ``point`` column): for each entry of
``points`` (default: one empty entry), for each grid combination (last key
fastest), for each seed. A key may appear in only one of ``points`` and
``grid``; ``seed`` is set by ``seeds`` only.

Instead of ``base``, a sweep may name ``function: package.module:callable``
with ``base`` as a plain mapping of parameters: each point calls
``callable(params)`` (params include ``seed``) and stores the mapping it
returns as ``summary.json`` (a ``tables`` entry of name -> columns is written
as ``NAME.parquet``). This is how experiments that are not single scenarios
use the same store.

**Content addressing.** A point's ``run_id`` is the SHA-256 of its resolved
scenario (canonical JSON without ``base_dir``) plus the SHA-256 of each input
file it names (trace, topology). Results live in ``OUT/runs/<run_id[:16]>/``;
a point whose folder exists is finished and is never recomputed, so a sweep
killed at any moment (even ``kill -9``) resumes where it stopped. The cache
keys on inputs, not on clustersim's code: after changing the simulator use a
new ``--out`` or ``--force``.

**Atomicity.** Workers return a point's files as bytes; the driver writes them
into ``runs/.tmp-*``, fsyncs, and renames the folder into place. A failed
point is written to ``OUT/failed/<id>.json`` (error and traceback; atomic
replace) and the sweep goes on; failed points are retried on the next run.
``OUT/sweep.json`` (the manifest: every point with its parameters and run id)
is written before any point runs; ``OUT/results.parquet`` (see
:mod:`clustersim.results`) is rebuilt from the run folders at the end. One
sweep at a time may write to a folder (an ``flock`` on ``OUT/.lock``, released
by the kernel if the process dies).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clustersim import __version__
from clustersim.config import set_dotted
from clustersim.errors import ClusterSimError, ConfigError

RUNS = "runs"
FAILED = "failed"
MANIFEST = "sweep.json"
LOCK = ".lock"
RUN_META = "run.json"
ID_LEN = 16
"""Hex digits of the run id used as folder name (64 bits)."""


# --------------------------------------------------------------------------- the spec


class SweepSpec(BaseModel):
    """A sweep file: base scenario, overrides, grid and/or points, seeds (docs/tutorial.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="sweep", description="sweep name (report title)")
    base: str | dict[str, Any] | None = Field(
        default=None,
        description="scenario file (relative to the sweep file) or inline mapping; "
        "omitted = embedded default scenario; with 'function': the parameter mapping",
    )
    function: str | None = Field(
        default=None, description="'package.module:callable' run per point instead of a scenario"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted key -> value, applied to every point"
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="dotted key -> values; cartesian product"
    )
    points: list[dict[str, Any]] = Field(
        default_factory=list, description="explicit override sets, each crossed with the grid"
    )
    seeds: int | list[int] = Field(
        default=1, description="N (seeds 0..N-1) or an explicit list of seeds"
    )

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"grid key '{k}' has no values")
            if k == "seed":
                raise ValueError("'seed' cannot be a grid key; use 'seeds:'")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("seeds must be >= 1 (or a list of seeds)")
        else:
            if not v:
                raise ValueError("seeds list is empty")
            if any(s < 0 for s in v):
                raise ValueError("seeds must be >= 0")
            if len(set(v)) != len(v):
                raise ValueError("seeds list has duplicates")
        return v

    def seed_list(self) -> list[int]:
        """The seeds, as a list."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its position, swept parameters, run id and worker task."""

    index: int
    params: dict[str, Any]
    run_id: str
    task: dict[str, Any]
    config: dict[str, Any]

    @property
    def folder(self) -> str:
        """Name of the point's result folder under ``runs/``."""
        return self.run_id[:ID_LEN]


@dataclass
class Sweep:
    """An expanded sweep: the spec, the base configuration and every point."""

    spec: SweepSpec
    kind: str  # "scenario" | "function"
    base_config: dict[str, Any]
    swept: list[str]
    points: list[Point]
    source: str = "<sweep>"


@dataclass
class SweepReport:
    """What :func:`run_sweep` did."""

    out: Path
    total: int
    reused: int
    computed: int
    failed: int
    executor: str
    wall_s: float
    table: Path | None = None
    failures: list[tuple[int, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (cached by path, mtime and size)."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return _file_digest(str(path), st.st_mtime_ns, st.st_size)


INPUT_FIELDS = frozenset({"trace", "topology"})
"""Scenario fields (at any depth) that name input files whose bytes enter the run id."""


def _input_paths(data: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{prefix}{k}"
            if k in INPUT_FIELDS and isinstance(v, str):
                yield name, v
            else:
                yield from _input_paths(v, name + ".")


def scenario_key(scenario: Any) -> dict[str, Any]:
    """What a scenario's run id hashes: the resolved scenario and its input files' digests.

    Input files are the string values of fields named in :data:`INPUT_FIELDS`
    (``workload.trace``, ``cluster.topology``, ``failures.model.trace``, ...),
    resolved like the scenario resolves them.
    """
    data = scenario.model_dump(mode="json")
    data.pop("base_dir", None)
    inputs = {k: file_digest(scenario.resolve_path(v)) for k, v in _input_paths(data)}
    return {"kind": "scenario", "scenario": data, "inputs": inputs}


def run_id_of(key: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a key mapping's canonical JSON."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()


# --------------------------------------------------------------------------- expansion


def _combos(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.grid)
    grid = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*spec.grid.values())]
    entries = spec.points or [{}]
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if "seed" in entry:
            raise ConfigError(f"points[{i}]: 'seed' is set by 'seeds:', not by a point")
        clash = sorted(set(entry) & set(keys))
        if clash:
            raise ConfigError(f"points[{i}]: {', '.join(clash)} also in 'grid'; keep it in one")
        for g in grid:
            out.append({**entry, **g})
    return out


def _swept_keys(spec: SweepSpec) -> list[str]:
    keys: list[str] = []
    for entry in spec.points:
        for k in entry:
            if k not in keys:
                keys.append(k)
    for k in spec.grid:
        if k not in keys:
            keys.append(k)
    return keys


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def expand(spec: SweepSpec, base_dir: str | Path | None = None, source: str = "<sweep>") -> Sweep:
    """Resolve ``spec`` into points (validating every point's scenario up front)."""
    from clustersim.config import load_scenario, validate_scenario

    combos = _combos(spec)
    seeds = spec.seed_list()
    swept = _swept_keys(spec)
    points: list[Point] = []
    bdir = str(Path(base_dir).resolve()) if base_dir is not None else None
    if spec.function is not None:
        if not isinstance(spec.base or {}, dict):
            raise ConfigError(f"{source}: base: with 'function', base must be a mapping of params")
        _resolve_function(spec.function)  # fail early on a bad reference
        base_params: dict[str, Any] = dict(spec.base or {})  # type: ignore[arg-type]
        for k, v in spec.overrides.items():
            set_dotted(base_params, k, v)
        for combo in combos:
            for seed in seeds:
                params = json.loads(json.dumps(base_params))
                for k, v in combo.items():
                    set_dotted(params, k, v)
                params["seed"] = seed
                key = {"kind": "function", "function": spec.function, "params": params}
                rid = run_id_of(key)
                task: dict[str, Any] = {"run_id": rid, "kind": "function"}
                task.update(function=spec.function, params=params)
                points.append(Point(len(points), {**combo, "seed": seed}, rid, task, params))
        return Sweep(spec, "function", base_params, swept, points, source)

    if spec.base is None:
        base = load_scenario(None)
    elif isinstance(spec.base, str):
        p = Path(spec.base).expanduser()
        if not p.is_absolute() and bdir is not None:
            p = Path(bdir) / p
        base = load_scenario(p)
    else:
        base = validate_scenario(dict(spec.base), source=f"{source}: base", base_dir=bdir)
    if spec.overrides:
        try:
            base = base.with_overrides(spec.overrides)
        except ConfigError as exc:
            raise ConfigError(f"{source}: overrides: {exc}") from None
    base_data = base.model_dump(mode="json")
    for combo in combos:
        for seed in seeds:
            params = {**combo, "seed": seed}
            data = json.loads(json.dumps(base_data))
            for k, v in params.items():
                set_dotted(data, k, v)
            try:
                sc = validate_scenario(data, source="<point>")
            except ConfigError as exc:
                msg = str(exc).replace("<point>: ", "")
                raise ConfigError(
                    f"{source}: point {len(points)} ({_fmt_params(params)}): {msg}"
                ) from None
            key = scenario_key(sc)
            rid = run_id_of(key)
            task = {"run_id": rid, "kind": "scenario", "scenario": sc.model_dump(mode="json")}
            config = dict(key["scenario"])
            points.append(Point(len(points), params, rid, task, config))
    base_cfg = dict(base_data)
    base_cfg.pop("base_dir", None)
    return Sweep(spec, "scenario", base_cfg, swept, points, source)


def load_sweep(path: str | Path) -> Sweep:
    """Load and expand a sweep file; errors name the file, line and field."""
    from clustersim.config import _line_index, load_yaml

    p = Path(path)
    data, text = load_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a sweep must be a YAML mapping, got {type(data).__name__}")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_spec_errors(exc, str(p), _line_index(text))) from None
    return expand(spec, base_dir=p.resolve().parent, source=str(p))


def _spec_errors(exc: ValidationError, source: str, lines: dict[tuple[str, ...], int]) -> str:
    import difflib

    out = []
    known = sorted(SweepSpec.model_fields)
    for err in exc.errors():
        loc = tuple(str(x) for x in err["loc"])
        # union members (str | dict | None) add the member type to the location; drop it
        loc = tuple(x for x in loc if x not in {"str", "dict[str,any]", "list[int]", "int"})
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        where = f"{source}:{line}" if line is not None else source
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            hint = difflib.get_close_matches(loc[0], known, n=1, cutoff=0.5)
            msg = f"unknown key '{loc[0]}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
            msg += f" (allowed: {', '.join(known)})"
        out.append(f"{where}: {'.'.join(loc) or '<top level>'}: {msg}")
    return "\n".join(dict.fromkeys(out))


def make_sweep(
    base: Any = None,
    *,
    grid: Mapping[str, list[Any]] | None = None,
    points: list[dict[str, Any]] | None = None,
    seeds: int | list[int] = 1,
    overrides: Mapping[str, Any] | None = None,
    name: str = "sweep",
    function: str | None = None,
    base_dir: str | Path | None = None,
) -> Sweep:
    """Build a sweep in Python. ``base`` is a Scenario, a scenario mapping or file, or None."""
    from clustersim.config import Scenario

    if isinstance(base, Scenario):
        base_dir = base_dir or base.base_dir
        data = base.model_dump(mode="json")
        data.pop("base_dir", None)
        base = data
    elif isinstance(base, Path):
        base = str(base)
    spec = SweepSpec(
        name=name,
        base=base,
        function=function,
        overrides=dict(overrides or {}),
        grid={k: list(v) for k, v in (grid or {}).items()},
        points=list(points or []),
        seeds=seeds,
    )
    return expand(spec, base_dir=base_dir or Path.cwd())


# --------------------------------------------------------------------------- the worker


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """``git describe`` of the clustersim checkout this code runs from, or ``unknown``."""
    pkg = Path(__file__).resolve().parent
    try:
        top = subprocess.run(
            ["git", "-C", str(pkg), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if Path(top).resolve() != pkg.parent.parent:
            return "unknown"  # installed copy inside some other repository
        rev = subprocess.run(
            ["git", "-C", top, "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _resolve_function(ref: str) -> Callable[[dict[str, Any]], Mapping[str, Any]]:
    mod, sep, attr = ref.partition(":")
    if not sep or not mod or not attr:
        raise ConfigError(f"function '{ref}': expected 'package.module:callable'")
    try:
        obj: Any = importlib.import_module(mod)
    except ImportError as exc:
        raise ConfigError(f"function '{ref}': cannot import '{mod}': {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"function '{ref}': '{mod}' has no '{attr}'") from None
    if not callable(obj):
        raise ConfigError(f"function '{ref}' is not callable")
    fn: Callable[[dict[str, Any]], Mapping[str, Any]] = obj
    return fn


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _run_scenario(task: dict[str, Any], tmp: Path) -> None:
    from clustersim.api import simulate, write_results
    from clustersim.config import validate_scenario

    sc = validate_scenario(task["scenario"], source=f"point {task['run_id'][:ID_LEN]}")
    try:
        result = simulate(sc, progress=False)
    except ClusterSimError as exc:
        partial = getattr(exc, "partial", None)
        if partial is not None:
            partial.summary["error"] = str(exc)
        raise
    write_results(result, tmp / "out")


def _run_function(task: dict[str, Any], tmp: Path) -> None:
    from clustersim.api import _write_parquet

    fn = _resolve_function(task["function"])
    res = dict(fn(dict(task["params"])))
    tables = res.pop("tables", None) or {}
    out = tmp / "out"
    out.mkdir()
    meta = {"clustersim_version": __version__, "function": task["function"]}
    for name, cols in tables.items():
        _write_parquet(out / f"{name}.parquet", dict(cols), meta)
    (out / "summary.json").write_text(json.dumps(res, indent=2, default=_json_default) + "\n")
    (out / "config.yaml").write_text(yaml.safe_dump(task["params"], sort_keys=False))


def execute_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one point (in a worker). Returns its files as bytes, or the error; never raises."""
    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    meta: dict[str, Any] = {
        "run_id": task["run_id"],
        "kind": task["kind"],
        "clustersim_version": __version__,
        "git_rev": git_revision(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "started_at": started,
    }
    tmp = Path(tempfile.mkdtemp(prefix="clustersim-point-"))
    try:
        if task["kind"] == "scenario":
            _run_scenario(task, tmp)
        elif task["kind"] == "function":
            _run_function(task, tmp)
        else:
            raise ConfigError(f"unknown task kind '{task['kind']}'")
        files = {p.name: p.read_bytes() for p in sorted((tmp / "out").iterdir()) if p.is_file()}
        meta["wall_s"] = time.perf_counter() - t0
        return {"status": "ok", "files": files, "meta": meta}
    except Exception as exc:
        meta["wall_s"] = time.perf_counter() - t0
        return {
            "status": "failed",
            "meta": meta,
            "error_type": type(exc).__name__,
            "error": str(exc),
            "traceback": traceback.format_exc(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the driver


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` via a temp file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def commit_result(out: Path, point: Point, output: Mapping[str, Any], executor: str) -> bool:
    """Store a worker's output under ``out``; True if the point succeeded."""
    meta = dict(output.get("meta") or {})
    meta["executor"] = executor
    meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    failed_file = out / FAILED / f"{point.folder}.json"
    if output.get("status") == "ok":
        final = out / RUNS / point.folder
        tmp = out / RUNS / f".tmp-{point.folder}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            for name, data in output["files"].items():
                _write_file(tmp / name, data)
            _write_file(tmp / RUN_META, (json.dumps(meta, indent=2) + "\n").encode())
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
                _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        failed_file.unlink(missing_ok=True)
        return True
    record = {
        **meta,
        "point": point.index,
        "params": point.params,
        "error_type": output.get("error_type", "Error"),
        "error": output.get("error", "unknown error"),
        "traceback": output.get("traceback", ""),
    }
    atomic_write(failed_file, (json.dumps(record, indent=2, default=str) + "\n").encode())
    return False


def _executor_failure(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc))
    return {
        "status": "failed",
        "meta": {"clustersim_version": __version__, "git_rev": git_revision()},
        "error_type": type(exc).__name__,
        "error": f"executor error: {exc}" if str(exc) else f"executor error: {type(exc).__name__}",
        "traceback": tb,
    }


def write_manifest(out: Path, sweep: Sweep) -> None:
    """Write ``OUT/sweep.json``: the spec, the base configuration and every point."""
    manifest = {
        "format": 1,
        "name": sweep.spec.name,
        "kind": sweep.kind,
        "swept": sweep.swept,
        "source": sweep.source,
        "spec": sweep.spec.model_dump(mode="json"),
        "base_config": sweep.base_config,
        "points": [
            {
                "point": p.index,
                "run_id": p.run_id,
                "folder": p.folder,
                "params": p.params,
                "config": p.config,
            }
            for p in sweep.points
        ],
    }
    atomic_write(out / MANIFEST, (json.dumps(manifest, indent=1, default=str) + "\n").encode())


class _Lock:
    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise ConfigError(
                f"{self.path.parent}: another sweep is writing to this folder; wait for it or "
                "use another --out"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def _clean_temps(out: Path) -> None:
    for sub in (RUNS, FAILED):
        d = out / sub
        if d.is_dir():
            for p in d.glob(".tmp-*"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def is_finished(out: Path, point: Point) -> bool:
    """A point is finished when its result folder exists (folders appear atomically)."""
    return (out / RUNS / point.folder / RUN_META).is_file()


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    executor: Any = None,
    workers: int | None = None,
    *,
    force: bool = False,
    progress: bool = False,
    on_result: Callable[[Point, bool], None] | None = None,
    write_table: bool = True,
) -> SweepReport:
    """Run every unfinished point of ``sweep`` into ``out``; returns what was done.

    ``executor`` is a spec string (see :mod:`clustersim.executors`) or an
    executor object (which the caller then closes). ``force`` recomputes
    finished points. Failed points are recorded and retried on the next call.
    """
    import multiprocessing as mp

    from clustersim.executors import make_executor

    if getattr(mp.current_process(), "_inheriting", False):
        raise RuntimeError(
            "run_sweep was called while a worker process imported your script: put the code "
            "that starts the sweep under `if __name__ == '__main__':`"
        )
    t0 = time.perf_counter()
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    with _Lock(outp):
        _clean_temps(outp)
        (outp / RUNS).mkdir(exist_ok=True)
        (outp / FAILED).mkdir(exist_ok=True)
        write_manifest(outp, sweep)
        todo: list[Point] = []
        seen: set[str] = set()
        reused = 0
        for p in sweep.points:
            if p.run_id in seen:
                continue  # the same resolved scenario twice: compute once
            seen.add(p.run_id)
            if not force and is_finished(outp, p):
                reused += 1
            else:
                if force:
                    shutil.rmtree(outp / RUNS / p.folder, ignore_errors=True)
                todo.append(p)
        by_id = {p.run_id: p for p in todo}
        own = isinstance(executor, str) or executor is None
        ex: Any = make_executor(executor, workers) if own else executor
        computed = failed = 0
        failures: list[tuple[int, str]] = []
        bar: Any = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="run", desc=f"sweep {sweep.spec.name}")
        try:
            results: Iterator[tuple[dict[str, Any], Any]] = ex.run(
                execute_task, [p.task for p in todo]
            )
            for task, outcome in results:
                point = by_id[task["run_id"]]
                if isinstance(outcome, BaseException):
                    outcome = _executor_failure(outcome)
                ok = commit_result(outp, point, outcome, ex.name)
                computed += 1
                if not ok:
                    failed += 1
                    failures.append((point.index, str(outcome.get("error", ""))))
                if bar is not None:
                    bar.update(1)
                if on_result is not None:
                    on_result(point, ok)
        finally:
            if bar is not None:
                bar.close()
            if own:
                ex.close()
        report = SweepReport(
            out=outp,
            total=len(sweep.points),
            reused=reused,
            computed=computed,
            failed=failed,
            executor=ex.name,
            wall_s=time.perf_counter() - t0,
            failures=sorted(failures),
        )
        if write_table:
            from clustersim.results import write_table as _write_table

            report.table = _write_table(outp)
        return report


def sweep_from_mapping(data: Mapping[str, Any], base_dir: str | Path | None = None) -> Sweep:
    """Validate a sweep mapping (as in a sweep file) and expand it."""
    try:
        spec = SweepSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_spec_errors(exc, "<sweep>", {})) from None
    return expand(spec, base_dir=base_dir)
