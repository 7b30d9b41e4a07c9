"""tinygrad_cnn: a small, readable and fast autograd framework in NumPy, built around CNNs."""

from . import data, init, models, optim, training, viz
from ._malloc import keep_freed_memory
from .autograd import Function, detect_anomaly, no_grad
from .gradcheck import GradcheckError, gradcheck
from .io import load, save
from .jit import jit
from .ops.activations import elu, gelu, leaky_relu, silu, softplus
from .ops.conv import conv2d, conv_transpose2d
from .ops.elementwise import abs, clip, expm1, log1p, maximum, minimum, relu, sigmoid, square, tanh, where
from .ops.linalg import linear, matmul
from .ops.loss import (binary_cross_entropy_with_logits, cross_entropy, dropout, huber_loss, l1_loss,
                       log_softmax, mse_loss, softmax)
from .ops.movement import (broadcast_to, concatenate, expand_dims, flatten, pad, repeat, split, squeeze, stack,
                           tile)
from .ops.norm import batch_norm, group_norm, layer_norm
from .ops.pool import avg_pool2d, max_pool2d
from .ops.reduce import logsumexp, prod
from .ops.resample import adaptive_avg_pool2d, interpolate
from .tensor import Tensor
from .transforms import grad, value_and_grad
from .viz import draw_graph

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "no_grad", "detect_anomaly", "value_and_grad", "grad", "gradcheck", "GradcheckError",
    "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "batch_norm", "flatten", "matmul", "linear",
    "adaptive_avg_pool2d", "interpolate", "layer_norm", "group_norm",
    "concatenate", "stack", "split", "squeeze", "expand_dims", "broadcast_to", "repeat", "tile", "pad",
    "relu", "sigmoid", "tanh", "softmax", "log_softmax", "cross_entropy", "dropout",
    "leaky_relu", "elu", "gelu", "softplus", "silu",
    "abs", "square", "log1p", "expm1", "maximum", "minimum", "clip", "where",
    "mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy_with_logits",
    "logsumexp", "prod",
    "jit", "draw_graph", "save", "load", "keep_freed_memory", "init", "optim", "data", "models", "training", "viz",
    # and "testing", imported on first use (it needs Hypothesis)
]


def __getattr__(name: str):
    """``tinygrad_cnn.testing`` is imported on first use: it needs Hypothesis, a dev extra."""
    if name == "testing":
        import importlib

        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
