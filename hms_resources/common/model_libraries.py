"""The model libraries (transformers, sentence-transformers), imported under one process-wide lock:
transformers' lazy modules fail ("cannot import name 'AutoTokenizer'") when two threads import from
them at once, as the tokenizer, the embedder, the online indexer and the local model can."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_IMPORTING = threading.RLock()


def model_library(name: str, *attributes: str) -> tuple[Any, ...]:
    """`from name import attributes...`, one thread at a time; the module itself with no attributes."""
    with _IMPORTING:
        module = importlib.import_module(name)
        return tuple(getattr(module, attribute) for attribute in attributes) if attributes else (module,)


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Transformers' progress bars off (they would print "Loading weights" at every model load)."""
    (hf_logging,) = model_library("transformers.utils.logging")
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


_LOADING_MODELS = threading.RLock()


@contextmanager
def loading_model(quiet: bool = True) -> Iterator[None]:
    """One model load at a time in the process, with the progress bars off. Transformers builds a model
    on the meta device and then fills its weights, under process-wide switches; a load racing another
    thread's (the service warming its embedder while a chat loads the local model) was seen leaving a
    tied `lm_head` on meta ("Cannot copy out of meta tensor")."""
    with _LOADING_MODELS:
        if not quiet:
            yield
            return
        with quiet_progress():
            yield
