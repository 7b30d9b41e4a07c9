"""ops/channels.py: per-channel maps over long rows give the broadcast's results bit for bit."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_cnn.ops.channels import row_repeats, tiled, wide


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
