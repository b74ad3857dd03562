"""Replay the full 82k-job Philly list on 60 nodes x 8 GPUs and report jobs/s and peak memory.

Usage: ``python benchmarks/bench_philly.py [--policies fifo_backfill las] [--trace PATH]``

Each policy runs in a fresh process (``--one`` mode) so that "whole process"
figures include interpreter start-up, imports and trace loading, and peak
memory (ru_maxrss) is that policy's alone. Needs ``../shared/traces/philly``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TRACE = HERE.parent.parent / "shared" / "traces" / "philly" / "philly_jobs.csv"


def _cpu_model() -> str:
    """The CPU's model name (jobs/s are only comparable on one machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def one(policy: str, trace: str, nodes: int) -> dict[str, object]:
    t0 = time.perf_counter()
    from clustersim.api import simulate
    from clustersim.config import validate_scenario

    t_import = time.perf_counter() - t0
    sc = validate_scenario(
        {
            "name": f"bench-philly-{policy}",
            "seed": 0,
            "cluster": {"nodes": nodes, "gpus_per_node": 8, "device": "V100"},
            "workload": {"trace": trace, "format": "philly"},
            "scheduler": {"name": policy},
        }
    )
    res = simulate(sc)
    total = time.perf_counter() - t0
    n = res.summary["jobs_completed"]
    return {
        "policy": policy,
        "jobs": n,
        "import_s": round(t_import, 3),
        "engine_s": round(res.engine.wall_s, 3),
        "total_s": round(total, 3),
        "jobs_per_s_engine": round(n / res.engine.wall_s),
        "jobs_per_s_in_process": round(n / total),
        "events": res.summary["events"],
        "passes": res.summary["scheduler_passes"],
        "avg_jct_s": round(res.summary["avg_jct_s"], 1),
        "gpu_utilization": round(res.summary["gpu_utilization"], 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--policies", nargs="+", default=["fifo_backfill", "las"])
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--nodes", type=int, default=60)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.trace, args.nodes)))
        return
    if not Path(args.trace).exists():
        sys.exit(f"trace not found: {args.trace} (needs ../shared/traces beside the repo)")
    print(f"Philly replay: {args.trace} on {args.nodes} x 8 GPUs")
    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    for p in args.policies:
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                p,
                "--trace",
                args.trace,
                "--nodes",
                str(args.nodes),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        r = json.loads(out.stdout)
        r["whole_process_s"] = round(wall, 3)
        r["whole_process_cpu_s"] = round(cpu, 3)
        r["jobs_per_s_whole_process"] = round(r["jobs"] / wall)
        r["jobs_per_cpu_s_whole_process"] = round(r["jobs"] / cpu)
        print(
            f"{p:>14}: {r['jobs']} jobs, whole process {wall:.2f} s wall / {cpu:.2f} s CPU -> "
            f"{r['jobs_per_s_whole_process']:,} jobs/s ({r['jobs_per_cpu_s_whole_process']:,} "
            f"per CPU second; engine alone "
            f"{r['jobs_per_s_engine']:,} jobs/s), peak RSS {r['peak_rss_mb']} MB, "
            f"avg JCT {r['avg_jct_s']:,} s, util {r['gpu_utilization']}"
        )
        print("   ", json.dumps(r))


if __name__ == "__main__":
    main()
