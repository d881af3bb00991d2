"""Ground truth whose velocity is unknown (NaN, as nuscenes-devkit leaves it) is left out
of the velocity loss and of AVE instead of counting as 0 m/s."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsecomp_core.evaluation.detection_metrics import Detection
from sparsecomp_core.evaluation.metrics import detection_report
from sparsecomp_core.models.head.losses import DynamicLoss, DynamicLossConfig

NUM_QUERIES = 6
VELOCITY = slice(8, 11)             # velocity entries of the regression (centre 3, log size 3, sin, cos)


def batch_with_unknown_velocities():
    """One decoder layer's outputs for 6 queries (the first 4 on the 4 ground-truth boxes,
    confidently of their class) and targets where boxes 1 and 3 have an unknown velocity."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[5.0, 2.0, 0.8, 4.2, 1.9, 1.6, 0.3, 8.0, 0.5, 0.0],
                          [-12.0, 6.0, 0.9, 0.6, 0.6, 1.8, 1.2, float("nan"), float("nan"), float("nan")],
                          [20.0, -7.0, 1.2, 9.0, 2.5, 3.2, -2.0, -4.0, 1.0, 0.0],
                          [3.0, -15.0, 0.8, 4.5, 1.8, 1.5, 2.5, float("nan"), float("nan"), float("nan")]])
    labels = torch.tensor([0, 3, 1, 0])
    targets = [{"boxes": boxes, "labels": labels, "occlusion": torch.tensor([0, 1, 2, 0])}]
    regression = torch.randn(1, 1, NUM_QUERIES, 11, generator=gen)
    regression[0, 0, :4, :3] = boxes[:, :3] + 0.3 * torch.randn(4, 3, generator=gen)
    regression[0, 0, 4:, :3] = torch.tensor([[35.0, 30.0, 1.0], [-30.0, -30.0, 1.0]])
    cls_logits = torch.full((1, 1, NUM_QUERIES, 8), -4.0)
    cls_logits[0, 0, torch.arange(4), labels] = 4.0
    outputs = {"cls_logits": cls_logits, "regression": regression,
               "angle_logits": torch.randn(1, 1, NUM_QUERIES, 8, generator=gen),
               "occlusion_logits": torch.randn(1, 1, NUM_QUERIES, 4, generator=gen)}
    return outputs, targets


def losses_and_gradients(outputs: dict, targets: list[dict]) -> tuple[dict, dict]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
    losses = DynamicLoss(DynamicLossConfig())(leaves, targets)
    sum(losses.values()).backward()
    return {k: v.detach() for k, v in losses.items()}, {k: v.grad for k, v in leaves.items()}


def test_unknown_velocities_do_not_move_the_velocity_loss():
    outputs, targets = batch_with_unknown_velocities()
    loss = DynamicLoss(DynamicLossConfig())
    pred_idx, gt_idx = loss.matcher(outputs["cls_logits"][0, 0], outputs["regression"][0, 0, :, :3],
                                    targets[0]["labels"], targets[0]["boxes"][:, :3])
    assert dict(zip(gt_idx.tolist(), pred_idx.tolist())) == {0: 0, 1: 1, 2: 2, 3: 3}

    # The same batch without those boxes' velocity terms: their velocity target set to what
    # their query predicts, so each term is 0 in value and gradient (|x| has gradient 0 at 0).
    reference_targets = [{**targets[0], "boxes": targets[0]["boxes"].clone()}]
    unknown = [1, 3]
    reference_targets[0]["boxes"][unknown, 7:10] = outputs["regression"][0, 0, unknown, VELOCITY]

    values, grads = losses_and_gradients(outputs, targets)
    expected_values, expected_grads = losses_and_gradients(outputs, reference_targets)
    assert all(torch.isfinite(v) for v in values.values())
    for name in expected_values:
        assert values[name] == pytest.approx(float(expected_values[name]), rel=1e-6, abs=1e-9), name
    for name in expected_grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-6, atol=1e-9)
    velocity_grads = grads["regression"][0, 0, :4, VELOCITY].abs().sum(dim=1)
    assert (velocity_grads[unknown] == 0).all() and (velocity_grads[[0, 2]] > 0).all()

    # Counting them as 0 m/s instead would change the loss: the rule is not vacuous.
    as_zero = [{**targets[0], "boxes": torch.nan_to_num(targets[0]["boxes"])}]
    assert losses_and_gradients(outputs, as_zero)[0]["loss_box"] > values["loss_box"] * 1.01


def test_unknown_velocities_are_skipped_in_ave():
    """Every car with a known velocity is predicted 1 m/s off; those with an unknown one
    get a 10 m/s prediction. AVE is 1 m/s only if the unknown ones are left out."""
    rng = np.random.default_rng(0)
    gts, preds = {}, []
    for s in range(8):
        sample = f"s{s}"
        gts[sample] = []
        for k in range(3):
            box = np.array([*rng.uniform(-30, 30, 2), 0.8, 4.0, 1.8, 1.5, 0.0, 3.0, -2.0, 0.0])
            if k == 1:
                box[7:10] = np.nan
            gts[sample].append(Detection(sample, box, 0))
            predicted = box.copy()
            predicted[7:9] = [10.0, 0.0] if k == 1 else box[7:9] + [1.0, 0.0]
            predicted[9] = 0.0
            preds.append(Detection(sample, predicted, 0, float(rng.uniform(0.2, 1.0))))
    report = detection_report(gts, preds)
    assert report["per_class"]["car"]["vel_err"] == pytest.approx(1.0)
    assert report["mAVE"] == pytest.approx(1.0) and not math.isnan(report["NDS"])
