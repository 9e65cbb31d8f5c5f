"""All ops edgetune knows. Importing this package registers every op (see registry.py)."""

from . import registry
from . import (conv, dropout, elementwise, embedding, loss, matmul, norm, optim, pool,  # noqa: F401
               reduce, shape, softmax)  # registration side effects
from . import fused, mask  # noqa: F401  ops made by the optimisation passes (compiler/passes/)

REGISTRY = registry.REGISTRY
get_op = registry.get_op
