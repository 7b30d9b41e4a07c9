"""draw_graph, the profile recorder and save_graph.

Graphs are checked through their DOT source (node and edge counts, labels, styles) and, when
Graphviz's ``dot`` is installed, through the rendered SVG.
"""

import os
import re
import shutil
import weakref
import xml.etree.ElementTree as ET

import graphviz
import numpy as np
import pytest

import tinygrad_cnn as tc
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.viz import Profile, draw_graph, param_tensors, profile, save_graph

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's `dot` is not installed")

_NODE = re.compile(r'^\s*(n\d+) \[label=("(?:[^"\\]|\\.)*"|[^\s\]]+)\s*(.*)\]$', re.M)
_EDGE = re.compile(r"^\s*(n\d+) -> (n\d+)", re.M)


def parse(graph):
    """({node id: (label lines, attribute text)}, [(tail, head)]) from a Digraph's DOT source."""
    nodes = {m[1]: (m[2].strip('"').split("\\n"), m[3]) for m in _NODE.finditer(graph.source)}
    return nodes, _EDGE.findall(graph.source)


def node_with(nodes, first_line):
    found = [k for k, (lines, _) in nodes.items() if lines[0] == first_line]
    assert len(found) == 1, (first_line, nodes)
    return found[0]


def all_lines(nodes):
    return [line for lines, _ in nodes.values() for line in lines]


def leaves():
    a = Tensor(np.array([1.0, -2.0, 3.0], np.float32), requires_grad=True, name="a")
    b = Tensor(np.array([0.5, 4.0, -1.0], np.float32), requires_grad=True, name="b")
    return a, b


# ---------------------------------------------------------------------------------------------- #
# Structure


def test_counts_for_a_times_b_plus_a():
    a, b = leaves()
    y = (a * b + a).sum()
    nodes, edges = parse(draw_graph(y))
    # nodes: a, b, Mul, Add, Sum.  edges: a->Mul, b->Mul, Mul->Add, a->Add, Add->Sum
    assert len(nodes) == 5 and len(edges) == 5
    ia, ib, mul, add, total = (node_with(nodes, n) for n in ("a", "b", "Mul", "Add", "Sum"))
    assert sorted(edges) == sorted([(ia, mul), (ib, mul), (mul, add), (ia, add), (add, total)])
    assert [t for t, _ in edges].count(ia) == 2  # used twice, drawn once
    assert nodes[ia][0] == ["a", "(3,) float32"]
    assert nodes[add][0] == ["Add", "(3,)"] and nodes[total][0] == ["Sum", "()"]


def test_a_tensor_used_twice_by_one_op_has_two_edges():
    a, _ = leaves()
    nodes, edges = parse(draw_graph((a * a).sum()))
    assert len(nodes) == 3
    ia, mul = node_with(nodes, "a"), node_with(nodes, "Mul")
    assert edges.count((ia, mul)) == 2


def test_mlp_counts_and_styles():
    rng = np.random.default_rng(0)
    p = param_tensors({"fc1": {"w": rng.normal(size=(4, 5)), "b": np.zeros(5)},
                       "fc2": {"w": rng.normal(size=(5, 2)), "b": np.zeros(2)}})
    x = Tensor(rng.normal(size=(8, 4)), name="x")
    h = (x @ p["fc1"]["w"] + p["fc1"]["b"]).relu()
    h.name = "hidden"
    loss = ((h @ p["fc2"]["w"] + p["fc2"]["b"]) ** 2).mean()
    nodes, edges = parse(draw_graph(loss))
    # leaves x, 4 params, constant 2; ops MatMul Add Relu MatMul Add Pow Mean
    assert len(nodes) == 6 + 7
    assert len(edges) == 2 + 2 + 1 + 2 + 2 + 2 + 1
    assert node_with(nodes, "hidden = Relu")
    for name in ("fc1/w", "fc1/b", "fc2/w", "fc2/b"):
        assert "fillcolor=" in nodes[node_with(nodes, name)][1]  # parameters: filled
    assert "shape=oval" in nodes[node_with(nodes, "x")][1]       # inputs: ovals
    assert nodes[node_with(nodes, "2")][0] == ["2"]              # the constant exponent, by value
    out = node_with(nodes, "Mean")
    assert "peripheries=2" in nodes[out][1]
    assert sum("peripheries=2" in attrs for _, attrs in nodes.values()) == 1


def test_constant_inputs_and_unrecorded_results_are_leaves():
    a, _ = leaves()
    c = Tensor(np.ones(3)) * 3            # computed from constants only: not recorded, a leaf
    nodes, edges = parse(draw_graph((a * c).sum()))
    assert len(nodes) == 4 and len(edges) == 3
    assert "(3,) float32" in all_lines(nodes)


def test_labels_show_op_arguments():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True, name="x")
    y = x.reshape(6, 4)[0:2, ::2].transpose(1, 0).sum(axis=1).max()
    lines = all_lines(parse(draw_graph(y))[0])
    for expected in ("Reshape", "shape=(6, 4)", "GetItem", "index=[0:2, ::2]", "Transpose", "axes=(1, 0)",
                     "Sum", "axis=1", "Max", "(2,)", "(2, 3, 4) float64"):
        assert expected in lines, (expected, lines)
    assert not any("keepdims" in line for line in lines)  # equal to the forward's default: left off
    picks = [x[1, 2], x[0], x[np.array([0, 1, 1])], x[np.arange(5) % 2]]
    assert [parse(draw_graph(p))[0]["n1"][0][1] for p in picks] == [
        "index=[1, 2]", "index=[0]", "index=[[0, 1, 1]]", "index=[int64(5,)]"]


class Strided(Function):
    """A stand-in for a CNN op: identity, with the kind of keyword arguments conv/pool/loss ops take."""

    @staticmethod
    def forward(ctx, x, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), labels=None,
                training=True, eps=1e-5, reduction="mean", mode=None):
        return x.copy()

    @staticmethod
    def backward(ctx, g):
        return g


def test_generic_kwargs_are_formatted_compactly():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = Strided.apply(x, stride=(2, 2), padding=((1, 1), (0, 0)), dilation=(1, 1),
                      labels=np.arange(32), training=False, eps=1e-3, reduction="sum", mode=None)
    op = parse(draw_graph(y, max_label=200))[0]
    text = ", ".join(op[node_with(op, "Strided")][0][1:])
    assert "stride=2" in text and "padding=(1, 0)" in text and "labels=int64(32,)" in text
    assert "training=False" in text and "eps=0.001" in text and "reduction=sum" in text
    assert "dilation" not in text and "mode" not in text  # the forward's default, and None
    z = Strided.apply(x, stride=(1, 2), padding=((0, 1), (0, 1)))
    text = ", ".join(parse(draw_graph(z))[0]["n1"][0])
    assert "stride=(1, 2)" in text and "padding=((0, 1), (0, 1))" in text


def test_a_small_cnn_counts_and_labels():
    rng = np.random.default_rng(0)
    p = param_tensors({"conv1": {"w": rng.normal(size=(4, 3, 3, 3)), "b": np.zeros(4)}})
    x = Tensor(rng.normal(size=(6, 3, 8, 8)), name="x")
    h = tc.max_pool2d(tc.relu(tc.conv2d(x, p["conv1"]["w"], p["conv1"]["b"], stride=2, padding=1)), 2)
    loss = tc.cross_entropy(tc.flatten(h), np.arange(6) % 4)
    graph = draw_graph(loss)
    nodes, edges = parse(graph)
    # leaves x, conv1/w, conv1/b; ops Conv2d Relu MaxPool2d Reshape CrossEntropy
    assert len(nodes) == 3 + 5 and len(edges) == 3 + 1 + 1 + 1 + 1
    conv = nodes[node_with(nodes, "Conv2d")][0]
    assert "stride=2" in ", ".join(conv) and conv[-1] == "(6, 4, 4, 4)"
    assert not any("dilation" in line for line in conv)  # (1, 1) is Conv2d.forward's default
    assert "labels=int64(6,)" in nodes[node_with(nodes, "CrossEntropy")][0]
    assert nodes[node_with(nodes, "MaxPool2d")][0][-1] == "(6, 4, 2, 2)"
    assert clusters(graph) == {"conv1": ["Conv2d", "conv1/b", "conv1/w"]}


def test_long_labels_wrap_and_cut():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = Strided.apply(x, stride=(2, 3), padding=((1, 2), (3, 4)), reduction="a-very-long-reduction-name" * 3)
    lines = parse(draw_graph(y, max_label=24))[0]["n1"][0]
    assert all(len(line) <= 24 for line in lines)
    assert any(line.endswith("…") for line in lines)


class Gather(Function):
    """A user op with many inputs: y = sum of all inputs."""

    @staticmethod
    def forward(ctx, *arrays):
        ctx.n = len(arrays)
        return sum(arrays)

    @staticmethod
    def backward(ctx, g):
        return (g,) * ctx.n


def test_rankdir_default_and_override():
    a, _ = leaves()
    deep = a
    for _ in range(10):
        deep = deep.tanh()
    assert draw_graph(deep).graph_attr["rankdir"] == "TB"
    wide = Gather.apply(*[Tensor(np.ones(2), requires_grad=True, name=f"x{i}") for i in range(10)])
    assert draw_graph(wide).graph_attr["rankdir"] == "LR"
    assert draw_graph(deep, rankdir="LR").graph_attr["rankdir"] == "LR"
    with pytest.raises(ValueError, match="rankdir"):
        draw_graph(deep, rankdir="sideways")


def test_show_shapes_false():
    a, b = leaves()
    lines = all_lines(parse(draw_graph((a * b).sum(), show_shapes=False))[0])
    assert sorted(lines) == ["Mul", "Sum", "a", "b"]


def test_a_deep_chain_draws_without_recursion():
    x = Tensor(np.ones(3), requires_grad=True, name="x")
    y = x
    for _ in range(5000):
        y = y.relu()
    nodes, edges = parse(draw_graph(y))
    assert len(nodes) == 5001 and len(edges) == 5000


def test_output_must_be_a_tensor():
    with pytest.raises(TypeError, match="must be a Tensor"):
        draw_graph(np.ones(3))


def test_a_leaf_draws_as_one_node_and_a_released_graph_warns():
    nodes, edges = parse(draw_graph(Tensor(np.ones((2, 2)), name="x")))
    assert len(nodes) == 1 and not edges and "peripheries=2" in nodes["n0"][1]
    a, b = leaves()
    y = (a * b).sum()
    y.backward()  # releases the graph
    with pytest.warns(UserWarning, match="retain_graph=True"):
        draw_graph(y)


# ---------------------------------------------------------------------------------------------- #
# Gradients


def grad_of(lines):
    found = [float(line.split()[1]) for line in lines if line.startswith("|grad| ")]
    return found[0] if found else None


def test_show_grads_are_the_gradient_norms():
    a, b = leaves()
    h = (a * b + a).exp()
    y = (h / 7.0).sum()
    y.backward(retain_graph=True)
    nodes, _ = parse(draw_graph(y, show_grads=True))
    expected = {"a": a.grad, "b": b.grad, "Exp": h.grad, "Sum": y.grad}
    for first, g in expected.items():
        shown = grad_of(nodes[node_with(nodes, first)][0])
        np.testing.assert_allclose(shown, np.linalg.norm(g), rtol=1e-5)
    assert grad_of(nodes[node_with(nodes, "Sum")][0]) == 1.0
    assert grad_of(nodes[node_with(nodes, "7")][0]) is None  # a constant has no gradient


def test_show_grads_without_gradients_explains_retain_graph():
    a, b = leaves()
    y = (a * b).sum()
    with pytest.raises(ValueError, match=r"backward\(retain_graph=True\)"):
        draw_graph(y, show_grads=True)


# ---------------------------------------------------------------------------------------------- #
# Profile


def test_profile_annotates_every_op():
    rng = np.random.default_rng(1)
    w = Tensor(rng.normal(size=(16, 8)).astype(np.float32), requires_grad=True, name="w")
    x = Tensor(rng.normal(size=(32, 16)).astype(np.float32), name="x")
    with profile() as prof:
        loss = (x @ w).relu().mean()
        loss.backward(retain_graph=True)
    graph = draw_graph(loss, profile=prof)
    nodes, _ = parse(graph)
    for op in ("MatMul", "Relu", "Mean"):
        lines = nodes[node_with(nodes, op)][0]
        assert any(re.fullmatch(r"fwd [\d.]+ [µm]?s / bwd [\d.]+ [µm]?s \(\d+%\)", line) for line in lines), lines
    assert "keeps 2.56 kB" in nodes[node_with(nodes, "MatMul")][0]  # x (32x16), w (16x8) float32: 2048 + 512 B
    assert "keeps 1.02 kB" in nodes[node_with(nodes, "Relu")][0]    # its output (32x8) float32
    assert not any(line.startswith("keeps") for line in nodes[node_with(nodes, "Mean")][0])  # nothing kept
    assert "3 ops: forward" in graph.source and "kept for backward" in graph.source
    assert prof.total_forward > 0 and prof.total_backward > 0 and prof.total_saved >= 2560
    rows = prof.table()
    assert {r["op"] for r in rows} == {"MatMul", "Relu", "Mean"}
    assert all(r["calls"] == 1 and r["forward"] > 0 and r["backward"] > 0 for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert "MatMul" in prof.summary() and "total" in prof.summary()
    heats = re.findall(r'fillcolor="0\.000 ([\d.]+) 1\.000"', graph.source)
    assert len(heats) == 3 and max(map(float, heats)) == pytest.approx(0.85)


def test_profile_keeps_no_graph_alive_and_nests():
    a, b = leaves()
    with profile() as outer:
        with profile() as inner:
            y = (a * b).sum()
            ctx = weakref.ref(y._node.ctx)
            y.backward()  # releases the graph
    assert ctx() is None  # the recorder holds no strong reference to contexts
    assert inner.table() and [r["calls"] for r in outer.table()] == [r["calls"] for r in inner.table()]


def test_a_recorder_can_be_made_first_and_entered_again():
    a, b = leaves()
    prof = profile()
    with prof:
        y = (a * b).sum()
    assert [r["calls"] for r in prof.table()] == [1, 1]
    with prof:
        y2 = (y * 2).exp()
        with pytest.raises(RuntimeError, match="already recording"):
            with prof:
                pass
    assert sum(r["calls"] for r in prof.table()) == 4
    nodes, _ = parse(draw_graph(y2, profile=prof))
    assert all(any(line.startswith("fwd ") for line in lines) for lines, attrs in nodes.values() if "rounded" in attrs)


def test_profile_argument_is_checked():
    a, b = leaves()
    y = (a * b).sum()
    with pytest.raises(TypeError, match="profile"):
        draw_graph(y, profile=True)
    with pytest.raises(ValueError, match="holds no op of this graph"):
        draw_graph(y, profile=Profile())


# ---------------------------------------------------------------------------------------------- #
# Clusters


def clusters(graph):
    """{cluster label: [first label line of each node inside]} from the DOT source."""
    out = {}
    for block in re.findall(r"subgraph cluster_\d+ \{(.*?)\n\t\}", graph.source, re.S):
        label = re.search(r"\blabel=\"?([^\s\"]+)", block)[1]
        out[label] = sorted(m[2].strip('"').split("\\n")[0] for m in _NODE.finditer(block))
    return out


def test_default_clusters_group_named_params_and_their_ops():
    p = param_tensors({"fc1": {"w": np.ones((4, 5)), "b": np.zeros(5)}, "fc2": {"w": np.ones((5, 2))}})
    x = Tensor(np.ones((3, 4)), name="x")
    y = ((x @ p["fc1"]["w"] + p["fc1"]["b"]).relu() @ p["fc2"]["w"]).sum()
    assert clusters(draw_graph(y)) == {"fc1": ["Add", "MatMul", "fc1/b", "fc1/w"], "fc2": ["MatMul", "fc2/w"]}
    assert clusters(draw_graph(y, cluster=False)) == {}
    custom = draw_graph(y, cluster=lambda t: "ops" if t.op in ("Relu", "Sum") else None)
    assert clusters(custom) == {"ops": ["Relu", "Sum"]}


def test_param_tensors_names_leaves_by_path():
    p = param_tensors({"conv1": {"w": np.ones((2, 1, 3, 3)), "b": np.zeros(2)}, "out": [np.ones(3)]})
    assert p["conv1"]["w"].name == "conv1/w" and p["out"][0].name == "out/0"
    assert p["conv1"]["w"].requires_grad and p["conv1"]["w"].dtype == np.float64


# ---------------------------------------------------------------------------------------------- #
# Rendering and saving


def small_graph():
    a, b = leaves()
    with profile() as prof:
        y = (a * b + a).exp().sum()
        y.backward(retain_graph=True)
    return draw_graph(y, show_grads=True, profile=prof)


@needs_dot
def test_svg_holds_every_label():
    graph = small_graph()
    svg = graph.pipe(format="svg")
    texts = {el.text for el in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    nodes, _ = parse(graph)
    for lines, _ in nodes.values():
        for line in lines:
            assert line in texts, (line, texts)
    assert hasattr(graph, "_repr_mimebundle_")  # shows inline in Jupyter


@needs_dot
@pytest.mark.parametrize("ext, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_save_graph_renders_by_extension(tmp_path, ext, magic):
    path = save_graph(small_graph(), tmp_path / "sub" / f"g{ext}")
    assert path.read_bytes().startswith(magic)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_save_graph_dot_source_and_missing_dot(tmp_path, monkeypatch):
    graph = small_graph()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` anywhere
    path = save_graph(graph, tmp_path / "g.dot")
    assert path.read_text(encoding="utf-8") == graph.source
    assert graph.source.startswith("digraph")  # drawing itself never needs `dot`
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        save_graph(graph, tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()
    with pytest.raises(ValueError, match=r"\.svg"):
        save_graph(graph, tmp_path / "g.jpeg2000")
    with pytest.raises(TypeError):
        save_graph("digraph {}", tmp_path / "g.dot")
    assert isinstance(graph, graphviz.Digraph)


# ---------------------------------------------------------------------------------------------- #
# A jitted plan

_EDGE_ATTRS = re.compile(r"^\s*(n\d+) -> (n\d+)(?: \[(.*)\])?$", re.M)


def plan_edges(graph, dotted=False):
    """[(tail, head)] the way data flows: backward edges are written reversed with ``dir=back`` (the
    backward pass is laid out upwards), and the dotted "saved arrays" links are left out unless asked."""
    out = []
    for tail, head, attrs in _EDGE_ATTRS.findall(graph.source):
        if ("style=dotted" in attrs) != dotted:
            continue
        out.append((head, tail) if "dir=back" in attrs else (tail, head))
    return out


def jitted_cnn(name="cnn", rewrites=None, n=4, size=12):
    """A jitted value_and_grad step of a reference CNN, called once; returns (step, params, state, x, y)."""
    model = tc.models.get(name)
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=size)

    def loss(params, x, y, state):
        return tc.cross_entropy(model.apply(params, x, state=state, training=True), y)

    step = tc.jit(tc.value_and_grad(loss), rewrites=rewrites)
    x, y = rng.standard_normal((n, 1, size, size)).astype(np.float32), rng.integers(0, 10, n)
    step(params, x, y, state)
    return step, params, state, x, y


def ops_in_order(nodes, suffix=""):
    """First label lines of the op boxes (forward: grey, backward: orange), in the order drawn."""
    fill = '"#fde4cf"' if suffix else '"#f2f2f2"'
    return [lines[0] for _, (lines, attrs) in sorted(nodes.items(), key=lambda kv: int(kv[0][1:]))
            if f"fillcolor={fill}" in attrs]


def test_a_jitted_cnn_is_drawn_as_its_plan_runs_max_pool_before_relu():
    step, *_ = jitted_cnn("cnn")
    graph = draw_graph(step)
    nodes, _ = parse(graph)
    edges = plan_edges(graph)
    (plan,) = step._plans.values()
    forward = [what[0].__name__ for kind, what, _, _ in plan.program if kind == "forward"]
    backward = [what.__name__ + ".backward" for kind, what, _, _ in plan.program if kind == "backward"]
    assert ops_in_order(nodes) == forward and ops_in_order(nodes, ".backward") == backward
    conv = "Conv2dWinogradBackward"  # conv2d with the winograd_conv_backward rewrite
    assert forward == [conv, "MaxPool2d", "Relu", conv, "MaxPool2d", "Relu", "Reshape", "Linear", "Relu",
                       "Linear", "CrossEntropy"]
    pools = [k for k, (lines, _) in nodes.items() if lines[0] == "MaxPool2d"]
    relus = [k for k, (lines, _) in nodes.items() if lines[0] == "Relu"]
    assert sum((p, r) in edges for p in pools for r in relus) == 2
    assert not any((r, p) in edges for p in pools for r in relus)
    # the pooled shape, learnt by running the rewritten plan (the trace's relu output was 4x larger)
    assert [nodes[p][0][-1] for p in pools] == ["(4, 32, 5, 5)", "(4, 64, 1, 1)"]
    assert "rewrites: relu_after_max_pool, winograd_conv_backward (on, nothing to rewrite: batch_norm_relu, " \
           "batch_norm_max_pool, unneeded_gradients)" in graph.source  # the caption names what changed the plan


def test_without_rewrites_relu_comes_before_max_pool():
    step, *_ = jitted_cnn("cnn", rewrites=())
    graph = draw_graph(step)
    nodes, _ = parse(graph)
    edges = plan_edges(graph)
    assert ops_in_order(nodes)[:3] == ["Conv2d", "Relu", "MaxPool2d"]
    pools = [k for k, (lines, _) in nodes.items() if lines[0] == "MaxPool2d"]
    relus = [k for k, (lines, _) in nodes.items() if lines[0] == "Relu"]
    assert sum((r, p) in edges for p in pools for r in relus) == 2
    assert not any((p, r) in edges for p in pools for r in relus)
    assert [nodes[r][0][-1] for r in relus[:2]] == ["(4, 32, 10, 10)", "(4, 64, 3, 3)"]
    assert "rewrites: none" in graph.source


def test_plan_inputs_params_and_outputs_are_named_by_their_paths():
    step, params, *_ = jitted_cnn("cnn-bn")
    graph = draw_graph(step)
    nodes, _ = parse(graph)
    names = tc.pytree.tree_paths(params)
    for name in names:
        lines, attrs = nodes[node_with(nodes, name)]
        assert "fillcolor=\"#cfe2ff\"" in attrs and lines[1].endswith("float32")     # parameters: blue boxes
        out_lines, out_attrs = nodes[node_with(nodes, f"output 1/{name}")]
        assert "peripheries=2" in out_attrs and out_lines[1] == lines[1]           # its gradient: same shape
    assert nodes[node_with(nodes, "x")][0] == ["x", "(4, 1, 12, 12) float32"]
    assert "shape=oval" in nodes[node_with(nodes, "y")][1]
    assert "shape=oval" in nodes[node_with(nodes, "conv1/mean")][1]               # state: an input, no gradient
    assert nodes[node_with(nodes, "output 0")][0] == ["output 0", "float"]
    edges = re.findall(r"(n\d+) -> (n\d+) \[label=(\w+)", graph.source)
    labelled = {(nodes[t][0][0], nodes[h][0][0], label) for t, h, label in edges}
    assert ("y", "CrossEntropy", "labels") in labelled and ("conv2/var", "BatchNormMaxPool", "running_var") in labelled
    groups = clusters(graph)
    assert groups["conv1"] == sorted(["BatchNormMaxPool", "Conv2dWinogradBackward", "conv1/beta", "conv1/gamma",
                                      "conv1/mean", "conv1/var", "conv1/w"])
    assert {line.split(".")[1] for line in groups["backward"] if "." in line} == {"backward"}
    assert len([line for line in groups["backward"] if line.endswith(".backward")]) == 11  # the pools fused
    assert clusters(draw_graph(step, cluster=False)) == {}


def test_drawing_a_plan_touches_no_array_of_yours():
    model = tc.models.get("cnn-bn")
    rng = np.random.default_rng(0)
    params, state = model.init(rng, image_size=12)
    closure_state = {k: {n: a + 1 for n, a in v.items()} for k, v in state.items()}
    step = tc.jit(tc.value_and_grad(
        lambda p, x, y: tc.cross_entropy(model.apply(p, x, state=closure_state, training=True), y)))
    step(params, rng.standard_normal((4, 1, 12, 12)).astype(np.float32), np.arange(4))
    before = [a.copy() for a in tc.pytree.tree_leaves((params, closure_state))]
    nodes, _ = parse(draw_graph(step))
    assert all(np.array_equal(a, b) for a, b in zip(tc.pytree.tree_leaves((params, closure_state)), before))
    constants = [lines for lines, _ in nodes.values() if lines[0] == "constant"]
    assert ["constant", "(32,) float32"] in constants  # the closure's running statistics


def test_engine_steps_are_small_nodes_and_copies_are_left_out():
    def f(w, b, x):
        t = Tensor(x) @ w + b                 # b broadcast over the batch: the engine sums its gradient
        return (t * t + t).sum()              # t used three times: two gradient sums

    step = tc.jit(tc.value_and_grad(f, argnums=(0, 1)))
    step(np.ones((3, 2), np.float32), np.zeros(2, np.float32), np.ones((4, 3), np.float32))
    graph = draw_graph(step)
    nodes, _ = parse(graph)
    edges = plan_edges(graph)
    sums = [k for k, (lines, _) in nodes.items() if lines == ["+"]]
    assert len(sums) == 2 and all("shape=circle" in nodes[k][1] for k in sums)
    unbroadcast = node_with(nodes, "sum to (2,)")
    assert (unbroadcast, node_with(nodes, "output 1/1")) in edges
    assert (node_with(nodes, "MatMul.backward"), node_with(nodes, "output 1/0")) in edges  # its copy: not drawn
    assert not any(lines[0] in ("array", "copy") for lines, _ in nodes.values())
    assert [nodes[node_with(nodes, n)][0][0] for n in ("w", "b", "x")] == ["w", "b", "x"]  # f's argument names
    saved = plan_edges(graph, dotted=True)
    assert (node_with(nodes, "MatMul"), node_with(nodes, "MatMul.backward")) in saved


def test_arguments_with_the_same_paths_are_named_with_their_argument():
    step = tc.jit(lambda p, g: (Tensor(p["w"]) * Tensor(g["w"])).data)
    step({"w": np.ones(3)}, {"w": np.ones(3)})
    lines = all_lines(parse(draw_graph(step))[0])
    assert "p/w" in lines and "g/w" in lines


def test_a_jitted_function_never_called_or_with_several_plans_explains_how_to_choose():
    step = tc.jit(tc.value_and_grad(lambda w, x: (Tensor(x) @ w).sum()))
    with pytest.raises(ValueError, match=r"draw_graph: jit\(value_and_grad\(<lambda>\)\) has no plan yet.*"
                                         r"Call it once.*tc\.viz\.draw_plan\(step, \*args\)"):
        draw_graph(step)
    w = np.ones((3, 2), np.float32)
    for n in (4, 8):
        step(w, np.ones((n, 3), np.float32))
    with pytest.raises(ValueError, match=r"has 2 plans") as info:
        draw_graph(step)
    message = str(info.value)
    assert "plan=0: x float32(4, 3)" in message and "plan=1: x float32(8, 3)" in message
    assert "w float32" not in message  # what both plans share is left out
    assert "draw_graph(step, plan=i)" in message and "draw_plan" in message
    assert "x\\n(8, 3) float32" in draw_graph(step, plan=1).source
    assert "(4, 3) float32" in draw_graph(step, plan=list(step._plans.values())[0]).source
    with pytest.raises(ValueError, match="plan=2 is out of range"):
        draw_graph(step, plan=2)
    with pytest.raises(TypeError, match="plan must be an int"):
        draw_graph(step, plan="0")
    with pytest.raises(ValueError, match="show_grads and profile annotate an eager graph"):
        draw_graph(step, plan=0, show_grads=True)
    with pytest.raises(TypeError, match="cluster must be None, True or False"):
        draw_graph(step, plan=0, cluster=lambda t: None)
    with pytest.raises(TypeError, match="plan= picks one of a tc.jit function's plans"):
        draw_graph(Tensor(np.ones(2)), plan=0)


def test_draw_plan_picks_or_traces_the_plan_for_example_arguments():
    step = tc.jit(tc.value_and_grad(lambda w, x: (Tensor(x) @ w).sum()))
    w = np.ones((3, 2), np.float32)
    for n in (4, 8):
        step(w, np.ones((n, 3), np.float32))
    assert "(8, 3) float32" in tc.viz.draw_plan(step, w, np.zeros((8, 3), np.float32)).source
    assert step.traces == 2  # found, not traced again
    assert "(5, 3) float32" in tc.viz.draw_plan(step, w, np.zeros((5, 3), np.float32)).source
    assert step.traces == 3
    with pytest.raises(TypeError, match="draw_plan: step must be a tc.jit function"):
        tc.viz.draw_plan(lambda x: x, w)


class RefusesZeros(Function):
    """Identity that refuses an all-zero input (as a user op might refuse some values)."""

    @staticmethod
    def forward(ctx, x):
        if not x.any():
            raise ValueError("all zeros")
        return x * 1

    @staticmethod
    def backward(ctx, g):
        return g


def test_a_plan_that_fails_on_zeros_is_drawn_without_shapes():
    step = tc.jit(tc.value_and_grad(lambda w: RefusesZeros.apply(w).sum()))
    step(np.ones(3))
    with pytest.warns(RuntimeWarning, match="running the plan on zeros to learn its shapes failed"):
        nodes, _ = parse(draw_graph(step))
    assert nodes[node_with(nodes, "RefusesZeros")][0] == ["RefusesZeros"]
    assert nodes[node_with(nodes, "w")][0] == ["w", "(3,) float64"]  # the inputs' shapes are the signature's
    assert nodes[node_with(nodes, "RefusesZeros")][0] == parse(draw_graph(step, show_shapes=False))[0][
        node_with(nodes, "RefusesZeros")][0]


@needs_dot
def test_a_plan_renders_to_svg_with_every_label():
    step, *_ = jitted_cnn("cnn-bn")
    graph = draw_graph(step)
    svg = graph.pipe(format="svg")
    texts = {el.text for el in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
    for lines, _ in parse(graph)[0].values():
        for line in lines:
            assert line in texts, (line, texts)
