"""benchmarks/recipe.py: a whole quick run of the recipe's single model and ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import synthetic_folder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_recipe_benchmark_trains_the_streams_and_writes_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import recipe

    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    argv = [
        "--datasets", f"tiny={data}", "--work-dir", str(tmp_path / "work"),
        "--output-dir", str(tmp_path / "out"), "--quiet",
        "--overrides", "max_steps=2", "model.args.channels=8", "early_recognition=false",
    ]  # fmt: skip
    assert recipe.main(argv) == 0
    record = json.loads((tmp_path / "out/recipe.json").read_text())
    result = record["datasets"]["tiny"]
    entries = [row["entry"] for row in result["rows"]]
    assert entries[:2] == ["auto, single (joint+velocity)", "auto, ensemble (3 streams)"]
    assert len(entries) == 4 and all(0 <= row["test_top1"] <= 1 for row in result["rows"])
    # a small set trains on every clip: no validation accuracy, and no NaN in the JSON
    assert all(row["val_top1"] is None for row in result["rows"])
    assert "data.window:" in result["recipe"] and "model.args.channels: 8" in result["recipe"]
    table = capsys.readouterr().out
    assert "| tiny" in table and "auto, ensemble (3 streams)" in table
    assert (tmp_path / "work/tiny/ensemble.pt").is_file()


def test_the_recipe_benchmark_tunes_small_data_on_a_held_out_part_then_trains_on_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip(
        "optuna", reason='the tune entry needs Optuna: pip install "skelgraph[tune]"'
    )
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import recipe

    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    argv = [
        "--datasets", f"tiny={data}", "--work-dir", str(tmp_path / "work"),
        "--output-dir", str(tmp_path / "out"), "--quiet", "--tune-minutes", "5",
        "--overrides", "max_steps=2", "model.args.channels=8", "early_recognition=false",
        "tune.trials=1",
    ]  # fmt: skip
    assert recipe.main(argv) == 0
    result = json.loads((tmp_path / "out/recipe.json").read_text())["datasets"]["tiny"]
    assert result["tune"]["trials"] == 1
    assert result["rows"][-1]["entry"].startswith("auto + tune (1 trials")
    # the recipe trains on every clip of this small set; the trials held out a part, and the
    # best values train on every clip again
    assert "data.val_fraction: 0.0" in result["recipe"]
    assert "val_fraction: 0.2" in (tmp_path / "work/tiny-tune/trials/0/config.yaml").read_text()
    assert "val_fraction: 0.0" in (tmp_path / "work/tiny-tune/best.yaml").read_text()
    assert result["rows"][-1]["val_top1"] is None
