"""What the kit's self-contained HTML reports share (the training report, debugger/report.py, and
the drift monitor's, monitor/report.py): matplotlib figures embedded as base64 PNGs, so a page
opens anywhere offline, and a table of facts."""
from __future__ import annotations

import base64
import html
import io


def figure(width: float = 9, height: float = 3.6):
    """A headless matplotlib figure: (pyplot, figure, axes). matplotlib loads only when a report
    is drawn, so importing a report module costs nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    return plt, fig, ax


def png_base64(plt, fig) -> str:
    """The figure as a base64 PNG for an <img src="data:image/png;base64,...">; closes it."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def fact_rows(facts: dict, key_cell: str = "td") -> str:
    """One escaped table row per fact: <tr><{key_cell}>key</{key_cell}><td>value</td></tr>."""
    return "\n".join(f"<tr><{key_cell}>{html.escape(str(k))}</{key_cell}>"
                     f"<td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
