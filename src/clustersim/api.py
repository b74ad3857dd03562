"""The Python API of one run: scenario in, tables and summary out, results written to a folder.

:func:`simulate` wires a :class:`~clustersim.config.Scenario` together (one
``numpy.random.Generator`` seeded from ``scenario.seed``, the workload, the
cluster, the policy, the engine) and returns a :class:`RunResult`.
:func:`write_results` stores it as ``jobs.parquet``, ``utilization.parquet``,
``summary.json`` and ``config.yaml``; plots are drawn from those files by
:mod:`clustersim.plots`, never from live objects.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clustersim import __version__
from clustersim.config import Scenario, scenario_to_yaml
from clustersim.engine import Engine, EngineResult, Outage, Reclaim
from clustersim.errors import ClusterSimError, ConfigError
from clustersim.gcpause import paused_gc
from clustersim.metrics import job_table, summarize
from clustersim.schedulers.placement import get_placement
from clustersim.schedulers.registry import create_scheduler
from clustersim.topology import Cluster, build_cluster
from clustersim.workload.job import Job
from clustersim.workload.loaders import LoadReport, load_workload


@dataclass
class RunResult:
    """Everything one run produced."""

    scenario: Scenario
    cluster: Cluster
    engine: EngineResult
    jobs: dict[str, Any]
    summary: dict[str, Any]
    load: LoadReport
    skipped: list[str] = field(default_factory=list)


def check_widths(jobs: list[Job], cluster: Cluster, source: str) -> list[tuple[Job, str]]:
    """Jobs that can never run on ``cluster`` with the reason (wider than it, or absent type)."""
    per_type: dict[str, int] = {}
    for n in range(cluster.num_nodes):
        per_type[cluster.node_type[n]] = (
            per_type.get(cluster.node_type[n], 0) + cluster.node_size[n]
        )
    bad: list[tuple[Job, str]] = []
    for j in jobs:
        if j.device_type is None:
            if j.num_gpus > cluster.num_devices:
                bad.append(
                    (j, f"asks for {j.num_gpus} devices; the cluster has {cluster.num_devices}")
                )
        else:
            types = j.device_type.split("|")
            have = sum(per_type.get(t, 0) for t in types)
            if have == 0:
                bad.append(
                    (
                        j,
                        f"needs device type '{j.device_type}', which the cluster lacks "
                        f"(it has {', '.join(sorted(per_type))})",
                    )
                )
            elif j.num_gpus > have:
                bad.append(
                    (j, f"asks for {j.num_gpus} {j.device_type} devices; the cluster has {have}")
                )
    return bad


def simulate(scenario: Scenario, progress: bool = False) -> RunResult:
    """Run ``scenario`` once. Same scenario and seed give identical tables."""
    # Loading, the run and the tables allocate ~10^6 long-lived objects and no cycles
    # (the engine cuts its only one, to its view, when the run ends): the cyclic GC's
    # generation scans over them would cost ~7 % of a Philly replay for nothing.
    with paused_gc():
        return _simulate(scenario, progress)


def _simulate(scenario: Scenario, progress: bool) -> RunResult:
    rng = np.random.default_rng(scenario.seed)
    cluster = build_cluster(scenario)
    jobs, report = load_workload(scenario, rng)
    if not jobs:
        raise ConfigError(
            f"workload {report.source}: no jobs left after filtering "
            f"(dropped: {report.dropped or 'none'})"
        )
    bad = check_widths(jobs, cluster, report.source)
    if bad and scenario.workload.oversized == "reject":
        j, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ConfigError(
            f"{report.source}: job '{j.id}' {why}{more}. Use a larger cluster, or set "
            "'workload.oversized: skip' to leave such jobs out and count them"
        )
    sched_cfg = scenario.scheduler
    scheduler = create_scheduler(sched_cfg.name, dict(sched_cfg.params))
    placement = get_placement(sched_cfg.placement)
    speed_model = None
    if scenario.cluster.network == "topology":
        try:
            from clustersim.perf import speed_model_for
        except ImportError:
            raise ConfigError(
                "cluster.network: 'topology' needs the communication speed model "
                "(clustersim.perf), which this version lacks; use 'ideal'"
            ) from None
        speed_model = speed_model_for(scenario, cluster)
    kwargs: dict[str, Any] = {}
    if speed_model is not None:
        kwargs["speed_model"] = speed_model
    outages, fcfg = _outages(scenario, cluster, jobs, rng)
    power_cap = _power_cap(scenario, cluster)
    if power_cap is not None and power_cap.cap_w is not None:
        bad += _over_power(jobs, cluster, power_cap, {j.id for j, _ in bad})
        if bad and scenario.workload.oversized == "reject":
            j, why = bad[0]
            raise ConfigError(
                f"{report.source}: job '{j.id}' {why}. Raise the cap, or set "
                "'workload.oversized: skip' to leave such jobs out and count them"
            )
    engine = Engine(
        cluster,
        jobs,
        scheduler,
        placement,
        checkpoint_s=scenario.preemption.checkpoint_s,
        restore_s=scenario.preemption.restore_s,
        horizon=scenario.horizon,
        interval=sched_cfg.interval,
        progress=progress,
        policy_name=sched_cfg.name,
        outages=outages,
        power_cap=power_cap,
        checkpoint_interval=fcfg.checkpoint_interval_s if fcfg else None,
        recovery_s=fcfg.recovery_s if fcfg else 0.0,
        reclaims=_reclaims(scenario, jobs),
        **kwargs,
    )
    skipped = [j.id for j, _ in bad]
    engine.mark_skipped(skipped)
    try:
        raw = engine.run()
    except ClusterSimError as exc:
        partial = getattr(exc, "partial", None)
        if isinstance(partial, EngineResult):
            exc.partial = _assemble(scenario, cluster, partial, report, skipped)  # type: ignore[attr-defined]
        raise
    return _assemble(scenario, cluster, raw, report, skipped)


def _reclaims(scenario: Scenario, jobs: list[Job]) -> list[Reclaim]:
    """The scenario's reclaim schedule in absolute simulated time (from the first arrival)."""
    if not scenario.reclaims:
        return []
    t0 = min(j.submit_time for j in jobs)
    return [Reclaim(t0 + r.time, r.nodes) for r in scenario.reclaims]


def _outages(
    scenario: Scenario, cluster: Cluster, jobs: list[Job], rng: np.random.Generator
) -> tuple[list[Outage], Any]:
    """Node outages of the run from the scenario's failure model or failure trace."""
    fcfg = scenario.failures
    if fcfg is None:
        return [], None
    from clustersim.reliability.failures import (
        ClusterLayout,
        generate_failures,
        load_failure_trace,
    )

    model = fcfg.model
    idx = np.arange(cluster.num_nodes, dtype=np.int64)
    layout = ClusterLayout(
        devices_per_node=np.asarray(cluster.node_size, dtype=np.int64),
        switch_of_node=idx // model.nodes_per_switch,
        power_domain_of_node=idx // model.nodes_per_power_domain,
        device_type_of_node=tuple(cluster.node_type),
        links_per_node=model.links_per_node,
    )
    t0 = jobs[0].submit_time
    if model.trace is not None:
        events = load_failure_trace(scenario.resolve_path(model.trace), layout)
    else:
        horizon = scenario.horizon or fcfg.horizon_s
        if horizon is None:  # long enough to drain: arrivals + all work on the cluster + slack
            work = sum(j.duration * j.gpu_demand for j in jobs) / cluster.num_devices
            horizon = 2.0 * (jobs[-1].submit_time - t0 + work + max(j.duration for j in jobs))
        events = generate_failures(model, layout, horizon, rng)
    for e in events:
        bad = [n for n in e.nodes if not 0 <= n < cluster.num_nodes]
        if bad:
            raise ConfigError(
                f"failure at t={e.time}: node {bad[0]} does not exist "
                f"(cluster has nodes 0..{cluster.num_nodes - 1})"
            )
    return [Outage(t0 + e.time, tuple(e.nodes), e.repair_time, e.kind) for e in events], fcfg


def _over_power(
    jobs: list[Job], cluster: Cluster, cap: Any, already: set[str]
) -> list[tuple[Job, str]]:
    """Jobs whose draw on an otherwise idle cluster exceeds the cap (they could never start)."""
    first_of: dict[str, list[int]] = {}
    for n in range(cluster.num_nodes):
        first_of.setdefault(cluster.node_type[n], []).extend(cluster.node_devices(n))
    bad: list[tuple[Job, str]] = []
    seen: dict[tuple[int, int, str | None], str | None] = {}
    for j in jobs:
        if j.id in already:
            continue
        key = (j.num_gpus, j.gpu_milli, j.device_type)
        if key not in seen:
            types = j.device_type.split("|") if j.device_type else list(first_of)
            ok = any(
                len(first_of.get(t, ())) >= j.num_gpus
                and cap.fits(first_of[t][: j.num_gpus], j.gpu_milli)
                for t in types
            )
            seen[key] = (
                None
                if ok
                else (
                    f"would draw more than the power cap of {cap.cap_w / 1e3:.1f} kW even on an "
                    "idle cluster"
                )
            )
        why = seen[key]
        if why is not None:
            bad.append((j, why))
    return bad


def _power_cap(scenario: Scenario, cluster: Cluster) -> Any:
    """The scenario's :class:`~clustersim.power.PowerCap`, or None without ``power:``."""
    pcfg = scenario.power
    if pcfg is None:
        return None
    from clustersim.hetero import resolve_specs
    from clustersim.power import PowerCap, PowerModel

    try:
        specs = resolve_specs(cluster.device_types)
    except ClusterSimError as exc:
        raise ConfigError(f"power: {exc}") from None
    model = PowerModel(
        cluster,
        specs,
        pue=pcfg.pue,
        node_overhead_fraction=pcfg.node_overhead_fraction,
        power_limit_fraction=pcfg.power_limit_fraction,
    )
    cap = pcfg.cap_w
    if cap is None and pcfg.cap_fraction is not None:
        cap = model.cap_w(pcfg.cap_fraction)
    if cap is not None and cap < model.idle_floor_w:
        raise ConfigError(
            f"power.cap: {cap / 1e3:.1f} kW is below the idle draw of the cluster "
            f"({model.idle_floor_w / 1e3:.1f} kW); nothing could ever run"
        )
    return PowerCap(model, cap)


def _assemble(
    scenario: Scenario, cluster: Cluster, raw: EngineResult, report: LoadReport, skipped: list[str]
) -> RunResult:
    table = job_table(raw.records)
    summary = summarize(
        table,
        raw.util_t,
        raw.util_milli,
        raw.capacity,
        raw.start_time,
        raw.end_time,
        raw.down,
        raw.power_w,
        raw.power_cap_w,
    )
    summary.update(
        {
            "scenario": scenario.name,
            "scheduler": scenario.scheduler.name,
            "placement": scenario.scheduler.placement,
            "seed": scenario.seed,
            "devices": cluster.num_devices,
            "stopped_by": raw.stopped_by,
            "events": raw.events,
            "scheduler_passes": raw.passes,
            "preemptions_by_reclaim": raw.reclaim_preemptions,
            "trace_rows": report.rows,
            "trace_dropped": dict(report.dropped),
            "notes": list(raw.notes),
            "wall_s": raw.wall_s,
        }
    )
    return RunResult(scenario, cluster, raw, table, summary, report, skipped)


def _metadata(result: RunResult) -> dict[str, str]:
    return {
        "clustersim_version": __version__,
        "scenario": result.scenario.name,
        "seed": str(result.scenario.seed),
        "python": platform.python_version(),
        "config_yaml": scenario_to_yaml(result.scenario),
    }


def write_results(result: RunResult, out: str | Path, fmt: str = "parquet") -> Path:
    """Write the run's tables to ``out`` atomically (a temp folder renamed into place)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = _metadata(result)
        util = {
            "time": result.engine.util_t,
            "allocated_devices": result.engine.util_milli / 1000.0,
            "queue_length": result.engine.queue_len,
            "running_jobs": result.engine.running,
            "down_devices": result.engine.down,
            "power_w": result.engine.power_w,
        }
        if fmt == "parquet":
            _write_parquet(tmp / "jobs.parquet", result.jobs, meta)
            _write_parquet(tmp / "segments.parquet", _segments(result), meta)
            _write_parquet(
                tmp / "utilization.parquet", util, {**meta, "capacity": str(result.engine.capacity)}
            )
        elif fmt == "csv":
            _write_csv(tmp / "jobs.csv", result.jobs)
            _write_csv(tmp / "utilization.csv", util)
        else:
            raise ConfigError(f"unknown output format '{fmt}' (parquet or csv)")
        (tmp / "summary.json").write_text(
            json.dumps(result.summary, indent=2, sort_keys=False) + "\n"
        )
        (tmp / "config.yaml").write_text(scenario_to_yaml(result.scenario))
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            if backup.exists():
                shutil.rmtree(backup)
            os.replace(out, backup)
            os.replace(tmp, out)
            shutil.rmtree(backup)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _segments(result: RunResult) -> dict[str, Any]:
    """Every interval a job held devices: ``job_id, start, end, devices`` (exact occupancy)."""
    seg = result.engine.segments
    return {
        "job_id": [s[0] for s in seg],
        "start": np.array([s[1] for s in seg], dtype=float),
        "end": np.array([s[2] for s in seg], dtype=float),
        "devices": [list(s[3]) for s in seg],
    }


def _write_parquet(path: Path, cols: dict[str, Any], meta: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    table = table.replace_schema_metadata({f"clustersim.{k}": v for k, v in meta.items()})
    pq.write_table(table, path)


def _write_csv(path: Path, cols: dict[str, Any]) -> None:
    import csv

    keys = list(cols)
    n = len(cols[keys[0]]) if keys else 0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for i in range(n):
            row = []
            for k in keys:
                v = cols[k][i]
                row.append(
                    " ".join(map(str, v))
                    if isinstance(v, list)
                    else (v.item() if hasattr(v, "item") else v)
                )
            w.writerow(row)


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read a results table (parquet or csv) as numpy columns."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        return {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}
    import csv

    with p.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        col = [r[i] for r in body]
        try:
            out[name] = np.array([float(x) if x != "" else np.nan for x in col])
        except ValueError:
            out[name] = np.array(col, dtype=object)
    return out
