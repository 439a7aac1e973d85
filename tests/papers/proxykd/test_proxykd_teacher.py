"""The black-box teacher through a real local OpenAI-compatible server (tests/common/fake_openai.py):
answers cached and resumable, failed calls and empty answers recorded and never used, a dead endpoint
one line with the cache kept."""

import socket
from dataclasses import replace

import pytest

from common.stages import read_jsonl
from papers.proxykd.config import TeacherConfig
from papers.proxykd.teacher import TeacherError, endpoint_asker, errors_path, teacher_answers
from tests.common.fake_openai import MODEL_ID, FakeOpenAI


def _teacher(url: str, **kw) -> TeacherConfig:
    settings = {"endpoint": url, "model": MODEL_ID, "max_retries": 0, "timeout_s": 10, "concurrency": 4}
    return replace(TeacherConfig(), **{**settings, **kw})


def _echo(payload: dict) -> str:
    prompt = payload["messages"][-1]["content"]
    return "" if "empty" in prompt else f"answer to {prompt}"


IDS = [f"q{i}" for i in range(10)]
PROMPTS = [f"question {i}" for i in range(10)]


def test_answers_are_cached_and_a_rerun_asks_nothing(tmp_path):
    path = tmp_path / "teacher.jsonl"
    with FakeOpenAI(reply=_echo, delay=lambda p: 0.05) as server:
        ask = endpoint_asker(_teacher(server.url))
        got = teacher_answers(IDS, PROMPTS, ask, path, chunk=4)
        assert got == {i: f"answer to {p}" for i, p in zip(IDS, PROMPTS)}
        assert server.max_in_flight <= 4  # bounded concurrency
        seen = len(server.requests)
        assert teacher_answers(IDS, PROMPTS, ask, path, chunk=4) == got
        assert len(server.requests) == seen == 10
    assert [r["id"] for r in read_jsonl(path)] == IDS


def test_a_server_that_fails_some_requests_loses_nothing_and_the_rerun_asks_only_for_the_rest(tmp_path):
    path = tmp_path / "teacher.jsonl"
    with FakeOpenAI(mode="flaky", fail_first=3, reply=_echo) as server:
        ask = endpoint_asker(_teacher(server.url))
        got = teacher_answers(IDS, PROMPTS, ask, path, chunk=5, min_answered=0.5)
        assert len(got) == 7 and all(v.startswith("answer to") for v in got.values())
        errors = read_jsonl(errors_path(path))
        assert len(errors) == 3 and all("InternalServerError" in e["error"] for e in errors)
        again = teacher_answers(IDS, PROMPTS, ask, path, chunk=5, min_answered=1.0)
        assert len(server.requests) == 13  # 10, then only the 3 that failed
    assert len(again) == 10 and {k: again[k] for k in got} == got


def test_an_empty_answer_is_recorded_and_not_used(tmp_path):
    path = tmp_path / "teacher.jsonl"
    prompts = [*PROMPTS[:9], "an empty one"]
    with FakeOpenAI(reply=_echo) as server:
        got = teacher_answers(IDS, prompts, endpoint_asker(_teacher(server.url)), path, min_answered=0.9)
    assert "q9" not in got and len(got) == 9
    assert read_jsonl(errors_path(path)) == [{"id": "q9", "error": "empty answer"}]


def test_a_dead_endpoint_stops_with_one_line_and_keeps_the_cache(tmp_path):
    path = tmp_path / "teacher.jsonl"
    with FakeOpenAI(reply=_echo) as server:
        teacher_answers(IDS[:4], PROMPTS[:4], endpoint_asker(_teacher(server.url)), path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(TeacherError) as err:
        teacher_answers(IDS, PROMPTS, endpoint_asker(_teacher(dead, timeout_s=2)), path, who="teacher gpt-4")
    message = str(err.value)
    assert "\n" not in message and message.startswith("teacher gpt-4: 4 of 10 prompts answered (6 failed")
    assert str(path) in message and "APIConnectionError" in message
    assert [r["id"] for r in read_jsonl(path)] == IDS[:4]  # nothing already cached is lost


def test_ids_and_prompts_must_agree(tmp_path):
    with pytest.raises(ValueError, match="2 ids for 3 prompts"):
        teacher_answers(["a", "b"], ["x", "y", "z"], lambda p, s: [], tmp_path / "t.jsonl")


@pytest.mark.slow
@pytest.mark.vllm
def test_a_real_vllm_server_as_the_black_box_teacher(vllm_chat_server, tmp_path):
    """vLLM's own OpenAI-compatible server (a tiny random chat model) as the teacher, sampled at T = 1 with
    a seed per prompt (greedy, the random model writes only newlines): answers cached, a rerun asks
    nothing, and asking again with the same seed gives the same text (the teacher's answers reproduce)."""
    (url, folder), path = vllm_chat_server, tmp_path / "teacher.jsonl"
    ids, prompts = IDS[:6], PROMPTS[:6]
    ask = endpoint_asker(_teacher(url, model=str(folder), temperature=1.0, max_tokens=8, timeout_s=120))
    got = teacher_answers(ids, prompts, ask, path, chunk=3, min_answered=0.0)
    errors = read_jsonl(errors_path(path)) if errors_path(path).exists() else []
    assert len(got) + len(errors) == len(ids) and all(e["error"] == "empty answer" for e in errors), errors
    assert len(got) >= len(ids) - 1 and len(set(got.values())) > 1, got
    k = ids.index(next(iter(got)))
    assert ask([prompts[k]], [k]) == [(got[ids[k]], None)]  # same prompt, same seed: same answer

    def must_not_ask(prompts, indices):
        raise AssertionError("a rerun asked the teacher again")

    keep = [k for k, i in enumerate(ids) if i in got]
    assert teacher_answers([ids[k] for k in keep], [prompts[k] for k in keep], must_not_ask, path) == got
