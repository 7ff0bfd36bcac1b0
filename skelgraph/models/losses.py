r"""Training objectives: per-step classification, future-motion prediction, feature consistency
(InfoGCN++), and InfoGCN's information bottleneck.

The InfoGCN++ objective (blog §4.1) for per-step logits :math:`\hat{y}_t`, forecasts
:math:`\hat{X}^{(t)}_{t+n}` and rolled-out latents :math:`\hat{Z}^{(t)}_{t+n}` made at frame
:math:`t` for the frame :math:`n` steps ahead (:math:`1 \le n \le N`):

.. math::
    \mathcal{L}_{\mathrm{cls}} &= \frac{1}{|\mathcal{T}|} \sum_{t \in \mathcal{T}}
        \mathrm{CE}_{\epsilon}(\hat{y}_t, y), \\
    \mathcal{L}_{\mathrm{pred}} &= \frac{1}{K} \sum_{(t, n) \in \mathcal{P}}
        \mathrm{MSE}(\hat{X}^{(t)}_{t+n}, X_{t+n}), \qquad
    \mathcal{L}_{\mathrm{feat}} = \frac{1}{K} \sum_{(t, n) \in \mathcal{P}}
        \mathrm{MSE}(\hat{Z}^{(t)}_{t+n}, \mathrm{sg}(Z_{t+n})), \\
    \mathcal{L} &= \mathcal{L}_{\mathrm{cls}} + \lambda_1 \mathcal{L}_{\mathrm{pred}}
        + \lambda_2 \mathcal{L}_{\mathrm{feat}},

where :math:`\mathcal{T}` are the real frames, :math:`\mathrm{CE}_\epsilon` the cross-entropy
with label smoothing :math:`\epsilon = 0.1`, :math:`\mathcal{P}` the valid pairs: frames beyond the
window are omitted (:math:`t + n < T`), so without padding
:math:`K = |\mathcal{P}| = N T - N (N + 1) / 2` per sample; with a frame mask a pair also needs
both frames real (with padding at the end, as :func:`skelgraph.preprocess.pad` makes it, this is
"the target frame is real"), and :math:`K` counts the pairs that remain. MSE is the mean over
joints and channels of one frame; the sums run over the batch and :math:`K` counts the pairs of
the whole batch. The blog's :math:`1 / (T C)` in :math:`\mathcal{L}_{\mathrm{cls}}` is the mean over
steps of its implementation (the class sum is the cross-entropy itself). :math:`\mathrm{sg}` is a
stop-gradient on the target latents (optional): without it the consistency term can pull the
encoder's latents toward a collapsed, easily predicted solution.

The InfoGCN objective (:func:`information_bottleneck_loss`) for latents :math:`z_n` that the
classifier reads (one per sample, or one per real step of a per-step model), labels :math:`y_n`
and the fixed class prior means :math:`m_c` of :class:`~skelgraph.nn.InformationBottleneck`:

.. math::
    \mathcal{L}_{\mathrm{IB}} = \mathcal{L}_{\mathrm{cls}}
        + \lambda_1 \Big\Vert \frac{1}{N} \sum_{n} z_n \Big\Vert_2
        + \lambda_2 \frac{1}{|\mathcal{C}| D} \sum_{c \in \mathcal{C}}
            \Vert \bar{z}_c - m_c \Vert_2^2,
    \qquad \bar{z}_c = \frac{1}{N_c} \sum_{n : y_n = c} z_n,

over the :math:`N` latents of the batch, :math:`\mathcal{C}` the classes present in it (each with
:math:`N_c` latents) and :math:`D` the latent size: the norm of the batch's mean latent
(``"z_norm"``, the marginal kept near the origin) and the mean squared error between each
present class's mean latent and its prior mean (``"z_prior"``, InfoGCN's MMD term with the class
means as the statistic), with InfoGCN's defaults :math:`\lambda_1 = 10^{-4}`,
:math:`\lambda_2 = 0.1` and :math:`\epsilon = 0.1`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bottleneck_terms",
    "classification_loss",
    "future_pair_mask",
    "future_prediction_loss",
    "infogcn2_loss",
    "information_bottleneck_loss",
]


def classification_loss(
    logits: Tensor, y: Tensor, mask: Tensor | None = None, *, label_smoothing: float = 0.1
) -> Tensor:
    r"""Cross-entropy averaged over every real time step.

    Args:
        logits (Tensor): :math:`(B, T', K)` per-step scores (:math:`T' = 1` for clip models).
        y (Tensor): :math:`(B,)` class indices.
        mask (Tensor, optional): :math:`(B, T')` real-step mask; ignored when :math:`T' = 1`.
        label_smoothing (float): :math:`\epsilon`. (default: :obj:`0.1`)
    """
    if logits.dim() != 3 or y.shape != logits.shape[:1]:
        raise ValueError(
            f"classification_loss: expected logits [B, T, K] and y [B], got "
            f"{list(logits.shape)} and {list(y.shape)}"
        )
    steps = logits.size(1)
    target = y.view(-1, 1).expand(-1, steps)
    per_step = F.cross_entropy(
        logits.float().transpose(1, 2), target, reduction="none", label_smoothing=label_smoothing
    )
    if mask is None or steps == 1:
        return per_step.mean()
    weight = mask.to(per_step.dtype)
    return (per_step * weight).sum() / weight.sum().clamp_min(1.0)


def future_pair_mask(frames: int, steps: int, mask: Tensor | None = None) -> Tensor:
    r"""Valid (start frame, step) pairs: ``valid[b, t, n - 1]`` is :obj:`True` when
    :math:`t + n < T` and (with a mask) frames :math:`t` and :math:`t + n` are real.

    Returns:
        Tensor: bool :math:`(B, T, N)` (:math:`B = 1` without a mask).
    """
    t = torch.arange(frames, device=None if mask is None else mask.device)
    n = torch.arange(1, steps + 1, device=t.device)
    target = t[:, None] + n[None, :]  # [T, N]
    valid = (target < frames).unsqueeze(0)
    if mask is None:
        return valid
    real_target = mask[:, target.clamp(max=frames - 1)]  # [B, T, N]
    return valid & mask.unsqueeze(-1) & real_target


def future_prediction_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""MSE of predictions made at frame :math:`t` for frame :math:`t + n`, averaged over the
    valid pairs (see the module description).

    Args:
        pred (Tensor): :math:`(B, T, N, *)`, ``pred[b, t, n - 1]`` predicts ``target[b, t + n]``.
        target (Tensor): :math:`(B, T, *)`.
        mask (Tensor, optional): :math:`(B, T)` real-frame mask.

    Returns:
        Tensor: 0-d; zero when no pair is valid (e.g. :math:`T \le 1`).
    """
    batch, frames, steps = pred.shape[:3]
    if target.shape[:2] != (batch, frames) or target.shape[2:] != pred.shape[3:]:
        raise ValueError(
            f"future_prediction_loss: pred [B, T, N, *] and target [B, T, *] disagree: "
            f"{list(pred.shape)} and {list(target.shape)}"
        )
    valid = future_pair_mask(frames, steps, mask)
    total = pred.new_zeros((), dtype=torch.float32)
    for n in range(1, min(steps, frames - 1) + 1):
        diff = pred[:, : frames - n, n - 1].float() - target[:, n:].float()
        per_pair = diff.square().flatten(2).mean(dim=2)  # [B, T - n]
        total = total + (per_pair * valid[:, : frames - n, n - 1]).sum()
    count = valid.sum() if mask is not None else valid.sum() * batch
    return total / count.clamp_min(1)


def infogcn2_loss(
    logits: Tensor,
    forecast: Tensor,
    latents: Tensor,
    latent_pred: Tensor,
    x: Tensor,
    y: Tensor,
    mask: Tensor | None = None,
    *,
    lambda_pred: float = 0.1,
    lambda_feat: float = 0.1,
    label_smoothing: float = 0.1,
    detach_feature_target: bool = True,
) -> dict[str, Tensor]:
    r"""The InfoGCN++ objective :math:`\mathcal{L}` and its terms.

    Args:
        logits (Tensor): per-step scores :math:`(B, T, K)`.
        forecast (Tensor): :math:`(B, T, N, V, C_{out})` predicted joint coordinates.
        latents (Tensor): :math:`(B, V, T, D)` encoder latents :math:`Z`.
        latent_pred (Tensor): :math:`(B, T, N, V, D)` rolled-out latents :math:`\hat{Z}`.
        x (Tensor): :math:`(B, V, T, C)` input joints; the targets are the first
            :math:`C_{out}` channels.
        y (Tensor): :math:`(B,)` labels.
        mask (Tensor, optional): :math:`(B, T)` real-frame mask.
        lambda_pred (float): :math:`\lambda_1`. (default: :obj:`0.1`)
        lambda_feat (float): :math:`\lambda_2`. (default: :obj:`0.1`)
        label_smoothing (float): :math:`\epsilon`. (default: :obj:`0.1`)
        detach_feature_target (bool): stop the gradient through :math:`Z_{t+n}` in
            :math:`\mathcal{L}_{\mathrm{feat}}`. (default: :obj:`True`)

    Returns:
        dict: ``{"loss", "cls", "pred", "feat"}``, 0-d tensors.
    """
    c_out = forecast.size(-1)
    coords = x[..., :c_out].transpose(1, 2)  # [B, T, V, C_out]
    target = latents.transpose(1, 2)  # [B, T, V, D]
    if detach_feature_target:
        target = target.detach()
    cls = classification_loss(logits, y, mask, label_smoothing=label_smoothing)
    pred = future_prediction_loss(forecast, coords, mask)
    feat = future_prediction_loss(latent_pred, target, mask)
    total = cls + lambda_pred * pred + lambda_feat * feat
    return {"loss": total, "cls": cls, "pred": pred, "feat": feat}


def bottleneck_terms(
    z: Tensor, y: Tensor, prior_means: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""The two latent terms of :math:`\mathcal{L}_{\mathrm{IB}}` (see the module description):
    the norm of the batch's mean latent and the mean squared error between the present classes'
    mean latents and their prior means, in float32.

    Args:
        z (Tensor): latents :math:`(B, T', D)`, one per sample (:math:`T' = 1`) or step.
        y (Tensor): :math:`(B,)` labels; every step of a sample has its label.
        prior_means (Tensor): :math:`(K, D)` class prior means.
        mask (Tensor, optional): :math:`(B, T')` real steps; the others are left out.

    Returns:
        (Tensor, Tensor): ``z_norm`` and ``z_prior``, 0-d; both zero when no step is real.
    """
    if z.dim() != 3 or y.shape != z.shape[:1] or prior_means.shape[1:] != z.shape[2:]:
        raise ValueError(
            f"bottleneck_terms: expected z [B, T, D], y [B] and prior_means [K, D], got "
            f"{list(z.shape)}, {list(y.shape)} and {list(prior_means.shape)}"
        )
    if mask is not None and mask.shape != z.shape[:2]:
        raise ValueError(
            f"bottleneck_terms: mask: expected shape {list(z.shape[:2])}, got {list(mask.shape)}"
        )
    labels = y.view(-1, 1).expand(z.shape[:2])
    z = z.float()
    if mask is not None:
        z, labels = z[mask], labels[mask]
    else:
        z, labels = z.reshape(-1, z.size(-1)), labels.reshape(-1)
    if z.size(0) == 0:
        zero = z.new_zeros(())
        return zero, zero
    z_norm = torch.linalg.vector_norm(z.mean(dim=0))
    one_hot = F.one_hot(labels, prior_means.size(0)).to(z.dtype)  # [N, K]
    counts = one_hot.sum(dim=0)
    present = counts > 0
    class_means = (one_hot.t() @ z)[present] / counts[present, None]
    z_prior = F.mse_loss(class_means, prior_means[present].to(z.dtype))
    return z_norm, z_prior


def information_bottleneck_loss(
    logits: Tensor,
    z: Tensor,
    y: Tensor,
    prior_means: Tensor,
    mask: Tensor | None = None,
    *,
    lambda_1: float = 1e-4,
    lambda_2: float = 0.1,
    label_smoothing: float = 0.1,
) -> dict[str, Tensor]:
    r"""The InfoGCN objective :math:`\mathcal{L}_{\mathrm{IB}}` and its terms.

    Args:
        logits (Tensor): scores :math:`(B, T', K)` read from ``z``.
        z (Tensor): latents :math:`(B, T', D)`.
        y (Tensor): :math:`(B,)` labels.
        prior_means (Tensor): :math:`(K, D)` class prior means.
        mask (Tensor, optional): :math:`(B, T')` real steps (per-step models).
        lambda_1 (float): :math:`\lambda_1`, weight of ``"z_norm"``. (default: :obj:`1e-4`)
        lambda_2 (float): :math:`\lambda_2`, weight of ``"z_prior"``. (default: :obj:`0.1`)
        label_smoothing (float): :math:`\epsilon`. (default: :obj:`0.1`)

    Returns:
        dict: ``{"loss", "cls", "z_norm", "z_prior"}``, 0-d tensors.
    """
    cls = classification_loss(logits, y, mask, label_smoothing=label_smoothing)
    z_norm, z_prior = bottleneck_terms(z, y, prior_means, mask)
    total = cls + lambda_1 * z_norm + lambda_2 * z_prior
    return {"loss": total, "cls": cls, "z_norm": z_norm, "z_prior": z_prior}
