"""Self-contained training binaries: the `edgetune-train` executable with a plan inside.

`emit_binary(plan_bytes, "train")` writes `train`, which runs on the device with no plan file
and no Python: `./train --inputs x.npy --targets y.npy --out tuned.safetensors` (a model with
several inputs takes one file each: `--inputs ids.npy,mask.npy`, or by the plan's input names,
`--inputs input_ids=ids.npy,attention_mask=mask.npy`). The layout is
the plain executable with a trailer appended (the reader is csrc/tools/embedded_plan.cc; the two
must agree):

    [edgetune-train executable][plan bytes][u64 little-endian plan size][b"ETPLEMB1"]

Appending keeps the ELF valid (the loader ignores bytes past the last segment) and needs no
linker, objcopy or compiler on the host — so emitting for another architecture is just a matter
of passing that architecture's edgetune-train as `train_binary` (e.g. an aarch64 build for a
Raspberry Pi).

`find_train_binary()` locates the executable: $EDGETUNE_TRAIN, then the copy installed inside
the package (edgetune/bin/edgetune-train), then `edgetune-train` on PATH.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from ..compiler.errors import EdgetuneError, PlanError
from ..compiler.files import write_bytes_atomic

MAGIC = b"ETPLEMB1"
TRAILER = struct.Struct("<Q8s")  # plan size, magic
PLAN_IDENTIFIER = b"ETPL"  # FlatBuffers file identifier at bytes 4..8 of every plan
ENV_VAR = "EDGETUNE_TRAIN"
BINARY_NAME = "edgetune-train"

# Executable formats we know how to append to: ELF (Linux), Mach-O (macOS, 32/64-bit, both
# byte orders; a code-signed Mach-O must be re-signed after appending).
_EXE_MAGICS = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xfe\xed\xfa\xce")


def _package_binaries() -> list[Path]:
    """Where `pip install` puts edgetune-train inside the package (csrc/CMakeLists.txt installs
    it to edgetune/bin/): next to the package's __init__.py for a regular install; next to the
    compiled `_native` module for an editable one, whose Python files stay in the source tree."""
    import importlib.util

    dirs = [Path(importlib.util.find_spec("edgetune").origin).resolve().parent]
    try:
        spec = importlib.util.find_spec("edgetune._native")
        if spec is not None and spec.origin:
            dirs.append(Path(spec.origin).resolve().parent)
    except (ImportError, ValueError):
        pass
    out = []
    for d in dirs:
        if d / "bin" / BINARY_NAME not in out:
            out.append(d / "bin" / BINARY_NAME)
    return out


def _is_executable(path) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_train_binary() -> str:
    """The path of the edgetune-train executable, or an EdgetuneError saying where it looked."""
    env = os.environ.get(ENV_VAR)
    if env:
        if _is_executable(env):
            return env
        raise EdgetuneError(f"{ENV_VAR}={env} is not an executable file; point it at a built edgetune-train "
                            f"(e.g. build/<dir>/csrc/edgetune-train) or unset it")
    searched = []
    for packaged in _package_binaries():
        searched.append(str(packaged))
        if _is_executable(packaged):
            return str(packaged)
    on_path = shutil.which(BINARY_NAME)
    searched.append(f"{BINARY_NAME} on PATH")
    if on_path:
        return on_path
    raise EdgetuneError(
        f"the {BINARY_NAME} executable was not found (looked at {', '.join(searched)}); reinstall edgetune with "
        f"`pip install .` (which builds and bundles it), or build it with `cmake -S . -B build/cpp && cmake --build "
        f"build/cpp` and set {ENV_VAR}=build/cpp/csrc/{BINARY_NAME}")


def split_embedded(data: bytes) -> tuple[bytes, bytes | None]:
    """(executable, plan) of a file's bytes; plan is None when it carries no trailer."""
    if len(data) < TRAILER.size:
        return data, None
    size, magic = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    if magic != MAGIC:
        return data, None
    if size == 0 or size > len(data) - TRAILER.size:
        raise PlanError(f"damaged embedded-plan trailer: it claims {size} plan bytes in a file of {len(data)}")
    end = len(data) - TRAILER.size
    return data[:end - size], data[end - size:end]


def read_embedded_plan(path) -> bytes | None:
    """The plan inside a binary written by emit_binary, or None for a plain executable."""
    with open(path, "rb") as f:
        return split_embedded(f.read())[1]


def _plan_from(plan) -> bytes:
    if hasattr(plan, "plan_bytes") and callable(plan.plan_bytes):  # an et.Program
        plan = plan.plan_bytes()
    if isinstance(plan, (bytearray, memoryview)):
        plan = bytes(plan)
    if not isinstance(plan, bytes):
        raise PlanError(f"emit_binary needs the plan as bytes (Program.plan_bytes()), got {type(plan).__name__}")
    if len(plan) < 8 or plan[4:8] != PLAN_IDENTIFIER:
        raise PlanError("emit_binary: the bytes are not an edgetune plan (no 'ETPL' identifier); pass "
                        "Program.plan_bytes() or the contents of a .etp file")
    return plan


def emit_binary(plan_bytes, out_path, train_binary=None) -> str:
    """Write `out_path`: the edgetune-train executable (`train_binary`, default
    find_train_binary()) with `plan_bytes` appended, executable, written atomically (an
    existing file survives any failure). A binary that already carries a plan has it replaced.
    Returns the path written."""
    plan = _plan_from(plan_bytes)
    exe_path = os.fspath(train_binary) if train_binary is not None else find_train_binary()
    try:
        with open(exe_path, "rb") as f:
            exe = f.read()
    except OSError as e:
        raise EdgetuneError(f"cannot read the {BINARY_NAME} executable {exe_path}: {e.strerror}") from None
    if not exe.startswith(_EXE_MAGICS):
        raise EdgetuneError(f"{exe_path} is not an executable (no ELF or Mach-O header); pass the {BINARY_NAME} binary")
    exe, _old_plan = split_embedded(exe)

    out_path = os.fspath(out_path)
    write_bytes_atomic(out_path, exe + plan + TRAILER.pack(len(plan), MAGIC), mode=0o755)
    return out_path
