"""Tensor behaves like a NumPy array where it looks like one: truth value, len and iteration, dtype
promotion of bool and integer tensors in arithmetic, and the ``__array__`` copy protocol."""

import operator

import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn import Tensor

# ---------------------------------------------------------------------------------------------- #
# Truth value, membership, len, iteration


def test_bool_of_a_one_element_tensor_is_its_value():
    assert bool(Tensor([2.0])) is True and bool(Tensor(0.0)) is False
    assert bool(Tensor([[1]], dtype=np.int64)) is True
    x = Tensor([1.0, -3.0])
    assert not (x.sum() > 0) and (x.max() == 1.0)


@pytest.mark.parametrize("make", [lambda: Tensor([0.0, 0.0]) == 5, lambda: Tensor(np.ones((2, 3))),
                                  lambda: Tensor(np.zeros(0))], ids=["two-elements", "2x3", "empty"])
def test_bool_of_many_or_no_elements_is_a_value_error(make):
    with pytest.raises(ValueError, match=r"^bool: the truth value of a tensor with \d+ elements"):
        bool(make())
    with pytest.raises(ValueError):  # what NumPy 2 does with the same arrays
        bool(np.asarray(make().data))


def test_membership_behaves_as_numpy():
    t, u = Tensor([1.0, 2.0]), Tensor([3.0, 4.0])
    assert t in [t, u]  # Python checks identity before ==, element by element
    with pytest.raises(ValueError, match="^bool: "):  # then ==, elementwise, whose truth is ambiguous
        t in [u]  # noqa: B015
    with pytest.raises(ValueError):
        np.array([1.0, 2.0]) in [np.array([3.0, 4.0])]  # noqa: B015
    assert Tensor([2.0]) in [Tensor([2.0])] and Tensor([1.0]) not in [Tensor([2.0])]


def test_len_and_iteration_of_a_0d_tensor_are_type_errors():
    with pytest.raises(TypeError, match=r"^len: len\(\) of a 0-d tensor"):
        len(Tensor(3.0))
    with pytest.raises(TypeError, match="^bool: |^iter: a 0-d tensor"):
        list(Tensor(3.0))
    assert len(Tensor(np.zeros((3, 2)))) == 3


def test_iteration_gives_rows_that_carry_gradients():
    x = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    first, second = x
    (first * second).sum().backward()
    np.testing.assert_array_equal(x.grad, [[3.0, 4.0], [1.0, 2.0]])


# ---------------------------------------------------------------------------------------------- #
# dtype promotion: NumPy 2's, except that float64 comes only from float64

OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
       "pow": operator.pow}
DTYPES = [np.bool_, np.int8, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64]
OTHER_DTYPES = [np.bool_, np.int8, np.int64, np.float32, np.float64]


def dtype_name(dtype):
    return np.dtype(dtype).name


def expected_dtype(numpy_dtype, *operand_dtypes):
    """The package's rule on top of NumPy's answer."""
    if numpy_dtype == np.float64 and np.dtype(np.float64) not in operand_dtypes:
        return np.dtype(np.float32)
    return numpy_dtype


def numpy_or_error(op, a, b):
    try:
        with np.errstate(all="ignore"):
            return op(a, b)
    except (TypeError, ValueError, OverflowError):
        return None


def check_against_numpy(ours, op, a, b, operand_dtypes):
    """``ours`` (a callable) gives NumPy's values, with the dtype of the rule; or raises where NumPy does."""
    want = numpy_or_error(op, a, b)
    if want is None:
        with pytest.raises((TypeError, ValueError)):
            ours()
        return
    with np.errstate(all="ignore"):
        got = ours()
    assert got.dtype == expected_dtype(want.dtype, *operand_dtypes), (got.dtype, want.dtype)
    np.testing.assert_allclose(got.data.astype(np.float64), want.astype(np.float64), rtol=2e-6, equal_nan=True)


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("number", [True, 3, -2, 2.5], ids=repr)
def test_tensor_with_a_python_number_promotes_as_numpy(name, dtype, number):
    op, data = OPS[name], np.array([1, 0, 2]).astype(dtype)
    check_against_numpy(lambda: op(Tensor(data, dtype=dtype), number), op, data, number, (data.dtype,))
    check_against_numpy(lambda: op(number, Tensor(data, dtype=dtype)), op, number, data, (data.dtype,))


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype_a", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("dtype_b", OTHER_DTYPES, ids=dtype_name)
def test_two_tensors_promote_as_numpy(name, dtype_a, dtype_b):
    op = OPS[name]
    a, b = np.array([1, 0, 2]).astype(dtype_a), np.array([[2], [1]]).astype(dtype_b)
    check_against_numpy(lambda: op(Tensor(a, dtype=dtype_a), Tensor(b, dtype=dtype_b)), op, a, b, (a.dtype, b.dtype))


def test_a_mask_times_a_number_is_a_number_not_a_bool():
    x = Tensor([-1.0, 2.0])
    y = (x > 0) * 3
    assert y.dtype == np.int64 and y.data.tolist() == [0, 3]  # was the bool tensor [False, True]
    assert ((x > 0) * 2.5).dtype == np.float32 and ((x > 0) * 2.5).data.tolist() == [0.0, 2.5]
    assert (3 - (x > 0)).data.tolist() == [3, 2] and ((x > 0) + True).dtype == np.bool_


def test_integer_tensors_with_numbers():
    i = Tensor([1, 2], dtype=np.int64)
    assert (i + 3).dtype == np.int64 and (i * 2.5).dtype == np.float32 and (i / 2).dtype == np.float32
    assert (i * 2.5).data.tolist() == [2.5, 5.0] and (i ** 2).data.tolist() == [1, 4]
    assert (Tensor([100], dtype=np.int8) + 3).dtype == np.int8
    assert (i / Tensor([2, 4], dtype=np.int64)).dtype == np.float32


def test_floating_tensors_keep_their_dtype_with_numbers():
    for dtype in (np.float16, np.float32, np.float64):
        x = Tensor(np.ones(2), dtype=dtype)
        assert {(x * 2).dtype, (2.5 + x).dtype, (x ** 3).dtype, (1 / x).dtype, (x - True).dtype} == {np.dtype(dtype)}
    assert (Tensor(np.ones(2, np.float32)) * Tensor(np.ones(2))).dtype == np.float64  # two floats: NumPy's


def test_number_that_does_not_fit_the_result_dtype_is_named():
    with pytest.raises(ValueError, match=r"^add: the number -1 does not fit in uint8"):
        Tensor([1], dtype=np.uint8) + -1
    with pytest.raises(ValueError, match=r"^mul: the number 1000 does not fit in int8"):
        1000 * Tensor([1], dtype=np.int8)
    with pytest.raises(TypeError, match=r"^sub: NumPy has no sub for operands of dtype bool and bool"):
        Tensor([True], dtype=bool) - True


def test_comparisons_with_numbers_follow_numpy():
    assert (Tensor([True], dtype=bool) == 5).data.tolist() == [False]  # 5 was cast to True
    assert (Tensor([100], dtype=np.int8) < 1000).data.tolist() == [True]  # 1000 did not fit in int8
    assert (Tensor([2], dtype=np.int64) > 1.5).data.tolist() == [True]  # 1.5 was cast to 1
    assert (Tensor([True, False], dtype=bool) < 2**63).data.tolist() == [True, True]  # NumPy: OverflowError
    assert (Tensor([True, False], dtype=bool) >= 0.5).data.tolist() == [True, False]


def test_gradients_flow_through_mixed_dtypes():
    w = Tensor([1.0, -2.0, 3.0], requires_grad=True)
    counts = Tensor([2, 0, 1], dtype=np.int64)
    loss = (w * counts + (w > 0) * w + w / Tensor([2], dtype=np.int64)).sum()
    assert loss.dtype == np.float32
    loss.backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_allclose(w.grad, [2 + 1 + 0.5, 0 + 0 + 0.5, 1 + 1 + 0.5])
    assert not counts.requires_grad and counts.grad is None
    x = np.array([0.7, -1.3, 2.1])
    assert tc.gradcheck(lambda t: t * Tensor([2, 0, 1], dtype=np.int64) + (t > 0) * t ** 2 / 3, x)


# ---------------------------------------------------------------------------------------------- #
# __array__: NumPy 2 passes copy= and trusts the answer


def test_np_array_copies_and_np_asarray_shares():
    t = Tensor([1.0, 2.0])
    a = np.array(t)
    a[0] = 99
    assert t.data.tolist() == [1.0, 2.0] and not np.shares_memory(a, t.data)
    assert np.asarray(t) is t.data and np.array(t, copy=False) is t.data
    assert np.array(t, dtype=np.float64).dtype == np.float64


def test_np_array_copy_false_refuses_a_dtype_change():
    t = Tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"^__array__: copy=False, but converting the float32 tensor to int64"):
        np.array(t, dtype=np.int64, copy=False)
    assert np.array(t, dtype=np.float32, copy=False) is t.data
    assert np.asarray(t, dtype=np.int64).tolist() == [1, 2]
