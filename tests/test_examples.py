"""The examples run, and the Python in the docs runs and prints what the docs say it prints.

Examples run in subprocesses with tiny settings. Docs: the ```python blocks of each checked Markdown
file are executed in order in one namespace (a fresh working directory per file). A ```text block that
follows a ```python block directly (only blank lines between) is that block's expected output and is
compared with what it printed. A block whose first line starts with ``# not run`` is skipped.
"""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CHECKED_DOCS = ("index.md", "tutorial.md", "concepts.md", "testing.md", "api.md")

BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*\n(?:[ \t]*\n)*(?:^```text\n(.*?)^```[ \t]*$)?", re.M | re.S)


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
    assert "cnn-bn on Fashion-MNIST: 256 training / 256 test images" in result.stdout
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


def test_custom_op(tmp_path):
    result = run_example("custom_op.py", "--examples", "10", "--steps", "30", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gradcheck: True" in result.stdout
    assert "Hypothesis: the properties hold on 10 random arrays" in result.stdout
    assert re.search(r"^test accuracy (0|1)\.\d{4}$", result.stdout, re.M), result.stdout


def python_blocks(path: Path):
    """``(line, code, expected output or None)`` for each ```python block of a Markdown file, in order."""
    text = path.read_text()
    for m in BLOCK.finditer(text):
        yield text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)


def normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_doc_blocks(name: str) -> list[int]:
    """Runs the ```python blocks of docs/<name> in order (in the current directory), checking each
    printed output the docs show; returns the lines of blocks that stopped only because Graphviz's
    ``dot`` is missing (they render a graph; the blocks after them still run)."""
    path = ROOT / "docs" / name
    namespace = {"__name__": f"docs_{path.stem}"}
    blocks = list(python_blocks(path))
    assert blocks, f"no ```python blocks found in {path}"
    needed_dot = []
    for line, code, expected in blocks:
        if code.lstrip().startswith("# not run"):
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


@pytest.mark.parametrize("name", CHECKED_DOCS)
def test_docs_code_blocks_run_and_print_what_the_docs_show(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    needed_dot = run_doc_blocks(name)
    if needed_dot:
        pytest.skip(f"docs/{name}: the blocks at lines {needed_dot} render graphs and Graphviz's dot is not "
                    f"installed; every other block ran")


def test_docs_blocks_that_render_graphs_skip_without_dot(tmp_path, monkeypatch):
    """Without ``dot`` on PATH the tutorial's rendering block is reported, not an error, and the rest runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-dot-here"))
    rendering = [line for line, code, _ in python_blocks(ROOT / "docs" / "tutorial.md") if ".svg\")" in code]
    assert rendering and run_doc_blocks("tutorial.md") == rendering
