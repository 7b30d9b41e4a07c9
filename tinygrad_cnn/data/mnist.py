"""MNIST and Fashion-MNIST, found on disk (or fetched by TensorFlow) and returned like ``keras.datasets``.

Both data sets are 70000 grey 28x28 images of ten classes (digits; clothes), split 60000/10000. Where
they are looked for, first match wins:

1. the ``path`` argument, if given (and then nowhere else): a ``.npz`` file, or a directory holding the
   four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
   ``t10k-labels-idx1-ubyte``, each raw or ``.gz``) or ``<name>.npz``;
2. ``$TINYGRAD_CNN_DATA/<name>``, a directory as above (``name`` is ``mnist`` or ``fashion-mnist``);
3. the Keras cache (``$KERAS_HOME``, default ``~/.keras``): ``datasets/mnist.npz`` for MNIST,
   ``datasets/fashion-mnist/`` with the gzipped IDX files for Fashion-MNIST;
4. Fashion-MNIST only: ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``);
5. a download by ``tf.keras.datasets`` when TensorFlow is installed (it fills the Keras cache).

Otherwise ``FileNotFoundError`` lists every place searched and how to get the files (installing
TensorFlow only when it is not importable). Its message names the place argument as Python callers know
it (``path=``); its ``worded_for(flag)`` says the same for a command line (``e.worded_for("--data")``,
as ``python -m tinygrad_cnn`` does).
TensorFlow's C++ start-up logging is silenced for the download (``TF_CPP_MIN_LOG_LEVEL=3`` while it runs,
unless you set that variable yourself). Some of it ignores that variable (on CPUs where TensorFlow turns
oneDNN on, the absl and ``port.cc`` lines at import), so while TensorFlow is imported the process's
file descriptor 2 goes to a temporary file, and afterwards every line of it that is not a TensorFlow
log line is written to stderr as it came.
"""

import contextlib
import functools
import os
import re
import sys
import tempfile
from pathlib import Path

from ..checks import check_path
from .idx import check_mnist_arrays, read_idx_pair, read_npz

ENV_VAR = "TINYGRAD_CNN_DATA"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}  # apt-get install dataset-fashion-mnist
TF_MODULES = {"mnist": "mnist", "fashion-mnist": "fashion_mnist"}


def load_mnist(path=None):
    """The MNIST digits as ``((x_train, y_train), (x_test, y_test))``, like ``keras.datasets.mnist.load_data()``.

    ``x_*`` are uint8 ``(N, 28, 28)`` images (0 = background, 255 = ink), ``y_*`` uint8 ``(N,)`` labels
    0..9; N is 60000 for train and 10000 for test. ``path`` (a directory of IDX files, a directory with
    ``mnist.npz``, or an ``.npz`` file) overrides the search described in the module docstring.

    >>> (x_train, y_train), (x_test, y_test) = load_mnist()        # doctest: +SKIP
    >>> x_train.shape, x_train.dtype, y_test.shape                   # doctest: +SKIP
    ((60000, 28, 28), dtype('uint8'), (10000,))
    >>> x = x_train[:, None].astype(np.float32) / 255                 # doctest: +SKIP
    """
    return _load("mnist", path)


def load_fashion_mnist(path=None):
    """Fashion-MNIST as ``((x_train, y_train), (x_test, y_test))``, like ``keras.datasets.fashion_mnist``.

    Same shapes and dtypes as :func:`load_mnist`; labels 0..9 are T-shirt/top, Trouser, Pullover, Dress,
    Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot. ``path`` is a directory of IDX files, a directory with
    ``fashion-mnist.npz``, or an ``.npz`` file.

    >>> (x_train, y_train), _ = load_fashion_mnist("/usr/share/datasets/fashion-mnist")   # doctest: +SKIP
    >>> x_train.shape, int(y_train.max())                                                 # doctest: +SKIP
    ((60000, 28, 28), 9)
    """
    return _load("fashion-mnist", path)


def search_places(name, environ=None, home=None):
    """The places searched for data set ``name`` when no ``path`` is given, in order (before any download).

    ``environ`` (default ``os.environ``) and ``home`` (default ``Path.home()``) are parameters so that
    tests can point the search at temporary directories.
    """
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else Path(home)
    keras = Path(environ["KERAS_HOME"]) if environ.get("KERAS_HOME") else home / ".keras"
    places = [Path(environ[ENV_VAR]) / name] if environ.get(ENV_VAR) else []
    places.append(keras / "datasets" / ("mnist.npz" if name == "mnist" else name))
    if name in SYSTEM_DIRS:
        places.append(SYSTEM_DIRS[name])
    return places


def _not_found(name, *, path=None, missing="", searched=(), tensorflow=False, failure=None):
    """The FileNotFoundError for data that are nowhere: its message speaks to Python callers (``path=``);
    its ``worded_for(flag)`` says the same for a command line whose option is ``flag`` (``"--data"``)."""
    explain = functools.partial(_explain, name, path=path, missing=missing, searched=list(searched),
                                tensorflow=tensorflow, failure=failure)
    error = FileNotFoundError(explain())
    error.worded_for = explain
    return error


def _explain(name, flag=None, *, path, missing, searched, tensorflow, failure):
    """Why ``name`` was not found and how to get it; ``tensorflow``: importable, ``failure``: its download's error."""
    if path is not None and flag:
        return (f"no {name} data at {flag} {path}: {missing} ({flag} takes a directory holding the four IDX "
                f"files or {name}.npz, or an .npz file)")
    if path is not None:
        return f"load_{name.replace('-', '_')}: no data at path={str(path)!r}: {missing}"
    if tensorflow:
        why = f"and the TensorFlow download failed ({failure})."
        fetch = "check the network connection and run again (TensorFlow then downloads it into the Keras cache)"
    else:
        why = "and TensorFlow is not installed to download it."
        fetch = "`pip install tensorflow-cpu` (then it is downloaded into the Keras cache)"
    how = (f"Get the data by one of: {fetch}; "
           + ("`apt-get install dataset-fashion-mnist`; " if name in SYSTEM_DIRS else "")
           + f"or download the four IDX files ({', '.join(f + '.gz' for f in IDX_FILES)}) into a directory "
           f"and {f'pass {flag} DIR' if flag else 'pass path=that directory'}, or put them in ${ENV_VAR}/{name}/.")
    searched = "\n".join(f"  - {p}" for p in searched)
    return f"{name} not found. Searched:\n{searched}\n{why}\n{how}"


def _load(name, path=None, environ=None, home=None):
    if path is not None:
        check_path(f"load_{name.replace('-', '_')}", "path", path)
        path = Path(path).expanduser()
        data = _read_place(path, name)
        if data is None:
            raise _not_found(name, path=path, missing=_what_is_missing(path, name))
        return data
    places = search_places(name, environ, home)
    for place in places:
        data = _read_place(place, name)
        if data is not None:
            return data
    if not (os.environ if environ is None else environ).get(ENV_VAR):
        places.insert(0, f"${ENV_VAR}/{name} (${ENV_VAR} is not set)")
    return _download(name, places)


def _idx_file(directory, stem):
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (raw first), else None."""
    return next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)


def _read_place(place, name):
    """The data at ``place`` (an .npz file, or a directory of IDX files or ``<name>.npz``), or None if absent."""
    if place.is_file():
        return read_npz(place)
    if not place.is_dir():
        return None
    files = [_idx_file(place, stem) for stem in IDX_FILES]
    if all(files):
        return read_idx_pair(files[0], files[1]), read_idx_pair(files[2], files[3])
    npz = place / f"{name}.npz"
    return read_npz(npz) if npz.is_file() else None


def _what_is_missing(place, name):
    if not place.exists():
        return "it does not exist"
    missing = [f"{stem}[.gz]" for stem in IDX_FILES if _idx_file(place, stem) is None]
    return f"the directory lacks {', '.join(missing)} (and holds no {name}.npz)"


# A line of TensorFlow's C++ logging: absl's notice, or glog's "I0000 00:00:1796220315.495669  6544 port.cc:153] ..."
TF_LOG_LINE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                         r"|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")


@contextlib.contextmanager
def _tensorflow_log_lines_dropped():
    """Sends file descriptor 2 (where C++ libraries write) to a temporary file while the block runs, then
    writes back to stderr every captured line that ``TF_LOG_LINE`` does not match. Does nothing where
    descriptor 2 cannot be duplicated."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not TF_LOG_LINE.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _download(name, places):
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if quiet:  # no absl / cpu_feature_guard lines before our own message (read by TensorFlow at import)
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        try:
            with _tensorflow_log_lines_dropped() if quiet else contextlib.nullcontext():
                import tensorflow as tf
        except ImportError:
            raise _not_found(name, searched=places, tensorflow=False) from None
        try:
            train, test = getattr(tf.keras.datasets, TF_MODULES[name]).load_data()
        except Exception as e:  # no network, server down, ...
            raise _not_found(name, searched=places, tensorflow=True, failure=f"{type(e).__name__}: {e}") from e
    finally:
        if quiet:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    source = f"tf.keras.datasets.{TF_MODULES[name]}"
    return check_mnist_arrays(*train, f"{source} train"), check_mnist_arrays(*test, f"{source} test")
