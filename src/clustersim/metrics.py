"""Metrics: pure functions over the tables a run recorded.

Definitions (times in seconds):

* **JCT** (job completion time) = end − submit, completed jobs only.
* **wait** = JCT − time holding devices (all time queued, before the first
  start and after preemptions); **queue delay** = first start − submit.
* **makespan** = last completion − first submission.
* **GPU utilization** = allocated device-seconds / (devices × (end − start of
  the run)), where the allocation series is a step function integrated
  exactly between change points; fractional shares count as their fraction.
  Devices down for repair are idle for this measure; **availability** = 1 −
  down device-seconds / (devices × span) reports them separately.
* **failure interruptions** and **lost work** (device-hours of progress redone
  because it was not checkpointed) come from node outages.
* Percentiles use numpy's default linear interpolation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clustersim.gcpause import paused_gc
from clustersim.schedulers.base import JobRecord, JobState

JOB_COLUMNS = (
    "job_id",
    "submit_time",
    "num_gpus",
    "gpu_milli",
    "duration",
    "state",
    "first_start",
    "end",
    "jct",
    "wait",
    "queue_delay",
    "run_time",
    "preemptions",
    "remaining",
    "devices",
)


_STATE_VALUE = {s: s.value for s in JobState}  # Enum.value is slow on 10^5 records


def job_table(records: list[JobRecord]) -> dict[str, Any]:
    """Column-oriented per-job table (numpy arrays, ``devices`` as lists)."""
    with paused_gc():  # 10^5 small lists: spare the cyclic GC's rescans
        return _job_table(records)


def _job_table(records: list[JobRecord]) -> dict[str, Any]:
    rows = [
        (
            r.job.submit_time,
            r.job.num_gpus,
            r.job.gpu_milli,
            r.job.duration,
            r.first_start,
            r.end,
            r.run_time,
            r.preemptions,
            r.remaining,
            r.failures,
            r.lost_work,
        )
        for r in records
    ]
    a = np.array(rows, dtype=float).reshape(len(rows), 11)
    submit, first, end, run_time = a[:, 0], a[:, 4], a[:, 5], a[:, 6]
    jct = end - submit
    return {
        "job_id": [r.id for r in records],
        "submit_time": submit,
        "num_gpus": a[:, 1].astype(np.int64),
        "gpu_milli": a[:, 2].astype(np.int64),
        "duration": a[:, 3],
        "state": [_STATE_VALUE[r.state] for r in records],
        "first_start": first,
        "end": end,
        "jct": jct,
        "wait": jct - run_time,
        "queue_delay": first - submit,
        "run_time": run_time,
        "preemptions": a[:, 7].astype(np.int64),
        "remaining": a[:, 8],
        "failures": a[:, 9].astype(np.int64),
        "lost_work": a[:, 10],
        "devices": [list(r.devices) for r in records],
    }


def integrate_steps(t: np.ndarray, v: np.ndarray, t_end: float) -> float:
    """Exact integral of the step function ``v[i]`` on ``[t[i], t[i+1])`` up to ``t_end``."""
    if len(t) == 0:
        return 0.0
    edges = np.append(t, max(t_end, float(t[-1])))
    return float(np.sum(v * np.diff(edges)))


def allocated_device_seconds(util_t: np.ndarray, util_milli: np.ndarray, t_end: float) -> float:
    """Device-seconds allocated over the run (fractional shares included)."""
    return integrate_steps(util_t, util_milli.astype(float), t_end) / 1000.0


def summarize(
    table: dict[str, Any],
    util_t: np.ndarray,
    util_milli: np.ndarray,
    capacity: int,
    start_time: float,
    end_time: float,
    down: np.ndarray | None = None,
    power_w: np.ndarray | None = None,
    power_cap_w: float | None = None,
) -> dict[str, Any]:
    """The run summary (what ``summary.json`` holds, apart from run metadata)."""
    state = np.array(table["state"], dtype=object)
    done = state == JobState.DONE.value
    skipped = state == JobState.SKIPPED.value
    jct = table["jct"][done]
    wait = table["wait"][done]

    def stat(fn: Any, x: np.ndarray) -> float | None:
        return float(fn(x)) if len(x) else None

    span = end_time - start_time
    down_s = integrate_steps(util_t, down.astype(float), end_time) if down is not None else 0.0
    alloc = allocated_device_seconds(util_t, util_milli, end_time)
    last_end = float(np.max(table["end"][done])) if done.any() else None
    first_submit = float(np.min(table["submit_time"])) if len(table["submit_time"]) else None
    return {
        "jobs_total": len(done),
        "jobs_completed": int(done.sum()),
        "jobs_skipped": int(skipped.sum()),
        "jobs_unfinished": int((~done & ~skipped).sum()),
        "avg_jct_s": stat(np.mean, jct),
        "p50_jct_s": stat(np.median, jct),
        "p99_jct_s": stat(lambda x: np.percentile(x, 99), jct),
        "avg_wait_s": stat(np.mean, wait),
        "p99_wait_s": stat(lambda x: np.percentile(x, 99), wait),
        "avg_queue_delay_s": stat(np.mean, table["queue_delay"][done]),
        "makespan_s": (last_end - first_submit)
        if last_end is not None and first_submit is not None
        else None,
        "gpu_utilization": alloc / (capacity * span) if span > 0 and capacity else 0.0,
        "allocated_device_hours": alloc / 3600.0,
        "preemptions": int(table["preemptions"].sum()),
        "failure_interruptions": int(table["failures"].sum()),
        "lost_work_device_hours": float((table["lost_work"] * table["num_gpus"]).sum()) / 3600,
        "down_device_hours": down_s / 3600.0,
        "availability": 1.0 - down_s / (capacity * span) if span > 0 and capacity else 1.0,
        **_power_summary(util_t, power_w, power_cap_w, end_time, span),
        "simulated_s": span,
    }


def _power_summary(
    t: np.ndarray, w: np.ndarray | None, cap: float | None, end: float, span: float
) -> dict[str, Any]:
    """Energy (exact integral of the draw's step function), peak, mean, cap headroom."""
    if w is None or not len(w) or not np.any(w):
        return {}
    energy_j = integrate_steps(t, w, end)
    out: dict[str, Any] = {
        "energy_kwh": energy_j / 3.6e6,
        "peak_power_kw": float(w.max()) / 1e3,
        "mean_power_kw": energy_j / span / 1e3 if span > 0 else None,
    }
    if cap is not None:
        out["power_cap_kw"] = cap / 1e3
        out["max_draw_over_cap"] = float(w.max()) / cap
    return out


def jct_cdf(table: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted JCTs of completed jobs and their empirical CDF values."""
    done = np.array([s == JobState.DONE.value for s in table["state"]], dtype=bool)
    x = np.sort(table["jct"][done])
    return x, np.arange(1, len(x) + 1) / max(len(x), 1)
