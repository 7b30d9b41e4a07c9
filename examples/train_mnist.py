"""Train the reference CNN on MNIST with tinygrad_cnn's API: a model that is a plain function of its
params, ``value_and_grad``, Adam with a cosine schedule, and the data loaders.

    python examples/train_mnist.py                          # 2 epochs over all 60,000 images
    python examples/train_mnist.py --limit 2000 --epochs 1  # a quick run
    python examples/train_mnist.py --data ~/data/mnist      # IDX files or mnist.npz in that directory

Without ``--data`` the loader searches ``$TINYGRAD_CNN_DATA/mnist``, the Keras cache and finally tries
a download through TensorFlow (see docs/data.md). If it finds nothing, the script prints the
loader's ``FileNotFoundError`` (every place searched, and how to get the files) and exits with 1.

``examples/train_fashion_mnist.py`` runs this same loop on Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import tinygrad_cnn as tc
from tinygrad_cnn.data import load_mnist


def standardize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), shifted and scaled by the training set's statistics."""
    return ((images.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std))[:, None]


def accuracy(model, params, state, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Fraction of correct predictions, in eval mode (batch norm uses its running statistics)."""
    correct = 0
    with tc.no_grad():  # nothing to differentiate: record no graph
        for start in range(0, len(x), batch_size):
            logits = model.apply(params, x[start:start + batch_size], state=state, training=False)
            correct += int((logits.data.argmax(axis=1) == y[start:start + batch_size]).sum())
    return correct / max(len(x), 1)


def build_parser(name: str, epochs: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Train a CNN on {name} with tinygrad_cnn.")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"passes over the training set (default {epochs})")
    parser.add_argument("--limit", type=int,
                        help="train on the first LIMIT training images only (the test set stays whole, as in train)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate, cosine decay (default 2e-3)")
    parser.add_argument("--model", choices=("cnn-bn", "cnn"), default="cnn-bn", help="with or without batch norm")
    parser.add_argument("--data", help="a directory with the four IDX files (or a .npz); default: search")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None, *, load=load_mnist, name: str = "MNIST", epochs: int = 2) -> int:
    args = build_parser(name, epochs).parse_args(argv)
    try:
        (x_train, y_train), (x_test, y_test) = load(args.data)
    except FileNotFoundError as e:
        print(f"FileNotFoundError: {e}", file=sys.stderr)
        return 1
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    scaled = x_train.astype(np.float32) / 255
    mean, std = float(scaled.mean()), float(scaled.std())
    x_train, x_test = standardize(x_train, mean, std), standardize(x_test, mean, std)
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)

    model = tc.models.get(args.model)  # conv-[bn]-relu-pool x2, dense 128, dense 10
    rng = np.random.default_rng(args.seed)
    params, state = model.init(rng)    # params: what Adam trains; state: batch-norm running statistics

    def loss_fn(params, x, y):
        logits = model.apply(params, x, state=state, training=True)  # updates state in place
        return tc.cross_entropy(logits, y)

    step = tc.value_and_grad(loss_fn)  # (params, x, y) -> (loss, grads shaped like params)
    steps = args.epochs * -(-len(y_train) // args.batch_size)
    optimizer = tc.optim.adam(tc.optim.cosine_decay(args.lr, max(steps, 1)))
    opt_state = optimizer.init(params)
    n_params = sum(p.size for layer in params.values() for p in layer.values())
    print(f"{args.model} on {name}: {len(y_train)} training / {len(y_test)} test images, "
          f"{n_params:,} parameters, {args.epochs} epoch{'s' if args.epochs != 1 else ''}")

    for epoch in range(args.epochs):
        start, total = time.perf_counter(), 0.0
        for xb, yb in tc.data.batches(x_train, y_train, args.batch_size, rng=rng):
            loss, grads = step(params, xb, yb)
            params, opt_state = optimizer.update(params, grads, opt_state)
            total += loss * len(yb)
        seconds = time.perf_counter() - start
        print(f"epoch {epoch + 1}: train loss {total / len(y_train):.4f}, "
              f"test accuracy {accuracy(model, params, state, x_test, y_test):.4f} ({seconds:.1f} s)")
    print(f"test accuracy {accuracy(model, params, state, x_test, y_test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
