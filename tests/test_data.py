"""MNIST / Fashion-MNIST readers (IDX and npz), their search order and errors, and ``batches``.

Every test writes its own tiny data sets into ``tmp_path``; only ``test_real_fashion_mnist`` reads the
real files, when Debian's package is installed.
"""

import gzip
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_cnn.data import mnist
from tinygrad_cnn.data.batches import batches
from tinygrad_cnn.data.idx import read_idx, read_npz
from tinygrad_cnn.data.mnist import load_fashion_mnist, load_mnist

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(a, code=0x08):
    a = np.asarray(a, np.uint8)
    return bytes([0, 0, code, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def split(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_idx_dir(directory, n_train=5, n_test=3, suffixes=(".gz",) * 4):
    """The four IDX files in ``directory``; returns the data written."""
    data = split(n_train, 1), split(n_test, 2)
    arrays = (*data[0], *data[1])
    for name, a, suffix in zip(NAMES, arrays, suffixes):
        write(directory / (name + suffix), idx_bytes(a))
    return data


def assert_same(got, want):
    for g, w in zip((*got[0], *got[1]), (*want[0], *want[1])):
        assert g.dtype == np.uint8 and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env var, an empty home, a tmp Debian dir, and no TensorFlow: nothing outside tmp_path is seen."""
    monkeypatch.delenv("TINYGRAD_CNN_DATA", raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist, "SYSTEM_DIRS", {"fashion-mnist": tmp_path / "debian"})
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    return tmp_path


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("suffixes", [(".gz",) * 4, ("",) * 4, (".gz", "", "", ".gz")], ids=["gz", "raw", "mixed"])
def test_idx_round_trip(isolated, suffixes):
    want = write_idx_dir(isolated / "d", suffixes=suffixes)
    assert_same(load_mnist(isolated / "d"), want)
    assert_same(load_fashion_mnist(str(isolated / "d")), want)


def test_npz_round_trip(isolated):
    (xa, ya), (xb, yb) = want = split(4), split(2)
    np.savez(isolated / "mnist.npz", x_train=xa, y_train=ya, x_test=xb, y_test=yb)
    assert_same(load_mnist(isolated / "mnist.npz"), want)
    assert_same(load_mnist(isolated), want)  # a directory holding mnist.npz
    x = read_idx(write(isolated / "l.gz", idx_bytes(ya)), ndim=1)
    np.testing.assert_array_equal(x, ya)
    x[0] = 1  # writable, like keras' arrays


# ---------------------------------------------------------------- search order

def test_search_order_fashion(isolated, monkeypatch):
    """path > $TINYGRAD_CNN_DATA/fashion-mnist > ~/.keras/datasets/fashion-mnist > Debian dir.

    The training-set size marks which place a result came from."""
    places = [isolated / "explicit", isolated / "env" / "fashion-mnist",
              isolated / "home" / ".keras" / "datasets" / "fashion-mnist", isolated / "debian"]
    for n, place in zip((4, 3, 2, 1), places):
        write_idx_dir(place, n_train=n)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(isolated / "env"))
    assert mnist.search_places("fashion-mnist") == places[1:]
    assert len(load_fashion_mnist(places[0])[0][0]) == 4
    for n, place in zip((3, 2, 1), places[1:]):
        assert len(load_fashion_mnist()[0][0]) == n
        for f in place.iterdir():
            f.unlink()


def test_search_order_mnist(isolated, monkeypatch):
    """$TINYGRAD_CNN_DATA/mnist beats the Keras cache's mnist.npz, which honours $KERAS_HOME."""
    (xa, ya), (xb, yb) = split(2), split(1)
    (isolated / "k" / "datasets").mkdir(parents=True)
    np.savez(isolated / "k" / "datasets" / "mnist.npz", x_train=xa, y_train=ya, x_test=xb, y_test=yb)
    monkeypatch.setenv("KERAS_HOME", str(isolated / "k"))
    assert len(load_mnist()[0][0]) == 2
    write_idx_dir(isolated / "env" / "mnist", n_train=3)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(isolated / "env"))
    assert len(load_mnist()[0][0]) == 3
    with pytest.raises(FileNotFoundError):
        load_fashion_mnist()  # the mnist files do not count as Fashion-MNIST


def test_explicit_path_without_data_does_not_fall_back(isolated, monkeypatch):
    write_idx_dir(isolated / "env" / "mnist")
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(isolated / "env"))
    write(isolated / "partial" / (NAMES[0] + ".gz"), idx_bytes(split(2)[0]))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as e:
        load_mnist(isolated / "partial")
    assert "train-images" not in str(e.value) and "mnist.npz" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(isolated / "nowhere")


def test_nothing_anywhere_lists_every_place(isolated, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(isolated / "env"))
    with pytest.raises(FileNotFoundError) as e:
        load_fashion_mnist()
    msg = str(e.value)
    for place in ("env/fashion-mnist", ".keras/datasets/fashion-mnist", "debian"):
        assert place in msg
    for hint in ("TensorFlow is not installed", "pip install tensorflow-cpu", "apt-get install dataset-fashion-mnist",
                 "path=", "TINYGRAD_CNN_DATA", "train-images-idx3-ubyte.gz"):
        assert hint in msg
    monkeypatch.delenv("TINYGRAD_CNN_DATA")
    with pytest.raises(FileNotFoundError, match=r"\.keras/datasets/mnist\.npz") as e:
        load_mnist()
    assert "apt-get" not in str(e.value) and "$TINYGRAD_CNN_DATA/mnist ($TINYGRAD_CNN_DATA is not set)" in str(e.value)


def test_download_with_tensorflow_when_nothing_on_disk(isolated, monkeypatch):
    want = split(3), split(2)
    fake = types.SimpleNamespace(load_data=lambda: want)
    tf = types.SimpleNamespace(keras=types.SimpleNamespace(datasets=types.SimpleNamespace(fashion_mnist=fake)))
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    assert_same(load_fashion_mnist(), want)

    def offline():
        raise OSError("no network")
    fake.load_data = offline
    with pytest.raises(FileNotFoundError, match="download failed.*no network"):
        load_fashion_mnist()



def test_tensorflow_log_lines_at_import_are_dropped_and_other_stderr_output_kept(isolated, monkeypatch, capfd):
    """TensorFlow writes absl / glog lines to file descriptor 2 at import even with TF_CPP_MIN_LOG_LEVEL=3
    (where it turns oneDNN on): none may come before our own message; anything else written there stays."""
    fake = isolated / "fake_tf"
    fake.mkdir()
    (fake / "tensorflow.py").write_text(
        "import os\n"
        "from types import SimpleNamespace as ns\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "os.write(2, b'I0000 00:00:1796220315.495669    6544 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "os.write(2, b'W0000 00:00:1796220315.5  6544 cpu_feature_guard.cc:210] This TensorFlow binary\\n')\n"
        "os.write(2, b'a line of some other library\\n')\n"
        "def _offline():\n"
        "    raise OSError('no network')\n"
        "keras = ns(datasets=ns(mnist=ns(load_data=_offline)))\n")
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with pytest.raises(FileNotFoundError, match="download failed.*no network"):
        load_mnist()
    assert capfd.readouterr().err == "a line of some other library\n"
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


# ---------------------------------------------------------------- validation

x2, y2 = split(2)
BAD_IDX = {  # file name -> (contents, words the message must contain)
    "float-magic": (idx_bytes(x2, code=0x0D), ["0x00000D03", "float32", "expected 0x00000803"]),
    "ndim-magic": (idx_bytes(x2.reshape(2, 784)), ["0x00000802", "2-D", "expected 0x00000803"]),
    "not-idx": (b"PK\3\4" + bytes(100), ["not IDX"]),
    "short-header": (bytes([0, 0, 8, 3, 0, 0]), ["truncated header", "16 bytes"]),
    "truncated": (idx_bytes(x2)[:-10], ["truncated file", "1568", "found 1558"]),
    "trailing": (idx_bytes(x2) + b"xyz", ["3 trailing bytes", "1568", "found 1571"]),
}


@pytest.mark.parametrize("case", BAD_IDX)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_bad_idx_file(tmp_path, case, suffix):
    contents, words = BAD_IDX[case]
    path = write(tmp_path / (case + suffix), contents)
    with pytest.raises(ValueError) as e:
        read_idx(path, ndim=3)
    for w in [str(path), *words]:
        assert w in str(e.value)


@pytest.mark.parametrize("contents", [b"this is not gzip", gzip.compress(idx_bytes(x2))[:-20]], ids=["junk", "cut"])
def test_corrupt_gzip(tmp_path, contents):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", b"")
    path.write_bytes(contents)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: corrupt gzip"):
        read_idx(path, ndim=3)


@pytest.mark.parametrize("labels, images, words", [
    (np.array([1, 2, 3], np.uint8), x2, ["2 images but 3 labels"]),
    (np.array([1, 12], np.uint8), x2, ["labels must be in 0..9", "found 12 at index 1"]),
    (y2, x2[:, :27], ["must be 28x28", "found 27x28"]),
], ids=["counts", "label-range", "image-size"])
def test_bad_dataset_contents(isolated, labels, images, words):
    write_idx_dir(isolated / "d")
    write(isolated / "d" / (NAMES[0] + ".gz"), idx_bytes(images))
    write(isolated / "d" / (NAMES[1] + ".gz"), idx_bytes(labels))
    with pytest.raises(ValueError) as e:
        load_mnist(isolated / "d")
    for w in ["train-images-idx3-ubyte.gz", *words]:
        assert w in str(e.value)


def test_bad_npz(tmp_path):
    (xa, ya), (xb, yb) = split(2), split(1)
    cases = {  # file name -> (arrays, words the message must contain)
        "missing": ({"x_train": xa, "y_train": ya, "x_test": xb}, ["missing arrays ['y_test']"]),
        "object": ({"x_train": np.array([None, 1]), "y_train": ya, "x_test": xb, "y_test": yb},
                   ["'x_train'", "Object"]),
        "float": ({"x_train": xa / 255, "y_train": ya, "x_test": xb, "y_test": yb}, ["must be uint8", "float64"]),
    }
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(ValueError) as e:
            read_npz(tmp_path / f"{name}.npz")
        for w in [f"{name}.npz", *words]:
            assert w in str(e.value)
    write(tmp_path / "junk.npz", b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
        load_mnist(tmp_path / "junk.npz")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(DEBIAN)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    assert set(np.unique(y_train)) == set(range(10)) and y_test.max() == 9


# ---------------------------------------------------------------- batches

@given(n=st.integers(0, 60), batch_size=st.integers(1, 25), shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batches_cover_every_sample_once(n, batch_size, shuffle, seed):
    x, y = np.arange(n * 2).reshape(n, 2), np.arange(n)
    def epoch():
        return list(batches(x, y, batch_size, shuffle=shuffle, rng=np.random.default_rng(seed)))
    out = epoch()
    assert [len(yb) for _, yb in out] == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    for xb, yb in out:
        np.testing.assert_array_equal(xb, x[yb])  # pairs stay together
    seen = np.concatenate([y[:0]] + [yb for _, yb in out])
    np.testing.assert_array_equal(np.sort(seen), y)  # every sample exactly once
    if not shuffle:
        np.testing.assert_array_equal(seen, y)
    np.testing.assert_array_equal(np.concatenate([y[:0]] + [yb for _, yb in epoch()]), seen)  # same seed, same order


def test_batches_shuffle_changes_order_and_default_rng():
    y = np.arange(100)
    seen = np.concatenate([yb for _, yb in batches(y, y, 30, rng=np.random.default_rng(0))])
    assert not np.array_equal(seen, y)
    assert sorted(np.concatenate([yb for _, yb in batches(y, y, 30)])) == list(y)  # rng=None


@pytest.mark.parametrize("kwargs, error, words", [
    ({"batch_size": 0}, ValueError, ["batch_size", ">= 1", "got 0"]),
    ({"batch_size": 2.5}, TypeError, ["batch_size", "int", "2.5", "float"]),
    ({"batch_size": True}, TypeError, ["batch_size", "bool"]),
    ({"batch_size": 2, "y": np.arange(4)}, ValueError, ["same length", "x.shape=(5, 3)", "y.shape=(4,)"]),
    ({"batch_size": 2, "rng": 0}, TypeError, ["rng", "Generator", "int"]),
])
def test_batches_bad_arguments_raise_at_call(kwargs, error, words):
    args = {"x": np.zeros((5, 3)), "y": np.arange(5)} | kwargs
    with pytest.raises(error) as e:
        batches(args.pop("x"), args.pop("y"), args.pop("batch_size"), **args)  # no next(): checked eagerly
    for w in words:
        assert w in str(e.value)
