"""Checkpoint and resume (the reliability issue): a run killed at any moment — after a step, in
the middle of writing a checkpoint, in the middle of writing --out, by an outside SIGKILL at a
random time — and resumed ends with weights bit-identical to a run that was never stopped.

The model has everything a resumed run must restore exactly: AdamW moments and step count,
BatchNorm running statistics, a dropout counter, a shuffled data order over several epochs with
a partial batch dropped. Checkpoints written by `edgetune-train` load in `Session` and the other
way round (one format: csrc/tools/checkpoint.h, runtime/checkpoint.py). Resuming onto another
plan, other data, another seed, or from a damaged file is refused with exit status 2 and changes
nothing; a full disk fails before training. The update guard is here too: an update that would
write inf/NaN is refused, on both backends.

EDGETUNE_TEST_KILL (csrc/tools/edgetune_train.cc) makes the binary SIGKILL itself at a chosen
point, so the kill points are exact; one test also kills from outside at a random moment.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune.compiler.errors import InputError
from edgetune.runtime import binary
from support import full_filesystem

STEPS = 40  # 12 steps per epoch (100 samples, batch 8, 4 dropped): 3.3 epochs


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(8, 32)
        self.bn = torch.nn.BatchNorm1d(32)
        self.drop = torch.nn.Dropout(0.2)
        self.l2 = torch.nn.Linear(32, 3)

    def forward(self, x):
        return self.l2(self.drop(torch.relu(self.bn(self.l1(x)))))


def _compile(lr=1e-2, seed=0):
    torch.manual_seed(seed)
    model = _Net().train()
    x, y = torch.randn(8, 8), torch.randint(3, (8,))
    return et.compile(model, (x,), y, loss="cross_entropy", peft=et.peft.Full(), optimizer=et.optim.AdamW(lr=lr))


@pytest.fixture(scope="module")
def train_exe():
    return binary.find_train_binary()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(program, plan path, x.npy, y.npy, the uninterrupted run's weights file)."""
    d = tmp_path_factory.mktemp("ckpt")
    prog = _compile()
    plan = d / "p.etp"
    prog.save(plan)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 8)).astype(np.float32)
    y = (x @ rng.standard_normal((8, 3))).argmax(1).astype(np.int64)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    exe = binary.find_train_binary()
    ref = d / "uninterrupted.safetensors"
    proc = _train(exe, plan, d / "x.npy", d / "y.npy", "--out", ref)
    assert proc.returncode == 0, proc.stderr
    return prog, plan, d / "x.npy", d / "y.npy", ref


def _train(exe, plan, x, y, *args, env=None, steps=STEPS):
    cmd = [str(exe), str(plan), "--inputs", str(x), "--targets", str(y), "--steps", str(steps), "--threads", "2",
           "--quiet", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, **(env or {})))


def _same_weights(a, b) -> bool:
    from safetensors.numpy import load_file
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


# ---- kill -9 anywhere, resume, same weights -------------------------------------------------------
KILL_POINTS = ["after-step:1", "after-step:12", "after-step:13", "after-step:29", "after-step:40",
               "checkpoint-write:1", "checkpoint-write:3", "checkpoint-write:9", "out-write"]


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_killed_run_resumes_to_bit_identical_weights(train_exe, setup, tmp_path, kill):
    _, plan, x, y, ref = setup
    out, ckpt = tmp_path / "tuned.safetensors", tmp_path / "run.ckpt"
    args = ("--out", out, "--checkpoint", ckpt, "--checkpoint-every", 4, "--resume", "auto")
    killed = _train(train_exe, plan, x, y, *args, env={"EDGETUNE_TEST_KILL": kill})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert not out.exists()
    # the same command line again: it picks up where the checkpoint left off
    resumed = _train(train_exe, plan, x, y, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert _same_weights(out, ref)
    assert not list(tmp_path.glob("*.tmp.*")), list(tmp_path.iterdir())  # the killed run's temp files are gone


def test_killed_from_outside_at_random_moments_resumes_to_bit_identical_weights(train_exe, setup, tmp_path):
    """SIGKILL from another process, at random times, several times over one run."""
    _, plan, x, y, _ = setup
    steps = 3000  # long enough that the kills land mid-run
    ref = tmp_path / "ref.safetensors"
    assert _train(train_exe, plan, x, y, "--out", ref, steps=steps).returncode == 0
    out, ckpt = tmp_path / "tuned.safetensors", tmp_path / "run.ckpt"
    cmd = [str(train_exe), str(plan), "--inputs", str(x), "--targets", str(y), "--steps", str(steps), "--threads", "2",
           "--quiet", "--out", str(out), "--checkpoint", str(ckpt), "--checkpoint-every", "7", "--resume", "auto"]
    from safetensors import safe_open
    rnd = random.Random(1)
    killed_at = []  # the checkpoint's step after each kill that landed mid-run
    for _ in range(6):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0.03, 0.25))  # a checkpointed run of these steps takes about 0.4 s
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
            if ckpt.exists():
                with safe_open(str(ckpt), "np") as f:
                    killed_at.append(int(f.metadata()["steps"]))
        proc.wait(timeout=60)
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    assert any(0 < s < steps for s in killed_at), killed_at
    assert _same_weights(out, ref)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_a_checkpoint_that_resumes_exactly(train_exe, setup, tmp_path, sig):
    _, plan, x, y, _ = setup
    steps = 200_000
    out, ckpt = tmp_path / "tuned.safetensors", tmp_path / "run.ckpt"
    cmd = [str(train_exe), str(plan), "--inputs", str(x), "--targets", str(y), "--threads", "2", "--quiet",
           "--out", str(out), "--checkpoint", str(ckpt), "--checkpoint-every", "1h"]
    proc = subprocess.Popen([*cmd, "--steps", str(steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert f"writing {ckpt} and {out}" in stderr
    from safetensors import safe_open
    with safe_open(str(ckpt), "np") as f:
        stopped_at = int(f.metadata()["steps"])
    assert 0 < stopped_at < steps
    # the stopped run continued to stopped_at + 25 equals an uninterrupted run of that length
    target = stopped_at + 25
    resumed = subprocess.run([*cmd, "--steps", str(target), "--resume", str(ckpt)], capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    ref = tmp_path / "ref.safetensors"
    assert _train(train_exe, plan, x, y, "--out", ref, steps=target).returncode == 0
    assert _same_weights(out, ref)


def test_resume_at_the_end_only_writes_the_output(train_exe, setup, tmp_path):
    _, plan, x, y, ref = setup
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "tuned.safetensors"
    assert _train(train_exe, plan, x, y, "--checkpoint", ckpt).returncode == 0  # no --out: checkpoint only
    before = ckpt.read_bytes()
    proc = _train(train_exe, plan, x, y, "--resume", ckpt, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert _same_weights(out, ref)
    assert ckpt.read_bytes() == before


def test_resume_auto_without_a_checkpoint_starts_fresh(train_exe, setup, tmp_path):
    _, plan, x, y, ref = setup
    out, ckpt = tmp_path / "tuned.safetensors", tmp_path / "run.ckpt"
    proc = _train(train_exe, plan, x, y, "--out", out, "--checkpoint", ckpt, "--resume", "auto")
    assert proc.returncode == 0, proc.stderr
    assert _same_weights(out, ref) and ckpt.exists()


# ---- what a resume refuses ------------------------------------------------------------------------
@pytest.fixture
def finished_checkpoint(train_exe, setup, tmp_path):
    _, plan, x, y, _ = setup
    ckpt = tmp_path / "run.ckpt"
    assert _train(train_exe, plan, x, y, "--checkpoint", ckpt, steps=10).returncode == 0
    return ckpt


def _refused(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgetune-train: error: --resume"), proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "step" not in proc.stdout


def test_resume_refuses_another_plan(train_exe, setup, finished_checkpoint, tmp_path):
    _, _, x, y, _ = setup
    other = tmp_path / "other.etp"
    _compile(lr=2e-2).save(other)  # same model and shapes, another learning rate
    _refused(_train(train_exe, other, x, y, "--resume", finished_checkpoint), "another plan")


def test_resume_refuses_other_data_or_seed_or_order(train_exe, setup, finished_checkpoint, tmp_path):
    _, plan, x, y, _ = setup
    _refused(_train(train_exe, plan, x, y, "--resume", finished_checkpoint, "--seed", 1), "--seed")
    _refused(_train(train_exe, plan, x, y, "--resume", finished_checkpoint, "--no-shuffle"), "--no-shuffle")
    xs = np.load(x)
    xs[50, 3] += 1.0
    np.save(tmp_path / "x2.npy", xs)
    _refused(_train(train_exe, plan, tmp_path / "x2.npy", y, "--resume", finished_checkpoint), "data files")
    np.save(tmp_path / "x3.npy", np.load(x)[:96])
    np.save(tmp_path / "y3.npy", np.load(y)[:96])
    _refused(_train(train_exe, plan, tmp_path / "x3.npy", tmp_path / "y3.npy", "--resume", finished_checkpoint),
             "number of samples")
    _refused(_train(train_exe, plan, x, y, "--resume", finished_checkpoint, steps=5), "past this run's 5 steps")


@pytest.mark.parametrize("damage", ["flip", "truncate", "weights-file", "empty", "directory"])
def test_resume_refuses_a_damaged_or_foreign_file(train_exe, setup, finished_checkpoint, tmp_path, damage):
    _, plan, x, y, _ = setup
    path = finished_checkpoint
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-5] ^= 0x40
        path.write_bytes(bytes(blob))
        needle = "damaged"
    elif damage == "truncate":
        path.write_bytes(bytes(blob[:-100]))
        needle = "truncated"
    elif damage == "weights-file":
        from safetensors.numpy import save_file
        save_file({"l1.weight": np.zeros((32, 8), np.float32)}, str(path))
        needle = "not an edgetune checkpoint"
    elif damage == "empty":
        path.write_bytes(b"")
        needle = "not a safetensors file"
    else:
        path.unlink()
        path.mkdir()
        needle = "directory"
    _refused(_train(train_exe, plan, x, y, "--resume", path), needle)


def test_resume_missing_file_and_flag_errors(train_exe, setup, tmp_path):
    _, plan, x, y, _ = setup
    _refused(_train(train_exe, plan, x, y, "--resume", tmp_path / "nope.ckpt"), "no such file")
    for args, needle in [(("--checkpoint-every", "5"), "--checkpoint-every needs --checkpoint"),
                         (("--checkpoint", tmp_path / "c", "--checkpoint-every", "5x"), "--checkpoint-every"),
                         (("--checkpoint", tmp_path / "c", "--checkpoint-every", "0"), "--checkpoint-every"),
                         (("--resume", "auto"), "give --checkpoint too"),
                         (("--checkpoint", tmp_path / "same", "--out", tmp_path / "same"), "same file"),
                         (("--checkpoint", x), "which this run reads")]:
        proc = _train(train_exe, plan, x, y, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)


def test_full_disk_for_the_checkpoint_fails_before_training(train_exe, setup, tmp_path):
    _, plan, x, y, _ = setup
    with full_filesystem(tmp_path) as mnt:
        proc = _train(train_exe, plan, x, y, "--checkpoint", mnt / "run.ckpt")
        assert proc.returncode == 2, proc.stderr
        assert "--checkpoint" in proc.stderr and "not enough space" in proc.stderr
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]


# ---- the Python API: same format, both directions ------------------------------------------------
def _batches(x, y, n, start=0):
    xs, ys = np.load(x), np.load(y)
    return [(xs[8 * i:8 * i + 8], ys[8 * i:8 * i + 8]) for i in range(start, start + n)]


def _same_state(a: et.Session, b: et.Session):
    for get in (et.Session.state_dict, et.Session.optimizer_state):
        sa, sb = get(a), get(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_session_checkpoint_round_trip_is_exact(setup, tmp_path, backend):
    prog, _, x, y, _ = setup
    ckpt = tmp_path / "s.ckpt"
    first = et.Session(prog, backend=backend)
    for b in _batches(x, y, 5):
        first.step(*b)
    first.save_checkpoint(ckpt, metadata={"epoch": "0", "index": "40"})
    for b in _batches(x, y, 5, start=5):
        first.step(*b)
    second = et.Session.resume(prog, ckpt, backend=backend)
    assert second.checkpoint_metadata == {"epoch": "0", "index": "40"}
    assert second.steps == 5
    for b in _batches(x, y, 5, start=5):
        second.step(*b)
    _same_state(first, second)


def test_plan_identity_is_the_sha256_of_the_plan_file(setup):
    prog, plan, _, _, _ = setup
    want = hashlib.sha256(plan.read_bytes()).hexdigest()
    assert et.Session(plan, backend="cpu").plan_sha256 == want
    assert et.Session(prog, backend="cpu").plan_sha256 == want  # the in-memory plan is the same bytes
    assert et.Session(prog).plan_sha256 == want


def test_binary_checkpoint_loads_in_a_session_and_continues_like_the_binary(train_exe, setup, tmp_path):
    prog, plan, x, y, _ = setup
    ckpt = tmp_path / "b.ckpt"
    assert _train(train_exe, plan, x, y, "--checkpoint", ckpt, "--no-shuffle", steps=6).returncode == 0
    sess = et.Session(plan, backend="cpu")
    meta = sess.load_checkpoint(ckpt)
    assert meta["run.seed"] == "0" and meta["run.shuffle"] == "0" and sess.steps == 6
    for b in _batches(x, y, 4, start=6):  # --no-shuffle: file order, so the batches are known
        sess.step(*b)
    out = tmp_path / "b.safetensors"
    assert _train(train_exe, plan, x, y, "--resume", ckpt, "--no-shuffle", "--out", out, steps=10).returncode == 0
    from safetensors.numpy import load_file
    binary_weights = load_file(str(out))
    for k, v in sess.state_dict().items():
        np.testing.assert_array_equal(v, binary_weights[k], err_msg=k)


def test_session_checkpoint_resumes_in_the_binary(train_exe, setup, tmp_path):
    prog, plan, x, y, _ = setup
    ckpt = tmp_path / "s.ckpt"
    sess = et.Session(prog, backend="cpu")
    for b in _batches(x, y, 3):
        sess.step(*b)
    sess.save_checkpoint(ckpt)
    out = tmp_path / "b.safetensors"
    proc = _train(train_exe, plan, x, y, "--resume", ckpt, "--no-shuffle", "--out", out, steps=7)
    assert proc.returncode == 0, proc.stderr
    for b in _batches(x, y, 4, start=3):  # the binary continues at step 3 of its own (file) order
        sess.step(*b)
    from safetensors.numpy import load_file
    binary_weights = load_file(str(out))
    for k, v in sess.state_dict().items():
        np.testing.assert_array_equal(v, binary_weights[k], err_msg=k)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_session_refuses_a_foreign_or_damaged_checkpoint_and_changes_nothing(setup, tmp_path, backend):
    prog, _, x, y, _ = setup
    other = et.Session(_compile(lr=2e-2), backend=backend)
    other.step(*_batches(x, y, 1)[0])
    foreign = tmp_path / "other.ckpt"
    other.save_checkpoint(foreign)
    sess = et.Session(prog, backend=backend)
    sess.step(*_batches(x, y, 1)[0])
    before_w, before_s = sess.state_dict(), sess.optimizer_state()
    with pytest.raises(InputError, match="another plan"):
        sess.load_checkpoint(foreign)
    good = tmp_path / "good.ckpt"
    sess.save_checkpoint(good)
    blob = bytearray(good.read_bytes())
    blob[-3] ^= 1
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(blob))
    with pytest.raises(InputError, match="damaged"):
        sess.load_checkpoint(bad)
    with pytest.raises(InputError, match="no such file"):
        sess.load_checkpoint(tmp_path / "missing.ckpt")
    for k, v in sess.state_dict().items():
        np.testing.assert_array_equal(v, before_w[k], err_msg=k)
    for k, v in sess.optimizer_state().items():
        np.testing.assert_array_equal(v, before_s[k], err_msg=k)


def test_python_writes_remove_stale_temp_files_and_keep_permissions(setup, tmp_path):
    prog, _, _, _, _ = setup
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "s.ckpt"
    stale = tmp_path / f"s.ckpt.tmp.{dead.pid}"
    stale.write_bytes(b"left by a killed writer")
    path.write_bytes(b"old")
    path.chmod(0o600)
    et.Session(prog).save_checkpoint(path)
    assert not stale.exists()
    assert (path.stat().st_mode & 0o777) == 0o600


# ---- the update guard -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_an_update_that_would_overflow_is_refused_and_writes_no_inf(backend):
    """A finite loss whose gradient squared overflows float32 in AdamW's second moment."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    x, y = torch.randn(4, 4), torch.randn(4, 2)
    prog = et.compile(model, (x,), y, loss="mse", peft=et.peft.Full(), optimizer=et.optim.AdamW(lr=1e-3))
    sess = et.Session(prog, backend=backend)
    before = sess.state_dict()
    with pytest.raises(InputError, match="inf or NaN"):
        sess.step(x.numpy() * 1e19, y.numpy())
    after = {**sess.state_dict(), **sess.optimizer_state()}
    assert all(np.isfinite(v).all() for v in after.values())
    if backend == "reference":  # the functional executor refuses the whole step
        for k, v in sess.state_dict().items():
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    sess.step(x.numpy(), y.numpy())  # and training goes on
