"""Whether code runs inside a stacked step (:mod:`ebm.stacking`), where ``torch.func.vmap``
batches the tensors: a leaf module, so that the inference code can ask without importing the
training machinery (ebm.stacking imports ebm.method, which imports ebm.inference)."""

from __future__ import annotations

import torch
from torch import Tensor


def is_stacked(tensor: Tensor) -> bool:
    """True inside a stacked step (a tensor batched by ``vmap``): code that turns a tensor into
    a Python number (``float``, ``.item()``) or hands it to NumPy must skip it there."""
    return bool(torch._C._functorch.is_batchedtensor(tensor))
