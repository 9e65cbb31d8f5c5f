"""`edgetune-train`, the standalone training binary, driven as a user would: a plan written by
`Program.save`, data written by `numpy.save`, the binary run with subprocess.

Covers: the loss falls on a learnable task; the weights land in a safetensors file under the
model's state_dict names and match the Python runtime trained on the same batches; runs are
reproducible from the seed; f64/i32 data is converted; every user mistake (shape mismatch,
missing file, unwritable --out, unknown flag, wrong --batch, damaged plan) is one error line with
exit status 2 (1 for a bad plan) and costs no training; NaN data stops with exit status 3 and
leaves an existing output file untouched; a binary from `emit_binary` trains with no PLAN.

The binary is $EDGETUNE_TRAIN, else the one edgetune finds (runtime/binary.py). `pip install`
builds it, so a missing binary is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune import models
from edgetune.compiler.errors import EdgetuneError, PlanError
from edgetune.runtime import binary
from support import full_filesystem

IN_FEATURES, CLASSES, BATCH, SAMPLES = 8, 3, 8, 400  # 50 steps per epoch


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_exe():
    return binary.find_train_binary()


def _compile(optimizer=None):
    torch.manual_seed(0)
    model = models.MLP(in_features=IN_FEATURES, hidden=16, num_classes=CLASSES, depth=2)
    x = torch.randn(BATCH, IN_FEATURES)
    y = torch.randint(CLASSES, (BATCH,))
    prog = et.compile(model, (x,), y, loss="cross_entropy", peft=et.peft.Full(),
                      optimizer=optimizer or et.optim.SGD(lr=0.1, momentum=0.9))
    return model, prog


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """(model, program, plan path) for a small MLP classifier."""
    model, prog = _compile()
    path = tmp_path_factory.mktemp("plan") / "mlp.etp"
    prog.save(path)
    return model, prog, path


def _task(seed=0, n=SAMPLES):
    """Linearly separable 3-class data: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, IN_FEATURES)).astype(np.float32)
    w = rng.standard_normal((IN_FEATURES, CLASSES))
    y = (x @ w).argmax(1).astype(np.int64)
    return x, y


@pytest.fixture
def data(tmp_path):
    x, y = _task()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


def run(exe, *args, timeout=120):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False)


STEP_LINE = re.compile(r"^step (\d+)/(\d+)  epoch (\d+)  loss (\S+)  ms/step (\S+)$")


def losses_of(stdout: str) -> list[float]:
    return [float(m.group(4)) for line in stdout.splitlines() if (m := STEP_LINE.match(line))]


def assert_one_error_line(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgetune-train: error: "), proc.stderr
    for n in needles:
        assert str(n) in lines[0], (n, proc.stderr)


# ---- training ---------------------------------------------------------------------------------
def test_loss_falls_and_weights_load_as_state_dict(train_exe, mlp, data, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file
    model, _, plan = mlp
    x, y = data
    out = tmp_path / "tuned.safetensors"
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--epochs", 1, "--log-every", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    losses = losses_of(proc.stdout)
    assert len(losses) == SAMPLES // BATCH == 50
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
    assert "done: 50 steps" in proc.stdout and "memory: runtime" in proc.stdout

    tensors = load_file(str(out))
    state = model.state_dict()
    assert set(tensors) == set(state)
    for name, t in state.items():
        assert tensors[name].shape == tuple(t.shape), name
        assert tensors[name].dtype == t.numpy().dtype, name
    assert not np.allclose(tensors["layers.0.weight"], state["layers.0.weight"].numpy())  # it trained
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    assert meta["producer"].startswith("edgetune-train")
    assert meta["steps"] == "50"
    assert float(meta["final_loss"]) == pytest.approx(losses[-1], rel=1e-3, abs=1e-4)
    # loads straight into the PyTorch model
    fresh = models.MLP(in_features=IN_FEATURES, hidden=16, num_classes=CLASSES, depth=2)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})


def test_matches_python_session_on_the_same_batches(train_exe, mlp, data, tmp_path):
    """--no-shuffle feeds batches in file order: the numpy reference executor trained on the same
    batches must end with the same weights."""
    from safetensors.numpy import load_file
    _, prog, plan = mlp
    x, y = data
    out = tmp_path / "tuned.safetensors"
    steps = 12
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", steps, "--no-shuffle", "--threads", 1,
               "--log-every", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    xs, ys = np.load(x), np.load(y)
    sess = et.Session(prog)  # the numpy reference: the oracle
    ref_losses = [sess.step(xs[i * BATCH:(i + 1) * BATCH], ys[i * BATCH:(i + 1) * BATCH]) for i in range(steps)]
    np.testing.assert_allclose(losses_of(proc.stdout), ref_losses, rtol=1e-3, atol=1e-4)
    ours, ref = load_file(str(out)), sess.state_dict()
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_same_seed_same_weights_other_seed_other_weights(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, y = data
    outs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        outs[name] = tmp_path / f"{name}.safetensors"
        proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", 20, "--seed", seed, "--threads", 1,
                   "--quiet", "--out", outs[name])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == ""  # --quiet
    read = {k: v.read_bytes() for k, v in outs.items()}
    assert read["a"] == read["b"]
    assert read["a"] != read["c"]


def test_converts_f64_inputs_and_i32_targets_and_drops_partial_batch(train_exe, mlp, tmp_path):
    _, _, plan = mlp
    x, y = _task(n=101)  # 12 batches of 8, 5 samples dropped per epoch
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    np.save(tmp_path / "y32.npy", y.astype(np.int32))
    proc = run(train_exe, plan, "--inputs", tmp_path / "x64.npy", "--targets", tmp_path / "y32.npy", "--epochs", 2)
    assert proc.returncode == 0, proc.stderr
    assert "24 steps of batch 8" in proc.stdout
    assert proc.stdout.count("dropped") == 1  # said once, not every epoch
    assert "no --out given" in proc.stdout


def test_batchnorm_buffers_and_default_progress(train_exe, tmp_path):
    """A conv + BatchNorm model: running stats and the 0-d int64 num_batches_tracked come back
    under their state_dict names and load into PyTorch; without --log-every a run prints about
    20 progress lines."""
    import safetensors.torch
    torch.manual_seed(0)
    model = models.build("small_cnn")
    (x,), y = models.example_inputs("small_cnn", model, batch=4, resolution=8)
    prog = et.compile(model, (x,), y, loss="cross_entropy", peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.05))
    prog.save(tmp_path / "cnn.etp")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((64, *x.shape[1:])).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, int(y.max()) + 1, 64))
    out = tmp_path / "cnn.safetensors"
    proc = run(train_exe, tmp_path / "cnn.etp", "--inputs", tmp_path / "x.npy", "--targets", tmp_path / "y.npy",
               "--epochs", 5, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert 15 <= len(losses_of(proc.stdout)) <= 22
    tensors = safetensors.torch.load_file(str(out))
    assert set(tensors) == set(model.state_dict())
    assert tensors["bn1.num_batches_tracked"].shape == () and int(tensors["bn1.num_batches_tracked"]) == 80
    model.load_state_dict(tensors)


def test_info_lists_the_plan(train_exe, mlp):
    _, prog, plan = mlp
    proc = run(train_exe, plan, "--info")
    assert proc.returncode == 0, proc.stderr
    for name in prog.trainable_names:
        assert name in proc.stdout
    assert "inputs" in proc.stdout and "memory:" in proc.stdout and "f32[8,8]" in proc.stdout


# ---- mistakes ---------------------------------------------------------------------------------
def test_shape_mismatch_names_file_and_shapes(train_exe, mlp, tmp_path):
    _, _, plan = mlp
    np.save(tmp_path / "x9.npy", np.zeros((40, 9), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(40, np.int64))
    proc = run(train_exe, plan, "--inputs", tmp_path / "x9.npy", "--targets", tmp_path / "y.npy")
    assert proc.returncode == 2
    assert_one_error_line(proc, "x9.npy", "[9]", "[8]")
    assert proc.stdout == ""


def test_sample_count_mismatch(train_exe, mlp, tmp_path):
    _, _, plan = mlp
    np.save(tmp_path / "x.npy", np.zeros((40, IN_FEATURES), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(39, np.int64))
    proc = run(train_exe, plan, "--inputs", tmp_path / "x.npy", "--targets", tmp_path / "y.npy")
    assert proc.returncode == 2
    assert_one_error_line(proc, "40", "39")


def test_missing_and_broken_data_files(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, _ = data
    proc = run(train_exe, plan, "--inputs", x, "--targets", tmp_path / "nope.npy")
    assert proc.returncode == 2
    assert_one_error_line(proc, "nope.npy")
    (tmp_path / "bad.npy").write_bytes(b"this is not numpy data")
    proc = run(train_exe, plan, "--inputs", x, "--targets", tmp_path / "bad.npy")
    assert proc.returncode == 2
    assert_one_error_line(proc, "bad.npy")
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((SAMPLES, IN_FEATURES), np.float32)))
    proc = run(train_exe, plan, "--inputs", tmp_path / "fortran.npy", "--targets", data[1])
    assert proc.returncode == 2
    assert_one_error_line(proc, "fortran.npy", "Fortran")


def test_unwritable_output_fails_before_training(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, y = data
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--out", tmp_path / "no_such_dir" / "w.safetensors")
    assert proc.returncode == 2
    assert_one_error_line(proc, "no_such_dir")
    assert "step" not in proc.stdout  # no training run was spent
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--out", tmp_path)  # a directory
    assert proc.returncode == 2
    assert_one_error_line(proc, "directory")


def test_usage_errors(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, y = data
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--epoch", 3)
    assert proc.returncode == 2
    assert_one_error_line(proc, "--epoch")
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--batch", 16)
    assert proc.returncode == 2
    assert_one_error_line(proc, "16", "8")
    proc = run(train_exe, plan, "--inputs", x)
    assert proc.returncode == 2
    assert_one_error_line(proc, "--targets")
    proc = run(train_exe, tmp_path / "missing.etp", "--inputs", x, "--targets", y)
    assert proc.returncode == 2
    assert_one_error_line(proc, "missing.etp")
    proc = run(train_exe, "--help")
    assert proc.returncode == 0 and "--inputs" in proc.stdout


@pytest.mark.parametrize("damage,message", [("bitflip", "checksum mismatch"), ("truncate", "truncated"),
                                            ("identifier", "not an edgetune plan"),
                                            ("version", "plan format version 7; this runtime reads version 1")])
def test_damaged_plan_is_a_runtime_error(train_exe, mlp, data, tmp_path, monkeypatch, damage, message):
    from edgetune.compiler import plan_file
    _, prog, plan = mlp
    x, y = data
    raw = bytearray(plan.read_bytes())
    if damage == "bitflip":
        raw[len(raw) // 2] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) - 100]
    elif damage == "identifier":
        raw[4:8] = b"PK\x03\x04"
    else:
        monkeypatch.setattr(plan_file, "FORMAT_VERSION", 7)
        raw = plan_file.build_plan(prog, "cpu")
    (tmp_path / "bad.etp").write_bytes(bytes(raw))
    proc = run(train_exe, tmp_path / "bad.etp", "--inputs", x, "--targets", y)
    assert proc.returncode == 1
    assert_one_error_line(proc, "bad.etp")
    assert message in proc.stderr


def test_nan_data_exits_3_and_keeps_existing_output(train_exe, mlp, tmp_path):
    _, _, plan = mlp
    x, y = _task()
    x[:] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "tuned.safetensors"
    out.write_bytes(b"previous run's weights")
    proc = run(train_exe, plan, "--inputs", tmp_path / "x.npy", "--targets", tmp_path / "y.npy", "--out", out)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert_one_error_line(proc, "step 1")
    assert out.read_bytes() == b"previous run's weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.safetensors", "x.npy", "y.npy"]  # no temp files


# ---- binaries with the plan inside ----------------------------------------------------------------
def test_emitted_binary_trains_without_a_plan_argument(train_exe, mlp, data, tmp_path):
    from safetensors.numpy import load_file
    model, prog, plan = mlp
    x, y = data
    exe = binary.emit_binary(plan.read_bytes(), tmp_path / "train", train_binary=train_exe)
    assert os.access(exe, os.X_OK)
    assert binary.read_embedded_plan(exe) == plan.read_bytes()
    out = tmp_path / "tuned.safetensors"
    proc = run(exe, "--inputs", x, "--targets", y, "--steps", 10, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert set(load_file(str(out))) == set(model.state_dict())
    proc = run(exe, plan, "--inputs", x, "--targets", y)
    assert proc.returncode == 2
    assert_one_error_line(proc, "built in")
    proc = run(exe, "--info")
    assert proc.returncode == 0 and "embedded" in proc.stdout
    # re-emitting from an emitted binary replaces the plan instead of stacking a second one
    again = binary.emit_binary(prog, tmp_path / "train2", train_binary=exe)
    assert binary.read_embedded_plan(again) == prog.plan_bytes()
    assert os.path.getsize(again) == os.path.getsize(exe) - len(plan.read_bytes()) + len(prog.plan_bytes())


def test_emit_binary_layout(tmp_path):
    """The trailer layout, checked without running anything: any ELF file serves as 'executable'."""
    fake_exe = tmp_path / "edgetune-train"
    fake_exe.write_bytes(b"\x7fELF" + b"\0" * 60)
    plan = b"\0\0\0\0ETPL" + b"plan body"
    out = binary.emit_binary(plan, tmp_path / "train", train_binary=fake_exe)
    data = Path(out).read_bytes()
    assert data == fake_exe.read_bytes() + plan + struct.pack("<Q", len(plan)) + b"ETPLEMB1"
    assert os.stat(out).st_mode & 0o100
    assert binary.read_embedded_plan(fake_exe) is None
    with pytest.raises(PlanError, match="not an edgetune plan"):
        binary.emit_binary(b"garbage!", tmp_path / "x", train_binary=fake_exe)
    with pytest.raises(EdgetuneError, match="cannot read"):
        binary.emit_binary(plan, tmp_path / "x", train_binary=tmp_path / "missing-exe")
    not_exe = tmp_path / "notes.txt"
    not_exe.write_text("hello")
    with pytest.raises(EdgetuneError, match="not an executable"):
        binary.emit_binary(plan, tmp_path / "x", train_binary=not_exe)
    with pytest.raises(EdgetuneError, match="does not exist"):
        binary.emit_binary(plan, tmp_path / "missing" / "train", train_binary=fake_exe)
    assert not (tmp_path / "x").exists()


def test_find_train_binary(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGETUNE_TRAIN", str(tmp_path / "nowhere"))
    with pytest.raises(EdgetuneError, match="EDGETUNE_TRAIN"):
        binary.find_train_binary()
    exe = tmp_path / "edgetune-train"
    exe.write_bytes(b"\x7fELF")
    exe.chmod(0o755)
    monkeypatch.setenv("EDGETUNE_TRAIN", str(exe))
    assert binary.find_train_binary() == str(exe)
    monkeypatch.delenv("EDGETUNE_TRAIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(binary, "_package_binaries", lambda: [tmp_path / "no" / "edgetune-train"])
    assert binary.find_train_binary() == shutil.which("edgetune-train") == str(exe)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EdgetuneError, match="not found"):
        binary.find_train_binary()


# ---- hostile files and limits (reliability issue) -------------------------------------------------
def test_fifo_or_device_as_plan_or_data_is_refused_without_blocking(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, y = data
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # a FIFO with no writer blocked open() forever; /dev/zero was read until memory ran out
    proc = run(train_exe, plan, "--inputs", fifo, "--targets", y, timeout=30)
    assert proc.returncode == 2
    assert_one_error_line(proc, str(fifo), "not a regular file")
    proc = run(train_exe, plan, "--inputs", x, "--targets", "/dev/zero", timeout=30)
    assert proc.returncode == 2
    assert_one_error_line(proc, "/dev/zero", "not a regular file")
    for bad_plan in (fifo, "/dev/zero"):
        proc = run(train_exe, bad_plan, "--inputs", x, "--targets", y, timeout=30)
        assert proc.returncode == 1, proc.stderr
        assert_one_error_line(proc, str(bad_plan), "not a regular file")


def test_failed_thread_start_is_an_error_not_a_hang(train_exe, mlp, data):
    _, _, plan = mlp
    x, y = data
    # 4096 threads with 8 MiB stacks do not fit 1 GB of address space: thread creation fails
    # part-way. The half-started pool used to hang forever in pthread_cond_destroy.
    cmd = ['bash', '-c', 'ulimit -v 1000000 && exec "$@"', 'sh', str(train_exe), str(plan), "--inputs", str(x),
           "--targets", str(y), "--steps", "1", "--threads", "4096"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert_one_error_line(proc, "cannot start 4096 threads")
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--threads", 10000)
    assert proc.returncode == 2
    assert_one_error_line(proc, "--threads", "maximum of 4096")


def test_bad_label_late_in_the_file_fails_before_training_naming_the_row(train_exe, mlp, tmp_path):
    _, _, plan = mlp
    x, y = _task()
    y[397] = CLASSES  # the last batch of the epoch
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    proc = run(train_exe, plan, "--inputs", tmp_path / "x.npy", "--targets", tmp_path / "y.npy", "--no-shuffle")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_one_error_line(proc, "y.npy", f"target {CLASSES} at row 397", f"[0, {CLASSES})")
    assert "step" not in proc.stdout


def test_existing_output_keeps_its_permissions_and_stale_temp_files_go(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, y = data
    out = tmp_path / "tuned.safetensors"
    out.write_bytes(b"old")
    out.chmod(0o600)
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process
    stale = tmp_path / f"tuned.safetensors.tmp.{dead.pid}"
    stale.write_bytes(b"left by a killed run")
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out.stat().st_mode & 0o777) == 0o600
    assert not stale.exists()


def test_full_disk_fails_before_training(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    x, y = data
    with full_filesystem(tmp_path) as mnt:
        out = mnt / "tuned.safetensors"
        proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--out", out)
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert_one_error_line(proc, "--out", "not enough space")
        assert "step" not in proc.stdout  # no training run was spent
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]


# ---- signals ------------------------------------------------------------------------------------
def _start_long_run(train_exe, plan, data, out):
    x, y = data
    return subprocess.Popen([str(train_exe), str(plan), "--inputs", str(x), "--targets", str(y), "--epochs", "100000",
                             "--log-every", "1000000", "--threads", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_finishes_the_step_writes_the_weights_and_exits_128_plus_signal(train_exe, mlp, data, tmp_path, sig):
    from safetensors.numpy import load_file
    model, _, plan = mlp
    out = tmp_path / "tuned.safetensors"
    proc = _start_long_run(train_exe, plan, data, out)
    time.sleep(1.0)  # well into the 5,000,000-step run
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    m = re.search(rf"{sig.name}: stopped after step (\d+) of 5000000; writing", stderr)
    assert m and 0 < int(m.group(1)) < 5_000_000, stderr
    assert f"done: {m.group(1)} steps" in stdout
    weights = load_file(out)
    assert set(weights) == set(model.state_dict()) and all(np.isfinite(w).all() for w in weights.values())


def test_a_second_signal_exits_at_once_and_keeps_the_old_output(train_exe, mlp, data, tmp_path):
    _, _, plan = mlp
    out = tmp_path / "tuned.safetensors"
    out.write_bytes(b"the previous run's weights")
    proc = _start_long_run(train_exe, plan, data, out)
    time.sleep(1.0)
    # stopped, both signals are pending together and arrive back to back on SIGCONT
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGTERM, -signal.SIGINT), proc.returncode  # killed by the second one
    assert out.read_bytes() == b"the previous run's weights"
