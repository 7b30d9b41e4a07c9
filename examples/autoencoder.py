"""A convolutional autoencoder on Fashion-MNIST: squeeze each 28x28 image into a code of 32 numbers,
then rebuild the image from the code alone.

    python examples/autoencoder.py                             # 10 epochs over all 60,000 images
    python examples/autoencoder.py --limit 2000 --epochs 2     # a quick run
    python examples/autoencoder.py --out docs/images/autoencoder.png

The model is a plain function of a params dict, as every model here:

    encoder  1x28x28 --conv 3x3 stride 2, relu--> 16x14x14 --conv 3x3 stride 2, relu--> 32x7x7
             --flatten, linear--> code (32 numbers)
    decoder  code --linear, relu--> 32x7x7 --conv_transpose 4x4 stride 2, relu--> 16x14x14
             --conv_transpose 4x4 stride 2, sigmoid--> 1x28x28

A stride-2 ``conv_transpose2d`` is the adjoint of a stride-2 ``conv2d``: each input pixel stamps a
scaled copy of the filter onto the output two pixels apart, so it doubles the size ((7 - 1)*2 + 4 - 2*1
= 14 with padding 1). A 4x4 filter, a multiple of the stride, covers every output pixel equally often;
a 3x3 one would cover alternate pixels once and twice, which prints a checkerboard on early
reconstructions. Pixels are scaled to [0, 1], the sigmoid keeps the reconstruction
there too, and the loss is the mean squared error per pixel (``tc.mse_loss``), trained with Adam and a
cosine schedule; the gradient step is ``tc.jit(tc.value_and_grad(loss))``.

It prints the test set's reconstruction error (mean squared error per pixel, pixels in [0, 1]) next to
that of the best image that ignores its input, the mean training image, and saves a picture: test
originals (one per class) above their reconstructions. Data are found as in ``train_fashion_mnist.py``
(``--data DIR``, or the search of docs/data.md).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import tinygrad_cnn as tc
from tinygrad_cnn.data import load_fashion_mnist

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CHANNELS = (16, 32)   # after the first and the second stride-2 convolution (14x14, then 7x7)
BOTTOM = 7            # the encoder's last feature maps are 7x7


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return (images.astype(np.float32) / 255)[:, None]


def transposed_filters(rng: np.random.Generator, c_in: int, c_out: int, size: int, stride: int) -> np.ndarray:
    """(c_in, c_out, size, size) filters for ``conv_transpose2d``. With stride s each output pixel sums
    about c_in * size^2 / s^2 products (not c_in * size^2), so He's standard deviation is scaled by s."""
    w = tc.init.he_normal(rng, (c_out, c_in, size, size)) * np.float32(stride)
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3))  # (c_out, c_in, ...) -> (c_in, c_out, ...)


def init(rng: np.random.Generator, code_size: int, mean_pixel: float) -> dict:
    """The autoencoder's params, a nested dict of float32 arrays. The output bias starts at the logit
    of the mean training pixel, so the first reconstructions are flat grey at the data's mean."""
    c1, c2 = CHANNELS
    flat = c2 * BOTTOM * BOTTOM
    mean_pixel = min(max(mean_pixel, 0.01), 0.99)
    return {
        "enc1": {"w": tc.init.he_normal(rng, (c1, 1, 3, 3)), "b": tc.init.zeros(c1)},
        "enc2": {"w": tc.init.he_normal(rng, (c2, c1, 3, 3)), "b": tc.init.zeros(c2)},
        "code": {"w": tc.init.glorot_uniform(rng, (flat, code_size)), "b": tc.init.zeros(code_size)},
        "expand": {"w": tc.init.he_normal(rng, (code_size, flat)), "b": tc.init.zeros(flat)},
        "dec1": {"w": transposed_filters(rng, c2, c1, 4, 2), "b": tc.init.zeros(c1)},
        "dec2": {"w": transposed_filters(rng, c1, 1, 4, 2),
                 "b": np.full(1, np.log(mean_pixel / (1 - mean_pixel)), np.float32)},
    }


def encode(params: dict, x) -> tc.Tensor:
    """(N, 1, 28, 28) images in [0, 1] -> (N, code_size) codes."""
    h = tc.relu(tc.conv2d(x, params["enc1"]["w"], params["enc1"]["b"], stride=2, padding=1))  # (N, 16, 14, 14)
    h = tc.relu(tc.conv2d(h, params["enc2"]["w"], params["enc2"]["b"], stride=2, padding=1))  # (N, 32, 7, 7)
    return tc.linear(tc.flatten(h), params["code"]["w"], params["code"]["b"])                # (N, code_size)


def decode(params: dict, code) -> tc.Tensor:
    """(N, code_size) codes -> (N, 1, 28, 28) images in (0, 1)."""
    h = tc.relu(tc.linear(code, params["expand"]["w"], params["expand"]["b"]))               # (N, 32*7*7)
    h = h.reshape(-1, CHANNELS[1], BOTTOM, BOTTOM)                                           # (N, 32, 7, 7)
    dec1, dec2 = params["dec1"], params["dec2"]
    h = tc.relu(tc.conv_transpose2d(h, dec1["w"], dec1["b"], stride=2, padding=1))           # (N, 16, 14, 14)
    return tc.sigmoid(tc.conv_transpose2d(h, dec2["w"], dec2["b"], stride=2, padding=1))     # (N, 1, 28, 28)


def loss_fn(params: dict, x: np.ndarray) -> tc.Tensor:
    """Mean squared error per pixel between the images and their reconstructions."""
    return tc.mse_loss(decode(params, encode(params, x)), x)


def reconstruct_all(reconstruct, params: dict, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Reconstructions of every image of x (N, 1, 28, 28), a batch at a time."""
    return np.concatenate([reconstruct(params, x[start:start + batch_size])
                           for start in range(0, len(x), batch_size)])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference per pixel, accumulated in float64."""
    return float(np.mean(np.square(a.astype(np.float64) - b)))


def columns(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of n images to show: the first of each class (in class order), then the next ones."""
    first = np.unique(labels, return_index=True)[1]
    return np.concatenate([first, np.setdiff1d(np.arange(len(labels)), first)])[:n]


def plot(path: str, originals: np.ndarray, reconstructions: np.ndarray, labels: np.ndarray, title: str) -> None:
    """Saves originals (n, 28, 28) in the top row and their reconstructions below, grey in [0, 1]."""
    from matplotlib.figure import Figure  # no pyplot: works without a display

    n = len(originals)
    fig = Figure(figsize=(0.95 * n + 0.5, 2.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for j in range(n):
        for row, images in enumerate((originals, reconstructions)):
            ax = axes[row, j]
            ax.imshow(images[j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
        axes[0, j].set_title(CLASSES[labels[j]] if labels[j] < len(CLASSES) else str(labels[j]), fontsize=7)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="A convolutional autoencoder on Fashion-MNIST with tinygrad_cnn.")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10)")
    parser.add_argument("--limit", type=int,
                        help="train on the first LIMIT training images only (the test set stays whole)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate, cosine decay (default 2e-3)")
    parser.add_argument("--code-size", type=int, default=32, help="numbers in each image's code (default 32)")
    parser.add_argument("--columns", type=int, default=10, help="test images in the picture (default 10)")
    parser.add_argument("--out", default="autoencoder.png",
                        help="the picture of originals and reconstructions (.png, .svg, .pdf; default autoencoder.png)")
    parser.add_argument("--data", help="a directory with the four IDX files (or a .npz); default: search")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data)
    except FileNotFoundError as e:
        print(f"FileNotFoundError: {e}", file=sys.stderr)
        return 1
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_train, x_test = to_unit(x_train), to_unit(x_test)

    rng = np.random.default_rng(args.seed)
    params = init(rng, args.code_size, float(x_train.mean()))
    step = tc.jit(tc.value_and_grad(loss_fn))  # (params, x) -> (loss, grads shaped like params)
    reconstruct = tc.jit(lambda params, x: decode(params, encode(params, x)).data)
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    optimizer = tc.optim.adam(tc.optim.cosine_decay(args.lr, max(steps, 1)))
    opt_state = optimizer.init(params)
    n_params = sum(p.size for layer in params.values() for p in layer.values())
    print(f"autoencoder on Fashion-MNIST: {len(x_train)} training / {len(x_test)} test images, "
          f"code size {args.code_size}, {n_params:,} parameters, {args.epochs} epoch{'s' if args.epochs != 1 else ''}")

    for epoch in range(args.epochs):
        total = 0.0
        for xb, _ in tc.data.batches(x_train, y_train, args.batch_size, rng=rng):  # labels unused
            loss, grads = step(params, xb)
            params, opt_state = optimizer.update(params, grads, opt_state)
            total += loss * len(xb)
        print(f"epoch {epoch + 1}: train loss {total / len(x_train):.6f}, "
              f"test MSE {mse(reconstruct_all(reconstruct, params, x_test), x_test):.6f}")

    reconstructions = reconstruct_all(reconstruct, params, x_test)
    test_mse = mse(reconstructions, x_test)
    baseline = mse(np.broadcast_to(x_train.mean(axis=0, dtype=np.float64), x_test.shape), x_test)
    print(f"test reconstruction MSE {test_mse:.6f} per pixel (pixels in [0, 1])")
    print(f"predicting the mean training image: MSE {baseline:.6f}")
    shown = columns(y_test, args.columns)
    plot(args.out, x_test[shown, 0], reconstructions[shown, 0], y_test[shown],
         f"Fashion-MNIST test images (top) and their reconstructions from {args.code_size} numbers "
         f"(test MSE {test_mse:.4f} per pixel)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
