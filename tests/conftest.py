"""Test-wide settings."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """Multi-threaded OpenBLAS on 2 shared cores made small SVDs 100x slower here; one thread is steady."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> int:
    """torch's thread count when the session starts (before any module fixture changes it)."""
    import torch

    return torch.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_torch_threads(_torch_threads):
    """Every test starts and ends with the session's torch thread count: a test or a module fixture that
    sets it must not change the numerics of the tests after it (the digits e2e test's accuracy does)."""
    import torch

    torch.set_num_threads(_torch_threads)
    yield
    torch.set_num_threads(_torch_threads)
