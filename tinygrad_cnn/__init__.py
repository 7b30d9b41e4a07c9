"""tinygrad_cnn: a small, readable and fast autograd framework in NumPy, built around CNNs."""

import os as _os
import sys as _sys

# Our threads split each batch and run one single-threaded BLAS call each (see parallel.py). Saying so
# before NumPy loads OpenBLAS is measurably steadier than capping it afterwards, so do it when we can.
if "numpy" not in _sys.modules and _os.environ.get("TINYGRAD_CNN_THREADS") != "1":
    _os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from ._malloc import keep_freed_memory

keep_freed_memory()  # a training step re-allocates the same large arrays: keep them mapped (see _malloc)

# ruff: noqa: E402

from . import data, init, models, optim, testing, training, viz
from .autograd import Function, detect_anomaly, no_grad
from .gradcheck import GradcheckError, gradcheck
from .io import load, save
from .ops.conv import conv2d
from .ops.elementwise import relu, sigmoid, tanh
from .ops.linalg import linear, matmul
from .ops.loss import cross_entropy, dropout, log_softmax, softmax
from .ops.movement import flatten
from .ops.norm import batch_norm
from .ops.pool import avg_pool2d, max_pool2d
from .tensor import Tensor
from .transforms import grad, value_and_grad
from .viz import draw_graph

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Function", "no_grad", "detect_anomaly", "value_and_grad", "grad", "gradcheck", "GradcheckError",
    "conv2d", "max_pool2d", "avg_pool2d", "batch_norm", "flatten", "matmul", "linear",
    "relu", "sigmoid", "tanh", "softmax", "log_softmax", "cross_entropy", "dropout",
    "draw_graph", "save", "load", "init", "optim", "data", "models", "testing", "training", "viz",
]
