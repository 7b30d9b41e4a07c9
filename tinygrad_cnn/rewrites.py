"""Rewrites of a jit plan that are exact in value: each a small pass over the recorded program.

A program is jit.py's list of instructions ``(kind, what, spec, out)``: ``("context", needs, (), ctx)``
makes an op's context, ``("forward", (op, kwargs), (ctx, *inputs), out)`` runs its forward,
``("backward", op, (ctx, grad), outs)`` its backward; other kinds are the engine's own array steps.
Specs name slots as ``("slot", i)``. A pass takes the program, the slots that must keep their
meaning (what the function returns) and a function returning a fresh slot, and returns a new
program. Each pass is switched on by name in ``tc.jit(..., rewrites=...)`` (default: all, in the
order of ``REWRITES``), and tests/test_jit.py proves each equal to the plan without it.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial

from .ops.conv import ChannelBias, Conv2d
from .ops.elementwise import Relu
from .ops.norm import BatchNorm, BatchNormMaxPool, BatchNormRelu
from .ops.pool import MaxPool2d
from .ops.winograd import Conv2dWinogradBackward

__all__ = ["REWRITES", "DEFAULT", "EXACT", "REORDERS_SUMS", "apply", "batch_norm_relu", "relu_after_max_pool",
           "batch_norm_max_pool", "bias_after_max_pool", "winograd_conv_backward", "unneeded_gradients"]


def _slots(spec) -> list[int]:
    kind, value = spec
    if kind == "slot":
        return [value]
    if kind == "tuple":
        return [i for v in value for i in _slots(v)]
    return []


def _uses(program: list) -> dict[int, list[int]]:
    """slot -> the indices of the instructions that read it."""
    uses = defaultdict(list)
    for index, (kind, what, spec, _) in enumerate(program):
        specs = list(spec) + ([v for _, v in what[1]] if kind == "forward" else [])
        for s in specs:
            for slot in _slots(s):
                uses[slot].append(index)
    return uses


def _find(program: list, kind: str, op: type, ctx_slot: int) -> int | None:
    for index, (k, what, spec, _) in enumerate(program):
        if k == kind and (what[0] if kind == "forward" else what) is op and spec[0] == ("slot", ctx_slot):
            return index
    return None


def _fuse_pairs(program: list, protected: set[int], first: type, second: type, fused: type,
                accepts=lambda kwargs: True) -> list:
    """Every ``second(first(x, ...))`` whose intermediate only ``second`` reads (and fn does not return)
    becomes one ``fused`` op, forward and backward: ``fused`` takes first's inputs and both ops'
    keywords and gives second's output; its backward takes second's upstream gradient and gives
    first's input gradients. ``accepts(second's keywords)`` may refuse a pair."""
    program = list(program)
    uses = _uses(program)
    for a_index, (kind, what, spec, y) in enumerate(program):
        if kind != "forward" or what[0] is not first or y in protected or len(uses.get(y, [])) != 1:
            continue
        b_index = uses[y][0]
        b_kind, b_what, b_spec, out = program[b_index]
        if b_kind != "forward" or b_what[0] is not second or b_spec[1] != ("slot", y) or not accepts(b_what[1]):
            continue
        a_ctx, b_ctx = spec[0][1], b_spec[0][1]
        a_back, b_back = _find(program, "backward", first, a_ctx), _find(program, "backward", second, b_ctx)
        if (a_back is None) != (b_back is None):
            continue
        if a_back is not None:  # g_out -> second's backward -> g_y -> first's backward
            (g_y,) = program[b_back][3]
            if program[a_back][2][1] != ("slot", g_y) or len(uses.get(g_y, [])) != 1:
                continue
            program[a_back] = ("backward", fused, (program[a_back][2][0], program[b_back][2][1]), program[a_back][3])
            program[b_back] = None
        program[a_index] = ("forward", (fused, what[1] + b_what[1]), spec, out)
        b_context = next(i for i in range(b_index - 1, -1, -1) if program[i] and program[i][0] == "context"
                         and program[i][3] == b_ctx)
        program[b_index] = program[b_context] = None
        program = [ins for ins in program if ins is not None]
        return _fuse_pairs(program, protected, first, second, fused, accepts)  # indices moved: from the start
    return program


def batch_norm_relu(program: list, protected: set[int], new_slot=None) -> list:
    """``relu(batch_norm(x))`` (training mode) becomes one ``BatchNormRelu`` op: the relu is applied to
    each thread's slice of batch norm's output right after it is written (while it is still in cache),
    and relu's backward mask is applied inside batch norm's backward: no relu output array, and one op
    instead of two each way.

    Exact: BatchNormRelu makes the same products in the same order as the two ops (ops/norm.py), bit
    for bit. Runs after ``relu_after_max_pool``, which is worth more where both apply (conv, batch
    norm, relu, max-pool: relu on a quarter of the elements beat the fused relu by 7 % of the cnn-bn
    step, ``benchmarks/rewrites.py``), so it fuses the relus no max-pool follows (a ResNet's).
    """
    return _fuse_pairs(program, protected, BatchNorm, Relu, BatchNormRelu)


def _value(spec):
    """The Python value a recorded keyword spec stands for (tuples rebuilt)."""
    kind, value = spec
    return tuple(_value(part) for part in value) if kind == "tuple" else value


def _keywords(kwargs: tuple) -> dict:
    """A recorded op's keywords as the Python values they stand for."""
    return {name: _value(spec) for name, spec in kwargs}


def _tiling(kwargs: tuple) -> bool:
    """Whether a recorded pool's windows tile the image: stride = kernel, ``pads`` all zeros."""
    kw = _keywords(kwargs)
    return kw["stride"] == kw["kernel"] and not any(p for pair in kw["pads"] for p in pair)


def batch_norm_max_pool(program: list, protected: set[int], new_slot=None) -> list:
    """``max_pool(batch_norm(x))`` (training mode; windows that tile the image: stride = kernel, no
    padding) becomes one ``BatchNormMaxPool`` op: the window maxima of x - mu are taken first and the
    affine map applied to them, so batch norm's full-size output is never written nor read back, the
    window passes run over a window-major copy of x - mu instead of strided views, and the backward
    makes one pass that routes each window's gradient and adds the statistics' part (ops/norm.py).
    Runs after ``relu_after_max_pool``,
    which turns conv, batch norm, relu, max-pool into conv, batch norm, max-pool, relu.

    Exact in value: the affine map per channel is monotonic and so is float rounding, so the maximum of
    the mapped values is the mapped maximum (of the minimum where gamma < 0), bit for bit. The
    gradient's sums over the window winners come in another order (equal to rounding, hence in
    REORDERS_SUMS), and where two pixels of a window map to one float the gradient goes to the larger.
    """
    return _fuse_pairs(program, protected, BatchNorm, MaxPool2d, BatchNormMaxPool, accepts=_tiling)


def relu_after_max_pool(program: list, protected: set[int], new_slot=None) -> list:
    """``max_pool(relu(x))`` becomes ``relu(max_pool(x))``: relu then touches a quarter of the elements
    (2x2 pooling), in both passes.

    Exact: relu is monotonic, so the maximum of relu'd values is relu of the maximum, and every window
    has at least one element of x. The gradient agrees too: where a window's maximum is positive both
    orders route g to the same first maximum; where it is <= 0, relu's derivative (taken as 0 at 0)
    zeroes it in both orders (only the sign of those zeros may differ, which no sum sees).
    """
    program = list(program)
    uses = _uses(program)
    for r_index in range(len(program)):
        kind, what, spec, b = program[r_index]
        if kind != "forward" or what[0] is not Relu:
            continue
        p_uses = uses.get(b, [])
        if len(p_uses) != 1 or b in protected:
            continue
        p_index = p_uses[0]
        p_kind, p_what, p_spec, c = program[p_index]
        if p_kind != "forward" or p_what[0] is not MaxPool2d or p_spec[1] != ("slot", b) or c in protected:
            continue
        r_ctx, p_ctx = spec[0][1], p_spec[0][1]
        p_back, r_back = _find(program, "backward", MaxPool2d, p_ctx), _find(program, "backward", Relu, r_ctx)
        if (p_back is None) != (r_back is None):
            continue
        if p_back is not None:  # g_c -> pool backward -> g_b -> relu backward -> g_a
            g_c, (g_b,), g_a = program[p_back][2][1], program[p_back][3], program[r_back][3]
            if program[r_back][2][1] != ("slot", g_b) or len(uses.get(g_b, [])) != 1 or not p_back < r_back:
                continue
            program[p_back] = ("backward", Relu, (("slot", r_ctx), g_c), (g_b,))
            program[r_back] = ("backward", MaxPool2d, (("slot", p_ctx), ("slot", g_b)), g_a)
        p_context = next(i for i in range(p_index - 1, -1, -1) if program[i][0] == "context" and program[i][3] == p_ctx)
        program[r_index] = ("forward", p_what, (("slot", p_ctx), spec[1]), b)       # b = max_pool(x)
        program[p_index] = ("forward", what, (("slot", r_ctx), ("slot", b)), c)     # c = relu(b)
        program.insert(r_index, program.pop(p_context))                             # pool's context first
        uses = _uses(program)
    return program


def _replace_reads(instruction: tuple, old: int, new: int) -> tuple:
    """``instruction`` reading slot ``new`` wherever it read ``old``."""
    def swap(spec):
        kind, value = spec
        if kind == "slot":
            return ("slot", new) if value == old else spec
        return ("tuple", tuple(swap(v) for v in value)) if kind == "tuple" else spec

    kind, what, spec, out = instruction
    if kind == "forward":
        what = (what[0], tuple((k, swap(v)) for k, v in what[1]))
    return (kind, what, tuple(swap(v) for v in spec), out)


def _biased_conv_into_max_pool(program: list, uses: dict, protected: set[int]):
    """Indices (conv forward, pool forward) of a biased conv2d whose output only a max-pool reads."""
    for p_index, (kind, what, spec, pooled) in enumerate(program):
        if kind != "forward" or what[0] is not MaxPool2d or pooled in protected or spec[1][0] != "slot":
            continue
        y = spec[1][1]
        c_index = next((i for i, ins in enumerate(program) if ins[0] == "forward" and ins[3] == y), None)
        if c_index is None or program[c_index][1][0] is not Conv2d or len(program[c_index][2]) != 4:
            continue
        if uses.get(y) == [p_index] and y not in protected:
            yield c_index, p_index


def bias_after_max_pool(program: list, protected: set[int], new_slot) -> list:
    """``max_pool(conv2d(x, w, b))`` becomes ``max_pool(conv2d(x, w)) + b``: the bias is added to (and its
    gradient summed over) the pooled map, a quarter of the elements with 2x2 pooling. Runs after
    ``relu_after_max_pool``, which moves the relu that stood between the two past the pool.

    Exact in value: adding a per-channel constant commutes with a maximum over the channel's window,
    and float addition is monotonic, so fl(max(a, c) + b) = max(fl(a + b), fl(c + b)) bit for bit.
    db is the same sum (the pool routes every window's gradient to one pixel), in another order. The
    one difference: where fl(a + b) and fl(c + b) round to the same float although a != c, the
    unrewritten pool sends the gradient to the first of the two, the rewritten one to the larger.
    """
    program = list(program)
    while True:
        found = next(_biased_conv_into_max_pool(program, _uses(program), protected), None)
        if found is None:
            return program
        c_index, p_index = found
        conv_kind, conv_what, conv_spec, y = program[c_index]
        c_ctx, bias = conv_spec[0][1], conv_spec[3]
        context = next(i for i, ins in enumerate(program) if ins[0] == "context" and ins[3] == c_ctx)
        needs = program[context][1]
        pooled = program[p_index][3]
        b_ctx, biased = new_slot(), new_slot()
        program[context] = ("context", needs[:2], (), c_ctx)
        program[c_index] = (conv_kind, conv_what, conv_spec[:3], y)
        db = None
        for i, (kind, what, spec, out) in enumerate(program):
            if kind == "backward" and what is Conv2d and spec[0] == ("slot", c_ctx):
                program[i] = (kind, what, spec, out[:2])
                db = out[2] if len(out) > 2 else None
        program = program[:p_index + 1] + [_replace_reads(ins, pooled, biased) for ins in program[p_index + 1:]]
        p_ctx = program[p_index][2][0][1]
        for i, (kind, what, spec, out) in enumerate(program):
            if kind == "backward" and what is MaxPool2d and spec[0] == ("slot", p_ctx):
                g_pooled = new_slot()
                program[i] = (kind, what, (spec[0], ("slot", g_pooled)), out)
                program.insert(i, ("backward", ChannelBias, (("slot", b_ctx), spec[1]), (g_pooled, db)))
                break
        program[p_index + 1:p_index + 1] = [
            ("context", (needs[0] or needs[1], needs[2]), (), b_ctx),
            ("forward", (ChannelBias, ()), (("slot", b_ctx), ("slot", pooled), bias), biased)]


def _winograd_geometry(kwargs: tuple) -> bool:
    """Whether a recorded conv2d's keywords allow Winograd's F(4x4, 3x3): stride 1, no dilation, one group."""
    kw = _keywords(kwargs)
    return kw["stride"] == (1, 1) and kw["dilation"] == (1, 1) and kw["groups"] == 1


def winograd_conv_backward(program: list, protected: set[int], new_slot=None) -> list:
    """Every conv2d with stride 1, no dilation and one group runs as ``Conv2dWinogradBackward``: the same
    im2col forward, and a backward by Winograd's F(4x4, 3x3) (ops/winograd.py), whose matmuls do a
    quarter of im2col's multiply-adds for both gradients and need no col2im. The op checks, when it
    runs, what the keywords do not show and where it was measured to pay (``winograd.eligible``: a 3x3
    kernel, the input gradient needed, at most two filters per input channel, whole tiles covering the
    output with little to spare) and runs conv2d's backward otherwise: cnn's conv1 is left as it is.

    The forward keeps its bits, so the loss and the running statistics are eager's. The gradients equal
    im2col's to rounding (in REORDERS_SUMS): the transforms round values several hundred times larger
    than the result. Measured against float64 on the reference models (largest error relative to each
    gradient's largest entry, batch 16): 1.0e-6 / 3.3e-6 / 3.8e-7 / 5.5e-6 (cnn, cnn-bn, ising-cnn on
    a 16x16 lattice, resnet-small) where im2col gives 3.9e-7 / 1.0e-6 / 3.0e-7 / 1.7e-6. Winograd's
    forward is left out on purpose: its larger error flips relu masks and pool winners at near-ties
    (module docstring).
    """
    def swap(instruction):
        kind, what, spec, out = instruction
        if kind == "forward" and what[0] is Conv2d and _winograd_geometry(what[1]):
            return kind, (Conv2dWinogradBackward, what[1]), spec, out
        return instruction

    program = [swap(ins) for ins in program]
    swapped = {spec[0][1] for kind, what, spec, _ in program if kind == "forward" and what[0] is Conv2dWinogradBackward}
    return [(kind, Conv2dWinogradBackward, spec, out) if kind == "backward" and what is Conv2d and spec[0][1] in swapped
            else (kind, what, spec, out) for kind, what, spec, out in program]


def _unread(read: set[int], slot: int | None) -> bool:
    return slot is not None and slot not in read


def unneeded_gradients(program: list, protected: set[int], new_slot=None) -> list:
    """Gradients nobody reads are never computed: a backward output no later instruction reads (and fn
    does not return) is dropped, and its op is told so through its context's ``needs_input_grad``, so
    its backward skips that product (and its forward may save less). Engine steps whose results nobody
    reads (a gradient's copy, sum or cast) go too, which can leave further gradients unread: repeated
    until nothing changes.

    Typical: a step differentiating with respect to the images as well (``argnums=(0, 1)``) that returns
    only the parameters' gradients: conv1's input gradient, the largest matmul of the backward, is then
    not computed. Exact: what is dropped was never read, and an op computes each needed gradient the
    same way whatever else it is asked for. Forwards are kept even when unread (they may update state,
    as batch norm's running statistics, or draw from a generator, as dropout).
    """
    while True:
        read = {slot for slot, readers in _uses(program).items() if readers} | protected
        unread = partial(_unread, read)
        needs, kept = {}, []  # needs: context slot -> its op's needs_input_grad without the unread gradients
        for kind, what, spec, out in program:
            if kind in ("one", "many") and all(o is None or unread(o) for o in (out if kind == "many" else (out,))):
                continue
            if kind == "backward" and any(unread(o) for o in out):
                out = tuple(None if unread(o) else o for o in out)
                needs[spec[0][1]] = tuple(o is not None for o in out)
                if all(o is None for o in out):
                    continue
            kept.append((kind, what, spec, out))
        if len(kept) == len(program) and not needs:
            return program
        program = [("context", tuple(a and b for a, b in zip(what, needs[out])), spec, out)
                   if kind == "context" and out in needs else (kind, what, spec, out)
                   for kind, what, spec, out in kept]


REWRITES = {"relu_after_max_pool": relu_after_max_pool, "batch_norm_relu": batch_norm_relu,
            "batch_norm_max_pool": batch_norm_max_pool, "bias_after_max_pool": bias_after_max_pool,
            "winograd_conv_backward": winograd_conv_backward, "unneeded_gradients": unneeded_gradients}
# Rewrites that change the order of a floating-point sum: their gradients equal eager's to rounding
# only. EXACT are the others, which keep eager's bits. DEFAULT has batch_norm_max_pool (8.5 % of a
# cnn-bn step) and winograd_conv_backward (5-7 %), but not bias_after_max_pool, which stopped paying
# once conv2d's own bias add was made cheap (-1.4 %, benchmarks/rewrites.py). Every call's results
# come from the plan, its first (the trace) included, so a run is reproducible whichever rewrites are on.
REORDERS_SUMS = frozenset({"batch_norm_max_pool", "bias_after_max_pool", "winograd_conv_backward"})
EXACT = tuple(name for name in REWRITES if name not in REORDERS_SUMS)
DEFAULT = tuple(name for name in REWRITES if name != "bias_after_max_pool")


def apply(program: list, protected: set[int], names, new_slot) -> tuple[list, tuple[str, ...]]:
    """The passes ``names`` (in REWRITES' order) applied to ``program``; ``new_slot()`` gives a fresh slot.
    Returns the new program and the names of the passes that changed it."""
    changed = []
    for name, rewrite in REWRITES.items():
        if name in names:
            rewritten = rewrite(program, protected, new_slot)
            if rewritten != program:
                changed.append(name)
            program = rewritten
    return program, tuple(changed)
