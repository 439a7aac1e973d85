"""lm_eval_tasks/socialbench: the SocialBench lm-evaluation-harness task equals the project's evaluator.

Fast tests read the task files and call its hooks (utils.py, loaded by path as the harness loads it) on the
mirrored emotional-perception file; the slow ones (`-m slow`, need `pip install -e .[lmeval]`) run the
harness itself offline, on a tiny random HF model and on a scripted model, and compare every per-item score
and aggregate with papers/socialbench's on the same outputs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from functools import cache
from pathlib import Path

import pytest
import yaml

from common.data import shared_mirror
from papers.socialbench.data import load_items
from papers.socialbench.prompts import COLUMNS, build_prompt, column_of
from papers.socialbench.scoring import Graded, column_score, score_item

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "lm_eval_tasks"
TASK_DIR = TASKS / "socialbench"
DATA = shared_mirror()
needs_ep = pytest.mark.skipif(
    DATA is None or not (DATA / "socialbench" / "emotional_perception.json").exists(),
    reason="../shared/data/socialbench/emotional_perception.json (the SocialBench mirror) is not beside the checkout",
)
EP_TASKS = {"socialbench_ep_situ": "EP Situ.", "socialbench_ep_emo": "EP Emo."}
REPLIES = ["A", "B", "I think C", "C, D", "no idea", "答案是B", "A good answer is C", ""]


@cache
def utils():
    """utils.py loaded from its path, as the harness's `!function utils.<name>` does."""
    spec = importlib.util.spec_from_file_location("socialbench_task_utils", TASK_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _TaskLoader(yaml.SafeLoader):
    """Reads `!function x.y` as the string "x.y" (the harness resolves it; here we only read the files)."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def task_file(name: str) -> dict:
    return yaml.load((TASK_DIR / name).read_text(encoding="utf-8"), Loader=_TaskLoader)


def test_one_task_per_table_column_and_groups_over_them():
    columns = {}
    for path in sorted(TASK_DIR.glob("socialbench_*.yaml")):
        config = task_file(path.name)
        if "task" in config and isinstance(config["task"], str):
            assert config["include"] == "_template_yaml"
            columns[config["task"]] = config["dataset_kwargs"]["column"]
    assert sorted(columns.values()) == sorted(COLUMNS)
    everything = task_file("socialbench.yaml")
    assert everything["group"] == "socialbench" and sorted(everything["task"]) == sorted(columns)
    for group in ("sa", "ep", "cm", "sp"):
        members = task_file(f"socialbench_{group}.yaml")["task"]
        assert {columns[t].split()[0] for t in members} == {group.upper()}
    template = task_file("_template_yaml")
    assert template["custom_dataset"] == "!function utils.load_column"
    assert (
        template["generation_kwargs"]["max_gen_toks"] == 512
        and not template["generation_kwargs"]["do_sample"]
    )
    for metric in template["metric_list"]:
        assert callable(getattr(utils(), metric["metric"]))
        assert metric["aggregation"] == f"!function utils.{metric['metric']}"


@needs_ep
def test_the_hooks_equal_the_evaluator_on_the_mirrored_ep_file():
    items = {column: load_items([column], DATA, download=False) for column in EP_TASKS.values()}
    assert sum(map(len, items.values())) == 1209
    for column, want in items.items():
        docs = utils().load_column(column, str(DATA))["test"]
        assert [json.loads(d["item"]) for d in docs] == want
        outputs = [REPLIES[i % len(REPLIES)] for i in range(len(docs))]
        scores = []
        for doc, item, output in zip(docs, want, outputs):
            assert utils().doc_to_text(doc) == build_prompt(item)
            assert utils().doc_to_target(doc) == ",".join(item["label"])
            per_item = utils().process_results(doc, [output])
            assert set(per_item.values()) == {score_item(item, output)}
            scores.append(per_item["official"])
        col = column_score(Graded(column_of(it), "-", "-", s) for it, s in zip(want, scores))
        assert utils().official(scores) == col.official
        assert utils().strict(scores) == col.strict
        assert utils().parse_failure_rate(scores) == col.parse_failure_rate
        assert col.official > col.strict and 0 < col.parse_failure_rate < 100


def test_no_score_at_all_is_nan_and_a_bad_column_is_one_line():
    assert math.isnan(utils().official([None, None])) and utils().strict([None, None]) == 0.0
    with pytest.raises(ValueError, match=r"^socialbench: unknown column 'EP'; valid: SA Style, "):
        utils().load_column("EP")


# ---- the harness itself (slow; lm-eval as the test-only extra) ---------------------------------------


def lm_eval_or_skip():
    return pytest.importorskip(
        "lm_eval", reason="lm-eval is not installed (pip install -e .[lmeval]); the harness tests need it"
    )


def harness_run(model, limit: int, **kwargs) -> dict:
    lm_eval = lm_eval_or_skip()
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=model,
        tasks=["socialbench_ep"],
        task_manager=TaskManager(include_path=str(TASKS)),
        limit=limit,
        bootstrap_iters=0,
        log_samples=True,
        metadata={"data_dir": str(DATA)},
        **kwargs,
    )


def check_against_the_evaluator(out: dict, chat: bool = False) -> list[float | None]:
    """Every sample's prompt (inside the chat template when `chat`), per-item scores and each column's
    aggregates equal the evaluator's."""
    all_scores = []
    for task, column in EP_TASKS.items():
        samples = out["samples"][task]
        assert samples
        scores = []
        for sample in samples:
            item = json.loads(sample["doc"]["item"])
            assert column_of(item) == column
            context = sample["arguments"][0][0]
            assert build_prompt(item).strip() in context if chat else context == build_prompt(item)
            score = score_item(item, sample["filtered_resps"][0])
            assert sample["official"] == sample["strict"] == sample["parse_failure_rate"] == score
            scores.append(score)
        col = column_score(Graded(column, "-", "-", s) for s in scores)
        got = out["results"][task]
        for metric in ("official", "strict", "parse_failure_rate"):
            want = getattr(col, metric)
            assert math.isnan(got[f"{metric},none"]) if want is None else got[f"{metric},none"] == want
        all_scores += scores
    return all_scores


@pytest.mark.slow
@needs_ep
def test_the_harness_on_a_tiny_hf_model_equals_the_evaluator(tmp_path, toy_tokenizer, tiny_lm):
    lm_eval_or_skip()
    tiny_lm.save_pretrained(tmp_path / "tiny")
    toy_tokenizer.save_pretrained(tmp_path / "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = harness_run(
        "hf",
        limit=3,
        model_args={"pretrained": str(tmp_path / "tiny"), "dtype": "float32"},
        gen_kwargs={"max_gen_toks": 12},
        device="cpu",
        batch_size=1,
    )
    assert len(check_against_the_evaluator(out)) == 6


@pytest.mark.slow
@needs_ep
def test_the_harness_on_scripted_replies_equals_the_evaluator():
    """A model whose replies are set, so the harness sees right, wrong and unparseable answers."""
    lm_eval_or_skip()
    from lm_eval.api.model import LM

    class ScriptedLM(LM):
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            return [REPLIES[i % len(REPLIES)] for i in range(len(requests))]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("SocialBench only generates")

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("SocialBench only generates")

    scores = check_against_the_evaluator(harness_run(ScriptedLM(), limit=24))
    defined = [s for s in scores if s is not None]
    assert len(scores) == 48 and 0 < len(defined) < len(scores) and 0 < sum(defined) < len(defined)


@pytest.mark.slow
@needs_ep
def test_the_harness_on_smollm2_with_its_chat_template_equals_the_evaluator():
    """A real instruct model (the packaged SmolLM2-135M-Instruct) answers with letters: non-trivial scores."""
    lm_eval_or_skip()
    from common.models import ModelNotFoundError, smollm2_dir

    try:
        model_dir = smollm2_dir()
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    out = harness_run(
        "hf",
        limit=2,
        model_args={"pretrained": str(model_dir), "dtype": "float32"},
        gen_kwargs={"max_gen_toks": 8},
        apply_chat_template=True,
        device="cpu",
        batch_size=1,
    )
    scores = check_against_the_evaluator(out, chat=True)
    assert len(scores) == 4 and any(s is not None for s in scores)
