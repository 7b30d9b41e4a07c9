"""Mini-batches: one pass (epoch) over a data set in slices of ``batch_size``, optionally shuffled."""

import numpy as np

from ..checks import check_int


def batches(x, y, batch_size, *, shuffle=True, rng=None):
    """Yield ``(x_batch, y_batch)`` pairs covering every sample of ``(x, y)`` exactly once.

    ``x`` is ``(N, ...)`` and ``y`` is ``(N, ...)`` (any dtypes; usually images and integer labels);
    each batch holds ``batch_size`` samples along axis 0, except the last, which holds the remaining
    ``N % batch_size`` when that is not zero. With ``shuffle=True`` the order is one permutation drawn
    from ``rng`` (a ``np.random.Generator``; ``None`` draws a fresh ``np.random.default_rng()``), and
    batches are copies; with ``shuffle=False`` the order is kept and batches are views of ``x`` and ``y``.

    Arguments are checked at the call, not at the first ``next()``: ``TypeError`` for a ``batch_size``
    that is not an int or an ``rng`` that is not a Generator, ``ValueError`` for ``batch_size < 1`` or
    ``len(x) != len(y)``.

    >>> x, y = np.zeros((10, 1, 28, 28), np.float32), np.arange(10)
    >>> [len(yb) for _, yb in batches(x, y, 4, rng=np.random.default_rng(0))]
    [4, 4, 2]
    """
    x, y = np.asarray(x), np.asarray(y)
    batch_size = check_int("batches", "batch_size", batch_size, minimum=1)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"batches: x and y must have the same length along axis 0, "
                         f"got x.shape={x.shape} and y.shape={y.shape}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"batches: rng must be a np.random.Generator or None, got {type(rng).__name__}")
    order = (rng if rng is not None else np.random.default_rng()).permutation(len(x)) if shuffle else None
    return _batches(x, y, batch_size, order)


def _batches(x, y, batch_size, order):
    for start in range(0, len(x), batch_size):
        if order is None:
            yield x[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]  # (B,) indices into axis 0
            yield x[idx], y[idx]
