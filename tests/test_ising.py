"""The Ising data set: physics against exact results, reproducibility, the disk cache, the chain split,
crossing_temperature, and argument errors.

Every call of ``ising`` here passes ``cache_dir=None`` or a ``tmp_path`` (and an autouse fixture points
``$TINYGRAD_CNN_DATA`` into ``tmp_path`` as a guard), so the tests never write into the user's home.
"""

import importlib
import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_cnn.data.ising import (DEFAULT_TEMPERATURES, TC, IsingData, crossing_temperature, default_cache_dir,
                                     energy_per_site, ising, magnetization)

# the module (tinygrad_cnn.data.ising, as an attribute of the package, is the function of that name)
ising_module = importlib.import_module("tinygrad_cnn.data.ising")
SMALL = dict(L=8, temperatures=[1.5, 3.5], chains=4, samples=3, sweeps=20, interval=5)


@pytest.fixture(autouse=True)
def no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "env-data"))


def assert_same(a, b):
    for name in ("x", "temperature", "label", "chain"):
        ga, gb = getattr(a, name), getattr(b, name)
        assert ga.dtype == gb.dtype and ga.shape == gb.shape, name
        np.testing.assert_array_equal(ga, gb, err_msg=name)


# ---------------------------------------------------------------- exact results to compare with

def onsager_energy(T):
    """Exact energy per site of the infinite lattice (Onsager 1944), with K(k) from the arithmetic-geometric mean."""
    b = 1 / T
    k = 2 * math.sinh(2 * b) / math.cosh(2 * b) ** 2
    x, y = 1.0, math.sqrt(abs(1 - k * k))  # abs: k rounds to just above 1 near Tc
    for _ in range(40):
        x, y = (x + y) / 2, math.sqrt(x * y)
    elliptic_k = math.pi / (2 * x)
    return -1 / math.tanh(2 * b) * (1 + 2 / math.pi * (2 * math.tanh(2 * b) ** 2 - 1) * elliptic_k)


def yang_magnetization(T):
    """Exact spontaneous magnetisation of the infinite lattice below Tc (Onsager, Yang 1952)."""
    return (1 - math.sinh(2 / T) ** -4) ** (1 / 8) if T < TC else 0.0


def exact_4x4(T):
    """<E/N>, <|m|> and <m^2> of the 4 x 4 periodic lattice by summing over all 2**16 configurations."""
    bits = (np.arange(2**16)[:, None] >> np.arange(16)) & 1
    s = (1 - 2 * bits).reshape(-1, 4, 4)
    e, m = energy_per_site(s), magnetization(s)
    w = np.exp(-16 * (e - e.min()) / T)
    w /= w.sum()
    return w @ e, w @ np.abs(m), w @ m**2


def test_onsager_helpers_are_right():
    assert onsager_energy(TC * (1 + 1e-9)) == pytest.approx(-math.sqrt(2), abs=1e-6)  # E/N(Tc) = -sqrt(2)
    assert onsager_energy(0.5) == pytest.approx(-2, abs=1e-6)
    assert yang_magnetization(1.0) == pytest.approx(0.999276, abs=1e-6)
    assert yang_magnetization(TC) == 0.0


# ---------------------------------------------------------------- physics

def test_sampler_matches_exact_enumeration_on_4x4():
    """Detailed balance checked against the exact Boltzmann averages: catches any neighbour or acceptance bug."""
    temps = [1.5, 2.5, 4.0]
    d = ising(L=4, temperatures=temps, chains=600, samples=10, sweeps=100, interval=10, seed=3, cache_dir=None)
    e, m = energy_per_site(d.x), magnetization(d.x)
    for T in temps:
        at = d.temperature == np.float32(T)
        exact_e, exact_abs_m, exact_m2 = exact_4x4(T)
        assert e[at].mean() == pytest.approx(exact_e, abs=0.03), T
        assert np.abs(m[at]).mean() == pytest.approx(exact_abs_m, abs=0.03), T
        assert (m[at] ** 2).mean() == pytest.approx(exact_m2, abs=0.03), T


def test_low_temperature_is_ordered_with_ground_state_energy():
    d = ising(L=16, temperatures=[1.0], chains=20, samples=4, sweeps=100, interval=10, cache_dir=None)
    assert np.abs(magnetization(d.x)).mean() > 0.99
    e = energy_per_site(d.x).mean()
    assert -2 <= e < -1.99
    assert e == pytest.approx(onsager_energy(1.0), abs=0.002)  # -1.9973


def test_high_temperature_is_disordered():
    d = ising(L=16, temperatures=[4.0], chains=50, samples=4, sweeps=100, interval=10, cache_dir=None)
    assert np.abs(magnetization(d.x)).mean() < 0.2
    e = energy_per_site(d.x).mean()
    assert e > -1.0
    assert e == pytest.approx(onsager_energy(4.0), abs=0.03)  # -0.5573; one standard error here is ~0.008


@pytest.mark.parametrize("T", [2.0, 3.0])
def test_agrees_with_onsager_away_from_tc(T):
    d = ising(L=16, temperatures=[T], chains=100, samples=4, sweeps=300, interval=20, seed=1, cache_dir=None)
    assert energy_per_site(d.x).mean() == pytest.approx(onsager_energy(T), abs=0.025)  # ~4 standard errors
    m = np.abs(magnetization(d.x)).mean()
    if T < TC:
        assert m == pytest.approx(yang_magnetization(T), abs=0.02)
    else:
        assert m < 0.25  # 0 on the infinite lattice; about 0.17 on 16 x 16


def test_global_sign_is_random_at_low_temperature():
    d = ising(L=8, temperatures=[1.0], chains=50, samples=4, sweeps=20, interval=5, cache_dir=None)
    m = magnetization(d.x)
    assert np.all(np.abs(m) > 0.8)
    assert 0.35 < np.mean(m < 0) < 0.65


# ---------------------------------------------------------------- shapes, labels, reproducibility

def test_shapes_dtypes_labels_and_chain_ids():
    d = ising(**SMALL, cache_dir=None)
    n = 2 * 4 * 3
    assert isinstance(d, IsingData) and len(d) == n
    assert d.x.shape == (n, 1, 8, 8) and d.x.dtype == np.float32
    assert set(np.unique(d.x)) <= {-1.0, 1.0}
    assert d.temperature.shape == (n,) and d.temperature.dtype == np.float32
    assert d.label.dtype == np.int64 and d.chain.dtype == np.int64
    np.testing.assert_array_equal(d.label, (d.temperature < TC).astype(np.int64))
    np.testing.assert_array_equal(d.chain, np.repeat(np.arange(8), 3))
    np.testing.assert_array_equal(d.temperature, np.repeat(np.float32([1.5, 3.5]), 12))


def test_default_temperatures_straddle_tc():
    t = DEFAULT_TEMPERATURES
    assert len(t) == 14 and t[0] == 1.6 and t[-1] == pytest.approx(2.9)
    assert np.sum(t < TC) == np.sum(t > TC) == 7
    assert np.min(np.abs(t - TC)) > 0.02
    assert TC == pytest.approx(2.269185314, abs=1e-9)


def test_same_seed_is_bit_identical_and_different_seeds_differ():
    a, b = ising(**SMALL, seed=7, cache_dir=None), ising(**SMALL, seed=7, cache_dir=None)
    assert_same(a, b)
    c = ising(**SMALL, seed=8, cache_dir=None)
    assert not np.array_equal(a.x, c.x)


def test_single_temperature_scalar_and_smallest_lattice():
    d = ising(L=2, temperatures=2.0, chains=3, samples=2, sweeps=5, interval=1, cache_dir=None)
    assert d.x.shape == (6, 1, 2, 2)


# ---------------------------------------------------------------- the cache

def npz_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".npz")


def test_second_call_loads_from_cache(tmp_path, monkeypatch):
    first = ising(**SMALL, cache_dir=tmp_path)
    assert len(npz_files(tmp_path)) == 1
    assert os.listdir(tmp_path) == npz_files(tmp_path)        # no temporary file left behind

    def must_not_run(*args, **kwargs):
        raise AssertionError("sampled again instead of loading the cache")

    monkeypatch.setattr(ising_module, "_simulate", must_not_run)
    assert_same(ising(**SMALL, cache_dir=tmp_path), first)
    assert_same(ising(**SMALL, cache_dir=str(tmp_path)), first)  # str paths too
    with pytest.raises(AssertionError, match="sampled again"):
        ising(**{**SMALL, "seed": 1}, cache_dir=tmp_path)          # other arguments, other file


def test_cache_matches_uncached_and_arguments_change_the_file(tmp_path):
    assert_same(ising(**SMALL, cache_dir=tmp_path), ising(**SMALL, cache_dir=None))
    ising(**{**SMALL, "interval": 6}, cache_dir=tmp_path)
    ising(**{**SMALL, "temperatures": [1.5, 3.25]}, cache_dir=tmp_path)
    assert len(npz_files(tmp_path)) == 3


def test_default_cache_dir_follows_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "data"))
    assert default_cache_dir() == tmp_path / "data" / "ising"
    ising(**SMALL)
    assert len(npz_files(tmp_path / "data" / "ising")) == 1
    monkeypatch.delenv("TINYGRAD_CNN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tinygrad_cnn" / "ising"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong-arrays"])
def test_corrupt_cache_file_is_regenerated(tmp_path, damage):
    want = ising(**SMALL, cache_dir=tmp_path)
    (name,) = npz_files(tmp_path)
    path = tmp_path / name
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        np.savez(path, spins=np.zeros(3))
    with pytest.warns(UserWarning, match="regenerating"):
        got = ising(**SMALL, cache_dir=tmp_path)
    assert_same(got, want)
    assert path.read_bytes() == good                                  # rewritten, and now valid again


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def savez_then_disk_full(f, **arrays):
        f.write(b"PK half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_disk_full)
    with pytest.warns(UserWarning, match="could not write"):
        d = ising(**SMALL, cache_dir=tmp_path)
    assert len(d) == 24
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- the split by chain

def test_split_by_chain_keeps_chains_whole():
    d = ising(L=4, temperatures=[1.5, 2.0, 3.0], chains=8, samples=3, sweeps=2, interval=1, cache_dir=None)
    train, test = d.split(test_fraction=0.25, seed=1)
    assert not set(train.chain.tolist()) & set(test.chain.tolist())
    assert len(train) + len(test) == len(d) and len(test) == 3 * 2 * 3   # 2 of 8 chains per temperature
    for part in (train, test):
        assert set(part.temperature.tolist()) == set(d.temperature.tolist())
        for c in np.unique(part.chain):
            assert np.sum(part.chain == c) == 3
    again = d.split(test_fraction=0.25, seed=1)
    assert_same(again[1], test)
    other = d.split(test_fraction=0.25, seed=np.random.default_rng(5))[1]
    assert len(other) == len(test)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_split_rejects_bad_fraction(fraction):
    d = ising(L=2, temperatures=[2.0], chains=2, samples=1, sweeps=1, interval=1, cache_dir=None)
    with pytest.raises(ValueError, match="test_fraction"):
        d.split(fraction)
    with pytest.raises(TypeError, match="test_fraction"):
        d.split("0.5")


# ---------------------------------------------------------------- observables

def test_magnetization_and_energy_of_known_states():
    up = np.ones((1, 1, 6, 6))
    checker = (1 - 2 * (np.add.outer(np.arange(6), np.arange(6)) % 2))[None]   # (1, 6, 6) antiferromagnet
    stripes = np.repeat(np.array([1, 1, 1, -1, -1, -1])[:, None], 6, axis=1)[None]
    assert magnetization(up).tolist() == [1.0] and magnetization(-up).tolist() == [-1.0]
    assert energy_per_site(up).tolist() == [-2.0] and energy_per_site(-up.astype(np.int8)).tolist() == [-2.0]
    assert magnetization(checker).tolist() == [0.0] and energy_per_site(checker).tolist() == [2.0]
    # two horizontal domain walls, each breaking 6 of the 72 bonds: E = -(72 - 2 * 12) / 36
    assert energy_per_site(stripes).tolist() == [pytest.approx(-(72 - 24) / 36)]


def test_observables_reject_bad_input():
    with pytest.raises(ValueError, match=r"magnetization: x must be 3-D or 4-D"):
        magnetization(np.ones((4, 4)))
    with pytest.raises(ValueError, match="one channel"):
        energy_per_site(np.ones((2, 3, 4, 4)))
    with pytest.raises(TypeError, match="numeric"):
        magnetization(np.array([[["a"]]]))


# ---------------------------------------------------------------- crossing_temperature

GRID = np.round(np.linspace(1.6, 2.9, 14), 10)


@given(centre=st.floats(1.62, 2.88), width=st.floats(0.01, 0.5), repeats=st.integers(1, 4), seed=st.integers(0, 99))
def test_crossing_of_a_logistic_curve_is_its_centre(centre, width, repeats, seed):
    """A decreasing logistic crosses 1/2 at its centre; linear interpolation of a curve symmetric about that
    point lands between the centre and the middle of the bracketing pair, so within half a grid step."""
    t = np.random.default_rng(seed).permutation(np.repeat(GRID, repeats))  # per-sample, any order
    p = 1 / (1 + np.exp((t - centre) / width))
    assert abs(crossing_temperature(t, p) - centre) <= 0.05 + 1e-9


@given(st.lists(st.floats(0.51, 1.0), min_size=1, max_size=14), st.booleans())
def test_no_crossing_gives_nan(values, above):
    p = np.array(values) if above else 1 - np.array(values)
    assert math.isnan(crossing_temperature(GRID[: len(p)], p))


def test_crossing_exact_and_edge_cases():
    assert crossing_temperature([1.0, 2.0, 3.0], [0.9, 0.7, 0.1]) == pytest.approx(2 + 0.2 / 0.6)
    assert crossing_temperature([1.0, 2.0, 3.0], [0.9, 0.5, 0.1]) == 2.0        # exactly 1/2 on a grid point
    assert crossing_temperature([1.0, 2.0], [1.0, 0.0]) == 1.5
    assert crossing_temperature([2.0, 1.0, 2.0, 1.0], [0.0, 1.0, 0.2, 0.8]) == 1.5           # means per T
    assert math.isnan(crossing_temperature([2.0, 2.0], [1.0, 0.0]))             # one temperature only
    assert crossing_temperature([1.0, 2.0], [0.2, 0.8]) == 1.5                  # an increasing curve crosses too


def test_noisy_curve_picks_the_crossing_that_best_splits_the_phases():
    # crossings between 0-1, 1-2 (a cold blip), 4-5 (the transition) and 6-7 (a blip at the hot end)
    t = np.arange(8.0)
    p = np.array([0.9, 0.4, 0.9, 0.95, 0.8, 0.1, 0.2, 0.6])
    assert crossing_temperature(t, p) == pytest.approx(4 + 0.3 / 0.7)
    # a tie in how well two crossings split the curve goes to the steeper one
    assert crossing_temperature(np.arange(4.0), [0.9, 0.45, 0.55, 0.0]) == pytest.approx(2 + 0.05 / 0.55)


def test_crossing_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        crossing_temperature([1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="finite"):
        crossing_temperature([1.0, 2.0], [0.5, np.nan])


# ---------------------------------------------------------------- argument errors

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(L=7), ValueError, r"L must be even.*L=7"),
    (dict(L=0), ValueError, r"L must be >= 2, got 0"),
    (dict(L=8.0), TypeError, r"L must be an int, got float 8.0"),
    (dict(L=True), TypeError, r"L must be an int"),
    (dict(temperatures=[1.0, -2.0]), ValueError, r"temperatures must be positive and finite, got \[-2.0\]"),
    (dict(temperatures=[1.0, float("inf")]), ValueError, r"temperatures must be positive and finite"),
    (dict(temperatures=[]), ValueError, r"temperatures must hold at least one temperature"),
    (dict(temperatures=[[1.0, 2.0]]), ValueError, r"temperatures must be 1-D"),
    (dict(temperatures="hot"), TypeError, r"temperatures must be a 1-D sequence"),
    (dict(chains=0), ValueError, r"chains must be >= 1, got 0"),
    (dict(chains=2.5), TypeError, r"chains must be an int, got float 2.5"),
    (dict(samples=-1), ValueError, r"samples must be >= 1"),
    (dict(sweeps=0), ValueError, r"sweeps must be >= 1"),
    (dict(interval=0), ValueError, r"interval must be >= 1"),
    (dict(seed=-1), ValueError, r"seed must be >= 0"),
    (dict(seed=None), TypeError, r"seed must be an int"),
    (dict(cache_dir=3), TypeError, r"cache_dir must be 'auto', a path or None"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=rf"^ising: {match}"):
        ising(**{**SMALL, "cache_dir": None, **kwargs})
