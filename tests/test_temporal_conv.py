from __future__ import annotations

import pytest
import torch

from skelgraph.nn.temporal_conv import MultiScaleTemporalConv, TemporalConv

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


def test_dilated_temporal_conv_reaches_further():
    conv = TemporalConv(2, 2, 3, dilation=2).eval()
    x = torch.zeros(1, 2, 9, V)
    x[:, :, 6] = 1.0  # one frame: felt 2 frames away, not 1 (kernel taps at -2, 0, +2)
    out = conv(x) - conv(torch.zeros_like(x))
    assert out.shape == (1, 2, 9, V)
    touched = out.abs().sum(dim=(0, 1, 3)) > 0
    assert touched.nonzero().flatten().tolist() == [4, 6, 8]
    assert "dilation=2" in str(conv)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_scale_unit_shapes_branches_and_causality(causal: bool) -> None:
    torch.manual_seed(0)
    unit = MultiScaleTemporalConv(6, 8, 5, stride=2, dilations=(1, 2), causal=causal).eval()
    assert len(unit.branches) == 4  # two dilated, max-pool, 1x1
    x = torch.randn(2, 6, 11, V)
    out = unit(x)
    assert out.shape == (2, 8, 6, V) and bool((out >= 0).all())  # ReLU at the end
    changed = x.clone()
    changed[:, :, 7:] = torch.randn_like(changed[:, :, 7:])
    same = (unit(changed) - out).abs().amax(dim=(0, 1, 3)) < 1e-6
    if causal:  # output j ends at input frame 2 j: frames 0..3 see inputs <= 6 only
        assert same[:4].all()
    else:  # centred: output 2 (input 4, reaching 4 frames with dilation 2) already differs
        assert not same[2]
    assert str(unit).startswith("MultiScaleTemporalConv(6, 8, kernel_size=5, stride=2")
    with pytest.raises(ValueError, match="multiple of the 4 branches"):
        MultiScaleTemporalConv(6, 10)
