"""Toy-world tokenizer and the SFT stage: round trip, caching, loss falls, every parameter moves."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from common.models import build_tiny_causal_lm
from common.synthetic import base_models
from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import WorldConfig, make_splits
from common.train import TrainConfig, causal_lm_loss, pad_collate, train

SMALL = WorldConfig(seed=5, n_train=300, n_validation=20, n_test=20)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRO_RUNS", str(path))
        yield path


@pytest.fixture(scope="module")
def tok(runs):
    return world_tokenizer(SMALL, vocab_size=400)


def test_tokenizer_round_trips_and_splits_digits(tok, runs, tmp_path):
    problem = make_splits(SMALL)["test"][0]
    text = problem.prompt() + " " + problem.rationale() + tok.eos_token
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    digits = [t for t in tok.convert_ids_to_tokens(ids) if any(ch.isdigit() for ch in t)]
    assert all(sum(ch.isdigit() for ch in t) == 1 for t in digits)  # one digit per token
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)  # the normal API, after a reload
    assert again(text)["input_ids"] == ids and again.decode(ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert "Question: hi\nAnswer:" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )
    assert len(list((runs / "tokenizers").iterdir())) == 1  # cached by config hash
    assert world_tokenizer(SMALL, vocab_size=400)(text)["input_ids"] == ids


def test_sft_examples_supervise_only_the_answer(tok):
    problems = make_splits(SMALL)["train"][:5]
    rows = base_models.sft_examples(tok, problems, per_problem=2, seed=0)
    assert len(rows) == 10
    for row in rows:
        supervised = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
        assert supervised[-1] == tok.eos_token_id
        assert tok.decode(supervised).lstrip().split("\n")[-1].startswith("####")
        assert tok.decode(row["input_ids"]).startswith("Question: ")


def test_sft_lowers_loss_and_moves_every_parameter(tok, tmp_path):
    problems = make_splits(SMALL)["train"][:64]
    rows = base_models.sft_examples(tok, problems, per_problem=1, seed=0)
    model = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(
        model,
        rows,
        causal_lm_loss,
        TrainConfig(output_dir=str(tmp_path), max_steps=30, batch_size=16, lr=3e-3, progress=False),
        collate_fn=pad_collate(tok),
    )
    assert sum(result.losses[-5:]) / 5 < 0.6 * sum(result.losses[:5]) / 5
    assert not [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="valid: student, mid, teacher"):
        base_models.get_base_model("huge")


def test_base_key_changes_with_the_config():
    a = base_models.base_key("student", SMALL, 0, 400)
    assert a == base_models.base_key("student", SMALL, 0, 400)
    assert a != base_models.base_key("student", WorldConfig(seed=6), 0, 400)
    assert a != base_models.base_key("teacher", SMALL, 0, 400)
    assert json.dumps(a)


def test_base_key_changes_with_the_preset_shape(monkeypatch):
    """Redefining a preset's dimensions under the same name must retrain, not reuse a stale cache."""
    from dataclasses import replace

    from common import models

    a = base_models.base_key("teacher", SMALL, 0, 400)
    wider = replace(models.TINY_PRESETS["tiny-teacher"], intermediate_size=640)
    monkeypatch.setitem(models.TINY_PRESETS, "tiny-teacher", wider)
    assert base_models.base_key("teacher", SMALL, 0, 400) != a


def test_concurrent_requests_train_once(monkeypatch, tmp_path):
    """Two pipelines asking for the same base model at once: one trains, the other waits and reuses it."""
    import threading
    import time

    monkeypatch.setenv("REPRO_RUNS", str(tmp_path))
    calls = []

    def fake_train(size, out, *args):
        calls.append(size)
        time.sleep(0.3)
        (out / "model").mkdir()
        (out / "model" / "config.json").write_text("{}")

    monkeypatch.setattr(base_models, "_train_base", fake_train)
    paths = []
    threads = [
        threading.Thread(target=lambda: paths.append(base_models.get_base_model("student", SMALL)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["student"] and len(paths) == 2 and paths[0] == paths[1]


def test_base_model_bits_do_not_depend_on_the_callers_threads(monkeypatch, tmp_path):
    """Trained weights depend on torch's thread count; a base model trains on TRAIN_THREADS whatever the
    caller set, so the same seed gives the same model (and toy tables) in any process."""
    from safetensors.torch import load_file

    monkeypatch.setitem(base_models.SIZES, "student", base_models.BaseSpec("tiny-student", steps=4, lr=3e-3))
    before = torch.get_num_threads()
    weights = []
    for threads in (2, 1):
        monkeypatch.setenv("REPRO_RUNS", str(tmp_path / f"t{threads}"))
        torch.set_num_threads(threads)
        try:
            path = base_models.get_base_model("student", SMALL, vocab_size=400, progress=False)
        finally:
            torch.set_num_threads(before)
        weights.append(load_file(path / "model.safetensors"))
    assert torch.get_num_threads() == before  # restored
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
