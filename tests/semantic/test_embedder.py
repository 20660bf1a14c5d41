"""The query encoder with the real all-MiniLM-L6-v2: the int8 ONNX export against the torch model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hms_resources.common.files import PARTIAL_SUFFIX
from hms_resources.semantic.embedder import ONNX_MODEL_FILE, ONNX_TOKENIZER_FILE, Embedder, OnnxQueryEncoder

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [
    "When is my dentist appointment next month?",
    "What did I tell you about my sister's new job in Lisbon and why was I worried?",
    "Which restaurant did we pick for Grandma's birthday dinner, and who is paying the bill?",
    "remind me what the landlord said about the broken heating",
    "Où ai-je mis les notes de la réunion de lundi ?",
    "Did I finish the quarterly report before the deadline? 🙂",
]
EXPORT = """
import json, sys
from hms_resources.semantic.embedder import Embedder
embedder = Embedder(device="cpu", cache_dir=sys.argv[1])
embedder.encode_query("warm up")
print(json.dumps({"encoder": type(embedder._query_encoder).__name__, "loaded_torch": embedder._model is not None}))
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """Two processes export at once, offline: one exports, the other waits and reuses its files."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", EXPORT, str(cache)], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["encoder"] for r in reports] == ["OnnxQueryEncoder"] * 2
    assert sum(r["loaded_torch"] for r in reports) == 1, reports
    return cache


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    return Embedder(device="cpu", query_backend="torch")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir) -> Embedder:
    return Embedder(device="cpu", cache_dir=str(cache_dir))


@pytest.mark.parametrize("question", QUESTIONS)
def test_an_int8_onnx_query_vector_is_a_unit_vector_close_to_the_torch_one(onnx_embedder, torch_embedder, question):
    onnx, torch = onnx_embedder.encode_query(question), torch_embedder.encode_query(question)
    assert onnx.dtype == np.float32 and onnx.shape == torch.shape == (384,)
    assert abs(float(np.linalg.norm(onnx)) - 1) < 1e-5
    assert float(onnx @ torch) > 0.98
    assert np.array_equal(onnx, onnx_embedder.encode_query(question)), "the same text always gets the same vector"


def test_a_second_embedder_reuses_the_exported_model_without_loading_torch_or_exporting(cache_dir):
    exported = cache_dir / Embedder(device="cpu").onnx_directory.name / ONNX_MODEL_FILE
    before = exported.stat()
    embedder = Embedder(device="cpu", cache_dir=str(cache_dir))
    embedder.encode_query("what did I plan for the weekend?")
    assert isinstance(embedder._query_encoder, OnnxQueryEncoder) and embedder._model is None
    after = exported.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    published = sorted(p.name for p in exported.parent.iterdir() if not p.name.startswith("."))
    assert published == [ONNX_MODEL_FILE, ONNX_TOKENIZER_FILE]
    assert not [p for p in cache_dir.rglob(f"*{PARTIAL_SUFFIX}")]


def test_the_onnx_query_ranks_torch_document_vectors_as_the_torch_query_does(onnx_embedder, torch_embedder):
    documents = torch_embedder.encode([
        "My dentist appointment is on the 14th at 9am with Dr. Silva.",
        "My sister started a new job in Lisbon; I worry about her long commute.",
        "We booked the Italian place on Main Street for Grandma's birthday; Tom pays.",
        "The landlord promised to fix the heating by Friday.",
        "J'ai rangé les notes de la réunion de lundi dans le classeur bleu.",
        "I sent the quarterly report two days before the deadline.",
    ])
    for expected, question in enumerate(QUESTIONS):
        assert int(np.argmax(documents @ onnx_embedder.encode_query(question))) == expected
        assert int(np.argmax(documents @ torch_embedder.encode_query(question))) == expected


def test_the_torch_query_backend_matches_batch_encoding_and_exports_nothing(torch_embedder, tmp_path):
    embedder = Embedder(device="cpu", query_backend="torch", cache_dir=str(tmp_path))
    vector = embedder.encode_query(QUESTIONS[1])
    assert float(vector @ torch_embedder.encode([QUESTIONS[1]])[0]) > 0.9999
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_queries_on_the_torch_model_with_a_warning(torch_embedder, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    embedder = Embedder(device="cpu", cache_dir=str(blocker))
    with caplog.at_level(logging.WARNING, logger="hms.semantic"):
        vector = embedder.encode_query(QUESTIONS[0])
    assert "queries use the torch model" in caplog.text
    assert np.allclose(vector, torch_embedder.encode_query(QUESTIONS[0]), atol=1e-6)


def test_an_unknown_query_backend_is_refused_naming_its_variable():
    with pytest.raises(ValueError, match=r"HMS_QUERY_BACKEND.*'int4'"):
        Embedder(query_backend="int4").encode_query("hello")


def test_the_default_cache_lives_under_the_hms_home_per_model_identity(hms_home):
    embedder = Embedder()
    assert embedder.onnx_directory == hms_home.resolve() / "models" / "onnx" / embedder.identity
