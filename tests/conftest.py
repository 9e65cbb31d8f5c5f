"""Shared test setup: deterministic torch, one thread per worker (CI has 2 cores), and the
tests folder on sys.path so tests can `import support`."""

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402

torch.set_num_threads(1)
