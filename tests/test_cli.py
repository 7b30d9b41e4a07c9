"""The command line (``python -m tinygrad_cnn train | evaluate | graph``), end to end on tiny data.

Many runs call ``cli.main`` in-process with a tiny Ising data set (``tasks.prepare`` is wrapped to pass
small ``ising_options``, which the checkpoint's meta records, so ``evaluate`` rebuilds the same data);
the newcomer's path (train, the evaluate command it prints, Ctrl-C and --resume, missing data, graph)
goes through ``python -m tinygrad_cnn`` in a subprocess, as a user would. Everything is written into ``tmp_path``:
the working directory, ``$TINYGRAD_CNN_DATA`` (the Ising cache) and the tiny MNIST-format files.
TensorFlow is hidden in-process so that nothing is ever downloaded.
"""

import gzip
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn import cli, models, runs, tasks, training
from tinygrad_cnn.pytree import tree_leaves, tree_paths

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


def module_env(env_dir, env=None, drop=()):
    env = {**os.environ, "TINYGRAD_CNN_DATA": str(env_dir / "data"), "PYTHONWARNINGS": "ignore", **(env or {})}
    return {key: value for key, value in env.items() if key not in drop}


def run_module(*argv, env_dir, env=None, drop=()):
    """``python -m tinygrad_cnn ARGV`` in ``env_dir``; ``env`` adds variables, ``drop`` removes some."""
    return subprocess.run([sys.executable, "-m", "tinygrad_cnn", *map(str, argv)], capture_output=True, text=True,
                          env=module_env(env_dir, env, drop), cwd=env_dir, timeout=120)


def run_printed(text, prefix, env_dir, **kw):
    """Runs the command that the CLI printed after ``prefix`` (``"evaluate with:"``), exactly as printed."""
    line = re.search(rf"^{prefix} (.*)$", text, re.MULTILINE).group(1)
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "tinygrad_cnn"], line
    return run_module(*argv[3:], env_dir=env_dir, **kw)


def printed_accuracy(text):
    return float(re.search(r"test accuracy (\d\.\d{4})", text).group(1))


def final_accuracy(stdout):
    """The accuracy train prints last (``test accuracy 0.9586 in 5.8 s; wrote ...``), as printed."""
    return re.search(r"^test accuracy (\d\.\d{4}) in ", stdout, re.MULTILINE).group(1)


def assert_same_checkpoint(a, b):
    """Two checkpoints hold the same leaves, bit for bit."""
    a, b = tc.load(a), tc.load(b)
    assert tree_paths(a) == tree_paths(b)
    for path, x, y in zip(tree_paths(a), tree_leaves(a), tree_leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y), path


TIMING = {"seconds", "training_seconds", "images_per_second"}


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

    # evaluate (in-process, same cache): the whole held-out test set, as train used it (--limit caps training only)
    assert "200 train / 1400 test samples" in result.stdout
    code, stdout, _ = run(["evaluate", "--params", out / "params.npz"], capsys)
    assert code == 0 and "(1400 samples)" in stdout and f"test accuracy {final_accuracy(result.stdout)} " in stdout


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
                         ids=["sgd-step", "constant", "cnn-bn-28"])
def test_train_ising_options(tmp_path, capsys, tiny_ising, flags):
    code, _, err = run(["train", *QUICK, "--limit", 64, "--out", "run", *flags], capsys)
    assert code == 0, err
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    assert metrics["options"]["optimizer"] == (flags[1] if flags[0] == "--optimizer" else "adam")


@pytest.mark.parametrize("model", ["cnn-bn", "cnn", "resnet-small"])
def test_image_models_train_on_any_lattice_with_one_output_per_phase(tmp_path, capsys, tiny_ising, model):
    """The model is built for the task's input size and classes (a 12x12 lattice, 2 phases), not for
    28x28 images and 10 digits; evaluate then scores it as train did."""
    code, out, err = run(["train", *QUICK, "--lattice", 12, "--limit", 64, "--out", "run", "--model", model], capsys)
    assert code == 0, err
    saved = tc.load(tmp_path / "run" / "params.npz")
    logits = tc.models.get(model).apply(saved["params"], np.ones((3, 1, 12, 12), np.float32), state=saved["state"])
    assert logits.shape == (3, 2)
    accuracy = out.split("test accuracy ")[-1].split()[0]
    code, out, err = run(["evaluate", tmp_path / "run"], capsys)
    assert code == 0, err
    assert f"test accuracy {accuracy}" in out


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
    code, train_stdout, err = run(["train", "--dataset", dataset, "--data", data, "--epochs", 1, "--batch-size", 16,
                                   "--limit", 48, "--out", "run"], capsys)
    assert code == 0, err
    assert "48 train / 16 test samples" in train_stdout and "epoch 1/1: 100%" in err and "| 3/3 [" in err
    run_dir = tmp_path / "run"
    assert sorted(os.listdir(run_dir)) == ["curves.png", "metrics.json", "params.npz"]
    metrics = strict_json(run_dir / "metrics.json")
    assert metrics["dataset"] == dataset and metrics["model"] == "cnn-bn"
    assert metrics["options"]["augment"] is (dataset == "fashion-mnist")
    assert "critical_temperature" not in metrics
    saved = tc.load(run_dir / "params.npz")
    meta = saved["meta"]
    assert meta["dataset"] == dataset and set(meta) == {"dataset", "mean", "std", "model"}

    code, stdout, err = run(["evaluate", run_dir, "--data", data], capsys)
    assert code == 0, err
    assert "(16 samples)" in stdout  # all of them: --limit capped the training images only
    assert f"test accuracy {final_accuracy(train_stdout)} " in stdout
    _, (x_test, y_test) = tasks.IMAGE_LOADERS[dataset](data)  # the same number, not only the same digits
    x_test = tasks.normalize_images(x_test, meta["mean"], meta["std"])
    assert training.accuracy(models.get("cnn-bn"), saved["params"], x_test, y_test, state=saved["state"]) \
        == metrics["final_test_accuracy"]


def test_default_out_is_a_fresh_runs_directory(tmp_path, capsys, tiny_ising):
    code, _, err = run(["train", *QUICK, "--limit", 32], capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run_dir.name) and (run_dir / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------------- the newcomer's path

def test_evaluate_the_run_directory_with_the_command_train_prints(tmp_path):
    """train --limit N trains on N samples and tests on the whole test split; the command it prints last
    evaluates the run directory and reports the same accuracy, as do --params RUN_DIR and RUN_DIR/params.npz."""
    trained = run_module("train", *QUICK, "--limit", 200, env_dir=tmp_path)
    assert trained.returncode == 0, trained.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "200 train / 1400 test samples" in trained.stdout and ", 1 epoch -> " in trained.stdout
    assert trained.stdout.endswith(f"evaluate with: python -m tinygrad_cnn evaluate runs/{run_dir.name}\n")

    evaluated = run_printed(trained.stdout, "evaluate with:", tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test accuracy {final_accuracy(trained.stdout)} (1400 samples)" in evaluated.stdout
    for argv in (["--params", f"runs/{run_dir.name}"], [f"runs/{run_dir.name}/params.npz"]):
        assert run_module("evaluate", *argv, env_dir=tmp_path).stdout == evaluated.stdout

    saved = runs.load_run(run_dir)  # the same number, not only the same digits
    task = tasks.prepare("ising", lattice=8)
    assert training.accuracy(models.get("ising-cnn"), saved["params"], *task.test, state=saved["state"]) \
        == strict_json(run_dir / "metrics.json")["final_test_accuracy"]

    missing = run_module("evaluate", env_dir=tmp_path)
    assert missing.returncode == 1 and "evaluate runs/<time>" in missing.stderr and "Traceback" not in missing.stderr


def test_metrics_and_curves_have_the_test_loss(tmp_path):
    result = run_module("train", *QUICK, "--epochs", 2, "--limit", 100, "--out", "run", env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ", 2 epochs -> run" in result.stdout and "test loss" in result.stdout
    metrics = strict_json(tmp_path / "run" / "metrics.json")
    assert len(metrics["test_loss"]) == len(metrics["test_accuracy"]) == len(metrics["train_loss"]) == 2
    assert all(0 < loss < 10 for loss in metrics["test_loss"])
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == PNG


def test_progress_bars_show_the_total(tmp_path):
    result = run_module("train", *QUICK[:-1], "--limit", 200, "--batch-size", 50, "--out", "run", env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    # percentage, count of the total, elapsed<remaining time
    assert re.search(r"epoch 1/1: 100%\|[^|]*\| 4/4 \[\d\d:\d\d<\d\d:\d\d, ", result.stderr), result.stderr


def test_missing_data_is_explained_in_command_line_terms(tmp_path):
    nowhere = run_module("train", "--dataset", "mnist", "--data", tmp_path / "nowhere", env_dir=tmp_path)
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("tinygrad-cnn train: error: no mnist data at --data ")
    assert "it does not exist" in nowhere.stderr and "path=" not in nowhere.stderr

    stub = tmp_path / "stub" / "tensorflow"  # TensorFlow not importable, whether or not it is installed
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no TensorFlow here')\n")
    path = os.pathsep.join(filter(None, [str(stub.parent), os.environ.get("PYTHONPATH")]))
    for command in (["train", "--dataset", "mnist"], ["evaluate", "runs/x/params.npz", "--dataset", "mnist"]):
        if command[0] == "evaluate":  # a checkpoint trained on another data set, evaluated on mnist
            (tmp_path / "runs" / "x").mkdir(parents=True)
            tc.save(tmp_path / "runs" / "x" / "params.npz",
                    {"params": {}, "state": {}, "meta": {"dataset": "fashion-mnist", "model": "cnn-bn"}})
        result = run_module(*command, env_dir=tmp_path, env={"PYTHONPATH": path})
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "TensorFlow is not installed" in result.stderr and "`pip install tensorflow-cpu`" in result.stderr
        assert "pass --data DIR" in result.stderr and "path=" not in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_failed_download_is_not_told_to_install_tensorflow(tmp_path):
    closed = "http://127.0.0.1:9"  # a proxy nobody listens at: the download fails at once, online or not
    proxies = {name: closed for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")}
    result = run_module("train", "--dataset", "mnist", env_dir=tmp_path, env=proxies,
                        drop=("TF_CPP_MIN_LOG_LEVEL", "no_proxy", "NO_PROXY"))
    assert result.returncode == 1
    # nothing of TensorFlow's C++ logging (absl, cpu_feature_guard) before our message
    assert result.stderr.startswith("tinygrad-cnn train: error: mnist not found. Searched:"), result.stderr
    assert "the TensorFlow download failed" in result.stderr and "check the network connection" in result.stderr
    assert "pip install" not in result.stderr and "pass --data DIR" in result.stderr


# ---------------------------------------------------------------------------------------------- interrupt, resume

FASHION_RUN = ["--dataset", "fashion-mnist", "--data", "fashion", "--epochs", 2, "--batch-size", 16, "--no-progress"]
ISING_RUN = [*QUICK, "--epochs", 2, "--limit", 200, "--batch-size", 32]  # 7 steps per epoch


def assert_same_run(whole, resumed):
    """The resumed run directory holds what the uninterrupted one does: same files, same params and
    batch-norm state bit for bit, same metrics but for the timing."""
    assert sorted(os.listdir(resumed)) == sorted(os.listdir(whole))  # resume.npz is gone
    assert_same_checkpoint(whole / "params.npz", resumed / "params.npz")
    a, b = strict_json(whole / "metrics.json"), strict_json(resumed / "metrics.json")
    assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}


# fashion-mnist: batch norm, dropout and augmentation draw from the generator or carry state; 64 images
# in batches of 16 = 4 steps per epoch. Interrupted in the middle of step after + 1.
@pytest.mark.parametrize("flags, after, per_epoch", [(FASHION_RUN, 5, 4), (FASHION_RUN, 4, 4), (ISING_RUN, 9, 7)],
                         ids=["images-mid-epoch-2", "images-start-of-epoch-2", "ising"])
def test_interrupted_train_resumes_to_the_same_bits(tmp_path, flags, after, per_epoch):
    write_idx_dir(tmp_path / "fashion")
    whole = run_module("train", *flags, "--out", "whole", env_dir=tmp_path)
    assert whole.returncode == 0, whole.stderr
    stopped = run_module("train", *flags, "--out", "run", env_dir=tmp_path,
                         env={"TINYGRAD_CNN_INTERRUPT_AFTER_STEPS": str(after)})
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert (f"interrupted in epoch {after // per_epoch + 1} of 2 after {after % per_epoch} of its {per_epoch} steps; "
            f"saved the training state to run/resume.npz") in stopped.stderr
    assert stopped.stderr.endswith("resume with: python -m tinygrad_cnn train --resume run\n")
    # params.npz holds the last completed epoch, as it would have without the interrupt
    assert sorted(os.listdir(tmp_path / "run")) == ["params.npz", "resume.npz"][after < per_epoch:]

    resumed = run_printed(stopped.stderr, "resume with:", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from run/resume.npz: epoch {after // per_epoch + 1} of 2, after {after % per_epoch}" \
        in resumed.stdout
    epoch_2 = re.search(r"^epoch 2: .*$", whole.stdout, re.MULTILINE).group(0)
    assert epoch_2 in resumed.stdout  # the same train loss, test loss and test accuracy
    assert_same_run(tmp_path / "whole", tmp_path / "run")
    assert final_accuracy(resumed.stdout) == final_accuracy(whole.stdout)


def test_resume_keeps_the_run_options(tmp_path):
    stopped = run_module("train", *ISING_RUN, "--out", "run", env_dir=tmp_path,
                         env={"TINYGRAD_CNN_INTERRUPT_AFTER_STEPS": "3"})
    assert stopped.returncode == 130
    before = (tmp_path / "run" / "resume.npz").read_bytes()
    other = run_module("train", "--resume", "run", "--epochs", 3, env_dir=tmp_path)
    assert other.returncode == 1 and "--epochs 3 is not one of them (the run has 2)" in other.stderr, other.stderr
    assert (tmp_path / "run" / "resume.npz").read_bytes() == before
    same = run_module("train", "--resume", "run", "--epochs", 2, "--lattice", 8, env_dir=tmp_path)  # agreeing: fine
    assert same.returncode == 0, same.stderr
    done = run_module("train", "--resume", "run", env_dir=tmp_path)
    assert done.returncode == 1 and "the run finished, there is nothing to resume" in done.stderr
    never = run_module("train", "--resume", "nowhere", env_dir=tmp_path)
    assert never.returncode == 1 and "nowhere is not a run directory" in never.stderr


def test_ctrl_c_during_train(tmp_path):
    """A real SIGINT, wherever it lands in epoch 2 (a step, the test evaluation, saving params.npz)."""
    flags = ["train", "--lattice", 8, "--epochs", 4, "--limit", 1000, "--batch-size", 32, "--no-progress"]
    whole = run_module(*flags, "--out", "whole", env_dir=tmp_path)
    assert whole.returncode == 0, whole.stderr
    # SIGINT back to its default first: a shell running the tests in the background (nohup ... &) starts
    # them with SIGINT ignored, which Python then keeps, and the Ctrl-C would never arrive
    process = subprocess.Popen([sys.executable, "-m", "tinygrad_cnn", *map(str, flags), "--out", "run"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               env=module_env(tmp_path, {"PYTHONUNBUFFERED": "1"}),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:
            if line.startswith("epoch 1:"):
                break
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and re.search(r"^interrupted in epoch [234] of 4 after \d+ of its 32 steps", err,
                                                re.MULTILINE), err
    resumed = run_printed(err, "resume with:", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "whole", tmp_path / "run")


def test_ctrl_c_while_writing_the_results(tmp_path, capsys, tiny_ising, monkeypatch):
    """After the last epoch, while the Ising results are computed: --resume writes them, and nothing trains again."""
    from tinygrad_cnn import plots

    assert run(["train", *QUICK, "--epochs", 2, "--out", "whole"], capsys)[0] == 0
    real = plots.plot_phase

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, "plot_phase", interrupted)
    code, _, err = run(["train", *QUICK, "--epochs", 2, "--out", "run"], capsys)
    assert code == 130 and "interrupted after training, before the results were written" in err
    assert sorted(os.listdir(tmp_path / "run")) == ["curves.png", "params.npz", "resume.npz"]
    monkeypatch.setattr(plots, "plot_phase", real)
    monkeypatch.setattr(training, "batches", None)  # resuming trains nothing: no epoch draws its batches
    code, stdout, err = run(["train", "--resume", "run", "--no-progress"], capsys)
    assert code == 0, err
    assert "training is done, the results are written next" in stdout
    assert_same_run(tmp_path / "whole", tmp_path / "run")


# ---------------------------------------------------------------------------------------------- graph

needs_viz = pytest.mark.skipif(importlib.util.find_spec("tinygrad_cnn.viz") is None,
                               reason="tinygrad_cnn.viz is not written yet")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@needs_viz
@needs_dot
@pytest.mark.parametrize("flags", [[], ["--model", "ising-cnn", "--grads"], ["--no-batch-norm"]],
                         ids=["default-ising-cnn", "ising-cnn-grads", "cnn"])
def test_graph_writes_svg(tmp_path, capsys, flags):
    code, stdout, err = run(["graph", "--out", "x.svg", "--batch", 2, *flags], capsys)
    assert code == 0, err
    svg = (tmp_path / "x.svg").read_text()
    assert "<svg" in svg and "</svg>" in svg
    assert "conv2d" in svg.lower() and "conv1/w" in svg  # an op node and a named parameter leaf
    assert "wrote x.svg" in stdout


@needs_viz
def test_graph_draws_what_train_trains_by_default(tmp_path):
    result = run_module("graph", "--out", "step.dot", "--batch", 2, env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "one training step of ising-cnn (a batch of 2 24x24 Ising lattices)" in result.stdout
    dot = (tmp_path / "step.dot").read_text()
    assert "(2, 1, 24, 24) float32" in dot and "conv1/w" in dot and "bn" not in dot
    assert "ising-cnn" in run_module("graph", "--help", env_dir=tmp_path).stdout


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

