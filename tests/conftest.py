"""Test-wide settings."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    """Multi-threaded OpenBLAS on 2 shared cores made small SVDs 100x slower here; one thread is steady."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets torch's thread count must not change the numerics of the tests after it."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
