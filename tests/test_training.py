"""Training (tinygrad_cnn.training), the tasks behind ``train`` (tinygrad_cnn.tasks) and the figures
(tinygrad_cnn.plots): a tiny CNN learns a synthetic image task, augmentation, the non-finite-loss stop,
data preparation for Ising and (tiny, written here) MNIST files, the confusion W's middle peak, plots.

Nothing reads or writes outside ``tmp_path``: ``$TINYGRAD_CNN_DATA`` points there (the Ising cache).
"""

import functools
import gzip
import math
import os

import numpy as np
import pytest

from tinygrad_cnn import io as tc_io
from tinygrad_cnn import models, optim, plots, tasks, training
from tinygrad_cnn.pytree import tree_leaves
from tinygrad_cnn.data.ising import TC, ising

PNG = b"\x89PNG\r\n\x1a\n"
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TINY_ISING = dict(chains=4, sweeps=50, samples=2)


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def write_idx_dir(directory, n_train=64, n_test=16, seed=0):
    """Tiny MNIST-format data (the four gzipped IDX files); returns ((x_train, y_train), (x_test, y_test))."""
    rng = np.random.default_rng(seed)
    data = [(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
            for n in (n_train, n_test)]
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in zip(IDX_NAMES, (*data[0], *data[1]), strict=True):
        header = bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
        (directory / f"{name}.gz").write_bytes(gzip.compress(header + a.tobytes()))
    return tuple(data)


# ---------------------------------------------------------------------------------------------- a tiny CNN learns

def bars(n, rng, size=12):
    """Images (n, 1, size, size) with one bright bar, vertical (label 0) or horizontal (label 1), plus noise."""
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    where = rng.integers(2, size - 2, n)
    for i in range(n):  # building test data, not library code
        if y[i]:
            x[i, 0, where[i], 2:-2] += 1.5
        else:
            x[i, 0, 2:-2, where[i]] += 1.5
    return x, y


def small_cnn():
    init = lambda rng: models.init_cnn(rng, image_size=12, channels=(4, 8), hidden=16, num_classes=2)  # noqa: E731
    return models.Model("small-cnn", init, models.cnn, "a tiny cnn-bn for 12x12 images")


def test_fit_learns_bars():
    rng = np.random.default_rng(0)
    train, test = bars(384, rng), bars(128, rng)
    model = small_cnn()
    params, state = model.init(rng)
    seen = []
    params, state, history = training.fit(
        model, params, state, optim.adam(1e-2), train, test, epochs=4, batch_size=32, rng=rng,
        on_epoch=lambda epoch, h, p: seen.append((epoch, len(h.train_loss))))
    assert history.test_accuracy[-1] > 0.95, history
    assert seen == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert len(history.train_loss) == len(history.train_accuracy) == len(history.test_accuracy) == 4
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.steps == 4 * 12 and history.seconds > 0
    assert training.accuracy(model, params, *test, state=state) == history.test_accuracy[-1]  # the same computation
    # the test loss: the mean cross-entropy of the test set in eval mode, after each epoch
    assert len(history.test_loss) == 4 and history.test_loss[-1] < history.test_loss[0]
    p = training.predict_proba(model, params, test[0], state=state).astype(np.float64)
    assert history.test_loss[-1] == pytest.approx(-np.mean(np.log(p[np.arange(len(p)), test[1]])), rel=1e-4)


def test_fit_takes_labels_as_the_loaders_give_them():
    """uint8 labels (load_mnist's) train exactly as int64 ones; with them the jitted fit used to stop at its
    second step with a TraceError. Eager agrees to the rounding of the jit's rewrites."""
    rng = np.random.default_rng(3)
    (x, y), test = bars(48, rng), bars(16, rng)

    def run(labels, jit):
        params, state = small_cnn().init(np.random.default_rng(4))
        return training.fit(small_cnn(), params, state, optim.adam(1e-2), (x, labels), test, epochs=2,
                            batch_size=8, rng=np.random.default_rng(5), dropout_rate=0.2, jit=jit)

    uint8_run = run(y.astype(np.uint8), jit=True)
    assert_same_run(uint8_run, run(y.astype(np.int64), jit=True))
    assert uint8_run[2].train_loss == pytest.approx(run(y.astype(np.uint8), jit=False)[2].train_loss, rel=1e-5)


def test_fit_returns_new_params_and_updates_state_in_place():
    rng = np.random.default_rng(1)
    model = small_cnn()
    params, state = model.init(rng)
    w0, running_mean = params["conv1"]["w"].copy(), state["conv1"]["mean"]
    new, new_state, history = training.fit(model, params, state, optim.sgd(0.1), bars(16, rng), None,
                                           epochs=1, batch_size=8, rng=rng)
    np.testing.assert_array_equal(params["conv1"]["w"], w0)  # optimizers are pure: the input params are kept
    assert not np.array_equal(new["conv1"]["w"], w0)
    assert new_state is state and new_state["conv1"]["mean"] is running_mean and running_mean.any()
    assert history.test_accuracy == [] and history.steps == 2


def test_fit_progress_wrapper_gets_postfix():
    calls = []

    class Bar:
        def __init__(self, it, epoch):
            self.it, self.epoch = it, epoch

        def __iter__(self):
            return iter(self.it)

        def set_postfix(self, **kw):
            calls.append((self.epoch, sorted(set(kw) & {"loss", "acc"})))

    rng = np.random.default_rng(2)
    model = small_cnn()
    params, state = model.init(rng)
    training.fit(model, params, state, optim.adam(1e-3), bars(20, rng), None, epochs=2, batch_size=8, rng=rng,
                 progress=Bar)
    assert calls == [(0, ["acc", "loss"])] * 3 + [(1, ["acc", "loss"])] * 3


# ---------------------------------------------------------------------------------------------- interrupt, resume

def interrupting(optimizer, after):
    """``optimizer`` whose update number ``after + 1`` raises KeyboardInterrupt once it has computed the new
    params: Ctrl-C at the worst moment of a step (its forward pass updated the batch-norm statistics and
    drew the dropout masks; nothing of it may survive)."""
    calls = [0]

    def update(params, grads, state):
        new = optimizer.update(params, grads, state)
        calls[0] += 1
        if calls[0] == after + 1:
            raise KeyboardInterrupt
        return new

    return optim.Optimizer(optimizer.name, optimizer.hyperparams, optimizer.init, update)


def resumable_run(checkpoint=None, *, interrupt_after=None, **kw):
    """fit on bars with everything that draws from the generator or carries state: batch norm, dropout,
    augmentation, Adam with a cosine schedule; 40 samples in batches of 8 = 5 steps per epoch, 3 epochs.
    With ``checkpoint`` (an ``Interrupted.checkpoint``), continues it."""
    rng = np.random.default_rng(7)
    train, test = bars(40, rng), bars(16, rng)
    params, state = small_cnn().init(np.random.default_rng(8))
    if checkpoint is not None:
        params, state = checkpoint["params"], checkpoint["state"]
        kw.update(opt_state=checkpoint["opt_state"], resume=checkpoint["resume"])
    optimizer = optim.adam(optim.cosine_decay(1e-2, 15))
    if interrupt_after is not None:
        optimizer = interrupting(optimizer, interrupt_after)
    augment = functools.partial(training.random_shift_flip, shift=1)
    return training.fit(small_cnn(), params, state, optimizer, train, test, epochs=3, batch_size=8, rng=rng,
                        augment=augment, dropout_rate=0.3, **kw)


def assert_same_run(a, b):
    (params_a, state_a, history_a), (params_b, state_b, history_b) = a, b
    for x, y in zip(tree_leaves((params_a, state_a)), tree_leaves((params_b, state_b)), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)  # bit for bit
    history_a.seconds = history_b.seconds = 0
    assert history_a == history_b


@pytest.mark.parametrize("after", [0, 2, 5, 7, 14])  # steps done: none, mid-epoch, epoch boundaries, the last one
def test_fit_resumes_bit_for_bit_after_an_interrupt(tmp_path, after):
    whole = resumable_run()
    with pytest.raises(training.Interrupted) as info:
        resumable_run(interrupt_after=after)
    assert isinstance(info.value, KeyboardInterrupt)
    checkpoint = info.value.checkpoint
    at = checkpoint["resume"]
    assert (at["epoch"], at["step"], checkpoint["opt_state"]["step"]) == (after // 5, after % 5, after)
    assert len(at["history"]["train_loss"]) == after // 5 and at["history"]["steps"] == after

    tc_io.save(tmp_path / "resume.npz", checkpoint)  # what the CLI writes; read back, nothing is lost
    assert_same_run(resumable_run(tc_io.load(tmp_path / "resume.npz")), whole)
    if after:  # the comparison tells runs apart: without resume= the checkpoint is trained for 3 more epochs
        with pytest.raises(AssertionError):
            assert_same_run(resumable_run({**tc_io.load(tmp_path / "resume.npz"), "resume": None}), whole)


def test_fit_resumes_after_two_interrupts_and_one_in_on_epoch():
    whole = resumable_run()
    with pytest.raises(training.Interrupted) as info:
        resumable_run(interrupt_after=3)
    c = info.value.checkpoint

    def stop_after_first_epoch(epoch, history, params):
        if epoch == 0:
            raise KeyboardInterrupt  # while the epoch's results are being saved: that epoch is done again
    with pytest.raises(training.Interrupted) as info:
        resumable_run(c, on_epoch=stop_after_first_epoch)
    c = info.value.checkpoint
    assert (c["resume"]["epoch"], c["resume"]["step"]) == (0, 5)
    assert c["resume"]["history"]["train_loss"] == []  # epoch 1 ended half-way: it is not in the history yet
    assert_same_run(resumable_run(c), whole)


def test_fit_interrupt_rolls_back_the_batch_norm_state_in_place():
    def interrupted(optimizer, progress=None):
        params, state = small_cnn().init(np.random.default_rng(0))
        rng = np.random.default_rng(1)
        with pytest.raises(training.Interrupted) as info:
            training.fit(small_cnn(), params, state, optimizer, bars(16, rng), None, epochs=1, batch_size=8,
                         rng=rng, progress=progress)
        assert info.value.checkpoint["state"] is state  # updated in place, as fit promises
        return state

    def stop_before_step_2(batches, epoch):
        yield next(iter(batches))
        raise KeyboardInterrupt

    mid_step = interrupted(interrupting(optim.sgd(0.1), 1))  # step 2's forward pass updated the statistics ...
    between_steps = interrupted(optim.sgd(0.1), stop_before_step_2)
    for a, b in zip(tree_leaves(mid_step), tree_leaves(between_steps), strict=True):
        np.testing.assert_array_equal(a, b)  # ... and they were rolled back to those after step 1
    assert mid_step["conv1"]["mean"].any()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow, maybe in worker threads
def test_fit_stops_on_non_finite_loss():
    rng = np.random.default_rng(0)
    model = small_cnn()
    params, state = model.init(rng)
    x, y = bars(16, rng)
    x[3] = np.inf
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"loss became nan at epoch 1, step 1$"):
        training.fit(model, params, state, optim.adam(1e-3), (x, y), None, epochs=1, batch_size=16, rng=rng)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow, maybe in worker threads
def test_fit_stops_when_a_huge_lr_diverges():
    rng = np.random.default_rng(0)
    model = models.get("cnn")  # no batch norm to rein in the exploding weights
    params, state = model.init(rng)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"fit: the loss became (nan|inf) at "
                                                                            r"epoch \d+, step (\d+)") as info:
        training.fit(model, params, state, optim.sgd(1e30), (x, y), None, epochs=20, batch_size=8, rng=rng)
    assert int(info.value.args[0].rsplit(" ", 1)[1]) > 1  # the first step's loss was fine


def test_predict_proba_rows_sum_to_one():
    rng = np.random.default_rng(3)
    model = models.get("ising-cnn")
    params, state = model.init(rng)
    x = np.sign(rng.standard_normal((10, 1, 8, 8))).astype(np.float32)
    p = training.predict_proba(model, params, x, state=state, batch_size=4)  # three batches: 4, 4, 2
    assert p.shape == (10, 2) and p.dtype == np.float32
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(tasks.p_ordered(model, params, state, x), p[:, 1])


# ---------------------------------------------------------------------------------------------- augmentation

def one_pixel_images(n=200, size=9):
    x = np.zeros((n, 2, size, size), np.float32)
    x[:, :, size // 2, size // 2 - 1] = 1.0  # just left of the centre: a mirror moves it
    return x


def test_random_shift_flip_keeps_shape_and_dtype():
    x = np.random.default_rng(0).standard_normal((5, 3, 10, 7)).astype(np.float32)
    out = training.random_shift_flip(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert training.random_shift_flip(x.astype(np.float64), np.random.default_rng(0)).dtype == np.float64


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_random_shift_stays_within_bounds(shift):
    x = one_pixel_images()
    out = training.random_shift_flip(x, np.random.default_rng(shift), shift=shift, flip=False)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # channels move together
    r, c = np.nonzero(out[:, 0].reshape(len(x), -1))  # each image still holds its one pixel (centre +- shift)
    assert len(r) == len(x)
    dy, dx = np.divmod(c, x.shape[-1])
    dy, dx = dy - 4, dx - 3
    assert np.abs(dy).max() <= shift and np.abs(dx).max() <= shift
    assert set(dy) == set(dx) == set(range(-shift, shift + 1))  # every offset happens (200 draws)


def test_random_flip_mirrors_left_right():
    x = np.random.default_rng(0).standard_normal((100, 1, 5, 6)).astype(np.float32)
    out = training.random_shift_flip(x, np.random.default_rng(1), shift=0, flip=True)
    same = (out == x).all(axis=(1, 2, 3))
    mirrored = (out == x[..., ::-1]).all(axis=(1, 2, 3))
    assert (same ^ mirrored).all()
    assert 30 < mirrored.sum() < 70  # probability 1/2


def test_random_shift_flip_is_reproducible():
    x = one_pixel_images()
    a = training.random_shift_flip(x, np.random.default_rng(5))
    b = training.random_shift_flip(x, np.random.default_rng(5))
    c = training.random_shift_flip(x, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, one_pixel_images())  # input untouched


def test_fit_with_augmentation():
    rng = np.random.default_rng(4)
    model = small_cnn()
    params, state = model.init(rng)
    shapes = []

    def augment(xb, key):
        out = training.random_shift_flip(xb, key, shift=1)
        shapes.append(out.shape)
        return out

    training.fit(model, params, state, optim.adam(1e-3), bars(20, rng), None, epochs=1, batch_size=8, rng=rng,
                 augment=augment)
    assert shapes == [(8, 1, 12, 12), (8, 1, 12, 12), (4, 1, 12, 12)]


# ---------------------------------------------------------------------------------------------- tasks

def test_prepare_ising_splits_by_chain(data_home):
    task = tasks.prepare("ising", lattice=8, seed=3, ising_options=TINY_ISING)
    assert task.name == "ising"
    assert task.meta == {"dataset": "ising", "lattice": 8, "seed": 3, "ising_options": TINY_ISING}
    (x_train, y_train), (x_test, y_test) = task.train, task.test
    # 14 temperatures x 4 chains x 2 samples; one chain per temperature (25%) is held out
    assert x_train.shape == (84, 1, 8, 8) and x_test.shape == (28, 1, 8, 8) and x_train.dtype == np.float32
    assert y_train.dtype == np.int64 and set(np.unique(x_train)) == {-1.0, 1.0}
    np.testing.assert_array_equal(y_train, task.train_temperature < TC)
    np.testing.assert_array_equal(y_test, task.test_temperature < TC)
    assert set(task.train_temperature) == set(task.test_temperature)  # every temperature on both sides
    assert list((data_home / "ising").glob("ising-L8-*.npz"))  # cached under $TINYGRAD_CNN_DATA

    # the split is IsingData.split's: by chain, with the task's seed
    train, test = ising(L=8, seed=3, cache_dir=None, **TINY_ISING).split(0.25, seed=3)
    np.testing.assert_array_equal(x_train, train.x)
    np.testing.assert_array_equal(x_test, test.x)
    assert not set(train.chain) & set(test.chain)


def test_prepare_ising_limit_caps_the_training_set_only():
    whole = tasks.prepare("ising", lattice=8, ising_options=TINY_ISING)
    task = tasks.prepare("ising", lattice=8, ising_options=TINY_ISING, limit=20)
    assert len(task.train[1]) == len(task.train_temperature) == 20
    np.testing.assert_array_equal(task.train[1], task.train_temperature < TC)
    assert set(map(bytes, task.train[0])) <= set(map(bytes, whole.train[0]))  # a subset of the training side
    for a, b in zip((*task.test, task.test_temperature), (*whole.test, whole.test_temperature), strict=True):
        np.testing.assert_array_equal(a, b)  # the whole test split, as evaluate scores it


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_prepare_images_normalises_with_training_statistics(tmp_path, dataset):
    (x_train, y_train), (x_test, y_test) = write_idx_dir(tmp_path / "idx")
    task = tasks.prepare(dataset, data_path=str(tmp_path / "idx"))
    (xa, ya), (xb, yb) = task.train, task.test
    assert xa.shape == (64, 1, 28, 28) and xb.shape == (16, 1, 28, 28)
    assert xa.dtype == xb.dtype == np.float32 and ya.dtype == yb.dtype == np.int64
    assert abs(float(xa.mean())) < 1e-4 and float(xa.std()) == pytest.approx(1, abs=1e-4)
    np.testing.assert_array_equal(ya, y_train)
    np.testing.assert_array_equal(yb, y_test)
    mean, std = task.meta["mean"], task.meta["std"]
    assert task.meta["dataset"] == dataset
    assert mean == pytest.approx(x_train.mean() / 255, rel=1e-5) and std == pytest.approx(x_train.std() / 255, rel=1e-4)
    np.testing.assert_allclose(xb[:, 0], (x_test / 255 - mean) / std, rtol=1e-5, atol=1e-5)  # train's statistics

    limited = tasks.prepare(dataset, data_path=str(tmp_path / "idx"), limit=8)
    assert limited.train[0].shape == (8, 1, 28, 28) and limited.test[0].shape == (16, 1, 28, 28)  # all test images
    np.testing.assert_array_equal(limited.train[1], y_train[:8])
    np.testing.assert_array_equal(limited.test[1], y_test)


def test_prepare_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        tasks.prepare("cifar")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tasks.prepare("mnist", data_path=str(tmp_path / "nowhere"))


def test_normalize_images():
    x = np.array([[[0, 255]]], np.uint8)
    np.testing.assert_allclose(tasks.normalize_images(x, 0.5, 0.5), [[[[-1.0, 1.0]]]])


def w_curve(trials, peak):
    """A confusion W: 1 at both ends, dips, and a parabolic middle peak at ``peak``."""
    d = np.abs(trials - peak)
    return np.where(d < 0.25, 0.95 - 2 * d**2, 0.5 + 0.5 * (d - 0.25) / (np.abs(trials - peak).max() - 0.25))


@pytest.mark.parametrize("peak", [2.25, 2.27, 2.21, 2.0])
def test_middle_peak_recovers_the_peak(peak):
    trials = np.arange(1.65, 2.86, 0.1)
    acc = w_curve(trials, peak)
    assert acc.argmax() in (0, len(acc) - 1)  # the ends are highest, but they are not interior
    assert tasks.middle_peak(trials, acc) == pytest.approx(peak, abs=1e-9)  # a parabola is fitted exactly


def test_middle_peak_without_interior_peak_is_nan():
    trials = np.linspace(1.6, 2.9, 8)
    assert math.isnan(tasks.middle_peak(trials, np.linspace(0.5, 1.0, 8)))  # increasing
    assert math.isnan(tasks.middle_peak(trials, np.abs(trials - 2.3)))      # a V: no middle peak
    assert math.isnan(tasks.middle_peak(trials[:2], np.array([0.9, 1.0])))  # too short


def test_middle_peak_picks_the_highest_interior_maximum():
    trials = np.arange(7.0)
    acc = np.array([1.0, 0.7, 0.8, 0.6, 0.9, 0.5, 1.0])
    assert tasks.middle_peak(trials, acc) == pytest.approx(4 + 0.5 * (0.6 - 0.5) / (0.6 - 1.8 + 0.5))


def test_confusion_tc_on_tiny_ising():
    task = tasks.prepare("ising", lattice=8, ising_options=TINY_ISING)
    result = tasks.confusion_tc(task, trials=[1.95, 2.25, 2.55], epochs=1, batch_size=32)
    assert result["trials"] == [1.95, 2.25, 2.55] and len(result["accuracy"]) == 3
    assert all(0 <= a <= 1 for a in result["accuracy"])
    ct = result["critical_temperature"]
    assert math.isnan(ct) or 1.95 <= ct <= 2.55


# ---------------------------------------------------------------------------------------------- plots

def test_plot_curves_writes_a_png_atomically(tmp_path):
    history = training.History(train_loss=[0.9, 0.5, 0.3], train_accuracy=[0.6, 0.8, 0.9],
                               test_accuracy=[0.55, 0.75, 0.85])
    path = tmp_path / "curves.png"
    plots.plot_curves(history, str(path), "title")
    assert path.read_bytes()[:8] == PNG
    assert os.listdir(tmp_path) == ["curves.png"]  # no temporary file left
    plots.plot_curves(training.History(train_loss=[0.5], train_accuracy=[0.7]), str(path))  # no test set; replaces
    assert path.read_bytes()[:8] == PNG and os.listdir(tmp_path) == ["curves.png"]


def test_plot_curves_shows_train_and_test_loss_and_accuracy(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    history = training.History(train_loss=[0.9, 0.5, 0.3], train_accuracy=[0.6, 0.8, 0.9],
                               test_accuracy=[0.55, 0.75, 0.85], test_loss=[1.0, 0.6, 0.45])
    plots.plot_curves(history, str(tmp_path / "curves.png"), "title")
    loss, acc = figures[0].axes
    for ax, train, test in ((loss, history.train_loss, history.test_loss),
                            (acc, history.train_accuracy, history.test_accuracy)):
        lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
        assert set(lines) == {"train", "test"}
        np.testing.assert_array_equal(lines["train"].get_ydata(), train)
        np.testing.assert_array_equal(lines["test"].get_ydata(), test)
        assert ax.get_yscale() == ax.get_xscale() == "linear"
        assert list(ax.get_xticks()) == [1, 2, 3]  # whole epochs
        assert len([t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]) >= 4
    assert loss.get_ylim()[0] == 0

    figures.clear()
    plots.plot_curves(training.History(train_loss=[0.5], train_accuracy=[0.7]), str(tmp_path / "c.png"))
    assert [len(ax.get_lines()) for ax in figures[0].axes] == [1, 1] and list(figures[0].axes[0].get_xticks()) == [1]


@pytest.mark.parametrize("with_confusion", [False, True])
def test_plot_phase_writes_a_png_atomically(tmp_path, with_confusion):
    t = np.repeat(np.linspace(1.6, 2.9, 14), 3)
    p = 1 / (1 + np.exp((t - TC) * 8))
    confusion = {"trials": [1.9, 2.2, 2.5], "accuracy": [0.8, 0.9, 0.8], "critical_temperature": 2.2} \
        if with_confusion else None
    path = tmp_path / "phase.png"
    plots.plot_phase(t, p, 2.27, TC, str(path), confusion)
    assert path.read_bytes()[:8] == PNG
    assert os.listdir(tmp_path) == ["phase.png"]


def test_plot_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_curves(training.History(train_loss=[0.5], train_accuracy=[0.7]), str(tmp_path / "c.png"))
    assert os.listdir(tmp_path) == []
