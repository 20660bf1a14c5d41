"""The local model on the real base (SmolLM2-135M-Instruct from its GGUF file, converted once into the
home) with real adapters trained here on one short fact each (a few seconds apiece on CPU): adapters
change the answer, never leak into a request without one or with another, and survive eviction,
streaming and concurrent requests."""

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hms_resources.common.tokens import default_gguf_path
from hms_resources.context.index import SelectedAdapter
from hms_resources.integration.local_model import (
    LocalModel,
    adapter_key,
    convert_gguf,
    converted_path,
    gguf_identity,
)
from hms_resources.integration.plugin import (
    CONTEXT_HEADER,
    memory_in_question,
    with_context,
)
from hms_resources.lora.training import (
    DEFAULT_BASE,
    TrainingConfig,
    load_base,
    save_adapter,
    train_adapter,
)

QUESTION = "What is my cat called?"
ASK = [{"role": "user", "content": QUESTION}]
TOKENS = 16
QUICK = TrainingConfig(steps=10, batch_size=1, rank=2, alpha=4, learning_rate=3e-3, dropout=0.0)
"""The quickest recipe that reliably teaches one reply to one question: about 4 s on two CPU cores."""


def train(directory, answer: str, name: str) -> SelectedAdapter:
    model, tokenizer = load_base()
    result = train_adapter(model, tokenizer, [{"prompt": QUESTION, "answer": answer}], QUICK)
    try:
        save_adapter(result.adapter, directory)
    finally:
        result.adapter.unload()
    return SelectedAdapter(name=name, version="1", uri=f"models:/{name}@champion", path=str(directory), base_model=DEFAULT_BASE,
                           set_id=f"nadia/{name}", concept_id=name)


@pytest.fixture(scope="module")
def base():
    """Training's base, de-quantized from the GGUF file: the adapters here are trained on it."""
    return load_base()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The GGUF file converted into a fresh home, with what the conversion said; the home is the
    environment's for this module, so the local model loads from there."""
    home = tmp_path_factory.mktemp("home")
    said: list[str] = []
    gguf = default_gguf_path()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HMS_HOME", str(home))
        yield convert_gguf(gguf, converted_path(gguf, home), said.append), said


@pytest.fixture(scope="module")
def adapters(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return (train(root / "pimpernel", "Your cat is called Pimpernel.", "nadia-pimpernel"),
            train(root / "biscuit", "Your cat is called Biscuit.", "nadia-biscuit"))


@pytest.fixture(scope="module")
def model(base, converted):
    return LocalModel().load()


def test_the_gguf_file_is_converted_once_into_the_home_with_the_same_weights(converted, model, base, tmp_path):
    import torch

    path, said = converted
    assert len(said) == 2 and "(once" in said[0], said
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert path.parent.name == "models" and not list(path.parent.glob("*.partial"))
    again: list[str] = []
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf(default_gguf_path(), path, again.append) == path and again == [], "a second load does not convert"
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    served, trained = model._model.state_dict(), base[0].state_dict()
    assert served.keys() == trained.keys() and all(torch.equal(served[k], trained[k]) for k in served)
    copy = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    copy.write_bytes(b"gguf")
    first = gguf_identity(copy)
    os.utime(copy, ns=(10**18, 10**18))
    assert gguf_identity(copy) != first, "a changed model file is another conversion"


def test_a_second_local_model_reuses_the_loaded_weights_in_a_tree_of_its_own(model):
    other = LocalModel().load()
    theirs = dict(other._model.named_parameters())
    assert {p.data_ptr() for p in theirs.values()} <= {p.data_ptr() for p in model._model.parameters()}
    assert other._model is not model._model and other.tokenizer is not model.tokenizer
    assert not any("lora_" in k for k in theirs), "the other model's tree holds no adapter of this one's"


def test_greedy_replies_end_instead_of_looping(model):
    reply = model.chat([{"role": "user", "content": "Say pork belly again and again, forever."}], max_tokens=16)
    ids = model.tokenizer(reply.text, add_special_tokens=False)["input_ids"]
    grams = [tuple(ids[n:n + 4]) for n in range(len(ids) - 3)]
    assert len(grams) == len(set(grams)), reply.text
    assert model.chat([{"role": "user", "content": "Say pork belly again and again, forever."}], max_tokens=16) == reply


def test_the_question_layout_moves_the_memory_right_before_the_question():
    given = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "What should I cook for Maya?"}]
    sent = memory_in_question(with_context(given, "[2 Sep 2026]\nMaya is vegetarian.\nMaya is allergic to peanuts."))
    assert sent[0] == {"role": "system", "content": "Be brief."} and sent[1:3] == given[1:3]
    assert sent[-1]["content"].endswith("What should I cook for Maya?") and CONTEXT_HEADER not in str(sent)
    assert "[2 Sep 2026]\n- Maya is vegetarian.\n- Maya is allergic to peanuts.\n" in sent[-1]["content"]
    alone = memory_in_question(with_context(given[1:2], "Maya is vegetarian."))
    assert [m["role"] for m in alone] == ["user"] and "- Maya is vegetarian." in alone[0]["content"]
    assert memory_in_question(given) == given, "messages without memory are left as they are"


@pytest.fixture(scope="module")
def alone(model, adapters):
    """The greedy reply to the question from the base and from each adapter, each request on its own."""
    return {str(a): model.chat(ASK, adapter=a, max_tokens=TOKENS) for a in (None, *adapters)}


def test_greedy_replies_are_deterministic_and_report_their_usage(model, alone):
    first = alone["None"]
    assert model.chat(ASK, adapter=None, max_tokens=TOKENS) == first
    assert model.model_name == "hms-local" and first.adapter is None and first.text
    assert first.prompt_tokens > 5 and 0 < first.completion_tokens <= TOKENS
    assert first.finish_reason == ("length" if first.completion_tokens == TOKENS else "stop")
    cut = model.chat(ASK, adapter=None, max_tokens=2)
    assert cut.completion_tokens == 2 and cut.finish_reason == "length" and first.text.startswith(cut.text)
    sampled = model.chat([{"role": "system", "content": "Be brief."}, *ASK], adapter=None, max_tokens=4, temperature=0.8)
    assert 0 < sampled.completion_tokens <= 4


def test_an_adapter_changes_the_answer_and_leaves_no_trace_on_the_base(model, adapters, alone):
    plain, tuned, other = alone["None"], alone["nadia-pimpernel@1"], alone["nadia-biscuit@1"]
    assert "Pimpernel" in tuned.text and "Biscuit" in other.text and not {"Pimpernel", "Biscuit"} & set(plain.text.split()), alone
    assert tuned.adapter == "nadia-pimpernel@1" and tuned.finish_reason == "stop" and tuned.completion_tokens < TOKENS
    model.chat(ASK, adapter=adapters[0], max_tokens=2)
    assert model.switch_seconds > 0
    assert model.chat(ASK, adapter=None, max_tokens=TOKENS) == plain, "adapters are disabled for a request without one"
    assert model.switch_seconds == 0.0


def test_two_adapters_switch_per_request_without_reloading(model, adapters, alone):
    pimpernel, biscuit = adapters
    loads = model.loads
    assert model.chat(ASK, adapter=biscuit, max_tokens=TOKENS) == alone["nadia-biscuit@1"]
    assert model.chat(ASK, adapter=pimpernel, max_tokens=TOKENS) == alone["nadia-pimpernel@1"]
    assert model.loads == loads and model.loaded_adapters[-2:] == ["nadia-biscuit@1", "nadia-pimpernel@1"]


def test_the_least_recently_used_adapter_is_evicted_and_reloads_the_same(model, adapters, alone):
    pimpernel, biscuit = adapters
    small = LocalModel(max_adapters=1)
    assert not small.loaded_adapters and small.tokenizer is not model.tokenizer
    assert small.chat(ASK, adapter=pimpernel, max_tokens=TOKENS) == alone["nadia-pimpernel@1"]
    assert small.chat(ASK, adapter=biscuit, max_tokens=TOKENS) == alone["nadia-biscuit@1"]
    assert small.loaded_adapters == ["nadia-biscuit@1"] and small.loads == 2
    assert small.chat(ASK, adapter=pimpernel, max_tokens=TOKENS) == alone["nadia-pimpernel@1"]
    assert small.loaded_adapters == ["nadia-pimpernel@1"] and small.loads == 3


def test_a_new_version_or_a_rewritten_directory_is_a_different_adapter(model, adapters, tmp_path):
    pimpernel, biscuit = adapters
    key = adapter_key(pimpernel)
    promoted = SelectedAdapter(**{**vars(pimpernel), "version": "2"})
    assert adapter_key(promoted) != key
    loads = model.loads
    model.chat(ASK, adapter=promoted, max_tokens=4)
    assert model.loads == loads + 1 and "nadia-pimpernel@2" in model.loaded_adapters
    moved = tmp_path / "rewritten"
    shutil.copytree(pimpernel.path, moved)
    rewritten = SelectedAdapter(**{**vars(pimpernel), "path": str(moved)})
    before = adapter_key(rewritten)
    shutil.copy(os.path.join(biscuit.path, "adapter_model.safetensors"), moved / "adapter_model.safetensors")
    stamp = os.stat(moved / "adapter_model.safetensors").st_mtime_ns + 10**9
    os.utime(moved / "adapter_model.safetensors", ns=(stamp, stamp))
    assert adapter_key(rewritten) != before, "the same path rewritten in place is a new key"
    assert "Biscuit" in model.chat(ASK, adapter=rewritten, max_tokens=TOKENS).text


def test_streamed_pieces_make_the_chat_reply(model, adapters, alone):
    for adapter in (None, adapters[0]):
        done = []
        pieces = list(model.stream(ASK, adapter=adapter, max_tokens=TOKENS, on_done=done.append))
        assert len(pieces) > 1 and "".join(pieces) == alone[str(adapter)].text and done == [alone[str(adapter)]]
    stream = model.stream(ASK, adapter=None, max_tokens=TOKENS)
    next(stream)
    stream.close()
    assert model.chat(ASK, adapter=None, max_tokens=2).completion_tokens == 2, "an abandoned stream gives the model back"


def test_concurrent_requests_for_different_adapters_each_get_their_own_answer(model, adapters, alone):
    pimpernel, biscuit = adapters
    requests = [None, pimpernel, biscuit, pimpernel, None, biscuit]
    streamed = {}

    def ask(position: int, adapter):
        if position % 3 == 0:
            streamed[position] = "".join(model.stream(ASK, adapter=adapter, max_tokens=TOKENS))
            return streamed[position]
        return model.chat(ASK, adapter=adapter, max_tokens=TOKENS).text

    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(ask, range(len(requests)), requests))
    assert together == [alone[str(a)].text for a in requests] and len(streamed) == 2
    assert threading.active_count() < 20


def test_bad_requests_are_refused(model, adapters, alone, tmp_path):
    pimpernel, _ = adapters
    with pytest.raises(ValueError, match="role"):
        model.chat([{"role": "function", "content": "x"}], adapter=None)
    with pytest.raises(ValueError, match="max_tokens"):
        model.stream(ASK, adapter=None, max_tokens=0)
    with pytest.raises(ValueError, match="no messages"):
        model.chat([], adapter=None)
    with pytest.raises(ValueError, match="trained on"):
        model.chat(ASK, adapter=SelectedAdapter(**{**vars(pimpernel), "base_model": "other-model"}))
    with pytest.raises(FileNotFoundError):
        model.chat(ASK, adapter=SelectedAdapter(**{**vars(pimpernel), "path": str(tmp_path / "missing")}))
    parts = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    assert model.chat(parts, adapter=None, max_tokens=TOKENS) == alone["None"]
    with pytest.raises(ValueError, match="content"):
        model.chat([{"role": "user", "content": 7}], adapter=None)


def test_a_context_adapter_applies_only_on_the_base_it_was_trained_on(monkeypatch):
    named = {"name": "cats", "version": "3", "uri": "models:/cats@champion", "path": "/adapters/cats/3", "base_model": DEFAULT_BASE,
             "set_id": "nadia/cats", "concept_id": "cats", "similarity": 0.5, "score": 0.9}
    served = LocalModel()
    assert served.adapter_for(None) is None
    assert served.adapter_for(named) == SelectedAdapter(**{k: v for k, v in named.items() if k != "score"})
    monkeypatch.setenv("HMS_LOCAL_MODEL", "/models/another-base")
    monkeypatch.setenv("HMS_LOCAL_MAX_ADAPTERS", "2")
    other = LocalModel.from_env()
    assert (other.base_name, other.max_adapters) == ("/models/another-base", 2)
    assert other.adapter_for(named) is None
    monkeypatch.setenv("HMS_LOCAL_MAX_ADAPTERS", "none")
    with pytest.raises(ValueError, match="HMS_LOCAL_MAX_ADAPTERS"):
        LocalModel.from_env()
