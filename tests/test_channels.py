"""ops/channels.py: per-channel maps over long rows give the broadcast's results bit for bit."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_cnn.ops.channels import in_layout_of, row_repeats, tiled, wide


@given(pixels=st.integers(1, 3000), channels=st.integers(1, 300))
def test_row_repeats_is_the_largest_divisor_that_fits(pixels, channels):
    k = row_repeats(pixels, channels)
    assert pixels % k == 0
    assert k == 1 or k * channels <= 8192
    assert not any(pixels % d == 0 and d * channels <= 8192 for d in range(k + 1, pixels + 1))


@pytest.mark.parametrize("shape", [(3, 676, 32), (2, 121, 64), (4, 7, 5), (1, 1, 3)])
def test_wide_rows_and_tiled_vector_give_the_broadcast_bit_for_bit(shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape[-1]).astype(np.float32)
    k = row_repeats(shape[1], shape[2])
    rows, vt = wide(a, k), tiled(v, k)
    assert np.shares_memory(rows, a) and rows.shape == (shape[0], shape[1] // k, k * shape[2])
    np.testing.assert_array_equal((rows * vt + vt).reshape(shape), a * v + v)


def test_wide_refuses_to_copy():
    """A view is what callers write through (``out=``): a silent copy would lose the writes."""
    a = np.zeros((2, 4, 3), np.float32).transpose(0, 2, 1).copy().transpose(0, 2, 1)  # not C-contiguous
    with pytest.raises(ValueError):
        wide(a, 2)


def test_tiled_casts_and_repeats():
    out = tiled(np.array([1.0, 2.0]), 3, np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1, 2, 1, 2, 1, 2])


def test_in_layout_of_copies_only_when_the_layout_differs():
    like = np.zeros((2, 5, 4, 3), np.float32).transpose(0, 3, 1, 2)         # NCHW view of NHWC memory
    same = np.ones((2, 5, 4, 3), np.float64).transpose(0, 3, 1, 2)         # same layout, other dtype
    assert in_layout_of(same, like) is same
    nchw = np.arange(120, dtype=np.float32).reshape(2, 3, 5, 4)
    out = in_layout_of(nchw, like)
    assert out.strides == like.strides and out.dtype == np.float32
    np.testing.assert_array_equal(out, nchw)


def test_max_pool_backward_is_the_same_for_a_gradient_in_either_layout():
    """The pool copies an NCHW gradient into its output's NHWC layout first (speed); values unchanged."""
    from tinygrad_cnn.autograd import Context
    from tinygrad_cnn.ops.pool import MaxPool2d

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 6, 3)).astype(np.float32).transpose(0, 3, 1, 2)  # NHWC memory
    ctx = Context((True,))
    y = MaxPool2d.forward(ctx, x, kernel=(2, 2), stride=(2, 2), pads=((0, 0), (0, 0)))
    g = rng.standard_normal(y.shape).astype(np.float32)                                # NCHW memory
    from_nchw = MaxPool2d.backward(ctx, g).copy()
    from_nhwc = MaxPool2d.backward(ctx, in_layout_of(g, y))
    np.testing.assert_array_equal(from_nchw, from_nhwc)
    assert (from_nchw != 0).sum() == g.size
