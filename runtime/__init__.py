"""The runtime's Python face: `Session`, the numpy reference executor (the oracle), plan
binaries, and the C++ backends' descriptions for the compiler (targets.py, registered on import).
Running a saved plan needs neither torch nor the frontends."""

from . import targets  # noqa: F401  registers the C++ backends with compiler.target
