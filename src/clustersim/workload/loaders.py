"""Trace loaders: clustersim CSV, the Philly job list and the Alibaba openb pod list.

Each loader returns jobs sorted by ``(submit_time, seq)`` and raises
:class:`~clustersim.errors.TraceError` naming ``file:line``, the field and the fix
for any malformed row. :func:`load_workload` applies a scenario's filters
(virtual cluster, limit, load scale) and is what the engine calls.

Formats:

``csv``
    ``job_id,submit_time,num_gpus,duration`` (seconds) plus optional columns
    ``gpu_milli`` (per-device share, 1000 = whole device), ``device_type`` and any
    others, kept in :attr:`Job.attrs` (numbers parsed as float).
``philly``
    ``timestamp,duration,num_gpus,gpu_time,cluster`` as shipped by the Pollux
    artifact (``../shared/traces/philly/philly_jobs.csv``); ``timestamp`` is the
    submission time, converted to seconds after the earliest job; ``cluster`` is
    the virtual cluster.
``openb``
    Alibaba cluster-trace-gpu-v2023 pod list; ``creation_time`` is the arrival,
    ``deletion_time - scheduled_time`` the run time, ``gpu_milli`` kept
    (fractional shares). CPU-only pods (``num_gpu`` = 0) and pods without a
    run time are left out and counted.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clustersim.errors import TraceError
from clustersim.gcpause import paused_gc
from clustersim.workload.job import FULL_GPU_MILLI, Job

if TYPE_CHECKING:
    from clustersim.config import Scenario

REQUIRED_CSV = ("job_id", "submit_time", "num_gpus", "duration")
PHILLY_COLUMNS = ("timestamp", "duration", "num_gpus", "cluster")


@dataclass
class LoadReport:
    """What a loader kept and left out (reported in the run summary)."""

    source: str
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` of a CSV file after checking its header."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(
            str(path), None, None, "file not found", "check the 'trace' path"
        ) from None
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise TraceError(str(path), 1, None, "empty file, no header row")
        header = [h.strip() for h in header]
        reader.fieldnames = header
        for col in required:
            if col not in header:
                raise TraceError(
                    str(path),
                    1,
                    col,
                    "missing column",
                    f"the header must contain {', '.join(required)}; it has {', '.join(header)}",
                )
        for row in reader:
            if None in row:
                raise TraceError(
                    str(path),
                    reader.line_num,
                    None,
                    f"row has {len(header) + len(row[None])} fields, header has {len(header)}",
                    "remove the extra commas or quote the field",
                )
            yield reader.line_num, row


def _num(
    path: Path,
    line: int,
    name: str,
    text: str | None,
    *,
    minimum: float | None = None,
    strict_min: bool = False,
    integer: bool = False,
) -> float:
    if text is None or text.strip() == "":
        raise TraceError(str(path), line, name, "empty value", f"give a number for '{name}'")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(str(path), line, name, f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise TraceError(str(path), line, name, f"'{text}' is not a finite number")
    if integer and value != int(value):
        raise TraceError(str(path), line, name, f"'{text}' is not a whole number")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        rel = ">" if strict_min else ">="
        raise TraceError(
            str(path), line, name, f"{text} is out of range", f"'{name}' must be {rel} {minimum:g}"
        )
    return value


def load_csv(path: str | Path) -> tuple[list[Job], LoadReport]:
    """Load clustersim's own CSV format (see module docstring)."""
    p = Path(path)
    report = LoadReport(str(p))
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    core = set(REQUIRED_CSV) | {"gpu_milli", "device_type"}
    for line, row in csv_rows(p, REQUIRED_CSV):
        report.rows += 1
        jid = (row["job_id"] or "").strip()
        if not jid:
            raise TraceError(str(p), line, "job_id", "empty job id")
        if jid in seen:
            raise TraceError(
                str(p),
                line,
                "job_id",
                f"duplicate job id '{jid}'",
                f"first seen on line {seen[jid]}",
            )
        seen[jid] = line
        submit = _num(p, line, "submit_time", row["submit_time"], minimum=0)
        gpus = int(
            _num(p, line, "num_gpus", row["num_gpus"], minimum=0, strict_min=True, integer=True)
        )
        dur = _num(p, line, "duration", row["duration"], minimum=0)
        milli = FULL_GPU_MILLI
        if (row.get("gpu_milli") or "").strip():
            milli = int(
                _num(
                    p, line, "gpu_milli", row["gpu_milli"], minimum=0, strict_min=True, integer=True
                )
            )
            if milli > FULL_GPU_MILLI:
                raise TraceError(
                    str(p),
                    line,
                    "gpu_milli",
                    f"{milli} > 1000",
                    "gpu_milli is the share of ONE device in 1/1000; use num_gpus",
                )
        dtype = (row.get("device_type") or "").strip() or None
        attrs: dict[str, object] = {}
        for k, v in row.items():
            if k in core or v is None or v == "":
                continue
            try:
                attrs[k] = float(v)
            except ValueError:
                attrs[k] = v
        jobs.append(Job(jid, submit, gpus, dur, milli, dtype, len(jobs), attrs))
    report.kept = len(jobs)
    jobs.sort(key=attrgetter("submit_time", "seq"))
    return jobs, report


def _header(path: Path, fh: Any, required: Sequence[str]) -> tuple[Any, dict[str, int]]:
    reader = csv.reader(fh)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise TraceError(str(path), 1, None, "empty file, no header row") from None
    for col in required:
        if col not in header:
            raise TraceError(
                str(path),
                1,
                col,
                "missing column",
                f"the header must contain {', '.join(required)}; it has {', '.join(header)}",
            )
    return reader, {h: i for i, h in enumerate(header)}


def load_philly(
    path: str | Path, virtual_clusters: Sequence[str] | None = None
) -> tuple[list[Job], LoadReport]:
    """Load the Philly job list (Pollux artifact format), optionally some virtual clusters."""
    p = Path(path)
    report = LoadReport(str(p))
    wanted = set(virtual_clusters) if virtual_clusters else None
    stamps: list[str] = []
    gpus_l: list[int] = []
    dur_l: list[float] = []
    vcs: list[str] = []
    lines: list[int] = []
    try:
        fh = p.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(str(p), None, None, "file not found", "check the 'trace' path") from None
    with fh:
        reader, col = _header(p, fh, PHILLY_COLUMNS)
        i_ts, i_dur, i_g, i_vc = (col[c] for c in PHILLY_COLUMNS)
        width = len(col)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            report.rows += 1
            if len(row) != width:
                raise TraceError(
                    str(p), line, None, f"row has {len(row)} fields, header has {width}"
                )
            vc = row[i_vc].strip()
            if wanted is not None and vc not in wanted:
                report.drop("other virtual cluster")
                continue
            try:
                gpus = int(row[i_g])
                dur = float(row[i_dur])
                ok = gpus > 0 and dur >= 0 and math.isfinite(dur)
            except ValueError:
                ok = False
            if not ok:  # re-parse slowly for a precise message
                gpus = int(
                    _num(p, line, "num_gpus", row[i_g], minimum=0, strict_min=True, integer=True)
                )
                dur = _num(p, line, "duration", row[i_dur], minimum=0)
            stamps.append(row[i_ts].strip())
            gpus_l.append(gpus)
            dur_l.append(dur)
            vcs.append(vc)
            lines.append(line)
    if not stamps:
        report.kept = 0
        return [], report
    try:
        when = np.array(stamps, dtype="datetime64[s]")
    except ValueError:
        for ts, line in zip(stamps, lines, strict=True):  # find the culprit for the message
            try:
                datetime.fromisoformat(ts)
            except ValueError:
                raise TraceError(
                    str(p),
                    line,
                    "timestamp",
                    f"'{ts}' is not a date-time",
                    "use YYYY-MM-DD HH:MM:SS",
                ) from None
        raise
    if np.isnat(when).any():
        bad = int(np.flatnonzero(np.isnat(when))[0])
        raise TraceError(
            str(p), lines[bad], "timestamp", "empty date-time", "use YYYY-MM-DD HH:MM:SS"
        )
    secs = (when - when.min()).astype(np.int64).tolist()
    jobs = [
        Job(f"philly-{line}", float(t), g, d, FULL_GPU_MILLI, None, i, {"virtual_cluster": vc})
        for i, (t, g, d, vc, line) in enumerate(zip(secs, gpus_l, dur_l, vcs, lines, strict=True))
    ]
    jobs.sort(key=attrgetter("submit_time", "seq"))
    report.kept = len(jobs)
    return jobs, report


def load_openb(path: str | Path) -> tuple[list[Job], LoadReport]:
    """Load an Alibaba openb pod list as GPU jobs (fractional ``gpu_milli`` kept)."""
    from clustersim.workload.openb import load_openb_pods

    p = Path(path)
    pods = load_openb_pods(p)
    report = LoadReport(str(p), rows=len(pods.name))
    created: np.ndarray = pods.creation_time
    finite = [float(x) for x in created if math.isfinite(x)]
    t0 = min(finite) if finite else 0.0
    jobs: list[Job] = []
    for i in range(len(pods.name)):
        ngpu = int(pods.num_gpu[i])
        if ngpu == 0:
            report.drop("cpu-only pod")
            continue
        start, end = float(pods.scheduled_time[i]), float(pods.deletion_time[i])
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            report.drop("no run time (not scheduled or not deleted in the window)")
            continue
        milli = int(pods.gpu_milli[i]) if ngpu == 1 else FULL_GPU_MILLI
        spec = _canonical_types(pods.gpu_spec[i]) if pods.gpu_spec[i] else None
        submit = float(created[i]) - t0 if math.isfinite(created[i]) else start - t0
        jobs.append(
            Job(
                pods.name[i],
                submit,
                ngpu,
                end - start,
                milli,
                spec,
                len(jobs),
                {"cpu_milli": float(pods.cpu_milli[i]), "qos": pods.qos[i]},
            )
        )
    jobs.sort(key=attrgetter("submit_time", "seq"))
    report.kept = len(jobs)
    return jobs, report


def _canonical_types(spec: str) -> str:
    """``"V100M16|V100M32"`` -> ``"V100|V100-16GB"``: catalogue names, sorted; undisclosed
    codes (G1, G2, G3) and unknown names are kept as written."""
    from clustersim.errors import ClusterSimError
    from clustersim.hardware import get_device

    out = set()
    for name in spec.split("|"):
        name = name.strip()
        if not name:
            continue
        try:
            out.add(get_device(name).name)
        except ClusterSimError:
            out.add(name)
    return "|".join(sorted(out))


def load_workload(scenario: Scenario, rng: np.random.Generator) -> tuple[list[Job], LoadReport]:
    """Jobs of a scenario, filtered and scaled as it says, sorted by arrival."""
    w = scenario.workload
    if w.format == "synthetic":
        from clustersim.config import SyntheticConfig
        from clustersim.workload.synthetic import generate_jobs

        jobs = generate_jobs(w.synthetic or SyntheticConfig(), rng)
        report = LoadReport("<synthetic>", rows=len(jobs), kept=len(jobs))
    else:
        assert w.trace is not None
        path = scenario.resolve_path(w.trace)
        with paused_gc():  # 10^5 Job objects: spare the cyclic GC's rescans
            if w.format == "csv":
                jobs, report = load_csv(path)
            elif w.format == "philly":
                jobs, report = load_philly(path, w.virtual_cluster)
            else:
                jobs, report = load_openb(path)
    if w.limit is not None and len(jobs) > w.limit:
        report.dropped["beyond limit"] = len(jobs) - w.limit
        jobs = jobs[: w.limit]
    if w.load_scale != 1.0 and jobs:
        t0 = jobs[0].submit_time
        s = w.load_scale
        jobs = [
            Job(
                j.id,
                t0 + (j.submit_time - t0) / s,
                j.num_gpus,
                j.duration,
                j.gpu_milli,
                j.device_type,
                j.seq,
                j.attrs,
            )
            for j in jobs
        ]
    report.kept = len(jobs)
    return jobs, report
