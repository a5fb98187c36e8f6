"""One self-contained HTML report per training run (output/data/training_report.html): loss per
step, accuracy per epoch, system utilisation, step-time breakdown and the rules' verdicts. The
plots are PNGs embedded in the page, so the file opens anywhere, offline."""
from __future__ import annotations

import html
from pathlib import Path

from debugger.rules import ISSUES, Verdict
from util.html_report import fact_rows, figure, png_base64


def plot_loss(steps: list[dict], history: list[dict]) -> str | None:
    if not steps and not history:
        return None
    plt, fig, ax = figure()
    if steps:
        ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], lw=0.8, alpha=0.7,
                label="train (per step)")
        last_step = {}
        for s in steps:
            last_step[s["epoch"]] = s["step"]
        points = [(last_step[h["epoch"]], h) for h in history if h["epoch"] in last_step]
        x_label = "step"
    else:
        points = [(h["epoch"], h) for h in history]
        x_label = "epoch"
    if points:
        ax.plot([x for x, _ in points], [h["train_loss"] for _, h in points], "o-",
                label="train (epoch mean)")
        ax.plot([x for x, _ in points], [h["valid_loss"] for _, h in points], "s-",
                label="validation (epoch)")
    ax.set(title="Loss", xlabel=x_label, ylabel="cross-entropy")
    ax.legend()
    return png_base64(plt, fig)


def plot_accuracy(history: list[dict]) -> str | None:
    if not history:
        return None
    plt, fig, ax = figure()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_acc"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_acc"] for h in history], "s-", label="validation")
    ax.set(title="Accuracy per epoch", xlabel="epoch", ylim=(0, 1.02))
    ax.legend()
    return png_base64(plt, fig)


def plot_system(system: list[dict]) -> str | None:
    if not system:
        return None
    plt, fig, ax = figure()
    t = [s["t"] for s in system]
    for key in system[0]:
        if key.endswith("_percent"):
            ax.plot(t, [s[key] for s in system], label=key.replace("_percent", " %"))
    ax.set(title="System utilisation", xlabel="seconds since training started", ylabel="%",
           ylim=(0, 102))
    right = ax.twinx()
    right.plot(t, [s["process_rss_mb"] for s in system], "k--", lw=0.8, label="process RSS (MB)")
    right.set_ylabel("MB")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    return png_base64(plt, fig)


def plot_step_times(steps: list[dict]) -> str | None:
    if not steps:
        return None
    plt, fig, ax = figure()
    x = [s["step"] for s in steps]
    wait = [s["wait_s"] * 1000 for s in steps]
    compute = [s["compute_s"] * 1000 for s in steps]
    ax.bar(x, wait, width=1.0, label="waiting for data")
    ax.bar(x, compute, width=1.0, bottom=wait, label="compute (forward, backward, step)")
    ax.set(title="Step time breakdown", xlabel="step", ylabel="ms")
    ax.legend()
    return png_base64(plt, fig)


def _verdict_rows(verdicts: list[Verdict]) -> str:
    rows = []
    for v in verdicts:
        css = "issue" if v.status == ISSUES else v.status.lower()
        step = "" if v.step is None else str(v.step)
        rows.append(f'<tr class="{css}"><td>{html.escape(v.rule)}</td>'
                    f"<td>{html.escape(v.status)}</td><td>{v.issues}</td><td>{step}</td>"
                    f"<td>{html.escape(v.why)}</td></tr>")
    return "\n".join(rows)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
tr.issue td { background: #fde2e1; }  tr.nodata td, tr.error td { color: #777; }
img { max-width: 100%; display: block; margin: 1em 0; }
.summary td:first-child { font-weight: 600; width: 14em; }
"""

# Counts the plots the browser decoded: a headless browser's DOM then shows data-plots-loaded.
COUNT_PLOTS = """
window.addEventListener("load", () => {
  const plots = [...document.querySelectorAll("img.plot")];
  document.body.dataset.plotsLoaded = plots.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


def write(path: Path, *, title: str, facts: dict, history: list[dict], profile: dict,
          debugger_verdicts: list[Verdict], profiler_verdicts: list[Verdict],
          notes: list[str] = ()) -> Path:
    steps, system = profile.get("steps", []), profile.get("system", [])
    plots = [
        ("plot-loss", "Training and validation loss", plot_loss(steps, history)),
        ("plot-accuracy", "Accuracy per epoch", plot_accuracy(history)),
        ("plot-system", "System utilisation", plot_system(system)),
        ("plot-steps", "Step time breakdown", plot_step_times(steps)),
    ]
    images = "\n".join(
        f'<img class="plot" id="{pid}" alt="{alt}" src="data:image/png;base64,{data}">'
        for pid, alt, data in plots if data
    )
    debug_section = (f"<table><tr><th>rule</th><th>status</th><th>issues</th><th>step</th>"
                     f"<th>why</th></tr>{_verdict_rows(debugger_verdicts)}</table>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style><script>{COUNT_PLOTS}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<table class="summary">{fact_rows(facts)}</table>
{"".join(f"<p>{html.escape(n)}</p>" for n in notes)}
<h2>Debugger rules</h2>
{debug_section}
<h2>Profiler rules</h2>
<table><tr><th>rule</th><th>status</th><th>issues</th><th>step</th><th>why</th></tr>
{_verdict_rows(profiler_verdicts)}</table>
<h2>Plots</h2>
{images}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
