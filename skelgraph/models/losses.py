r"""Training objectives: per-step classification, future-motion prediction, feature consistency
(InfoGCN++), InfoGCN's information bottleneck, and SymGNN's rollout loss with MGDA task weights.

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

SymGNN's objective (:func:`rollout_l1_loss`, :func:`mgda_weights`) for a clip-level model that
forecasts :math:`N` frames from one frame :math:`s_b` of every sample (``ModelOutput.steps``):

.. math::
    \mathcal{L}_{\mathrm{pred}} = \frac{1}{|\mathcal{P}| C_{out}} \sum_{(b, n, v) \in
        \mathcal{P}} \big\Vert \hat{X}^{(s_b)}_{s_b + n, v} - X_{s_b + n, v} \big\Vert_1,
    \qquad
    \mathcal{L} = \alpha \mathcal{L}_{\mathrm{cls}} + (1 - \alpha) \mathcal{L}_{\mathrm{pred}},

:math:`\mathcal{P}` the target joints that exist (:math:`s_b + n < T`), lie on real frames and
are visible (confidence :math:`> 0`). The weights :math:`(\alpha, 1 - \alpha)` lie on the
simplex: fixed, or chosen per batch by MGDA (`Sener & Koltun, 2018
<https://arxiv.org/abs/1810.04650>`_) as the minimum-norm point of the convex hull of the two
task gradients :math:`g_1, g_2` with respect to the shared representation (MGDA-UB),

.. math::
    \alpha^\star = \arg\min_{\alpha \in [0, 1]} \Vert \alpha g_1 + (1 - \alpha) g_2
        \Vert_2^2 = \mathrm{clip}_{[0, 1]}\Big(\frac{(g_2 - g_1)^\top g_2}
        {\Vert g_1 - g_2 \Vert_2^2}\Big).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MGDA_NORMALIZATIONS",
    "bottleneck_terms",
    "classification_loss",
    "future_pair_mask",
    "future_prediction_loss",
    "future_targets",
    "infogcn2_loss",
    "information_bottleneck_loss",
    "mgda_weights",
    "min_norm_weights",
    "rollout_l1_loss",
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


def future_targets(
    x: Tensor, steps: Tensor, num_future: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""The frames that forecasts made at frames ``steps`` predict, and which of them count.

    Args:
        x (Tensor): joints :math:`(B, V, T, C)`.
        steps (Tensor): the frames :math:`s_{b,k}` the forecasts start from, :math:`(B, S)`.
        num_future (int): frames :math:`N` per forecast.
        mask (Tensor, optional): :math:`(B, T)` real frames.

    Returns:
        (Tensor, Tensor): ``target[b, k, n - 1] = x[b, :, s + n]`` :math:`(B, S, N, V, C)` (every
        channel; a clamped frame where :math:`s + n \ge T`) and ``valid`` :math:`(B, S, N)`:
        :math:`s + n < T` and, with a mask, frames :math:`s` and :math:`s + n` real.
    """
    B, _, T, _ = x.shape
    if steps.dim() != 2 or steps.size(0) != B:
        raise ValueError(f"future_targets: steps: expected shape [{B}, S], got {list(steps.shape)}")
    n = torch.arange(1, num_future + 1, device=x.device)
    index = steps.to(x.device, torch.long).unsqueeze(-1) + n  # [B, S, N]
    valid = index < T
    index = index.clamp(max=T - 1)
    batch = torch.arange(B, device=x.device).view(B, 1, 1)
    target = x.transpose(1, 2)[batch, index]  # [B, S, N, V, C]
    if mask is not None:
        origin = mask.gather(1, steps.to(mask.device, torch.long).clamp(0, T - 1))
        valid = valid & mask[batch, index] & origin.unsqueeze(-1)
    return target, valid


def rollout_l1_loss(
    forecast: Tensor, x: Tensor, steps: Tensor, mask: Tensor | None = None
) -> Tensor:
    r""":math:`\mathcal{L}_{\mathrm{pred}}` of SymGNN (see the module description): the mean
    absolute error of the forecasts over the target joints that exist, are real and visible.

    Args:
        forecast (Tensor): :math:`(B, S, N, V, C_{out})`, ``forecast[b, k, n - 1]`` predicting
            frame ``steps[b, k] + n``.
        x (Tensor): joints :math:`(B, V, T, C)`; coordinates then the confidence.
        steps (Tensor): :math:`(B, S)`.
        mask (Tensor, optional): :math:`(B, T)` real frames.

    Returns:
        Tensor: 0-d, float32; zero when no target counts.
    """
    c_out = forecast.size(-1)
    target, valid = future_targets(x, steps, forecast.size(2), mask)
    visible = valid.unsqueeze(-1) & (target[..., -1] > 0)  # [B, S, N, V]
    error = (forecast.float() - target[..., :c_out].float()).abs().sum(dim=-1)
    weight = visible.to(error.dtype)
    return (error * weight).sum() / (weight.sum() * c_out).clamp_min(1.0)


def min_norm_weights(g1: Tensor, g2: Tensor) -> Tensor:
    r"""The weights :math:`(\alpha^\star, 1 - \alpha^\star)` of the minimum-norm point
    :math:`\alpha g_1 + (1 - \alpha) g_2` of the segment between two gradients (see the module
    description); :math:`(1/2, 1/2)` when they are equal.

    Returns:
        Tensor: :math:`(2,)`, float32, non-negative, summing to 1.
    """
    if g1.shape != g2.shape:
        raise ValueError(
            f"min_norm_weights: expected two gradients of one shape, got {list(g1.shape)} and "
            f"{list(g2.shape)}"
        )
    g1, g2 = g1.detach().flatten().float(), g2.detach().flatten().float()
    gap = (g1 - g2).square().sum()
    ratio = ((g2 - g1) @ g2) / gap.clamp_min(torch.finfo(torch.float32).tiny)
    alpha = torch.where(gap > 0, ratio.clamp(0.0, 1.0), torch.full_like(ratio, 0.5))
    return torch.stack([alpha, 1.0 - alpha])


#: How :func:`mgda_weights` scales each task's gradient before the min-norm point (Sener &
#: Koltun's gradient normalisers): by 1, its L2 norm, its loss, or both.
MGDA_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def mgda_weights(losses: Sequence[Tensor], shared: Tensor, normalization: str = "loss+") -> Tensor:
    r"""MGDA-UB's task weights for two losses: :func:`min_norm_weights` of their gradients
    :math:`g_i` with respect to the ``shared`` representation (the input of the task heads),
    computed with :func:`torch.autograd.grad` (the graph is kept for the backward pass of the
    weighted sum).

    As in Sener & Koltun's reference code, every gradient is first divided by a normaliser
    :math:`n_i` and the weights then apply to the losses as they are: ``"none"``
    (:math:`n_i = 1`), ``"l2"`` (:math:`\Vert g_i \Vert`; for two tasks always
    :math:`(1/2, 1/2)`), ``"loss"`` (:math:`\mathcal{L}_i`) or ``"loss+"``
    (:math:`\mathcal{L}_i \Vert g_i \Vert`: the weights follow the losses' sizes, not
    the gradients'). Without normalisation the task with the smaller gradient takes almost all
    the weight when the two differ by orders of magnitude (as a cross-entropy's and a pose
    error's do).

    Returns:
        Tensor: :math:`(2,)`, detached, on the simplex.
    """
    if len(losses) != 2:
        raise ValueError(f"mgda_weights: losses: expected two task losses, got {len(losses)}")
    if normalization not in MGDA_NORMALIZATIONS:
        raise ValueError(
            f"mgda_weights: normalization: expected one of {MGDA_NORMALIZATIONS}, "
            f"got {normalization!r}"
        )
    grads = []
    for i, loss in enumerate(losses):
        (grad,) = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        if grad is None:
            raise ValueError(
                f"mgda_weights: losses[{i}] does not depend on shared in the autograd graph (a "
                f"head computed inside a compiled graph hides that dependence)"
            )
        grad = grad.detach().float()
        norm = torch.ones((), device=grad.device)
        if normalization in ("l2", "loss+"):
            norm = norm * torch.linalg.vector_norm(grad)
        if normalization in ("loss", "loss+"):
            norm = norm * loss.detach().float()
        # a zero normaliser (a zero loss or gradient) leaves the zero gradient as it is
        grads.append(grad / torch.where(norm > 0, norm, torch.ones_like(norm)))
    return min_norm_weights(*grads)
