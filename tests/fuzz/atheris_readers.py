"""atheris (libFuzzer for Python) harness for the Python-side readers: what Python does with a
file it did not write must end in an edgetune error, never in another exception.

The first input byte picks the reader; the rest is the file:
  0  runtime.checkpoint.Checkpoint.from_bytes (the checkpoint reader Session.load_checkpoint uses)
  1  compiler.plan_file.read_plan_header, with the plan's CRC-32 footer rewritten so mutations
     reach the FlatBuffers tables (Python's FlatBuffers has no verifier)
  2  Session.load_weights on the bytes as a .safetensors file: InputError, and every weight as
     it was when it raises
  3  a native Session on the bytes as a plan (the C++ loader through the Python API), footer
     rewritten as in 1: PlanError / InputError / out of memory only (plans that declare more
     than 256 MiB of memory are skipped: the loader allocates what a plan declares)

Run (pip install atheris; seeds: csrc/fuzz/corpus, replayed by tests/fuzz/test_python_readers.py):
    python tests/fuzz/atheris_readers.py --seed-corpus CORPUS_DIR
    python tests/fuzz/atheris_readers.py -max_total_time=60 -rss_limit_mb=4096 CORPUS_DIR
.ci/fuzz.sh runs it in CI after the libFuzzer harnesses.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
import zlib

import numpy as np

from edgetune.compiler.errors import EdgetuneError, InputError, PlanError



def with_valid_footer(data: bytes) -> bytes:
    """`data` as a plan whose CRC-32 footer matches its body (when it has room for one)."""
    from edgetune.compiler.plan_file import FOOTER, FOOTER_MAGIC
    if len(data) < FOOTER.size + 8:
        return data
    body = data[:-FOOTER.size]
    return body + FOOTER.pack(zlib.crc32(body), FOOTER_MAGIC)


_SESSION = None
_WEIGHTS = None


def _session():
    """A small compiled Session (reference backend: no native module needed for target 2)."""
    global _SESSION, _WEIGHTS
    if _SESSION is None:
        import torch
        import edgetune as et
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        prog = et.compile(model, (torch.randn(2, 4),), torch.randint(2, (2,)), peft=et.peft.BiasOnly())
        _SESSION = et.Session(prog)
        _WEIGHTS = _SESSION.state_dict()
    return _SESSION


def check_checkpoint(data: bytes) -> None:
    from edgetune.runtime.checkpoint import Checkpoint
    try:
        Checkpoint.from_bytes(data, "fuzz")
    except InputError:
        pass


def check_plan_header(data: bytes) -> None:
    from edgetune.compiler.plan_file import read_plan_header
    try:
        read_plan_header(with_valid_footer(data))
    except PlanError:
        pass


def check_load_weights(data: bytes, scratch: str) -> None:
    sess = _session()
    path = os.path.join(scratch, "w.safetensors")
    with open(path, "wb") as f:
        f.write(data)
    try:
        sess.load_weights(path)
    except InputError:
        for k, v in sess.state_dict().items():  # all or nothing
            if not np.array_equal(v, _WEIGHTS[k]):
                raise AssertionError(f"load_weights raised but changed {k}") from None
    else:
        sess.load_state_dict(_WEIGHTS)  # accepted: put the weights back for the next input


# The loader allocates the regions a plan declares (up to 1 TiB each, by design): skip plans that
# declare more than this, as csrc/fuzz/fuzz_plan_loader.cc does, or the fuzzer measures the machine.
MAX_PLAN_REGIONS = 256 << 20


def check_native_plan(data: bytes) -> None:
    import edgetune as et
    from edgetune.compiler.plan_file import read_plan_header
    plan = with_valid_footer(data)
    try:
        header = read_plan_header(plan)
        if header["persistent_bytes"] + header["arena_bytes"] + header["input_bytes"] > MAX_PLAN_REGIONS:
            return
    except PlanError:
        pass  # the native loader must refuse it too: run it
    try:
        et.Session(plan, backend="cpu", threads=1)
    except (PlanError, InputError):
        pass
    except EdgetuneError as e:
        if "out of memory" not in str(e):
            raise


def run_one(data: bytes, scratch: str) -> None:
    if not data:
        return
    target, rest = data[0] % 4, data[1:]
    if target == 0:
        check_checkpoint(rest)
    elif target == 1:
        check_plan_header(rest)
    elif target == 2:
        check_load_weights(rest, scratch)
    else:
        check_native_plan(rest)


def write_seed_corpus(out_dir) -> int:
    """The committed C++ corpora as seeds for each target (a target byte in front); returns how many."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "csrc" / "fuzz"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for kind, targets in (("safetensors", (0, 2)), ("plan_loader", (1, 3))):
        for path in sorted((root / "corpus" / kind).iterdir()):
            body = path.read_bytes()[1:] if kind == "safetensors" else path.read_bytes()  # drop the C++ harness's selector
            for t in targets:
                (out / f"{t}-{kind}-{path.name}").write_bytes(bytes([t]) + body)
                n += 1
    return n


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed-corpus":
        print(f"{write_seed_corpus(sys.argv[2])} seeds in {sys.argv[2]}")
        return
    import atheris
    scratch = tempfile.mkdtemp(prefix="edgetune-atheris-")
    with atheris.instrument_imports():
        import edgetune.compiler.plan_file  # noqa: F401
        import edgetune.runtime.checkpoint  # noqa: F401
        import edgetune.runtime.session  # noqa: F401
    _session()
    atheris.Setup(sys.argv, lambda data: run_one(data, scratch))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
