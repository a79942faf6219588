"""Drift reports from the prediction log: live sketches per feature against the
version's reference profile, output drift against the window before, JSON or HTML.

The log is read column-pruned in Arrow batches and folded into sketches over the
reference's bins, so memory stays at one batch whatever the window holds.
"""

from __future__ import annotations

import html
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from zeroserve.monitor.drift import DriftThresholds, FeatureDrift, compare, histogram
from zeroserve.monitor.profile import Profile, Window, numeric_profile
from zeroserve.monitor.query import batches
from zeroserve.registry.store import ArtifactStore
from zeroserve.sketch import BinnedSketch, CategoryCounts, Sketch

THREADS = 4


def _numpy(column: Any) -> np.ndarray[Any, Any]:
    return np.asarray(column.to_numpy(zero_copy_only=False))


def fold(window: Window, prefix: str, store: ArtifactStore, endpoint: str, **where: Any) -> int:
    """Add the logged columns ``<prefix><name>`` to ``window``'s sketches; returns rows."""
    names = list(window.sketches)
    wanted = [f"{prefix}{n}" for n in names]
    rows = 0
    with ThreadPoolExecutor(THREADS) as pool:
        for batch in batches(store, endpoint, columns=wanted, **where):
            rows += batch.num_rows
            present = set(batch.schema.names)

            def add(name: str, batch: Any = batch, present: set[str] = present) -> None:
                col = f"{prefix}{name}"
                if col in present:
                    window.sketches[name].add(_numpy(batch.column(col)))

            list(pool.map(add, names))
    return rows


def live_inputs(reference: Profile, store: ArtifactStore, endpoint: str, **where: Any) -> Profile:
    live = reference.live()
    live.rows = fold(live.inputs, "in_", store, endpoint, **where)
    return live


def _output_window(store: ArtifactStore, endpoint: str, **where: Any) -> Window:
    """The reference window's outputs as a profile: quantile bins for scores."""
    scores: list[np.ndarray[Any, Any]] = []
    labels = CategoryCounts()
    for batch in batches(store, endpoint, columns=["score", "label"], **where):
        if "score" in batch.schema.names:
            scores.append(_numpy(batch.column("score")).astype(np.float64))
        if "label" in batch.schema.names:
            labels.add(_numpy(batch.column("label")))
    sketches: dict[str, Sketch] = {}
    if scores:
        sketches["score"] = numeric_profile(np.concatenate(scores))
    if labels.count:
        sketches["label"] = labels
    return Window(sketches)


def _empty(sketch: Sketch) -> Sketch:
    assert isinstance(sketch, BinnedSketch | CategoryCounts)
    return sketch.empty_like()


def drift_report(
    reference: Profile,
    store: ArtifactStore,
    endpoint: str,
    *,
    variant: str | None,
    since_ts: float,
    until_ts: float,
    thresholds: DriftThresholds | None = None,
) -> dict[str, Any]:
    """Input drift against the reference profile and output drift against the window
    of the same length before ``since_ts``."""
    t = thresholds or DriftThresholds()
    where = {"variant": variant, "since_ts": since_ts, "until_ts": until_ts}
    live = live_inputs(reference, store, endpoint, **where)
    features = compare(reference.inputs, live.inputs, t)
    span = until_ts - since_ts
    before = {"variant": variant, "since_ts": since_ts - span, "until_ts": since_ts}
    out_ref = (
        reference.outputs
        if reference.outputs.sketches
        else _output_window(store, endpoint, **before)
    )
    out_live = Window({k: _empty(s) for k, s in out_ref.sketches.items()})
    fold(out_live, "", store, endpoint, **where)
    outputs = compare(out_ref, out_live, t) if out_ref.sketches else []
    for result in [*features, *outputs]:
        if result.drifted:
            src = reference.inputs if result in features else out_ref
            dst = live.inputs if result in features else out_live
            result.hist = histogram(src.sketches[result.feature], dst.sketches[result.feature])
    return {
        "endpoint": endpoint,
        "variant": variant,
        "since": since_ts,
        "until": until_ts,
        "rows": live.rows,
        "reference_rows": reference.rows,
        "thresholds": {
            "wasserstein": t.wasserstein,
            "jensen_shannon": t.jensen_shannon,
            "alpha": t.alpha,
        },
        "drifted": [r.feature for r in features if r.drifted],
        "features": [r.to_dict(with_hist=r.drifted) for r in features],
        "output_reference": "profile" if reference.outputs.sketches else "previous window",
        "outputs": [r.to_dict(with_hist=r.drifted) for r in outputs],
    }


def _svg(hist: dict[str, Any], width: int = 360, height: int = 120) -> str:
    ref, live = hist.get("reference", []), hist.get("live", [])
    if not ref:
        return ""
    top = max([*ref, *live, 1e-12])
    n = len(ref)
    bar = width / n
    parts = [
        f'<svg width="{width}" height="{height + 16}" role="img" aria-label="reference vs live">'
    ]
    for i, (r, c) in enumerate(zip(ref, live, strict=True)):
        for j, (value, colour) in enumerate(((r, "#9aa5b1"), (c, "#d9534f"))):
            h = height * value / top
            x = i * bar + j * bar / 2
            parts.append(
                f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar / 2 - 1:.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
    edges = hist.get("edges")
    if edges:
        parts.append(f'<text x="0" y="{height + 12}" font-size="10">{edges[0]:.3g}</text>')
        parts.append(
            f'<text x="{width}" y="{height + 12}" font-size="10" '
            f'text-anchor="end">{edges[-1]:.3g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _row(r: dict[str, Any]) -> str:
    def num(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"

    flag = "drift" if r["drifted"] else ""
    return (
        f"<tr class='{flag}'><td>{html.escape(r['feature'])}</td><td>{r['method']}</td>"
        f"<td>{num(r['score'])}</td><td>{num(r['threshold'])}</td><td>{num(r.get('psi'))}</td>"
        f"<td>{num(r['q_value'])}</td><td>{r['n_live']}</td>"
        f"<td>{'yes' if r['drifted'] else ''}</td></tr>"
    )


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: summary, a table per features and outputs, and a
    reference-vs-live histogram (inline SVG) for each drifting column."""
    title = f"Drift report: {html.escape(report['endpoint'])}"
    plots = []
    for r in [*report["features"], *report["outputs"]]:
        if r.get("hist"):
            plots.append(
                f"<figure><figcaption>{html.escape(r['feature'])}</figcaption>{_svg(r['hist'])}</figure>"
            )
    cells = ("feature", "method", "score", "threshold", "PSI", "q", "rows", "drift")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "td:first-child{text-align:left}tr.drift{background:#fdecea}"
        "figure{display:inline-block;margin:1em}</style></head><body>"
        f"<h1>{title}</h1><p>{report['rows']} live rows, "
        f"{len(report['drifted'])} of {len(report['features'])} features drifted "
        f"(grey: reference, red: live).</p>{''.join(plots)}"
        f"<h2>Inputs</h2><table>{head}{''.join(_row(r) for r in report['features'])}</table>"
        f"<h2>Outputs (against the {html.escape(report['output_reference'])})</h2>"
        f"<table>{head}{''.join(_row(r) for r in report['outputs'])}</table></body></html>"
    )


def drifted_features(results: list[FeatureDrift]) -> tuple[str, ...]:
    return tuple(r.feature for r in results if r.drifted)
