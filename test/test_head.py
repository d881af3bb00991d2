"""Behaviour of the dynamic head's parts: motion compensation, matching,
losses, angle bins, post-processing, query propagation and ids."""
from __future__ import annotations

import math

import pytest
import torch

from sparsecomp_core.models.bev.grid import BEVGrid, BEVGridConfig
from sparsecomp_core.models.head.boxes import angle_bin_targets, decode_boxes, refine_yaw
from sparsecomp_core.models.head.dynamic_head import DynamicHead
from sparsecomp_core.models.head.heatmap import gaussian_focal_loss, heatmap_peaks, heatmap_targets
from sparsecomp_core.models.head.losses import (DynamicLoss, DynamicLossConfig, HungarianMatcher, distance_weights,
                                                 encode_boxes)
from sparsecomp_core.models.head.postprocess import PostProcessConfig, postprocess
from sparsecomp_core.models.head.query_queue import KeptQueries, QueryQueue, compensate, zero_static_velocities


def pose(yaw: float, x: float, y: float) -> torch.Tensor:
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    matrix[:2, 3] = torch.tensor([x, y])
    return matrix


def kept(points, velocities, t_us, ego2global, ids=None, labels=None) -> KeptQueries:
    points, velocities = torch.tensor([points]), torch.tensor([velocities])
    k = points.shape[1]
    return KeptQueries(torch.zeros(1, k, 8), points, velocities,
                       torch.zeros(1, k, dtype=torch.long) if labels is None else torch.tensor([labels]),
                       torch.ones(1, k), torch.arange(k)[None] if ids is None else torch.tensor([ids]),
                       torch.tensor([t_us]), ego2global[None], torch.tensor([True]))


@pytest.mark.parametrize("ego_yaw_change, ego_move", [(0.0, (0.0, 0.0)), (0.0, (1.5, 0.2)), (0.35, (1.2, 0.4)),
                                                      (-1.0, (-0.5, 2.0))])
def test_constant_velocity_box_lands_on_its_current_position(ego_yaw_change, ego_move):
    """A box moving at constant global velocity, seen 0.3 s ago from another ego
    pose: compensated reference point = its current position in the current ego frame."""
    velocity_global = torch.tensor([4.0, -2.0, 0.0], dtype=torch.float64)
    start_global = torch.tensor([110.0, 52.0, 0.8], dtype=torch.float64)
    dt = 0.3
    past_pose, current_pose = pose(0.4, 100.0, 50.0), pose(0.4 + ego_yaw_change, 100.0 + ego_move[0], 50.0 + ego_move[1])
    to_ego = lambda p, m: torch.linalg.inv(m)[:3, :3] @ (p - m[:3, 3])             # noqa: E731
    point_past = to_ego(start_global, past_pose)
    velocity_past = torch.linalg.inv(past_pose)[:3, :3] @ velocity_global
    queries = kept([point_past.float().tolist()], [velocity_past.float().tolist()], 1_000_000, past_pose)
    points, velocities = compensate(queries, current_pose[None], torch.tensor([1_000_000 + int(dt * 1e6)]))
    expected = to_ego(start_global + velocity_global * dt, current_pose)
    torch.testing.assert_close(points[0, 0].double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(velocities[0, 0].double(), torch.linalg.inv(current_pose)[:3, :3] @ velocity_global,
                               atol=1e-5, rtol=0)


def test_static_classes_lose_their_velocity():
    velocities = torch.ones(1, 3, 3)
    zeroed = zero_static_velocities(velocities, torch.tensor([[0, 6, 7]]))
    assert zeroed[0, 0].tolist() == [1.0, 1.0, 1.0] and zeroed[0, 1:].abs().sum() == 0


def test_scene_change_clears_the_query_queue():
    queue = QueryQueue(frames=(kept([[1.0, 2.0, 0.0]], [[0.0, 0.0, 0.0]], 0, pose(0, 0, 0)),), sequence_ids=("a",))
    assert len(queue.checked_for_scene_change(torch.tensor([100_000]), ["a"])) == 1
    assert len(queue.checked_for_scene_change(torch.tensor([2_100_001]), ["a"])) == 0
    assert len(queue.checked_for_scene_change(torch.tensor([-1]), ["a"])) == 0
    assert len(queue.checked_for_scene_change(torch.tensor([100_000]), ["b"])) == 0


def test_matching_assigns_the_obviously_right_pairs():
    matcher = HungarianMatcher(DynamicLossConfig())
    gt_centres = torch.tensor([[10.0, 0.0, 0.0], [-5.0, 5.0, 0.0], [30.0, -20.0, 0.0]])
    gt_labels = torch.tensor([0, 3, 6])
    centres = torch.tensor([[0.0, 40.0, 0.0], [30.2, -19.9, 0.0], [9.8, 0.1, 0.0], [-5.1, 5.2, 0.0], [50.0, 0.0, 0.0]])
    logits = torch.full((5, 8), -4.0)
    logits[1, 6] = logits[2, 0] = logits[3, 3] = 2.0
    pred, gt = matcher(logits, centres, gt_labels, gt_centres)
    assert dict(zip(gt.tolist(), pred.tolist())) == {0: 2, 1: 3, 2: 1}


def perfect_outputs(boxes: torch.Tensor, labels: torch.Tensor, occlusion: torch.Tensor, num_queries: int = 6) -> dict:
    regression = torch.zeros(1, 1, num_queries, 11)
    regression[0, 0, :, :3] = torch.tensor([60.0, 40.0, 0.0])                    # unmatched far away
    regression[0, 0, :len(boxes)] = encode_boxes(boxes)
    cls = torch.full((1, 1, num_queries, 8), -12.0)
    cls[0, 0, torch.arange(len(boxes)), labels] = 12.0
    angle = torch.full((1, 1, num_queries, 8), -30.0)
    angle[0, 0, :len(boxes)] = torch.where(angle_bin_targets(boxes[:, 6]) > 0, 30.0, -30.0)
    occ = torch.full((1, 1, num_queries, 4), -30.0)
    occ[0, 0, torch.arange(len(boxes)), occlusion] = 30.0
    return {"cls_logits": cls, "regression": regression, "angle_logits": angle, "occlusion_logits": occ}


def test_a_perfect_prediction_has_near_zero_loss_and_an_error_raises_it():
    boxes = torch.tensor([[10.0, 2.0, 0.8, 4.5, 1.9, 1.6, 0.3, 5.0, 0.0, 0.0],
                          [-3.0, 7.0, 0.9, 0.6, 0.6, 1.8, -2.0, 0.0, 1.0, 0.0]])
    labels, occlusion = torch.tensor([0, 3]), torch.tensor([0, 2])
    loss = DynamicLoss(DynamicLossConfig())
    perfect = loss(perfect_outputs(boxes, labels, occlusion), [{"boxes": boxes, "labels": labels, "occlusion": occlusion}])
    assert perfect["loss_box"] < 1e-5 and perfect["loss_cls"] < 1e-4
    assert perfect["loss_occlusion"] < 1e-6 and perfect["loss_angle"] < 0.75   # soft targets keep some entropy
    shifted = perfect_outputs(boxes, labels, occlusion)
    shifted["regression"][0, 0, 0, 0] += 1.0                                     # 1 m off in x
    worse = loss(shifted, [{"boxes": boxes, "labels": labels, "occlusion": occlusion}])
    # car at 10.2 m: weight 2 (6-12 m); L1 1 m; box weight 0.25, task 1.25, 2 objects
    assert worse["loss_box"].item() == pytest.approx(2.0 * 1.0 * 0.25 * 1.25 / 2, rel=1e-4)


def test_distance_weights_follow_the_spec():
    cfg = DynamicLossConfig()
    labels = torch.tensor([3, 4, 5, 0, 1, 2, 3, 0, 3, 6, 6, 7])
    distances = torch.tensor([1.0, 5.9, 3.0, 2.0, 5.0, 4.0, 6.5, 11.0, 20.0, 0.0, 15.0, 40.0])
    centres = torch.stack([distances * 0.6, distances * 0.8, torch.zeros_like(distances)], 1)
    weights = distance_weights(labels, centres, cfg)
    assert weights[:6].tolist() == [4.0] * 6            # VRU and moving, 0-6 m
    assert weights[6:8].tolist() == [2.0, 2.0]           # 6-12 m
    assert weights[8].item() == 1.0                      # beyond 12 m
    assert weights[9].item() == pytest.approx(4.0) and 1.0 < weights[10].item() < 4.0 and weights[11].item() == 1.0


def test_velocity_loss_is_weighted_down_for_occluded_objects():
    boxes = torch.tensor([[20.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.3, 5.0, 0.0, 0.0]])
    losses = []
    for occlusion in (0, 3):
        outputs = perfect_outputs(boxes, torch.tensor([0]), torch.tensor([occlusion]))
        outputs["regression"][0, 0, 0, 8] += 2.0                                   # 2 m/s velocity error
        losses.append(DynamicLoss(DynamicLossConfig())(outputs, [{"boxes": boxes, "labels": torch.tensor([0]),
                                                                  "occlusion": torch.tensor([occlusion])}])["loss_box"])
    assert losses[1].item() == pytest.approx(losses[0].item() * 0.25, rel=1e-4)


def test_angle_bins_overlap_at_boundaries_and_refine_the_yaw():
    inside = angle_bin_targets(torch.tensor([math.radians(20.0)]))
    assert inside[0].tolist() == [1.0, 0, 0, 0, 0, 0, 0, 0]
    boundary = angle_bin_targets(torch.tensor([math.radians(45.5)]))          # within 1.25 deg of 45
    assert boundary[0, :2].tolist() == [0.5, 0.5] and boundary[0, 2:].sum() == 0
    logits = torch.full((8,), -5.0)
    logits[4] = 5.0                                                            # bin 180-225 deg
    flipped = refine_yaw(torch.tensor(math.radians(20.0)), logits)           # regressed 180 deg off
    assert flipped.item() == pytest.approx(math.radians(200.0) - 2 * math.pi, abs=1e-5)
    kept_yaw = refine_yaw(torch.tensor(math.radians(-160.0)), logits)
    assert kept_yaw.item() == pytest.approx(math.radians(-160.0), abs=1e-5)


def test_postprocess_thresholds_limits_and_suppresses_duplicates():
    q = 150
    cls = torch.full((1, 1, q, 8), -10.0)
    cls[0, 0, :120, 0] = torch.linspace(3.0, 0.0, 120)                        # 120 cars above 0.5
    boxes = torch.zeros(1, 1, q, 10)
    boxes[0, 0, :, 0] = torch.arange(q, dtype=torch.float32) * 10             # far apart
    boxes[0, 0, 1, 0] = 0.5                                                    # duplicate of query 0
    outputs = {"cls_logits": cls, "occlusion_logits": torch.zeros(1, 1, q, 4), "boxes": boxes,
               "ids": torch.arange(q)[None]}
    plain = postprocess(outputs, PostProcessConfig(score_threshold=0.3, max_objects=100))[0]
    assert len(plain["scores"]) == 100 and plain["scores"].min() >= 0.3
    assert (plain["scores"][:-1] >= plain["scores"][1:]).all()
    with_nms = postprocess(outputs, PostProcessConfig(score_threshold=0.3, max_objects=100, nms=True))[0]
    assert 1 not in with_nms["ids"].tolist() and 0 in with_nms["ids"].tolist()


def test_newest_kept_queries_continue_as_the_first_slots():
    grid = BEVGrid(BEVGridConfig(cell_size=6.4))
    head = DynamicHead(grid, num_queries=12, topk_query=4, queue_length=3, embed_dims=16, num_layers=1,
                       num_heads=2, ffn_channels=32, neck_channels=8).eval()
    tokens = torch.randn(1, grid.height * grid.width, 8)
    ego = torch.eye(4, dtype=torch.float64)[None]
    queue = head.empty_queue()
    all_ids = []
    for step in range(3):
        stamp = torch.tensor([step * 100_000])
        with torch.no_grad():
            out = head(tokens, ego, stamp, queue, ["s"])
        assert out["propagated"][0, :4].all().item() == (step > 0) and not out["propagated"][0, 4:].any()
        if step:
            kept_embeddings = queue.frames[0].embeddings
            assert not torch.equal(out["embeddings"][:, :4], kept_embeddings)   # refined by the decoder
        assert len(set(out["ids"][0].tolist())) == 12
        all_ids.append(out["ids"][0])
        queue = head.update_queue(out, ego, stamp, ["s"])
    assert len(queue) == 2                                                     # queue_length 3 = 2 past frames


def test_ids_follow_the_compensated_kept_queries():
    from sparsecomp_core.models.head.track_ids import associate_ids
    centres = torch.tensor([[[10.0, 0.0, 0.0], [20.3, 5.0, 0.0], [40.0, 0.0, 0.0], [0.0, 30.0, 0.0], [-5.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 3, 0, 6, 1]])
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.05, 0.9]])
    newest = (torch.tensor([[[10.5, 0.2, 0.0], [20.0, 5.0, 0.0], [40.0, 0.5, 0.0], [0.0, 30.0, 0.0]]]),
              torch.tensor([[0, 3, 1, 6]]), torch.tensor([[101, 102, 103, 104]]), torch.ones(1, 4, dtype=torch.bool))
    older = (torch.tensor([[[-5.5, 0.5, 0.0], [10.0, 0.0, 0.0]]]), torch.tensor([[1, 0]]), torch.tensor([[55, 101]]),
             torch.ones(1, 2, dtype=torch.bool))
    ids, next_id = associate_ids(centres, labels, scores, [newest, older], next_id=1000)
    ids = ids[0].tolist()
    assert ids[0] == 101 and ids[1] == 102           # same class, within the gate
    assert ids[2] >= 1000                            # nearby but another class: a new object
    assert ids[3] >= 1000                            # too unconfident to continue a track
    assert ids[4] == 55                              # found in an older frame (missed in the newest)
    assert len(set(ids)) == 5 and next_id == 1005


def test_heatmap_targets_peak_at_each_centre_in_its_class_only():
    grid = BEVGrid(BEVGridConfig(cell_size=1.6))
    boxes = torch.tensor([[10.3, 4.1, 0.8, 4.5, 1.9, 1.6, 0, 0, 0, 0],      # car
                          [-5.0, -8.0, 0.9, 0.6, 0.6, 1.8, 0, 0, 0, 0],     # person
                          [-90.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0, 0]])    # car outside the grid
    heat = heatmap_targets(grid, [{"boxes": boxes, "labels": torch.tensor([0, 3, 0])}])[0]   # [8, H, W]
    car_cell, _ = grid.cell_index(boxes[:1])
    person_cell, _ = grid.cell_index(boxes[1:2])
    assert heat[0].flatten()[car_cell] == 1 and heat[3].flatten()[person_cell] == 1
    assert (heat == 1).sum() == 2                                       # the outside car adds nothing
    assert heat[[1, 2, 4, 5, 6, 7]].abs().sum() == 0
    row, col = divmod(int(car_cell), grid.width)
    along_x = heat[0, row, col:col + 4]
    assert (along_x[1:] < along_x[:-1]).all() or (along_x[1:] == 0).any()   # falls off away from the centre
    assert 0 < heat[0, row, col + 1] < 1


def test_heatmap_peaks_are_local_maxima_of_their_class():
    logits = torch.full((1, 8, 10, 12), -8.0)
    logits[0, 2, 4, 5] = 3.0            # a bus peak
    logits[0, 2, 4, 6] = 2.0            # its neighbour: suppressed
    logits[0, 6, 8, 1] = 1.0            # a barrier elsewhere
    cells, labels, scores = heatmap_peaks(logits, 2)
    assert cells.tolist() == [[4 * 12 + 5, 8 * 12 + 1]] and labels.tolist() == [[2, 6]]
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([[3.0, 1.0]])))


def test_gaussian_focal_loss_is_low_for_the_target_and_high_for_its_opposite():
    grid = BEVGrid(BEVGridConfig(cell_size=3.2))
    heat = heatmap_targets(grid, [{"boxes": torch.tensor([[10.0, 4.0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0, 0]]),
                                   "labels": torch.tensor([0])}])
    good = torch.where(heat == 1, torch.tensor(6.0), torch.tensor(-6.0))
    assert gaussian_focal_loss(good, heat) < 0.05 < 1.0 < gaussian_focal_loss(-good, heat)


def test_heatmap_queries_start_at_the_peaks_with_their_features():
    grid = BEVGrid(BEVGridConfig(cell_size=3.2))
    torch.manual_seed(0)
    head = DynamicHead(grid, num_queries=24, topk_query=8, embed_dims=32, num_heads=4, ffn_channels=64,
                       neck_channels=16, heatmap_queries=4)
    logits = torch.full((1, 8, grid.height, grid.width), -8.0)
    peaks = [(3, 5, 7), (0, 20, 30)]                                     # (class, row, column), strongest first
    for (label, row, col), value in zip(peaks, (4.0, 3.0)):
        logits[0, label, row, col] = value
    bev = torch.randn(1, grid.height * grid.width, 32)
    content, reference = head.peak_queries(logits, bev)
    for n, (label, row, col) in enumerate(peaks):
        cell = row * grid.width + col
        xy = grid.denormalise(reference[0, n])[:2]
        torch.testing.assert_close(xy, grid.cell_centres()[cell])
        expected = bev[0, cell] + head.class_embedding(torch.nn.functional.one_hot(torch.tensor(label), 8).float())
        torch.testing.assert_close(content[0, n], expected)


def test_box_coder_round_trip_and_the_bins_turn_a_flipped_heading_back():
    boxes = torch.tensor([[10.0, -2.0, 0.8, 4.5, 1.9, 1.6, 2.9, 5.0, -1.0, 0.0],
                          [3.0, 4.0, 1.0, 0.7, 0.7, 1.8, -0.4, 0.0, 1.2, 0.0]])
    regression = encode_boxes(boxes)
    bins = torch.where(angle_bin_targets(boxes[:, 6]) > 0, 5.0, -5.0)
    torch.testing.assert_close(decode_boxes(regression, bins), boxes, atol=1e-5, rtol=0)
    flipped = regression.clone()
    flipped[:, 6:8] = -flipped[:, 6:8]                  # regressed heading off by pi: the bins decide
    torch.testing.assert_close(decode_boxes(flipped, bins), boxes, atol=1e-5, rtol=0)
