"""``Conv3d`` that runs on oneDNN (mkldnn) on the CPU at every size.

PyTorch picks oneDNN for a CPU convolution only when ``N * C * D * H > 20480`` (a rule made for 2D images), so with
a batch of one the deeper, smaller levels of our 3D networks fall back to its plain ``slow_conv3d``: 4-8 times
slower forward there (measured on 2 cores: 32 channels at 20 x 28 x 20, 31.5 ms against 3.7 ms), the same
result to float precision. This subclass calls the oneDNN kernel directly in those cases (autograd included) and
keeps PyTorch's own path everywhere else (GPU, half precision, other padding modes, a build without oneDNN). The
parameters and their names are those of ``torch.nn.Conv3d``, so saved weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

_BROKEN = False  # set once if this torch build refuses the direct call (then PyTorch decides, as before)


def _direct(module: nn.Conv3d, x: torch.Tensor) -> bool:
    return (not _BROKEN and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 5
            and module.padding_mode == "zeros" and not isinstance(module.padding, str) and not x.is_mkldnn
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


class Conv3d(nn.Conv3d):
    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        global _BROKEN
        if _direct(self, input) and weight.dtype == torch.float32:
            try:
                return torch.ops.aten.mkldnn_convolution(input, weight, bias, list(self.padding), list(self.stride),
                                                         list(self.dilation), self.groups)
            except (RuntimeError, AttributeError):
                _BROKEN = True
        return super()._conv_forward(input, weight, bias)
