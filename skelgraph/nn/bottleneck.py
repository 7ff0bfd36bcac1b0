r"""InfoGCN's information-bottleneck head: a Gaussian latent, class-conditional priors and the
classifier that reads the latent."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["BottleneckOutput", "InformationBottleneck", "orthogonal_prior_means"]


class BottleneckOutput(NamedTuple):
    """What :class:`InformationBottleneck` returns, every field of shape :math:`(*, \\cdot)`.

    Attributes:
        logits (Tensor): class scores :math:`(*, K)` read from :attr:`z`.
        z (Tensor): the latent :math:`(*, D)`: a sample in training, the mean in evaluation.
        mu (Tensor): the mean :math:`\\mu` :math:`(*, D)`.
        logvar (Tensor): the log-variance :math:`\\log \\sigma^2` :math:`(*, D)`.
    """

    logits: Tensor
    z: Tensor
    mu: Tensor
    logvar: Tensor


def orthogonal_prior_means(
    num_classes: int, channels: int, gain: float = 3.0, seed: int = 0
) -> Tensor:
    r"""Fixed class prior means :math:`M \in \mathbb{R}^{K \times D}` with orthogonal rows of norm
    :math:`g`: :math:`M = g\, Q^\top` for the orthonormal factor :math:`Q` (:math:`D \times K`,
    signs fixed by the diagonal of :math:`R`) of the QR decomposition of a standard Gaussian
    :math:`D \times K` matrix drawn from a generator seeded with ``seed``. The same arguments give
    the same means on every machine and run, whatever the global random state.

    Raises:
        ValueError: when :math:`K > D` (at most :math:`D` vectors of :math:`\mathbb{R}^D` are
            orthogonal).
    """
    if not 1 <= num_classes <= channels:
        raise ValueError(
            f"orthogonal_prior_means: expected 1 <= num_classes <= channels (orthogonal class "
            f"means need a latent at least as wide as the classes), got {num_classes} classes "
            f"and {channels} channels"
        )
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(channels, num_classes, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)
    return (gain * q.t()).to(torch.get_default_dtype())


class InformationBottleneck(nn.Module):
    r"""The information-bottleneck head of `"InfoGCN: Representation Learning for Human
    Skeleton-based Action Recognition" <https://arxiv.org/abs/2206.00270>`_: pooled encoder
    features :math:`\mathbf{h}` become a Gaussian latent :math:`\mathbf{z}` that the classifier
    reads, with a prior per class.

    .. math::
        \mathbf{u} = \mathrm{Dropout}(\mathrm{ReLU}(\mathbf{W}_u \mathbf{h} + \mathbf{b}_u)),
        \qquad \boldsymbol{\mu} = \mathbf{W}_\mu \mathbf{u} + \mathbf{b}_\mu,
        \qquad \log \boldsymbol{\sigma}^2 = \mathbf{W}_\sigma \mathbf{u} + \mathbf{b}_\sigma,

    .. math::
        \mathbf{z} = \begin{cases}
            \boldsymbol{\mu} + \boldsymbol{\epsilon} \odot \min\big(e^{r \log
            \boldsymbol{\sigma}^2}, 100\big), \; \boldsymbol{\epsilon} \sim \mathcal{N}(0, I)
            & \text{in training (reparameterised)} \\
            \boldsymbol{\mu} & \text{in evaluation (deterministic)}
        \end{cases}
        \qquad \hat{\mathbf{y}} = \mathbf{W}_y \mathbf{z} + \mathbf{b}_y.

    The noise ratio :math:`r` scales the standard deviation's exponent (:math:`r = 1/2` is the
    usual :math:`\sigma = e^{\frac{1}{2} \log \sigma^2}`). The prior of class :math:`c` is
    :math:`\mathcal{N}(\mathbf{m}_c, I)` with the fixed means of :func:`orthogonal_prior_means`
    (orthogonal, norm :math:`g`), a buffer :attr:`prior_means` :math:`(K, D)` saved with the
    weights; :func:`~skelgraph.models.losses.bottleneck_terms` pulls every class's mean latent
    towards its :math:`\mathbf{m}_c`. The three latent maps are initialised as in InfoGCN
    (Xavier-uniform with the ReLU gain :math:`\sqrt{2}`), the classifier by PyTorch's default: the
    reference code's :math:`\mathcal{N}(0, 2 / K)` gives logits with a standard deviation of
    10–30 on the pooled features of untrained encoders on Penn Action clips (a cross-entropy near
    20), which the first epochs then spend undoing under gradient clipping.

    Args:
        in_channels (int): size :math:`C` of the pooled features :math:`\mathbf{h}`.
        num_classes (int): classes :math:`K`.
        latent_channels (int, optional): latent size :math:`D \ge K`. (default: ``in_channels``,
            InfoGCN's :math:`n_z`)
        prior_gain (float, optional): norm :math:`g` of the prior means (InfoGCN's
            ``z_prior_gain``). (default: :obj:`3.0`)
        noise_ratio (float, optional): :math:`r`. (default: :obj:`0.5`)
        dropout (float, optional): dropout on :math:`\mathbf{u}`. (default: :obj:`0.0`)
        prior_seed (int, optional): seed of the prior means. (default: :obj:`0`)

    Shapes:
        - **input:** :math:`(*, C)`
        - **output:** :class:`BottleneckOutput`: logits :math:`(*, K)`, z, mu and logvar
          :math:`(*, D)`
    """

    prior_means: Tensor

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        latent_channels: int | None = None,
        *,
        prior_gain: float = 3.0,
        noise_ratio: float = 0.5,
        dropout: float = 0.0,
        prior_seed: int = 0,
    ) -> None:
        super().__init__()
        latent_channels = in_channels if latent_channels is None else latent_channels
        for name, value in (("in_channels", in_channels), ("latent_channels", latent_channels)):
            if value < 1:
                raise ValueError(
                    f"InformationBottleneck: {name}: expected a positive integer, got {value}"
                )
        if not prior_gain > 0:
            raise ValueError(
                f"InformationBottleneck: prior_gain: expected a positive number, got {prior_gain}"
            )
        if not noise_ratio >= 0:
            raise ValueError(
                f"InformationBottleneck: noise_ratio: expected a number >= 0, got {noise_ratio}"
            )
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.num_classes = num_classes
        self.noise_ratio = noise_ratio
        self.hidden = nn.Linear(in_channels, latent_channels)
        self.dropout = nn.Dropout(dropout)
        self.mu = nn.Linear(latent_channels, latent_channels)
        self.logvar = nn.Linear(latent_channels, latent_channels)
        self.classifier = nn.Linear(latent_channels, num_classes)
        means = orthogonal_prior_means(num_classes, latent_channels, prior_gain, prior_seed)
        self.register_buffer("prior_means", means)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialises the maps (see the class description); the prior means stay as they
        are."""
        for lin in (self.hidden, self.mu, self.logvar, self.classifier):
            lin.reset_parameters()
        for lin in (self.hidden, self.mu, self.logvar):
            nn.init.xavier_uniform_(lin.weight, gain=nn.init.calculate_gain("relu"))

    def encode(self, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""The mean and log-variance :math:`(*, D)` of the latent of features ``h``
        :math:`(*, C)`."""
        if h.size(-1) != self.in_channels:
            raise ValueError(
                f"InformationBottleneck: h: expected shape [*, {self.in_channels}], "
                f"got {list(h.shape)}"
            )
        u = self.dropout(self.hidden(h).relu())
        return self.mu(u), self.logvar(u)

    def sample(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """The latent: a reparameterised sample in training, ``mu`` in evaluation."""
        if not self.training:
            return mu
        std = torch.exp(self.noise_ratio * logvar).clamp(max=100.0)
        return mu + torch.randn_like(std) * std

    def forward(self, h: Tensor) -> BottleneckOutput:
        mu, logvar = self.encode(h)
        z = self.sample(mu, logvar)
        return BottleneckOutput(self.classifier(z), z, mu, logvar)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.num_classes}, latent_channels={self.latent_channels}, "
            f"noise_ratio={self.noise_ratio}"
        )
