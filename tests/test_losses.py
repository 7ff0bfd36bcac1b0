from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skelgraph.models.losses import (
    classification_loss,
    future_pair_mask,
    future_prediction_loss,
    infogcn2_loss,
)


def test_pair_count_is_blog_k():
    for frames, steps in [(4, 2), (64, 3), (5, 1), (3, 3)]:
        valid = future_pair_mask(frames, steps)
        expected = steps * frames - steps * (steps + 1) // 2 if steps < frames else None
        if expected is not None:
            assert int(valid.sum()) == expected
    assert int(future_pair_mask(4, 2).sum()) == 5  # K = 2·4 − 2·3/2


def test_prediction_loss_normalisation_by_hand():
    # T = 4, N = 2, one joint, one channel: pairs (t, n) with t + n < 4 are
    # (0,1) (1,1) (2,1) (0,2) (1,2): K = 5. Predict 0 everywhere; targets x_t = t.
    target = torch.arange(4.0).view(1, 4, 1, 1)
    pred = torch.zeros(1, 4, 2, 1, 1)
    pred[0, 3] = 100.0  # predictions beyond the window must not count
    expected = (1**2 + 2**2 + 3**2 + 2**2 + 3**2) / 5
    assert future_prediction_loss(pred, target).item() == pytest.approx(expected)


def test_prediction_loss_averages_joints_and_channels_then_pairs():
    target = torch.zeros(2, 3, 2, 2)
    pred = torch.zeros(2, 3, 1, 2, 2)
    pred[0, 0, 0, 0, 0] = 2.0  # pair (b=0, t=0, n=1): MSE over 4 values = 1
    # K = 2 samples × (1·3 − 1) = 4 pairs
    assert future_prediction_loss(pred, target).item() == pytest.approx(1.0 / 4)


def test_prediction_loss_with_mask_counts_remaining_pairs():
    target = torch.arange(4.0).view(1, 4, 1, 1).repeat(2, 1, 1, 1)
    pred = torch.zeros(2, 4, 2, 1, 1)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    valid = future_pair_mask(4, 2, mask)
    assert int(valid[0].sum()) == 3  # (0,1) (1,1) (0,2): the target frame 3 is padded
    assert int(valid[1].sum()) == 5
    expected = ((1 + 4 + 4) + (1 + 4 + 9 + 4 + 9)) / 8
    assert future_prediction_loss(pred, target, mask).item() == pytest.approx(expected)
    # anything at the padded frame is ignored
    target[0, 3] = 1e6
    assert future_prediction_loss(pred, target, mask).item() == pytest.approx(expected)


def test_prediction_loss_without_pairs_is_zero():
    pred, target = torch.ones(2, 1, 3, 4), torch.zeros(2, 1, 4)
    assert future_prediction_loss(pred, target).item() == 0.0


def test_classification_loss_is_smoothed_ce_over_real_steps():
    torch.manual_seed(0)
    logits, y = torch.randn(2, 5, 4), torch.tensor([1, 3])
    expected = F.cross_entropy(logits.reshape(10, 4), y.repeat_interleave(5), label_smoothing=0.1)
    torch.testing.assert_close(classification_loss(logits, y), expected)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    real = F.cross_entropy(
        torch.cat([logits[0], logits[1, :2]]), torch.tensor([1] * 5 + [3] * 2), label_smoothing=0.1
    )
    torch.testing.assert_close(classification_loss(logits, y, mask), real)
    logits[1, 3:] = 1e4
    torch.testing.assert_close(classification_loss(logits, y, mask), real)


def test_classification_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        classification_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


def make_outputs(requires_grad: bool = False):
    torch.manual_seed(0)
    B, V, T, N, D, C = 2, 3, 5, 2, 4, 3
    latents = torch.randn(B, V, T, D, requires_grad=requires_grad)
    return {
        "logits": torch.randn(B, T, 6),
        "forecast": torch.randn(B, T, N, V, C - 1),
        "latents": latents,
        "latent_pred": torch.randn(B, T, N, V, D, requires_grad=requires_grad),
        "x": torch.randn(B, V, T, C),
        "y": torch.tensor([0, 5]),
    }


def test_infogcn2_loss_combines_terms():
    o = make_outputs()
    terms = infogcn2_loss(**o, lambda_pred=0.3, lambda_feat=0.7)
    assert set(terms) == {"loss", "cls", "pred", "feat"}
    total = terms["cls"] + 0.3 * terms["pred"] + 0.7 * terms["feat"]
    torch.testing.assert_close(terms["loss"], total)
    coords = o["x"][..., :2].transpose(1, 2)
    torch.testing.assert_close(terms["pred"], future_prediction_loss(o["forecast"], coords))
    target = o["latents"].transpose(1, 2)
    torch.testing.assert_close(terms["feat"], future_prediction_loss(o["latent_pred"], target))


@pytest.mark.parametrize("detach", [True, False])
def test_feature_target_detach_option(detach):
    o = make_outputs(requires_grad=True)
    terms = infogcn2_loss(**o, detach_feature_target=detach)
    terms["feat"].backward()
    assert o["latent_pred"].grad.abs().sum() > 0
    grad = o["latents"].grad
    assert grad is None if detach else grad.abs().sum() > 0
