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


PAD_MODES = ("zeros", "replicate", "circular")  # what pad/unpad (and conv2d's padding_mode) accept


def pad_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each of the n + before + after padded positions, the input position it copies.

    "replicate" repeats the edge (-1 -> 0), "circular" wraps around (-1 -> n - 1).
    """
    positions = np.arange(-before, n + after)
    return np.clip(positions, 0, n - 1) if mode == "replicate" else positions % n


def along(axis: int, index) -> tuple:
    """An index applying ``index`` (an int or a slice) to ``axis`` and taking every axis before it whole."""
    return (slice(None),) * axis + (index,)


def pad(a: np.ndarray, pads, mode: str, axes, value: float = 0.0) -> np.ndarray:
    """``a`` padded on ``axes`` (the two spatial axes for conv and pool, any axes for ``tc.pad``), one
    (before, after) pair per axis in ``pads``: with ``value`` ("zeros" mode), or by copying edge
    ("replicate") or opposite ("circular") elements. A new C-ordered array of ``a``'s dtype (``a``
    itself when every width is 0)."""
    if not any(before or after for before, after in pads):
        return a
    if mode != "zeros":
        for axis, (before, after) in zip(axes, pads):
            if before or after:
                a = np.take(a, pad_index(a.shape[axis], before, after, mode), axis=axis)
        return a
    shape, inner = list(a.shape), [slice(None)] * a.ndim
    for axis, (before, after) in zip(axes, pads):
        shape[axis] += before + after
        inner[axis] = slice(before, before + a.shape[axis])
    out = np.full(shape, value, dtype=a.dtype)  # C order in the axes as given (NHWC stays NHWC)
    out[tuple(inner)] = a
    return out


def unpad(g: np.ndarray, pads, mode: str, axes) -> np.ndarray:
    """The adjoint of :func:`pad`: the gradient of the padded array folded back onto the input.

    Zero padding just drops the border. Replicate padding adds the sum of the ``before`` padded
    slices onto the first input slice and that of the ``after`` ones onto the last. Circular padding
    (at most the axis length n on each side, as conv2d and ``tc.pad`` check: each padded slice copies
    a different input slice) adds the ``before`` slices onto the last ``before`` input slices and the
    ``after`` slices onto the first ``after``. Vectorised: a few slice additions per padded axis.
    """
    for axis, (before, after) in zip(axes, pads):
        if before == after == 0:
            continue
        n = g.shape[axis] - before - after
        inner = np.take(g, np.arange(before, before + n), axis=axis)  # a new array: added into below
        head, tail = g[along(axis, slice(0, before))], g[along(axis, slice(before + n, None))]
        if mode == "replicate":
            if before:
                inner[along(axis, slice(0, 1))] += head.sum(axis=axis, keepdims=True)
            if after:
                inner[along(axis, slice(n - 1, n))] += tail.sum(axis=axis, keepdims=True)
        elif mode == "circular":
            if max(before, after) > n:
                raise ValueError(f"unpad: circular padding ({before}, {after}) wraps more than once around {n}")
            inner[along(axis, slice(n - before, n))] += head
            inner[along(axis, slice(0, after))] += tail
        g = inner
    return g


def tiles(a: np.ndarray, kernel: tuple[int, int], out_hw: tuple[int, int]) -> list[np.ndarray]:
    """Every pixel of the channels-last ``a`` (N, H, W, C) once, as views in *window-major* order, for
    pooling windows that tile the image (stride = kernel):

    * for each kernel offset (i, j), row-major, the (N, OH, OW, C) pixels at that place in the windows;
    * the rows below the last row of windows (N, H - OH*KH, W, C), then the columns right of the last
      column of windows (N, OH*KH, W - OW*KW, C), which no window covers (either may be empty).
    """
    (kh, kw), (oh, ow) = kernel, out_hw
    offsets = [a[:, i: oh * kh: kh, j: ow * kw: kw] for i in range(kh) for j in range(kw)]
    return offsets + [a[:, oh * kh:], a[:, : oh * kh, ow * kw:]]
