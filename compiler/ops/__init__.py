"""All ops edgetune knows. Importing this package registers every op (see registry.py)."""

from . import registry
from . import (conv, dropout, elementwise, embedding, indexing, loss, matmul, norm, optim,  # noqa: F401
               pool, reduce, shape, softmax)  # registration side effects
from . import fused, mask  # noqa: F401  ops made by the optimisation passes (compiler/passes/)

REGISTRY = registry.REGISTRY
get_op = registry.get_op
