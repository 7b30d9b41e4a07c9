"""Readers for the IDX files of MNIST / Fashion-MNIST and for Keras' ``mnist.npz``.

The IDX format (LeCun et al.) is a tiny header followed by raw row-major data, all integers big-endian::

    bytes 0-1   0x00 0x00
    byte  2     type code of the data: 0x08 = uint8 (the only one these data sets use)
    byte  3     number of dimensions D
    next 4*D    the D sizes, each a big-endian uint32
    the rest    prod(sizes) data items

So the 32-bit "magic number" is 0x00000801 for a label file (uint8, 1-D: N) and 0x00000803 for an image
file (uint8, 3-D: N x 28 x 28). The files are usually shipped gzip-compressed (``.gz``).

Reading is one ``np.frombuffer`` over the whole payload, so a 47 MB image file costs one copy. Every
check raises ``ValueError`` naming the file and what was expected against what was found.
"""

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np

IDX_UINT8 = 0x08
IDX_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_idx(path, ndim):
    """Read a uint8 IDX file (raw, or gzip-compressed) with ``ndim`` dimensions into an array.

    ``path`` ending in ``.gz`` (or starting with the gzip signature) is decompressed first. Returns a
    writable ``np.uint8`` array whose shape is the header's sizes, e.g. ``(N, 28, 28)`` for
    ``ndim=3`` images or ``(N,)`` for ``ndim=1`` labels.

    Raises ``ValueError`` for a corrupt gzip stream, a wrong magic number (type code other than uint8
    or another number of dimensions), a short header, or a payload whose length differs from the
    product of the header's sizes (truncated file or trailing bytes).

    >>> labels = read_idx("train-labels-idx1-ubyte.gz", ndim=1)   # doctest: +SKIP
    >>> labels.shape, labels.dtype                                  # doctest: +SKIP
    ((60000,), dtype('uint8'))
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt gzip file ({e})") from e
    expected_magic = (IDX_UINT8 << 8) | ndim
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header; "
                         f"expected magic number 0x{expected_magic:08X}")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        code, found_ndim = data[2], data[3]
        kind = f"type {IDX_TYPE_NAMES.get(code, 'unknown')}, {found_ndim}-D" if data[:2] == b"\0\0" else "not IDX"
        raise ValueError(f"{path}: bad magic number 0x{magic:08X} ({kind}); "
                         f"expected 0x{expected_magic:08X} (type uint8, {ndim}-D)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header: {ndim} sizes need {header} bytes, file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected, found = int(np.prod(shape)), len(data) - header
    if found != expected:
        what = "truncated file" if found < expected else f"{found - expected} trailing bytes"
        raise ValueError(f"{path}: {what}: header shape {shape} needs {expected} data bytes, found {found}")
    return np.frombuffer(data, np.uint8, expected, header).reshape(shape).copy()


def check_mnist_arrays(x, y, source):
    """Check one split of an MNIST-like data set: ``x`` uint8 ``(N, 28, 28)``, ``y`` uint8 ``(N,)`` in 0..9.

    ``source`` names where the arrays came from, for the message. Returns ``(x, y)`` unchanged; raises
    ``ValueError`` naming what was expected and what was found.
    """
    for name, a, nd in (("images", x, 3), ("labels", y, 1)):
        if a.dtype != np.uint8 or a.ndim != nd:
            raise ValueError(f"{source}: {name} must be uint8 with {nd} dimensions, found {a.dtype} {a.shape}")
    if x.shape[1:] != (28, 28):
        raise ValueError(f"{source}: images must be 28x28, found {x.shape[1]}x{x.shape[2]} (shape {x.shape})")
    if len(x) != len(y):
        raise ValueError(f"{source}: {len(x)} images but {len(y)} labels; the counts must match")
    if y.size and y.max() > 9:
        i = int(np.argmax(y > 9))
        raise ValueError(f"{source}: labels must be in 0..9, found {y[i]} at index {i}")
    return x, y


def read_idx_pair(images_path, labels_path):
    """Read and check an images file and its labels file: ``(x uint8 (N, 28, 28), y uint8 (N,))``."""
    x, y = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    return check_mnist_arrays(x, y, f"{images_path} / {Path(labels_path).name}")


def read_npz(path):
    """Read a Keras-style ``mnist.npz`` into ``((x_train, y_train), (x_test, y_test))``.

    The file must hold the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8, images
    ``(N, 28, 28)``, labels ``(N,)`` in 0..9). It is loaded with ``allow_pickle=False``: object arrays are
    rejected, never unpickled. Raises ``ValueError`` naming the file and the problem.

    >>> (x_train, y_train), (x_test, y_test) = read_npz("~/.keras/datasets/mnist.npz")   # doctest: +SKIP
    """
    path = Path(path).expanduser()
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    if not hasattr(f, "files"):  # np.load gave a plain array: the file is an .npy
        raise ValueError(f"{path}: expected an .npz archive with {list(NPZ_KEYS)}, found a single array")
    with f:
        missing = [k for k in NPZ_KEYS if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}; expected {list(NPZ_KEYS)}, found {f.files}")
        arrays = {}
        for k in NPZ_KEYS:
            try:
                arrays[k] = f[k]
            except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # e.g. an object array
                raise ValueError(f"{path}: array {k!r} could not be loaded ({e}); expected a uint8 array") from e
    train = check_mnist_arrays(arrays["x_train"], arrays["y_train"], f"{path} [x_train, y_train]")
    test = check_mnist_arrays(arrays["x_test"], arrays["y_test"], f"{path} [x_test, y_test]")
    return train, test
