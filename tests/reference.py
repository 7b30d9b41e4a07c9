"""Reference helpers shared by the op tests: our gradients and TensorFlow's for the same upstream."""

import numpy as np

from tinygrad_cnn import Tensor


def our_grads(fn, *arrays, upstream):
    """Value of fn(*inputs) and the inputs' gradients for the upstream gradient ``upstream``."""
    inputs = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*inputs)
    out.backward(upstream)
    return out.data, [t.grad for t in inputs]


def tf_grads(tf, fn, *arrays, upstream):
    """Value and gradients of sum(fn(*inputs) * upstream) under tf.GradientTape, in float64."""
    inputs = [tf.Variable(a) for a in arrays]
    with tf.GradientTape() as tape:
        out = fn(*inputs)
        loss = tf.reduce_sum(out * upstream)
    return out.numpy(), [g.numpy() for g in tape.gradient(loss, inputs)]


def random_upstream(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)
