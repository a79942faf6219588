"""Advice as JSON and as a self-contained HTML page with a cost-versus-volume chart."""

from __future__ import annotations

import dataclasses
import html
import io
import math
from typing import Any

from zeroserve.cost.advisor import Advice, Crossover
from zeroserve.cost.estimators import fmt
from zeroserve.errors import MissingExtra

MAX_LINES = 9  # lines on the chart: the cheapest option of each target family, best first
MIN_PLOT_USD = 0.01  # log scale: smaller costs are drawn at one cent


def to_json(advice: Advice) -> dict[str, Any]:
    return dataclasses.asdict(advice)


def chart_lines(advice: Advice) -> list[str]:
    """Candidates to draw: the recommendation, then the cheapest of each other target."""
    seen: set[str] = set()
    chosen: list[str] = []
    by_id = {c.id: c for c in advice.curves}
    for e in advice.targets:
        if e.id in by_id and e.target not in seen:
            seen.add(e.target)
            chosen.append(e.id)
    return chosen[:MAX_LINES]


def chart_svg(advice: Advice) -> str:
    """Monthly cost against monthly requests, log-log, crossovers marked; an inline SVG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtra("matplotlib", "report") from exc

    ids = chart_lines(advice)
    curves = {c.id: c for c in advice.curves}
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 10})
    fig, ax = plt.subplots(figsize=(10, 6.2), dpi=100)
    colors = plt.get_cmap("tab10")
    for i, cid in enumerate(ids):
        c = curves[cid]
        ys = [math.nan if y is None else max(y, MIN_PLOT_USD) for y in c.monthly_usd]
        style = "-" if c.scales_to_zero else "--"
        width = 2.6 if cid == advice.recommendation else 1.6
        ax.plot(
            advice.grid,
            ys,
            style,
            color=colors(i % 10),
            linewidth=width,
            label=("★ " if cid == advice.recommendation else "") + c.name,
        )
    for k, x in enumerate(charted_crossovers(advice), start=1):
        ax.plot(
            [x.requests_per_month],
            [max(x.monthly_usd, MIN_PLOT_USD)],
            "o",
            markersize=7,
            markerfacecolor="white",
            markeredgecolor="black",
            zorder=5,
        )
        # Stagger the labels: crossovers with one always-on target share a height.
        ax.annotate(
            str(k),
            (x.requests_per_month, max(x.monthly_usd, MIN_PLOT_USD)),
            textcoords="offset points",
            xytext=(6, -14 - 9 * (k % 3)),
            fontsize=8,
        )
    volume = advice.profile["requests_per_month"]
    if volume > 0:
        ax.axvline(volume, color="grey", linestyle=":", linewidth=1.2)
        ax.annotate(
            "this workload",
            (volume, 1),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(4, -14),
            fontsize=9,
            color="dimgrey",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("requests per month")
    ax.set_ylabel(f"USD per month ({advice.hours_per_month:g} h)")
    ax.set_title("Monthly cost by target (solid: scales to zero, dashed: always on; ○ crossover)")
    ax.text(
        0.995,
        0.01,
        "costs under one cent drawn at one cent; gaps: infeasible at that volume",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=7.5,
        color="dimgrey",
    )
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.1)
    ax.legend(loc="upper left", fontsize=8.5, framealpha=0.9)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def charted_crossovers(advice: Advice) -> list[Crossover]:
    """Crossovers worth marking: with the recommendation, or with the cheapest always-on line."""
    ids = chart_lines(advice)
    always_on = next((e.id for e in advice.targets if e.id in ids and not e.scales_to_zero), None)
    return [
        x
        for x in advice.crossovers
        if x.scale_to_zero in ids
        and x.always_on in ids
        and (advice.recommendation in (x.scale_to_zero, x.always_on) or x.always_on == always_on)
    ]


_CSS = " ".join(
    [
        "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}",
        "h1{font-size:22px;margin-bottom:4px}",
        "h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}",
        ".summary{background:#f2f7ff;border-left:4px solid #2b6cb0;padding:10px 14px}",
        ".warn{background:#fff8e6;border-left:4px solid #d69e2e;padding:8px 14px;margin:6px 0}",
        "table{border-collapse:collapse;width:100%;font-size:13px}",
        "td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}",
        "th{background:#fafafa} td.num{text-align:right;white-space:nowrap}",
        ".no{color:#a00} .muted{color:#777} code{font-size:12px} details{margin:2px 0}",
        ".chart svg{width:100%;height:auto}",
    ]
)


def _e(value: object) -> str:
    return html.escape(str(value))


def render_html(advice: Advice) -> str:
    """A self-contained page: summary, chart, ranking, line items, crossovers, sources."""
    p = advice.profile
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>zeroserve cost report: {_e(p['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Where to serve <code>{_e(p['name'])}</code></h1>",
        f"<p class='muted'>catalog {_e(advice.catalog_version)}, computed {_e(advice.today)}, "
        f"{advice.hours_per_month:g} hours a month, "
        f"free tiers {'on' if advice.free_tier else 'off'}</p>",
        f"<p class='summary'>{_e(advice.summary)}</p>",
        *(f"<p class='warn'>{_e(w)}</p>" for w in advice.warnings),
    ]
    if advice.curves:
        parts += [
            "<h2>Monthly cost against monthly requests</h2>",
            f"<div class='chart'>{chart_svg(advice)}</div>",
        ]
        marked = charted_crossovers(advice)
        if marked:
            parts.append("<table><tr><th>#</th><th>crossover</th></tr>")
            parts += [
                f"<tr><td>{k}</td><td>{_e(x.text)}</td></tr>" for k, x in enumerate(marked, 1)
            ]
            parts.append("</table>")
    parts += [
        "<h2>Targets, cheapest first</h2>",
        "<table><tr><th>target</th><th>monthly</th><th>sizing</th><th>why not / notes</th></tr>",
    ]
    for e in advice.targets:
        usd = "refused" if e.monthly_usd is None else f"${e.monthly_usd:,.2f}"
        notes = "".join(f"<div class='no'>✗ {_e(r)}</div>" for r in e.reasons)
        notes += "".join(f"<div class='muted'>! {_e(w)}</div>" for w in e.warnings)
        items = "".join(
            f"<div><code>{_e(li.name)}: {_e(li.formula)}</code> "
            f"<span class='muted'>({_e(li.confidence)}, {_e(li.as_of)})</span></div>"
            for li in e.line_items
        )
        detail = (
            f"<details><summary>{_e(e.name)}</summary>{items}</details>" if items else _e(e.name)
        )
        mark = "" if e.feasible else " class='no'"
        parts.append(
            f"<tr><td{mark}>{detail}</td><td class='num'>{usd}</td>"
            f"<td>{_e(e.sizing)}</td><td>{notes}</td></tr>"
        )
    parts.append("</table>")
    if advice.changes:
        parts.append("<h2>When the answer changes</h2><ul>")
        parts += [f"<li>{_e(c.text)}</li>" for c in advice.changes]
        parts.append("</ul>")
    if advice.llm_break_even:
        parts.append("<h2>LLM: per-token API or your own GPU</h2><ul>")
        parts += [f"<li>{_e(b.text)}</li>" for b in advice.llm_break_even]
        parts.append("</ul>")
    if advice.crossovers:
        parts.append(
            "<h2>All crossovers</h2><table><tr><th>requests / month</th><th>busy hours</th>"
            "<th>crossover</th></tr>"
        )
        parts += [
            f"<tr><td class='num'>{fmt(round(x.requests_per_month))}</td>"
            f"<td class='num'>{x.busy_hours_per_month:,.0f}</td><td>{_e(x.text)}</td></tr>"
            for x in advice.crossovers
        ]
        parts.append("</table>")
    sources = sorted(
        {(li.source, li.as_of, li.confidence) for e in advice.targets for li in e.line_items}
    )
    parts.append(
        "<h2>Prices used</h2><table><tr><th>source</th><th>as of</th><th>confidence</th></tr>"
    )
    parts += [
        f"<tr><td><a href='{_e(s)}'>{_e(s)}</a></td><td>{_e(d)}</td><td>{_e(c)}</td></tr>"
        for s, d, c in sources
    ]
    parts.append("</table></body></html>")
    return "\n".join(parts)
