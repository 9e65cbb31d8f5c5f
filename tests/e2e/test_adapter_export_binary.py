"""Adapter export with no Python: `edgetune-train --adapter-out DIR --merged-out FILE` on a plan
with LoRA / DoRA (PiSSA init, so the export also reads the hidden initial factors) writes the
files `Session.save_adapter` and `Session.state_dict(merged=True)` give.

Checked, for LoRA and DoRA: the plan carries the export table (compiler/plan_file.py
read_export gives back the Program's); the binary's adapter files exist, their JSON is
byte-identical to save_adapter's and their tensors equal (1e-6) those of a Session loaded from the
same plan file and trained on the same batches; the merged weights equal state_dict(merged=True)
and load into the original torch module; --out holds the model's weights without the hidden
export-only buffers; Hugging Face PEFT loads the binary's adapter onto the original base model,
which then computes what the merged model does; a Session built from the plan file exports what
one built from the Program does; a Python checkpoint (without the hidden buffers) resumes in the
binary; SSF, (IA)³ and Channels export as the Session does too. And the refusals: --adapter-out / --merged-out on a plan without
adapters, before any training.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

import edgetune as et
from edgetune.compiler.adapters.export import evaluate
from edgetune.compiler.plan_file import read_export, read_plan_header
from edgetune.runtime import binary

IN, HIDDEN, CLASSES, BATCH, SAMPLES, STEPS = 6, 8, 3, 8, 48, 5


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(IN, HIDDEN)
        self.fc2 = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _base_model() -> Net:
    torch.manual_seed(0)
    return Net()


@pytest.fixture(scope="module")
def train_exe():
    return binary.find_train_binary()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, IN)).astype(np.float32)
    y = (x @ rng.standard_normal((IN, CLASSES))).argmax(1).astype(np.int64)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return d / "x.npy", d / "y.npy", x, y


def _compile(spec):
    model = _base_model()
    x = torch.randn(BATCH, IN)
    y = torch.randint(CLASSES, (BATCH,))
    return et.compile(model, (x,), y, loss="cross_entropy", peft=spec, optimizer=et.optim.Adam(lr=0.01))


@pytest.fixture(scope="module", params=[False, True], ids=["lora", "dora"])
def adapted(request, tmp_path_factory):
    """(program, plan path) for a LoRA or DoRA (PiSSA init) on both layers."""
    prog = _compile(et.peft.LoRA(r=2, alpha=4, targets=["fc1", "fc2"], init="pissa", use_dora=request.param))
    path = tmp_path_factory.mktemp("plan") / "adapted.etp"
    prog.save(path)
    return prog, path


def run(exe, *args, timeout=120):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False)


def _train_session(source, xs, ys) -> et.Session:
    """A cpu Session trained on the binary's --no-shuffle batches."""
    sess = et.Session(source, backend="cpu", threads=1)
    for i in range(STEPS):
        sess.step(xs[i * BATCH:(i + 1) * BATCH], ys[i * BATCH:(i + 1) * BATCH])
    return sess


def _assert_same_tensors(ours: dict, ref: dict, what: str):
    assert list(ours) == list(ref) or set(ours) == set(ref), (what, sorted(ours), sorted(ref))
    for k in ref:
        assert ours[k].shape == ref[k].shape, (what, k)
        assert ours[k].dtype == ref[k].dtype, (what, k)
        np.testing.assert_allclose(ours[k], ref[k], rtol=0, atol=1e-6, err_msg=f"{what}: {k}")


@pytest.fixture(scope="module")
def exported(train_exe, adapted, data, tmp_path_factory):
    """The binary's outputs for `adapted` after STEPS steps in file order."""
    _, plan = adapted
    x, y, _, _ = data
    out = tmp_path_factory.mktemp("binary")
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", STEPS, "--no-shuffle", "--threads", 1,
               "--out", out / "tuned.safetensors", "--adapter-out", out / "adapter",
               "--merged-out", out / "merged.safetensors")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_plan_carries_the_export_table(adapted):
    prog, plan = adapted
    data = plan.read_bytes()
    assert read_plan_header(data)["adapters"] is True
    table = read_export(data)
    assert table is not None
    assert table.as_dict() == prog.graph.adapters.as_dict()
    assert table.hidden  # PiSSA keeps its initial factors for the export


def test_binary_writes_what_save_adapter_writes(exported, adapted, data, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file
    out, proc = exported
    _, plan = adapted
    _, _, xs, ys = data
    adapter = out / "adapter"
    names = ["adapter_config.json", "adapter_model.safetensors", "edgetune_adapter.json",
             "edgetune_adapter.safetensors"]
    assert sorted(p.name for p in adapter.iterdir()) == names
    assert f"wrote {adapter}: {', '.join(names)}" in proc.stdout
    assert f"wrote {out / 'merged.safetensors'}: " in proc.stdout

    sess = _train_session(plan, xs, ys)  # a Session loaded from the same plan file
    assert sess.steps == STEPS
    written = sess.save_adapter(tmp_path / "py")
    assert written == names
    for name in ("adapter_config.json", "edgetune_adapter.json"):
        assert (adapter / name).read_bytes() == (tmp_path / "py" / name).read_bytes(), name
    for name in ("adapter_model.safetensors", "edgetune_adapter.safetensors"):
        _assert_same_tensors(load_file(str(adapter / name)), load_file(str(tmp_path / "py" / name)), name)
        with safe_open(str(adapter / name), "np") as f:
            assert f.metadata() == {"format": "pt", "producer": "edgetune", "steps": str(STEPS)}

    merged = load_file(str(out / "merged.safetensors"))
    _assert_same_tensors(merged, sess.state_dict(merged=True), "merged")
    with safe_open(str(out / "merged.safetensors"), "np") as f:
        assert f.metadata()["steps"] == str(STEPS)

    # --out: the model's weights (adapter params in), not the hidden export-only buffers
    tuned = load_file(str(out / "tuned.safetensors"))
    table = read_export(plan.read_bytes())
    assert not set(table.hidden) & set(tuned)
    _assert_same_tensors(tuned, sess.state_dict(), "tuned")


def test_recipes_on_the_binary_weights_give_its_files(exported, adapted, data, tmp_path):
    """The binary's own trained weights (its checkpoint-free view: --out plus the hidden buffers
    the plan starts with, which never train) through Python's reference evaluator."""
    from safetensors.numpy import load_file
    out, _ = exported
    prog, _ = adapted
    table = prog.graph.adapters
    state = dict(load_file(str(out / "tuned.safetensors")))
    for h in table.hidden:
        state[h] = prog.graph.initial[h]
    peft = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    for key, steps in table.peft_tensors.items():
        np.testing.assert_allclose(peft[key], evaluate(steps, state).astype(np.float32), rtol=0, atol=1e-6,
                                   err_msg=key)
    merged = load_file(str(out / "merged.safetensors"))
    for key, steps in table.merged.items():
        np.testing.assert_allclose(merged[key], evaluate(steps, state).astype(np.float32), rtol=0, atol=1e-6,
                                   err_msg=key)


def test_merged_loads_into_the_base_model_and_peft_agrees(exported, data):
    import peft
    from safetensors.torch import load_file
    out, _ = exported
    _, _, xs, _ = data
    merged_model = Net()
    merged_model.load_state_dict(load_file(str(out / "merged.safetensors")))  # strict: exactly its keys
    base = _base_model()  # the original weights: PiSSA's export applies to them
    peft_model = peft.PeftModel.from_pretrained(base, str(out / "adapter"))
    x = torch.from_numpy(xs[:16])
    with torch.no_grad():
        want = merged_model(x)
        got = peft_model(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(want, _base_model()(x), atol=1e-4)  # training changed something


def test_session_from_plan_exports_as_from_program(adapted, data, tmp_path):
    from safetensors.numpy import load_file
    prog, plan = adapted
    _, _, xs, ys = data
    from_plan = _train_session(plan, xs, ys)
    from_prog = _train_session(prog, xs, ys)
    a, b = from_plan.save_adapter(tmp_path / "a"), from_prog.save_adapter(tmp_path / "b")
    assert a == b
    for name in a:
        if name.endswith(".json"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        else:
            _assert_same_tensors(load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name)), name)
    _assert_same_tensors(from_plan.state_dict(merged=True), from_prog.state_dict(merged=True), "merged")


def test_binary_resumes_a_python_checkpoint_and_exports(train_exe, adapted, data, tmp_path):
    """Session.save_checkpoint leaves the hidden export-only buffers out (as its state_dict does);
    edgetune-train --resume keeps the plan's values for them, and exports what a Session trained
    straight through does."""
    from safetensors.numpy import load_file
    _, plan = adapted
    x, y, xs, ys = data
    sess = et.Session(plan, backend="cpu", threads=1)
    for i in range(2):
        sess.step(xs[i * BATCH:(i + 1) * BATCH], ys[i * BATCH:(i + 1) * BATCH])
    sess.save_checkpoint(tmp_path / "py.ckpt")
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", STEPS, "--no-shuffle", "--threads", 1,
               "--resume", tmp_path / "py.ckpt", "--out", f"{tmp_path / 'adapter'}/")  # --out DIR/ = --adapter-out
    assert proc.returncode == 0, proc.stderr
    assert "resumed: from" in proc.stdout
    ref = _train_session(plan, xs, ys)
    ref.save_adapter(tmp_path / "ref")
    for name in ("adapter_model.safetensors", "edgetune_adapter.safetensors"):
        _assert_same_tensors(load_file(str(tmp_path / "adapter" / name)), load_file(str(tmp_path / "ref" / name)),
                             name)


def _other_spec(kind):
    """SSF / (IA)³ / Channels on both layers."""
    cls = getattr(et.peft, {"ssf": "SSF", "ia3": "IA3", "channels": "Channels"}[kind])
    if kind == "ia3":
        return cls(targets=["fc1", "fc2"], feedforward=["fc2"])
    if kind == "channels":
        return cls(targets=["fc1", "fc2"], fraction=0.5)  # merged by `rows` recipes
    return cls(targets=["fc1", "fc2"])


@pytest.mark.parametrize("kind", ["ssf", "ia3", "channels"])
def test_other_adapter_kinds_export_as_the_session_does(train_exe, kind, data, tmp_path):
    from safetensors.numpy import load_file
    prog = _compile(_other_spec(kind))
    plan = tmp_path / f"{kind}.etp"
    prog.save(plan)
    x, y, xs, ys = data
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", STEPS, "--no-shuffle", "--threads", 1,
               "--adapter-out", tmp_path / "adapter", "--merged-out", tmp_path / "merged.safetensors")
    assert proc.returncode == 0, proc.stderr
    sess = _train_session(plan, xs, ys)
    names = sess.save_adapter(tmp_path / "py")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == names
    for name in names:
        ours, ref = tmp_path / "adapter" / name, tmp_path / "py" / name
        if name.endswith(".json"):
            assert ours.read_bytes() == ref.read_bytes(), name
        else:
            _assert_same_tensors(load_file(str(ours)), load_file(str(ref)), name)
    _assert_same_tensors(load_file(str(tmp_path / "merged.safetensors")), sess.state_dict(merged=True), "merged")


# ---- refusals: before any training ---------------------------------------------------------------
def test_plan_without_adapters_refuses_export_flags(train_exe, data, tmp_path):
    prog = _compile(et.peft.Full())
    plan = tmp_path / "full.etp"
    prog.save(plan)
    assert read_export(plan.read_bytes()) is None
    assert read_plan_header(plan.read_bytes())["adapters"] is False
    x, y, _, _ = data
    for flag, value in (("--adapter-out", tmp_path / "adapter"), ("--merged-out", tmp_path / "m.safetensors")):
        proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", 2, flag, value)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgetune-train: error: "), proc.stderr
        assert f"{flag}: this plan has no adapters" in lines[0]
        assert "step 1/" not in proc.stdout  # nothing trained
        assert not value.exists()


def test_export_paths_checked_before_training(train_exe, adapted, data, tmp_path):
    _, plan = adapted
    x, y, _, _ = data
    (tmp_path / "file").write_text("not a directory")
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", 2, "--adapter-out", tmp_path / "file")
    assert proc.returncode == 2, proc.stderr
    assert "--adapter-out" in proc.stderr and "not a directory" in proc.stderr
    assert "step 1/" not in proc.stdout
    same = tmp_path / "same.safetensors"
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", 2, "--out", same, "--merged-out", same)
    assert proc.returncode == 2, proc.stderr
    assert "--out and --merged-out name the same file" in proc.stderr
    proc = run(train_exe, plan, "--inputs", x, "--targets", y, "--steps", 2, "--merged-out", y)
    assert proc.returncode == 2 and "which this run reads" in proc.stderr, proc.stderr
    info = run(train_exe, plan, "--info")
    assert info.returncode == 0, info.stderr
    assert "adapters: Hugging Face PEFT + edgetune adapter files with --adapter-out DIR" in info.stdout
