"""Slow, obviously correct grouped convolution and transposed convolution in float64: loops over the
KH*KW kernel offsets, one einsum each, no im2col. The fast kernels of ops/conv.py are tested against
these (STYLE.md section 12)."""

import numpy as np

from tinygrad_cnn.ops.windows import pad_index, resolve_padding


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def padded_input(x, padding, kernel, stride, dilation, padding_mode="zeros"):
    pads = resolve_padding("ref", padding, x.shape[2:], kernel, stride, dilation)
    if padding_mode == "zeros":
        return np.pad(x, ((0, 0), (0, 0), *pads)), pads
    rows, columns = pad_index(x.shape[2], *pads[0], padding_mode), pad_index(x.shape[3], *pads[1], padding_mode)
    return x[:, :, rows][:, :, :, columns], pads


def offset_view(a, i, j, out_hw, stride, dilation):
    """a[..., i*dh + oh*sh, j*dw + ow*sw] for all output positions (oh, ow): the pixels tap (i, j) reads."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return a[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def reference_conv2d(x, w, b=None, *, stride=1, padding=0, padding_mode="zeros", dilation=1, groups=1):
    """y[n, g*F/G + f, oh, ow] = b + sum_{c, i, j} w[g*F/G + f, c, i, j] * x_pad[n, g*C/G + c, oh*sh + i*dh, ...]."""
    stride, dilation = as_pair(stride), as_pair(dilation)
    (f, cg, kh, kw), n = w.shape, x.shape[0]
    xp, _ = padded_input(np.asarray(x, np.float64), padding, (kh, kw), stride, dilation, padding_mode)
    out_hw = tuple((size - d * (k - 1) - 1) // s + 1 for size, k, s, d in zip(xp.shape[2:], (kh, kw), stride, dilation))
    xg = xp.reshape(n, groups, cg, *xp.shape[2:])
    wg = np.asarray(w, np.float64).reshape(groups, f // groups, cg, kh, kw)
    y = np.zeros((n, groups, f // groups, *out_hw))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("ngchw,gfc->ngfhw", offset_view(xg, i, j, out_hw, stride, dilation), wg[..., i, j])
    y = y.reshape(n, f, *out_hw)
    return y if b is None else y + np.asarray(b, np.float64)[:, None, None]


def reference_conv2d_weight_grad(x, g, kernel, *, stride=1, padding=0, dilation=1, groups=1):
    """dL/dw for zero padding: dw[g*F/G + f, c, i, j] = sum_{n, oh, ow} g[n, g*F/G + f, oh, ow] * x_pad[...]."""
    stride, dilation = as_pair(stride), as_pair(dilation)
    (n, c), f, out_hw = x.shape[:2], g.shape[1], g.shape[2:]
    xp, _ = padded_input(np.asarray(x, np.float64), padding, kernel, stride, dilation)
    xg = xp.reshape(n, groups, c // groups, *xp.shape[2:])
    gg = np.asarray(g, np.float64).reshape(n, groups, f // groups, *out_hw)
    dw = np.zeros((groups, f // groups, c // groups, *kernel))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            dw[..., i, j] = np.einsum("ngchw,ngfhw->gfc", offset_view(xg, i, j, out_hw, stride, dilation), gg)
    return dw.reshape(f, c // groups, *kernel)


def reference_conv_transpose2d(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Each input pixel stamps its filter, scaled by its value, onto the output at stride steps:

        z[n, g*Co/G + o, h*sh + i*dh, w*sw + j*dw] += x[n, g*Ci/G + c, h, w] * w[g*Ci/G + c, o, i, j]

    on the padded output (OH + 2*ph, OW + 2*pw), whose border is then cut off."""
    stride, dilation = as_pair(stride), as_pair(dilation)
    (ph, pw), (oph, opw) = as_pair(padding), as_pair(output_padding)
    (n, cin, h, wd), (_, cog, kh, kw) = x.shape, w.shape
    padded = [(size - 1) * s + d * (k - 1) + 1 + op
              for size, k, s, d, op in zip((h, wd), (kh, kw), stride, dilation, (oph, opw))]
    z = np.zeros((n, groups, cog, *padded))
    xg = np.asarray(x, np.float64).reshape(n, groups, cin // groups, h, wd)
    wg = np.asarray(w, np.float64).reshape(groups, cin // groups, cog, kh, kw)
    for i in range(kh):
        for j in range(kw):
            offset_view(z, i, j, (h, wd), stride, dilation)[...] += np.einsum("ngchw,gco->ngohw", xg, wg[..., i, j])
    y = z[..., ph: padded[0] - ph, pw: padded[1] - pw].reshape(n, groups * cog, padded[0] - 2 * ph, padded[1] - 2 * pw)
    return y if b is None else y + np.asarray(b, np.float64)[:, None, None]
