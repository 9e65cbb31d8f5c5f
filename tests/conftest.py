"""Shared test setup: deterministic torch, one thread per worker (CI has 2 cores), the tests
folder on sys.path so tests can `import support`, and the test layers.

Layers (markers, registered in pyproject.toml's [tool.pytest.ini_options], --strict-markers):

  compiler  pure Python: IR, op references, autodiff, passes, frontends, the reference executor.
            Never loads edgetune._native: `python -m pytest -m compiler tests` runs in a Python
            without the C++ module (check: EDGETUNE_NATIVE=/nonexistent.so python -m pytest -m compiler tests).
  native    needs the C++ module edgetune._native (kernels, the cpu backend, plan files, the binary)
  e2e       whole models, the CLI and the public API, end to end
  slow      the benchmark smoke tests, the main job, and anything taking more than ~20 s

How a test gets its markers, without decorators where a rule works (pytest_collection_modifyitems):
  * by folder (FOLDER_MARKERS): ir/ ops/ passes/ frontends/ golden/ analysis/ architecture/ -> compiler,
    kernels/ -> native, e2e/ -> e2e + native (the whole stack: plans for the cpu target, the C++
    runtime), benchmarks/ -> e2e + native + slow; by file (FILE_MARKERS) in
    runtime/ (the reference executor and the schema check are compiler, the cpu runtime and the
    edgetune-train binary native) and for the main job (e2e/test_finetune.py: slow);
  * a test that requests the `native` fixture, or is parametrized with backend="cpu", is native;
  * a test or module marked native (`pytestmark`, @pytest.mark.native, pytest.param(marks=...))
    never gets `compiler`, whatever its folder;
  * slow: by folder/file (benchmarks/, e2e/test_finetune.py), and SLOW_TESTS lists any single
    test measured over ~20 s.

Two guards keep the markers honest:
  * every test NOT marked native runs with the C++ module blocked (`_block_native` below), so a
    compiler test that reaches edgetune._native fails here too, not only in a Python without it;
  * a native test in a run where the module cannot be loaded fails at setup with the loader's
    reason: never a silent skip. Deselect them with -m "not native" (or -m compiler).

Quick loop: python -m pytest -m "not slow" -n 2 tests
"""

import os
import sys

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# xdist runs two workers on CI's two cores and sessions use up to 2 threads each: spinning idle
# threads (edgetune's pool, OpenMP's) would take turns with the busy ones (the suite ran 7.7 ->
# 10 min with the pool's spin), so waits sleep here, as on any shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))

# first folder under tests/ -> markers every test in it gets
FOLDER_MARKERS = {
    "ir": ("compiler",), "ops": ("compiler",), "passes": ("compiler",), "frontends": ("compiler",),
    "golden": ("compiler",), "analysis": ("compiler",), "architecture": ("compiler",),
    "kernels": ("native",),
    "fuzz": ("native",),  # the Python readers, the native plan loader among them
    # end to end: the whole stack, which compiles for the cpu target and runs the C++ runtime
    "e2e": ("e2e", "native"),
    "benchmarks": ("e2e", "native", "slow"),
}
# path under tests/ -> markers added to the folder's
FILE_MARKERS = {
    "runtime/test_reference_executor.py": ("compiler",),
    "runtime/test_schema.py": ("compiler",),
    "runtime/test_cpu_runtime.py": ("native",),
    "runtime/test_train_binary.py": ("native",),
    "runtime/test_session_safety.py": ("native",),
    "runtime/test_checkpoint.py": ("native",),
    "e2e/test_finetune.py": ("slow",),  # the main job: real data, several models, minutes
}
# single tests over ~20 s (pytest --durations, -n 2 on this project's 2-core machine), as node-id
# prefixes under tests/; none today beyond the slow files and folders above
SLOW_TESTS: tuple[str, ...] = ()
# a path EDGETUNE_NATIVE points at so that runtime/native.py cannot load the module
BLOCKED = os.path.join(HERE, "compiler-marked-tests-must-not-load-edgetune._native.so")


def _uses_native(item) -> bool:
    if item.get_closest_marker("native") is not None:
        return True
    if "native" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == "cpu"


def pytest_collection_modifyitems(config, items):
    for item in items:
        rel = os.path.relpath(str(item.path), HERE).replace(os.sep, "/")
        folder = rel.split("/", 1)[0] if "/" in rel else ""
        wanted = set(FOLDER_MARKERS.get(folder, ())) | set(FILE_MARKERS.get(rel, ()))
        if (rel + "::" + item.nodeid.split("::", 1)[-1]).startswith(SLOW_TESTS):
            wanted.add("slow")
        if "native" in wanted or _uses_native(item):
            wanted.add("native")
            wanted.discard("compiler")
        for name in sorted(wanted):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


def _native_load_error() -> str | None:
    from edgetune.runtime.native import native
    try:
        native()
    except Exception as e:  # EdgetuneError with the loader's reason
        return str(e)
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("native") is not None:
        err = _native_load_error()
        if err is not None:
            pytest.fail(f"native test, but edgetune._native cannot be loaded: {err}\n"
                        "(deselect native tests with -m 'not native' or -m compiler)", pytrace=False)


@pytest.fixture(autouse=True)
def _block_native(request, monkeypatch):
    """Tests not marked native must not load the C++ module: runtime/native.py's cache is
    emptied and EDGETUNE_NATIVE points at a file that does not exist for the test's duration."""
    if request.node.get_closest_marker("native") is not None:
        yield
        return
    from edgetune.runtime import native as native_loader
    monkeypatch.setattr(native_loader, "_MODULE", None)
    monkeypatch.setenv("EDGETUNE_NATIVE", BLOCKED)
    yield


@pytest.fixture
def native():
    """The C++ module; requesting this fixture marks the test native."""
    from edgetune.runtime.native import native as load
    return load()
