"""Find the phase transition of the 2D Ising model with a CNN (after Carrasquilla & Melko, 2017).

    python examples/ising_phase.py                   # 24x24 lattices, 5 epochs, a few seconds
    python examples/ising_phase.py --plot phase.png  # also draw P(ordered) against temperature

1. Generate spin configurations at 14 temperatures from 1.6 to 2.9 by Metropolis Monte Carlo
   (``tinygrad_cnn.data.ising``); each is labelled ordered (T < Tc) or disordered (T > Tc).
2. Split them by Markov chain, so correlated samples never sit on both sides.
3. Train the ``ising-cnn`` model (circular padding, because the lattice is periodic) with
   ``value_and_grad`` and Adam.
4. Average the predicted P(ordered) over the test configurations of each temperature. Where that
   curve crosses 1/2 is the network's estimate of Tc; compare it with Onsager's exact
   Tc = 2 / ln(1 + sqrt(2)) = 2.2692.

The labels already use the exact Tc, so this checks that the network learned the phases, not that it
discovered Tc on its own (``python -m tinygrad_cnn train --tc-method confusion`` does the latter).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import tinygrad_cnn as tc
from tinygrad_cnn.data.ising import TC, crossing_temperature, magnetization


def p_ordered(model, params, state, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """P(ordered) for each configuration: the softmax of the logits, class 1."""
    out = []
    with tc.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model.apply(params, x[start:start + batch_size], state=state, training=False)
            out.append(tc.softmax(logits).data[:, 1])
    return np.concatenate(out)


def plot(path: str, temperatures: np.ndarray, mean_p: np.ndarray, estimate: float) -> None:
    from matplotlib.figure import Figure  # no pyplot: works without a display

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(temperatures, mean_p, "o-", label="mean P(ordered), test set")
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.axvline(TC, color="k", ls=":", label=f"exact Tc = {TC:.4f}")
    ax.axvline(estimate, color="C3", label=f"crossing = {estimate:.4f}")
    ax.set(xlabel="temperature T (J / k_B)", ylabel="P(ordered)", title="Ising phase from a CNN")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Find the Ising model's critical temperature with a CNN.")
    parser.add_argument("--lattice", type=int, default=24, help="lattice side L, even (default 24)")
    parser.add_argument("--chains", type=int, default=100, help="Markov chains per temperature (default 100)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training set (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="configurations per step (default 64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate, cosine decay (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="FILE", help="save P(ordered) against temperature (.png, .svg, .pdf)")
    args = parser.parse_args(argv)

    # 1-2. Data: x float32 (N, 1, L, L) of +-1, label int64 (1 = ordered), temperature float32 (N,)
    data = tc.data.ising(L=args.lattice, chains=args.chains, seed=args.seed)  # cached after the first call
    train, test = data.split(test_fraction=0.25, seed=args.seed)
    print(f"{len(train)} training and {len(test)} test configurations of {args.lattice}x{args.lattice} spins")

    # 3. Train
    model = tc.models.get("ising-cnn")
    rng = np.random.default_rng(args.seed)
    params, state = model.init(rng)
    step = tc.value_and_grad(lambda p, x, y: tc.cross_entropy(model.apply(p, x, state=state, training=True), y))
    total_steps = args.epochs * -(-len(train) // args.batch_size)
    optimizer = tc.optim.adam(tc.optim.cosine_decay(args.lr, max(total_steps, 1)))
    opt_state = optimizer.init(params)
    for epoch in range(args.epochs):
        total = 0.0
        for xb, yb in tc.data.batches(train.x, train.label, args.batch_size, rng=rng):
            loss, grads = step(params, xb, yb)
            params, opt_state = optimizer.update(params, grads, opt_state)
            total += loss * len(yb)
        print(f"epoch {epoch + 1}: train loss {total / len(train):.4f}")

    # 4. Read Tc off the test set
    p = p_ordered(model, params, state, test.x)
    print(f"test accuracy {np.mean((p > 0.5) == test.label):.4f}")
    temperatures = np.unique(test.temperature)
    mean_p = np.array([p[test.temperature == t].mean() for t in temperatures])
    m = np.abs(magnetization(test.x))
    print("    T   P(ordered)  <|m|>")
    for t, mp in zip(temperatures, mean_p):
        print(f"{t:5.2f}   {mp:9.3f}  {m[test.temperature == t].mean():5.3f}")
    estimate = crossing_temperature(test.temperature, p)  # nan when the curve never crosses 1/2
    if np.isnan(estimate):
        print(f"P(ordered) never crosses 1/2 (train longer or on more data); exact Tc {TC:.4f}")
    else:
        print(f"crossing temperature {estimate:.4f}, exact Tc {TC:.4f} ({100 * (estimate - TC) / TC:+.2f}%)")
    if args.plot:
        plot(args.plot, temperatures, mean_p, estimate)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
