"""Programs with several model inputs end to end: token ids (int64) + an attention mask (bool, or
int64), through every way a program runs.

- `Session.step` / `forward` / `profile` on "reference" and "cpu", positionally and by the
  program's input names, trained 3 steps against PyTorch;
- the plan file: a two-input program with a bool input saves, loads and trains the same;
- `edgetune-train` with `--inputs ids.npy,mask.npy` (the plan's order) and
  `--inputs attention_mask=mask.npy,input_ids=ids.npy` (by name, any order): the same weights as
  `Session.step` on the same batches in the same order (--no-shuffle, and the shuffled order
  recomputed here from shuffle.h's definition: every input and the targets get one permutation);
  a binary from `emit_binary`; `--info`;
- mistakes: wrong number of files, unknown / duplicate / missing names, sample counts that
  disagree, the wrong dtype, a mask of the wrong shape: one error line, exit 2, no training.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

import edgetune as et
from edgetune.compiler.errors import InputError
from edgetune.runtime import binary

VOCAB, DIM, CLASSES, BATCH, SEQ, SAMPLES = 24, 8, 3, 4, 6, 32  # 8 steps per epoch
LR, MOMENTUM = 0.1, 0.9


class MaskedMeanClassifier(nn.Module):
    """Embedding, mean over the tokens the mask keeps, a small MLP head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.hidden = nn.Linear(DIM, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)                                   # [B, T, D]
        m = attention_mask.unsqueeze(-1).to(h.dtype)              # [B, T, 1]
        pooled = (h * m).sum(1) / m.sum(1)                        # every row keeps >= 1 token
        return self.head(torch.relu(self.hidden(pooled)))


def make_data(n=SAMPLES, seed=0, mask_dtype=np.bool_):
    """Padded sequences: length 1..SEQ, ids 0 (padding) past it; the class is the first token's
    id mod CLASSES (learnable from the pooled embedding)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, SEQ + 1, n)
    mask = np.arange(SEQ)[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(1, VOCAB, (n, SEQ)), 0).astype(np.int64)
    y = (ids[:, 0] % CLASSES).astype(np.int64)
    return ids, mask.astype(mask_dtype), y


@functools.lru_cache(maxsize=None)  # torch.export takes seconds: one program per mask dtype and process
def build(mask_dtype=np.bool_, seed=0):
    """(model, program); the tests copy the model before training it and never change the program."""
    torch.manual_seed(seed)
    model = MaskedMeanClassifier()
    ids, mask, y = make_data(BATCH, seed=1, mask_dtype=mask_dtype)
    prog = et.compile(model, (torch.from_numpy(ids), torch.from_numpy(mask)), torch.from_numpy(y),
                      loss="cross_entropy", peft=et.peft.Full(), optimizer=et.optim.SGD(lr=LR, momentum=MOMENTUM))
    return model, prog


@pytest.fixture(scope="module")
def compiled():
    return build()


@pytest.fixture(scope="module")
def plan_path(compiled, tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "masked.etp"
    compiled[1].save(path)
    return path


def batches(ids, mask, y, order=None, steps=None):
    order = np.arange(len(ids)) if order is None else np.asarray(order)
    n = len(order) // BATCH if steps is None else steps
    for i in range(n):
        rows = order[i * BATCH:(i + 1) * BATCH]
        yield ids[rows], mask[rows], y[rows]


def torch_reference(model, data):
    """PyTorch eager training on `data` (batches); returns (losses, state_dict as numpy)."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for ids, mask, y in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.from_numpy(ids), torch.from_numpy(mask)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}


def assert_weights_close(ours, ref, rtol=1e-4, atol=1e-5):
    assert set(ours) == set(ref)
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=rtol, atol=atol, err_msg=name)


# ---- Session: both backends, positional and by name ---------------------------------------------------
@pytest.mark.parametrize("mask_dtype", [np.bool_, np.int64], ids=["bool_mask", "int64_mask"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_three_steps_match_pytorch(backend, mask_dtype):
    model, prog = build(mask_dtype)
    assert prog.model_inputs == ["input_ids", "attention_mask"]
    ids, mask, y = make_data(mask_dtype=mask_dtype)
    data = list(batches(ids, mask, y, steps=3))
    ref_losses, ref_state = torch_reference(model, data)
    sess = et.Session(prog, backend=backend)
    assert sess.input_names == ["input_ids", "attention_mask", "target"]
    assert sess.model_input_names == ["input_ids", "attention_mask"]
    losses = [sess.step(*batch) for batch in data]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert_weights_close(sess.state_dict(), ref_state)
    # forward under the trained weights, positionally and by name, torch tensors or numpy
    with torch.no_grad():
        trained = copy.deepcopy(model)
        trained.load_state_dict({k: torch.from_numpy(v) for k, v in sess.state_dict().items()})
        want = trained(torch.from_numpy(ids[:BATCH]), torch.from_numpy(mask[:BATCH])).numpy()
    np.testing.assert_allclose(sess.forward(ids[:BATCH], mask[:BATCH]), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sess.forward(attention_mask=torch.from_numpy(mask[:BATCH]),
                                            input_ids=torch.from_numpy(ids[:BATCH])), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_keyword_step_equals_positional_step(compiled, backend):
    _, prog = compiled
    ids, mask, y = make_data()
    a, b, c = (et.Session(prog, backend=backend) for _ in range(3))
    for bi, bm, by in batches(ids, mask, y, steps=3):
        la = a.step(bi, bm, by)
        lb = b.step(input_ids=bi, attention_mask=bm, target=by)
        lc = c.step(bi, target=by, attention_mask=bm)  # positional first, the rest by name
        assert la == lb == lc
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value, err_msg=name)
        np.testing.assert_array_equal(c.state_dict()[name], value, err_msg=name)
    assert a.steps == b.steps == c.steps == 3


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_keyword_mistakes_name_the_inputs(compiled, backend):
    _, prog = compiled
    ids, mask, y = make_data(BATCH)
    sess = et.Session(prog, backend=backend)
    with pytest.raises(InputError, match=r"missing input\(s\) \['attention_mask'\]; the program's inputs are "
                                         r"input_ids, attention_mask, target"):
        sess.step(input_ids=ids, target=y)
    with pytest.raises(InputError, match=r"unknown input name\(s\) \['mask'\]"):
        sess.step(input_ids=ids, mask=mask, target=y)
    with pytest.raises(InputError, match=r"\['input_ids'\] given both by position and by name"):
        sess.step(ids, input_ids=ids, attention_mask=mask, target=y)
    with pytest.raises(InputError, match=r"forward takes no target|forward\(\) takes no target"):
        sess.forward(input_ids=ids, attention_mask=mask, target=y)
    with pytest.raises(InputError, match=r"expected 3 arrays \(input_ids, attention_mask, target\), got 2"):
        sess.step(ids, mask)
    with pytest.raises(InputError, match=r"expected 3 arrays .*got 4"):
        sess.step(ids, mask, y, y)
    # the dtype of each input is checked against its spec, by name
    with pytest.raises(InputError, match=r"input 'attention_mask' has dtype float32, the program expects bool"):
        sess.step(ids, mask.astype(np.float32), y)
    with pytest.raises(InputError, match=r"input 'input_ids' has shape \[4, 5\]"):
        sess.step(input_ids=ids[:, :5], attention_mask=mask, target=y)
    assert sess.steps == 0  # nothing ran


def test_profile_takes_several_inputs_by_position_and_by_name(compiled):
    _, prog = compiled
    ids, mask, y = make_data(BATCH)
    sess = et.Session(prog, backend="cpu", threads=1)
    report = sess.profile(2, ids, mask, y)
    assert report["nodes"] and "forward" in report["sections"]
    report = sess.profile(2, input_ids=ids, attention_mask=mask, target=y)
    assert report["nodes"] and sess.steps == 4
    with pytest.raises(InputError, match="missing input"):
        sess.profile(1, input_ids=ids, target=y)
    assert sess.steps == 4
    with pytest.raises(InputError, match="needs backend='cpu'"):
        et.Session(prog).profile(1, ids, mask, y)


# ---- the plan file -------------------------------------------------------------------------------------
def test_plan_file_round_trip_with_a_bool_input(compiled, plan_path):
    from edgetune.compiler.plan_file import read_plan_header
    _, prog = compiled
    header = read_plan_header(plan_path.read_bytes())
    assert [name for name, _ in header["inputs"]] == ["input_ids", "attention_mask", "target"]
    from_file = et.Session(str(plan_path), backend="cpu", threads=1)
    from_prog = et.Session(prog, backend="cpu", threads=1)
    ref = et.Session(prog)
    assert from_file.input_names == from_prog.input_names == ref.input_names
    native_specs = dict((n, (d, s)) for n, d, s in from_file._impl.input_specs)
    assert native_specs["attention_mask"] == ("bool", (BATCH, SEQ))
    assert native_specs["input_ids"] == ("i64", (BATCH, SEQ))
    ids, mask, y = make_data()
    for bi, bm, by in batches(ids, mask, y, steps=3):
        lf = from_file.step(input_ids=bi, attention_mask=bm, target=by)
        lp = from_prog.step(bi, bm, by)
        lr = ref.step(bi, bm, by)
        assert lf == lp
        assert lf == pytest.approx(lr, rel=1e-5, abs=1e-6)
    for name, value in from_prog.state_dict().items():
        np.testing.assert_array_equal(from_file.state_dict()[name], value, err_msg=name)
    assert_weights_close(from_file.state_dict(), ref.state_dict(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(from_file.forward(ids[:BATCH], mask[:BATCH]),
                                  from_prog.forward(ids[:BATCH], mask[:BATCH]))


# ---- edgetune-train --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_exe():
    return binary.find_train_binary()


@pytest.fixture
def files(tmp_path):
    ids, mask, y = make_data()
    paths = {"ids": tmp_path / "ids.npy", "mask": tmp_path / "mask.npy", "y": tmp_path / "y.npy"}
    np.save(paths["ids"], ids)
    np.save(paths["mask"], mask)
    np.save(paths["y"], y)
    return paths


def run(exe, *args, timeout=120):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False)


STEP_LINE = re.compile(r"^step (\d+)/(\d+)  epoch (\d+)  loss (\S+)  ms/step (\S+)$")


def losses_of(stdout: str) -> list[float]:
    return [float(m.group(4)) for line in stdout.splitlines() if (m := STEP_LINE.match(line))]


def assert_one_error_line(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgetune-train: error: "), proc.stderr
    for n in needles:
        assert str(n) in lines[0], (n, proc.stderr)
    assert "step 1/" not in proc.stdout  # no training was spent


def load_weights(path):
    from safetensors.numpy import load_file
    return load_file(str(path))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """csrc/tools/shuffle.h's epoch order, from its definition."""
    m64 = (1 << 64) - 1

    def mix64(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        return z ^ (z >> 31)

    state = mix64((mix64(seed) + epoch) & m64)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        threshold = ((1 << 64) - bound) % bound
        while True:
            state = (state + 0x9E3779B97F4A7C15) & m64
            r = mix64(state)
            if r >= threshold:
                break
        j = r % bound
        order[i], order[j] = order[j], order[i]
    return order


def test_positional_and_named_inputs_train_like_session_step(train_exe, compiled, plan_path, files, tmp_path):
    _, prog = compiled
    steps = 6
    outs = {}
    spellings = {
        "list": ["--inputs", f"{files['ids']},{files['mask']}"],
        "named": ["--inputs", f"attention_mask={files['mask']},input_ids={files['ids']}"],
        "repeated": ["--inputs", files["ids"], "--inputs", files["mask"]],
        "named_split": ["--inputs", f"input_ids={files['ids']}", "--inputs=attention_mask=" + str(files["mask"])],
    }
    for key, flags in spellings.items():
        outs[key] = tmp_path / f"{key}.safetensors"
        proc = run(train_exe, plan_path, *flags, "--targets", files["y"], "--steps", steps, "--no-shuffle",
                   "--threads", 1, "--log-every", 1, "--out", outs[key])
        assert proc.returncode == 0, (key, proc.stderr)
        assert f"ids.npy -> input_ids, {files['mask']} -> attention_mask" in proc.stdout, proc.stdout
        outs[key] = (losses_of(proc.stdout), load_weights(outs[key]))
    base_losses, base = outs["list"]
    for key, (losses, weights) in outs.items():
        assert losses == base_losses, key
        for name in base:
            np.testing.assert_array_equal(weights[name], base[name], err_msg=f"{key}: {name}")
    # the Python API on the same batches in the same order: cpu bit for bit, the reference closely
    ids, mask, y = (np.load(files[k]) for k in ("ids", "mask", "y"))
    cpu = et.Session(str(plan_path), backend="cpu", threads=1)
    ref = et.Session(prog)
    cpu_losses = [cpu.step(input_ids=bi, attention_mask=bm, target=by)
                  for bi, bm, by in batches(ids, mask, y, steps=steps)]
    ref_losses = [ref.step(*batch) for batch in batches(ids, mask, y, steps=steps)]
    np.testing.assert_allclose(base_losses, cpu_losses, rtol=1e-3, atol=1e-4)  # printed with 4 decimals
    for name, value in cpu.state_dict().items():
        np.testing.assert_array_equal(base[name], value, err_msg=name)
    np.testing.assert_allclose(base_losses, ref_losses, rtol=1e-3, atol=1e-4)
    assert_weights_close(base, ref.state_dict(), rtol=1e-4, atol=1e-5)


def test_shuffling_applies_one_permutation_to_every_input(train_exe, plan_path, files, tmp_path):
    """Two shuffled epochs: the Session fed with shuffle.h's order ends with the same weights, which
    it could not if ids, mask and targets were permuted differently."""
    seed, epochs = 11, 2
    out = tmp_path / "shuffled.safetensors"
    proc = run(train_exe, plan_path, "--inputs", f"input_ids={files['ids']},attention_mask={files['mask']}",
               "--targets", files["y"], "--epochs", epochs, "--seed", seed, "--threads", 1, "--out", out)
    assert proc.returncode == 0, proc.stderr
    ids, mask, y = (np.load(files[k]) for k in ("ids", "mask", "y"))
    sess = et.Session(str(plan_path), backend="cpu", threads=1)
    for epoch in range(epochs):
        order = epoch_order(SAMPLES, seed, epoch)
        assert order != list(range(SAMPLES))
        for batch in batches(ids, mask, y, order=order):
            sess.step(*batch)
    weights = load_weights(out)
    for name, value in sess.state_dict().items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)


def test_resume_with_the_inputs_named_in_another_order(train_exe, plan_path, files, tmp_path):
    """A run killed after step 5 (checkpoint at step 4) resumed with the files given by name in the
    other order: the checkpoint's data fingerprint is of the inputs in the plan's order, so it is the
    same run, and it ends bit-identical to one never stopped."""
    import os
    ids, mask, y = files["ids"], files["mask"], files["y"]
    common = ["--targets", y, "--steps", 12, "--seed", 3, "--threads", 1, "--quiet"]
    whole = tmp_path / "whole.safetensors"
    proc = run(train_exe, plan_path, "--inputs", f"{ids},{mask}", *common, "--out", whole)
    assert proc.returncode == 0, proc.stderr
    ckpt, resumed = tmp_path / "run.ckpt", tmp_path / "resumed.safetensors"
    killed = subprocess.run([str(train_exe), str(plan_path), "--inputs", f"{ids},{mask}", *map(str, common),
                             "--checkpoint", str(ckpt), "--checkpoint-every", "4", "--out", str(resumed)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "EDGETUNE_TEST_KILL": "after-step:5"})
    assert killed.returncode == -9, killed.stderr
    proc = run(train_exe, plan_path, "--inputs", f"attention_mask={mask},input_ids={ids}", *common,
               "--checkpoint", ckpt, "--resume", "auto", "--out", resumed)
    assert proc.returncode == 0, proc.stderr
    assert resumed.read_bytes() == whole.read_bytes()


def test_info_lists_every_input(train_exe, plan_path):
    proc = run(train_exe, plan_path, "--info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"input_ids\s+i64\[4,6\]\s+model input 1 of 2 \(--inputs\): \.npy '<i8' \[N,6\]", out), out
    assert re.search(r"attention_mask\s+bool\[4,6\]\s+model input 2 of 2 \(--inputs\): \.npy '\|b1' \[N,6\]", out), out
    assert re.search(r"target\s+i64\[4\]\s+target \(--targets\)", out), out
    assert "--inputs input_ids=FILE.npy,attention_mask=FILE.npy" in out


def test_emitted_binary_takes_several_inputs(train_exe, plan_path, files, tmp_path):
    exe = binary.emit_binary(plan_path.read_bytes(), tmp_path / "train", train_binary=train_exe)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    proc = run(exe, "--inputs", f"{files['ids']},{files['mask']}", "--targets", files["y"], "--steps", 4,
               "--no-shuffle", "--threads", 1, "--out", a)
    assert proc.returncode == 0, proc.stderr
    proc = run(train_exe, plan_path, "--inputs", f"attention_mask={files['mask']},input_ids={files['ids']}",
               "--targets", files["y"], "--steps", 4, "--no-shuffle", "--threads", 1, "--out", b)
    assert proc.returncode == 0, proc.stderr
    wa, wb = load_weights(a), load_weights(b)
    for name in wa:
        np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
    proc = run(exe, "--info")
    assert proc.returncode == 0 and "attention_mask" in proc.stdout and "embedded" in proc.stdout
    proc = run(exe, "--inputs", files["ids"], "--targets", files["y"])
    assert_one_error_line(proc, "the plan takes 2 model inputs (input_ids, attention_mask), got 1")


def test_wrong_number_of_files(train_exe, plan_path, files):
    ids, mask, y = files["ids"], files["mask"], files["y"]
    proc = run(train_exe, plan_path, "--inputs", ids, "--targets", y)
    assert_one_error_line(proc, "the plan takes 2 model inputs (input_ids, attention_mask), got 1 --inputs file",
                          "--inputs input_ids=FILE,attention_mask=FILE")
    proc = run(train_exe, plan_path, "--inputs", f"{ids},{mask},{y}", "--targets", y)
    assert_one_error_line(proc, "got 3 --inputs files")
    proc = run(train_exe, plan_path, "--inputs", f"{ids},,{mask}", "--targets", y)
    assert_one_error_line(proc, "--inputs: empty file name")
    proc = run(train_exe, plan_path, "--inputs", f"{ids},{mask}")
    assert_one_error_line(proc, "--targets")


def test_names_that_do_not_fit_the_plan(train_exe, plan_path, files):
    ids, mask, y = files["ids"], files["mask"], files["y"]
    proc = run(train_exe, plan_path, "--inputs", f"input_ids={ids},mask={mask}", "--targets", y)
    assert_one_error_line(proc, "no model input 'mask'", "its model inputs: input_ids, attention_mask")
    proc = run(train_exe, plan_path, "--inputs", f"input_ids={ids},target={y}", "--targets", y)
    assert_one_error_line(proc, "'target' is the plan's target")
    proc = run(train_exe, plan_path, "--inputs", f"input_ids={ids},input_ids={mask}", "--targets", y)
    assert_one_error_line(proc, "model input 'input_ids' is given twice")
    proc = run(train_exe, plan_path, "--inputs", f"input_ids={ids}", "--targets", y)
    assert_one_error_line(proc, "no file for model input 'attention_mask'")
    proc = run(train_exe, plan_path, "--inputs", f"input_ids={ids},{mask}", "--targets", y)
    assert_one_error_line(proc, "name every file (NAME=FILE) or none")


def test_sample_counts_must_agree(train_exe, plan_path, files, tmp_path):
    _, mask, _ = make_data()
    np.save(tmp_path / "mask_short.npy", mask[:20])
    proc = run(train_exe, plan_path, "--inputs", f"{files['ids']},{tmp_path / 'mask_short.npy'}", "--targets",
               files["y"])
    assert_one_error_line(proc, "disagree on the number of samples", "ids.npy ('input_ids') has 32",
                          "mask_short.npy ('attention_mask') has 20")
    np.save(tmp_path / "y_long.npy", np.zeros(40, np.int64))
    proc = run(train_exe, plan_path, "--inputs", f"{files['ids']},{files['mask']}", "--targets",
               tmp_path / "y_long.npy")
    assert_one_error_line(proc, "y_long.npy ('target') has 40")


def test_dtype_and_shape_checked_per_input(train_exe, plan_path, files, tmp_path):
    ids, mask, y = make_data()
    np.save(tmp_path / "mask_i64.npy", mask.astype(np.int64))
    proc = run(train_exe, plan_path, "--inputs", f"{files['ids']},{tmp_path / 'mask_i64.npy'}", "--targets",
               files["y"])
    assert_one_error_line(proc, "mask_i64.npy: holds i64 data ('<i8'), but plan input 'attention_mask' is bool "
                                "('|b1')", "astype(bool)")
    np.save(tmp_path / "ids_f32.npy", ids.astype(np.float32))
    proc = run(train_exe, plan_path, "--inputs", f"attention_mask={files['mask']},input_ids={tmp_path / 'ids_f32.npy'}",
               "--targets", files["y"])
    assert_one_error_line(proc, "ids_f32.npy: holds f32 data ('<f4'), but plan input 'input_ids' is i64 ('<i8')")
    # the files swapped: the mask where the ids go
    proc = run(train_exe, plan_path, "--inputs", f"{files['mask']},{files['ids']}", "--targets", files["y"])
    assert_one_error_line(proc, "mask.npy: holds bool data ('|b1'), but plan input 'input_ids' is i64")
    np.save(tmp_path / "mask_wide.npy", np.ones((SAMPLES, SEQ + 1), bool))
    proc = run(train_exe, plan_path, "--inputs", f"{files['ids']},{tmp_path / 'mask_wide.npy'}", "--targets",
               files["y"])
    assert_one_error_line(proc, "mask_wide.npy", "plan input 'attention_mask'", "[7]", "[6]")
    # '|b1' bytes other than 0/1 (not what numpy writes, but what a careless writer can)
    junk = np.zeros((SAMPLES, SEQ), np.uint8)
    junk[:, 0], junk[5, 3] = 1, 9
    np.save(tmp_path / "mask_junk.npy", junk.view(np.bool_))
    proc = run(train_exe, plan_path, "--inputs", f"{files['ids']},{tmp_path / 'mask_junk.npy'}", "--targets",
               files["y"])
    assert_one_error_line(proc, "mask_junk.npy: byte 9 at flat index 33 is not a bool", "'attention_mask'")
    proc = run(train_exe, plan_path, "--inputs", f"{files['ids']},{tmp_path / 'nope.npy'}", "--targets", files["y"])
    assert_one_error_line(proc, "nope.npy: no such file", "(model input 'attention_mask')")
