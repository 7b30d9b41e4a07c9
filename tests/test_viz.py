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
