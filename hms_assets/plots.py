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


def metric_panels_markdown(
    labels: list[str], panels: list[tuple[str, list[float], float | None]], *, title: str, highlight: list[bool] | None = None,
) -> str:
    """One panel of horizontal bars per metric (title, values, a bound drawn dashed), the same labels in
    each, side by side: several figures of the same models read at a glance."""
    colors = ["#4f46e5" if h else "#9ca3af" for h in (highlight or [True] * len(labels))][::-1]
    height = 0.4 * max(len(labels), 2) + 1.4
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.07 * max((len(x) for x in labels), default=0), height),
                             dpi=100, sharey=True)
    try:
        for ax, (name, values, bound) in zip(list(axes) if len(panels) > 1 else [axes], panels):
            ax.barh(labels[::-1], values[::-1], color=colors)
            if bound is not None:
                ax.axvline(bound, color="#dc2626", linestyle="--", linewidth=1)
            ax.set_title(name, fontsize=10)
            for y, value in enumerate(values[::-1]):
                ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
        fig.suptitle(title)
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
