"""common.chat.ChatClient against a fake OpenAI-compatible server on 127.0.0.1 (tests/common/fake_openai.py).

What is measured is measured in the server: how many requests arrived (retries), when (Retry-After), how
many were in flight at once (the concurrency bound), and what they carried.
"""

import socket
import time

import pytest

from common.chat import ChatClient, ChatReply, messages_for, parse_model_spec
from tests.common.fake_openai import MODEL_ID, FakeOpenAI


def test_ok_sends_one_user_turn_with_the_sampling_settings():
    with FakeOpenAI() as server:
        client = ChatClient(
            server.url, max_tokens=7, temperature=0.5, top_p=0.9, seed=3, system_prompt="Be brief."
        )
        reply = client.chat("hi")
    assert reply == ChatReply("B", None, "stop") and reply.ok
    ((_, payload),) = server.requests
    assert payload["model"] == MODEL_ID == client.model  # no model given: the first one the server lists
    assert payload["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert (payload["max_tokens"], payload["temperature"], payload["top_p"], payload["seed"]) == (
        7,
        0.5,
        0.9,
        3,
    )
    assert client.settings()["model"] == MODEL_ID and client.settings()["max_retries"] == 5


def test_a_flaky_server_is_retried_by_the_client():
    with FakeOpenAI("flaky", fail_first=2) as server:
        reply = ChatClient(server.url, "m", max_retries=3).chat("hi")
    assert reply.ok and reply.text == "B"
    assert len(server.requests) == 3  # two 500s, then the answer


def test_a_server_that_always_fails_gives_an_error_after_every_retry_and_does_not_raise():
    with FakeOpenAI("error") as server:
        start = time.monotonic()
        reply = ChatClient(server.url, "m", max_retries=2).chat("hi")
        elapsed = time.monotonic() - start
    assert not reply.ok and reply.text == "" and reply.error.startswith("InternalServerError")
    assert len(server.requests) == 3  # 1 + max_retries
    gaps = [b[0] - a[0] for a, b in zip(server.requests, server.requests[1:])]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # the client's backoff: 0.5 s then 1 s, minus <= 25% jitter
    assert elapsed < 5


def test_backoff_s_scales_the_clients_own_waits_and_a_retry_after_still_wins():
    with FakeOpenAI("error") as server:
        ChatClient(server.url, "m", max_retries=2, backoff_s=0.1).chat("hi")
    gaps = [b[0] - a[0] for a, b in zip(server.requests, server.requests[1:])]
    assert gaps[0] >= 0.075 and gaps[1] >= 0.15  # 0.1 s then 0.2 s, minus <= 25 % jitter
    assert gaps[0] < 0.375  # not openai's own first wait (0.5 s, minus jitter)
    with FakeOpenAI("429", fail_first=1, retry_after=0.8) as server:
        assert ChatClient(server.url, "m", max_retries=1, backoff_s=0.01).chat("hi").ok
    assert server.requests[1][0] - server.requests[0][0] >= 0.75  # the server's 0.8 s, not 0.01 s
    with pytest.raises(ValueError, match="backoff_s must be >= 0"):
        ChatClient(server.url, "m", backoff_s=-1)


def test_429_waits_the_retry_after_the_server_asks_for():
    with FakeOpenAI("429", fail_first=1, retry_after=1.5) as server:
        reply = ChatClient(server.url, "m", max_retries=2).chat("hi")
    assert reply.ok and len(server.requests) == 2
    gap = server.requests[1][0] - server.requests[0][0]
    assert gap >= 1.4  # honoured: the client's own first wait would be <= 0.5 s
    assert gap < 5


def test_a_hung_server_ends_at_the_per_request_timeout_with_the_error_set():
    with FakeOpenAI("hang", hang_s=20) as server:
        start = time.monotonic()
        reply = ChatClient(server.url, "m", timeout_s=0.5, max_retries=0).chat("hi")
        elapsed = time.monotonic() - start
        assert 0.4 < elapsed < 3  # the timeout, not the server's 20 s
        assert reply.error.startswith("APITimeoutError") and reply.text == ""
        assert len(server.requests) == 1
        again = ChatClient(server.url, "m", timeout_s=0.5, max_retries=1).chat("hi")
        assert again.error.startswith("APITimeoutError") and len(server.requests) == 3  # timeouts are retried


def test_a_client_error_is_not_retried():
    with FakeOpenAI("bad") as server:
        reply = ChatClient(server.url, "m", max_retries=5).chat("hi")
    assert reply.error.startswith("BadRequestError") and "context too long" in reply.error
    assert len(server.requests) == 1


@pytest.mark.parametrize("concurrency", [1, 4])
def test_chat_many_keeps_order_and_never_exceeds_concurrency(concurrency):
    prompts = [f"prompt {i}" for i in range(16)]
    # later prompts answer sooner, so completion order differs from submission order
    delay = lambda p: 0.02 * (16 - int(p["messages"][-1]["content"].split()[1]) % 16)  # noqa: E731
    echo = lambda p: p["messages"][-1]["content"].upper()  # noqa: E731
    with FakeOpenAI(delay=delay, reply=echo) as server:
        client = ChatClient(server.url, "m", concurrency=concurrency, seed=None)
        replies = client.chat_many(prompts, seeds=list(range(100, 116)))
    assert [r.text for r in replies] == [p.upper() for p in prompts]
    assert server.max_in_flight == concurrency  # bounded, and the bound is used
    sent = {p["messages"][-1]["content"]: p["seed"] for _, p in server.requests}
    assert sent == {p: 100 + i for i, p in enumerate(prompts)}  # each prompt with its own seed


def test_chat_many_checks_its_arguments_and_handles_no_prompts():
    client = ChatClient("http://127.0.0.1:9/v1", "m", max_retries=0)
    assert client.chat_many([]) == []
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        client.chat_many(["a"], seeds=[1, 2])
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        ChatClient("http://127.0.0.1:9/v1", "m", concurrency=0)


def test_a_server_that_is_down_gives_errors_not_an_exception():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", model=None, max_retries=0, timeout_s=2)
    replies = client.chat_many(["a", "b"])
    assert [r.ok for r in replies] == [False, False]
    assert all(r.error.startswith("APIConnectionError") for r in replies)


def test_model_specs():
    assert parse_model_spec("openai:gpt-4o-mini") == (None, "gpt-4o-mini")
    assert parse_model_spec("http://127.0.0.1:8000/v1") == ("http://127.0.0.1:8000/v1", None)
    assert parse_model_spec("https://host/v1#qwen") == ("https://host/v1", "qwen")
    for bad in ("openai:", "gpt-4", "ftp://host"):
        with pytest.raises(ValueError, match="model spec"):
            parse_model_spec(bad)


def test_an_openai_spec_talks_to_the_openai_base_url(monkeypatch):
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        base_url, model = parse_model_spec("openai:gpt-test")
        reply = ChatClient(base_url, model).chat([{"role": "user", "content": "hi"}])
    assert reply.ok and server.requests[0][1]["model"] == "gpt-test"
    assert messages_for([{"role": "user", "content": "x"}], "sys") == [{"role": "user", "content": "x"}]
