"""The exceptions edgetune raises for user mistakes.

One type per kind of mistake, all deriving from `EdgetuneError`, so a caller can catch the
family or one member. Every message names *what* is wrong and *where* (node, op, parameter
name, file, source line) — an error that only says "invalid" is a bug.
"""

from __future__ import annotations


class EdgetuneError(Exception):
    """Base class of every error edgetune raises on purpose."""


class CaptureError(EdgetuneError):
    """torch.export could not capture the module, or an ONNX file could not be read."""


class UnsupportedOpError(EdgetuneError):
    """The model uses ops edgetune cannot compile; the message lists every one of them."""

    def __init__(self, items: list[str], frontend: str):
        self.items = list(items)
        lines = "\n".join(f"  - {item}" for item in self.items)
        super().__init__(
            f"{frontend} model uses {len(self.items)} unsupported op occurrence(s):\n{lines}")


class SpecError(EdgetuneError):
    """A fine-tuning spec selects nothing, or one of its patterns matches no parameter."""


class LossError(EdgetuneError):
    """The loss is unknown, or the model output and the target do not fit it."""


class IRError(EdgetuneError):
    """A graph broke an IR invariant (verifier) or IR text did not parse."""


class ShapeError(IRError):
    """An op got inputs whose shapes or dtypes it cannot take."""


class InputError(EdgetuneError):
    """Data handed to a Session does not match the compiled program's inputs."""


class PlanError(EdgetuneError):
    """A plan file (.etp) is unreadable, corrupt, of another version, or asks for a kernel the
    runtime does not have; or a program cannot be planned for a backend."""
