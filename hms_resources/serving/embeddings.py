"""`POST /v1/embeddings`, OpenAI's embeddings API over the service's own embedder: the vectors HMS
stores for memories (the full-precision document model), so a client can compare its texts with them
or test what HMS would find similar. Bounded per call: `MAX_INPUTS` texts of `MAX_INPUT_BYTES` each."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from hms_resources.semantic.embedder import Embedder
from hms_resources.serving.errors import ApiError, bad_request, not_found
from hms_resources.serving.tenants import Principal

MAX_INPUTS = 256
"""Texts one call may embed: a few seconds of a CPU at most (each is truncated to the model's window)."""

MAX_INPUT_BYTES = 16 * 1024
"""UTF-8 bytes of one text: the model reads its first 256 tokens, about 1 KiB of English."""

ALIAS = "hms-embedding"
"""A model name that always means the configured embedder, whatever model that is."""


def model_name(embedder: Embedder) -> str:
    """The configured model's name as answered (`all-MiniLM-L6-v2` by default), without the digest of its files."""
    return embedder.identity.split("@", 1)[0]


def accepted_names(embedder: Embedder) -> set[str]:
    """The names a call may ask for: the model's, its hub id's last part (and the sentence-transformers
    id of it), and `ALIAS`."""
    name = model_name(embedder)
    short = name.rstrip("/").rsplit("/", 1)[-1]
    return {name, short, f"sentence-transformers/{short}", ALIAS}


def checked_inputs(value: Any) -> list[str]:
    """One text or a list of texts, each non-empty and within the bounds: 413 over them, naming the input."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise bad_request("input must be a non-empty string or a non-empty list of strings", "input")
    if len(texts) > MAX_INPUTS:
        raise ApiError(413, "too_large", f"input holds {len(texts)} texts, over the limit of {MAX_INPUTS} per call", "input")
    for i, text in enumerate(texts):
        field = "input" if isinstance(value, str) else f"input.{i}"
        if not isinstance(text, str) or not text:
            raise bad_request(f"{field} must be a non-empty string", field)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_INPUT_BYTES:
            raise ApiError(413, "too_large", f"{field} is {size} bytes, over the limit of {MAX_INPUT_BYTES} bytes", field)
    return texts


def encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """A vector as OpenAI sends it: a list of floats, or base64 of its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()


def embeddings(
    embedder: Embedder, principal: Principal, texts: Any, model: Any, *, encoding_format: str = "float", dimensions: int | None = None
) -> dict[str, Any]:
    """The `texts`' unit vectors in OpenAI's list shape, with the tokens the model read (each text's
    tokens, special ones included, up to the model's window) as usage."""
    principal.require("read")
    if model not in accepted_names(embedder):
        known = ", ".join(sorted(accepted_names(embedder)))
        raise not_found(f"no embedding model {str(model)[:100]!r}: this service embeds with {known}", "model")
    if encoding_format not in ("float", "base64"):
        raise bad_request("encoding_format must be float or base64", "encoding_format")
    texts = checked_inputs(texts)
    if dimensions is not None and dimensions != embedder.dimension:
        raise bad_request(f"dimensions must be {embedder.dimension} (the model's, which it cannot shorten), or left out", "dimensions")
    vectors = embedder.encode(texts)
    window = embedder.max_tokens
    read = embedder.load().tokenizer(texts, add_special_tokens=True, truncation=True, max_length=window)["input_ids"]
    tokens = sum(len(ids) for ids in read)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(v, encoding_format)} for i, v in enumerate(vectors)],
        "model": model_name(embedder),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
