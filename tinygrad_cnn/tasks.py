"""The training tasks behind ``python -m tinygrad_cnn train``: each data set prepared for a CNN, and
the two estimates of the Ising model's critical temperature.

* **crossing** (Carrasquilla & Melko 2017): train on configurations labelled ordered (T < Tc) or
  disordered, then find where the mean predicted P(ordered) on held-out data crosses 1/2. It
  reproduces whatever Tc the labels assumed, so it checks the pipeline more than the physics.
* **confusion** (van Nieuwenburg, Liu & Huber 2017), which never uses Tc: for each trial temperature
  T' label the data as if the transition were at T' and train a fresh network. At the extremes every
  label is the same and the accuracy is trivially high; near the true Tc the labels agree with the
  physics and are easy to learn; in between they cut through one phase and are hard. The accuracy
  against T' is W-shaped, and its middle peak estimates Tc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import models as M
from . import optim
from .data import ising as ising_data
from .data.ising import TC, crossing_temperature
from .data.mnist import load_fashion_mnist, load_mnist
from .training import fit, predict_proba

DATASETS = ("ising", "mnist", "fashion-mnist")
DEFAULT_MODEL = {"ising": "ising-cnn", "mnist": "cnn-bn", "fashion-mnist": "cnn-bn"}
IMAGE_LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
CLASS_NAMES = {  # label k of each data set is called CLASS_NAMES[dataset][k]
    "ising": ("disordered (T > Tc)", "ordered (T < Tc)"),  # data.ising: label 1 = ordered (T < TC)
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}


@dataclass
class Task:
    """Training and test arrays ready for a CNN, and what is needed to rebuild them (``meta``)."""

    name: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    meta: dict = field(default_factory=dict)
    test_temperature: np.ndarray | None = None  # Ising only: the temperature of each test sample
    train_temperature: np.ndarray | None = None


def model_options(task: Task) -> dict:
    """The options of a model's ``init`` that fit ``task``: its inputs' channels and side, its classes
    (so any model trains on any data set: an image CNN on 24x24 Ising lattices has 2 outputs)."""
    x = task.train[0]
    return {"in_channels": x.shape[1], "image_size": x.shape[-1], "num_classes": len(CLASS_NAMES[task.name])}


def normalize_images(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) with the training set's mean 0 and std 1."""
    return ((x.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std))[:, None]


def prepare(dataset: str, *, seed: int = 0, data_path: str | None = None, lattice: int = 24,
            limit: int | None = None, ising_options: dict | None = None) -> Task:
    """Loads (or generates) ``dataset`` and returns a :class:`Task`. ``limit`` caps the training samples
    (quick runs: the first ``limit`` images, or ``limit`` random Ising configurations); the test set is
    always the whole test split, so that a run's test accuracy is the one ``evaluate`` reports. Ising
    data are split by chain with ``seed``, so correlated samples never sit on both sides."""
    if dataset == "ising":
        data = ising_data(L=lattice, seed=seed, **(ising_options or {}))
        train, test = data.split(test_fraction=0.25, seed=seed)
        if limit:
            train = train.subset(np.random.default_rng(seed).permutation(len(train))[:limit])
        meta = {"dataset": dataset, "lattice": lattice, "seed": seed, "ising_options": dict(ising_options or {})}
        return Task(dataset, (train.x, train.label), (test.x, test.label), meta, test.temperature, train.temperature)
    if dataset not in IMAGE_LOADERS:
        raise ValueError(f"prepare: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    (x_train, y_train), (x_test, y_test) = IMAGE_LOADERS[dataset](data_path)
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    scaled = x_train.astype(np.float32) / 255
    mean, std = float(scaled.mean()), float(scaled.std())
    meta = {"dataset": dataset, "mean": mean, "std": std}
    return Task(dataset, (normalize_images(x_train, mean, std), y_train.astype(np.int64)),
                (normalize_images(x_test, mean, std), y_test.astype(np.int64)), meta)


def p_ordered(model: M.Model, params: dict, state: dict, x: np.ndarray) -> np.ndarray:
    """P(ordered) for each Ising configuration (class 1 of the two-class models)."""
    return predict_proba(model, params, x, state=state)[:, 1]


def confusion_tc(task: Task, *, model_name: str = "ising-cnn", trials: np.ndarray | None = None, epochs: int = 3,
                 batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> dict:
    """Learning by confusion: test accuracy for each trial critical temperature, and the estimate.

    Trial temperatures default to the midpoints between the data's temperatures, so every trial
    labelling is unambiguous. The estimate is the interior local maximum of the accuracy curve (the
    middle peak of the W), refined by a parabola through it and its two neighbours.
    """
    temps = np.unique(task.train_temperature)
    trials = (temps[:-1] + temps[1:]) / 2 if trials is None else np.asarray(trials, dtype=np.float64)
    model = M.get(model_name)
    accuracies = []
    for k, trial in enumerate(trials):
        rng = np.random.default_rng(seed + 1000 * k)
        y_train = (task.train_temperature < trial).astype(np.int64)
        y_test = (task.test_temperature < trial).astype(np.int64)
        params, state = model.init(rng)
        steps = epochs * -(-len(y_train) // batch_size)
        opt = optim.adam(optim.cosine_decay(lr, steps))
        params, state, _ = fit(model, params, state, opt, (task.train[0], y_train), None,
                               epochs=epochs, batch_size=batch_size, rng=rng)
        predicted = p_ordered(model, params, state, task.test[0]) > 0.5
        accuracies.append(float(np.mean(predicted == y_test)))
    return {"trials": [float(t) for t in trials], "accuracy": accuracies,
            "critical_temperature": middle_peak(trials, np.array(accuracies))}


def middle_peak(trials: np.ndarray, accuracy: np.ndarray) -> float:
    """The W curve's middle peak: the highest interior local maximum, refined by a parabola."""
    interior = [i for i in range(1, len(trials) - 1)
                if accuracy[i] >= accuracy[i - 1] and accuracy[i] >= accuracy[i + 1]]
    if not interior:
        return float("nan")
    i = max(interior, key=lambda j: (accuracy[j], -abs(j - (len(trials) - 1) / 2)))
    a, b, c = accuracy[i - 1: i + 2]
    curvature = a - 2 * b + c
    offset = 0.5 * (a - c) / curvature if curvature < 0 else 0.0  # vertex of the parabola, in steps
    step = (trials[i + 1] - trials[i - 1]) / 2
    return float(trials[i] + np.clip(offset, -0.5, 0.5) * step)


__all__ = ["DATASETS", "DEFAULT_MODEL", "CLASS_NAMES", "Task", "model_options", "prepare", "normalize_images",
           "p_ordered", "confusion_tc", "middle_peak", "crossing_temperature", "TC"]
