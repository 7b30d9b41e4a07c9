"""The command line (``python -m tinygrad_cnn train | evaluate | graph``), end to end on tiny data.

Most runs call ``cli.main`` in-process with a tiny Ising data set (``tasks.prepare`` is wrapped to pass
small ``ising_options``, which the checkpoint's meta records, so ``evaluate`` rebuilds the same data);
two runs go through ``python -m tinygrad_cnn`` as a user would. Everything is written into ``tmp_path``:
the working directory, ``$TINYGRAD_CNN_DATA`` (the Ising cache) and the tiny MNIST-format files.
TensorFlow is hidden in-process so that nothing is ever downloaded.
"""

import gzip
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn import cli, tasks

PNG = b"\x89PNG\r\n\x1a\n"
TINY_ISING = dict(chains=8, sweeps=50, samples=4)  # 14 temperatures x 8 chains x 4 samples = 448 configurations
QUICK = ["--lattice", "8", "--epochs", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` fails: no download
    return tmp_path


@pytest.fixture
def tiny_ising(monkeypatch):
    real = tasks.prepare

    def prepare(dataset, **kw):
        if dataset == "ising" and not kw.get("ising_options"):
            kw["ising_options"] = TINY_ISING
        return real(dataset, **kw)

    monkeypatch.setattr(tasks, "prepare", prepare)


def run(argv, capsys):
    """``(return code, stdout, stderr)`` of ``cli.main(argv)``."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_module(*argv, env_dir):
    env = {**os.environ, "TINYGRAD_CNN_DATA": str(env_dir / "data"), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "tinygrad_cnn", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=env_dir, timeout=120)


def printed_accuracy(text):
    return float(re.search(r"test accuracy (\d\.\d{4})", text).group(1))


def write_idx_dir(directory, n_train=64, n_test=16, seed=0):
    """Tiny MNIST-format files: class k has a bright square at a position of its own, plus noise."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            x[i, r:r + 6, c:c + 5] = 230
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            header = bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + a.tobytes()))
    return directory


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} is not strict JSON: it holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------------------------- help

def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("train", "evaluate", "graph"))
    assert cli.main([]) == 0 and "usage" in capsys.readouterr().out


@pytest.mark.parametrize("command, flag", [("train", "--tc-method"), ("evaluate", "--params"), ("graph", "--profile")])
def test_command_help(capsys, command, flag):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0 and flag in capsys.readouterr().out


def test_python_m_help(tmp_path):
    result = run_module("--help", env_dir=tmp_path)
    assert result.returncode == 0 and "train" in result.stdout and result.stderr == ""


# ---------------------------------------------------------------------------------------------- train, evaluate

def test_train_ising_as_a_user_would(tmp_path, capsys):
    """The real default Ising data (100 chains per temperature) at lattice 8, through ``python -m``."""
    out = tmp_path / "run"
    result = run_module("train", *QUICK, "--limit", 200, "--out", out, env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "critical temperature" in result.stdout
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.json", "params.npz", "phase.png"]
    for png in ("curves.png", "phase.png"):
        assert (out / png).read_bytes()[:8] == PNG
    metrics = strict_json(out / "metrics.json")
    for key in ("dataset", "epochs", "train_loss", "test_accuracy", "final_test_accuracy", "seconds",
                "critical_temperature"):
        assert key in metrics, key
    assert metrics["dataset"] == "ising" and metrics["epochs"] == 1 and metrics["model"] == "ising-cnn"
    assert len(metrics["train_loss"]) == len(metrics["test_accuracy"]) == 1
    assert metrics["final_test_accuracy"] == metrics["test_accuracy"][-1]
    assert metrics["exact_critical_temperature"] == pytest.approx(2.269185314)
    assert 0 < metrics["seconds"] < 60
    saved = tc.load(out / "params.npz")
    assert set(saved) == {"params", "state", "meta"}
    assert saved["meta"] == {"dataset": "ising", "lattice": 8, "seed": 0, "ising_options": {}, "model": "ising-cnn"}
    assert saved["params"]["conv1"]["w"].shape == (8, 1, 3, 3)
    assert list((tmp_path / "data" / "ising").glob("*.npz"))  # the cache went to $TINYGRAD_CNN_DATA

    # evaluate (in-process, same cache): the whole held-out test set (--limit shrank it during training)
    code, stdout, _ = run(["evaluate", "--params", out / "params.npz"], capsys)
    assert code == 0 and "(1400 samples)" in stdout and 0 <= printed_accuracy(stdout) <= 1


def test_train_then_evaluate_ising(tmp_path, capsys, tiny_ising):
    code, stdout, err = run(["train", *QUICK, "--epochs", 2, "--out", "run"], capsys)
    assert code == 0, err
    assert "336 train / 112 test samples" in stdout
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    assert metrics["epochs"] == 2 and len(metrics["train_loss"]) == len(metrics["test_accuracy"]) == 2
    assert tc.load(tmp_path / "run" / "params.npz")["meta"]["ising_options"] == TINY_ISING

    code, stdout, err = run(["evaluate", "--params", "run/params.npz"], capsys)
    assert code == 0, err
    assert "(112 samples)" in stdout
    assert printed_accuracy(stdout) == pytest.approx(metrics["final_test_accuracy"], abs=6e-5)
    tc_printed = float(re.search(r"critical temperature \(P\(ordered\) = 1/2\): (\S+)", stdout).group(1))
    if metrics["critical_temperature"] is None:  # no crossing: nan, written to JSON as null
        assert math.isnan(tc_printed)
    else:
        assert tc_printed == pytest.approx(metrics["critical_temperature"], abs=6e-5)


@pytest.mark.parametrize("flags", [["--optimizer", "sgd", "--schedule", "step"], ["--schedule", "constant"],
                                   ["--model", "cnn-bn", "--lattice", "28"]],
                         ids=["sgd-step", "constant", "cnn-bn"])
def test_train_ising_options(tmp_path, capsys, tiny_ising, flags):
    code, _, err = run(["train", *QUICK, "--limit", 64, "--out", "run", *flags], capsys)
    assert code == 0, err
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    assert metrics["options"]["optimizer"] == (flags[1] if flags[0] == "--optimizer" else "adam")


def test_nan_results_are_written_as_null(tmp_path, capsys, tiny_ising, monkeypatch):
    monkeypatch.setattr(tasks, "crossing_temperature", lambda t, p: float("nan"))
    code, _, err = run(["train", *QUICK, "--limit", 64, "--out", "run"], capsys)
    assert code == 0, err
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    assert metrics["critical_temperature"] is None and metrics["critical_temperature_error"] is None
    assert (tmp_path / "run" / "phase.png").read_bytes()[:8] == PNG


def test_confusion(tmp_path, capsys, tiny_ising, monkeypatch):
    calls = []
    real = tasks.confusion_tc

    def quick(task, **kw):
        calls.append(kw)
        return real(task, **kw, epochs=1)

    monkeypatch.setattr(tasks, "confusion_tc", quick)
    code, stdout, err = run(["train", *QUICK, "--limit", 100, "--tc-method", "confusion", "--out", "run"], capsys)
    assert code == 0, err
    assert calls == [{"model_name": "ising-cnn", "seed": 0}]
    assert "learning by confusion" in stdout
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    confusion = metrics["confusion"]
    assert len(confusion["trials"]) == len(confusion["accuracy"]) == 13  # midpoints of the 14 temperatures
    assert all(0 <= a <= 1 for a in confusion["accuracy"])
    assert metrics["confusion_critical_temperature"] == confusion["critical_temperature"]
    assert (tmp_path / "run" / "phase.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_train_then_evaluate_images(tmp_path, capsys, dataset):
    data = write_idx_dir(tmp_path / dataset)
    # with a progress bar (on stderr); fashion-mnist also augments by default
    code, stdout, err = run(["train", "--dataset", dataset, "--data", data, "--epochs", 1, "--batch-size", 32,
                             "--out", "run"], capsys)
    assert code == 0, err
    assert "64 train / 16 test samples" in stdout and "epoch 1/1" in err
    run_dir = tmp_path / "run"
    assert sorted(os.listdir(run_dir)) == ["curves.png", "metrics.json", "params.npz"]
    metrics = strict_json(run_dir / "metrics.json")
    assert metrics["dataset"] == dataset and metrics["model"] == "cnn-bn"
    assert metrics["options"]["augment"] is (dataset == "fashion-mnist")
    assert "critical_temperature" not in metrics
    meta = tc.load(run_dir / "params.npz")["meta"]
    assert meta["dataset"] == dataset and set(meta) == {"dataset", "mean", "std", "model"}

    code, stdout, err = run(["evaluate", "--params", run_dir / "params.npz", "--data", data], capsys)
    assert code == 0, err
    assert "(16 samples)" in stdout
    assert printed_accuracy(stdout) == pytest.approx(metrics["final_test_accuracy"], abs=6e-5)


def test_default_out_is_a_fresh_runs_directory(tmp_path, capsys, tiny_ising):
    code, _, err = run(["train", *QUICK, "--limit", 32], capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run_dir.name) and (run_dir / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------------- graph

needs_viz = pytest.mark.skipif(importlib.util.find_spec("tinygrad_cnn.viz") is None,
                               reason="tinygrad_cnn.viz is not written yet")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@needs_viz
@needs_dot
@pytest.mark.parametrize("flags", [[], ["--model", "ising-cnn", "--grads"], ["--no-batch-norm"]],
                         ids=["cnn-bn", "ising-cnn-grads", "cnn"])
def test_graph_writes_svg(tmp_path, capsys, flags):
    code, stdout, err = run(["graph", "--out", "x.svg", "--batch", 2, *flags], capsys)
    assert code == 0, err
    svg = (tmp_path / "x.svg").read_text()
    assert "<svg" in svg and "</svg>" in svg
    assert "conv2d" in svg.lower() and "conv1/w" in svg  # an op node and a named parameter leaf
    assert "wrote x.svg" in stdout


# ---------------------------------------------------------------------------------------------- errors

def assert_clean_error(code, err, command, message):
    assert code == 1
    assert err.startswith(f"tinygrad-cnn {command}: error: ") and message in err, err
    assert "Traceback" not in err


def test_missing_image_data(capsys):
    code, _, err = run(["train", "--dataset", "mnist", "--data", "/nonexistent", "--no-progress"], capsys)
    assert_clean_error(code, err, "train", "does not exist")


def test_missing_image_data_python_m(tmp_path):
    result = run_module("train", "--dataset", "fashion-mnist", "--data", tmp_path / "nowhere", env_dir=tmp_path)
    assert result.returncode == 1 and "error" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_bad_params(tmp_path, capsys):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    assert_clean_error(*run(["evaluate", "--params", "junk.npz"], capsys)[::2], "evaluate", "not a readable")

    tc.save(tmp_path / "weights.npz", {"w": np.zeros(3, np.float32)})  # a valid file, but not a checkpoint
    assert_clean_error(*run(["evaluate", "--params", "weights.npz"], capsys)[::2], "evaluate",
                       "not a checkpoint written by 'train'")

    assert_clean_error(*run(["evaluate", "--params", "missing.npz"], capsys)[::2], "evaluate", "missing.npz")
    assert_clean_error(*run(["evaluate", "--params", tmp_path], capsys)[::2], "evaluate", "")  # a directory


def test_train_bad_values(tmp_path, capsys, tiny_ising):
    assert_clean_error(*run(["train", *QUICK[2:], "--lattice", 7], capsys)[::2], "train", "L must be even")
    (tmp_path / "taken").write_text("a file, not a directory")
    assert_clean_error(*run(["train", *QUICK, "--out", "taken"], capsys)[::2], "train", "taken")
    assert_clean_error(*run(["train", *QUICK, "--lr", -1], capsys)[::2], "train", "lr")


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--batch-size", "0"], ["--limit", "-5"], ["--epochs", "x"]])
def test_counts_must_be_positive(capsys, flags):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *flags])
    assert info.value.code == 2 and "expected an integer >= 1" in capsys.readouterr().err


def test_unknown_choices(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--dataset", "cifar10"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_fit_failure_is_reported_cleanly(capsys, tiny_ising, monkeypatch):
    from tinygrad_cnn import training

    def diverge(*args, **kwargs):
        raise FloatingPointError("fit: the loss became nan at epoch 1, step 3")

    monkeypatch.setattr(training, "fit", diverge)
    code, _, err = run(["train", *QUICK], capsys)
    assert_clean_error(code, err, "train", "the loss became nan at epoch 1, step 3")

