"""Data HMS ships: the sample events, the retrieval-eval conversations, and the generators behind them."""

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_EVENTS = DATA_DIR / "sample_events.jsonl"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@cache
def read_templates(name: str) -> Any:
    """`templates/<name>.json`: the generators' word pools and wordings, kept as data so they read as text."""
    with open(TEMPLATES_DIR / f"{name}.json", encoding="utf-8") as stream:
        return json.load(stream)
