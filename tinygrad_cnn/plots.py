"""Figures written by the ``train`` command (matplotlib, headless-safe, written atomically)."""

from __future__ import annotations

import os

import numpy as np

from .files import atomic_write


def _figure(ncols: int, width: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    fig = Figure(figsize=(width, 3.6), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _save(fig, path: str) -> None:
    with atomic_write(path) as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=120)


def plot_curves(history, path: str, title: str = "") -> None:
    """Two panels per epoch: loss (train and test cross-entropy) and accuracy (train and test), on
    linear axes with whole-epoch ticks. The training values are means over each epoch's steps, the test
    values are measured at the epoch's end; a history without test values shows the training curves."""
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = _figure(2, 9.5)
    epochs = np.arange(1, len(history.train_loss) + 1)
    test_loss = getattr(history, "test_loss", [])
    for ax, train, test, name in ((loss_ax, history.train_loss, test_loss, "loss (cross-entropy)"),
                                  (acc_ax, history.train_accuracy, history.test_accuracy, "accuracy")):
        ax.plot(epochs, train, "o-", label=f"train (last {train[-1]:.4f})" if len(train) else "train")
        if len(test):
            ax.plot(epochs, test, "s-", label=f"test (last {test[-1]:.4f})")
        ax.set(xlabel="epoch", ylabel=name, title=name.split(" ")[0])
        if len(epochs) <= 12:
            ax.set_xticks(epochs)  # every epoch
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, max(len(epochs), 1) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_ylim(bottom=0)
    if len(history.train_accuracy):
        low = min(min(history.train_accuracy), min(history.test_accuracy, default=1.0))
        acc_ax.set_ylim(max(0.0, low - 0.05), 1.005)
    fig.suptitle(title)
    _save(fig, path)


def plot_phase(temperatures: np.ndarray, p_ordered: np.ndarray, estimate: float, exact: float, path: str,
               confusion: dict | None = None) -> None:
    """Mean P(ordered) against temperature with the estimated and exact Tc (and the confusion W)."""
    fig, axes = _figure(2 if confusion else 1, 10 if confusion else 5.5)
    ax = axes[0] if confusion else axes
    temps = np.unique(temperatures)
    mean = np.array([p_ordered[temperatures == t].mean() for t in temps])
    ax.plot(temps, mean, "o-", label="mean P(ordered), test set")
    ax.plot(temps, 1 - mean, "s--", alpha=0.6, label="mean P(disordered)")
    ax.axvline(exact, color="k", ls=":", label=f"exact Tc = {exact:.3f}")
    ax.axvline(estimate, color="C3", label=f"crossing = {estimate:.3f}")
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set(xlabel="temperature T (J / k_B)", ylabel="probability", title="Ising phase from a CNN")
    ax.legend(fontsize=8)
    if confusion:
        ax2 = axes[1]
        ax2.plot(confusion["trials"], confusion["accuracy"], "o-")
        ax2.axvline(exact, color="k", ls=":", label=f"exact Tc = {exact:.3f}")
        ax2.axvline(confusion["critical_temperature"], color="C3",
                    label=f"middle peak = {confusion['critical_temperature']:.3f}")
        ax2.set(xlabel="trial critical temperature", ylabel="test accuracy", title="learning by confusion")
        ax2.legend(fontsize=8)
    _save(fig, path)
