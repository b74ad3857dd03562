"""The ``clustersim`` command line (click). It parses arguments and calls the API; no logic here.

Commands: ``run`` (one scenario), ``sweep`` (a grid of scenarios over seeds,
resumable, on local processes, Dask or Ray), ``results`` (the table of a
sweep), ``plot`` (figures from a results or sweep folder), ``report`` (one
self-contained HTML page), ``timeline`` (Perfetto trace of a run), ``trace``
(inspect a trace file), ``list`` (registered schedulers, placements,
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
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["png", "svg", "pdf"]),
    help="figure format, repeatable (default: png and svg)",
)
@click.option(
    "--color-by",
    type=click.Choice(["job", "state"]),
    default="job",
    show_default=True,
    help="occupancy heatmap colours",
)
@click.option("--out", "out", type=click.Path(file_okay=False), help="folder (default DIR/plots)")
def plot(results: str, formats: tuple[str, ...], color_by: str, out: str | None) -> None:
    """Draw the figures of a results folder (``run --out``) or a sweep folder (``sweep --out``)."""
    from clustersim.plots import FIGURE_FORMATS, plot_sweep, plot_utilization
    from clustersim.results import is_sweep

    try:
        if not is_sweep(results):
            click.echo(f"wrote {plot_utilization(results)}")
        figs = plot_sweep(results, out, formats or FIGURE_FORMATS, color_by=color_by)
    except (ClusterSimError, FileNotFoundError) as exc:
        _fail(exc)
        return
    for f in figs:
        click.echo(f"wrote {', '.join(str(x) for x in f.files)}  ({f.title})")


@main.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="sweep folder")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="local, local:N, serial, dask, dask://HOST:PORT, ray, ray://HOST:PORT",
)
@click.option("--workers", type=int, default=None, help="local processes (default: all cores)")
@click.option("--force", is_flag=True, help="recompute points that already have results")
@click.option("--dry-run", is_flag=True, help="list the points and what would run; run nothing")
@click.option("--quiet", is_flag=True, help="no progress bar")
def sweep(
    sweep_file: str,
    out: str,
    executor: str,
    workers: int | None,
    force: bool,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Run every point of SWEEP.yaml into --out; re-running resumes (finished points are kept)."""
    from pathlib import Path

    from clustersim.sweep import is_finished, load_sweep, run_sweep

    try:
        sw = load_sweep(sweep_file)
        done = sum(1 for pt in sw.points if is_finished(Path(out), pt))
        click.echo(
            f"sweep {sw.spec.name}: {len(sw.points)} points"
            f" ({', '.join(sw.swept) or 'no swept keys'}; seeds {sw.spec.seed_list()}),"
            f" {done} already finished in {out}"
        )
        if dry_run:
            for pt in sw.points:
                state = "done" if is_finished(Path(out), pt) else "to run"
                params = ", ".join(f"{k}={v}" for k, v in pt.params.items())
                click.echo(f"  {pt.index:>5}  {pt.folder}  {state:<6}  {params}")
            return
        rep = run_sweep(
            sw,
            out,
            executor=executor,
            workers=workers,
            force=force,
            progress=not quiet and sys.stderr.isatty(),
        )
    except ClusterSimError as exc:
        _fail(exc)
        return
    click.echo(
        f"{rep.computed} computed, {rep.reused} reused, {rep.failed} failed on {rep.executor}"
        f" in {rep.wall_s:.1f} s; table {rep.table}"
    )
    for idx, err in rep.failures[:10]:
        click.echo(f"  point {idx} failed: {err}", err=True)
    if rep.failed:
        click.echo(
            f"{rep.failed} point(s) failed (details in {out}/failed/); re-run to retry them",
            err=True,
        )
        sys.exit(1)
    click.echo(f"next: clustersim results {out} | clustersim plot {out} | clustersim report {out}")


@main.command()
@click.argument("folder", type=click.Path(exists=True))
@click.option("--columns", help="comma-separated columns (default: parameters + key metrics)")
@click.option("--all", "all_cols", is_flag=True, help="every column")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
def results(folder: str, columns: str | None, all_cols: bool, fmt: str) -> None:
    """Print the table of runs of a sweep folder (or of one results folder)."""
    from clustersim.results import default_columns, format_table, load_table

    try:
        table = load_table(folder)
        cols = (
            table.column_names
            if all_cols
            else ([c.strip() for c in columns.split(",")] if columns else default_columns(table))
        )
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise ClusterSimError(
                f"unknown column(s) {', '.join(missing)}; available: "
                + ", ".join(table.column_names)
            )
        sel = table.select(cols)
        if fmt == "table":
            click.echo(format_table(sel, cols))
        elif fmt == "json":
            click.echo(json.dumps(sel.to_pylist(), indent=1, default=str))
        else:
            import csv
            import io

            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(cols)
            for row in sel.to_pylist():
                w.writerow(["" if row[c] is None else row[c] for c in cols])
            click.echo(buf.getvalue(), nl=False)
    except ClusterSimError as exc:
        _fail(exc)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), help="default FOLDER/report.html")
@click.option("--replot", is_flag=True, help="redraw the figures even if they are up to date")
def report(folder: str, out: str | None, replot: bool) -> None:
    """Write one self-contained HTML page: summary, figures, runs table, configs."""
    from clustersim.report import write_report

    try:
        path = write_report(folder, out, replot=replot)
    except ClusterSimError as exc:
        _fail(exc)
        return
    click.echo(f"wrote {path} (open it in a browser; it needs no network)")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--by",
    type=click.Choice(["device", "job"]),
    default="device",
    show_default=True,
    help="one track per device, or jobs packed into lanes",
)
@click.option("--point", type=int, default=None, help="for a sweep folder: which point")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="default RUN/timeline-BY.json (sweep: DIR/timelines/point-N-BY.json)",
)
def timeline(folder: str, by: str, point: int | None, out: str | None) -> None:
    """Export a run's job lifecycles as Chrome/Perfetto trace-event JSON (ui.perfetto.dev)."""
    from pathlib import Path

    from clustersim.results import is_sweep, runs
    from clustersim.timeline import export_trace

    try:
        run_dir = folder
        if is_sweep(folder):
            refs = runs(folder)
            if point is None:
                raise ClusterSimError(
                    f"{folder} is a sweep folder: choose a run with --point N (0..{len(refs) - 1})"
                )
            match = [r for r in refs if r.point == point]
            if not match or match[0].status != "ok":
                raise ClusterSimError(f"point {point}: no finished run in {folder}")
            run_dir = str(match[0].path)
            if out is None:  # keep content-addressed run folders untouched
                out = str(Path(folder) / "timelines" / f"point-{point}-{by}.json")
        path = export_trace(run_dir, out, by=by)
    except ClusterSimError as exc:
        _fail(exc)
        return
    click.echo(f"wrote {path} (open in https://ui.perfetto.dev or chrome://tracing)")


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
