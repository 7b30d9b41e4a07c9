"""The 2D Ising model: a physics data set on which a CNN learns to find a phase transition.

The model
---------
Spins ``s_i = +1`` or ``-1`` sit on an ``L x L`` square lattice with periodic boundaries (a torus), and the
energy of a configuration is

    E = -J * sum over nearest-neighbour pairs <ij> of s_i s_j        (J = 1, no external field)

so aligned neighbours lower the energy and the two ground states (all up, all down) have ``E/N = -2``
(``N = L*L`` sites, ``2N`` bonds). At temperature ``T`` (with ``k_B = 1``, ``beta = 1/T``) a configuration
appears with Boltzmann probability ``exp(-beta E) / Z``. Below the critical temperature the spins order
(most point the same way, ``|magnetization|`` near 1); above it they are disordered (``|m|`` near 0).
Onsager solved the model exactly (1944): the transition is at

    Tc = 2 / ln(1 + sqrt(2)) = 2.269185...

Carrasquilla & Melko (Nature Physics 13, 431, 2017) trained a network on configurations labelled only
"ordered" (``T < Tc``) or "disordered" (``T > Tc``), and the temperature where its predicted probability
of "ordered" crosses 1/2 lands near ``Tc``. :func:`ising` makes that data set, and
:func:`crossing_temperature` reads the answer off a trained network's predictions.

Metropolis sampling
-------------------
Markov-chain Monte Carlo: propose flipping one spin, which changes the energy by
``dE = 2 s_i * (sum of its 4 neighbours)``, one of ``-8, -4, 0, 4, 8``; accept with probability
``min(1, exp(-beta dE))``. That rule satisfies detailed balance, so after enough updates the chain samples
the Boltzmann distribution. Only two acceptance probabilities are ever below 1, ``exp(-4 beta)`` and
``exp(-8 beta)``, so they are tabulated once per chain (as 32-bit integer thresholds compared with
32 random bits: ``P(u < p * 2**32) = p`` to within ``2**-32``).

Why a checkerboard: colour the lattice like a chess board. Every neighbour of a black site is white, so
all black spins can be updated *at the same time* without any two updates seeing each other: one
vectorised NumPy step per colour, two per sweep (a sweep = one proposal per site). Here the lattice is
stored as its four 2x2 sub-lattices ``q[r, c] = s[2I + r, 2J + c]`` ("quarters"), each a contiguous
``(chains, L/2, L/2)`` array: (0, 0) and (1, 1) are black, (0, 1) and (1, 0) white. Then every update
touches only the quarter it changes (no masks, no wasted random numbers), and the neighbours of a
quarter are two other quarters, each used as is and shifted by one (``np.roll``). This needs ``L`` even
(which a periodic checkerboard needs anyway). All chains of all temperatures are updated together as
one ``(temperatures * chains, L/2, L/2)`` array with a per-chain ``beta``; Python only loops over sweeps.

Why cold starts: from random spins at low ``T`` a chain quickly forms large domains, and a domain wall
spanning the torus ("stripes") takes astronomically long to disappear. Starting from all up, the low-T
chains are already in equilibrium (in the up state) and high-T chains melt in a few sweeps.

Why a random global sign: at low ``T`` single-spin flips never carry the whole lattice from "mostly up"
to "mostly down", so every ordered sample would be mostly up, and a network could just learn "mostly up
= ordered". Each sample is therefore multiplied by a random ``+1``/``-1``; the Boltzmann weight is
unchanged by a global flip, so this is still an exact sample of the model.

Example::

    data = ising(L=16, chains=20)                 # cached on disk after the first call
    train, test = data.split(test_fraction=0.25)  # by chain: correlated samples stay on one side
    m = magnetization(train.x)                    # (N,) mean spin per configuration
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write

from ..checks import check_int, check_ndim

__all__ = ["TC", "DEFAULT_TEMPERATURES", "IsingData", "ising", "magnetization", "energy_per_site",
           "crossing_temperature", "default_cache_dir"]

TC = 2 / np.log(1 + np.sqrt(2))
"""Onsager's exact critical temperature of the 2D square-lattice Ising model (J = k_B = 1): 2.269185..."""

DEFAULT_TEMPERATURES = np.linspace(1.6, 2.9, 14)
"""1.6, 1.7, ..., 2.9: seven temperatures below Tc (1.6 ... 2.2) and seven above (2.3 ... 2.9), none on it."""

ENV_VAR = "TINYGRAD_CNN_DATA"
_FORMAT_VERSION = 1  # bump whenever the sampler or the file layout changes: old cache files are then ignored
_LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclasses.dataclass(frozen=True, eq=False)
class IsingData:
    """Ising configurations with their temperatures, phase labels and chain ids (all of length ``N``).

    x            float32 ``(N, 1, L, L)``, spins ``+1``/``-1``, NCHW (one channel) ready for a CNN
    temperature  float32 ``(N,)``
    label        int64 ``(N,)``: 1 = ordered (``T < TC``), 0 = disordered
    chain        int64 ``(N,)``: which Markov chain the sample came from, unique across temperatures.
                 Samples of one chain are correlated, so split train/test by chain (:meth:`split`).
    """

    x: np.ndarray
    temperature: np.ndarray
    label: np.ndarray
    chain: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, index) -> IsingData:
        """The samples selected by ``index`` (a boolean mask or integer indices), as a new ``IsingData``."""
        return IsingData(self.x[index], self.temperature[index], self.label[index], self.chain[index])

    def split(self, test_fraction: float = 0.25, seed: int | np.random.Generator = 0) -> tuple[IsingData, IsingData]:
        """``(train, test)``, split by chain: all samples of a chain land on the same side.

        Stratified by temperature: at each temperature ``round(test_fraction * chains)`` chains, chosen at
        random (``seed``: an int or a ``np.random.Generator``), go to ``test``, so both sides see every
        temperature (unless a temperature has too few chains). ``0 < test_fraction < 1``.

        >>> train, test = ising(L=8, chains=8, cache_dir=None).split(0.25, seed=1)
        >>> set(train.chain) & set(test.chain)
        set()
        """
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.integer, np.floating)):
            raise TypeError(f"IsingData.split: test_fraction must be a number in (0, 1), got "
                            f"{type(test_fraction).__name__} {test_fraction!r}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"IsingData.split: test_fraction must be in (0, 1), got {test_fraction}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        test_chains = []
        for t in np.unique(self.temperature):  # a loop over temperatures (a dozen), not over samples
            chains = np.unique(self.chain[self.temperature == t])
            n_test = int(np.floor(test_fraction * len(chains) + 0.5))
            test_chains.append(rng.permutation(chains)[:n_test])
        is_test = np.isin(self.chain, np.concatenate(test_chains))
        return self.subset(~is_test), self.subset(is_test)


def default_cache_dir() -> Path:
    """``$TINYGRAD_CNN_DATA/ising`` if that environment variable is set, else ``~/.cache/tinygrad_cnn/ising``."""
    root = os.environ.get(ENV_VAR)
    return Path(root) / "ising" if root else Path.home() / ".cache" / "tinygrad_cnn" / "ising"


def ising(L: int = 24, temperatures=None, chains: int = 100, samples: int = 4, sweeps: int = 500,
          interval: int = 25, seed: int = 0, cache_dir: str | os.PathLike | None = "auto") -> IsingData:
    """Equilibrium configurations of the 2D Ising model, labelled ordered (``T < TC``) / disordered.

    L             lattice side, an even int >= 2 (the checkerboard update works on 2x2 blocks); periodic.
    temperatures  1-D positive numbers (or one number); default :data:`DEFAULT_TEMPERATURES`
                  (14 values from 1.6 to 2.9, seven each side of ``TC``).
    chains        independent Markov chains per temperature, each started cold (all spins up).
    samples       configurations kept per chain.
    sweeps        equilibration sweeps (one Metropolis proposal per site each) before the first sample.
    interval      sweeps between consecutive samples of a chain.
    seed          int >= 0 for ``np.random.default_rng``: identical arguments give bit-identical data.
    cache_dir     ``"auto"`` (default): :func:`default_cache_dir`; a path: that directory; ``None``: no cache.
                  The file name is a hash of every argument above (and a format version), so a second call
                  with the same arguments loads the file instead of sampling. Files are written atomically
                  (a temporary file, then ``os.replace``); an unreadable or corrupt file is regenerated.

    Returns an :class:`IsingData` with ``N = len(temperatures) * chains * samples`` samples ordered by
    temperature, then chain, then sample; chain ``k`` has temperature ``temperatures[k // chains]``.
    Every sample is multiplied by a random global sign (see the module docstring). Labels are computed from
    the float64 temperatures; a temperature exactly equal to ``TC`` gets label 0.

    The sampler runs at about 3-5 ns per site and sweep: the defaults (5,600 configurations of 24 x 24,
    575 sweeps of 1,400 chains) take about 2 s.

    >>> data = ising(L=8, temperatures=[1.5, 3.5], chains=3, samples=2, sweeps=50, cache_dir=None)
    >>> data.x.shape, data.label.tolist()
    ((12, 1, 8, 8), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    """
    L = check_int("ising", "L", L, minimum=2)
    if L % 2:
        raise ValueError(f"ising: L must be even (the checkerboard update splits the periodic lattice into "
                         f"2x2 blocks), got L={L}")
    temperatures = _check_temperatures(DEFAULT_TEMPERATURES if temperatures is None else temperatures)
    chains = check_int("ising", "chains", chains, minimum=1)
    samples = check_int("ising", "samples", samples, minimum=1)
    sweeps = check_int("ising", "sweeps", sweeps, minimum=1)
    interval = check_int("ising", "interval", interval, minimum=1)
    seed = check_int("ising", "seed", seed, minimum=0)
    if isinstance(cache_dir, str) and cache_dir == "auto":
        cache_dir = default_cache_dir()
    elif cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"ising: cache_dir must be 'auto', a path or None, got {type(cache_dir).__name__} "
                        f"{cache_dir!r}")

    def generate():
        rng = np.random.default_rng(seed)
        spins = _simulate(L, temperatures, chains, samples, sweeps, interval, rng)  # (T*chains, samples, L, L)
        return spins.reshape(-1, L, L), _labels(temperatures, chains, samples)

    if cache_dir is None:
        spins, (temperature, label, chain) = generate()
    else:
        params = dict(version=_FORMAT_VERSION, L=L, temperatures=[float(t) for t in temperatures], chains=chains,
                      samples=samples, sweeps=sweeps, interval=interval, seed=seed)
        key = json.dumps(params, sort_keys=True)
        path = Path(cache_dir) / f"ising-L{L}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
        loaded = _load(path, key, n=len(temperatures) * chains * samples, L=L)
        if loaded is None:
            spins, (temperature, label, chain) = generate()
            _save(path, meta=np.array(key), spins=spins, temperature=temperature, label=label, chain=chain)
        else:
            spins, temperature, label, chain = loaded
    return IsingData(spins[:, None].astype(np.float32), temperature, label, chain)


# ---------------------------------------------------------------- the sampler

def _simulate(L, temperatures, chains, samples, sweeps, interval, rng):
    """int8 spins ``(len(temperatures) * chains, samples, L, L)``; chain ``k`` at ``temperatures[k // chains]``."""
    n, h = len(temperatures) * chains, L // 2
    beta = np.repeat(1.0 / temperatures, chains)                             # (n,) one beta per chain
    accept = np.exp(-np.outer(beta, [4.0, 8.0]))                             # (n, 2) P(accept dE=4), dE=8
    thresholds = np.minimum(np.floor(accept * 2.0**32), 2**32 - 1).astype(np.uint32)
    t4, t8 = thresholds[:, 0, None, None], thresholds[:, 1, None, None]      # (n, 1, 1) each
    q = np.ones((2, 2, n, h, h), np.int8)                                    # q[r, c, k, I, J] = s_k[2I+r, 2J+c]
    out = np.empty((n, samples, L, L), np.int8)
    for j in range(samples):
        for _ in range(sweeps if j == 0 else interval):
            _sweep(q, t4, t8, rng)
        out[:, j] = q.transpose(2, 3, 0, 4, 1).reshape(n, L, L)               # (k, I, r, J, c) -> (k, 2I+r, 2J+c)
    sign = 1 - 2 * rng.integers(0, 2, size=(n, samples, 1, 1), dtype=np.int8)  # a random global flip per sample
    return out * sign


def _sweep(q, t4, t8, rng):
    """One Metropolis sweep, in place: the black quarters (0,0), (1,1), then the white ones (0,1), (1,0)."""
    for r, c in ((0, 0), (1, 1), (0, 1), (1, 0)):
        s = q[r, c]                                                          # (n, h, h) a view into q
        x = s * _neighbour_sum(q, r, c)                                      # s_i * sum of neighbours = dE / 2
        u = _random_uint32(rng, s.shape)
        # level 0: u >= t4, accept only dE <= 0;  1: t8 <= u < t4, also dE = 4;  2: u < t8, any dE
        level = (u < t4).view(np.int8) + (u < t8).view(np.int8)
        flip = x <= 2 * level                                                # dE = 2x <= 4 * level
        s *= 1 - 2 * flip.view(np.int8)                                      # branch-free, in place


def _neighbour_sum(q, r, c):
    """Sum of the 4 neighbours of every site of quarter ``(r, c)``, shape ``(n, h, h)``, as int8.

    Site ``(2I+r, 2J+c)`` has its vertical neighbours in quarter ``(1-r, c)``, at block rows ``I`` and
    ``I-1`` (for r = 0) or ``I+1`` (for r = 1); likewise horizontally in quarter ``(r, 1-c)``.
    """
    vertical, horizontal = q[1 - r, c], q[r, 1 - c]
    return (vertical + np.roll(vertical, 1 - 2 * r, axis=1)
            + horizontal + np.roll(horizontal, 1 - 2 * c, axis=2))


def _random_uint32(rng, shape):
    """Uniform random uint32 of ``shape``, taken from the generator's raw 64-bit stream (fast)."""
    size = int(np.prod(shape))
    return rng.bit_generator.random_raw((size + 1) // 2).view(np.uint32)[:size].reshape(shape)


def _labels(temperatures, chains, samples):
    """Per-sample temperature (float32), label (int64) and chain id (int64), in :func:`_simulate`'s order."""
    per_chain = np.repeat(temperatures, chains)                              # (T*chains,) float64
    chain = np.repeat(np.arange(len(per_chain), dtype=np.int64), samples)
    temperature = per_chain[chain]
    return temperature.astype(np.float32), (temperature < TC).astype(np.int64), chain


def _check_temperatures(temperatures):
    try:
        t = np.atleast_1d(np.asarray(temperatures, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise TypeError(f"ising: temperatures must be a 1-D sequence of positive numbers, got "
                        f"{type(temperatures).__name__} {temperatures!r}") from e
    check_ndim("ising", "temperatures", t.shape, 1)
    if t.size == 0:
        raise ValueError("ising: temperatures must hold at least one temperature, got an empty sequence")
    bad = t[~(np.isfinite(t) & (t > 0))]
    if bad.size:
        raise ValueError(f"ising: temperatures must be positive and finite, got {bad.tolist()}")
    return t


# ---------------------------------------------------------------- the disk cache

def _load(path, key, n, L):
    """``(spins, temperature, label, chain)`` from ``path``, or ``None`` if missing, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["meta"]) != key:
                return None
            arrays = f["spins"], f["temperature"], f["label"], f["chain"]
    except _LOAD_ERRORS as e:
        warnings.warn(f"ising: cache file {path} is unreadable ({type(e).__name__}: {e}); regenerating it",
                      stacklevel=3)
        return None
    spins, temperature, label, chain = arrays
    ok = (spins.shape == (n, L, L) and spins.dtype == np.int8 and temperature.shape == (n,)
          and temperature.dtype == np.float32 and label.shape == chain.shape == (n,)
          and label.dtype == chain.dtype == np.int64)
    return arrays if ok else None


def _save(path, **arrays):
    """``np.savez`` into a temporary file next to ``path``, then ``os.replace``: never a half-written cache.

    A failure to write (read-only or full disk) is a warning, not an error: the data are still returned.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    except OSError as e:
        warnings.warn(f"ising: could not write the cache file {path} ({e}); continuing without it", stacklevel=3)


# ---------------------------------------------------------------- observables and analysis

def magnetization(x) -> np.ndarray:
    """Mean spin of each configuration: ``m = (1/N) sum_i s_i``, in ``[-1, 1]``.

    x: ``(N, 1, L, L)`` (as in :class:`IsingData`) or ``(N, L, L)``; returns float64 ``(N,)``.

    >>> magnetization(np.ones((2, 1, 4, 4))).tolist()
    [1.0, 1.0]
    """
    x = _check_spins("magnetization", x)
    return x.mean(axis=(-2, -1))


def energy_per_site(x) -> np.ndarray:
    """Energy per site ``E/N = -(1/N) sum over nearest-neighbour pairs <ij> of s_i s_j``, periodic boundaries.

    Each site's bonds to its right and lower neighbours count every pair once (``2N`` bonds), so the
    ground states give -2 and a checkerboard (antiferromagnet) +2; an infinite-temperature state gives 0.
    x: ``(N, 1, L, L)`` or ``(N, L, L)``; returns float64 ``(N,)``.

    >>> energy_per_site(np.ones((1, 1, 4, 4))).tolist()
    [-2.0]
    """
    x = _check_spins("energy_per_site", x)
    bonds = x * (np.roll(x, 1, axis=-1) + np.roll(x, 1, axis=-2))           # (N, L, L)
    return -bonds.mean(axis=(-2, -1))


def _check_spins(fn, x):
    """x as float64 ``(N, L, L)``."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_:
        raise TypeError(f"{fn}: x must be a numeric array of spins, got dtype {x.dtype}")
    check_ndim(fn, "x", x.shape, (3, 4), "(N, 1, L, L) or (N, L, L)")
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{fn}: x must have one channel, got shape {x.shape}")
        x = x[:, 0]
    return x.astype(np.float64)


def crossing_temperature(temperatures, p_ordered) -> float:
    """The temperature where the mean predicted P(ordered) crosses 1/2: the network's estimate of ``Tc``.

    temperatures, p_ordered: 1-D, one entry per sample (any order, temperatures may repeat). The
    predictions are averaged per distinct temperature, giving a curve ``p(T_1), ..., p(T_k)`` (``T`` sorted).
    A crossing is a pair of neighbouring temperatures with ``p - 1/2`` of opposite signs (or zero on one
    side); its temperature is the linear interpolation between them (``T_i`` itself where ``p(T_i)`` is
    exactly 1/2). Returns ``nan`` if there is no crossing (or fewer than two temperatures).

    A clean curve (decreasing from "ordered" to "disordered") crosses once, and that crossing is returned.
    A noisy curve may cross several times; then the crossing that best splits the curve into an ordered
    side and a disordered side is chosen: the one after which the most points agree with "p > 1/2 below,
    p < 1/2 above". Ties go to the steepest drop across the pair, then to the lowest temperature. So an
    isolated blip near either end of the range does not move the answer.

    >>> crossing_temperature([1.0, 2.0, 3.0], [0.9, 0.7, 0.1])
    2.333333333333333
    """
    t = np.asarray(temperatures, dtype=np.float64)
    p = np.asarray(p_ordered, dtype=np.float64)
    check_ndim("crossing_temperature", "temperatures", t.shape, 1)
    if p.shape != t.shape:
        raise ValueError(f"crossing_temperature: p_ordered must have the shape of temperatures, got "
                         f"p_ordered.shape={p.shape}, temperatures.shape={t.shape}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("crossing_temperature: temperatures and p_ordered must be finite")
    grid, which = np.unique(t, return_inverse=True)                          # (k,) sorted, (N,) index into it
    mean = np.bincount(which, weights=p, minlength=len(grid)) / np.bincount(which, minlength=len(grid))
    d = mean - 0.5                                                           # (k,) > 0 ordered, < 0 disordered
    lo, hi = d[:-1], d[1:]
    candidates = np.flatnonzero((lo * hi <= 0) & ((lo != 0) | (hi != 0)))  # pairs (i, i+1) that cross
    if candidates.size == 0:
        return float("nan")
    ordered_below = np.cumsum(d > 0)                                        # [i]: points <= i with p > 1/2
    disordered_above = np.cumsum((d < 0)[::-1])[::-1]                     # [i]: points >= i with p < 1/2
    score = ordered_below[candidates] + disordered_above[candidates + 1]
    drop = lo[candidates] - hi[candidates]
    i = candidates[np.lexsort((candidates, -drop, -score))[0]]            # best score, then steepest, then lowest
    if d[i] == 0:
        return float(grid[i])
    return float(grid[i] + d[i] / (d[i] - d[i + 1]) * (grid[i + 1] - grid[i]))
