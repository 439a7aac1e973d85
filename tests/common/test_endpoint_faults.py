"""Faults at the endpoint, end to end through the consumers that cache and score endpoint replies.

A fake OpenAI-compatible server on 127.0.0.1 (tests/common/fake_openai.py, bounded by `max_requests`)
delays ("slow" answers late; "hang" outlasts the client's timeout), drops connections and answers 429 /
500 on a seeded share of requests (10 %, 30 %), plus a sticky share (10 %; or every request, "100%":
drops, 429s and 500s) that fails each of a run's 1 + max_retries tries and heals afterwards. Which attempt of which request
faults is a pure function of the plan, so `simulate` predicts every run: how many requests the client
sends (its retries) and which items still fail. Then:
- common.chat.ChatClient.chat_many retries with backoff (the client's own, scaled by `backoff_s`; a 429's
  Retry-After honoured) and returns the still-failing items with `.error` set, in order;
- SocialBench's evaluation stage (and its CLI) records those items as failed and never scores them (the
  column scores are the fault-free scores of the answered items), a rerun asks exactly the failed items,
  and the final scores equal a fault-free run's;
- Proxy-KD's black-box teacher cache stops with one line when too few answered, keeps every answer,
  records the failed calls and never uses them; the rerun asks only those (each with the seed a
  fault-free run sends it) and the cached answers equal a fault-free run's.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from common.chat import ChatClient
from common.data import shared_mirror
from common.stages import read_json, read_jsonl
from papers.proxykd.config import TOY
from papers.proxykd.data import markov_task
from papers.proxykd.stages import teacher_stage
from papers.proxykd.teacher import TeacherError, endpoint_asker, errors_path
from papers.socialbench import evaluate as cli
from papers.socialbench import stages as bench
from papers.socialbench.chat_models import make_model
from papers.socialbench.prompts import build_prompt, column_of
from papers.socialbench.scoring import score_item
from papers.socialbench.synthetic import make_sa_items, make_sp_items
from tests.common.fake_openai import FakeOpenAI, Faults, request_key

RETRIES = 3
TRIES = 1 + RETRIES
# a timeout that only a "hang" (1.5 s) outlasts, not a request slowed by busy cores, so the runs are exactly
# what `simulate` predicts; hangs are rarer than the other kinds (each costs a worker the 1 s timeout)
CLIENT = dict(max_retries=RETRIES, backoff_s=0.01, timeout_s=1.0, concurrency=8)
KINDS = ("slow", "slow", "drop", "drop", "429", "429", "500", "500", "hang")
TIMING = dict(slow_s=0.05, hang_s=1.5, retry_after_s=0.02)
PLANS = {
    "10%": Faults(rate=0.1, seed=1, kinds=KINDS, always=0.1, always_for=TRIES, **TIMING),
    "30%": Faults(rate=0.3, seed=2, kinds=KINDS, always=0.1, always_for=TRIES, **TIMING),
    "100%": Faults(seed=3, kinds=("drop", "429", "500"), always=1.0, always_for=TRIES, **TIMING),
}
MAX_RUNS = 4  # a first run and at most 3 reruns
BUDGET = 2_000  # requests one server answers (bounded); each case stays far below
ERRORS = {"InternalServerError", "RateLimitError", "APIConnectionError", "APITimeoutError"}


def simulate(plan: Faults, keys: list[str], tries: int = TRIES) -> list[tuple[int, list[str]]]:
    """Per run (the first, then reruns of what failed): (requests sent, keys failed after `tries`)."""
    attempts = dict.fromkeys(keys, 0)
    runs, todo = [], list(keys)
    while todo and len(runs) < MAX_RUNS:
        sent, failed = 0, []
        for key in todo:
            for _ in range(tries):
                kind = plan.kind(key, attempts[key])
                attempts[key] += 1
                sent += 1
                if kind in (None, "slow"):  # answered (late, for "slow")
                    break
            else:
                failed.append(key)
        runs.append((sent, failed))
        todo = failed
    assert not todo, "the plan never lets every request through"
    return runs


def _prompt(payload: dict) -> str:
    return payload["messages"][-1]["content"]


def _keys_by_prompt(server: FakeOpenAI) -> dict[str, str]:
    """prompt -> its request's key, from a fault-free run (one request per prompt)."""
    keys = {_prompt(p): request_key(p) for _, p in server.requests}
    assert len(keys) == len(server.requests)
    return keys


def _letter_reply(payload: dict) -> str:
    """A deterministic model: a letter fixed by the prompt, and no letter for one prompt in eight."""
    h = int(hashlib.sha256(_prompt(payload).encode()).hexdigest(), 16)
    return "I would rather not say." if h % 8 == 0 else f"I pick {'ABCD'[h % 4]}."


def _failed_with_an_error(error: str | None) -> bool:
    return error is not None and error.split(":")[0] in ERRORS


# --- the client ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(PLANS))
def test_the_client_retries_with_backoff_and_returns_what_still_fails_as_errors(case):
    plan = replace(PLANS[case], retry_after_s=0.1)
    prompts = [f"prompt {i}" for i in range(32)]
    seeds = list(range(32))
    with FakeOpenAI() as clean:
        ChatClient(clean.url, "m", **CLIENT).chat_many(prompts, seeds=seeds)
    keys = _keys_by_prompt(clean)
    ((sent, failed_keys),) = simulate(plan, [keys[p] for p in prompts])[:1]
    with FakeOpenAI(reply=lambda p: _prompt(p).upper(), faults=plan, max_requests=BUDGET) as server:
        replies = ChatClient(server.url, "m", **{**CLIENT, "backoff_s": 0.05}).chat_many(prompts, seeds=seeds)
    assert len(server.requests) == sent and server.refused == 0  # exactly the retries the plan calls for
    failed = {p for p in prompts if keys[p] in failed_keys}
    assert {p for p, r in zip(prompts, replies) if not r.ok} == failed
    assert failed and (case != "100%" or failed == set(prompts))
    assert all(r.text == p.upper() for p, r in zip(prompts, replies) if r.ok)  # in the prompts' order
    assert all(r.text == "" and _failed_with_an_error(r.error) for r in replies if not r.ok)
    # the waits, measured in the server between attempt k and k + 1 of one request
    arrivals: dict[str, list[float]] = {}
    for t, payload in server.requests:
        arrivals.setdefault(request_key(payload), []).append(t)
    own, told = [], []
    for key, attempt, kind in server.faults_log:
        if attempt + 1 < len(arrivals[key]):
            gap = arrivals[key][attempt + 1] - arrivals[key][attempt]
            if kind in ("500", "drop"):
                own.append((attempt, gap))
            elif kind == "429":
                told.append(gap)
    assert own and told
    assert all(gap >= 0.75 * 0.05 * 2**attempt for attempt, gap in own)  # exponential, <= 25 % jitter
    assert min(gap for attempt, gap in own if attempt == 0) < 0.375  # backoff_s, not openai's 0.5 s
    assert min(told) >= 0.1  # Retry-After honoured (the client's own first wait is <= 0.05 s)


def test_the_same_plan_on_a_fresh_server_meets_the_same_faults():
    prompts = [f"prompt {i}" for i in range(30)]
    seen = []
    for _ in range(2):
        with FakeOpenAI(faults=PLANS["30%"], max_requests=BUDGET) as server:
            replies = ChatClient(server.url, "m", **CLIENT).chat_many(prompts)
        seen.append((sorted(server.faults_log), [r.ok for r in replies]))
    assert seen[0] == seen[1] and seen[0][0]


# --- SocialBench: the evaluation stage and its CLI -------------------------------------------------------


@pytest.fixture(scope="module")
def bench_items() -> list[dict]:
    return make_sa_items(32, seed=1) + make_sp_items(32, seed=1)  # 64 items, two columns


@pytest.fixture(scope="module")
def bench_clean(bench_items, tmp_path_factory) -> tuple[dict, dict, dict[str, str]]:
    """A fault-free run: (summary, outputs by id, request key by prompt)."""
    run_dir = tmp_path_factory.mktemp("clean")
    with FakeOpenAI(reply=_letter_reply) as server:
        model = make_model(server.url + "#fake", **CLIENT)
        summary = bench.evaluate(model, bench_items, run_dir, progress=False)
    return summary, bench.read_outputs(run_dir / "outputs.jsonl"), _keys_by_prompt(server)


@pytest.mark.parametrize("case", list(PLANS))
def test_socialbench_never_scores_a_failed_item_and_a_rerun_reaches_the_fault_free_scores(
    case, bench_items, bench_clean, tmp_path
):
    clean_summary, clean_outputs, keys = bench_clean
    by_key = {keys[build_prompt(it)]: it["id"] for it in bench_items}
    runs = simulate(PLANS[case], [keys[build_prompt(it)] for it in bench_items])
    with FakeOpenAI(reply=_letter_reply, faults=PLANS[case], max_requests=BUDGET) as server:
        model = make_model(server.url + "#fake", **CLIENT)
        first = bench.evaluate(model, bench_items, tmp_path, chunk_size=32, progress=False)
        records = bench.read_outputs(tmp_path / "outputs.jsonl")
        failed = {i for i, r in records.items() if r["error"] is not None}
        assert len(server.requests) == runs[0][0]
        assert failed == {by_key[k] for k in runs[0][1]} and failed  # the sticky share at least
        assert all(records[i]["output"] == "" and _failed_with_an_error(records[i]["error"]) for i in failed)
        assert all(r["output"] == clean_outputs[i]["output"] for i, r in records.items() if i not in failed)
        # never scored: a column is the fault-free scores of its answered items; failed ones counted apart
        assert first["n_failed"] == len(failed)
        for column, score in first["columns"].items():
            mine = [it for it in bench_items if column_of(it) == column]
            answered = [
                score_item(it, clean_outputs[it["id"]]["output"]) for it in mine if it["id"] not in failed
            ]
            defined = [s for s in answered if s is not None]
            assert (score["n"], score["n_failed"]) == (len(answered), len(mine) - len(answered))
            assert score["official"] == (100 * sum(defined) / len(defined) if defined else None)
        if case == "100%":
            assert all(s["n"] == 0 and s["official"] is None for s in first["columns"].values())
            assert first["avg"]["official"] is None
        # reruns: each asks exactly the items still failed, until none is
        summary, failed_keys = first, runs[0][1]
        for sent, still_failed in runs[1:]:
            before = len(server.requests)
            summary = bench.evaluate(model, bench_items, tmp_path, chunk_size=32, progress=False)
            asked = [request_key(p) for _, p in server.requests[before:]]
            assert len(asked) == sent and set(asked) == set(failed_keys)
            assert summary["n_failed"] == len(still_failed)
            failed_keys = still_failed
        before = len(server.requests)
        again = bench.evaluate(model, bench_items, tmp_path, chunk_size=32, progress=False)
        assert len(server.requests) == before and server.refused == 0  # nothing left to ask
    assert summary == again == clean_summary  # the scores of a run without faults, to the last bit
    assert bench.regrade(tmp_path) == clean_summary


def test_socialbench_cli_exits_1_while_items_fail_and_0_with_the_fault_free_table_after_reruns(
    tmp_path, capsys
):
    data = shared_mirror()
    if data is None or not (data / "socialbench" / "emotional_perception.json").exists():
        pytest.skip("needs ../shared/data/socialbench/emotional_perception.json")
    argv = ["--categories", "ep", "--data-dir", str(data), "--limit", "15", "--no-progress"]
    knobs = ["--retries", str(RETRIES), "--backoff", "0.01", "--timeout", "0.5"]
    with FakeOpenAI(reply=_letter_reply) as clean:
        assert cli.main(["--model", clean.url + "#fake", "--out", str(tmp_path / "clean"), *argv]) == 0
    clean_table = capsys.readouterr().out
    with FakeOpenAI(reply=_letter_reply, faults=PLANS["30%"], max_requests=BUDGET) as server:
        run = ["--model", server.url + "#fake", "--out", str(tmp_path / "faults"), *argv, *knobs]
        assert cli.main(run) == 1  # the sticky share failed every try
        err = capsys.readouterr().err
        assert "items failed after every retry against" in err and "rerun to retry them" in err
        codes = [cli.main(run) for _ in range(MAX_RUNS - 1)]
        assert codes[-1] == 0 and server.refused == 0
    assert capsys.readouterr().out.endswith(clean_table)
    assert read_json(tmp_path / "faults" / "scores.json") == read_json(tmp_path / "clean" / "scores.json")


# --- Proxy-KD: the black-box teacher's answer cache ------------------------------------------------------


def _teacher_reply(payload: dict) -> str:
    """A sampling teacher at a server that honours seeds (as vLLM does): the answer depends on the seed."""
    return f"answer to {_prompt(payload)!r}, drawn with seed {payload['seed']}"


def _proxykd(url: str):
    """The toy config with an endpoint teacher, and a task of 48 prompts (the stages take them as given)."""
    teacher = replace(TOY.teacher, endpoint=url, model="fake", chunk=24, **CLIENT)
    ids = [f"q{i}" for i in range(48)]
    prompts = [f"question {i}: what is {i} + {i * 7 % 11}?" for i in range(48)]
    task = replace(markov_task(TOY, 0), ids=ids, prompts=prompts, teacher_prompts=prompts)
    return replace(TOY, teacher=teacher), replace(task, ask=endpoint_asker(teacher))


@pytest.mark.parametrize("case", list(PLANS))
def test_proxykd_teacher_keeps_answers_never_uses_failed_calls_and_a_rerun_asks_only_those(case, tmp_path):
    with FakeOpenAI(reply=_teacher_reply) as clean:
        cfg, task = _proxykd(clean.url)
        clean_rows = teacher_stage(task, cfg, tmp_path / "clean")
    keys = _keys_by_prompt(clean)
    assert sorted(p["seed"] for _, p in clean.requests) == list(range(48))  # fault-free: seed = index
    by_key = {keys[p]: i for i, p in zip(task.ids, task.teacher_prompts)}
    runs = simulate(PLANS[case], [keys[p] for p in task.teacher_prompts])
    root = tmp_path / "faults"
    rows, failed_keys, n_logged = None, [], 0
    with FakeOpenAI(reply=_teacher_reply, faults=PLANS[case], max_requests=BUDGET) as server:
        cfg, task = _proxykd(server.url)
        for run, (sent, still_failed) in enumerate(runs):
            before = len(server.requests)
            try:
                rows = teacher_stage(task, cfg, root)
                assert len(still_failed) <= 0.05 * len(task.ids)  # min_answered (95 %) met
            except TeacherError as err:  # under min_answered: one line, naming the cache, answers kept
                assert len(still_failed) > 0.05 * len(task.ids)
                assert "\n" not in str(err) and "rerun to ask for the rest" in str(err)
            asked = server.requests[before:]
            assert len(asked) == sent  # the client's retries, as the plan calls for
            if run:  # a rerun asks exactly the prompts without an answer, each with its fault-free seed
                assert {request_key(p) for _, p in asked} == set(failed_keys)
                assert all(p["seed"] == task.ids.index(by_key[request_key(p)]) for _, p in asked)
            (errors,) = (root / "teacher").glob("*.errors.jsonl")
            path = errors.with_name(errors.name.replace(".errors.jsonl", ".jsonl"))
            assert errors_path(path) == errors
            failed = {by_key[k] for k in still_failed}
            logged = read_jsonl(errors)[n_logged:]  # this run's failed calls
            assert sorted(e["id"] for e in logged) == sorted(failed)
            assert all(_failed_with_an_error(e["error"]) for e in logged)
            n_logged += len(logged)
            cached = {r["id"]: r["text"] for r in read_jsonl(path)}
            assert cached == {r["id"]: r["answer"] for r in clean_rows if r["id"] not in failed}  # all kept
            failed_keys = still_failed
        before = len(server.requests)
        assert teacher_stage(task, cfg, root) == rows
        assert len(server.requests) == before and server.refused == 0
    assert rows == clean_rows  # the answers (and so every later stage's data) of a run without faults
