"""Session safety (the reliability issue): a non-finite learning rate is refused, one Session used
from several threads runs one call at a time, load_weights/load_state_dict are all or nothing,
and inputs numpy cannot hold (bfloat16, meta, sparse tensors...) give an InputError naming them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler.errors import InputError

BACKENDS = ["reference", "cpu"]


def _mlp(batch=8, hidden=16, seed=0):
    torch.manual_seed(seed)
    model = models.MLP(in_features=6, hidden=hidden, num_classes=3, depth=2)
    x = torch.randn(batch, 6)
    y = torch.randint(3, (batch,))
    prog = et.compile(model, (x,), y, peft=et.peft.Full(), optimizer=et.optim.SGD(lr=0.1, momentum=0.9))
    return prog, x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def mlp():
    return _mlp()


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- 1. the learning rate ----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), -0.1, np.float32("inf"), "0.1", None])
def test_set_lr_refuses_non_finite_or_negative(mlp, backend, bad):
    prog, x, y = mlp
    sess = et.Session(prog, backend=backend)
    with pytest.raises(InputError, match="learning rate"):
        sess.set_lr(bad)
    assert sess.lr == pytest.approx(0.1)
    sess.step(x, y)
    assert all(np.isfinite(v).all() for v in sess.state_dict().values())


def test_native_runtime_refuses_a_non_finite_lr_whoever_calls_it(mlp, native):
    """The C++ module's own guard: set_lr and set_state('optim.lr') on the raw Runtime."""
    prog, _, _ = mlp
    rt = native.Runtime(prog.plan_bytes("cpu"), "cpu", 1)
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(native.NativeError, match="learning rate") as e:
            rt.set_lr(bad)
        assert e.value.code == "invalid argument"
        with pytest.raises(native.NativeError, match="learning rate"):
            rt.set_state("optim.lr", np.asarray(bad, dtype=np.float32))
    assert rt.lr == pytest.approx(0.1)
    rt.set_lr(0.25)
    assert rt.lr == pytest.approx(0.25)
    rt.set_state("optim.lr", np.asarray(0.5, dtype=np.float32))
    assert float(rt.optimizer_state()["optim.lr"]) == pytest.approx(0.5)


# ---- 2. one call at a time per Session ---------------------------------------------------------

def _hammer(step, n_steps=200):
    """Two threads, thread i calling step(i) n_steps times; the losses of each thread."""
    losses: list[list[float]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(i):
        try:
            start.wait()
            for _ in range(n_steps):
                losses[i].append(step(i))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return losses


@pytest.fixture(scope="module")
def wide_mlp():
    # wide enough that a step takes a while, and two different batches (one per thread): two
    # unserialised steps overlap and overwrite each other's inputs and activations
    prog, x, y = _mlp(batch=64, hidden=256, seed=1)
    return prog, [x, np.ascontiguousarray(x[::-1] * 2)], [y, np.ascontiguousarray(y[::-1])]


def test_two_threads_stepping_one_session_get_the_single_thread_loss(wide_mlp):
    prog, xs, ys = wide_mlp
    sess = et.Session(prog, backend="cpu", threads=2)
    sess.set_lr(0.0)  # the weights never change: every step on a batch has the same loss
    expected = [sess.step(xs[i], ys[i]) for i in range(2)]
    assert expected[0] != expected[1]
    losses = _hammer(lambda i: sess.step(xs[i], ys[i]))
    for i in range(2):
        assert len(losses[i]) == 200
        assert all(loss == expected[i] for loss in losses[i]), sorted(set(losses[i]) - {expected[i]})[:5]
    assert sess.steps == 402


def test_native_runtime_serialises_calls_from_threads(wide_mlp, native):
    """The lock in module.cc: the raw Runtime, stepped from two threads, while a third reads weights."""
    prog, xs, ys = wide_mlp
    rt = native.Runtime(prog.plan_bytes("cpu"), "cpu", 2)
    rt.set_lr(0.0)
    expected = [rt.step([xs[i], ys[i]]) for i in range(2)]
    weights = rt.weights()
    stop = threading.Event()
    reads: list[bool] = []

    def reader():
        while not stop.is_set():
            w = rt.weights()
            reads.append(all(np.array_equal(w[k], weights[k]) for k in weights))

    r = threading.Thread(target=reader)
    r.start()
    try:
        losses = _hammer(lambda i: rt.step([xs[i], ys[i]]))
    finally:
        stop.set()
        r.join()
    for i in range(2):
        assert all(loss == expected[i] for loss in losses[i]), sorted(set(losses[i]) - {expected[i]})[:5]
    assert reads and all(reads)
    assert rt.steps == 402


# ---- 3. loading weights is all or nothing -------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_load_weights_with_a_bad_last_tensor_changes_nothing(mlp, backend, tmp_path):
    from safetensors.numpy import load_file, save_file
    prog, x, y = mlp
    sess = et.Session(prog, backend=backend)
    sess.step(x, y)
    path = tmp_path / "w.safetensors"
    sess.save_weights(path)
    tensors = {k: v + 1 for k, v in load_file(path).items()}
    last = list(load_file(path))[-1]  # the order load_weights reads them in
    assert len(tensors) > 1
    tensors[last] = np.zeros((*tensors[last].shape, 2), dtype=tensors[last].dtype)
    save_file(tensors, path)
    assert list(load_file(path))[-1] == last
    before = sess.state_dict()
    with pytest.raises(InputError, match=f"'{last}' has shape"):
        sess.load_weights(path)
    _assert_same_state(sess.state_dict(), before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damage,message", [
    ("shape", "has shape"),
    ("dtype", "has dtype"),
    ("nan", "non-finite"),
    ("inf", "non-finite"),
    ("bfloat16", "bfloat16"),
    ("object", "not numbers"),
])
def test_load_state_dict_checks_every_tensor_before_writing_any(mlp, backend, damage, message):
    prog, x, y = mlp
    sess = et.Session(prog, backend=backend)
    before = sess.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    name = sorted(k for k, v in before.items() if v.dtype == np.float32)[-1]
    v = state[name]
    if damage == "shape":
        state[name] = v.reshape(-1)[:-1]
    elif damage == "dtype":
        state[name] = v.astype(np.complex64)
    elif damage == "nan":
        state[name] = np.where(np.arange(v.size).reshape(v.shape) == 0, np.nan, v).astype(v.dtype)
    elif damage == "inf":
        state[name] = np.full_like(v, np.inf)
    elif damage == "bfloat16":
        state[name] = torch.from_numpy(v).to(torch.bfloat16)
    else:
        state[name] = [object()] * len(v)
    # the damaged tensor goes last, so a loader that writes as it goes has written all the others
    state = {k: state[k] for k in [k for k in state if k != name] + [name]}
    with pytest.raises(InputError, match=message):
        sess.load_state_dict(state)
    _assert_same_state(sess.state_dict(), before)
    # the same dict without the damage loads
    state[name] = before[name] + 1
    sess.load_state_dict(state)
    np.testing.assert_array_equal(sess.state_dict()[name], before[name] + 1)


# ---- 4. inputs numpy cannot hold -------------------------------------------------------------

def _unconvertible(x: np.ndarray, kind: str):
    t = torch.from_numpy(x)
    if kind == "bfloat16":
        return t.to(torch.bfloat16)
    if kind == "meta":
        return t.to("meta")
    if kind == "sparse":
        return t.to_sparse()
    if kind == "complex":
        return t.to(torch.complex64)
    return {"not": "an array"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,message", [
    ("bfloat16", "bfloat16"),
    ("meta", "meta"),
    ("sparse", "sparse"),
    ("complex", "dtype complex64"),
    ("dict", "not numbers"),
])
def test_unconvertible_inputs_give_an_input_error_naming_the_input(mlp, backend, kind, message):
    prog, x, y = mlp
    sess = et.Session(prog, backend=backend)
    bad = _unconvertible(x, kind)
    with pytest.raises(InputError, match=f"input 'x'.*{message}"):
        sess.step(bad, y)
    with pytest.raises(InputError, match=f"input 'x'.*{message}"):
        sess.forward(bad)
    name = sorted(k for k, v in sess.state_dict().items() if v.dtype == np.float32)[0]
    state = sess.state_dict()
    state[name] = _unconvertible(state[name], kind)
    with pytest.raises(InputError, match=f"'{name}'"):
        sess.load_state_dict(state)
    assert sess.steps == 0
