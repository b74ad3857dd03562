"""Job-lifecycle timelines as Chrome / Perfetto trace-event JSON, from a results folder.

Open the file in https://ui.perfetto.dev or ``chrome://tracing`` (both load it
locally). Two layouts:

* ``by="device"``: one process per node (``node 3 (V100 x 8)``), one track
  per device; each job run is a complete event (``"ph": "X"``) named after the
  job on every device it held.
* ``by="job"``: one process ``jobs`` with *lanes*: jobs are packed greedily
  into the first lane free at their submission (lanes in submission order),
  and each job shows a ``queued`` span (submit to first start) followed by a
  ``run`` span (first start to end). Jobs never started stay ``queued`` to the
  end of the run.

Both add counter tracks (``"ph": "C"``) for allocated devices and queue
length from ``utilization.parquet``. Timestamps are simulated time in
microseconds (trace-event convention) from the run's start.

Runs record each job's first start, end and last devices. A job that was
preempted or interrupted is therefore drawn as one span over its last devices
(``args.approximate: true``); in the device layout such spans go to separate
``(approx.)`` tracks so they never overlap exactly known spans. A run that
also wrote ``segments.parquet`` (``job_id, start, end, devices``) is drawn
segment by segment, exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clustersim.errors import ConfigError

US = 1e6
"""Trace-event timestamps are microseconds; simulated seconds are multiplied by this."""


def _meta(pid: int, tid: int | None, name: str, value: str, sort: int | None = None) -> list[Any]:
    ev: dict[str, Any] = {"ph": "M", "pid": pid, "name": name, "args": {"name": value}}
    if tid is not None:
        ev["tid"] = tid
    out: list[Any] = [ev]
    if sort is not None:
        key = "thread_sort_index" if tid is not None else "process_sort_index"
        s: dict[str, Any] = {"ph": "M", "pid": pid, "name": key, "args": {"sort_index": sort}}
        if tid is not None:
            s["tid"] = tid
        out.append(s)
    return out


def _counters(util: dict[str, np.ndarray], t0: float, pid: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    t = util["time"].astype(float)
    alloc = util["allocated_devices"].astype(float)
    queue = util["queue_length"].astype(float)
    for i in range(len(t)):
        ts = (t[i] - t0) * US
        events.append(
            {
                "ph": "C",
                "pid": pid,
                "name": "allocated devices",
                "ts": ts,
                "args": {"devices": alloc[i]},
            }
        )
        events.append(
            {"ph": "C", "pid": pid, "name": "queued jobs", "ts": ts, "args": {"jobs": queue[i]}}
        )
    return events


def lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Greedy interval partitioning: lane of each interval (in ``start`` order, first free lane).

    A lane is free for an interval starting at ``s`` when its last interval
    ended at or before ``s``. Ties in ``start`` keep input order.
    """
    order = np.argsort(start, kind="stable")
    lane_end: list[float] = []
    out = np.empty(len(start), dtype=np.int64)
    for i in order:
        s = float(start[i])
        for k, e in enumerate(lane_end):
            if e <= s:
                out[i] = k
                lane_end[k] = float(end[i])
                break
        else:
            out[i] = len(lane_end)
            lane_end.append(float(end[i]))
    return out


def trace_events(run_dir: str | Path, by: str = "device") -> dict[str, Any]:
    """The trace-event document (``{"traceEvents": [...], ...}``) of a results folder."""
    from clustersim.api import read_table
    from clustersim.plots import job_intervals

    d = Path(run_dir)
    if not (d / "jobs.parquet").exists() and not (d / "jobs.csv").exists():
        raise ConfigError(f"{d}: no jobs.parquet; give a folder written by 'clustersim run --out'")
    if by not in ("device", "job"):
        raise ConfigError(f"timeline layout '{by}': use 'device' or 'job'")
    jobs = read_table(d / "jobs.parquet" if (d / "jobs.parquet").exists() else d / "jobs.csv")
    util = read_table(
        d / "utilization.parquet" if (d / "utilization.parquet").exists() else d / "utilization.csv"
    )
    t0 = float(util["time"][0])
    iv = job_intervals(d)
    ids = iv.job_ids
    events: list[dict[str, Any]] = []
    events += _meta(0, None, "process_name", "cluster", sort=0)
    events += _counters(util, t0, 0)
    if by == "device":
        cluster = _cluster(d)
        used_nodes: set[int] = set()
        approx_tracks: set[int] = set()
        for k in range(len(iv.job)):
            j = int(iv.job[k])
            for dev in iv.devices[k].tolist():
                node = int(cluster.node_of[dev])
                used_nodes.add(node)
                if iv.exact[k]:
                    tid = dev + 1
                else:  # approximate spans get their own track so they never overlap
                    tid = cluster.num_devices + dev + 1
                    approx_tracks.add(dev)
                events.append(
                    {
                        "ph": "X",
                        "cat": "job",
                        "name": ids[j],
                        "pid": node + 1,
                        "tid": tid,
                        "ts": (float(iv.start[k]) - t0) * US,
                        "dur": (float(iv.end[k]) - float(iv.start[k])) * US,
                        "args": {
                            "job": ids[j],
                            "num_gpus": int(jobs["num_gpus"][j]),
                            "submit_s": float(jobs["submit_time"][j]),
                            "preemptions": int(jobs["preemptions"][j]),
                            "approximate": not bool(iv.exact[k]),
                        },
                    }
                )
        for n in range(cluster.num_nodes):
            size, first = cluster.node_size[n], cluster.node_first[n]
            events += _meta(
                n + 1, None, "process_name", f"node {n} ({cluster.node_type[n]} x {size})", n + 1
            )
            for dev in range(first, first + size):
                events += _meta(n + 1, dev + 1, "thread_name", f"device {dev}", 2 * dev)
                if dev in approx_tracks:
                    events += _meta(
                        n + 1,
                        cluster.num_devices + dev + 1,
                        "thread_name",
                        f"device {dev} (approx.)",
                        2 * dev + 1,
                    )
    else:
        submit = jobs["submit_time"].astype(float)
        first = jobs["first_start"].astype(float)
        end = np.where(np.isfinite(jobs["end"]), jobs["end"], iv.run_end).astype(float)
        started = np.isfinite(first)
        stop = np.where(started, end, iv.run_end)
        skipped = np.array([s == "skipped" for s in jobs["state"]], dtype=bool)
        keep = np.flatnonzero(~skipped)
        lane = lanes(submit[keep], stop[keep])
        events += _meta(1, None, "process_name", "jobs", 1)
        for n in range(int(lane.max()) + 1 if len(lane) else 0):
            events += _meta(1, n + 1, "thread_name", f"lane {n}", n)
        exact_jobs = set(int(x) for x, e in zip(iv.job, iv.exact, strict=True) if e)
        for li, j in zip(lane.tolist(), keep.tolist(), strict=True):
            args = {
                "job": ids[j],
                "num_gpus": int(jobs["num_gpus"][j]),
                "state": str(jobs["state"][j]),
                "preemptions": int(jobs["preemptions"][j]),
            }
            q_end = first[j] if started[j] else stop[j]
            if q_end > submit[j]:
                events.append(
                    {
                        "ph": "X",
                        "cat": "queued",
                        "name": f"{ids[j]} queued",
                        "pid": 1,
                        "tid": li + 1,
                        "ts": (submit[j] - t0) * US,
                        "dur": (q_end - submit[j]) * US,
                        "args": args,
                    }
                )
            if started[j] and stop[j] > first[j]:
                events.append(
                    {
                        "ph": "X",
                        "cat": "run",
                        "name": ids[j],
                        "pid": 1,
                        "tid": li + 1,
                        "ts": (first[j] - t0) * US,
                        "dur": (stop[j] - first[j]) * US,
                        "args": {**args, "approximate": j not in exact_jobs},
                    }
                )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "source": str(d),
            "layout": by,
            "time_unit": "simulated microseconds from the run start",
        },
    }


def _cluster(d: Path) -> Any:
    import yaml

    from clustersim.config import validate_scenario
    from clustersim.topology import build_cluster

    cfg = yaml.safe_load((d / "config.yaml").read_text())
    return build_cluster(validate_scenario(cfg, source=str(d / "config.yaml")))


def export_trace(run_dir: str | Path, out: str | Path | None = None, by: str = "device") -> Path:
    """Write the trace-event JSON of a results folder; default ``RUN_DIR/timeline-<by>.json``."""
    doc = trace_events(run_dir, by)
    path = Path(out) if out is not None else Path(run_dir) / f"timeline-{by}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path
