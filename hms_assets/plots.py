"""Small charts for the Dagster UI: PNGs inlined in markdown metadata."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bar_chart_markdown(
    counts: list[tuple[str, float]], *, title: str, xlabel: str = "memories", highlight: list[bool] | None = None,
    xmax: float | None = None, value_format: str = "{}",
) -> str:
    """Horizontal bars, first on top; with `highlight`, the bars it marks stand out from the others."""
    labels = [label for label, _ in counts][::-1]
    values = [value for _, value in counts][::-1]
    colors = ["#4f46e5" if h else "#9ca3af" for h in (highlight or [True] * len(counts))][::-1]
    width = max(6.0, 5.0 + 0.075 * max((len(label) for label in labels), default=0))
    fig, ax = plt.subplots(figsize=(width, 0.4 * max(len(counts), 2) + 1), dpi=100)
    try:
        ax.barh(labels, values, color=colors)
        if xmax is not None:
            ax.set_xlim(0, xmax)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for y, value in enumerate(values):
            ax.text(value, y, " " + value_format.format(value), va="center")
        fig.tight_layout()
        return _markdown_image(fig, title)
    finally:
        plt.close(fig)


def histogram_markdown(values: list[int], *, title: str, xlabel: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    try:
        if values:
            bins = range(min(values), max(values) + 2)
            ax.hist(values, bins=bins, color="#0d9488", align="left", rwidth=0.9)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        fig.tight_layout()
        return _markdown_image(fig, title)
    finally:
        plt.close(fig)


def _markdown_image(fig, title: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"![{title}](data:image/png;base64,{encoded})"
