"""The package's layers and the direction of their dependencies (README: "Layers").

    apps        edgetune/ (api, cli, finetune, models, datasets), benchmarks/
    runtime     runtime/     -> compiler
    frontends   frontends/   -> compiler
    compiler    compiler/    -> nothing above it

Checked three ways: statically (every import in every module, function-level ones included),
and by running the compiler with the C++ module blocked, and a saved plan with torch and the
frontends blocked, in fresh interpreters.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> the package path it is installed as (pyproject's wheel.packages)
LAYERS = {"compiler": "compiler", "frontends": "frontends", "runtime": "runtime", "edgetune": "",
          "benchmarks": "benchmarks"}
ALLOWED = {  # layer -> the edgetune layers its modules may import
    "compiler": {"compiler"},
    "frontends": {"frontends", "compiler"},
    "runtime": {"runtime", "compiler"},
    "apps": {"apps", "compiler", "frontends", "runtime"},
}


def _layer_of(module: str) -> str | None:
    """'edgetune.compiler.ir' -> 'compiler'; 'edgetune.cli' -> 'apps'; non-edgetune -> None."""
    parts = module.split(".")
    if parts[0] != "edgetune":
        return None
    if len(parts) > 1 and parts[1] in ("compiler", "frontends", "runtime"):
        return parts[1]
    if len(parts) > 1 and parts[1] == "_native":
        return "runtime"
    return "apps"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    folder, rest = rel.parts[0], list(rel.parts[1:])
    mapped = [p for p in [LAYERS[folder]] if p]
    parts = ["edgetune"] + mapped + rest
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, resolved to absolute names, with line numbers."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` may import a submodule x
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def _python_files():
    for folder in LAYERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "generated" in path.parts or "runners" in path.parts:
                continue  # flatc's output; benchmark runners run as scripts in peer venvs
            yield path


def test_imports_point_down_the_layers():
    wrong = []
    for path in _python_files():
        own = _layer_of(_module_name(path))
        for line, target in _imports(path):
            layer = _layer_of(target)
            if layer is not None and layer not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {target} ({layer})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def _import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (function-level imports included)."""
    modules = {_module_name(p): p for p in _python_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, target in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None (depth-first search, colours white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_import_cycles():
    """Not even hidden in function-level imports (a package __init__ re-exporting its modules
    does not count: importing edgetune.x runs edgetune/__init__ anyway)."""
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in _import_graph().items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_layer_check_sees_a_violation():
    """The check itself: a compiler module importing the runtime is caught."""
    assert _layer_of("edgetune.runtime.native") not in ALLOWED["compiler"]
    assert _layer_of("edgetune.frontends.from_torch") not in ALLOWED["runtime"]
    assert _layer_of("edgetune.cli") not in ALLOWED["frontends"]


def _run_isolated(code: str, tmp_path, blocked: list[str]) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter in which importing any of `blocked` (a module or a
    package prefix) raises ImportError."""
    script = tmp_path / "isolated.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {blocked!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"{{name}} is blocked in this test")
                return None
        sys.meta_path.insert(0, Block())
    """) + textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if k != "EDGETUNE_NATIVE"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600,
                          cwd=tmp_path)


def test_compile_and_reference_session_without_the_native_module(tmp_path):
    proc = _run_isolated("""
        import numpy as np, torch
        import edgetune as et
        from edgetune.models import SmallCNN
        torch.manual_seed(0)
        model = SmallCNN(num_classes=4, width=8)
        x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
        prog = et.compile(model, (x,), y, peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1))  # -O2
        assert prog.opt_level == 2
        print(prog.pass_report[-1].note)
        sess = et.Session(prog, backend="reference")
        losses = [sess.step(x, y) for _ in range(3)]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
        assert "edgetune._native" not in sys.modules
        try:
            prog.save("x.etp")
        except et.PlanError as e:
            print("save refused:", e)
        else:
            raise SystemExit("a cpu plan was written without the cpu backend's workspace sizes")
        print("ok")
    """, tmp_path, ["edgetune._native"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert "no op with several kernels on cpu" in proc.stdout  # the built-in target kept the defaults
    assert "save refused: planning memory for the cpu backend" in proc.stdout


@pytest.mark.native
def test_running_a_saved_plan_imports_neither_torch_nor_the_frontends(tmp_path):
    import numpy as np
    import torch
    import edgetune as et
    from edgetune.models import SmallCNN
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, width=8)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    prog = et.compile(model, (x,), y, peft=et.peft.BiasOnly(), optimizer=et.optim.SGD(lr=0.1))
    prog.save(tmp_path / "p.etp")
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    expected = et.Session(tmp_path / "p.etp", backend="cpu", threads=1).step(x.numpy(), y.numpy())
    proc = _run_isolated(f"""
        import numpy as np
        import edgetune as et
        sess = et.Session("p.etp", backend="cpu", threads=1)
        loss = sess.step(np.load("x.npy"), np.load("y.npy"))
        assert abs(loss - {expected!r}) <= 1e-6 * abs({expected!r}), loss
        sess.save_weights("w.safetensors")
        loaded = [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "edgetune.frontends", "onnx"))]
        assert not loaded, loaded
        print("ok")
    """, tmp_path, ["torch", "edgetune.frontends", "onnx"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert (tmp_path / "w.safetensors").stat().st_size > 0
