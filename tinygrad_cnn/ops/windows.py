"""Sliding windows, shared by convolution and pooling.

A kernel of size k with stride s and dilation d slides over an axis of length n padded by p_total:
output position o reads input positions ``o*s + i*d`` for kernel offsets i = 0..k-1, so

    out = floor((n + p_total - d*(k-1) - 1) / s) + 1.

Instead of looping over output pixels, conv and pool loop over the k_h*k_w kernel *offsets*: for a
fixed offset (i, j) the pixels read by all output positions form one strided view of the input,
``x[..., i*d : : s, j*d : : s, ...]`` cut to the output size. Each op then does one vectorised pass
per offset (a copy into the im2col matrix, a maximum, a sum), and its backward adds the gradient
back through the same views.
"""

from __future__ import annotations

import numpy as np

from ..checks import check_choice, check_pair

Pads = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def out_size(n: int, k: int, s: int, p_total: int, d: int = 1) -> int:
    return (n + p_total - d * (k - 1) - 1) // s + 1


def resolve_padding(fn: str, padding, size: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> Pads:
    """``padding`` (int, (h, w), "valid" or "same") as ((top, bottom), (left, right)).

    "same" follows TensorFlow for any stride: the output has ceil(n / s) positions, the total padding
    is max((out - 1)*s + (k - 1)*d + 1 - n, 0), and the odd pixel goes to the bottom/right.
    """
    if isinstance(padding, str):
        check_choice(fn, "padding", padding, ("same", "valid"))
        if padding == "valid":
            return (0, 0), (0, 0)
        pads = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]
    ph, pw = check_pair(fn, "padding", padding, minimum=0)
    return (ph, ph), (pw, pw)


def window(a: np.ndarray, i: int, j: int, out_hw: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int] = (1, 1), axes: tuple[int, int] = (2, 3)) -> np.ndarray:
    """The strided view of ``a`` read by kernel offset (i, j) at every output position.

    ``axes`` are the spatial axes: (2, 3) for NCHW, (1, 2) for NHWC. Shape: ``a``'s with the spatial
    axes replaced by ``out_hw``.
    """
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    index = [slice(None)] * a.ndim
    index[axes[0]] = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
    index[axes[1]] = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
    return a[tuple(index)]


def pad_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each of the n + before + after padded positions, the input position it copies.

    "replicate" repeats the edge (-1 -> 0), "circular" wraps around (-1 -> n - 1).
    """
    positions = np.arange(-before, n + after)
    return np.clip(positions, 0, n - 1) if mode == "replicate" else positions % n


def pad(a: np.ndarray, pads: Pads, mode: str, axes: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """``a`` padded on its two spatial ``axes``: with ``value`` ("zeros" mode), or by copying edge
    ("replicate") or opposite ("circular") pixels. A new C-ordered array of ``a``'s dtype."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return a
    if mode != "zeros":
        a = np.take(a, pad_index(a.shape[axes[0]], top, bottom, mode), axis=axes[0])
        return np.take(a, pad_index(a.shape[axes[1]], left, right, mode), axis=axes[1])
    shape = list(a.shape)
    shape[axes[0]] += top + bottom
    shape[axes[1]] += left + right
    out = np.full(shape, value, dtype=a.dtype)  # C order in the axes as given (NHWC stays NHWC)
    inner = [slice(None)] * a.ndim
    inner[axes[0]] = slice(top, top + a.shape[axes[0]])
    inner[axes[1]] = slice(left, left + a.shape[axes[1]])
    out[tuple(inner)] = a
    return out


def unpad(g: np.ndarray, pads: Pads, mode: str, axes: tuple[int, int]) -> np.ndarray:
    """The adjoint of :func:`pad`: the gradient of the padded array folded back onto the input.

    Zero padding just drops the border; replicate/circular padding add each padded row/column's
    gradient onto the input row/column it copied (a loop over the few padded positions only).
    """
    (top, bottom), (left, right) = pads
    for axis, before, after in ((axes[0], top, bottom), (axes[1], left, right)):
        if before == after == 0:
            continue
        n = g.shape[axis] - before - after
        inner = np.take(g, np.arange(before, before + n), axis=axis)
        if mode != "zeros":
            source = pad_index(n, before, after, mode)
            for k in [*range(before), *range(before + n, before + n + after)]:
                index = [slice(None)] * g.ndim
                index[axis] = source[k]
                src = list(index)
                src[axis] = k
                inner[tuple(index)] += g[tuple(src)]
        g = inner
    return g
