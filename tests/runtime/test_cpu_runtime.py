"""The C++ CPU runtime through `et.Session(..., backend="cpu")`: plan files in and out, the
verifier rejecting damaged plans, planned memory = allocated memory, weights as safetensors,
NaN handling, forward(), and learning over 50 steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler import plan_file
from edgetune.compiler.errors import InputError, PlanError


def _mlp_program(optimizer=None, batch=8, seed=0):
    torch.manual_seed(seed)
    model = models.MLP(in_features=6, hidden=16, num_classes=3, depth=2)
    x = torch.randn(batch, 6)
    y = torch.randint(3, (batch,))
    prog = et.compile(model, (x,), y, peft=et.peft.Full(), optimizer=optimizer or et.optim.SGD(lr=0.1, momentum=0.9))
    return model, prog, x.numpy(), y.numpy()


@pytest.fixture(scope="module")
def mlp():
    return _mlp_program()


@pytest.fixture
def plan_path(tmp_path, mlp):
    path = tmp_path / "mlp.etp"
    mlp[1].save(path)
    return path


def test_plan_file_round_trip_and_header(plan_path, mlp):
    _, prog, x, y = mlp
    header = plan_file.read_plan_header(plan_path.read_bytes())
    assert header["format_version"] == plan_file.FORMAT_VERSION
    assert [n for n, _ in header["inputs"]] == prog.model_inputs + [prog.target_input]
    assert {n for n, _ in header["weights"]} == set(prog.state_names())
    assert header["arena_bytes"] == prog.memory.arena_bytes
    from_file = et.Session(str(plan_path), backend="cpu", threads=1)
    from_prog = et.Session(prog, backend="cpu", threads=1)
    assert from_file.step(x, y) == from_prog.step(x, y)


def test_planned_memory_is_what_the_runtime_allocates(mlp):
    _, prog, _, _ = mlp
    sess = et.Session(prog, backend="cpu")
    plan = prog.memory
    assert sess.memory == {"persistent_bytes": plan.persistent_bytes, "arena_bytes": plan.arena_bytes,
                           "input_bytes": plan.input_bytes, "total_bytes": plan.total_bytes}
    assert "arena" in str(plan) and "persistent" in str(plan)


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated"),
    ("bitflip", "checksum mismatch"),
    ("identifier", "not an edgetune plan"),
    ("empty", "truncated"),
])
def test_damaged_plans_are_rejected_with_a_clear_error(tmp_path, plan_path, damage, message):
    data = bytearray(plan_path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        data[len(data) // 3] ^= 0x10
    elif damage == "identifier":
        data[4:8] = b"ONNX"
    else:
        data = b""
    bad = tmp_path / f"{damage}.etp"
    bad.write_bytes(bytes(data))
    with pytest.raises(PlanError, match=message):
        et.Session(str(bad), backend="cpu")


def test_every_single_bit_flip_in_the_header_region_is_caught(plan_path):
    data = plan_path.read_bytes()
    for pos in range(0, min(len(data), 512), 7):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        with pytest.raises(PlanError):
            et.Session(bytes(flipped), backend="cpu")


def test_wrong_format_version_is_rejected(monkeypatch, mlp):
    monkeypatch.setattr(plan_file, "FORMAT_VERSION", 99)
    data = plan_file.build_plan(mlp[1], "cpu")
    with pytest.raises(PlanError, match="plan format version 99; this runtime reads version 1"):
        et.Session(data, backend="cpu")


def test_missing_plan_file_and_unknown_backend(tmp_path, mlp):
    with pytest.raises(PlanError, match="cannot read plan file"):
        et.Session(str(tmp_path / "nope.etp"), backend="cpu")
    with pytest.raises(InputError, match="unknown backend"):
        et.Session(mlp[1], backend="tpu")


def test_cpu_matches_reference_forward_and_step(mlp):
    _, prog, x, y = mlp
    ref, cpu = et.Session(prog), et.Session(prog, backend="cpu", threads=2)
    np.testing.assert_allclose(cpu.forward(x), ref.forward(x), rtol=1e-5, atol=1e-6)
    for _ in range(3):
        np.testing.assert_allclose(cpu.step(x, y), ref.step(x, y), rtol=1e-5)
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(cpu.state_dict()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_bad_inputs_name_the_problem(mlp):
    _, prog, x, y = mlp
    sess = et.Session(prog, backend="cpu")
    with pytest.raises(InputError, match=r"input 'x' has shape \[4, 6\], the program expects \[8, 6\]"):
        sess.step(x[:4], y[:4])
    with pytest.raises(InputError, match="expected 2 arrays"):
        sess.step(x)
    with pytest.raises(InputError, match="dtype"):
        sess.step(x, y.astype(np.float32))


def test_nan_loss_stops_the_step_and_keeps_the_weights(mlp):
    _, prog, x, y = mlp
    sess = et.Session(prog, backend="cpu")
    sess.step(x, y)
    before = sess.state_dict()
    state_before = sess.optimizer_state()
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="loss is NaN at step 2"):
        sess.step(bad, y)
    for k, v in sess.state_dict().items():
        assert np.array_equal(v, before[k]), k
    for k, v in sess.optimizer_state().items():
        assert np.array_equal(v, state_before[k]), k
    sess.step(x, y)  # and training goes on


def test_weights_round_trip_through_safetensors(tmp_path, mlp):
    from safetensors.torch import load_file
    model, prog, x, y = mlp
    sess = et.Session(prog, backend="cpu")
    for _ in range(2):
        sess.step(x, y)
    path = tmp_path / "tuned.safetensors"
    sess.save_weights(path)
    loaded = load_file(str(path))
    assert set(loaded) == set(model.state_dict())
    model.load_state_dict(loaded)  # loads straight into the torch model
    fresh = et.Session(prog, backend="cpu")
    fresh.load_weights(path)
    for k, v in sess.state_dict().items():
        assert np.array_equal(fresh.state_dict()[k], v), k


def test_save_weights_to_an_unwritable_place_keeps_the_old_file(tmp_path, mlp):
    _, prog, _, _ = mlp
    sess = et.Session(prog, backend="cpu")
    with pytest.raises(InputError, match="does not exist"):
        sess.save_weights(tmp_path / "no" / "such" / "dir" / "w.safetensors")
    with pytest.raises(InputError, match="does not exist"):
        sess.load_weights(tmp_path / "missing.safetensors")


def test_set_lr_reaches_the_runtime(mlp):
    _, prog, x, y = mlp
    sess = et.Session(prog, backend="cpu")
    sess.set_lr(0.0)
    before = sess.state_dict()
    sess.step(x, y)
    for k, v in sess.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # lr 0: SGD leaves every weight where it was
    assert sess.lr == 0.0


def test_fifty_steps_on_a_learnable_task_lower_the_loss():
    torch.manual_seed(0)
    model = models.SmallCNN(num_classes=4, width=8)
    from edgetune.models import synthetic_task
    inputs, target = synthetic_task("small_cnn", model, 8, 16, 0)
    prog = et.compile(model, inputs, target, peft=et.peft.LastK(3), optimizer=et.optim.SGD(lr=0.05, momentum=0.9))
    sess = et.Session(prog, backend="cpu", threads=2)
    losses = []
    for step in range(50):
        inputs, target = synthetic_task("small_cnn", model, 8, 16, step)
        losses.append(sess.step(*inputs, target))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
