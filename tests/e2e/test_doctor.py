"""`et.check` / `edgetune doctor`: which ops a model uses and which edgetune cannot compile, without
compiling it (issue 14); and `edgetune compile` on an ONNX model with integer and bool inputs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import edgetune as et


class Fine(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.fft.rfft(x, dim=-1).real  # no edgetune op
        return self.head(torch.cat([y, y[:, :1]], -1)[:, :4])


def test_check_reports_a_supported_model():
    report = et.check(Fine(), (torch.randn(2, 3, 8, 8),))
    assert report.ok and report.frontend == "PyTorch" and not report.unsupported
    assert report.source_ops["convolution"] == (1, True)
    assert report.edgetune_ops.get("conv2d") == 1 and report.edgetune_ops.get("linear") == 1
    assert "every op is supported" in str(report)


def test_check_lists_each_unsupported_op_with_its_source_line():
    report = et.check(Unsupported(), (torch.randn(2, 4),))
    assert not report.ok
    assert any(u.startswith("_fft_r2c") and "test_doctor.py" in u for u in report.unsupported), report.unsupported
    assert report.source_ops["_fft_r2c"][1] is False
    assert report.source_ops["linear"] == (1, True)
    text = str(report)
    assert "unsupported op occurrence" in text and "NO" in text


def test_check_takes_keyword_inputs_and_onnx_files(tmp_path):
    class Keywords(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask):
            return (self.emb(input_ids) * attention_mask[..., None]).sum(1)
    ids, mask = torch.randint(0, 10, (2, 5)), torch.ones(2, 5)
    assert et.check(Keywords(), {"input_ids": ids, "attention_mask": mask}).ok
    path = tmp_path / "fine.onnx"
    torch.onnx.export(Fine(), (torch.randn(2, 3, 8, 8),), str(path), dynamo=False)
    report = et.check(str(path), (np.zeros((2, 3, 8, 8), np.float32),))
    assert report.ok and report.frontend == "ONNX" and report.source_ops["Conv"] == (1, True)


def _doctor(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "edgetune", "doctor", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_doctor_cli_exit_codes():
    ok = _doctor("test_doctor:Fine", "--input", "2x3x8x8xf32")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "every op is supported" in ok.stdout
    bad = _doctor("test_doctor:Unsupported", "--input", "2x4xf32")
    assert bad.returncode == 1 and "_fft_r2c" in bad.stdout
    missing = _doctor("test_doctor:Fine")
    assert missing.returncode == 2 and "--input" in missing.stdout
    wrong = _doctor("test_doctor:Fine", "--input", "2x3xfloat")
    assert wrong.returncode == 2 and "SHAPExDTYPE" in wrong.stdout


@pytest.mark.slow
def test_doctor_builds_hugging_face_architectures_from_their_config():
    run = _doctor("hf:gpt2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "every op is supported" in run.stdout
    nope = _doctor("hf:not-a-model-type")
    assert nope.returncode == 2 and "not a Hugging Face model type" in nope.stdout


def test_compile_cli_gives_onnx_int_and_bool_inputs_examples_of_their_type(tmp_path):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 3)

        def forward(self, ids, mask):
            h = self.emb(ids) * mask[..., None].to(torch.float32)
            return self.head(h.sum(1))
    path = tmp_path / "two.onnx"
    torch.onnx.export(TwoInputs(), (torch.randint(0, 10, (2, 5)), torch.ones(2, 5, dtype=torch.bool)), str(path),
                      dynamo=False)
    out = tmp_path / "two.etp"
    run = subprocess.run([sys.executable, "-m", "edgetune", "compile", str(path), "--peft", "full", "-o", str(out),
                          "--batch", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert out.exists()
