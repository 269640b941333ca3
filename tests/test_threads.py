"""The thread policy of the torch estimators."""

import pytest
import torch
from joblib import Parallel, delayed

from sksam._base import SMALL_PROBLEM, in_joblib_worker, resolve_n_threads, torch_threads


@pytest.fixture
def two_threads():
    """Torch at 2 threads for the test (the suite runs at 1), restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_torch_threads_sets_and_restores(two_threads):
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_torch_threads_restores_after_error(two_threads):
    with pytest.raises(RuntimeError, match="boom"):
        with torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_torch_threads_none_leaves_setting(two_threads):
    with torch_threads(None) as n:
        assert n == 2 and torch.get_num_threads() == 2


def test_resolve_n_threads_policy():
    assert resolve_n_threads(None, SMALL_PROBLEM - 1) == 1
    assert resolve_n_threads(None, SMALL_PROBLEM) is None
    assert resolve_n_threads(3, 1) == 3
    assert resolve_n_threads(-1, 1) >= 1


def test_in_joblib_worker():
    assert not in_joblib_worker()
    inside = Parallel(n_jobs=2, backend="threading")(delayed(in_joblib_worker)() for _ in range(2))
    assert inside == [True, True]
    assert Parallel(n_jobs=2)(delayed(in_joblib_worker)() for _ in range(2)) == [True, True]


def test_resolve_in_worker_is_one_thread_for_large_problems():
    out = Parallel(n_jobs=2, backend="threading")(
        delayed(resolve_n_threads)(None, 10 * SMALL_PROBLEM) for _ in range(2)
    )
    assert out == [1, 1]
