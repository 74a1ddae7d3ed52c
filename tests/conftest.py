"""Shared fixtures. torch is imported only by the tests that ask for it."""
import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """Engine tests run single-threaded: deterministic and fair to a shared 2-core box."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
