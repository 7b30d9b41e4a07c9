"""Hypothesis strategies for property-testing ops, the same ones this project's own tests use.

    from hypothesis import given
    from tinygrad_cnn.testing import arrays, conv_configs

    @given(arrays(min_dims=1))
    def test_my_op_gradient(x):
        assert tc.gradcheck(my_op, x)

Finite differences need smooth inputs: ``arrays(distinct=True)`` gives values at least 0.1 apart (no
ties for max or max-pool), ``away_from=0.0`` keeps values off relu's kink.
"""

from __future__ import annotations

import numpy as np

try:
    from hypothesis import assume
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as e:  # the base install has no Hypothesis; `import tinygrad_cnn` does not need it
    raise ImportError("tinygrad_cnn.testing needs Hypothesis: pip install hypothesis "
                      "(or the dev extras: pip install -e \".[dev]\")") from e

__all__ = ["shapes", "arrays", "broadcastable_shapes", "conv_configs", "pool_configs", "out_size"]


def shapes(min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 5):
    """Array shapes such as ``(3, 1, 4)``."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def arrays(draw, shape=None, dtype=np.float64, *, min_dims: int = 0, max_dims: int = 4, max_side: int = 5,
           low: float = -3.0, high: float = 3.0, distinct: bool = False, away_from: float | None = None):
    """Finite float arrays of ``shape`` (a tuple, or a strategy of shapes; random when None), in [low, high].

    ``distinct``: all values distinct, at least (high - low - 0.1) / (2 * size) apart (a shuffled grid with
    jitter): no ties for max or max-pool, so finite differences stay smooth.
    ``away_from``: no value within 0.05 of it (for kinks such as relu's at 0); with ``distinct`` the grid
    skips that band, so values near the kink are moved without meeting.
    """
    if shape is None:
        shape = shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side)
    if not isinstance(shape, tuple):
        shape = draw(shape)
    size = int(np.prod(shape))
    if distinct:  # a grid over [low, high] with the band around away_from cut out, so no two values meet there
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        band = (low, low) if away_from is None else (max(away_from - 0.05, low), min(away_from + 0.05, high))
        gap = max(band[1] - band[0], 0.0)
        step = (high - low - gap) / max(size, 1)
        x = low + step * (rng.permutation(size) + 0.5 + rng.uniform(-0.25, 0.25, size))
        x = np.where(x >= band[0], x + gap, x) if gap else x
        return x.reshape(shape).astype(dtype)
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)
    x = draw(hnp.arrays(np.float64, shape, elements=elements)).reshape(-1)
    if away_from is not None:
        near = np.abs(x - away_from) < 0.05
        x = np.where(near, away_from + np.where(x >= away_from, 0.05, -0.05), x)
    return x.reshape(shape).astype(dtype)


def broadcastable_shapes(max_dims: int = 4, max_side: int = 4):
    """Pairs ``(shape_a, shape_b)`` that broadcast together, in both directions (either may be larger)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_dims,
                                             max_side=max_side).map(lambda s: s.input_shapes)


def out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a sliding window: floor((size + pad_total - dilation*(kernel-1) - 1) / stride) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


@st.composite
def conv_configs(draw, max_batch: int = 2, max_channels: int = 3, max_size: int = 7, max_kernel: int = 3,
                 modes=("zeros", "replicate", "circular")):
    """Valid conv2d configurations as a dict: ``x_shape`` (N, C, H, W), ``w_shape`` (F, C, KH, KW),
    ``bias`` (bool), ``stride``, ``padding`` (int, pair, "same" or "valid"), ``padding_mode``, ``dilation``."""
    n, c, f = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = draw(st.one_of(st.just(1), st.integers(1, 2), st.tuples(st.integers(1, 2), st.integers(1, 2))))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                             st.sampled_from(["same", "valid"])))
    mode = draw(st.sampled_from(modes))
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    dh, dw = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    if padding == "same":
        pads = [max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                for size, s, k, d in ((h, sh, kh, dh), (w, sw, kw, dw))]
    else:
        ph, pw = (0, 0) if padding == "valid" else padding if isinstance(padding, tuple) else (padding, padding)
        pads = [2 * ph, 2 * pw]
    assume(out_size(h, kh, sh, pads[0], dh) >= 1 and out_size(w, kw, sw, pads[1], dw) >= 1)
    if mode == "circular":  # a periodic pad cannot wrap around more than once
        assume(-(-pads[0] // 2) <= h and -(-pads[1] // 2) <= w)
    return dict(x_shape=(n, c, h, w), w_shape=(f, c, kh, kw), bias=draw(st.booleans()),
                stride=stride, padding=padding, padding_mode=mode, dilation=dilation)


@st.composite
def pool_configs(draw, max_batch: int = 2, max_channels: int = 3, max_size: int = 8, max_kernel: int = 3):
    """Valid pooling configurations as a dict: ``x_shape``, ``kernel_size``, ``stride`` (None = kernel),
    ``padding`` (at most half the kernel, so every window holds a real element)."""
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    kernel = draw(st.one_of(st.integers(1, max_kernel), st.tuples(st.integers(1, max_kernel),
                                                                  st.integers(1, max_kernel))))
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.one_of(st.integers(0, 1), st.tuples(st.integers(0, 1), st.integers(0, 1))))
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    assume(2 * ph <= kh and 2 * pw <= kw)
    sh, sw = (kh, kw) if stride is None else stride if isinstance(stride, tuple) else (stride, stride)
    assume(out_size(h, kh, sh, 2 * ph) >= 1 and out_size(w, kw, sw, 2 * pw) >= 1)
    return dict(x_shape=(n, c, h, w), kernel_size=kernel, stride=stride, padding=padding)
