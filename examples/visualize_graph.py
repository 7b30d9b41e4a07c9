"""Draw computation graphs with gradients and a timing profile, and save them as SVG.

    python examples/visualize_graph.py --out graphs/

Two graphs:

* the notes' worked example: the 2x2 filter [[1, 2], [-1, 0]] cross-correlated with the 3x4 image
  [[5, 2, 2, 3], [3, 1, 2, 1], [9, 0, 4, 5]] gives [[6, 5, 6], [-4, 5, 0]]. Written here as the sum of
  four shifted 2x3 slices of the image, each times one filter entry:
  out = sum over (i, j) of filter[i, j] * image[i:i+2, j:j+3], and then as the one op tc.conv2d;
* a two-layer MLP with a softmax cross-entropy loss on random data, its parameters named by path
  ("fc1/w") so that the drawing groups each layer in a box.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor
from tinygrad_cnn.viz import draw_graph, param_tensors, profile, save_graph

IMAGE = [[5, 2, 2, 3], [3, 1, 2, 1], [9, 0, 4, 5]]
FILTER = [[1, 2], [-1, 0]]


def cross_correlate(image: Tensor, filt: Tensor) -> Tensor:
    """(H, W) image, (KH, KW) filter -> (H-KH+1, W-KW+1): one shifted slice per filter entry."""
    kh, kw = filt.shape
    oh, ow = image.shape[0] - kh + 1, image.shape[1] - kw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            term = filt[i, j] * image[i:i + oh, j:j + ow]
            out = term if out is None else out + term
    return out


def worked_example():
    image = Tensor(np.array(IMAGE, np.float32), requires_grad=True, name="image")
    filt = Tensor(np.array(FILTER, np.float32), requires_grad=True, name="filter")
    cross_correlate(image, filt).sum().backward()  # warm-up, so the profile shows steady-state times
    image.grad = filt.grad = None
    with profile() as prof:
        out = cross_correlate(image, filt)
        out.name = "out"
        total = out.sum()
        total.name = "total"
        total.backward(retain_graph=True)  # keep the graph (and every tensor's .grad) to draw it
    print("out =\n", out.data)
    print("d(sum of out)/d(filter) =\n", filt.grad)
    print("d(sum of out)/d(image) =\n", image.grad)
    return total, prof


def worked_example_conv2d():
    """The same computation as one conv2d: image (N, C, H, W) = (1, 1, 3, 4), filter (1, 1, 2, 2)."""
    image = Tensor(np.array(IMAGE, np.float32).reshape(1, 1, 3, 4), requires_grad=True, name="image")
    filt = Tensor(np.array(FILTER, np.float32).reshape(1, 1, 2, 2), requires_grad=True, name="filter")
    out = tc.conv2d(image, filt)
    out.name = "out"
    total = out.sum()
    total.name = "total"
    total.backward(retain_graph=True)
    assert np.array_equal(out.data[0, 0], [[6, 5, 6], [-4, 5, 0]])
    return total


def mlp_example(seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d, hidden, classes = 16, 8, 32, 3
    params = param_tensors({
        "fc1": {"w": rng.normal(0, (2 / d) ** 0.5, (d, hidden)).astype(np.float32), "b": np.zeros(hidden, np.float32)},
        "fc2": {"w": rng.normal(0, (1 / hidden) ** 0.5, (hidden, classes)).astype(np.float32),
                "b": np.zeros(classes, np.float32)},
    })
    x = Tensor(rng.normal(size=(n, d)).astype(np.float32), name="x")
    labels = rng.integers(0, classes, n)

    def forward():
        h = (x @ params["fc1"]["w"] + params["fc1"]["b"]).relu()
        logits = h @ params["fc2"]["w"] + params["fc2"]["b"]
        logits.name = "logits"
        shifted = logits - logits.max(axis=1, keepdims=True)     # stable log-softmax
        log_p = shifted - shifted.exp().sum(axis=1, keepdims=True).log()
        loss = -log_p[np.arange(n), labels].mean()                # cross-entropy
        loss.name = "loss"
        return loss

    forward().backward()  # warm-up, so the profile shows steady-state times
    for layer in params.values():
        for p in layer.values():
            p.grad = None
    with profile() as prof:
        loss = forward()
        loss.backward(retain_graph=True)
    print(f"MLP loss = {loss.item():.4f}")
    print(prof.summary())
    return loss, prof


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="graphs/", help="directory for the SVG files (default: graphs/)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    ext = ".svg" if shutil.which("dot") else ".dot"
    if ext == ".dot":
        print("Graphviz's `dot` is not installed (apt-get install graphviz / brew install graphviz): "
              "writing DOT sources instead of SVG.")

    total, prof = worked_example()
    graphs = {
        "worked_example": draw_graph(total),
        "worked_example_grads": draw_graph(total, show_grads=True, profile=prof),
        "worked_example_conv2d": draw_graph(worked_example_conv2d(), show_grads=True),
    }
    loss, prof = mlp_example()
    graphs["mlp"] = draw_graph(loss, show_grads=True, profile=prof)
    for name, graph in graphs.items():
        print("wrote", save_graph(graph, out / f"{name}{ext}"))


if __name__ == "__main__":
    main()
