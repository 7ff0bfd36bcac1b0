"""torch.compile gives the eager numbers: the option of the trainer and of ``skelgraph test``."""

from __future__ import annotations

import argparse

import torch

from skelgraph.cli.train import _flag_overrides
from skelgraph.models import create
from skelgraph.train.config import load_config


def test_compiled_infogcn2_matches_eager_in_training_and_inference():
    torch.manual_seed(0)
    model = create(
        "infogcn2", num_classes=5, layout="penn13", channels=16, depth=1, head_channels=16
    )
    x = torch.randn(2, 13, 8, 3)
    x[..., -1] = torch.rand(2, 13, 8)
    y = torch.tensor([1, 3])
    params = list(model.parameters())

    def step() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        out = model(x)
        loss = model.loss(out, x, y)["loss"]
        return out.logits, loss, list(torch.autograd.grad(loss, params))

    def clip() -> torch.Tensor:
        with torch.no_grad():
            return model.eval().clip_logits(x)

    logits, loss, grads = step()
    scores = clip()
    model.train().compile()
    logits_c, loss_c, grads_c = step()
    torch.testing.assert_close(logits_c, logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss_c, loss, atol=1e-5, rtol=1e-4)
    for got, expected in zip(grads_c, grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clip(), scores, atol=1e-5, rtol=1e-4)
    # the parameter names stay those of the eager model (checkpoints load either way)
    assert list(model.state_dict()) == list(create("infogcn2", **model.config).state_dict())


def test_compile_is_a_config_key_and_a_train_flag():
    assert load_config("penn_action_infogcn2").compile is False
    assert load_config("penn_action_infogcn2", ["compile=true"]).compile is True
    args = argparse.Namespace(max_steps=None, limit=None, no_early=False, compile=True, cv=None)
    assert _flag_overrides(args) == ["compile=true"]
