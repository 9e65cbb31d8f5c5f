"""Where the benchmarks put their work (peer venvs, per-cell folders) and their results.

In a source checkout: build/ and benchmarks/results/ of the checkout, as always. From an
installed package (`edgetune bench` after `pip install edgetune[bench]`) the package folder is
no place to write: work goes to ./edgetune-bench/ under the current directory instead, and
results to ./edgetune-bench/results/. $EDGETUNE_BENCH_DIR overrides the work folder either way.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNERS = os.path.join(HERE, "runners")
_CHECKOUT = os.path.dirname(HERE)
SOURCE_CHECKOUT = os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")) and \
    os.path.basename(HERE) == "benchmarks"


def work_root() -> str:
    """Peer venvs live in work_root()/peers, cells in work_root()/bench, work_root()/ablation."""
    if os.environ.get("EDGETUNE_BENCH_DIR"):
        return os.path.abspath(os.environ["EDGETUNE_BENCH_DIR"])
    return os.path.join(_CHECKOUT, "build") if SOURCE_CHECKOUT else os.path.abspath("edgetune-bench")


def results_dir() -> str:
    return os.path.join(HERE, "results") if SOURCE_CHECKOUT else os.path.join(work_root(), "results")
