"""A fake OpenAI-compatible chat server on 127.0.0.1 for the chat-client tests (and any paper's).

    with FakeOpenAI(mode="flaky", fail_first=2) as server:
        client = ChatClient(server.url, "m")
        ...
        assert len(server.requests) == 3                  # every request the server saw, with its payload

Modes (`mode`): "ok" (200, `reply(payload)` as the content), "error" (500 always), "flaky" (500 for the
first `fail_first` requests, then ok), "429" (429 with `Retry-After: retry_after` for the first
`fail_first` requests, then ok), "hang" (no answer for `hang_s`, then ok), "bad" (400, a client error).
Each request may wait `delay(payload)` seconds before answering; `in_flight` / `max_in_flight` count the
requests being handled at once (measured here, in the server).

Faults (`faults=Faults(rate=0.3, seed=0)`, in any mode): a seeded share of requests is delayed ("slow":
answered after `slow_s`; "hang": no answer for `hang_s`, past the client's timeout), dropped (the
connection closed with no response) or answered 429 (with `Retry-After: retry_after_s`) or 500. Whether
attempt k of a request faults is a hash of (seed, the request's JSON, k), so the same requests meet the
same faults on a fresh server (rerun with the same plan: the same faults) and retries on one server move
on through the schedule. `always` picks a share of the requests that fault on each of their first
`always_for` attempts, then heal (a schedule that depletes: set `always_for` to the client's 1 +
max_retries and the first run fails them, a rerun gets them). `faults_log` lists (key, attempt, kind).

Bounded: it listens on the loopback interface only, refuses bodies over `MAX_BODY` bytes (413), answers
400 to every chat request past `max_requests` (counted in `refused`), drops a connection idle for
`SOCKET_TIMEOUT_S`, and a hanging request waits at most `hang_s` (or until `stop`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

MODES = ("ok", "error", "flaky", "429", "hang", "bad")
FAULT_KINDS = ("slow", "hang", "drop", "429", "500")
MAX_BODY = 1 << 20
SOCKET_TIMEOUT_S = 30
MODEL_ID = "fake-model"
DROP = 0  # the status `answer` gives for a dropped connection


def request_key(payload: dict) -> str:
    """What identifies a request across retries and reruns: its whole JSON body, keys sorted."""
    return json.dumps(payload, sort_keys=True)


def _unit(*parts) -> float:
    """A uniform number in [0, 1) fixed by `parts` (sha256, not `hash`: the same in every process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Faults:
    """A seeded fault plan (module docstring); `kind(key, attempt)` is None (answer) or one of `kinds`,
    drawn uniformly (repeat a kind to weight it)."""

    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS
    always: float = 0.0
    always_for: int = 1 << 30
    slow_s: float = 0.05
    hang_s: float = 3.0
    retry_after_s: float = 0.02

    def __post_init__(self):
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds {sorted(unknown)}; valid: {', '.join(FAULT_KINDS)}")
        if self.always and set(self.kinds) == {"slow"}:
            raise ValueError("`always` needs a fault kind that fails a request, not only 'slow'")

    def is_always(self, key: str) -> bool:
        return _unit(self.seed, "always", key) < self.always

    def kind(self, key: str, attempt: int) -> str | None:
        sticky = self.is_always(key) and attempt < self.always_for
        if not sticky and _unit(self.seed, "rate", key, attempt) >= self.rate:
            return None
        kinds = [k for k in self.kinds if k != "slow"] if sticky else self.kinds  # sticky: a real failure
        return kinds[int(_unit(self.seed, "kind", key, attempt) * len(kinds))]


class FakeOpenAI:
    """The server's behaviour and what it saw; start with `with FakeOpenAI(...) as server:`."""

    def __init__(
        self,
        mode: str = "ok",
        *,
        fail_first: int = 0,
        retry_after: float = 1.0,
        hang_s: float = 3.0,
        delay: Callable[[dict], float] | None = None,
        reply: Callable[[dict], str] | None = None,
        faults: Faults | None = None,
        max_requests: int = 10_000,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode, self.fail_first, self.retry_after, self.hang_s = mode, fail_first, retry_after, hang_s
        self.delay = delay or (lambda payload: 0.0)
        self.reply = reply or (lambda payload: "B")
        self.faults, self.max_requests, self.refused = faults, max_requests, 0
        self.attempts: Counter[str] = Counter()  # request key -> requests seen with it
        self.faults_log: list[tuple[str, int, str]] = []  # (request key, attempt, fault kind)
        self.requests: list[tuple[float, dict]] = []  # (monotonic arrival time, JSON payload)
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        assert self._server.server_address[0] == "127.0.0.1"  # loopback only
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()  # wakes hanging requests
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def answer(self, payload: dict) -> tuple[int, dict, dict]:
        """(status, headers, body) for one chat request; records it and counts it in flight."""
        key = request_key(payload)
        with self.lock:
            self.requests.append((time.monotonic(), payload))
            count = len(self.requests)
            attempt = self.attempts[key]
            self.attempts[key] += 1
            fault = self.faults.kind(key, attempt) if self.faults else None
            if fault:
                self.faults_log.append((key, attempt, fault))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if count > self.max_requests:
                with self.lock:
                    self.refused += 1
                return 400, {}, _error(f"over the test's budget of {self.max_requests}", "budget")
            if fault in ("slow", "hang"):
                self.stopping.wait(self.faults.slow_s if fault == "slow" else self.faults.hang_s)
            if fault == "drop":
                return DROP, {}, {}
            if fault == "429":
                wait = {"Retry-After": f"{self.faults.retry_after_s:g}"}
                return 429, wait, _error("slow down", "rate_limit")
            if fault == "500":
                return 500, {}, _error("internal error", "server_error")
            if self.mode == "hang":
                self.stopping.wait(self.hang_s)
            wait = self.delay(payload)
            if wait:
                self.stopping.wait(wait)
            if self.mode == "error" or (self.mode == "flaky" and count <= self.fail_first):
                return 500, {}, _error("internal error", "server_error")
            if self.mode == "429" and count <= self.fail_first:
                return 429, {"Retry-After": f"{self.retry_after:g}"}, _error("slow down", "rate_limit")
            if self.mode == "bad":
                return 400, {}, _error("context too long", "invalid_request_error")
            message = {"role": "assistant", "content": self.reply(payload)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            body = {
                "id": f"c{count}",
                "object": "chat.completion",
                "created": 0,
                "model": payload.get("model"),
            }
            return 200, {}, {**body, "choices": [choice]}
        finally:
            with self.lock:
                self.in_flight -= 1


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # not the default 5: a burst of connects must not wait on a SYN retry (1 s)


def _error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind}}


def _handler(server: FakeOpenAI) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out, left
                self.wfile.write(data)

        def do_GET(self) -> None:
            if not self.path.rstrip("/").endswith("/models"):
                return self._send(404, _error(f"no route {self.path}", "not_found"))
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "test"}
            self._send(200, {"object": "list", "data": [model]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, _error(f"body of {length} bytes > {MAX_BODY}", "too_large"))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, _error(f"no route {self.path}", "not_found"))
            status, headers, body = server.answer(json.loads(self.rfile.read(length)))
            if status == DROP:  # close the connection with no response: the client sees a disconnect
                self.close_connection = True
                return None
            self._send(status, body, headers)

    return Handler
