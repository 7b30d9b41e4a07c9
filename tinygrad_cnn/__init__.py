"""tinygrad_cnn: a small, readable and fast autograd framework in NumPy, built around CNNs."""

from . import testing
from .autograd import Function, no_grad
from .gradcheck import GradcheckError, gradcheck
from .ops.conv import conv2d
from .ops.elementwise import relu, sigmoid, tanh
from .ops.linalg import linear, matmul
from .ops.movement import flatten
from .ops.pool import avg_pool2d, max_pool2d
from .tensor import Tensor
from .transforms import grad, value_and_grad

__version__ = "0.1.0"
