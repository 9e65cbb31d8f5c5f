"""The command line: the demo trains, `compile` writes parseable IR atomically, mistakes exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgetune.cli import main
from edgetune.compiler.ir_text import parse_graph


def test_demo_trains_and_loss_falls(capsys):
    assert main(["demo", "--steps", "12"]) == 0
    out = capsys.readouterr().out
    assert "LastK(k=3)" in out and "loss fell" in out and "weight-gradient ops" in out


def test_demo_saves_trained_weights(tmp_path):
    from safetensors.numpy import load_file
    path = tmp_path / "trained.safetensors"
    assert main(["demo", "--steps", "8", "--save", str(path)]) == 0
    state = load_file(str(path))
    assert {"conv1.weight", "bn1.running_mean", "fc.weight", "fc.bias"} <= set(state)


def test_demo_runs_on_the_reference_backend_too(capsys):
    assert main(["demo", "--steps", "6", "--backend", "reference"]) == 0
    assert "numpy reference executor" in capsys.readouterr().out


def test_compile_writes_a_plan_that_sessions_load(tmp_path, capsys):
    import edgetune as et
    out = tmp_path / "cnn.etp"
    assert main(["compile", "--peft", "bias", "--batch", "4", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "memory plan" in printed and "arena" in printed
    sess = et.Session(str(out), backend="cpu")
    assert sess.memory["arena_bytes"] > 0


def test_compile_emit_binary_writes_a_runnable_trainer(tmp_path):
    import shutil
    if shutil.which("edgetune-train") is None:
        import pytest
        pytest.skip("edgetune-train is not installed")
    out = tmp_path / "build"
    assert main(["compile", "--peft", "last:2", "--batch", "4", "-o", str(out), "--emit-binary"]) == 0
    binary = out / "train"
    assert (out / "small_cnn.etp").exists() and binary.exists()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 3, 32, 32)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 8))
    run = subprocess.run([str(binary), "--inputs", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"),
                          "--steps", "3", "--out", str(tmp_path / "w.safetensors")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "w.safetensors").exists()


def test_compile_writes_text_ir_that_parses(tmp_path):
    out = tmp_path / "cnn.etir"
    assert main(["compile", "--peft", "select:fc.*", "-o", str(out)]) == 0
    g = parse_graph(out.read_text())
    assert {p.name for p in g.params() if p.trainable} == {"fc.weight", "fc.bias"}


def test_user_mistakes_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "never.etir"
    assert main(["compile", "--peft", "select:nothing.*", "-o", str(out)]) == 2
    assert "matches no parameter" in capsys.readouterr().out
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["compile", "--onnx", str(bad), "-o", str(out)]) == 2
    assert "cannot read ONNX model" in capsys.readouterr().out
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_python_dash_m_entry_point_reports_bad_arguments():
    result = subprocess.run([sys.executable, "-m", "edgetune", "demo", "--peft", "last-k:x"], capture_output=True, text=True)
    assert result.returncode == 2 and "last-k needs an integer" in result.stderr


def test_compile_opt_levels_and_disable_pass(tmp_path, capsys):
    out0, out2 = tmp_path / "o0.etir", tmp_path / "o2.etir"
    assert main(["compile", "--model", "small_cnn", "--eval", "--peft", "bias", "-O0", "-o", str(out0)]) == 0
    assert "optimisation passes" not in capsys.readouterr().out
    assert main(["compile", "--model", "small_cnn", "--eval", "--peft", "bias", "-O2",
                 "--disable-pass", "fuse_elementwise", "-o", str(out2)]) == 0
    report = capsys.readouterr().out
    assert "optimisation passes (-O2)" in report and "fold_batchnorm" in report
    assert "fuse_elementwise" not in report  # disabled: not run, not listed
    text0, text2 = out0.read_text(), out2.read_text()
    assert "batch_norm_infer" in text0 and "batch_norm_infer" not in text2  # folded at -O2
    assert "activation_mask" in text2 and "activation_mask" not in text0
    with pytest.raises(SystemExit) as e:  # argparse: an unknown pass name is a usage error
        main(["compile", "--disable-pass", "fuse_everything"])
    assert e.value.code == 2
