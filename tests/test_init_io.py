"""Initialisers (shapes, dtypes, statistics, seeding) and checkpoints (exact round trips, no pickle, atomic)."""

import math
import os
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_cnn import init, io, optim

# ------------------------------------------------------------------------------------------------- init


@pytest.mark.parametrize(("shape", "fans"), [((5,), (5, 5)), ((128, 10), (128, 10)), ((8, 1, 3, 3), (9, 72)),
                                             ((16, 4, 5, 3), (60, 240)), ((6, 2, 7), (14, 42))])
def test_fans(shape, fans):
    assert init.fans(shape) == fans


@pytest.mark.parametrize("fn", [init.he_normal, init.glorot_uniform])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (4, 3, 3, 3), 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, None])
def test_shapes_and_dtypes(fn, shape, dtype):
    rng = np.random.default_rng(0)
    w = fn(rng, shape) if dtype is None else fn(rng, shape, dtype=dtype)
    assert w.shape == (shape if isinstance(shape, tuple) else (shape,))
    assert w.dtype == (dtype or np.float32)


def test_he_normal_statistics():
    w = init.he_normal(np.random.default_rng(1), (128, 64, 3, 3), dtype=np.float64)  # fan_in = 576
    assert w.std() == pytest.approx(math.sqrt(2 / 576), rel=0.01)
    assert abs(w.mean()) < 0.01 * w.std()
    w = init.he_normal(np.random.default_rng(2), (300, 200))
    assert w.std() == pytest.approx(math.sqrt(2 / 300), rel=0.01)


@pytest.mark.parametrize(("shape", "fan_sum"), [((400, 300), 700), ((64, 32, 3, 3), (32 + 64) * 9)])
def test_glorot_uniform_statistics(shape, fan_sum):
    w = init.glorot_uniform(np.random.default_rng(3), shape)
    limit = math.sqrt(6 / fan_sum)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)  # Var(U(-a, a)) = a^2 / 3


@pytest.mark.parametrize("fn", [init.he_normal, init.glorot_uniform])
def test_reproducible_with_seeded_rng(fn):
    a, b = fn(np.random.default_rng(42), (6, 3, 3, 3)), fn(np.random.default_rng(42), (6, 3, 3, 3))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(42)
    assert not np.array_equal(fn(rng, (6, 3, 3, 3)), fn(rng, (6, 3, 3, 3)))  # the generator advances


@pytest.mark.parametrize("fn", [init.he_normal, init.glorot_uniform])
@pytest.mark.parametrize("rng", [0, None, np.random.RandomState(0)])
def test_rng_must_be_a_generator(fn, rng):
    with pytest.raises(TypeError, match=r"rng must be a np.random.Generator"):
        fn(rng, (3, 3))


def test_init_bad_arguments():
    with pytest.raises(TypeError, match="dtype"):
        init.he_normal(np.random.default_rng(0), (3, 3), dtype=np.int32)
    with pytest.raises(TypeError, match="shape"):
        init.glorot_uniform(np.random.default_rng(0), (3.5, 2))
    with pytest.raises(ValueError, match="negative"):
        init.zeros((-1, 2))
    with pytest.raises(ValueError, match="scalar"):
        init.he_normal(np.random.default_rng(0), ())


def test_zeros():
    z = init.zeros((2, 3))
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.any()
    assert init.zeros(4, dtype=np.float64).dtype == np.float64


# --------------------------------------------------------------------------------------------------- io

def assert_same(a, b):
    """Equal structure, types, dtypes, shapes and bytes (so NaNs and -0.0 count too)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    elif isinstance(a, float):
        assert a == b or (math.isnan(a) and math.isnan(b))
    else:
        assert a == b


def example_tree():
    rng = np.random.default_rng(0)
    return {
        "conv1": {"w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "b": np.zeros(4, np.float32)},
        "layers": [{"w": rng.standard_normal((5, 2))}, (np.arange(3, dtype=np.int16), None)],
        "bn": {"running_mean": np.zeros(4), "count": 7, "momentum": 0.1, "training": False, "c": 1 + 2j},
        "scalars": (np.float32(1.5), np.int64(-3), np.bool_(True)),
        "a/b%2F": np.ones((0, 3), np.uint8),  # a key with "/" and "%"
        "": np.asfortranarray(rng.standard_normal((3, 2))),
        "empty": {}, "nothing": [],
    }


def test_round_trip_example(tmp_path):
    tree = example_tree()
    io.save(tmp_path / "ckpt.npz", tree)
    assert_same(io.load(tmp_path / "ckpt.npz"), tree)
    assert_same(io.load(str(tmp_path / "ckpt.npz")), tree)


def test_file_is_plain_npz_named_by_paths(tmp_path):
    io.save(tmp_path / "ckpt.npz", example_tree())
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as npz:
        assert {"conv1/w", "conv1/b", "layers/0/w", "layers/1/0", "bn/count", "a%2Fb%252F", "__tree__"} <= set(npz)
        np.testing.assert_array_equal(npz["conv1/b"], np.zeros(4, np.float32))
        assert npz["bn/count"].shape == () and npz["bn/count"].dtype == np.int64


@pytest.mark.parametrize("tree", [np.arange(3.0), 5, [], {}, None, (1,)])
def test_round_trip_roots(tmp_path, tree):
    io.save(tmp_path / "x.npz", tree)
    assert_same(io.load(tmp_path / "x.npz"), tree)


KEYS = st.text(st.sampled_from("ab/%\\_.0\x00é"), max_size=4) | st.text(st.characters(exclude_categories=["Cs"]),
                                                                        max_size=3)
DTYPES = st.sampled_from(["float16", "float32", "float64", ">f4", "int8", "int32", "int64", "uint8", "bool",
                          "complex64"])
LEAVES = (hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
          | st.integers(-2**63, 2**63 - 1) | st.floats() | st.booleans() | st.none()
          | hnp.from_dtype(np.dtype("float32")) | hnp.from_dtype(np.dtype("int8")))
TREES = st.recursive(LEAVES, lambda sub: st.lists(sub, max_size=3) | st.tuples(sub, sub)
                     | st.dictionaries(KEYS, sub, max_size=3).filter(lambda d: "__tree__" not in d), max_leaves=8)


@given(TREES, st.booleans())
def test_round_trip_random_trees(tree, compress):
    with tempfile.TemporaryDirectory() as d:
        io.save(os.path.join(d, "t.npz"), tree, compress=compress)
        assert_same(io.load(os.path.join(d, "t.npz")), tree)
        assert os.listdir(d) == ["t.npz"]


def test_optimizer_state_checkpoint_resumes_exactly(tmp_path):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 3)).astype(np.float32), "b": [np.zeros(3, np.float32)]}
    grads = [{"w": rng.standard_normal((3, 3)).astype(np.float32), "b": [rng.standard_normal(3).astype(np.float32)]}
             for _ in range(4)]
    opt = optim.adam(optim.cosine_decay(0.1, 4), weight_decay=0.01)
    p, s = params, opt.init(params)
    for g in grads[:2]:
        p, s = opt.update(p, g, s)
    io.save(tmp_path / "ckpt.npz", {"params": p, "opt": s})
    restored = io.load(tmp_path / "ckpt.npz")
    p2, s2 = restored["params"], restored["opt"]
    for g in grads[2:]:
        p, s = opt.update(p, g, s)
        p2, s2 = opt.update(p2, g, s2)
    assert_same((p2, s2), (p, s))


def test_path_is_used_exactly(tmp_path):
    io.save(tmp_path / "weights", {"w": np.ones(2)})
    assert os.listdir(tmp_path) == ["weights"]  # no ".npz" appended
    np.testing.assert_array_equal(io.load(tmp_path / "weights")["w"], np.ones(2))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_saved_file_has_default_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    io.save(tmp_path / "w.npz", {"w": np.ones(2)})
    assert os.stat(tmp_path / "w.npz").st_mode & 0o777 == 0o666 & ~umask


def test_compress_makes_zeros_small(tmp_path):
    io.save(tmp_path / "a.npz", {"w": np.zeros(10000)}, compress=True)
    io.save(tmp_path / "b.npz", {"w": np.zeros(10000)})
    assert os.path.getsize(tmp_path / "a.npz") < os.path.getsize(tmp_path / "b.npz") / 10


# ------------------------------------------------------------------------------------------ save errors

@pytest.mark.parametrize(("tree", "err", "match"), [
    ({"a": {"b": np.array([1, "x"], dtype=object)}}, TypeError, "'a/b' is an object array"),
    ({"a": [np.zeros(2, dtype=[("x", "f4"), ("y", "O")])]}, TypeError, "'a/0' is an object array"),
    ({"a": b"bytes"}, TypeError, "'a' has type bytes"),
    ({"a": [object()]}, TypeError, "'a/0' has type object"),
    ({1: np.ones(2)}, TypeError, "dict keys must be str"),
    ({"__tree__": np.ones(2)}, ValueError, "reserved"),
    ({"n": 2**70}, ValueError, "does not fit in int64"),
    ({"\ud800": 1.0}, ValueError, "UTF-8"),
])
def test_save_rejects(tmp_path, tree, err, match):
    with pytest.raises(err, match=match):
        io.save(tmp_path / "x.npz", tree)
    assert os.listdir(tmp_path) == []


def test_nested_reserved_name_is_fine(tmp_path):
    io.save(tmp_path / "x.npz", {"a": {"__tree__": 1}})
    assert io.load(tmp_path / "x.npz") == {"a": {"__tree__": 1}}


# ------------------------------------------------------------------------------------------------ atomic

@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, exc):
    path = tmp_path / "ckpt.npz"
    old = {"w": np.arange(4.0)}
    io.save(path, old)
    before = path.read_bytes()
    write_array, calls = np.lib.format.write_array, []

    def failing_write(*args, **kwargs):  # writes the first member, then fails mid-archive
        calls.append(1)
        if len(calls) > 1:
            raise exc
        return write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(type(exc)):
        io.save(path, {"w": np.zeros(4), "v": np.ones(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]
    assert_same(io.load(path), old)


def test_failed_rename_leaves_no_temp(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        io.save(tmp_path / "ckpt.npz", {"w": np.ones(3)})
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------ load errors

def saved_bytes(tmp_path):
    io.save(tmp_path / "good.npz", example_tree())
    return (tmp_path / "good.npz").read_bytes()


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -22, -1])
def test_truncated_file(tmp_path, cut):
    data = saved_bytes(tmp_path)
    cut = int(len(data) * cut) if isinstance(cut, float) else cut
    (tmp_path / "bad.npz").write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"bad\.npz.* is not a readable tinygrad_cnn \.npz"):
        io.load(tmp_path / "bad.npz")


def test_corrupted_member(tmp_path):
    data = bytearray(saved_bytes(tmp_path))
    start = data.index(b"\x93NUMPY", data.index(b"conv1/w.npy")) + 200  # inside conv1/w's array data
    data[start:start + 8] = b"\xff" * 8
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.npz"):
        io.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("content", [os.urandom(300), b"PK\x03\x04" + os.urandom(300), b"w,b\n1.0,2.0\n",
                                     b"\x80\x04K\x01."], ids=["random", "zip-magic", "text", "pickle"])
def test_foreign_bytes(tmp_path, content):
    (tmp_path / "x.npz").write_bytes(content)
    with pytest.raises(ValueError, match=r"x\.npz"):
        io.load(tmp_path / "x.npz")


def test_foreign_numpy_files(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    np.savez(tmp_path / "b.npz", w=np.ones(3))
    np.savez(tmp_path / "c.npz", w=np.array([None, 1], dtype=object),
             __tree__=np.frombuffer(b'{"dict": [["w", {"leaf": "w", "type": "array"}]]}', np.uint8))
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("__tree__.npy", b"not an npy")
    for name, match in [("a.npy", "single .npy array"), ("b.npz", "no '__tree__' entry"), ("c.npz", "bject arrays"),
                        ("d.npz", "d.npz")]:
        with pytest.raises(ValueError, match=match):
            io.load(tmp_path / name)


def test_malformed_tree_description(tmp_path):
    for tree in [b"[1, 2]", b'{"dict": [["w", {"leaf": "missing", "type": "array"}]]}', b'{"set": []}', b"\xff"]:
        np.savez(tmp_path / "x.npz", w=np.ones(2), __tree__=np.frombuffer(tree, np.uint8))
        with pytest.raises(ValueError, match=r"x\.npz"):
            io.load(tmp_path / "x.npz")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "nope.npz")


def test_strings_round_trip_without_pickle(tmp_path):
    from tinygrad_cnn.io import load, save

    path = tmp_path / "ckpt.npz"
    save(path, {"meta": {"model": "cnn-bn", "dataset": "fashion-mnist", "empty": ""}, "w": np.ones(2)})
    loaded = load(path)
    assert loaded["meta"] == {"model": "cnn-bn", "dataset": "fashion-mnist", "empty": ""}
    assert isinstance(loaded["meta"]["model"], str)
    with np.load(path, allow_pickle=False) as npz:
        assert all(not npz[k].dtype.hasobject for k in npz.files)
