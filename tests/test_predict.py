"""``predict``: pictures and arrays turned into exactly what the model was trained on, and
``python -m tinygrad_cnn predict RUN_DIR IMAGE...`` end to end on tiny runs trained by ``train``.

The unit tests write PNG and JPEG files with Pillow into ``tmp_path``. The end-to-end tests train two
tiny runs through the real entry point (a fake Fashion-MNIST in IDX format, and Ising at L = 8), then
compare what ``predict`` prints with ``training.predict_proba`` run in-process on the same arrays.
"""

import gzip
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinygrad_cnn import cli, models, predict, runs, tasks, training
from tinygrad_cnn.data import ising

FASHION = {"dataset": "fashion-mnist", "model": "cnn-bn", "mean": 0.21, "std": 0.33}
ISING = {"dataset": "ising", "model": "ising-cnn", "lattice": 8}


def grey_image(seed=0, size=(28, 28)):
    """uint8 (H, W): a dark noisy background with a bright rectangle away from the border (MNIST-like)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 50, size).astype(np.uint8)
    a[5:20, 8:18] = rng.integers(180, 256, (15, 10))
    return a


def save(tmp_path, name, image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return str(path)


# ---------------------------------------------------------------------------------------------- pictures

def test_grey_png_is_read_exactly(tmp_path):
    a = grey_image()
    grey, description = predict.read_image(save(tmp_path, "a.png", Image.fromarray(a)))
    assert grey.dtype == np.float32 and grey.shape == (28, 28)
    np.testing.assert_array_equal(grey, a)
    assert description == "PNG L 28x28"


def test_rgb_is_luma(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    grey, description = predict.read_image(save(tmp_path, "rgb.png", Image.fromarray(rgb)))
    assert grey.shape == (10, 12) and description == "PNG RGB 12x10"
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(grey, luma, atol=1)  # Pillow's "L" rounds the ITU-R 601-2 luma
    same = np.repeat(grey_image()[..., None], 3, axis=2)  # R = G = B: the grey value itself
    np.testing.assert_array_equal(predict.read_image(save(tmp_path, "g.png", Image.fromarray(same)))[0],
                                  grey_image())


def test_rgba(tmp_path):
    a = grey_image()
    rgba = np.dstack([a, a, a, np.full_like(a, 255)])
    opaque, description = predict.read_image(save(tmp_path, "opaque.png", Image.fromarray(rgba)))
    np.testing.assert_array_equal(opaque, a)
    assert description == "PNG RGBA 28x28"

    # strokes on a transparent canvas: the background becomes the contrasting colour, whatever the strokes'
    strokes = np.zeros((28, 28), np.uint8)
    strokes[10:18, 10:18] = 255
    for colour, background in ((0, 255), (255, 0)):
        canvas = np.dstack([np.full((28, 28, 3), colour, np.uint8), strokes])  # RGB = colour, alpha = strokes
        grey, _ = predict.read_image(save(tmp_path, f"strokes{colour}.png", Image.fromarray(canvas)))
        np.testing.assert_array_equal(grey[strokes == 255], colour)
        np.testing.assert_array_equal(grey[strokes == 0], background)

    half = np.dstack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 255, np.uint8)])
    half[0, 0, 3] = 51  # one black pixel at 20% opacity over the white background: 0.2 * 0 + 0.8 * 255
    grey, _ = predict.read_image(save(tmp_path, "half.png", Image.fromarray(half)))
    assert grey[0, 0] == pytest.approx(204, abs=1e-3) and grey[1, 1] == 0


def test_16_bit_grey_keeps_its_precision(tmp_path):
    a = np.random.default_rng(2).integers(0, 65536, (28, 28)).astype(np.uint16)
    path = save(tmp_path, "deep.png", Image.fromarray(a))
    assert Image.open(path).mode.startswith("I")  # really a 16-bit PNG
    grey, description = predict.read_image(path)
    assert grey.dtype == np.float32 and "28x28" in description
    np.testing.assert_allclose(grey, a * (255 / 65535), rtol=1e-6)
    assert grey.min() >= 0 and grey.max() <= 255 and not np.all(grey == np.round(grey))  # not cut to 8 bits


def test_palette(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    image = Image.fromarray(rgb).quantize(16)  # mode "P": 16 colours
    path = save(tmp_path, "palette.png", image)
    assert Image.open(path).mode == "P"
    grey, _ = predict.read_image(path)
    np.testing.assert_array_equal(grey, np.asarray(image.convert("RGB").convert("L"), np.float32))

    # a transparent palette entry is treated like transparency
    index = np.zeros((6, 6), np.uint8)
    index[2:4, 2:4] = 1
    p = Image.fromarray(index, mode="P")
    p.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black; entry 0 is transparent
    grey, _ = predict.read_image(save(tmp_path, "transparent.png", p, transparency=0))
    assert grey[0, 0] == 255 and grey[2, 2] == 0  # black strokes on white


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg(tmp_path, mode):
    yy, xx = np.mgrid[0:28, 0:28]
    a = (255 * np.exp(-((yy - 14) ** 2 + (xx - 13) ** 2) / 40)).astype(np.uint8)  # smooth, so JPEG keeps it
    image = Image.fromarray(a if mode == "L" else np.dstack([a] * 3))
    grey, description = predict.read_image(save(tmp_path, "photo.jpg", image, quality=95))
    assert description == f"JPEG {mode} 28x28"
    np.testing.assert_allclose(grey, a, atol=6)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20), np.uint8)
    a[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    grey, _ = predict.read_image(save(tmp_path, "phone.png", Image.fromarray(a), exif=exif))
    np.testing.assert_array_equal(grey, np.rot90(a, -1))


def test_resize():
    a = grey_image().astype(np.float32)
    big = np.kron(a, np.ones((3, 3), np.float32))  # (84, 84): every pixel a 3x3 block
    np.testing.assert_allclose(predict.resize(big, 28), a, atol=1e-3)  # area averaging gives each block back
    assert predict.resize(a, 28) is a
    wide = predict.resize(np.kron(a, np.ones((1, 2), np.float32)), 28)  # (28, 56) is stretched back
    np.testing.assert_allclose(wide, a, atol=1e-3)
    small = predict.resize(np.array([[0, 255], [255, 0]], np.float32), 4)  # enlarging repeats pixels
    np.testing.assert_array_equal(small, np.kron([[0, 255], [255, 0]], np.ones((2, 2))))


def test_light_background():
    a = grey_image().astype(np.float32)
    assert not predict.has_light_background(a)
    assert predict.has_light_background(255 - a)


def test_scaling_equals_normalize_images(tmp_path):
    """A 28x28 uint8 picture and the same array in .npy give the model exactly what training gave it."""
    a = grey_image()
    expected = tasks.normalize_images(a[None], FASHION["mean"], FASHION["std"])  # (1, 1, 28, 28)
    png = predict.load_input(save(tmp_path, "a.png", Image.fromarray(a)), FASHION)
    assert png.x.dtype == np.float32 and png.x.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(png.x, expected)
    assert png.note == "PNG L 28x28"
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(predict.load_input(tmp_path / "a.npy", FASHION).x, expected)


def test_inversion(tmp_path):
    a = grey_image()
    expected = tasks.normalize_images(a[None], FASHION["mean"], FASHION["std"])
    paper = save(tmp_path, "paper.png", Image.fromarray(255 - a))  # a dark drawing on light paper
    auto = predict.load_input(paper, FASHION)
    np.testing.assert_array_equal(auto.x, expected)
    assert "light background, so inverted" in auto.note
    kept = predict.load_input(paper, FASHION, invert=False)
    np.testing.assert_array_equal(kept.x, tasks.normalize_images((255 - a)[None], FASHION["mean"], FASHION["std"]))
    assert "inverted" not in kept.note
    forced = predict.load_input(save(tmp_path, "dark.png", Image.fromarray(a)), FASHION, invert=True)
    np.testing.assert_array_equal(forced.x, tasks.normalize_images((255 - a)[None], FASHION["mean"],
                                                                   FASHION["std"]))
    assert forced.note.endswith("inverted")


def test_resized_and_inverted_rgb_photo(tmp_path):
    """A big RGB picture of a dark object on white: grey, 28x28, inverted, scaled."""
    a = grey_image()
    photo = np.repeat(np.kron(255 - a, np.ones((4, 4), np.uint8))[..., None], 3, axis=2)  # (112, 112, 3)
    item = predict.load_input(save(tmp_path, "photo.png", Image.fromarray(photo)), FASHION)
    np.testing.assert_allclose(item.x, tasks.normalize_images(a[None], FASHION["mean"], FASHION["std"]), atol=1e-4)
    assert item.note.startswith("PNG RGB 112x112 -> 28x28; light background")


def test_ising_pictures_become_spins(tmp_path):
    spins = np.where(np.random.default_rng(4).random((8, 8)) < 0.5, 1, -1).astype(np.float32)
    pixels = ((spins + 1) / 2 * 255).astype(np.uint8)  # white = +1, black = -1
    big = np.kron(pixels, np.ones((10, 10), np.uint8))  # an 80x80 picture of the lattice
    for name, picture in (("small.png", pixels), ("big.png", big), ("light.png", np.full((8, 8), 255, np.uint8))):
        item = predict.load_input(save(tmp_path, name, Image.fromarray(picture)), ISING)
        assert item.x.shape == (1, 1, 8, 8) and item.x.dtype == np.float32
        want = np.ones((8, 8)) if name == "light.png" else spins  # never inverted automatically
        np.testing.assert_array_equal(item.x[0, 0], want)
    np.testing.assert_array_equal(predict.to_spins(np.array([0, 127, 127.5, 255])), [-1, -1, 1, 1])


# ---------------------------------------------------------------------------------------------- arrays

@pytest.mark.parametrize("shape, n", [((28, 28), 1), ((1, 28, 28), 1), ((5, 28, 28), 5), ((4, 1, 28, 28), 4)])
def test_npy_shapes(tmp_path, shape, n):
    a = np.random.default_rng(5).integers(0, 256, shape).astype(np.uint8)
    np.save(tmp_path / "x.npy", a)
    item = predict.load_input(str(tmp_path / "x.npy"), FASHION)
    assert item.x.shape == (n, 1, 28, 28)
    np.testing.assert_array_equal(item.x, tasks.normalize_images(a.reshape(n, 28, 28), FASHION["mean"],
                                                                 FASHION["std"]))
    names = [str(tmp_path / "x.npy")] if n == 1 else [f"{tmp_path / 'x.npy'}[{i}]" for i in range(n)]
    assert item.sources == names


@pytest.mark.parametrize("array, meta, message", [
    (np.zeros((3, 5)), FASHION, "found shape (3, 5)"),
    (np.zeros((2, 3, 28, 28)), FASHION, "found shape (2, 3, 28, 28)"),
    (np.zeros((0, 28, 28)), FASHION, "found shape (0, 28, 28)"),
    (np.zeros((28, 28)), ISING, "expected an array of shape (8, 8), (N, 8, 8) or (N, 1, 8, 8) of Ising spins"),
    (np.full((28, 28), 300.0), FASHION, "expected pixel values 0..255 (like load_mnist's uint8 images), found "
                                        "values from 300 to 300"),
    (np.full((28, 28), np.nan), FASHION, "non-finite"),
    (np.zeros((8, 8)), ISING, "expected Ising spins +1/-1, found also [0.0]"),
    (np.array(["a"] * 4), FASHION, "found dtype <U1"),
], ids=["2d", "3-channels", "empty", "ising-size", "range", "nan", "spins", "strings"])
def test_npy_refusals(tmp_path, array, meta, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError) as info:
        predict.load_input(tmp_path / "bad.npy", meta)
    assert str(info.value).startswith(f"{tmp_path / 'bad.npy'}: ") and message in str(info.value)


def test_npy_that_is_not_an_array(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk.npy: not a .npy array \(expected a file written by numpy.save, "
                                         r"found 4 bytes starting b'junk'\)"):
        predict.load_input(tmp_path / "junk.npy", FASHION)
    np.save(tmp_path / "whole.npy", np.ones((28, 28)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "whole.npy").read_bytes()[:60])
    with pytest.raises(ValueError, match="cut.npy: not a .npy array NumPy can read"):
        predict.load_input(tmp_path / "cut.npy", FASHION)


def test_class_names():
    assert predict.class_names("mnist", 10) == [str(d) for d in range(10)]
    assert predict.class_names("fashion-mnist", 10)[::3] == ["T-shirt/top", "Dress", "Shirt", "Ankle boot"]
    assert predict.class_names("ising", 3) == ["disordered (T > Tc)", "ordered (T < Tc)", "class 2"]
    data = ising(L=4, temperatures=[1.5, 3.5], chains=1, samples=1, sweeps=1, cache_dir=None)
    assert [tasks.CLASS_NAMES["ising"][k] for k in data.label] == ["ordered (T < Tc)", "disordered (T > Tc)"]


# ---------------------------------------------------------------------------------------------- end to end

def run_module(*argv, cwd):
    env = {**os.environ, "TINYGRAD_CNN_DATA": str(cwd / "data"), "KERAS_HOME": str(cwd / "keras")}
    return subprocess.run([sys.executable, "-m", "tinygrad_cnn", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def write_fake_fashion(directory, n_train=64, n_test=16):
    """Tiny Fashion-MNIST in IDX format: class k is a bright rectangle at a place of its own, on noise."""
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n, dtype=np.uint8) % 10
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            x[i, r:r + 6, c:c + 5] = 230
        arrays[prefix] = x, y
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            header = bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + a.tobytes()))
    return arrays


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """``(directory, training images uint8 (64, 28, 28))`` of a one-epoch cnn-bn run on a fake Fashion-MNIST."""
    root = tmp_path_factory.mktemp("fashion")
    arrays = write_fake_fashion(root / "fashion")
    result = run_module("train", "--dataset", "fashion-mnist", "--data", root / "fashion", "--epochs", 1,
                        "--batch-size", 32, "--no-progress", "--out", "run", cwd=root)
    assert result.returncode == 0, result.stderr
    return root, arrays["train"][0]


@pytest.fixture(scope="module")
def ising_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ising")
    result = run_module("train", "--dataset", "ising", "--lattice", 8, "--epochs", 1, "--limit", 200,
                        "--no-progress", "--out", "run", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def parse(stdout):
    """``(header, [(source, note, [(probability, name), ...]), ...])`` of predict's output."""
    lines = stdout.splitlines()
    images = []
    for line in lines[1:]:
        row = re.fullmatch(r"  (\d\.\d{4})  (.+)", line)
        if row:
            images[-1][2].append((float(row.group(1)), row.group(2)))
        else:
            source, note = re.fullmatch(r"(\S+) \((.*)\)", line).groups()
            images.append((source, note, []))
    return lines[0], images


def in_process(run_dir, x):
    """``(class probabilities (N, K), class names)`` from training.predict_proba on the arrays x (N, 1, S, S)."""
    saved = runs.load_run(run_dir)
    meta = saved["meta"]
    p = training.predict_proba(models.get(meta["model"]), saved["params"], x, state=saved["state"])
    return p, tasks.CLASS_NAMES[meta["dataset"]]


def test_predict_fashion_mnist(fashion_run):
    root, x_train = fashion_run
    Image.fromarray(x_train[3]).save(root / "item.png")
    Image.fromarray(255 - x_train[3]).convert("RGB").save(root / "paper.png")  # a dark object on white, in RGB
    np.save(root / "items.npy", x_train[:2])
    result = run_module("predict", "run", "item.png", "paper.png", "items.npy", "--top", 10, cwd=root)
    assert result.returncode == 0, result.stderr
    header, images = parse(result.stdout)
    assert header == f"cnn-bn trained on fashion-mnist ({os.path.join('run', 'params.npz')}): top 10 of 10 classes"
    assert [source for source, _, _ in images] == ["item.png", "paper.png", "items.npy[0]", "items.npy[1]"]
    assert images[0][1] == "PNG L 28x28"
    assert images[1][1] == "PNG RGB 28x28; light background, so inverted (--no-invert keeps it)"

    meta = runs.load_run(root / "run")["meta"]
    x = tasks.normalize_images(x_train[[3, 3, 0, 1]], meta["mean"], meta["std"])
    expected, names = in_process(root / "run", x)
    for (source, _, rows), p in zip(images, expected):
        assert sorted(name for _, name in rows) == sorted(names)  # every class, by its Fashion-MNIST name
        assert sum(q for q, _ in rows) == pytest.approx(1, abs=1e-3)
        assert [q for q, _ in rows] == sorted((q for q, _ in rows), reverse=True)
        assert rows[0][1] == names[int(p.argmax())], source
        for q, name in rows:
            assert q == pytest.approx(p[names.index(name)], abs=6e-5)


def test_predict_default_top_and_invert_flags(fashion_run):
    root, x_train = fashion_run
    Image.fromarray(x_train[5]).save(root / "five.png")
    result = run_module("predict", "run/params.npz", "five.png", "--invert", cwd=root)
    assert result.returncode == 0, result.stderr
    header, ((source, note, rows),) = parse(result.stdout)
    assert header.endswith("top 3 of 10 classes") and len(rows) == 3 and note == "PNG L 28x28; inverted"
    meta = runs.load_run(root / "run")["meta"]
    p, names = in_process(root / "run", tasks.normalize_images(255 - x_train[5:6], meta["mean"], meta["std"]))
    assert rows[0][1] == names[int(p[0].argmax())]


def test_predict_ising(ising_run, monkeypatch):
    root = ising_run
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(root / "data"))  # the cache the run's data went to
    task = tasks.prepare("ising", lattice=8, seed=0, limit=200)
    x = task.train[0][:3]                                                                   # (3, 1, 8, 8) spins
    Image.fromarray(((x[0, 0] + 1) * 127.5).astype(np.uint8)).resize((40, 40), Image.NEAREST).save(
        root / "lattice.png")
    np.save(root / "spins.npy", x)
    result = run_module("predict", "run", "lattice.png", "spins.npy", cwd=root)
    assert result.returncode == 0, result.stderr
    header, images = parse(result.stdout)
    assert header == f"ising-cnn trained on ising ({os.path.join('run', 'params.npz')}): top 2 of 2 classes"
    assert [(source, note) for source, note, _ in images] == [
        ("lattice.png", "PNG L 40x40 -> 8x8"), *((f"spins.npy[{i}]", "one of 3 arrays 8x8") for i in range(3))]
    expected, names = in_process(root / "run", x[[0, 0, 1, 2]])
    assert set(names) == {"disordered (T > Tc)", "ordered (T < Tc)"}
    for (_, _, rows), p in zip(images, expected):
        assert {name for _, name in rows} == set(names)
        assert sum(q for q, _ in rows) == pytest.approx(1, abs=1e-3)
        assert rows[0][1] == names[int(p.argmax())]


# ---------------------------------------------------------------------------------------------- errors

def assert_clean_error(result, *messages):
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("tinygrad-cnn predict: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for message in messages:
        assert message in result.stderr, result.stderr


def test_errors(ising_run):
    root = ising_run
    (root / "notes.png").write_text("not a picture, just text\n")
    np.save(root / "wrong.npy", np.ones((2, 8, 9), np.float32))
    (root / "folder.png").mkdir(exist_ok=True)
    assert_clean_error(run_module("predict", "run", "notes.png", cwd=root),
                       "notes.png: not an image Pillow can read", "expected a PNG or JPEG image",
                       "found 25 bytes starting b'not a picture, j'")
    assert_clean_error(run_module("predict", "run", "wrong.npy", cwd=root),
                       "wrong.npy: expected an array of shape (8, 8), (N, 8, 8) or (N, 1, 8, 8) of Ising spins",
                       "found shape (2, 8, 9)")
    assert_clean_error(run_module("predict", "run", "missing.png", cwd=root), "missing.png: no such file")
    assert_clean_error(run_module("predict", "run", "folder.png", cwd=root), "folder.png: is a directory")
    assert_clean_error(run_module("predict", "no-such-run", "notes.png", cwd=root),
                       "no such file or directory: no-such-run", "give a run directory written by 'train'")
    (root / "empty-run").mkdir(exist_ok=True)
    assert_clean_error(run_module("predict", "empty-run", "notes.png", cwd=root), "empty-run has no params.npz")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path, capsys):
    path = tmp_path / "secret.png"
    Image.fromarray(grey_image()).save(path)
    path.chmod(0)
    with pytest.raises(OSError, match="secret.png: cannot read it"):
        predict.read_image(path)


def test_help_documents_inputs(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for words in ("RUN_DIR", "IMAGE", "--top", "--invert", ".npy", "0..255", "+1/-1", "white objects on a black"):
        assert words in out, words
