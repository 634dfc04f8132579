"""The cryo-EM stack and the all-pairs wavelet EMDs over a Dask cluster equal the single-process results.

One in-process cluster (two workers of one thread each) serves the whole module. Each test forces at least
three batches with a small budget, asserts that both workers ran some, and compares with the serial run
exactly: the workers run the same batches with the same operations (single-threaded FFTs there; scipy's
FFT splits a batch of transforms over its threads, each transform computed alike, so the thread count
does not change a value), and the noise of image i is keyed by the seed and i alone.
"""

import time

import numpy as np
import pytest

from mbook.core import backend, grids
from mbook.cryoem import image_formation, micrographs, particles, voxels, wasserstein, wemd_family

distributed = pytest.importorskip("distributed")

H = backend.asnumpy
ATOMS = particles.random_structure(40, radii=(12.0, 10.0, 8.0), sigma=2.0, seed=3)
GRID2 = grids.make_grid(gpts=(32, 32), sampling=2.0)


@pytest.fixture(scope="module")
def client():
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def _run(client, run, name):
    """``run()`` on the cluster, and the workers that ran tasks whose key holds ``name``."""
    with distributed.get_task_stream(client) as stream:
        result = run()
    tasks = [task for task in stream.data if name in task["key"]]
    return result, len(tasks), {task["worker"] for task in tasks}


def _per_image_atoms(n):
    """One conformation per image (positions and weights): the atoms stretched along x by up to 20 %."""
    stretch = np.linspace(1.0, 1.2, n)
    positions = H(ATOMS.positions)[None] * np.stack([stretch, np.ones(n), np.ones(n)], axis=1)[:, None, :]
    weights = H(ATOMS.weights)[None] * np.linspace(0.8, 1.0, n)[:, None]
    return particles.Atoms(backend.asarray(positions), backend.asarray(weights), ATOMS.sigma)


def _structures(kind, n):
    """(structure, budget) for a stack of n images with batches of two or three images."""
    if kind == "atoms":
        return ATOMS, 300_000
    if kind == "conformations":
        return _per_image_atoms(n), 300_000
    if kind == "function":
        atoms = _per_image_atoms(n)
        return (lambda i: particles.Atoms(atoms.positions[i], atoms.weights[i], atoms.sigma)), 300_000
    volume = particles.gaussian_volume(ATOMS, grids.make_grid(gpts=(32,) * 3, sampling=2.0))
    return volume, 3 * voxels.GATHER_BYTES_PER_VOXEL * 32**3


@pytest.mark.parametrize("kind", ["atoms", "conformations", "function", "volume"])
def test_a_stack_over_the_cluster_is_the_serial_stack(device, client, kind):
    """Atoms shared by every image, one conformation per image (sent with its batch), a function giving
    image i's particle and a voxel volume (scattered once): the same noisy images, batch by batch in stack
    order, made on both workers."""
    n = 10
    structure, budget = _structures(kind, n)
    params = micrographs.draw_parameters(n, seed=9, max_shift=5.0, contrast_spread=0.2, images_per_micrograph=4)
    options = dict(snr=0.1, seed=1, budget=budget, pilot=6)
    serial = list(micrographs.stream_images(structure, params, GRID2, **options))
    shared, count, workers = _run(
        client, lambda: list(micrographs.stream_images(structure, params, GRID2, client=client, **options)),
        "image_batch")
    assert len(serial) >= 3 and count == len(serial) and len(workers) == 2
    assert [b.start for b in shared] == [b.start for b in serial]
    assert {b.noise_sigma for b in shared} == {serial[0].noise_sigma} and serial[0].noise_sigma > 0
    assert all(backend.get_array_module(b.images) is backend.xp for b in shared)
    for mine, theirs in zip(shared, serial):
        np.testing.assert_array_equal(H(mine.images), H(theirs.images))


def test_per_image_weights_follow_their_images(device):
    """A batch of images k.. takes the weights of conformations k.., not of the first ones."""
    n = 6
    atoms = _per_image_atoms(n)
    params = micrographs.draw_parameters(n, seed=4)
    stack = np.concatenate([H(b.images) for b in micrographs.stream_images(atoms, params, GRID2, budget=300_000)])
    direct = particles.project_atoms(atoms, params.rotations, GRID2)
    expected = image_formation.form_images(direct, GRID2, defocus=params.defocus, shifts=params.shifts,
                                           contrast=params.contrast)
    np.testing.assert_allclose(stack, H(expected), rtol=1e-12, atol=1e-12 * np.abs(stack).max())


def test_closing_a_stream_early_cancels_its_batches(client):
    params = micrographs.draw_parameters(40, seed=2)
    stream = micrographs.stream_images(ATOMS, params, GRID2, snr=0.5, budget=300_000, pilot=4, client=client)
    first = next(stream)
    assert first.start == 0
    stream.close()
    deadline = time.monotonic() + 10
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0  # nothing left behind


def _unit(stack):
    return stack / stack.sum(axis=tuple(range(1, stack.ndim)), keepdims=True)


def test_pairwise_wemd_over_the_cluster_is_the_serial_matrix(device, client):
    densities = _unit(np.random.default_rng(1).random((9, 16, 16)))
    budget = 3 * 2 * 8 * wasserstein.embedding_size((16, 16))  # three rows of differences at a time
    serial = wasserstein.pairwise_wemd(densities, sampling=2.0, budget=budget)
    shared, strips, workers = _run(
        client, lambda: wasserstein.pairwise_wemd(densities, sampling=2.0, budget=budget, client=client), "l1_strip")
    assert strips >= 3 and len(workers) == 2
    assert backend.get_array_module(shared) is backend.xp
    np.testing.assert_array_equal(H(shared), H(serial))
    embedded = wasserstein.wavelet_embedding(densities[0])
    _, count, workers = _run(client, lambda: wasserstein.pairwise_wemd(densities, client=client), "embed_all")
    assert embedded.shape[0] == wasserstein.embedding_size((16, 16))
    if device == "cpu":  # PyWavelets on the workers' hosts
        assert count >= 3 and len(workers) == 2
    else:  # on a device the embeddings are made here, a batch per matrix product
        assert count == 0


def test_pairwise_l1_over_the_cluster_is_the_serial_matrix(device, client):
    embedded = backend.asarray(np.random.default_rng(2).standard_normal((23, 50)))
    serial = wasserstein.pairwise_l1(embedded, budget=3 * 2 * 50 * 8)
    shared, strips, workers = _run(client, lambda: wasserstein.pairwise_l1(embedded, budget=3 * 2 * 50 * 8,
                                                                           client=client), "l1_strip")
    assert strips >= 3 and len(workers) == 2
    np.testing.assert_array_equal(H(shared), H(serial))
    single = wasserstein.pairwise_l1(embedded[:1], client=client)  # one row: no pairs, no strips
    np.testing.assert_array_equal(H(single), np.zeros((1, 1)))


@pytest.mark.parametrize("k", [2, 3])
def test_family_pairwise_over_the_cluster_is_the_serial_matrix(device, client, k, monkeypatch):
    from mbook.core import progress

    rng = np.random.default_rng(k)
    table = wemd_family.precompute(rng.standard_normal((k, 8, 8, 8)), sampling=2.0, leaf_size=4)
    z = rng.standard_normal((30, k))
    n_pairs = 30 * 29 // 2
    planned, plan = [], progress.plan_batches
    monkeypatch.setattr(progress, "plan_batches", lambda **kw: planned.append(kw["bytes_per_item"]) or plan(**kw))
    wemd_family.pairwise(z, table)  # the bytes per pair it plans with (k = 3: measured on a seeded sample)
    budget = 8 * (2 * 30 * 30 + 3 * n_pairs) + 100 * planned[-1]  # batches of 100 of the 435 pairs
    serial = wemd_family.pairwise(z, table, budget=budget)
    shared, count, workers = _run(client, lambda: wemd_family.pairwise(z, table, budget=budget, client=client),
                                  "pair_batch")
    assert count == 5 and len(workers) == 2
    assert backend.get_array_module(shared) is backend.xp
    # a GPU's scatter-adds sum in the order its threads arrive (2e-16 apart on an H200): the same to rounding
    np.testing.assert_allclose(H(shared), H(serial), rtol=1e-14 if device == "gpu" else 0)


@pytest.mark.parametrize("call", [
    lambda c: micrographs.stream_images(ATOMS, micrographs.draw_parameters(2), GRID2, client=c),
    lambda c: wasserstein.pairwise_l1(np.ones((3, 4)), client=c),
    lambda c: wasserstein.pairwise_wemd(_unit(np.ones((3, 8, 8))), client=c),
    lambda c: wemd_family.pairwise(np.zeros((3, 2)), wemd_family.precompute(np.ones((2, 8, 8))), client=c),
], ids=["stream_images", "pairwise_l1", "pairwise_wemd", "family_pairwise"])
@pytest.mark.parametrize("bad", ["not-a-client", 3])
def test_a_non_client_is_refused_before_any_work(call, bad):
    with pytest.raises(TypeError, match="client must be a dask"):
        call(bad)
