"""The reference CNN training step in the peer frameworks, for ``benchmarks/train_step.py``.

Each builder returns ``(step, info)``: ``step()`` runs one forward + backward + SGD update (lr 0.01,
momentum 0.9) on the next of the pre-generated batches and returns the loss (something ``float()``
accepts: reading it also waits for the step to finish); ``info`` names the version and thread counts.
torch and tensorflow are imported here, inside the worker process that needs them, never at the top.

The architecture mirrors ``tinygrad_cnn.models.get("cnn")`` / ``get("cnn-bn")``:

    conv 3x3 1->32 -> [batch_norm] -> relu -> max_pool 2     (convs have no bias when batch norm follows)
    conv 3x3 32->64 -> [batch_norm] -> relu -> max_pool 2
    flatten 1600 -> linear 128 -> relu -> linear 10 -> cross_entropy (mean)

Each framework works in its natural layout: PyTorch NCHW, TensorFlow NHWC.
"""

from __future__ import annotations

import itertools
import os

import numpy as np


# ------------------------------------------------------------------------------------------- PyTorch

def torch_cnn(batch_norm: bool):
    """The reference CNN as a ``torch.nn.Sequential`` (PyTorch's default initialisation); its last
    module is the final ``Linear(128, 10)``, so ``model[:-1]`` gives the features dropout acts on."""
    from torch import nn

    def block(c_in: int, c_out: int) -> list:
        layers = [nn.Conv2d(c_in, c_out, 3, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(c_out)] if batch_norm else []
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(),
                         nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def torch_step(batch_norm: bool, batches: list[tuple[np.ndarray, np.ndarray]]):
    """PyTorch eager, torch.nn layers, CPU, float32, default thread count."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = torch_cnn(batch_norm)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = itertools.cycle([(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in batches])

    def step():
        x, y = next(data)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads()}
    return step, info


def torch_chain_input() -> tuple:
    """The leaf of the per-op overhead chain: a (4,) float32 tensor that needs a gradient."""
    import torch

    x = torch.ones(4, dtype=torch.float32, requires_grad=True)
    return x, {"version": torch.__version__, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------- TensorFlow

def tf_step(batch_norm: bool, batches: list[tuple[np.ndarray, np.ndarray]], compiled: bool):
    """TensorFlow with Keras layers (NHWC) and GradientTape; eager, or the step in a ``tf.function``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(0)

    def block(c_out: int) -> list:
        out = [layers.Conv2D(c_out, 3, use_bias=not batch_norm)]
        # PyTorch's defaults (Keras' are momentum 0.99, epsilon 1e-3); the cost is the same
        out += [layers.BatchNormalization(momentum=0.9, epsilon=1e-5)] if batch_norm else []
        return out + [layers.ReLU(), layers.MaxPooling2D(2)]

    model = keras.Sequential([keras.Input((28, 28, 1)), *block(32), *block(64), layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10)])
    opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    opt.build(model.trainable_variables)
    # NCHW -> NHWC once, outside the timed steps
    data = [(tf.constant(np.ascontiguousarray(x.transpose(0, 2, 3, 1))), tf.constant(y.astype(np.int32)))
            for x, y in batches]

    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    if compiled:
        train_step = tf.function(train_step)
    cycle = itertools.cycle(data)

    def step():
        return train_step(*next(cycle)).numpy()

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    info = {"version": tf.__version__, "keras": keras.__version__,
            "threads": threads or os.cpu_count(), "threads_setting": "default (0 = all cores)" if not threads
            else "set", "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
    return step, info
