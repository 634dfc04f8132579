"""Batch planning under a memory budget."""

import pytest

from mbook.core.progress import memory_budget, plan_batches, progress


def test_batch_fits_budget():
    n = plan_batches(n_items=10_000, bytes_per_item=3_000, fixed_bytes=100_000, budget=1_000_000)
    assert n == 300 and 100_000 + n * 3_000 <= 1_000_000 < 100_000 + (n + 1) * 3_000


def test_batch_never_exceeds_items():
    assert plan_batches(n_items=7, bytes_per_item=1, budget=10**9) == 7


def test_refuses_with_numbers_when_nothing_fits():
    with pytest.raises(MemoryError, match=r"needs at least 2\.0 MiB .* budget is 1\.0 MiB"):
        plan_batches(n_items=5, bytes_per_item=2**20, fixed_bytes=2**20, budget=2**20)


def test_budget_from_environment(monkeypatch):
    monkeypatch.setenv("MBOOK_MEMORY_GB", "0.5")
    assert memory_budget() == 2**29
    monkeypatch.setenv("MBOOK_MEMORY_GB", "lots")
    with pytest.raises(ValueError, match="MBOOK_MEMORY_GB"):
        memory_budget()


def test_progress_iterates_everything(monkeypatch):
    monkeypatch.setenv("MBOOK_PROGRESS", "0")
    assert list(progress(range(5), desc="test")) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("threads", [1, 3])
def test_run_batches_runs_every_batch_once_with_single_threaded_ffts_in_a_pool(threads):
    import numpy as np

    from mbook.core import backend
    from mbook.core import progress as progress_module

    seen, workers = [], set()

    def run(start):
        seen.append(start)
        workers.add(backend.fft_kwargs(np.zeros(2)).get("workers"))

    progress_module.run_batches(run, range(0, 10, 2), threads=threads)
    assert sorted(seen) == [0, 2, 4, 6, 8]
    assert workers == ({1} if threads > 1 else {-1})  # a pool shares the cores between batches, not FFTs


def _blas_threads():
    """The thread counts of the BLAS libraries loaded in this process."""
    import threadpoolctl

    return {lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"}


def test_pooled_batches_run_with_one_blas_thread():
    import threadpoolctl

    from mbook.core import progress as progress_module

    inside = []
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # a multithreaded BLAS to start from
        outside = _blas_threads()
        progress_module.run_batches(lambda start: inside.append(_blas_threads()), range(4), threads=2)
        assert _blas_threads() == outside == {2}  # restored after the call
    assert inside and all(seen == {1} for seen in inside)  # batches share the cores, not each product


def test_one_blas_thread_limits_numpy_only_and_restores():
    import numpy as np
    import threadpoolctl

    from mbook.core import progress as progress_module
    from mbook.core import strict

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with progress_module.one_blas_thread(np):
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}
        with progress_module.one_blas_thread(strict.xp):  # another array module: BLAS left alone
            assert _blas_threads() == {2}


def test_run_batches_keeps_its_threads_and_runs_nested_calls_in_place():
    import threading
    import time

    from mbook.core import progress as progress_module

    def threads_of_one_call():
        names = set()

        def run(start):  # long enough that the pool starts both its threads (it starts them lazily)
            time.sleep(0.2)
            names.add(threading.get_ident())

        progress_module.run_batches(run, range(8), threads=2)
        return names

    first = threads_of_one_call()
    assert threading.get_ident() not in first and len(first) == 2
    assert threads_of_one_call() <= first  # the same threads again: their FFT plans are kept
    # A call inside a pooled batch runs in that batch's thread: no deadlock when every pool thread waits.
    inner = []

    def outer(start):
        here = threading.get_ident()
        progress_module.run_batches(lambda s: inner.append(threading.get_ident() == here), range(3), threads=2)

    progress_module.run_batches(outer, range(4), threads=2)
    assert len(inner) == 12 and all(inner)


def test_run_batches_raises_a_batch_error_after_the_other_batches_stop():
    from mbook.core import progress as progress_module

    done = []

    def run(start):
        if start == 1:
            raise RuntimeError("batch 1 failed")
        done.append(start)

    with pytest.raises(RuntimeError, match="batch 1 failed"):
        progress_module.run_batches(run, range(6), threads=2)
    assert 1 not in done


def test_run_batches_without_a_bar_runs_every_batch(capsys, monkeypatch):
    from mbook.core import progress as progress_module

    monkeypatch.setenv("MBOOK_PROGRESS", "1")
    for threads in (1, 2):
        done = []
        progress_module.run_batches(done.append, range(0, 9, 3), threads=threads, desc="quiet", show=False)
        assert sorted(done) == [0, 3, 6]
        assert "quiet" not in capsys.readouterr().err
        progress_module.run_batches(done.append, range(0, 9, 3), threads=threads, desc="loud")
        assert "loud" in capsys.readouterr().err


def test_client_threads_counts_every_worker_thread():
    from mbook.core import progress as progress_module

    class Client:
        def nthreads(self):
            return {"tcp://a": 2, "tcp://b": 3}

    assert progress_module.client_threads(Client()) == 5
    assert progress_module.client_threads(object()) == 1  # says nothing: one at a time
