"""Activations beyond relu: leaky_relu, elu, gelu, softplus and silu.

Each acts on every element alone, so its backward is the upstream gradient times the local
derivative, dx = g * f'(x), as in elementwise.py. What needs care is large |x| in float32, where
the textbook formulas overflow (exp(100) is inf in float32) or cancel (1 + erf(-8) is 0). Rewritten
so that every exponent is <= 0:

    softplus(z) = log(1 + e^z)          = max(z, 0) + log1p(e)              e = exp(-|z|) in (0, 1]
    sigmoid(z)  = 1 / (1 + e^-z)        = 1 / (1 + e) if z >= 0 else e / (1 + e)
    Phi(x)      = (1 + erf(x / √2)) / 2 = erfc(|x| / √2) / 2 if x < 0 else 1 - erfc(|x| / √2) / 2

The last is the normal distribution function of GELU; written with erfc, its left tail keeps full
relative precision (Phi(-8) = 6.2e-16, where 1 + erf(-8 / √2) has no correct digit left).

NumPy has no erf, and math.erf is one Python call per element. ``erfc`` below is W. J. Cody's
rational Chebyshev approximation (Math. Comp. 23 (1969) 631-637; SPECFUN's CALERF), accurate to
float64 round-off: on each of three intervals of x a ratio of two polynomials,

    x <= 0.46875:        erfc(x) = 1 - x A(x²) / B(x²)
    0.46875 < x <= 4:    erfc(x) = exp(-x²) C(x) / D(x)
    x > 4:               erfc(x) = exp(-x²) (1/√π - w P(w) / Q(w)) / x,   w = 1 / x²

with exp(-x²) = exp(-a²) exp(-(x - a)(x + a)), a = x rounded down to a multiple of 1/16, so that the
rounding error of x² (large when x is) does not reach the exponent. Float32 arrays are computed in
float32 (the same polynomials, float32 round-off).
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd import Function
from ..checks import check_choice, check_finite, check_float, check_float_dtype, to_tensor

__all__ = ["LeakyRelu", "Elu", "Gelu", "Softplus", "Silu", "leaky_relu", "elu", "gelu", "softplus", "silu", "erfc"]

# Cody's coefficients, highest power first (A/B: erf near 0; C/D: erfc on (0.46875, 4]; P/Q: erfc beyond 4).
_A = (1.85777706184603153e-1, 3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03)
_B = (1.0, 2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_C = (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03,
      1.23033935479799725e03)
_D = (1.0, 1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_P = (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4)
_Q = (1.0, 2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)
_SQRT_1_PI = 1 / math.sqrt(math.pi)
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_PI = math.sqrt(2 / math.pi)       # GELU's tanh form: u = √(2/π) (x + 0.044715 x³)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # the normal density: phi(x) = exp(-x²/2) / √(2π)
_GELU_CUBIC = 0.044715
# Beyond |x| = 40 GELU's tails are exactly 0 and 1 even in float64 (Phi(-40) = 4e-350 underflows, and
# so does sigmoid(2u)); clipping x there before the transcendental parts changes nothing and keeps x², x³ finite.
_CLIP = 40.0


def _polyval(coefficients: tuple, t: np.ndarray) -> np.ndarray:
    """c0 t^n + c1 t^(n-1) + ... + cn by Horner's rule, in ``t``'s dtype."""
    out = t * coefficients[0]
    out += coefficients[1]
    for c in coefficients[2:]:
        out *= t
        out += c
    return out


def _exp_minus_square(t: np.ndarray) -> np.ndarray:
    """exp(-t²) without the rounding error of t²: a = t rounded down to 1/16 has an exact square."""
    a = np.floor(t * 16) / 16
    return np.exp(-a * a) * np.exp(-(t - a) * (t + a))


def erfc(z: np.ndarray) -> np.ndarray:
    """The complementary error function 1 - erf(z) = (2/√π) ∫_z^∞ exp(-s²) ds of an array with
    z >= 0 (or NaN), float32 or float64: Cody's approximation (module docstring), a new array of z's
    shape and dtype, accurate to a few units of float64 round-off (relative) over the whole range.
    Used by :func:`gelu`; not recorded (an array function, not an op).

    >>> erfc(np.array([0.0, 1.0, 30.0]))
    array([1.        , 0.15729921, 0.        ])
    """
    z = np.asarray(z)
    out = np.empty_like(z)
    small = z <= 0.46875
    large = ~(z <= 4.0)  # NaN lands here and stays NaN
    middle = ~(small | large)
    if small.any():
        t = z[small]
        t2 = t * t
        out[small] = 1 - t * _polyval(_A, t2) / _polyval(_B, t2)
    if middle.any():
        t = z[middle]
        out[middle] = _exp_minus_square(t) * _polyval(_C, t) / _polyval(_D, t)
    if large.any():
        t = np.minimum(z[large], _CLIP)  # erfc(27.3) already underflows float64; keeps 1 / t² > 0
        w = 1 / (t * t)
        out[large] = _exp_minus_square(t) * (_SQRT_1_PI - w * _polyval(_P, w) / _polyval(_Q, w)) / t
    return out


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = erfc(-x / √2) / 2: erfc(|x| / √2) / 2 below 0, 1 - that above (full precision in both tails)."""
    half_tail = erfc(np.abs(x) * _SQRT_HALF)            # 2 Phi(-|x|); erfc clips huge arguments itself
    half_tail *= 0.5
    return np.where(x < 0, half_tail, 1 - half_tail)


def _sigmoid_parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sigmoid(z), e) with e = exp(-|z|), both without overflow: sigmoid(z) = 1 / (1 + e) for z >= 0,
    e / (1 + e) below; then sigmoid(z) (1 - sigmoid(z)) = e / (1 + e)² on both sides."""
    e = np.exp(-np.abs(z))
    s = np.where(z >= 0, 1, e)
    s /= 1 + e
    return s, e


# ---------------------------------------------------------------------------------------------- #
# The ops


class LeakyRelu(Function):
    """y = x if x > 0 else negative_slope * x.   dx = g if x > 0 else negative_slope * g."""

    @staticmethod
    def forward(ctx, x, *, negative_slope=0.01):
        positive = x > 0
        y = np.multiply(x, negative_slope, out=ctx.empty_like(x))
        np.copyto(y, x, where=positive)
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(positive)                 # one byte per element
        return y

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved_tensors
        return np.where(positive, g, g * ctx.negative_slope)


class Elu(Function):
    """y = x if x > 0 else alpha (exp(x) - 1).   dx = g if x > 0 else g (y + alpha)  (= g alpha exp(x))."""

    @staticmethod
    def forward(ctx, x, *, alpha=1.0):
        positive = x > 0
        y = np.minimum(x, 0, out=ctx.empty_like(x))    # exp of the non-positive part only: no overflow
        np.expm1(y, out=y)                              # exp(x) - 1 accurate near 0
        y *= alpha
        np.copyto(y, x, where=positive)
        ctx.alpha = alpha
        ctx.save_for_backward(positive, y)
        return y

    @staticmethod
    def backward(ctx, g):
        positive, y = ctx.saved_tensors
        return np.where(positive, g, g * (y + ctx.alpha))


class Gelu(Function):
    """approximate="none":  y = x Phi(x),   Phi(x) = (1 + erf(x / √2)) / 2 (the normal distribution function).
                            dx = g (Phi(x) + x phi(x)),   phi(x) = exp(-x² / 2) / √(2π).
    approximate="tanh":  y = x s,   s = (1 + tanh(u)) / 2 = sigmoid(2u),   u = √(2/π) (x + 0.044715 x³).
                            dx = g (s + x s (1 - s) 2 du/dx),   du/dx = √(2/π) (1 + 3 · 0.044715 x²).
    Phi by erfc and sigmoid by exp(-|.|), as in the module docstring: finite and accurate for any x.
    """

    @staticmethod
    def forward(ctx, x, *, approximate="none"):
        xc = np.clip(x, -_CLIP, _CLIP)                  # changes no result (see _CLIP); x², x³ stay finite
        if approximate == "none":
            s = _normal_cdf(x)                          # Phi(x)
            e = None
        else:
            u = xc * xc
            u *= _GELU_CUBIC
            u += 1
            u *= xc
            u *= 2 * _SQRT_2_PI                          # 2u
            s, e = _sigmoid_parts(u)                     # sigmoid(2u), exp(-|2u|)
        ctx.approximate = approximate
        ctx.save_for_backward(xc, s, e)
        return np.multiply(x, s, out=ctx.empty_like(x))

    @staticmethod
    def backward(ctx, g):
        xc, s, e = ctx.saved_tensors
        if ctx.approximate == "none":
            d = np.exp(np.square(xc) * -0.5)
            d *= _INV_SQRT_2PI                           # phi(x)
        else:
            d = np.square(xc)
            d *= 3 * _GELU_CUBIC
            d += 1
            d *= 2 * _SQRT_2_PI                          # 2 du/dx
            d *= e
            d /= np.square(1 + e)                        # s (1 - s) 2 du/dx
        d *= xc
        d += s
        return g * d


class Softplus(Function):
    """y = log(1 + exp(beta x)) / beta, but y = x where beta x > threshold (PyTorch's switch to linear).
    dx = g sigmoid(beta x), and g where beta x > threshold.
    Computed as (max(z, 0) + log1p(exp(-|z|))) / beta, z = beta x, which cannot overflow.
    """

    @staticmethod
    def forward(ctx, x, *, beta=1.0, threshold=20.0):
        z = x if beta == 1.0 else x * beta
        e = np.exp(-np.abs(z))                          # in (0, 1]
        y = np.log1p(e, out=ctx.empty_like(x))
        y += np.maximum(z, 0)
        if beta != 1.0:
            y /= beta
        linear = z > threshold
        np.copyto(y, x, where=linear)
        ctx.save_for_backward(x, e, linear)
        return y

    @staticmethod
    def backward(ctx, g):
        x, e, linear = ctx.saved_tensors
        s = np.where(x >= 0, 1, e)                      # beta > 0: z has x's sign
        s /= 1 + e                                      # sigmoid(beta x)
        return np.where(linear, g, g * s)


class Silu(Function):
    """y = x sigmoid(x) (also called swish).   dx = g s (1 + x (1 - s)),   s = sigmoid(x) (no overflow)."""

    @staticmethod
    def forward(ctx, x):
        s, _ = _sigmoid_parts(x)
        ctx.save_for_backward(x, s)
        return np.multiply(x, s, out=ctx.empty_like(x))

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        d = 1 - s
        d *= x
        d += 1
        d *= s
        return g * d


# ---------------------------------------------------------------------------------------------- #
# Public functions: check the arguments, then apply the op


def _float_input(fn: str, x):
    x = to_tensor(fn, "x", x)
    check_float_dtype(fn, "x", x.dtype)
    return x


def leaky_relu(x, negative_slope=0.01):
    """x where x > 0, else negative_slope * x, elementwise; any shape, dtype kept. ``negative_slope``:
    a finite number (0 gives relu; PyTorch's default 0.01). The gradient at exactly 0 is negative_slope.

    >>> leaky_relu(np.array([-2.0, 3.0]), 0.1).data
    array([-0.2,  3. ])
    """
    fn = "leaky_relu"
    x = _float_input(fn, x)
    return LeakyRelu.apply(x, negative_slope=check_finite(fn, "negative_slope", negative_slope))


def elu(x, alpha=1.0):
    """x where x > 0, else alpha * (exp(x) - 1), elementwise; any shape, dtype kept. ``alpha``: a finite
    number. Finite for any x (exp is taken of the non-positive part only); the gradient at exactly 0
    is alpha, as in PyTorch.

    >>> elu(np.array([-1.0, 2.0])).data
    array([-0.63212056,  2.        ])
    """
    fn = "elu"
    x = _float_input(fn, x)
    return Elu.apply(x, alpha=check_finite(fn, "alpha", alpha))


def gelu(x, approximate="none"):
    """The Gaussian error linear unit x Phi(x), elementwise, Phi the standard normal distribution
    function; any shape, dtype kept. ``approximate``: "none" (exact, Phi by erfc accurate to float64
    round-off) or "tanh" (x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2, as PyTorch's and TensorFlow's
    approximate form). Finite and accurate for any x: gelu(-100) is -0.0, gelu(100) is 100.

    >>> gelu(np.array([-1.0, 0.0, 1.0])).data
    array([-0.15865525,  0.        ,  0.84134475])
    """
    fn = "gelu"
    x = _float_input(fn, x)
    return Gelu.apply(x, approximate=check_choice(fn, "approximate", approximate, ("none", "tanh")))


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, elementwise, a smooth relu; any shape, dtype kept. As in PyTorch,
    where beta x > threshold the result is x itself (the two differ by less than exp(-threshold)
    there). ``beta``: a finite number > 0; ``threshold``: a number (inf: never switch). Computed
    without overflow for any x; the gradient is sigmoid(beta x) (1 where linear).

    >>> softplus(np.array([-50.0, 0.0, 50.0])).data
    array([1.92874985e-22, 6.93147181e-01, 5.00000000e+01])
    """
    fn = "softplus"
    x = _float_input(fn, x)
    beta = check_finite(fn, "beta", beta, low=0.0)
    threshold = check_float(fn, "threshold", threshold)
    return Softplus.apply(x, beta=beta, threshold=threshold)


def silu(x):
    """x * sigmoid(x) (also called swish), elementwise; any shape, dtype kept; finite for any x.

    >>> silu(np.array([-1.0, 0.0, 1.0])).data
    array([-0.26894142,  0.        ,  0.73105858])
    """
    return Silu.apply(_float_input("silu", x))
