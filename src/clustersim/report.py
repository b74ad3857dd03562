"""One self-contained HTML report of a sweep (or of one results folder).

:func:`write_report` writes ``DIR/report.html``: the sweep's summary per
condition (mean and Student-t 95 % CI across seeds), every figure of
:func:`clustersim.plots.plot_sweep` embedded as a base64 PNG, the table of all
runs, the failed points with their tracebacks, the sweep file and every
point's resolved configuration. Nothing is loaded from the network (no fonts,
scripts or styles from elsewhere); the page opens from disk in any browser.
A small inline script marks each figure once the browser has decoded it
(``data-rendered``) and prints "N of N figures shown", which the tests read
from headless Chromium.

Figures are redrawn when ``plots/figures.json`` is missing or older than the
newest result (``runs/``, ``failed/``, ``sweep.json``).
"""

from __future__ import annotations

import base64
import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from clustersim import __version__
from clustersim.errors import ConfigError

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1a1a1a; background: #fff; line-height: 1.45; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #0072B2; padding-bottom: 4px; margin-top: 2em; }
.meta { color: #555; font-size: 0.92em; }
.status { display: inline-block; padding: 2px 8px; border-radius: 3px; background: #eef5fb; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f6f9; position: sticky; top: 0; }
td.text, th.text { text-align: left; }
tr.failed td { background: #fdecea; }
tr.pending td { color: #888; }
.scroll { overflow: auto; max-height: 560px; border: 1px solid #eee; }
figure { margin: 24px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; margin-top: 4px; }
pre { background: #f7f7f7; padding: 8px; overflow: auto; font-size: 0.8em; max-height: 420px; }
details { margin: 4px 0; }
summary { cursor: pointer; }
nav a { margin-right: 14px; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('figure img');
  var ok = 0;
  imgs.forEach(function (img) {
    var shown = img.complete && img.naturalWidth > 0;
    img.setAttribute('data-rendered', shown ? 'yes' : 'no');
    if (shown) { ok += 1; }
  });
  var s = document.getElementById('figure-status');
  if (s) { s.textContent = ok + ' of ' + imgs.length + ' figures shown'; }
  document.body.setAttribute('data-figures-rendered', ok + '/' + imgs.length);
});
"""

SUMMARY_METRICS = (
    "jobs_completed",
    "avg_jct_s",
    "p50_jct_s",
    "p99_jct_s",
    "avg_wait_s",
    "makespan_s",
    "gpu_utilization",
    "preemptions",
    "ettr",
    "availability",
)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _stamp(q: Path) -> float:
    try:
        return q.stat().st_mtime
    except OSError:
        return 0.0


def _figures(p: Path, replot: bool) -> list[dict[str, Any]]:
    from clustersim.plots import plot_sweep

    plots = p / "plots"
    fj = plots / "figures.json"
    newest = max(
        _stamp(q) for q in (p / "runs", p / "failed", p / "sweep.json", p / "summary.json")
    )
    if replot or not fj.is_file() or _stamp(fj) < newest:
        plot_sweep(p, plots, formats=("png", "svg"))
    data: list[dict[str, Any]] = json.loads(fj.read_text())
    return data


def _table_html(
    rows: list[dict[str, Any]],
    cols: list[str],
    row_class: str | None = None,
    text: set[str] | None = None,
) -> str:
    from clustersim.results import fmt_value

    text = text or set()
    head = "".join(f'<th class="{"text" if c in text else ""}">{_e(c)}</th>' for c in cols)
    body = []
    for r in rows:
        cls = f' class="{_e(r.get(row_class))}"' if row_class else ""
        cells = "".join(
            f'<td class="{"text" if c in text else ""}">{_e(fmt_value(r.get(c)))}</td>'
            for c in cols
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _conditions_html(rows: list[dict[str, Any]], by: list[str]) -> str:
    from clustersim.plots import metric_axis
    from clustersim.results import group_stats

    metrics = [m for m in SUMMARY_METRICS if any(isinstance(r.get(m), int | float) for r in rows)]
    if not metrics:
        return "<p>No numeric summary metrics.</p>"
    stats = {m: group_stats(rows, m, by) for m in metrics}
    first = stats[metrics[0]]
    head = ["condition", "runs"] + [metric_axis(m, [s.mean for s in stats[m]])[0] for m in metrics]
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"text" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for i, g in enumerate(first):
        out.append(f'<tr><td class="text">{_e(g.label)}</td><td>{g.n}</td>')
        for m in metrics:
            s = stats[m][i]
            _, div = metric_axis(m, [x.mean for x in stats[m]])
            if s.n == 0:
                cell = "-"
            elif s.n == 1 or s.ci_high == s.ci_low:
                cell = f"{s.mean / div:,.4g}"
            else:
                cell = f"{s.mean / div:,.4g} ± {(s.ci_high - s.mean) / div:,.2g}"
            out.append(f"<td>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    note = (
        "<p class='meta'>Mean across seeds ± half-width of the Student-t 95 % confidence "
        "interval; units as in the column headers.</p>"
    )
    return "".join(out) + note


def render_report(path: str | Path, replot: bool = False) -> str:
    """The report page of a sweep or results folder, as an HTML string."""
    from clustersim.results import (
        HOST_COLUMNS,
        build_rows,
        condition_keys,
        default_columns,
        is_sweep,
        read_manifest,
        rows_to_table,
    )

    p = Path(path)
    rows, info = build_rows(p)
    table = rows_to_table(rows, info)
    by = condition_keys(info["swept"])
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") == "failed"]
    pending = [r for r in rows if r.get("status") == "pending"]
    figures = _figures(p, replot) if ok else []
    versions = sorted({str(r.get("clustersim_version")) for r in ok if r.get("clustersim_version")})
    revs = sorted({str(r.get("git_rev")) for r in ok if r.get("git_rev")})
    execs = sorted({str(r.get("executor")) for r in ok if r.get("executor")})
    compute = sum(float(r.get("wall_s") or 0.0) for r in ok)
    title = f"clustersim report: {info['name']}"
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        "<p class='meta'>",
        f"{len(rows)} point(s): {len(ok)} ok, {len(failed)} failed, {len(pending)} pending"
        f" · swept: {_e(', '.join(info['swept']) or 'nothing (one run)')}"
        f" · clustersim {_e(', '.join(versions) or __version__)}"
        f" · git {_e(', '.join(revs) or 'unknown')}"
        f" · executor {_e(', '.join(execs) or '-')}"
        f" · compute {compute:,.1f} s"
        f" · generated {_e(datetime.now(UTC).isoformat(timespec='seconds'))}",
        "</p>",
        '<p><span class="status" id="figure-status">figures not yet checked</span></p>',
        "<nav><a href='#summary'>Summary</a><a href='#figures'>Figures</a>"
        "<a href='#runs'>Runs</a><a href='#failures'>Failures</a>"
        "<a href='#configs'>Configurations</a></nav>",
        "<h2 id='summary'>Summary per condition</h2>",
        "<div class='scroll'>",
        _conditions_html(ok, by) if ok else "<p>No finished runs yet.</p>",
        "</div>",
        "<h2 id='figures'>Figures</h2>",
    ]
    for f in figures:
        png = next((x for x in f["files"] if x.endswith(".png")), None)
        if png is None:
            continue
        b64 = base64.b64encode((p / "plots" / png).read_bytes()).decode()
        others = ", ".join(x for x in f["files"] if not x.endswith(".png"))
        parts.append(
            f"<figure id='fig-{_e(f['name'])}'><img alt='{_e(f['title'])}' "
            f"src='data:image/png;base64,{b64}'><figcaption><b>{_e(f['title'])}.</b> "
            f"{_e(f['caption'])} <span class='meta'>(also: plots/{_e(others)})</span>"
            "</figcaption></figure>"
        )
    if not figures:
        parts.append("<p>No figures (no finished runs).</p>")
    cols = [c for c in default_columns(table) if c not in HOST_COLUMNS] + ["run_id", "wall_s"]
    strings = [k for k in info["swept"] if any(isinstance(r.get(k), str) for r in rows)]
    text = {"status", "run_id", *strings}
    shown = [c for c in dict.fromkeys(cols) if c in table.column_names]
    parts += [
        f"<h2 id='runs'>Runs ({len(rows)})</h2>",
        "<p class='meta'>Every point of the sweep in point order; the full table with every "
        "parameter and metric is <code>results.parquet</code> "
        "(<code>clustersim results DIR</code>).</p>",
        "<div class='scroll'>",
        _table_html(rows, shown, "status", text),
        "</div>",
        f"<h2 id='failures'>Failures ({len(failed)})</h2>",
    ]
    if failed:
        for r in failed:
            tb = ""
            fpath = p / "failed" / f"{r['run_id']}.json"
            if fpath.is_file():
                tb = json.loads(fpath.read_text()).get("traceback", "")
            params = ", ".join(f"{k}={r.get(k)}" for k in [*info["swept"], "seed"] if k in r)
            parts.append(
                f"<details><summary>point {r['point']} ({_e(params)}): "
                f"{_e(r.get('error_type'))}: {_e(r.get('error'))}</summary><pre>{_e(tb)}</pre>"
                "</details>"
            )
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2 id='configs'>Configurations</h2>")
    if is_sweep(p):
        man = read_manifest(p)
        spec = yaml.safe_dump(man["spec"], sort_keys=False)
        parts.append("<h3>Sweep</h3><pre>" + _e(spec) + "</pre>")
        parts.append(
            "<h3>Base configuration (resolved)</h3><pre>"
            + _e(yaml.safe_dump(man["base_config"], sort_keys=False))
            + "</pre>"
        )
        parts.append("<h3>Every point (resolved)</h3>")
        for pt in man["points"]:
            params = ", ".join(f"{k}={v}" for k, v in pt["params"].items())
            parts.append(
                f"<details><summary>point {pt['point']} · {_e(params)} · run "
                f"{_e(pt['folder'])}</summary><pre>"
                + _e(yaml.safe_dump(pt["config"], sort_keys=False))
                + "</pre></details>"
            )
    elif (p / "config.yaml").is_file():
        parts.append("<pre>" + _e((p / "config.yaml").read_text()) + "</pre>")
    parts += [f"<script>{SCRIPT}</script>", "</main></body></html>"]
    return "\n".join(parts)


def write_report(path: str | Path, out: str | Path | None = None, replot: bool = False) -> Path:
    """Write ``report.html`` for a sweep or results folder; returns its path."""
    from clustersim.sweep import atomic_write

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{p}: no such folder")
    page = render_report(p, replot=replot)
    target = Path(out) if out is not None else p / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, page.encode("utf-8"))
    return target
