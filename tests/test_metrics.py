from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from skelgraph.train.metrics import (
    classification_metrics,
    confusion_matrix,
    curve_auc,
    forecast_errors,
    format_table,
    motion_error_sums,
    motion_means,
    mpjpe,
    pck,
    topk_accuracy,
    write_confusion_csv,
    write_per_class_csv,
)


def one_hot_scores(predictions: list[int], num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[predictions]


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_macro_metrics_with_a_class_never_predicted():
    # true 0 0 1 1 2, predicted 0 1 1 1 0: class 2 is never predicted.
    # precision (1/2, 2/3, 0), recall (1/2, 1, 0), F1 (1/2, 4/5, 0)
    m = classification_metrics(one_hot_scores([0, 1, 1, 1, 0], 3), [0, 0, 1, 1, 2])
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)
    assert m["mean_class_acc"] == pytest.approx(1 / 2)
    np.testing.assert_allclose(m["per_class"]["f1"], [0.5, 0.8, 0.0])
    np.testing.assert_array_equal(m["per_class"]["support"], [2, 2, 1])
    assert m["num_samples"] == 5


def test_macro_averages_skip_classes_absent_from_labels_and_predictions():
    scores = one_hot_scores([0, 1, 1], 4)  # classes 2 and 3 neither true nor predicted
    m = classification_metrics(scores, [0, 1, 0])
    # precision (1, 1/2), recall (1/2, 1), F1 (2/3, 2/3)
    assert m["macro_precision"] == pytest.approx(3 / 4)
    assert m["macro_recall"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["mean_class_acc"] == pytest.approx(3 / 4)


def test_mean_class_accuracy_weights_classes_equally():
    labels = [0] * 8 + [1] * 2
    predictions = [0] * 8 + [0, 1]
    m = classification_metrics(one_hot_scores(predictions, 2), labels)
    assert m["top1"] == pytest.approx(0.9)
    assert m["mean_class_acc"] == pytest.approx((1.0 + 0.5) / 2)


def test_top5_counts_rank_five_and_not_rank_six():
    scores = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]] * 2)
    assert topk_accuracy(scores, [4, 5], 5) == pytest.approx(0.5)
    assert topk_accuracy(scores, [4, 5], 1) == 0.0
    assert topk_accuracy(scores, [0, 5], 1) == 0.5


def test_topk_caps_k_and_breaks_ties_like_argmax():
    scores = np.zeros((2, 3))
    assert topk_accuracy(scores, [0, 2], 1) == 0.5  # argmax of a tie is class 0
    assert topk_accuracy(scores, [0, 2], 5) == 1.0  # k > K counts everything
    assert classification_metrics(scores, [0, 2])["top5"] == 1.0


def test_invalid_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"labels: expected classes in \[0, 3\)"):
        classification_metrics(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match="scores: expected shape"):
        classification_metrics(np.zeros(3), [0])
    with pytest.raises(ValueError, match="labels: expected 2 entries"):
        topk_accuracy(np.zeros((2, 3)), [0], 1)


def test_curve_auc_trapezoid_normalised():
    assert curve_auc([0.0, 0.5, 1.0], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    fractions = np.round(np.arange(1, 11) / 10, 1)
    assert curve_auc(fractions, fractions) == pytest.approx((1.0**2 - 0.1**2) / 2 / 0.9)
    assert curve_auc(fractions, np.ones(10)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        curve_auc([0.0, 0.0], [1.0, 1.0])


def make_forecast_case(offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [1, V=2, T=4, C=3] with a forecast that is the true future shifted by ``offset`` in x."""
    torch.manual_seed(0)
    x = torch.rand(1, 2, 4, 3)
    x[..., -1] = 1.0
    steps = 2
    forecast = torch.zeros(1, 4, steps, 2, 2)
    for t in range(4):
        for n in range(1, steps + 1):
            if t + n < 4:
                forecast[0, t, n - 1] = x[0, :, t + n, :2]
    forecast[..., 0] += offset
    return forecast, x


def test_forecast_errors_exact_and_offset():
    forecast, x = make_forecast_case(0.0)
    out = forecast_errors(forecast, x)
    np.testing.assert_array_equal(out["count"].numpy(), [3, 2])  # T - n valid origins
    np.testing.assert_allclose(out["sq_err"].numpy(), [0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(out["pck_hits"].numpy(), out["pck_count"].numpy())

    forecast, x = make_forecast_case(0.3)
    out = forecast_errors(forecast, x)
    # squared error 0.09 in x, 0 in y → mean over (joint, coordinate) 0.045 per frame pair
    np.testing.assert_allclose((out["sq_err"] / out["count"]).numpy(), [0.045, 0.045], rtol=1e-6)


def test_forecast_errors_respect_the_frame_mask():
    forecast, x = make_forecast_case(0.0)
    mask = torch.tensor([[True, True, True, False]])
    out = forecast_errors(forecast, x, mask)
    np.testing.assert_array_equal(out["count"].numpy(), [2, 1])


def test_mpjpe_and_pck_by_hand():
    # one sample, 2 future steps, 3 joints; errors (3-4-5 triangles and axis offsets)
    target = torch.zeros(1, 2, 3, 3)
    target[..., -1] = 1.0
    pred = torch.zeros(1, 2, 3, 2)
    pred[0, 0] = torch.tensor([[0.3, 0.4], [0.0, 0.1], [0.0, 0.0]])  # errors 0.5, 0.1, 0
    pred[0, 1] = torch.tensor([[0.0, 0.2], [0.6, 0.8], [0.0, 0.0]])  # errors 0.2, 1.0, 0
    np.testing.assert_allclose(mpjpe(pred, target), [0.6 / 3, 1.2 / 3])
    np.testing.assert_allclose(pck(pred, target), [2 / 3, 1 / 3])  # 0.2 is not below 0.2
    np.testing.assert_allclose(pck(pred, target, threshold=0.55), [1.0, 2 / 3])
    sums = motion_error_sums(pred, target)
    np.testing.assert_allclose(sums["count"].numpy(), [3, 3])
    np.testing.assert_allclose(sums["hits"].numpy(), [2, 1])


def test_mpjpe_and_pck_leave_out_joints_without_a_known_position():
    target = torch.zeros(2, 1, 2, 3)
    target[..., -1] = torch.tensor([[[1.0, 0.0]], [[0.5, 1.0]]])  # joint 1 of sample 0 missing
    target[1, 0, 1, 0] = float("nan")  # and sample 1's joint 1 has no coordinates
    pred = torch.zeros(2, 1, 2, 2)
    pred[:, 0, 0, 0] = torch.tensor([0.1, 0.3])  # the counted joints' errors
    pred[0, 0, 1] = 100.0  # far off, but not counted
    np.testing.assert_allclose(mpjpe(pred, target), [0.2])  # occluded (0.5) joints count
    np.testing.assert_allclose(pck(pred, target), [0.5])
    nothing = target.clone()
    nothing[..., -1] = 0.0
    assert np.isnan(mpjpe(pred, nothing)).all() and np.isnan(pck(pred, nothing)).all()


def test_motion_sums_accumulate_over_batches():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 4, 5, 2, generator=generator) * 0.2
    target = torch.cat(
        [torch.randn(6, 4, 5, 2, generator=generator) * 0.2, torch.ones(6, 4, 5, 1)], -1
    )
    halves = [motion_error_sums(pred[i : i + 3], target[i : i + 3]) for i in (0, 3)]
    summed = motion_means({k: halves[0][k] + halves[1][k] for k in halves[0]})
    np.testing.assert_allclose(summed["mpjpe"], mpjpe(pred, target))
    np.testing.assert_allclose(summed["pck"], pck(pred, target))
    with pytest.raises(ValueError, match=r"target: expected shape \[6, 4, 5, 3\]"):
        motion_error_sums(pred, target[..., :2])


def test_format_table_and_csv_files(tmp_path):
    m = classification_metrics(one_hot_scores([0, 1, 1, 1, 0], 3), [0, 0, 1, 1, 2])
    table = format_table(m, {"macro_f1": "Macro F1", "top1": "Accuracy"})
    lines = table.splitlines()
    assert len(lines) == 4
    assert "Macro F1" in lines[2] and "0.4333" in lines[2]
    assert "Accuracy" in lines[3] and "0.6000" in lines[3]
    assert "confusion" not in format_table(m)

    classes = ["a", "b", "c"]
    write_per_class_csv(m["per_class"], classes, tmp_path / "per_class.csv")
    rows = list(csv.DictReader((tmp_path / "per_class.csv").read_text().splitlines()))
    assert [r["class"] for r in rows] == classes
    assert float(rows[1]["f1"]) == pytest.approx(0.8)
    write_confusion_csv(m["confusion"], classes, tmp_path / "confusion.csv")
    rows = list(csv.reader((tmp_path / "confusion.csv").read_text().splitlines()))
    assert rows[0][1:] == classes
    assert rows[3] == ["c", "1", "0", "0"]


def test_empty_input_gives_nan_accuracy():
    assert math.isnan(topk_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 1))
