"""Frontends: foreign models in, the compiler's forward IR (an ImportedModel) out.

    from_torch  torch.nn.Module through torch.export (and torch loss callables)
    from_onnx   onnx.ModelProto or an .onnx path

`import_model` picks the frontend for a model object. torch and onnx are imported only by the
frontend that needs them.
"""

from __future__ import annotations

import os

import numpy as np

from ..compiler.errors import CaptureError


def is_onnx_model(model) -> bool:
    if isinstance(model, (str, os.PathLike)):
        return True
    return type(model).__name__ == "ModelProto"


def import_model(model, example_inputs: tuple):
    """The ImportedModel of `model` (a torch.nn.Module, an onnx.ModelProto or an .onnx path)."""
    if is_onnx_model(model):
        from .from_onnx import import_onnx
        return import_onnx(model, example_inputs)
    import torch
    if isinstance(model, torch.nn.Module):
        from .from_torch import import_module
        inputs = tuple(torch.as_tensor(x) if isinstance(x, np.ndarray) else x for x in example_inputs)
        return import_module(model, inputs)
    raise CaptureError(f"cannot compile a {type(model).__name__}: pass a torch.nn.Module, an onnx.ModelProto "
                       "or the path of an .onnx file")
