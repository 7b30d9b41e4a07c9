"""The examples run, and the Python in the docs runs and prints what the docs say it prints.

Examples run in subprocesses with tiny settings. Docs: the ```python blocks of README.md and of every
docs/*.md are executed in order in one namespace per file (a fresh working directory and data
directory per file), as a reader pasting them from the top of the page would run them. Blocks may be
indented (inside a list item). A ```text block that follows a ```python block directly (only blank
lines between) is that block's expected output and is compared with what it printed. A block whose
first line starts with ``# not run`` is skipped; that comment says why. The ``python -m tinygrad_cnn``
commands the docs show are parsed by the CLI's own parser.
"""

import contextlib
import gzip
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinygrad_cnn.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DOCS = ("README.md", *sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")))

# a ```python block (its fence possibly indented, as in a list item), then optionally its ```text output
BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*(?:\n|\Z)"
                   r"(?:[ \t]*\n)*(?:^(?P=indent)```text[ \t]*\n(?P<out>.*?)^(?P=indent)```[ \t]*$)?", re.M | re.S)
PYTHON_FENCE = re.compile(r"^[ \t]*```(?:python|py|python3|pycon)\b", re.M)
FENCE = re.compile(r"^[ \t]*(```+)(?P<info>[^\n`]*)\n(?P<body>.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
CLI = re.compile(r"(?:python -m tinygrad_cnn|tinygrad-cnn)[ \t\n]+(.*)", re.S)
CHECKED_COMMANDS = ("train", "evaluate", "graph")


def run_example(script: str, *args: str, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYGRAD_CNN_DATA": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_fashion_mnist(tmp_path):
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"{FASHION_MNIST} is not installed")
    result = run_example("train_fashion_mnist.py", "--limit", "256", "--epochs", "1", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cnn-bn on Fashion-MNIST: 256 training / 10000 test images" in result.stdout
    assert re.search(r"^test accuracy (0|1)\.\d{4}$", result.stdout, re.M), result.stdout


def test_train_mnist_runs_or_explains_where_to_get_the_data(tmp_path):
    result = run_example("train_mnist.py", "--limit", "256", "--epochs", "1", tmp_path=tmp_path)
    if result.returncode == 0:  # MNIST is installed here
        assert re.search(r"^test accuracy (0|1)\.\d{4}$", result.stdout, re.M), result.stdout
    else:
        assert result.returncode == 1, result.stderr
        assert "FileNotFoundError: mnist not found. Searched:" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_train_mnist_with_a_wrong_path_names_it(tmp_path):
    result = run_example("train_mnist.py", "--data", str(tmp_path / "nowhere"), tmp_path=tmp_path)
    assert result.returncode == 1
    assert "FileNotFoundError: load_mnist: no data at path=" in result.stderr and "nowhere" in result.stderr


def test_ising_phase(tmp_path):
    plot = tmp_path / "phase.png"
    result = run_example("ising_phase.py", "--lattice", "8", "--chains", "4", "--epochs", "1",
                         "--plot", str(plot), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "168 training and 56 test configurations of 8x8 spins" in result.stdout
    assert "exact Tc 2.2692" in result.stdout
    assert plot.stat().st_size > 0


def write_squares(directory: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny Fashion-MNIST-format IDX files: image i shows a bright 8x6 block at a place set by its label
    i % 10, on dark noise. Returns the images written (uint8 (N, 28, 28)) by split."""
    rng = np.random.default_rng(seed)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            x[i, r:r + 8, c:c + 6] = 230
        for kind, a in (("images-idx3", x), ("labels-idx1", y)):
            header = bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + a.tobytes()))
        written[prefix] = x
    return written


def runs(mask: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of True in a 1-D mask at least ``min_length`` long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_length]


def test_autoencoder_learns_to_reconstruct_and_draws_originals_above_reconstructions(tmp_path):
    images = write_squares(tmp_path / "squares", n_train=256, n_test=32)
    picture = tmp_path / "ae.png"
    result = run_example("autoencoder.py", "--data", str(tmp_path / "squares"), "--epochs", "3",
                         "--batch-size", "32", "--out", str(picture), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "autoencoder on Fashion-MNIST: 256 training / 32 test images, code size 32" in out, out
    losses = [float(v) for v in re.findall(r"^epoch \d: train loss (\d\.\d+), test MSE \d\.\d+$", out, re.M)]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], out
    test_mse = float(re.search(r"^test reconstruction MSE (\d\.\d+) per pixel", out, re.M)[1])
    baseline = float(re.search(r"^predicting the mean training image: MSE (\d\.\d+)$", out, re.M)[1])
    train, test = images["train"] / 255, images["t10k"] / 255
    assert baseline == pytest.approx(np.mean((test - train.mean(axis=0)) ** 2), abs=1e-6)
    assert test_mse < 0.9 * baseline, out  # it learned where each image's block is, beyond the mean image

    with Image.open(picture) as png:
        assert png.format == "PNG"
        ink = np.asarray(png.convert("L")) < 240  # every pixel of a tile is darker than the white page
    bands = runs(ink.any(axis=1), 40)             # rows of tiles (a line of text is less than 40 px high)
    assert len(bands) == 2, bands
    for top, bottom in bands:
        tiles = runs(ink[top:bottom].any(axis=0), 40)
        widths = [b - a for a, b in tiles]
        assert len(tiles) == 10 and max(widths) - min(widths) <= 3, tiles  # one per class, all the same size


def test_custom_op_runs_and_leaves_no_hypothesis_folder(tmp_path):
    result = run_example("custom_op.py", "--examples", "10", "--steps", "30", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gradcheck: True" in result.stdout
    assert "Hypothesis: the properties hold on 10 random arrays" in result.stdout
    assert re.search(r"^test accuracy (0|1)\.\d{4}$", result.stdout, re.M), result.stdout
    assert not (tmp_path / ".hypothesis").exists(), sorted(p.name for p in (tmp_path / ".hypothesis").iterdir())


def dedent(text: str | None, indent: str) -> str | None:
    if text is None or not indent:
        return text
    return "".join(line[len(indent):] if line.startswith(indent) else line.lstrip(" \t")
                   for line in text.splitlines(keepends=True))


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, expected output or None)`` for each ```python block of a Markdown file, in order."""
    text = path.read_text()
    blocks = [(text.count("\n", 0, m.start()) + 1, dedent(m["code"], m["indent"]), dedent(m["out"], m["indent"]))
              for m in BLOCK.finditer(text)]
    fences = [text.count("\n", 0, m.start()) + 1 for m in PYTHON_FENCE.finditer(text)]
    assert [line for line, _, _ in blocks] == fences, (
        f"{path.name}: the Python fences at lines {fences} were read as blocks at {[b[0] for b in blocks]}; "
        f"write them as ```python ... ``` so that the tests run them")
    return blocks


def normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_doc_blocks(name: str) -> list[int]:
    """Runs the ```python blocks of ``name`` (a path relative to the repository, e.g. "docs/api.md") in
    order, in the current directory, checking each printed output the page shows; returns the lines of
    blocks that stopped only because Graphviz's ``dot`` is missing (they render a graph; the blocks
    after them still run)."""
    path = ROOT / name
    namespace = {"__name__": f"docs_{path.stem}"}
    needed_dot = []
    for line, code, expected in python_blocks(path):
        if code.lstrip().startswith("# not run"):
            reason = code.lstrip().splitlines()[0].removeprefix("# not run").strip(" :-—")
            assert len(reason) >= 10, f"{name}:{line}: say why the block is not run: '# not run: <why>'"
            continue
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"{path}:{line}", "exec"), namespace)
        except RuntimeError as e:
            if "needs Graphviz's `dot`" not in str(e) or shutil.which("dot") is not None:
                raise
            needed_dot.append(line)
            continue
        if expected is not None:
            assert normalized(out.getvalue()) == normalized(expected), f"{name}, the block at line {line}"
    return needed_dot


@pytest.mark.parametrize("name", DOCS)
def test_docs_code_blocks_run_and_print_what_the_docs_show(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "data"))  # the Ising cache goes here, not to ~/.cache
    needed_dot = run_doc_blocks(name)
    if needed_dot:
        pytest.skip(f"{name}: the blocks at lines {needed_dot} render graphs and Graphviz's dot is not "
                    f"installed; every other block ran")


def test_every_page_is_checked():
    assert "README.md" in DOCS and {"docs/index.md", "docs/tutorial.md", "docs/graphs.md"} <= set(DOCS)
    with_code = [name for name in DOCS if python_blocks(ROOT / name)]
    assert len(with_code) >= 9, with_code


def test_docs_blocks_that_render_graphs_skip_without_dot(tmp_path, monkeypatch):
    """Without ``dot`` on PATH the tutorial's rendering block is reported, not an error, and the rest runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-dot-here"))
    rendering = [line for line, code, _ in python_blocks(ROOT / "docs" / "tutorial.md") if ".svg\")" in code]
    assert rendering and run_doc_blocks("docs/tutorial.md") == rendering


def cli_commands(name: str) -> list[tuple[int, str]]:
    """``(line, text after "python -m tinygrad_cnn")`` for each command a page shows: in fenced blocks
    other than Python, and in inline code."""
    text = (ROOT / name).read_text()
    found = []
    for fence in FENCE.finditer(text):
        if PYTHON_FENCE.match(fence.group()):
            continue
        first = text.count("\n", 0, fence.start("body")) + 1
        for i, line in enumerate(fence["body"].splitlines()):
            if m := CLI.search(line):
                found.append((first + i, m[1]))
    outside = FENCE.sub(lambda fence: "\n" * fence.group().count("\n"), text)   # keeps line numbers
    for span in INLINE_CODE.finditer(outside):
        if m := CLI.search(span[1]):
            found.append((outside.count("\n", 0, span.start()) + 1, " ".join(m[1].split())))
    return found


def command_argv(command: str) -> list[str]:
    """The arguments of a documented command, as the shell would pass them: comments dropped, cut at the
    first shell operator; a ``…`` placeholder is dropped with the option it stands for the value of."""
    argv = []
    for token in shlex.split(command, comments=True):
        if token in ("|", "||", "&&", ";", "&", ">", ">>", "2>", "<"):
            break
        if token in ("…", "..."):
            if argv and argv[-1].startswith("-"):
                argv.pop()
            continue
        argv.append(token)
    return argv


def test_cli_commands_in_the_docs_use_options_that_exist():
    """Every ``python -m tinygrad_cnn train|evaluate|graph ...`` shown in README.md and docs/*.md parses
    with the CLI's own parser (other subcommands are left to their own tests)."""
    parser = build_parser()
    checked, wrong = 0, []
    for name in DOCS:
        for line, command in cli_commands(name):
            words = command.split()
            if not words or words[0] not in CHECKED_COMMANDS:  # another subcommand, or "tinygrad-cnn train: error"
                continue
            argv = command_argv(command)
            if {"-h", "--help"} & set(argv):
                continue
            checked += 1
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    parser.parse_args(argv)
            except SystemExit:
                wrong.append(f"{name}:{line}: python -m tinygrad_cnn {shlex.join(argv)}\n    "
                             f"{stderr.getvalue().strip().splitlines()[-1]}")
    assert not wrong, "documented commands the CLI rejects:\n" + "\n".join(wrong)
    assert checked >= 8, checked


def test_reading_the_docs_commands():
    assert command_argv("train --dataset mnist --data ~/data/mnist   # a comment") == [
        "train", "--dataset", "mnist", "--data", "~/data/mnist"]
    assert command_argv("train --dataset …") == ["train"]
    assert command_argv("train | evaluate | graph") == ["train"]
    in_graphs_md = [command_argv(command) for _, command in cli_commands("docs/graphs.md")]
    assert ["graph", "--model", "cnn-bn", "--batch", "4", "--grads", "--out",
            "docs/images/cnn_step.svg"] in in_graphs_md
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(command_argv("train --no-such-option 1"))


def test_docs_blocks_may_be_indented(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("- item:\n\n  ```python\n  print(1 + 1)\n  ```\n\n  ```text\n  2\n  ```\n\n```py\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="at lines \\[3, 11\\] were read as blocks at \\[3\\]"):
        python_blocks(page)
    page.write_text(page.read_text().replace("```py\n", "```python\n"))
    assert python_blocks(page) == [(3, "print(1 + 1)\n", "2\n"), (11, "x = 1\n", None)]
