"""The packaged checkpoints, and checkpoints in the format they were written in, still load and
give the logits they gave when they were made."""

from __future__ import annotations

import pytest
import torch
from shipped_logits import SHIPPED, assert_reference_logits, shipped_logits

from skelgraph.layouts import get_layout
from skelgraph.models import create, pretrained_path
from skelgraph.models.checkpoint import CheckpointMeta, load_checkpoint


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_gives_the_reference_logits(tmp_path, name):
    """Bit for bit under the CPU kernels the reference was computed with; other instruction sets
    round differently."""
    classes, logits = shipped_logits(name, tmp_path)
    assert logits.shape == (15, 32, 15)
    assert_reference_logits(name, classes, logits)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_meta_reads_back_unchanged(name):
    meta = torch.load(pretrained_path(name), weights_only=True)["meta"]
    assert CheckpointMeta.from_dict(meta).to_dict() == meta


def old_meta(model_args: dict, *, complete: bool = True) -> dict:
    """A checkpoint ``meta`` as the trainer wrote it, a plain dict; only the fields any
    checkpoint has when not ``complete``."""
    meta = {
        "classes": ["a", "b", "c"],
        "layout": get_layout("penn13").to_dict(),
        "in_channels": 3,
        "window": 8,
        "model": "stgcn",
        "model_args": model_args,
        "preprocess": {"confidence_threshold": 0.2, "eps": 1e-06, "center": True},
        "versions": {"skelgraph": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu"},
        "inference": {"sampling": "clip", "stride": None, "p_interval": [0.95], "reduce": "mean"},
    }
    if complete:
        return meta
    required = ("classes", "layout", "in_channels", "window", "model", "model_args")
    return {k: meta[k] for k in required}


@pytest.mark.parametrize("complete", [True, False])
def test_checkpoint_with_an_old_dict_meta_loads(tmp_path, complete):
    model_args = {"channels": [4, 4], "strides": [1, 2], "kernel_size": 3, "dropout": 0.0}
    meta = old_meta(model_args, complete=complete)
    torch.manual_seed(0)
    model = create("stgcn", num_classes=3, layout=meta["layout"], **model_args).eval()
    path = tmp_path / "old.pt"
    torch.save({"state_dict": model.state_dict(), "meta": meta, "optimizer": None}, path)

    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta and not loaded.training
    assert CheckpointMeta.from_dict(meta).to_dict() == meta
    x = torch.randn(2, 13, 8, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
