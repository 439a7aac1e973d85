"""The toy pipeline's rows, pinned numbers and acceptance gate (models swapped out), and the local chat
paths (the vLLM one is slow)."""

import csv
import functools
import json
import re
import statistics
from pathlib import Path

import pytest

from common.config import ConfigError, apply_overrides
from common.models import build_tiny_causal_lm, load_tokenizer
from papers.socialbench import pipeline
from papers.socialbench.chat_models import LocalChatModel, PolicyModel, local_chat_model
from papers.socialbench.config import PRESETS, get_config
from papers.socialbench.data import load_items
from papers.socialbench.stages import sample_items

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture
def results_root(monkeypatch, tmp_path):
    """write_results into tmp_path; stage outputs under tmp_path/runs ($REPRO_RUNS)."""
    monkeypatch.setattr(pipeline, "write_results", functools.partial(pipeline.write_results, root=tmp_path))
    monkeypatch.setenv("REPRO_RUNS", str(tmp_path / "runs"))
    return tmp_path / "papers" / "socialbench" / "results" / "toy"


def toy_without_models():
    return apply_overrides(get_config("toy"), ["zero_shot.models=[]"])


def read_rows(out: Path) -> list[dict]:
    with open(out / "reproduced.csv", newline="") as f:
        return list(csv.DictReader(f))


def value(rows, **match) -> float:
    hits = [float(r["value"]) for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return hits[0]


def per_seed(rows, **match) -> list[float]:
    """The random-letter rows of one metric, one per seed (setting ends in ` seed <int>`)."""
    hits = [(r["setting"], float(r["value"])) for r in rows if all(r[k] == v for k, v in match.items())]
    assert all(re.search(r" seed \d+$", setting) for setting, _ in hits), hits
    return [v for _, v in hits]


def test_toy_rows_and_claim_rows(results_root):
    out = pipeline.reproduce(toy_without_models(), data_dir=str(SHARED))
    assert out == results_root
    rows = read_rows(out)
    ep = dict(table="toy", benchmark="SocialBench-EP")
    assert value(rows, model="oracle", metric="score", **ep) == 100.0
    assert value(rows, model="always-A", metric="DialogueEmotionDetect", **ep) == pytest.approx(
        11.92, abs=0.01
    )
    assert value(rows, model="always-A", metric="SituationUnderstanding", **ep) == pytest.approx(
        26.23, abs=0.01
    )
    assert value(rows, model="always-A", metric="EP Emo. (parse-fail %)", **ep) == 0.0
    scores = per_seed(rows, model="random-letter", metric="score", **ep)
    assert len(scores) == 20 and 15 < statistics.fmean(scores) < 27
    assert value(rows, model="analytic chance", metric="DialogueEmotionDetect", **ep) == pytest.approx(12.5)
    assert value(rows, model="always-A", metric="EP Situ. [zh]", **ep) > 0
    assert value(rows, model="overlap-agent", benchmark="synthetic-SA") >= 90
    assert value(rows, model="bow-logreg", benchmark="synthetic-SP") <= 35
    assert value(rows, model="keyword-recall scorer", benchmark="synthetic-memory") == 0.0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["acceptance_failures"] == [] and prov["config"]["scale"] == "toy"
    assert prov["config"]["zero_shot"]["models"] == [] and prov["seeds"] == list(range(20))
    assert prov["data_commit"].startswith("1287b67")


def test_pinned_toy_numbers(results_root):
    """The toy table's policy and synthetic numbers, pinned to the values of main at 2b51fd1 (points)."""
    rows = read_rows(pipeline.reproduce(toy_without_models(), data_dir=str(SHARED)))
    ep = dict(table="toy", benchmark="SocialBench-EP")
    always_a = {
        "EP Situ.": 26.226252,
        "EP Emo.": 16.043307,
        "score": 21.13478,
        "HumorSarcasmDetect": 22.087379,
    }
    for metric, want in always_a.items():
        assert value(rows, model="always-A", metric=metric, **ep) == pytest.approx(want, rel=1e-6)
    random_mean = {"EP Situ.": 24.134283, "EP Emo.": 17.750984, "score": 20.942634, "EP Emo. [en]": 15.232558}
    for metric, want in random_mean.items():
        got = statistics.fmean(per_seed(rows, model="random-letter", metric=metric, **ep))
        assert got == pytest.approx(want, rel=1e-6), metric
    synthetic = {
        ("random-letter", "synthetic-SA"): 28.75,
        ("random-letter", "synthetic-SP"): 25.25,
        ("overlap-agent", "synthetic-SA"): 100.0,
        ("overlap-agent", "synthetic-SP"): 24.75,
        ("bow-logreg", "synthetic-SA"): 100.0,
        ("bow-logreg", "synthetic-SP"): 24.75,
    }
    for (model, benchmark), want in synthetic.items():
        assert value(rows, model=model, benchmark=benchmark, metric="score") == pytest.approx(want, rel=1e-4)


def test_models_run_through_the_shared_stage_into_repro_runs(results_root, monkeypatch, tmp_path):
    built = []

    def fake_make_model(spec, **settings):  # the model a preset names, answered by a fixed policy
        built.append((spec, settings))
        return PolicyModel("always-A")

    monkeypatch.setattr(pipeline, "make_model", fake_make_model)
    rows = read_rows(pipeline.reproduce(get_config("toy"), data_dir=str(SHARED)))
    assert built == [
        (
            "smollm2-135m-instruct",
            dict(
                backend="vllm",
                engine={"max_model_len": 4096},
                max_tokens=16,
                temperature=0.0,
                max_prompt_tokens=4096 - 16,
            ),
        )
    ]
    outputs = tmp_path / "runs" / "socialbench" / "toy" / "smollm2-135m-instruct" / "outputs.jsonl"
    assert len(outputs.read_text().splitlines()) == 61  # the seeded 5% sample, in $REPRO_RUNS
    model = dict(model="smollm2-135m-instruct", setting="61 sampled items at 1287b67", table="toy")
    assert value(rows, metric="score", **model) > 0
    assert len(per_seed(rows, model="random-letter", metric="score", benchmark="SocialBench-EP")) == 20


def test_a_wrong_grader_fails_the_acceptance_gate_after_writing(results_root, monkeypatch):
    monkeypatch.setitem(pipeline.ALWAYS_A_EXPECTED, "Individual-EP-HumorSarcasmDetect", 30.0)
    with pytest.raises(
        RuntimeError, match="acceptance test failed: always-A Individual-EP-HumorSarcasmDetect"
    ):
        pipeline.reproduce(toy_without_models(), data_dir=str(SHARED))
    prov = json.loads((results_root / "provenance.json").read_text())
    assert len(prov["acceptance_failures"]) == 1


def test_presets_and_sampling():
    assert set(PRESETS) == {"toy", "small", "paper"}
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        get_config("huge")
    names = {m.name for m in get_config("paper").zero_shot.models}
    assert names == {
        "LLaMA-2-7B-Chat",
        "LLaMA-2-13B-Chat",
        "LLaMA-2-70B-Chat",
        "Mistral-7B-Instruct-V0.2",
        "Qwen-7B-Chat",
        "Qwen-14B-Chat",
        "Qwen-72B-Chat",
    }  # every open model of the published table, named as in published.csv
    with open(Path(pipeline.__file__).parent / "published.csv", newline="") as f:
        published = {r["model"] for r in csv.DictReader(f)}
    assert names <= published
    with pytest.raises(ConfigError, match="unknown key 'smaple'"):
        apply_overrides(get_config("toy"), ["zero_shot.smaple=0.1"])
    items = load_items(["EP Situ.", "EP Emo."], SHARED)
    sample = sample_items(items, 0.1, seed=0)
    assert sample == sample_items(items, 0.1, seed=0)
    counts = {c: sum(it["meta"]["category"] == c for it in sample) for c in pipeline.ALWAYS_A_EXPECTED}
    assert counts == {
        "Individual-EP-DialogueEmotionDetect": 60,
        "Individual-EP-HumorSarcasmDetect": 41,
        "Individual-EP-SituationUnderstanding": 19,
    }


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-chat")
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model = build_tiny_causal_lm(
        "tiny-student", vocab_size=len(tokenizer), seed=0, tokenizer=tokenizer, max_position_embeddings=4096
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_chat_model_applies_the_template_and_truncates_from_the_left(tiny_chat_model):
    model = local_chat_model(str(tiny_chat_model), backend="hf", max_tokens=4)
    assert isinstance(model, LocalChatModel) and model.has_template
    assert model.max_prompt_tokens == 4096 - 4  # default: the context minus the reply
    ids = model.encode("hello")
    text = model.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith("hello<|im_end|>\n<|im_start|>assistant\n")
    long = " ".join(f"w{i}" for i in range(400))
    model.max_prompt_tokens = 64
    cut = model.encode(long)
    full = model.tokenizer(model._render(long), add_special_tokens=False)["input_ids"]
    assert len(cut) == 64 and model.truncated == 1
    assert cut[:8] == full[:8] and cut[-20:] == full[-20:]  # head of the template kept, the tail kept
    items = load_items(["EP Situ."], SHARED)[:2]
    replies = model.answer(items)
    assert len(replies) == 2 and all(r.error is None for r in replies)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_backend_gives_the_hf_backend_greedy_replies(tiny_chat_model):
    items = load_items(["EP Situ.", "EP Emo."], SHARED)[:3]
    hf = local_chat_model(str(tiny_chat_model), backend="hf", max_tokens=6).answer(items)
    vllm = local_chat_model(
        str(tiny_chat_model), backend="vllm", engine={"max_model_len": 4096}, max_tokens=6
    ).answer(items)
    assert [r.text for r in vllm] == [r.text for r in hf]
