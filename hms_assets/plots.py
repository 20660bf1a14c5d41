"""Small charts for the Dagster UI: PNGs inlined in markdown metadata."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bar_chart_markdown(counts: list[tuple[str, int]], *, title: str, xlabel: str = "memories") -> str:
    labels = [label for label, _ in counts][::-1]
    values = [value for _, value in counts][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(len(counts), 2) + 1), dpi=100)
    try:
        ax.barh(labels, values, color="#4f46e5")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value}", va="center")
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


def scores_chart_markdown(scores: list[tuple[str, float]], *, highlight: list[bool], title: str, xlabel: str) -> str:
    """Horizontal bars of scores between 0 and 1; highlighted bars (adapters) stand out from the rest (base models)."""
    labels = [label for label, _ in scores][::-1]
    values = [value for _, value in scores][::-1]
    colors = ["#4f46e5" if h else "#9ca3af" for h in highlight][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(scores), 2) + 1), dpi=100)
    try:
        ax.barh(labels, values, color=colors)
        ax.set_xlim(0, 1.1)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.2f}", va="center")
        fig.tight_layout()
        return _markdown_image(fig, title)
    finally:
        plt.close(fig)
