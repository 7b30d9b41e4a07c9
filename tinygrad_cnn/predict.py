"""Classifying your own images with a trained run: ``python -m tinygrad_cnn predict RUN_DIR IMAGE...``.

A network only knows inputs like the ones it was trained on, so every file is first turned into
exactly that (``S`` is the model's input size, from the checkpoint's meta):

* MNIST / Fashion-MNIST: a grey ``S x S = 28 x 28`` image, a white object on a black background,
  scaled as in training: pixel values 0..255 -> ``x / 255`` -> ``(x - mean) / std`` with the training
  set's ``mean`` and ``std`` (:func:`tasks.normalize_images`);
* Ising: an ``S x S = L x L`` lattice of spins, +1 or -1.

A picture (PNG, JPEG, or anything else Pillow reads) goes through four small steps::

    read_image   the file, any mode        -> float32 (H, W) grey, 0 = black .. 255 = white
    resize       (H, W)                    -> (S, S), each pixel the mean of the area it covers
    invert       255 - x, for a dark drawing on light paper (has_light_background), images only
    to_spins     (Ising only) x >= 127.5   -> +1, else -1

An ``.npy`` file holds arrays already in the data set's own units and size, ``(S, S)``, ``(N, S, S)`` or
``(N, 1, S, S)``: pixel values 0..255 as :func:`data.load_mnist` returns them, or Ising spins +1/-1
as :func:`data.ising` returns them. It is only checked, never resized or inverted.

Then :func:`model_input` scales the ``(N, S, S)`` values to the float32 ``(N, 1, S, S)`` batch the model
takes, and :func:`classify` runs it in eval mode (:func:`training.predict_proba`). Nothing here
prints; a file that cannot be used raises ``ValueError`` or ``OSError`` with a message that starts
with the file's name and says what was expected and what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import models
from .runs import checkpoint_path, load_run
from .tasks import CLASS_NAMES, normalize_images
from .training import predict_proba

__all__ = ["Prediction", "classify", "load_input", "read_image", "to_grey", "resize", "has_light_background",
           "to_spins", "read_npy", "model_input", "input_size", "class_names"]

IMAGE_SIZE = 28  # MNIST and Fashion-MNIST
_INTEGER_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # 16-bit grey (Pillow loads some 16-bit PNGs as "I")


@dataclass
class Input:
    """A batch made from one file: ``x`` float32 ``(n, 1, S, S)``, ready for the model."""

    sources: list[str]  # one name per item: "digit.png", or "batch.npy[3]" for an array of several
    note: str           # how the file was converted, e.g. "RGB 300x200 -> grey 28x28"
    x: np.ndarray


@dataclass
class Prediction:
    """The model's answer for one image."""

    source: str
    note: str
    probabilities: np.ndarray        # float32 (K,), sums to 1
    ranking: list[tuple[str, float]]  # (class name, probability) of every class, most probable first


# ---------------------------------------------------------------------------------------------- the run

def input_size(meta: dict) -> int:
    """``S``: the side of the square inputs the run's model was trained on (Ising: the lattice ``L``)."""
    return int(meta.get("lattice", 24)) if meta["dataset"] == "ising" else IMAGE_SIZE


def class_names(dataset: str, num_classes: int) -> list[str]:
    """The names of the model's ``num_classes`` outputs: the data set's (``tasks.CLASS_NAMES``), then
    ``"class k"`` for any output the data set has no name for (a model made for more classes)."""
    names = list(CLASS_NAMES.get(dataset, ()))[:num_classes]
    return names + [f"class {k}" for k in range(len(names), num_classes)]


def _check_meta(meta, path: str) -> dict:
    if not isinstance(meta, dict) or meta.get("dataset") not in CLASS_NAMES or "model" not in meta:
        raise ValueError(f"{path}: its meta should name the model and one of the data sets "
                         f"{', '.join(CLASS_NAMES)}, found {meta!r}")
    if meta["dataset"] != "ising" and not {"mean", "std"} <= set(meta):
        raise ValueError(f"{path}: its meta lacks the training set's mean and std, which {meta['dataset']} "
                         f"images are scaled by (found keys {sorted(meta)})")
    return meta


# ---------------------------------------------------------------------------------------------- pictures

def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected a PNG or JPEG image or a .npy array)") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is a directory (expected a PNG or JPEG image or a .npy array)") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read it ({e.strerror or e})") from None


def _found(data: bytes) -> str:
    return f"{len(data)} bytes starting {data[:16]!r}" if data else "an empty file"


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """The picture in ``path`` as float32 ``(H, W)`` grey values 0 (black) .. 255 (white) (:func:`to_grey`),
    turned upright by its EXIF orientation (phone photos), and a description such as ``"RGB 300x200"``.

    Any format and mode Pillow reads. ``ValueError`` when the file is not a picture, naming what it holds.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    try:
        with Image.open(BytesIO(data)) as image:
            image.load()
            description = f"{image.format or 'image'} {image.mode} {image.width}x{image.height}"
            upright = ImageOps.exif_transpose(image)
            return to_grey(upright), description
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        why = "" if isinstance(e, UnidentifiedImageError) else f": {e}"  # its message names a BytesIO
        raise ValueError(f"{path}: not an image Pillow can read (expected a PNG or JPEG image, or a .npy array; "
                         f"found {_found(data)}{why})") from None


def to_grey(image: Image.Image) -> np.ndarray:
    """A Pillow image of any mode -> float32 ``(H, W)`` grey values, 0 = black .. 255 = white.

    Colour and palette images: ITU-R 601-2 luma, ``0.299 R + 0.587 G + 0.114 B`` rounded to an integer
    (Pillow's ``"L"``).
    16-bit grey (``"I;16"``, and ``"I"``): ``value * 255 / 65535``, without rounding to 8 bits.
    Transparency (an alpha channel, or a transparent palette entry or colour): each pixel is blended by
    its opacity over a background that contrasts with the opaque pixels (white behind dark strokes,
    black behind light ones), so a drawing on a transparent canvas stays visible whatever its colour.

    >>> to_grey(Image.new("RGB", (3, 2), (255, 0, 0))).tolist()          # pure red: 0.299 * 255
    [[76.0, 76.0, 76.0], [76.0, 76.0, 76.0]]
    """
    if image.mode in _INTEGER_MODES:
        return (np.clip(np.asarray(image, np.float64), 0, 65535) * (255 / 65535)).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        grey = np.asarray(rgba.convert("RGB").convert("L"), np.float32)  # (H, W)
        alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255       # (H, W), 1 = opaque
        opaque_mean = float((grey * alpha).sum() / alpha.sum()) if alpha.sum() > 0 else 0.0
        background = np.float32(255 if opaque_mean < 127.5 else 0)
        return grey * alpha + background * (1 - alpha)
    return np.asarray(image.convert("L"), np.float32)


def resize(grey: np.ndarray, size: int) -> np.ndarray:
    """float32 ``(H, W)`` -> float32 ``(size, size)`` by area averaging (Pillow's BOX filter): each output
    pixel is the mean of the input pixels it covers. A non-square picture is stretched (crop it to a
    square first to keep its proportions). Returned unchanged when it already is ``size x size``.

    >>> resize(np.array([[0, 0, 255, 255]] * 4, np.float32), 2).tolist()
    [[0.0, 255.0], [0.0, 255.0]]
    """
    if grey.shape == (size, size):
        return grey
    image = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), np.float32)


def has_light_background(grey: np.ndarray) -> bool:
    """Whether grey ``(H, W)`` (0..255) has a light border (mean of the outermost rows and columns above
    127.5): a dark drawing on light paper, the opposite of MNIST's white objects on black."""
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    return bool(border.mean() > 127.5)


def to_spins(grey: np.ndarray) -> np.ndarray:
    """Grey values ``(..., L, L)`` 0..255 -> Ising spins float32, +1 where ``grey >= 127.5`` (white), else -1.
    After :func:`resize` by area averaging this is a majority vote of the pixels of each site."""
    return np.where(grey >= 127.5, np.float32(1), np.float32(-1))


# ---------------------------------------------------------------------------------------------- arrays

def read_npy(path: str | os.PathLike, meta: dict) -> np.ndarray:
    """The arrays in the ``.npy`` file ``path`` as float32 ``(N, S, S)``, in the data set's own units.

    Accepted shapes: ``(S, S)``, ``(N, S, S)`` or ``(N, 1, S, S)`` with ``S = input_size(meta)``; values:
    pixel values 0..255 for MNIST / Fashion-MNIST (``load_mnist``'s uint8 images, or floats), spins
    +1/-1 for Ising (``data.ising``'s ``x``). ``ValueError`` naming what was expected and found.
    """
    path = os.fspath(path)
    size, ising = input_size(meta), meta["dataset"] == "ising"
    what = "Ising spins +1/-1" if ising else "pixel values 0..255"
    data = _read_bytes(path)  # the same messages as for pictures when the file is missing or unreadable
    if not data.startswith((b"\x93NUMPY", b"PK")):  # neither .npy nor .npz (a zip)
        raise ValueError(f"{path}: not a .npy array (expected a file written by numpy.save, found {_found(data)})")
    try:
        a = np.load(BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a .npy array NumPy can read ({e})") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise ValueError(f"{path}: expected one .npy array, found an .npz archive of {len(a.files)} arrays")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{path}: expected a real numeric array of {what}, found dtype {a.dtype}")
    shape = a.shape
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (size, size) or len(a) == 0:
        raise ValueError(f"{path}: expected an array of shape ({size}, {size}), (N, {size}, {size}) or "
                         f"(N, 1, {size}, {size}) of {what} (the model's input size is {size}x{size}), found "
                         f"shape {shape}")
    a = a.astype(np.float32)
    if ising:
        bad = a[(a != 1) & (a != -1)]
        if bad.size:
            raise ValueError(f"{path}: expected Ising spins +1/-1, found also {np.unique(bad)[:5].tolist()}")
    elif not np.isfinite(a).all():
        raise ValueError(f"{path}: expected pixel values 0..255, found {np.count_nonzero(~np.isfinite(a))} "
                         f"non-finite values (nan or inf)")
    elif a.min() < 0 or a.max() > 255:
        raise ValueError(f"{path}: expected pixel values 0..255 (like load_mnist's uint8 images), found values "
                         f"from {a.min():g} to {a.max():g}")
    return a


# ---------------------------------------------------------------------------------------------- the batch

def model_input(values: np.ndarray, meta: dict) -> np.ndarray:
    """``(N, S, S)`` values in the data set's units -> float32 ``(N, 1, S, S)``, the model's input.

    MNIST / Fashion-MNIST: pixel values 0..255 -> ``(x / 255 - mean) / std`` with the training set's
    ``meta["mean"]``, ``meta["std"]`` (exactly :func:`tasks.normalize_images`). Ising: spins as they are.
    """
    if meta["dataset"] == "ising":
        return values.astype(np.float32)[:, None]
    return normalize_images(values, meta["mean"], meta["std"])


def load_input(path: str | os.PathLike, meta: dict, *, invert: bool | None = None) -> Input:
    """The file ``path`` (a picture, or an ``.npy`` file of arrays) as the model's input ``(n, 1, S, S)``.

    ``invert`` (pictures of MNIST / Fashion-MNIST only): ``True`` always turns black into white, ``False``
    never, ``None`` (default) when :func:`has_light_background`, which the note then says. Ising
    pictures are never inverted automatically (the model does not care about a global flip).
    """
    path = os.fspath(path)
    size, ising = input_size(meta), meta["dataset"] == "ising"
    if path.lower().endswith(".npy"):
        values = read_npy(path, meta)
        sources = [path] if len(values) == 1 else [f"{path}[{i}]" for i in range(len(values))]
        note = f"array {size}x{size}" if len(values) == 1 else f"one of {len(values)} arrays {size}x{size}"
        return Input(sources, note, model_input(values, meta))
    grey, description = read_image(path)
    note = description if grey.shape == (size, size) else f"{description} -> {size}x{size}"
    grey = resize(grey, size)
    if invert is None and not ising and has_light_background(grey):
        grey, note = 255 - grey, f"{note}; light background, so inverted (--no-invert keeps it)"
    elif invert:
        grey, note = 255 - grey, f"{note}; inverted"
    values = to_spins(grey) if ising else grey
    return Input([path], note, model_input(values[None], meta))


def classify(run: str | os.PathLike, paths, *, invert: bool | None = None) -> tuple[dict, list[Prediction]]:
    """Runs the model of ``run`` (a directory written by ``train``, or its params.npz) on each file of
    ``paths`` in eval mode; returns the run's ``meta`` and one :class:`Prediction` per image (an ``.npy``
    file of N arrays gives N). All files are read and checked before the model runs.

    >>> meta, predictions = classify("runs/ising", ["white.png"])   # doctest: +SKIP
    >>> predictions[0].ranking                                        # doctest: +SKIP
    [('ordered (T < Tc)', 0.9986257553100586), ('disordered (T > Tc)', 0.0013742513256147504)]
    """
    saved = load_run(run)
    meta = _check_meta(saved["meta"], checkpoint_path(run))
    model = models.get(meta["model"])
    inputs = [load_input(path, meta, invert=invert) for path in paths]
    if not inputs:
        return meta, []
    probabilities = predict_proba(model, saved["params"], np.concatenate([item.x for item in inputs]),
                                  state=saved["state"])                                      # (N, K)
    names = class_names(meta["dataset"], probabilities.shape[1])
    sources = [(source, item.note) for item in inputs for source in item.sources]
    predictions = []
    for (source, note), p in zip(sources, probabilities):
        order = np.argsort(-p, kind="stable")  # ties: the lower class first, as argmax
        predictions.append(Prediction(source, note, p, [(names[k], float(p[k])) for k in order]))
    return meta, predictions
