"""Write your own op: a softplus ``Function``, checked by gradcheck and a Hypothesis property, then
used in a small network.

    python examples/custom_op.py
    python examples/custom_op.py --examples 200 --steps 500

softplus(x) = log(1 + exp(x)) is a smooth relu. Its derivative is the sigmoid,
d/dx log(1 + exp(x)) = exp(x) / (1 + exp(x)) = 1 / (1 + exp(-x)), so the backward pass is one product.
Computed as written, exp(x) overflows for x > 88 in float32; the stable form is
max(x, 0) + log(1 + exp(-|x|)), whose exponent is never positive.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis.configuration import set_hypothesis_home_dir

import tinygrad_cnn as tc
from tinygrad_cnn.testing import arrays


class Softplus(tc.Function):
    """y = log(1 + exp(x)).   dx = g * sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):                       # x: an np.ndarray of any shape
        e = np.exp(-np.abs(x))                 # in (0, 1]: cannot overflow
        ctx.save_for_backward(np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype))  # sigmoid(x)
        return (np.maximum(x, 0) + np.log1p(e)).astype(x.dtype)

    @staticmethod
    def backward(ctx, g):                      # g: dL/dy, the shape of y
        (s,) = ctx.saved_tensors
        return g * s                           # dL/dx, one gradient per input


def softplus(x):
    """softplus(x) elementwise; x a Tensor or an array."""
    return Softplus.apply(x)


@given(arrays(min_dims=1))
def check_softplus(x):
    """Properties that must hold for every array Hypothesis draws (float64, values in [-3, 3])."""
    assert tc.gradcheck(softplus, x)                                     # backward matches finite differences
    y = softplus(x).data
    np.testing.assert_allclose(y - softplus(-x).data, x, atol=1e-12)     # softplus(x) - softplus(-x) = x
    assert np.all((y > np.maximum(x, 0)) & (y <= np.maximum(x, 0) + np.log(2)))  # relu < softplus <= relu + log 2


def circles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in the square [-1, 1]^2, labelled 1 inside the circle of radius 0.6 (a non-linear boundary)."""
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    return x, (np.hypot(x[:, 0], x[:, 1]) < 0.6).astype(np.int64)


def mlp(params, x):
    """(N, 2) points -> (N, 2) logits: linear 2->16, softplus, linear 16->2."""
    h = softplus(tc.linear(x, params["fc1"]["w"], params["fc1"]["b"]))
    return tc.linear(h, params["fc2"]["w"], params["fc2"]["b"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A custom softplus op: check it, then train with it.")
    parser.add_argument("--examples", type=int, default=50, help="Hypothesis examples for the property (default 50)")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps on the toy problem (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # 1. One gradcheck by hand: float64 central differences against Softplus.backward
    x = np.array([-30.0, -1.5, 0.0, 0.7, 30.0])
    print("softplus", x.tolist(), "=", np.round(softplus(x).data, 4).tolist())
    print("gradcheck:", tc.gradcheck(softplus, x))

    # 2. The same and more, for every array Hypothesis tries (a failure raises with the smallest example).
    # A script should leave no files behind: database=None keeps no failing examples, and the caches
    # Hypothesis writes anyway (constants it reads from this source) go to a throw-away directory
    # instead of ./.hypothesis.
    with tempfile.TemporaryDirectory(prefix="hypothesis-") as scratch:
        set_hypothesis_home_dir(scratch)
        try:
            settings(max_examples=args.examples, deadline=None, derandomize=True, database=None)(check_softplus)()
        finally:
            set_hypothesis_home_dir(None)
    print(f"Hypothesis: the properties hold on {args.examples} random arrays")

    # 3. Use it: a small network learns a circular boundary
    rng = np.random.default_rng(args.seed)
    params = {"fc1": {"w": tc.init.he_normal(rng, (2, 16)), "b": tc.init.zeros(16)},
              "fc2": {"w": tc.init.glorot_uniform(rng, (16, 2)), "b": tc.init.zeros(2)}}
    x_train, y_train = circles(rng, 512)
    x_test, y_test = circles(rng, 512)
    step = tc.value_and_grad(lambda p, x, y: tc.cross_entropy(mlp(p, x), y))
    optimizer = tc.optim.adam(0.05)
    opt_state = optimizer.init(params)
    for i in range(args.steps):
        loss, grads = step(params, x_train, y_train)                  # full batch
        params, opt_state = optimizer.update(params, grads, opt_state)
        if (i + 1) % max(args.steps // 3, 1) == 0 or i + 1 == args.steps:
            print(f"step {i + 1}: loss {loss:.4f}")
    with tc.no_grad():
        predicted = mlp(params, x_test).data.argmax(axis=1)
    print(f"test accuracy {np.mean(predicted == y_test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
