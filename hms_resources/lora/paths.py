"""Where the LoRA files live under the HMS home, and the champions file the context resource reads:
kept apart from training so the query path never imports torch, transformers or peft."""

from __future__ import annotations

from pathlib import Path

from hms_resources.common.files import read_json

LORA_DIR = "lora"
CHAMPIONS_FILE = "champions.json"
"""The champion adapter of every approved set, written by `adapters.publish_champions`."""


def lora_dir(home: Path) -> Path:
    return Path(home) / LORA_DIR


def load_champions(home: Path) -> list[dict]:
    return read_json(lora_dir(home) / CHAMPIONS_FILE, [])
