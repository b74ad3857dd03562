"""The ``clustersim`` command line (click). It parses arguments and calls the API; no logic here.

Commands: ``run`` (one scenario), ``plot`` (figures from a results folder),
``trace`` (inspect a trace file), ``list`` (registered schedulers, placements,
devices). Errors a user can fix print one clear line and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import yaml

from clustersim import __version__
from clustersim.errors import ClusterSimError


def _fail(exc: BaseException) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _parse_sets(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--set")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _print_summary(summary: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    keys = [
        "scenario",
        "scheduler",
        "placement",
        "devices",
        "jobs_completed",
        "jobs_skipped",
        "jobs_unfinished",
        "avg_jct_s",
        "p50_jct_s",
        "p99_jct_s",
        "avg_wait_s",
        "makespan_s",
        "gpu_utilization",
        "preemptions",
        "stopped_by",
        "wall_s",
    ]
    width = max(len(k) for k in keys)
    for k in keys:
        if k in summary:
            click.echo(f"  {k:<{width}}  {fmt(summary[k])}")
    for note in summary.get("notes", []):
        click.echo(f"  note: {note}")


@click.group()
@click.version_option(__version__, prog_name="clustersim")
def main() -> None:
    """clustersim: discrete-event simulation of GPU/NPU clusters."""


@main.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), help="write results here")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a scenario field, e.g. --set scheduler.name=las",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv"]),
    default="parquet",
    show_default=True,
    help="table format in --out",
)
@click.option("--no-plot", is_flag=True, help="do not draw utilization.png")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--quiet", is_flag=True, help="no progress bar")
def run(
    scenario: str | None,
    out: str | None,
    sets: tuple[str, ...],
    fmt: str,
    no_plot: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Simulate SCENARIO (a YAML file; the embedded default scenario when omitted)."""
    from clustersim.api import simulate, write_results
    from clustersim.config import load_scenario

    try:
        sc = load_scenario(scenario)
        if sets:
            sc = sc.with_overrides(_parse_sets(sets))
        if not as_json:
            src = scenario or "embedded default scenario (bundled Philly sample)"
            click.echo(f"clustersim {__version__}: {sc.name} from {src}")
        try:
            result = simulate(sc, progress=not quiet)
        except ClusterSimError as exc:
            partial = getattr(exc, "partial", None)
            if out and partial is not None:
                partial.summary["error"] = str(exc)
                write_results(partial, out, fmt)
                click.echo(f"partial results up to the error written to {out}", err=True)
            raise
        if out:
            write_results(result, out, fmt)
            if not no_plot:
                from clustersim.plots import plot_utilization

                plot_utilization(out)
    except ClusterSimError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
    else:
        _print_summary(result.summary)
        if out:
            click.echo(
                f"results in {out}/ (jobs.{fmt}, utilization.{fmt}, summary.json, "
                "config.yaml" + ("" if no_plot else ", utilization.png") + ")"
            )


@main.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False))
def plot(results: str) -> None:
    """Draw the figures of a results folder written by ``run --out``."""
    from clustersim.plots import plot_utilization

    try:
        path = plot_utilization(results)
    except (ClusterSimError, FileNotFoundError) as exc:
        _fail(exc)
        return
    click.echo(f"wrote {path}")


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "philly", "openb"]),
    default="csv",
    show_default=True,
)
@click.option("--virtual-cluster", "vcs", multiple=True, help="philly: keep these VCs")
def trace(path: str, fmt: str, vcs: tuple[str, ...]) -> None:
    """Check a trace file and print its statistics."""
    import numpy as np

    from clustersim.workload.loaders import load_csv, load_openb, load_philly

    try:
        if fmt == "csv":
            jobs, rep = load_csv(path)
        elif fmt == "philly":
            jobs, rep = load_philly(path, list(vcs) or None)
        else:
            jobs, rep = load_openb(path)
    except ClusterSimError as exc:
        _fail(exc)
        return
    click.echo(f"{path}: {rep.rows} rows, {len(jobs)} jobs kept, dropped {rep.dropped or 'none'}")
    if jobs:
        d = np.array([j.duration for j in jobs])
        g = np.array([j.gpu_demand for j in jobs])
        span = jobs[-1].submit_time - jobs[0].submit_time
        click.echo(
            f"  arrivals over {span / 86400:.2f} days; duration median {np.median(d):.0f} s,"
            f" mean {d.mean():.0f} s, max {d.max():.0f} s"
        )
        sizes, counts = np.unique([j.num_gpus for j in jobs], return_counts=True)
        click.echo(
            "  devices per job: "
            + ", ".join(f"{s}:{c}" for s, c in zip(sizes, counts, strict=True))
        )
        click.echo(
            f"  device-hours {float((d * g).sum()) / 3600:,.1f}; mean demand "
            f"{float((d * g).sum()) / max(span, 1):,.1f} devices"
        )


@main.command(name="list")
def list_() -> None:
    """List registered schedulers, placement policies and devices."""
    from clustersim.hardware import device_names
    from clustersim.schedulers.placement import PLACEMENTS
    from clustersim.schedulers.registry import scheduler_names

    try:
        click.echo("schedulers: " + ", ".join(scheduler_names()))
    except ClusterSimError as exc:
        _fail(exc)
    click.echo("placements: " + ", ".join(sorted(PLACEMENTS)))
    click.echo("devices:    " + ", ".join(device_names()))


if __name__ == "__main__":  # pragma: no cover
    main()
