"""InfoGCN's information bottleneck: the latent head, the class priors, the objective's terms, and
the bottleneck as an option of InfoGCN++."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import CLASSES, TINY_INFOGCN2, synthetic_folder
from shipped_logits import assert_reference_logits, shipped_logits

from skelgraph.models import create, pretrained_path
from skelgraph.models.losses import bottleneck_terms, information_bottleneck_loss
from skelgraph.nn import InformationBottleneck
from skelgraph.nn.bottleneck import orthogonal_prior_means
from skelgraph.streaming import build_plan
from skelgraph.train.config import load_config
from skelgraph.train.run import prepare

pytestmark = pytest.mark.usefixtures("one_thread")


# the latent head ---------------------------------------------------------------------------------


def test_head_shapes_and_a_deterministic_mean_in_evaluation():
    torch.manual_seed(0)
    head = InformationBottleneck(12, 4, 8)
    h = torch.randn(5, 3, 12)
    out = head(h)
    assert out.logits.shape == (5, 3, 4)
    assert out.z.shape == out.mu.shape == out.logvar.shape == (5, 3, 8)
    assert not torch.equal(out.z, out.mu)  # a sample in training

    head.eval()
    first, second = head(h), head(h)
    assert torch.equal(first.z, first.mu) and torch.equal(first.z, second.z)
    torch.testing.assert_close(first.logits, head.classifier(first.mu))
    assert head.latent_channels == 8 and InformationBottleneck(12, 4).latent_channels == 12


def test_training_draws_the_reparameterised_sample():
    """z = mu + eps * min(exp(r log sigma^2), 100), eps the next standard normal draw."""
    torch.manual_seed(0)
    head = InformationBottleneck(6, 3, noise_ratio=0.25)
    with torch.no_grad():
        head.logvar.bias.fill_(30.0)  # exp(0.25 * 30) = 1808: clamped to 100 everywhere
    h = torch.randn(4, 6)
    torch.manual_seed(1)
    out = head(h)
    torch.manual_seed(1)
    eps = torch.randn_like(out.mu)
    std = torch.exp(0.25 * out.logvar).clamp(max=100.0)
    assert bool((std == 100.0).any())
    torch.testing.assert_close(out.z, out.mu + eps * std)


def test_prior_means_are_orthogonal_with_the_gain_as_norm_and_reproducible():
    means = orthogonal_prior_means(15, 32, gain=3.0, seed=0)
    assert means.shape == (15, 32)
    torch.testing.assert_close(means @ means.T, 9.0 * torch.eye(15), atol=1e-5, rtol=0)
    torch.manual_seed(123)  # the global random state plays no part
    assert torch.equal(orthogonal_prior_means(15, 32, gain=3.0, seed=0), means)
    assert not torch.allclose(orthogonal_prior_means(15, 32, gain=3.0, seed=1), means)

    head = InformationBottleneck(16, 5, 20, prior_gain=2.0, prior_seed=7)
    assert torch.equal(head.prior_means, orthogonal_prior_means(5, 20, 2.0, 7))
    assert "prior_means" in head.state_dict()  # a buffer: saved with the weights
    torch.testing.assert_close(head.prior_means.norm(dim=1), torch.full((5,), 2.0))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"num_classes <= channels.*20 classes and 8 channels"):
        InformationBottleneck(8, 20)
    with pytest.raises(ValueError, match="prior_gain: expected a positive number"):
        InformationBottleneck(8, 2, prior_gain=0)
    with pytest.raises(ValueError, match=r"h: expected shape \[\*, 8\]"):
        InformationBottleneck(8, 2)(torch.zeros(3, 7))


# the objective, by hand -------------------------------------------------------------------------

#: three clips of two classes (class 2 absent), latents of size 2, priors of three classes
Z = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]], [[-1.0, 0.0]]])
Y = torch.tensor([0, 0, 1])
PRIORS = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0]])
#: uniform scores for the first two clips; [0, ln 4, 0] for the third
LOGITS = torch.tensor([[[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, math.log(4.0), 0.0]]])


def test_every_term_of_the_objective_by_hand():
    # batch mean latent (1, 2): norm sqrt(5)
    # class 0: mean (2, 3) - prior (3, 0) = (-1, 3); class 1: (-1, 0) - (0, 3) = (-1, -3);
    # class 2 has no clip: MSE = (1 + 9 + 1 + 9) / 4 = 5
    # cross-entropy with label smoothing 0.1: uniform clips ln 3 = 1.0986123; the third clip
    # p = (1/6, 4/6, 1/6): 0.9 * ln 1.5 + 0.1 * (ln 6 + ln 1.5 + ln 6) / 3
    #   = 0.9 * 0.4054651 + 0.1 * 1.3296614 = 0.4978847; mean (2 * 1.0986123 + 0.4978847) / 3
    #   = 0.8983698
    # total = 0.8983698 + 1e-4 * 2.2360680 + 0.1 * 5 = 1.3985934
    terms = information_bottleneck_loss(LOGITS, Z, Y, PRIORS)
    assert set(terms) == {"loss", "cls", "z_norm", "z_prior"}
    assert terms["z_norm"].item() == pytest.approx(2.2360680, abs=1e-6)
    assert terms["z_prior"].item() == pytest.approx(5.0, abs=1e-6)
    assert terms["cls"].item() == pytest.approx(0.8983698, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(1.3985934, abs=1e-6)

    weighted = information_bottleneck_loss(LOGITS, Z, Y, PRIORS, lambda_1=1.0, lambda_2=2.0)
    assert weighted["loss"].item() == pytest.approx(0.8983698 + 2.2360680 + 10.0, abs=1e-5)


def test_per_step_terms_leave_padded_steps_out():
    # two clips of two steps, latents of size 1; the second clip's second step is padding.
    # real steps 2, 4 (class 0) and 10 (class 1): mean 16 / 3 = 5.3333333;
    # class 0: 3 - 1 = 2, class 1: 10 - (-1) = 11: MSE (4 + 121) / 2 = 62.5
    z = torch.tensor([[[2.0], [4.0]], [[10.0], [-6.0]]])
    y = torch.tensor([0, 1])
    priors = torch.tensor([[1.0], [-1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    z_norm, z_prior = bottleneck_terms(z, y, priors, mask)
    assert z_norm.item() == pytest.approx(16 / 3, abs=1e-6)
    assert z_prior.item() == pytest.approx(62.5, abs=1e-5)
    # every step counted: mean 10 / 4 = 2.5; class 1: (10 - 6) / 2 + 1 = 3: (4 + 9) / 2 = 6.5
    z_norm, z_prior = bottleneck_terms(z, y, priors)
    assert z_norm.item() == pytest.approx(2.5) and z_prior.item() == pytest.approx(6.5)
    # no real step: both terms vanish
    nothing = torch.zeros(2, 2, dtype=torch.bool)
    assert [t.item() for t in bottleneck_terms(z, y, priors, nothing)] == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"mask: expected shape \[2, 2\]"):
        bottleneck_terms(z, y, priors, mask[:, :1])


# InfoGCN++ with the bottleneck ------------------------------------------------------------------


def test_infogcn2_default_is_unchanged(tmp_path):
    """Off by default: no new weights and the shipped checkpoints (whose meta has none of the
    new arguments) load and give their reference logits."""
    model = create("infogcn2", num_classes=4, **TINY_INFOGCN2)
    assert model.bottleneck is None and model.config["information_bottleneck"] is False
    assert not any(k.startswith("bottleneck") for k in model.state_dict())
    assert model(torch.randn(1, 17, 5, 3)).extras == {}
    meta = torch.load(pretrained_path("penn-action-fast"), weights_only=True)["meta"]
    assert "information_bottleneck" not in meta["model_args"]
    assert_reference_logits("penn-action-fast", *shipped_logits("penn-action-fast", tmp_path))


def test_infogcn2_bottleneck_classifies_every_step_from_its_latent():
    torch.manual_seed(0)
    model = create("infogcn2", num_classes=4, **TINY_INFOGCN2, information_bottleneck=True)
    assert not hasattr(model, "classifier") and model.bottleneck.latent_channels == 16
    x = torch.randn(2, 17, 6, 3)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = model(x, mask)
    assert out.logits.shape == (2, 6, 4) and out.extras["z"].shape == (2, 6, 16)
    terms = model.loss(out, x, torch.tensor([1, 3]), mask)
    assert set(terms) == {"loss", "cls", "pred", "feat", "z_norm", "z_prior"}
    expected = (
        terms["cls"]
        + 0.1 * terms["pred"]
        + 0.1 * terms["feat"]
        + 1e-4 * terms["z_norm"]
        + 0.1 * terms["z_prior"]
    )
    torch.testing.assert_close(terms["loss"], expected)
    z_norm, z_prior = bottleneck_terms(
        out.extras["z"], torch.tensor([1, 3]), model.bottleneck.prior_means, mask
    )
    torch.testing.assert_close(terms["z_norm"], z_norm)
    torch.testing.assert_close(terms["z_prior"], z_prior)
    with pytest.raises(ValueError, match="head_channels: expected at least num_classes = 20"):
        create("infogcn2", num_classes=20, **TINY_INFOGCN2, information_bottleneck=True)


def test_infogcn2_bottleneck_streams_like_its_forward():
    torch.manual_seed(0)
    model = create("infogcn2", num_classes=4, **TINY_INFOGCN2, information_bottleneck=True)
    model.eval()
    x = torch.randn(2, 17, 7, 3)
    with torch.inference_mode():
        full = model(x).logits
        plan = build_plan(model)
        states = [plan.init_state(1) for _ in range(2)]
        state = model.init_state(2)
        for t in range(7):
            planned, _, states = plan.step_streams(x[:, :, t], states)
            stepped, _, state = model.step(x[:, :, t], state)
            torch.testing.assert_close(planned, full[:, t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(stepped, full[:, t], atol=1e-5, rtol=1e-5)


def test_infogcn2_bottleneck_trains_a_step_and_logs_its_terms(tmp_path):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    config = load_config(
        "infogcn2_small",
        [
            *(f"model.args.{k}={v}" for k, v in TINY_INFOGCN2.items()),
            "model.args.information_bottleneck=true",
            "data.window=8",
            "batch_size=4",
            "max_steps=1",
            "precision=fp32",
            "data.val_fraction=0.25",
        ],
    )
    trainer, _ = prepare(config, data, tmp_path / "work", cache_dir=tmp_path / "cache")
    before = {k: v.clone() for k, v in trainer.module.bottleneck.state_dict().items()}
    trainer.fit()
    (record,) = [
        json.loads(line) for line in (tmp_path / "work/log.jsonl").read_text().splitlines()
    ]
    assert {"loss", "cls", "pred", "feat", "z_norm", "z_prior"} <= set(record["train"])
    assert {"z_norm", "z_prior"} <= set(record["val"])
    assert all(math.isfinite(record["train"][k]) for k in ("z_norm", "z_prior"))
    after = trainer.module.bottleneck.state_dict()
    assert not torch.equal(after["mu.weight"], before["mu.weight"])  # the step reached the head
    assert torch.equal(after["prior_means"], before["prior_means"])  # the priors are fixed
    assert len(CLASSES) == trainer.module.bottleneck.num_classes
