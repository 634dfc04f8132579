r"""All-pairs wavelet EMD in a k-dimensional linear family, with a per-pair cost of O(log m) for k <= 2.

The problem (white paper 3.1.4): n volumes of m voxels that lie in a linear
family ``V(z) = μ + Σ_{i<k} z_i B_i`` (the output of many heterogeneity
methods, with k small), and all ``n(n-1)/2`` wavelet-EMD distances between
them. Done directly this costs O(m) per pair, O(m n²) in all.

The reduction
-------------
The wavelet embedding ``E`` of :mod:`mbook.cryoem.wasserstein` is linear, so the
mean cancels and

``d(z_a, z_b) = ||E(V(z_a) - V(z_b))||_1 = Σ_λ |g_λ · Δz| =: f(Δz)``,

with ``g_λ = (E B_1, ..., E B_k)_λ ∈ R^k`` the weighted wavelet coefficients
of the basis (one k-vector per coefficient λ, m of them) and
``Δz = z_a - z_b``. ``f`` depends on the pair only through Δz: it is the
support function of the zonotope ``Σ_λ [-g_λ, g_λ]``, a norm on R^k, and it
is linear on each cell of the arrangement of the m hyperplanes ``g_λ · u = 0``:

``f(u) = (Σ_λ sign(g_λ · u) g_λ) · u = (2 G₊(u) - G) · u``,

where ``G = Σ g_λ`` and ``G₊(u)`` sums the ``g_λ`` with ``g_λ · u > 0``. So
a distance is one *halfspace range sum*: the sum of the vectors on one side
of a hyperplane through the origin.

Make the sides explicit. Pick a generic unit vector e and flip every
``g_λ`` so that ``g_λ · e > 0`` (|g · u| does not change). Write
``u = a e + u_⊥`` and ``p_λ = P_⊥ g_λ / (g_λ · e) ∈ R^{k-1}`` (central
projection onto the plane tangent at e). Then
``sign(g_λ · u) = sign(a + u_⊥ · p_λ)``: the hemisphere becomes a
halfspace ``{p : u_⊥ · p > -a}`` of R^{k-1} containing a subset of the m
points p_λ, whose weights ``g_λ`` we must add.

The algorithm
-------------
*Precompute, O(m) plus a sort* (:func:`precompute`): the wavelet
transforms of the k basis volumes (O(k m)), the points p_λ and a balanced
binary space partition of them (a kd-tree with median splits, the "tree
decomposition"), with the vector sum of ``g`` and the bounding box of ``p``
in every node: O(m log m) for the median splits, O(m) memory.

*Per pair*: walk the tree from the root; a node whose box lies entirely on
one side of the hyperplane contributes ``± (Σ_node g) · u`` at once, and only
the nodes the hyperplane cuts are opened.

- k = 1: every point is on the same side; ``f = |G · Δz|``: O(1).
- k = 2: the points p_λ lie on a line, the tree is a sorted array, the
  hyperplane a threshold: one binary search (``searchsorted``) and a lookup
  of prefix sums give the exact ``G₊``: O(log m), the analogue of the
  white paper's O(log m 2^k).
- k >= 3: a hyperplane in R^{k-1} cuts O(m^{1-1/(k-1)}) cells of a kd-tree:
  the answer is still exact and sub-linear in m, but not polylogarithmic.
  That is no weakness of the tree: halfspace range searching with O(m)
  storage has no known polylogarithmic-query solution (the best linear-space
  structures answer in O(m^{1-1/d}) in R^d, and polylogarithmic queries
  need O(m^d) storage: Matoušek 1994; Arya, Mount & Xia 2012 for lower
  bounds in the semigroup model, which sums without subtraction and so does
  not strictly cover these sums), so with O(m) precompute we know how to
  reach a polylogarithmic per-pair cost exactly only for k <= 2.

The results equal the direct sums up to rounding (relative errors ~1e-12
for m ~ 10^7 in float64). The whole all-pairs computation costs
``O(k m + m log m + n² log m)`` for k <= 2 against ``O(m n²)`` directly.

Device rule: the precompute's wavelet transforms run on the selected device
(:func:`mbook.cryoem.wasserstein.wavelet_embedding`); the sort and the tree
are built on the host, and the table moves to the selected device once; the
queries (:func:`distances`, :func:`pairwise`) run there.

Examples
--------
>>> import numpy as np
>>> from mbook.core import backend
>>> from mbook.cryoem import wasserstein, wemd_family
>>> rng = np.random.default_rng(0)
>>> basis = rng.standard_normal((2, 16, 16))
>>> table = wemd_family.precompute(basis, sampling=1.0)
>>> z = rng.standard_normal((5, 2))
>>> fast = wemd_family.pairwise(z, table)
>>> family = np.einsum("nk,kxy->nxy", z, basis)
>>> direct = wasserstein.pairwise_wemd(family, sampling=1.0, allow_negative=True)
>>> bool(np.allclose(backend.asnumpy(fast), backend.asnumpy(direct), rtol=1e-9))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mbook.core import backend, checks, progress, scatter
from mbook.cryoem import wasserstein

#: Points per leaf of the kd-tree (k >= 3).
LEAF_SIZE = 32


class WEMDTable(NamedTuple):
    """Precomputed data of a linear family for :func:`pairwise` (arrays on the selected device).

    Attributes
    ----------
    k : int
        Dimension of the family.
    axis : (k,) ndarray
        The unit vector e.
    complement : (k, k-1) ndarray
        Orthonormal basis of the plane orthogonal to e.
    total : (k,) ndarray
        ``G = Σ_λ g_λ`` (after orientation).
    points : ndarray
        k = 2: sorted p_λ (m,). k >= 3: per-level node boxes.
    sums : ndarray or list
        k = 2: prefix sums of g in the sorted order (m+1, k). k >= 3: per-level node sums.
    leaves : ndarray or None
        k >= 3: (n_leaves, LEAF_SIZE, k) vectors g in each leaf.
    m : int
        Number of non-zero coefficients kept.
    """

    k: int
    axis: np.ndarray
    complement: np.ndarray
    total: np.ndarray
    points: object
    sums: object
    leaves: object
    m: int


def linear_family(volumes, k):
    """Mean and top-k principal components of a set of volumes (PCA by SVD, on the selected device).

    Parameters
    ----------
    volumes : (n, ...) array_like
        n maps of one shape.
    k : int
        Dimension of the family, 1 <= k <= n - 1.

    Returns
    -------
    mean : (...) ndarray
    basis : (k, ...) ndarray
        Orthonormal principal directions (in the flattened sense).
    coordinates : (n, k) ndarray
        ``z_i`` with ``volumes[i] ≈ mean + Σ_j z_ij basis[j]``.

    Raises
    ------
    ValueError
        When k exceeds the number of independent directions (n - 1).
    """
    stack = checks.check_array(volumes, "volumes", min_ndim=2, real=True).astype(float)
    n = stack.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer in [1, {n - 1}] (at most n - 1 directions for n = {n} volumes), "
                         f"got {k!r}")
    xp = backend.get_array_module(stack)
    flat = stack.reshape(n, -1)
    mean = flat.mean(axis=0)
    u, s, vt = xp.linalg.svd(flat - mean, full_matrices=False)
    return mean.reshape(stack.shape[1:]), vt[:k].reshape((k,) + stack.shape[1:]), u[:, :k] * s[:k]


def _orient(g, seed=0):
    """Host: generic axis e, the complement basis, and g flipped so that g·e > 0 (zero rows dropped)."""
    k = g.shape[1]
    g = g[np.any(g != 0, axis=1)]
    rng = checks.rng(seed)
    for _ in range(10):
        gram = g.T @ g
        _, vectors = np.linalg.eigh(gram)
        axis = vectors[:, -1] + 1e-3 * rng.standard_normal(k)
        axis /= np.linalg.norm(axis)
        dots = g @ axis
        if np.all(np.abs(dots) > 1e-12 * np.linalg.norm(g, axis=1)):
            break
    else:  # pragma: no cover - needs adversarial input
        raise ValueError("could not find an axis in general position for the coefficient vectors")
    g = g * np.sign(dots)[:, None]
    q, _ = np.linalg.qr(np.column_stack([axis, np.eye(k)[:, : k - 1]]) if k > 1 else axis[:, None])
    complement = q[:, 1:] if k > 1 else np.zeros((1, 0))
    return axis, complement, g


def precompute(basis, *, sampling=1.0, wavelet=wasserstein.WAVELET, leaf_size=LEAF_SIZE) -> WEMDTable:
    """The O(m) (plus a sort) precompute for a family with basis volumes ``B_1..B_k``.

    The wavelet transforms run on the selected device; the sort and the tree
    are made on the host; the table moves to the selected device once.

    Parameters
    ----------
    basis : (k, ...) array_like
        k basis maps of one shape (1D, 2D or 3D; any signs).
    sampling : float
        [Å].
    wavelet : str
    leaf_size : int
        Points per leaf of the kd-tree (k >= 3).

    Returns
    -------
    WEMDTable
    """
    basis = backend.asnumpy(checks.check_array(basis, "basis", real=True)).astype(float)
    if basis.ndim < 2:
        raise ValueError(f"basis must be (k, ...) maps, got shape {basis.shape}")
    leaf_size = checks.check_count(leaf_size, "leaf_size")
    k = basis.shape[0]
    g = np.stack([backend.asnumpy(wasserstein.wavelet_embedding(b, sampling=sampling, wavelet=wavelet,
                                                                allow_negative=True)) for b in basis], axis=1)
    axis, complement, g = _orient(g)
    total = g.sum(axis=0)
    m = len(g)
    p = (g @ complement) / (g @ axis)[:, None]
    if k == 1:
        table = WEMDTable(1, axis, complement, total, None, None, None, m)
    elif k == 2:
        order = np.argsort(p[:, 0], kind="stable")
        prefix = np.vstack([np.zeros(2), np.cumsum(g[order], axis=0)])
        table = WEMDTable(2, axis, complement, total, p[order, 0], prefix, None, m)
    else:
        # Bounded boxes: points on the unit sphere. Each row is scaled by its largest entry first:
        # coefficients below ~1e-154 (a volume's far tails) square to 0, and their norm with them.
        unit = g / np.abs(g).max(axis=1, keepdims=True)  # no zero rows: _orient dropped them
        directions = unit / np.linalg.norm(unit, axis=1, keepdims=True)
        table = _kd_tree(k, axis, complement, total, directions, g, leaf_size)
    return _to_device(table)


def _to_device(table: WEMDTable) -> WEMDTable:
    def move(value):
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return type(value)(move(v) for v in value)
        return backend.asarray(value)
    return table._replace(**{name: move(getattr(table, name)) for name in
                             ("axis", "complement", "total", "points", "sums", "leaves")})


def _kd_tree(k, axis, complement, total, p, g, leaf_size):
    """Host: the kd-tree of the points p (median splits), with node boxes and sums of g per level."""
    m, dim = p.shape
    depth = max(0, int(math.ceil(math.log2(max(m / leaf_size, 1)))))
    size = leaf_size * 2**depth
    p = np.vstack([p, np.repeat(p[-1:], size - m, axis=0)])  # padding: copies of a point, weight 0
    g = np.vstack([g, np.zeros((size - m, k))])
    order = np.arange(size)
    for level in range(depth):  # median splits on the widest coordinate of each node
        nodes, length = 2**level, size >> level
        block = p[order].reshape(nodes, length, dim)
        widest = np.argmax(block.max(axis=1) - block.min(axis=1), axis=1)
        key = np.take_along_axis(block, widest[:, None, None], axis=2)[:, :, 0]
        order = np.take_along_axis(order.reshape(nodes, length), np.argsort(key, axis=1, kind="stable"), 1).ravel()
    p, g = p[order], g[order]
    boxes, sums = [], []
    for level in range(depth + 1):
        block = p.reshape(2**level, -1, dim)
        boxes.append((block.min(axis=1), block.max(axis=1)))
        sums.append(g.reshape(2**level, -1, k).sum(axis=1))
    return WEMDTable(k, axis, complement, total, boxes, sums, g.reshape(2**depth, leaf_size, k), m)


def _check_table(table):
    if not isinstance(table, WEMDTable):
        raise TypeError(f"table must be a WEMDTable (see precompute), got {type(table).__name__}")
    return table


def distances(differences, table: WEMDTable, *, budget=None):
    """``f(Δz) = Σ_λ |g_λ · Δz|`` for many differences, exactly, on the selected device.

    Parameters
    ----------
    differences : (q, k) array_like
        Latent differences ``z_a - z_b``.
    table : WEMDTable
    budget : int, optional
        Memory budget for the batches of differences [bytes] (default
        :func:`mbook.core.progress.memory_budget`); see :func:`pairwise` for how
        a batch's memory is estimated.

    Returns
    -------
    (q,) ndarray
        Wavelet EMDs [Å × mass], on the selected device.
    """
    _check_table(table)
    u = checks.check_array(differences, "differences", real=True).astype(float)
    if u.ndim != 2 or u.shape[1] != table.k:
        raise ValueError(f"differences must be (q, {table.k}) for this {table.k}-dimensional family, got {u.shape}")
    table = _to_device(table)
    q = u.shape[0]
    xp = backend.get_array_module(u)
    batch = _plan_queries(q, table, 16 * q, budget, lambda sample: u[sample])
    return xp.concatenate([xp.zeros(0)] + [_distances(u[start:start + batch], table) for start in range(0, q, batch)])


#: Differences whose tree queries are traced to estimate the memory of a batch (k >= 3).
PILOT_QUERIES = 16


def _plan_queries(n_queries, table, fixed, budget, sample_differences):
    """Queries per batch under ``budget`` [bytes], refused with the numbers before any query runs.

    For k <= 2 a query's memory is a fixed handful of numbers. For k >= 3 it is
    set by the tree's nodes that the query's hyperplane cuts, whose number grows
    with the tree (about the square root of its leaves for k = 3) and with the
    data: it is measured on up to :data:`PILOT_QUERIES` differences
    (``sample_differences(indices)``, a seeded sample), one at a time, and 1.5
    times the largest is planned for every query.
    """
    base = 8 * (8 * table.k + 64)
    batch = progress.plan_batches(n_items=n_queries, bytes_per_item=base, fixed_bytes=fixed, budget=budget)
    if table.k <= 2 or n_queries == 0:
        return batch
    xp = backend.get_array_module(table.axis)
    picks = np.sort(checks.rng(0).choice(n_queries, min(n_queries, PILOT_QUERIES), replace=False))
    sample = sample_differences(backend.asarray(picks))
    per_node = 8 * (10 * table.k + 12)  # boxes, their products, sums, gathers and indices of a (query, node)
    per_leaf = 8 * table.leaves.shape[1] * (table.k + 2)  # a cut leaf's vectors, products and their moduli
    largest = 0
    for q in range(sample.shape[0]):  # one query at a time: the pilot stays within one query's memory
        census = []
        _tree_query(sample[q:q + 1], xp.zeros(1), sample[q:q + 1], table, xp, census=census)
        largest = max([largest] + [entries * per_node + leaves * per_leaf for entries, leaves in census])
    # The sample's largest, with a margin for the queries it missed.
    per_query = base + int(1.5 * largest)
    return progress.plan_batches(n_items=n_queries, bytes_per_item=per_query, fixed_bytes=fixed, budget=budget)


def _distances(u, table):
    xp = backend.get_array_module(u)
    if table.k == 1:
        return xp.abs(u @ table.total)
    if table.k == 2:
        return _sweep(u, u @ table.axis, (u @ table.complement)[:, 0], table, xp)
    return _tree_query(u, xp.zeros(u.shape[0]), u, table, xp)


def _sweep(u, a, b, table, xp):
    """k = 2: the positive side is p > -a/b (b > 0) or p < -a/b (b < 0)."""
    threshold = xp.where(b != 0, -a / xp.where(b != 0, b, 1.0), 0.0)
    right = xp.searchsorted(table.points, threshold, side="right")
    left = xp.searchsorted(table.points, threshold, side="left")
    prefix = table.sums
    positive = xp.where((b > 0)[:, None], table.total - prefix[right], prefix[left])
    positive = xp.where(((b == 0) & (a > 0))[:, None], table.total, positive)
    positive = xp.where(((b == 0) & (a <= 0))[:, None], 0.0, positive)
    return xp.sum((2 * positive - table.total) * u, axis=1)


def _tree_query(u, a, b, table, xp, census=None):
    """k >= 3: descend the kd-tree, opening only the nodes the hyperplane cuts.

    ``census``: a list to which each level appends (entries, leaves opened) (a host copy per level).
    """
    n = u.shape[0]
    result = xp.zeros(n)
    active_q = xp.nonzero(xp.any(u != 0, axis=1))[0]
    active_node = xp.zeros(active_q.shape[0], dtype=xp.int64)
    depth = len(table.sums) - 1
    children = xp.arange(2)
    for level in range(depth + 1):
        if active_q.shape[0] == 0:
            break
        low, high = (box[active_node] for box in table.points[level])
        bq = b[active_q]
        smallest = a[active_q] + xp.minimum(bq * low, bq * high).sum(axis=1)
        largest = a[active_q] + xp.maximum(bq * low, bq * high).sum(axis=1)
        inner = xp.sum(table.sums[level][active_node] * u[active_q], axis=1)
        sign = xp.where(smallest > 0, 1.0, xp.where(largest < 0, -1.0, 0.0))
        scatter.add(result, active_q, sign * inner)
        cut = sign == 0
        if census is not None:
            census.append((int(active_q.shape[0]), int(cut.sum()) if level == depth else 0))
        if level == depth:
            leaves = table.leaves[active_node[cut]]  # (c, leaf, k)
            values = xp.abs(xp.einsum("clk,ck->cl", leaves, u[active_q[cut]])).sum(axis=1)
            scatter.add(result, active_q[cut], values)
        else:
            active_q = xp.repeat(active_q[cut], 2)
            active_node = (2 * active_node[cut][:, None] + children).ravel()
    return result


def pairwise(coordinates, table: WEMDTable, *, budget=None, client=None):
    """All-pairs wavelet EMD between the family members ``V(z_i)``, on the selected device.

    The pairs ``i < j`` in batches under the budget. With a Dask ``client``
    the same batches run on its workers (the coordinates and the table
    scattered to every worker once), each batch's distances written into
    the result as they come back, then released: the same matrix.

    Parameters
    ----------
    coordinates : (n, k) array_like
        Latent coordinates z_i.
    table : WEMDTable
        From :func:`precompute` on the family's basis.
    budget : int, optional
        Memory budget for the batches of pairs [bytes] (on a cluster, per
        worker thread; the result and the pair indices are counted here).
    client : dask.distributed.Client, optional
        Compute the batches on its workers.

    Returns
    -------
    (n, n) ndarray
        Symmetric, zero diagonal [Å × mass]; on the selected device.
    """
    _check_table(table)
    checks.check_client(client)
    z = checks.check_array(coordinates, "coordinates", real=True).astype(float)
    if z.ndim != 2 or z.shape[1] != table.k:
        raise ValueError(f"coordinates must be (n, {table.k}) for this {table.k}-dimensional family, "
                         f"got shape {z.shape}")
    n = z.shape[0]
    n_pairs = n * (n - 1) // 2
    if n_pairs == 0:
        return backend.get_array_module(z).zeros((n, n))
    # Counted before anything is allocated: the (n, n) result and its symmetric sum, the pair indices, the
    # batches' distances and their concatenation, then the batches (for k >= 3 measured on a sample of pairs first).
    fixed = 8 * (2 * n * n + 4 * n_pairs)
    table = _to_device(table)
    xp = backend.get_array_module(z)

    def sample_pairs(picks):  # pair p of the upper triangle, row by row: (i, j), i < j
        i = n - 2 - xp.floor(xp.sqrt(-8.0 * picks + 4.0 * n * (n - 1) - 7) / 2.0 - 0.5).astype(xp.int64)
        j = picks + i + 1 - n * (n - 1) // 2 + (n - i) * (n - i - 1) // 2
        return z[i] - z[j]

    batch = _plan_queries(n_pairs, table, fixed, budget, sample_pairs)
    rows, cols = xp.triu_indices(n, 1)
    out = xp.zeros((n, n))
    starts = range(0, n_pairs, batch)
    if client is None:
        values = xp.concatenate([_pair_batch(start, z=z, rows=rows, cols=cols, table=table, batch=batch)
                                 for start in starts])
    else:
        # In a list: scatter would split a tuple (the table) or an array (its rows) into parts. hash=False:
        # keys of their own, so that equal arrays released by an earlier call cannot take these with them.
        shared = dict(zip(("z", "rows", "cols", "table"),
                          client.scatter([z, rows, cols, table], broadcast=True, hash=False)))
        futures = client.map(_pair_batch, list(starts), batch=batch, pure=False, **shared)
        values = xp.empty(n_pairs)
        for start, future in zip(starts, progress.progress(futures, desc="pairwise WEMD")):
            values[start:start + batch] = future.result()
            future.release()  # its distances are in the result now
    out[rows, cols] = values
    return out + out.T


def _pair_batch(start, *, z, rows, cols, table, batch):
    """Kernel: the distances of pairs ``start:start + batch`` of ``(rows, cols)``, on the inputs' device."""
    return _distances(z[rows[start:start + batch]] - z[cols[start:start + batch]], table)
