"""The monitor's HTML report: one self-contained page (plots embedded as PNGs) with the verdict
of every check and the window's distributions drawn over the baseline's."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from artifact.baseline import QUANTILES, STATISTICS
from monitor.profile import Check
from util.html_report import fact_rows, figure, png_base64


def plot_statistic(check: Check, quantiles: list[float]) -> str:
    """The window's CDF over the baseline's."""
    plt, fig, ax = figure(4.6, 2.8)
    ax.plot(quantiles, QUANTILES, label="training (validation images)", color="tab:blue")
    window = np.sort(check.window)
    ax.step(window, np.arange(1, len(window) + 1) / len(window), where="post",
            label="window", color="tab:red" if check.violated else "tab:green")
    ax.set_title(check.feature_name, fontsize=10)
    ax.set_ylabel("share of images at or below", fontsize=8)
    ax.legend(fontsize=7)
    return png_base64(plt, fig)


def plot_classes(check: Check, baseline: dict) -> str:
    plt, fig, ax = figure()
    observed = np.array(check.window, dtype=float)
    shares, classes = np.array(baseline["class_shares"]), baseline["classes"]
    order = np.argsort(-np.abs(observed / max(observed.sum(), 1) - shares))[:30]
    x = np.arange(len(order))
    ax.bar(x - 0.2, shares[order], 0.4, label="training (validation images)", color="tab:blue")
    ax.bar(x + 0.2, observed[order] / max(observed.sum(), 1), 0.4, label="window",
           color="tab:red" if check.violated else "tab:green")
    ax.set_xticks(x, [classes[i] for i in order], rotation=90, fontsize=7)
    ax.set_ylabel("share of predictions")
    ax.set_title("predicted classes (the most changed first)", fontsize=10)
    ax.legend(fontsize=7)
    return png_base64(plt, fig)


def write(path: Path, *, checks: list[Check], baseline: dict, facts: dict) -> None:
    plots = []
    for check in checks:
        if check.feature_name == "predicted_class":
            image = plot_classes(check, baseline)
        else:
            image = plot_statistic(check, baseline["quantiles"][check.feature_name])
        plots.append(f'<figure><img id="plot-{check.feature_name}" alt="{check.feature_name}" '
                     f'src="data:image/png;base64,{image}" onload="loaded()"></figure>')
    rows = "".join(
        f'<tr class="{"violation" if c.violated else "ok"}"><td>{html.escape(c.feature_name)}</td>'
        f'<td>{"VIOLATION" if c.violated else "ok"}</td><td>{c.statistic:.4g}</td>'
        f'<td>{c.threshold:.4g}</td><td>{html.escape(c.description)}</td></tr>' for c in checks)
    violated = sum(c.violated for c in checks)
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Image drift report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}}
tr.violation td{{background:#fde2e2}} figure{{display:inline-block;margin:4px}}</style>
<script>let plots = 0; function loaded() {{
  document.body.dataset.plotsLoaded = ++plots; }}</script></head>
<body data-plots-loaded="0">
<h1>Image drift: {violated} violation{"" if violated == 1 else "s"} in {len(checks)} checks</h1>
<table>{fact_rows(facts, key_cell="th")}</table>
<h2>Checks</h2>
<p>Each number's distribution in the window against the validation images' (two-sample
Kolmogorov-Smirnov distance), and the predicted classes' shares (chi-square); a check fails when
its statistic passes the threshold of a test at significance {facts.get("significance")}.
What each number is: {html.escape("; ".join(f"{k}: {v}" for k, v in STATISTICS.items()))}.</p>
<table><tr><th>check</th><th>verdict</th><th>statistic</th><th>threshold</th><th>what moved</th></tr>
{rows}</table>
<h2>Distributions</h2>
{"".join(plots)}
</body></html>
""")
