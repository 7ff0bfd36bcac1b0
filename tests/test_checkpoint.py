from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from skelgraph.data import PennAction
from skelgraph.layouts import get_layout
from skelgraph.models import create
from skelgraph.models.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_weights,
    make_meta,
    pretrained_path,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    strip_prefixes,
    unwrap_model,
)
from skelgraph.train.checkpoint_data import check_compatible

MODEL_ARGS = {"channels": 16, "depth": 1}


def small_model(layout: str = "coco17", num_classes: int = 4) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model = create("infogcn2", num_classes=num_classes, layout=layout, **MODEL_ARGS)
    meta = make_meta(
        model="infogcn2",
        model_args=model.config,
        classes=[f"c{i}" for i in range(num_classes)],
        layout=layout,
        in_channels=3,
        window=16,
        preprocess={"confidence_threshold": 0.2},
        inference={"sampling": "clip", "stride": None, "p_interval": [0.95], "reduce": "mean"},
    )
    return model, meta


def test_round_trip_loads_with_weights_only(tmp_path):
    model, meta = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2, 17, 16, 3)
    model(x).logits.sum().backward()
    opt.step()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, meta, optimizer=opt, epoch=3)

    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "meta", "optimizer", "epoch"}
    assert raw["epoch"] == 3 and raw["meta"]["layout"]["name"] == "coco17"
    assert raw["meta"]["versions"]["torch"] == torch.__version__

    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta["classes"] == meta["classes"] and not loaded.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was moved, not left behind


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    model, meta = small_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, meta)
    state = torch.load(path, weights_only=True)
    state["state_dict"] = {prefix + k: v for k, v in state["state_dict"].items()}
    torch.save(state, path)
    loaded, _ = load_checkpoint(path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_strip_prefixes_and_unwrap():
    sd = {"module._orig_mod.a.weight": torch.zeros(1), "b": torch.ones(1)}
    assert list(strip_prefixes(sd)) == ["a.weight", "b"]
    inner = nn.Linear(2, 2)
    assert unwrap_model(nn.DataParallel(inner)) is inner
    assert unwrap_model(inner) is inner


def test_mismatches_are_named():
    model, _ = small_model(num_classes=4)
    other, _ = small_model(num_classes=5)
    state = other.state_dict()
    first = next(iter(state))
    state["extra.weight"] = torch.zeros(1)
    del state[first]
    with pytest.raises(ValueError) as err:
        load_weights(model, state, source="checkpoint x.pt")
    message = str(err.value)
    assert message.startswith("checkpoint x.pt does not fit the model")
    assert f"missing keys ['{first}']" in message
    assert "unexpected keys ['extra.weight']" in message
    assert "shape mismatches" in message and "[5" in message and "[4" in message


def test_non_plain_values_are_refused(tmp_path):
    model, meta = small_model()
    meta["model_args"]["layout"] = get_layout("coco17")  # a dataclass: weights_only would fail
    with pytest.raises(TypeError, match=r"\['model_args'\]\['layout'\]: .* got Layout"):
        save_checkpoint(tmp_path / "x.pt", model, meta)
    assert not list(tmp_path.iterdir())


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="expected a dict with 'state_dict' and 'meta'"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_meta_round_trip_and_required_fields():
    _, meta = small_model()
    described = CheckpointMeta.from_dict(meta)
    assert described.classes == ["c0", "c1", "c2", "c3"] and described.window == 16
    assert described.ensemble is None and "ensemble" not in meta
    assert described.to_dict() == meta and list(described.to_dict()) == list(meta)
    with pytest.raises(ValueError, match=r"meta lacks \['in_channels', 'model_args'\]"):
        CheckpointMeta.from_dict(
            {k: v for k, v in meta.items() if k not in ("in_channels", "model_args")}
        )


def test_read_checkpoint_names_the_fields_the_meta_lacks(tmp_path):
    model, meta = small_model()
    del meta["classes"]
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    with pytest.raises(ValueError, match=r"checkpoint .*model\.pt: meta lacks \['classes'\]"):
        read_checkpoint(path)


def test_resolve_checkpoint_takes_a_file_or_a_pretrained_name(tmp_path, monkeypatch):
    path = tmp_path / "penn-action"
    path.write_bytes(b"")
    assert resolve_checkpoint(path) == path
    assert resolve_checkpoint(str(path)) == path
    assert resolve_checkpoint("penn-action") == pretrained_path("penn-action")
    monkeypatch.chdir(tmp_path)  # a file of that name comes first
    assert resolve_checkpoint("penn-action") == path.relative_to(tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"missing\.pt: no such checkpoint file.*penn-action"
    ):
        resolve_checkpoint(tmp_path / "missing.pt")


def test_models_and_the_online_recogniser_do_not_import_train_serve_or_cli():
    code = (
        "import sys\n"
        "from skelgraph.models import Ensemble, pretrained_path\n"
        "from skelgraph.online import OnlineRecognizer\n"
        "import skelgraph.nn\n"
        "OnlineRecognizer.from_checkpoint('penn-action-fast')\n"
        "Ensemble.from_checkpoints([pretrained_path(n) for n in ('penn-action-fast', "
        "'penn-action')])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['skelgraph', 'train'], ['skelgraph', 'serve'], ['skelgraph', 'cli'])))\n"
    )
    root = Path(__file__).resolve().parents[1]  # this checkout's skelgraph comes first
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "[]"


def test_check_compatible_names_layout_joints_and_channels(penn_action_root, tmp_path):
    _, meta = small_model(layout="coco17")
    data = PennAction(penn_action_root, "test", window=16, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError) as err:
        check_compatible(meta, data)
    message = str(err.value)
    assert "layout 'coco17' (17 joints, 3 channels)" in message
    assert "layout 'penn13' (13 joints, 3 channels)" in message

    _, meta = small_model(layout="penn13", num_classes=15)
    with pytest.raises(ValueError, match=r"classes differ: checkpoint has 15"):
        check_compatible(meta, data)
    meta["classes"] = data.classes
    check_compatible(meta, data)
