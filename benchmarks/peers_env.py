"""The peers' virtual environments, made on first use and cached under build/peers/ (see
locations.py for an installed package).

    python -m edgetune.benchmarks.peers_env           # make (or check) both
    ensure_venv("ort") -> (python, None) | (None, reason)

Each peer gets its own venv (`python -m venv` + pip, by package name), so nothing it installs can
reach the main environment (torch 2.13.0 CPU stays the only torch there). Neither needs torch:
  ort  onnxruntime-training-cpu 1.19.2 (the CPU build; `onnxruntime-training` is the CUDA one),
       onnx 1.17.0 (newer writes IR v14, which ORT 1.19 refuses), numpy < 2 (ORT 1.19 is built on 1.x)
  tvm  apache-tvm 0.27.0.post1 (LLVM on), onnx 1.17.0 for its ONNX importer
A venv is reused when its marker file names the same packages and its import check passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from .locations import work_root

DEFAULT_ROOT = os.path.join(work_root(), "peers")

PEERS = {
    "ort": {"dir": "ort-venv",
            "packages": ["onnxruntime-training-cpu==1.19.2", "onnx==1.17.0", "numpy<2"],
            "check": "import onnxruntime, onnx, numpy; print(onnxruntime.__version__)"},
    "tvm": {"dir": "tvm-venv",
            "packages": ["apache-tvm==0.27.0.post1", "onnx==1.17.0"],
            "check": "import tvm, onnx; from tvm.relax.training import SetupTrainer; print(tvm.__version__)"},
}
MARKER = ".bench-packages"


def venv_python(name: str, root: str = DEFAULT_ROOT) -> str:
    return os.path.join(root, PEERS[name]["dir"], "bin", "python")


def _check(python: str, code: str) -> tuple[bool, str]:
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    if p.returncode == 0:
        return True, p.stdout.strip()
    lines = p.stderr.strip().splitlines()
    return False, lines[-1] if lines else f"exit {p.returncode}"


def ensure_venv(name: str, root: str = DEFAULT_ROOT, log=None) -> tuple[str | None, str | None]:
    """The venv's python, making the venv if needed; or (None, why it could not be made)."""
    peer = PEERS[name]
    path = os.path.join(root, peer["dir"])
    python = venv_python(name, root)
    want = "\n".join(peer["packages"])
    marker = os.path.join(path, MARKER)
    if os.path.exists(marker) and open(marker).read() == want:
        ok, _ = _check(python, peer["check"])
        if ok:
            return python, None
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()
    logf = open(os.path.join(root, f"{name}-venv.log"), "w")
    try:
        subprocess.run([sys.executable, "-m", "venv", path], check=True, stdout=logf, stderr=subprocess.STDOUT,
                       timeout=300)
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.run([python, "-m", "pip", "install", "-q", *peer["packages"]], check=True, stdout=logf,
                       stderr=subprocess.STDOUT, timeout=900, env=env)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        logf.close()
        tail = open(os.path.join(root, f"{name}-venv.log")).read().strip().splitlines()[-1:]
        return None, f"could not make the {name} venv ({e}): {' '.join(tail)[:300]}"
    logf.close()
    ok, out = _check(python, peer["check"])
    if not ok:
        return None, f"{name} venv made but its import check fails: {out[:300]}"
    with open(marker, "w") as f:
        f.write(want)
    if log:
        log(f"made {path} in {time.perf_counter() - t0:.0f} s ({out})")
    return python, None


def main(argv=None) -> int:
    rc = 0
    for name in PEERS:
        python, why = ensure_venv(name, log=print)
        print(f"{name}: {python or why}")
        rc |= python is None
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
