from __future__ import annotations

import pytest
import torch

from skelgraph.nn.temporal_conv import TemporalConv

V = 17


def test_temporal_conv_causal_with_stride() -> None:
    torch.manual_seed(0)
    conv = TemporalConv(4, 6, 5, stride=2, causal=True).eval()
    x = torch.randn(2, 4, 11, V)
    out = conv(x)
    assert out.shape == (2, 6, 6, V)
    for j in range(6):  # output j ends at input frame 2 j
        changed = x.clone()
        changed[:, :, 2 * j + 1 :] = torch.randn_like(changed[:, :, 2 * j + 1 :])
        torch.testing.assert_close(conv(changed)[:, :, : j + 1], out[:, :, : j + 1])
    centred = TemporalConv(4, 6, 5, stride=2).eval()
    assert centred(x).shape == (2, 6, 6, V)
    assert str(centred) == "TemporalConv(4, 6, kernel_size=5, stride=2, causal=False)"
    with pytest.raises(ValueError, match="must be odd"):
        TemporalConv(4, 6, 4)
