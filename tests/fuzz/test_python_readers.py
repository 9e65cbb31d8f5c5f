"""The atheris harness's targets (tests/fuzz/atheris_readers.py), replayed without atheris: every
seed of the C++ fuzz corpora and reproducers, and a few thousand seeded mutations of them, through
each Python reader. Each must end in an edgetune error (or succeed), never another exception, and
a refused load_weights changes no weight."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from . import atheris_readers as harness

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(p for d in ("corpus", "reproducers") for p in (ROOT / "csrc" / "fuzz" / d).rglob("*") if p.is_file())


def _mutations(data: bytes, n: int, rnd: random.Random):
    for _ in range(n):
        b = bytearray(data)
        kind = rnd.randrange(4)
        if kind == 0 and b:  # flip a byte
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        elif kind == 1 and b:  # truncate
            del b[rnd.randrange(len(b)):]
        elif kind == 2 and b:  # overwrite with an extreme value
            i = rnd.randrange(len(b))
            b[i:i + 8] = rnd.choice([b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff\xff\xff\xff\xff"])
        else:  # insert bytes
            i = rnd.randrange(len(b) + 1)
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 16)))
        yield bytes(b)


def test_the_seed_corpora_exist():
    assert len(SEEDS) >= 20, SEEDS


@pytest.mark.parametrize("target", range(4), ids=["checkpoint", "plan_header", "load_weights", "native_plan"])
def test_python_readers_end_in_edgetune_errors(target, tmp_path):
    rnd = random.Random(target)
    for seed in SEEDS:
        data = seed.read_bytes()
        # the corpora's files start with a target-selecting byte (safetensors) or are plain files
        bodies = [data, data[1:]]
        for body in bodies:
            harness.run_one(bytes([target]) + body, str(tmp_path))
        for mutated in _mutations(data[1:] if seed.parent.name == "safetensors" else data, 25, rnd):
            harness.run_one(bytes([target]) + mutated, str(tmp_path))


def test_a_real_checkpoint_and_plan_pass_through(tmp_path):
    """The readers accept what edgetune writes (so the harness is not refusing everything)."""
    from edgetune.compiler.plan_file import read_plan_header
    from edgetune.runtime.checkpoint import Checkpoint
    ckpt = ROOT / "csrc" / "fuzz" / "corpus" / "safetensors" / "read_checkpoint"
    assert Checkpoint.from_bytes(ckpt.read_bytes()[1:]).steps > 0
    plan = ROOT / "csrc" / "fuzz" / "corpus" / "plan_loader" / "mlp_sgd.etp"
    assert read_plan_header(plan.read_bytes())["nodes"] > 0
    assert os.path.getsize(plan) > 0
