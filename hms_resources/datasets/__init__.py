"""Data HMS ships: the sample events, the retrieval-eval conversations, and the generators behind them."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_EVENTS = DATA_DIR / "sample_events.jsonl"
