"""Many small tanh MLPs trained at once with plain gradient descent: the study's grid, vectorised.

The original study trained each network with a per-example numpy loop. Stochastic (on-line) mode at
50,000 iterations is 80 x 50,000 = 4 million sequential updates per run, so no batching over samples
can shorten it; what can be shared is everything *across runs*. Here runs that see the same training
samples in the same order (same network shape and fold; different learning rates and modes) advance
together, one sample at a time, with the run index as the innermost, contiguous array axis:

- one kernel serves all three modes: every run accumulates the per-sample gradient and applies it when
  its own batch is full (batch size 1 = stochastic, 16 = mini-batch, n = batch); the update is the mean
  gradient of the batch times the run's learning rate, as in the study;
- runs that differ only in their iteration count are the same trajectory stopped at different epochs
  (same initial weights, same sample order), so the longest run is trained once and the shorter ones are
  parameter snapshots taken on the way; the snapshots also give the convergence curves;
- the loop is compiled with numba when it is installed (``nogil``, groups run on two threads); without
  numba the same algorithm runs in numpy, vectorised over runs (correct, much slower in stochastic mode).

An "iteration" is an epoch: every mode passes each training sample once per iteration.
Inside the loop tanh is a rational approximation (|error| < 3e-7) so that it vectorises; predictions
from the trained weights use numpy's exact tanh. The grid runs in float32 by default (study.py).

``exact=True`` is the original study's output arithmetic instead (``--recipe study``, in float64):
the sigmoid as 1 / (1 + exp(-z)) and the output gradient as dA = -(y / a - (1 - y) / (1 - a)) times
a (1 - a). That equals a - y until a rounds to exactly 0 or 1; there it is 0 / 0, and the weights
become NaN as the original's did. ``study_init`` and ``study_epoch_orders`` give its N(0, 1) start
(seed 14) and its per-epoch shuffles (seed 10 + epoch).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

try:  # numba is optional: a compiled loop makes the 4-million-update runs take seconds.
    import numba as _numba
except Exception:  # pragma: no cover - exercised where numba is absent
    _numba = None


def layer_offsets(sizes: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """(weight offset, bias offset, fan_in, fan_out) of each layer in the flat parameter vector.

    Layer l's weights are stored row-major as W[out, in], followed by its biases.
    """
    out, off = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        out.append((off, off + fan_in * fan_out, fan_in, fan_out))
        off += fan_in * fan_out + fan_out
    return out


def n_params(sizes: tuple[int, ...]) -> int:
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def glorot_init(sizes: tuple[int, ...], seed: int) -> np.ndarray:
    """Glorot-uniform weights, zero biases: a flat float64 vector."""
    rng = np.random.default_rng(seed)
    p = np.zeros(n_params(sizes))
    for woff, boff, fi, fo in layer_offsets(sizes):
        lim = math.sqrt(6.0 / (fi + fo))
        p[woff:boff] = rng.uniform(-lim, lim, fi * fo)
    return p


def study_init(sizes: tuple[int, ...], seed: int = 14) -> np.ndarray:
    """The original study's start: ``np.random.seed(14)``, then for each layer in order
    ``W = randn(n_out, n_in)`` (N(0, 1), no scaling) and zero biases."""
    rs = np.random.RandomState(seed)
    p = np.zeros(n_params(sizes))
    for woff, boff, fi, fo in layer_offsets(sizes):
        p[woff:boff] = rs.randn(fo, fi).ravel()
    return p


def study_epoch_orders(train_sets: list[np.ndarray], epochs: int, base_seed: int = 10) -> np.ndarray:
    """The original study's shuffles: epoch e (from 1) takes ``np.random.seed(base_seed + e)`` and
    ``permutation(m)`` of its m training samples; (F, E, m) padded with -1 like ``epoch_orders``."""
    m = max(len(ix) for ix in train_sets)
    order = np.full((len(train_sets), epochs, m), -1, dtype=np.int64)
    rs = np.random.RandomState()
    perms: dict[int, np.ndarray] = {}
    for f, ix in enumerate(train_sets):
        k = len(ix)
        if k not in perms:
            P = np.empty((epochs, k), dtype=np.int64)
            for e in range(epochs):
                rs.seed(base_seed + e + 1)
                P[e] = rs.permutation(k)
            perms[k] = P
        order[f, :, :k] = np.asarray(ix)[perms[k]]
    return order


def forward_flat(params: np.ndarray, sizes: tuple[int, ...], X: np.ndarray) -> np.ndarray:
    """Output probabilities of flat-parameter networks.

    ``params`` is (P,) or (P, R); returns (n, O) or (R, n, O). Sigmoid output for one unit, softmax
    otherwise; tanh hidden layers.
    """
    single = params.ndim == 1
    P = params[:, None] if single else params
    a = np.broadcast_to(X[None], (P.shape[1],) + X.shape)
    layers = layer_offsets(sizes)
    for li, (woff, boff, fi, fo) in enumerate(layers):
        W = P[woff:boff].T.reshape(-1, fo, fi)  # (R, out, in)
        b = P[boff:boff + fo].T  # (R, out)
        z = np.einsum("rni,roi->rno", a, W) + b[:, None, :]
        a = np.tanh(z) if li < len(layers) - 1 else z
    probs = _output(a)
    return probs[0] if single else probs


def _output(z: np.ndarray) -> np.ndarray:
    if z.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(probs: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy over samples (last two axes n, O); Y is (n, O) as the networks' targets."""
    eps = 1e-12
    if probs.shape[-1] == 1:
        p = np.clip(probs[..., 0], eps, 1 - eps)
        y = Y[:, 0]
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1)
    return -(Y * np.log(np.clip(probs, eps, 1.0))).sum(axis=-1).mean(axis=-1)


@dataclass
class GroupResult:
    snapshots: np.ndarray  # (S, P, R) parameters after each snapshot epoch
    snapshot_epochs: np.ndarray  # (S,)


# ----------------------------------------------------------------------------------------------
# The per-sample loop. Arrays with a run axis keep it last so the innermost loops are contiguous.


# tanh as a rational function (Eigen's approximant, |error| < 2e-7 on the whole line): plain
# arithmetic the compiler can vectorise across runs, where a libm call per element cannot be.
_TANH_CLAMP = 7.90531110763549805
_TANH_A = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_B = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def fast_tanh(x):
    """Rational tanh; works on scalars (compiled loop) and numpy arrays (fallback) alike."""
    a1, a3, a5, a7, a9, a11, a13 = _TANH_A
    b0, b2, b4, b6 = _TANH_B
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP) if np.ndim(x) == 0 else np.clip(x, -_TANH_CLAMP, _TANH_CLAMP)
    x2 = x * x
    p = x2 * a13 + a11
    p = x2 * p + a9
    p = x2 * p + a7
    p = x2 * p + a5
    p = x2 * p + a3
    p = x2 * p + a1
    p = x * p
    q = x2 * b6 + b4
    q = x2 * q + b2
    q = x2 * q + b0
    return p / q


def _fast_tanh_scalar(x):
    a1, a3, a5, a7, a9, a11, a13 = _TANH_A
    b0, b2, b4, b6 = _TANH_B
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x * (((((((x2 * a13 + a11) * x2 + a9) * x2 + a7) * x2 + a5) * x2 + a3) * x2) + a1)
    q = ((x2 * b6 + b4) * x2 + b2) * x2 + b0
    return p / q


def _delta_original(z, y):
    """The original's output gradient (scalars in the compiled loop, arrays in numpy)."""
    a = 1.0 / (1.0 + np.exp(-z))
    return -(y / a - (1.0 - y) / (1.0 - a)) * a * (1.0 - a)


def _train_loop(X, Y, order, fold, P, lr, bs, layer_info, n_act, snap_at, snaps, exact):
    """Train R runs in place. X (n, d), Y (n, O), order (F, E, m) int: the training sample indices of
    each fold in each epoch's order, -1 where a fold has fewer than m samples; fold (R,) int: each
    run's fold; P (n_params, R); lr (R,); bs (R,) int batch sizes; layer_info (L, 6) int:
    [woff, boff, fan_in, fan_out, act_in_off, act_out_off]; snap_at (E,) int: snapshot slot + 1 after
    that epoch or 0; snaps (S, n_params, R)."""
    F, E, m = order.shape
    R = P.shape[1]
    L = layer_info.shape[0]
    O = Y.shape[1]
    NP = P.shape[0]
    G = np.zeros_like(P)
    A = np.zeros((n_act, R), dtype=P.dtype)  # activations of every layer, input included
    D = np.zeros((n_act, R), dtype=P.dtype)  # back-propagated deltas
    Yr = np.zeros((O, R), dtype=P.dtype)
    on = np.zeros(R, dtype=P.dtype)  # 1 where the run has a sample at this step
    cnt = np.zeros(R, dtype=np.int64)
    step_r = np.zeros(R, dtype=P.dtype)
    keep = np.zeros(R, dtype=P.dtype)
    nf = np.zeros(F, dtype=np.int64)
    for f in range(F):
        for t in range(m):
            if order[f, 0, t] >= 0:
                nf[f] += 1
    d = X.shape[1]
    for e in range(E):
        for t in range(m):
            for r in range(R):
                s = order[fold[r], e, t]
                if s >= 0:
                    on[r] = 1.0
                    for i in range(d):
                        A[i, r] = X[s, i]
                    for k in range(O):
                        Yr[k, r] = Y[s, k]
                else:
                    on[r] = 0.0
            # forward
            for li in range(L):
                woff = layer_info[li, 0]
                boff = layer_info[li, 1]
                fi = layer_info[li, 2]
                fo = layer_info[li, 3]
                ain = layer_info[li, 4]
                aout = layer_info[li, 5]
                for j in range(fo):
                    aj = A[aout + j]
                    pb = P[boff + j]
                    for r in range(R):
                        aj[r] = pb[r]
                    for i in range(fi):
                        pw = P[woff + j * fi + i]
                        ai = A[ain + i]
                        for r in range(R):
                            aj[r] += pw[r] * ai[r]
                if li < L - 1:
                    for j in range(fo):
                        aj = A[aout + j]
                        for r in range(R):
                            aj[r] = _tanh(aj[r])
            # output delta = p - y (cross-entropy with sigmoid / softmax), zero for idle runs
            oo = layer_info[L - 1, 5]
            if O == 1 and exact:
                for r in range(R):
                    d_ = _delta_orig(A[oo, r], Yr[0, r])
                    D[oo, r] = d_ if on[r] > 0 else 0.0
            elif O == 1:
                for r in range(R):
                    z = A[oo, r]
                    if z >= 0:
                        p = 1.0 / (1.0 + math.exp(-z))
                    else:
                        ez = math.exp(z)
                        p = ez / (1.0 + ez)
                    D[oo, r] = (p - Yr[0, r]) * on[r]
            else:
                for r in range(R):
                    mx = A[oo, r]
                    for k in range(1, O):
                        if A[oo + k, r] > mx:
                            mx = A[oo + k, r]
                    tot = 0.0
                    for k in range(O):
                        tot += math.exp(A[oo + k, r] - mx)
                    for k in range(O):
                        D[oo + k, r] = (math.exp(A[oo + k, r] - mx) / tot - Yr[k, r]) * on[r]
            # backward: accumulate gradients, propagate deltas through tanh
            for li in range(L - 1, -1, -1):
                woff = layer_info[li, 0]
                boff = layer_info[li, 1]
                fi = layer_info[li, 2]
                fo = layer_info[li, 3]
                ain = layer_info[li, 4]
                aout = layer_info[li, 5]
                for j in range(fo):
                    dj = D[aout + j]
                    gb = G[boff + j]
                    for r in range(R):
                        gb[r] += dj[r]
                    for i in range(fi):
                        gw = G[woff + j * fi + i]
                        ai = A[ain + i]
                        for r in range(R):
                            gw[r] += dj[r] * ai[r]
                if li > 0:
                    for i in range(fi):
                        di = D[ain + i]
                        for r in range(R):
                            di[r] = 0.0
                    for j in range(fo):
                        dj = D[aout + j]
                        for i in range(fi):
                            pw = P[woff + j * fi + i]
                            di = D[ain + i]
                            for r in range(R):
                                di[r] += pw[r] * dj[r]
                    for i in range(fi):
                        di = D[ain + i]
                        ai = A[ain + i]
                        for r in range(R):
                            di[r] *= 1.0 - ai[r] * ai[r]
            # apply each run's update when its batch is full or its fold's epoch ends (contiguous
            # over runs: step is zero for runs that keep accumulating)
            anydue = False
            for r in range(R):
                step_r[r] = 0.0
                keep[r] = 1.0
                if on[r] > 0:
                    cnt[r] += 1
                    if cnt[r] >= bs[r] or t == nf[fold[r]] - 1:
                        step_r[r] = lr[r] / cnt[r]
                        keep[r] = 0.0
                        cnt[r] = 0
                        anydue = True
            if anydue:
                for q in range(NP):
                    pq = P[q]
                    gq = G[q]
                    for r in range(R):
                        pq[r] -= step_r[r] * gq[r]
                        gq[r] *= keep[r]
        slot = snap_at[e]
        if slot > 0:
            for q in range(NP):
                for r in range(R):
                    snaps[slot - 1, q, r] = P[q, r]


if _numba is not None:
    # fastmath lets the compiler fuse multiply-adds and vectorise over runs; results agree with
    # the numpy path to rounding. Without the no-NaN / no-Inf assumptions, so the exact recipe's
    # NaNs appear as they did in the original; the numpy error model lets 0 / 0 be NaN.
    _FASTMATH = {"contract", "reassoc", "arcp", "nsz", "afn"}
    _tanh = _numba.njit(inline="always", fastmath=_FASTMATH)(_fast_tanh_scalar)
    _delta_orig = _numba.njit(inline="always", error_model="numpy")(_delta_original)
    _train_loop_compiled = _numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")(_train_loop)
else:  # pragma: no cover
    _train_loop_compiled = None


def _train_loop_numpy(X, Y, order, fold, P, lr, bs, sizes, snap_at, snaps, exact=False):
    """The same algorithm in numpy, vectorised over runs: the fallback without numba."""
    with np.errstate(all="ignore"):
        _train_loop_numpy_impl(X, Y, order, fold, P, lr, bs, sizes, snap_at, snaps, exact)


def _train_loop_numpy_impl(X, Y, order, fold, P, lr, bs, sizes, snap_at, snaps, exact):
    F, E, m = order.shape
    R = P.shape[1]
    layers = layer_offsets(sizes)
    G = np.zeros_like(P)
    cnt = np.zeros(R, dtype=np.int64)
    nf = (order[:, 0, :] >= 0).sum(axis=1)
    for e in range(E):
        for t in range(m):
            s = order[fold, e, t]  # (R,)
            on = s >= 0
            si = np.where(on, s, 0)
            acts = [X[si].T.astype(P.dtype)]  # (d, R)
            for li, (woff, boff, fi, fo) in enumerate(layers):
                W = P[woff:boff].reshape(fo, fi, R)
                z = np.einsum("oir,ir->or", W, acts[-1]) + P[boff:boff + fo]
                acts.append(fast_tanh(z) if li < len(layers) - 1 else z)
            z = acts[-1]
            y = Y[si].T
            if z.shape[0] == 1 and exact:
                delta = _delta_original(z, y)
            elif z.shape[0] == 1:
                delta = 1.0 / (1.0 + np.exp(-z)) - y
            else:
                ez = np.exp(z - z.max(axis=0))
                delta = ez / ez.sum(axis=0) - y
            delta = np.where(on, delta, 0.0)
            for li in range(len(layers) - 1, -1, -1):
                woff, boff, fi, fo = layers[li]
                a_in = acts[li]
                G[boff:boff + fo] += delta
                G[woff:boff] += (delta[:, None, :] * a_in[None, :, :]).reshape(fo * fi, R)
                if li > 0:
                    W = P[woff:boff].reshape(fo, fi, R)
                    delta = np.einsum("oir,or->ir", W, delta) * (1.0 - a_in * a_in)
            cnt += on
            due = on & ((cnt >= bs) | (t == nf[fold] - 1))
            if due.any():
                P[:, due] -= (lr[due] / cnt[due]) * G[:, due]
                G[:, due] = 0.0
                cnt[due] = 0
        if snap_at[e] > 0:
            snaps[snap_at[e] - 1] = P


def epoch_orders(train_sets: list[np.ndarray], epochs: int, seed: int) -> np.ndarray:
    """(F, E, m) per-epoch shuffles of each fold's training indices, padded with -1."""
    rng = np.random.default_rng(seed)
    m = max(len(ix) for ix in train_sets)
    order = np.full((len(train_sets), epochs, m), -1, dtype=np.int64)
    for f, ix in enumerate(train_sets):
        perm = np.argsort(rng.random((epochs, len(ix))), axis=1)
        order[f, :, : len(ix)] = np.asarray(ix)[perm]
    return order


def train_runs(
    X: np.ndarray,
    Y: np.ndarray,
    sizes: tuple[int, ...],
    train_sets: list[np.ndarray],
    run_fold: np.ndarray,
    init: np.ndarray,
    learning_rates: np.ndarray,
    batch_sizes: np.ndarray,
    snapshot_epochs: np.ndarray,
    seed: int,
    dtype=np.float64,
    use_numba: bool | None = None,
    order: np.ndarray | None = None,
    exact: bool = False,
) -> GroupResult:
    """Train R runs of one architecture; run r trains on rows ``train_sets[run_fold[r]]`` of X.

    Runs of one fold see its samples in the same per-epoch shuffled order. ``init`` is (n_params,)
    shared or (n_params, R). ``batch_sizes``: 1 = stochastic, n or more = batch. Returns parameter
    snapshots after each epoch in ``snapshot_epochs`` (1-based, increasing; the last is the number
    of epochs trained). ``order``: the per-epoch sample orders (``study_epoch_orders``) instead of
    seeded shuffles; ``exact``: the original study's arithmetic (see the module docstring).
    """
    X = np.ascontiguousarray(X, dtype=dtype)
    Y = np.ascontiguousarray(Y, dtype=dtype)
    lr = np.ascontiguousarray(learning_rates, dtype=dtype)
    bs = np.ascontiguousarray(batch_sizes, dtype=np.int64)
    fold = np.ascontiguousarray(run_fold, dtype=np.int64)
    R = lr.shape[0]
    P = np.array(np.broadcast_to(init[:, None] if init.ndim == 1 else init, (n_params(sizes), R)), dtype=dtype)
    snapshot_epochs = np.asarray(snapshot_epochs, dtype=np.int64)
    E = int(snapshot_epochs[-1])
    if order is None:
        order = epoch_orders(train_sets, E, seed)
    order = np.ascontiguousarray(order[:, :E], dtype=np.int64)
    snap_at = np.zeros(E, dtype=np.int64)
    snap_at[snapshot_epochs - 1] = np.arange(1, len(snapshot_epochs) + 1)
    snaps = np.zeros((len(snapshot_epochs), P.shape[0], R), dtype=dtype)
    if use_numba is None:
        use_numba = numba_available()
    if use_numba:
        info, n_act = _layer_info(sizes)
        _train_loop_compiled(X, Y, order, fold, P, lr, bs, info, n_act, snap_at, snaps, bool(exact))
    else:
        _train_loop_numpy(X, Y, order, fold, P, lr, bs, sizes, snap_at, snaps, bool(exact))
    return GroupResult(snaps, snapshot_epochs)


def _layer_info(sizes):
    info = []
    act = np.concatenate([[0], np.cumsum(sizes)])
    for li, (woff, boff, fi, fo) in enumerate(layer_offsets(sizes)):
        info.append((woff, boff, fi, fo, act[li], act[li + 1]))
    return np.asarray(info, dtype=np.int64), int(act[-1])


def numba_available() -> bool:
    return _numba is not None and os.environ.get("SPINEAI_NO_NUMBA", "") in ("", "0")


def run_jobs(jobs: list[dict], threads: int | None = None) -> list[GroupResult]:
    """Run ``train_runs(**job)`` for each job; compiled loops release the GIL, so use threads."""
    if threads is None:
        threads = max(1, min(len(jobs), os.cpu_count() or 1))
    if threads == 1 or not numba_available():
        return [train_runs(**job) for job in jobs]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda job: train_runs(**job), jobs))
