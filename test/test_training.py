"""The training entry point: logs every loss, checkpoints, resumes exactly."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sparsecomp_core.config import to_dict
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.models.bev.lidar import LidarBranch
from sparsecomp_core.models.detector import SparseCompDetector
from sparsecomp_core.models.head.losses import DynamicLossConfig
from sparsecomp_core.models.model_config import CameraDropoutConfig
from sparsecomp_core.data.dataset import ConcatSequenceDataset, SequenceDataset
from sparsecomp_core.rig import load_rig
from sparsecomp_core.training.train import TrainConfig, load_initial_weights, load_module_weights, train

sys.path.insert(0, str(Path(__file__).parent))
from test_detector import micro_config  # noqa: E402


def config(tmp_path: Path, out: str, steps: int, stage: str = "stage1") -> TrainConfig:
    model_yaml = tmp_path / "micro.yaml"
    if not model_yaml.exists():
        model_yaml.write_text(yaml.safe_dump(to_dict(micro_config())))
    return TrainConfig(model=str(model_yaml), data_root=str(tmp_path / "data"), data_version="v1.0-train",
                       stage=stage, steps=steps, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1,
                       out_dir=str(tmp_path / out), freeze_module_schedules={"fuser": 3} if stage == "stage2" else {})


def record_detector_inputs(monkeypatch, summary) -> list:
    """From now on every SparseCompDetector.forward call appends summary(inputs) to the returned list."""
    seen = []
    detector_forward = SparseCompDetector.forward

    def recording_detector(self, inputs, state=None, targets=None):
        seen.append(summary(inputs))
        return detector_forward(self, inputs, state, targets)
    monkeypatch.setattr(SparseCompDetector, "forward", recording_detector)
    return seen


def failed_and_peak(inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """cam_mask [B, V] (True: failed) and each image's largest absolute pixel value [B, V]."""
    return inputs.cam_mask.clone(), inputs.images.flatten(2).abs().amax(2)


def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=2, frames=5, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    straight = torch.load(train(config(tmp_path, "straight", 4)), weights_only=False)["model"]
    train(config(tmp_path, "resumed", 2))
    resumed = torch.load(train(config(tmp_path, "resumed", 4), resume=True), weights_only=False)["model"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    log = [json.loads(line) for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert {"loss_cls", "loss_box", "loss_angle", "loss_occlusion", "loss_ssl", "loss_vae_rec", "loss_vae_kl",
            "loss_planning_guided", "grad_norm", "lr"} <= set(log[-1])


def test_stage2_streams_scenes_and_follows_the_freeze_schedule(tmp_path):
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=1, frames=5, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    train(config(tmp_path, "stage2", 4, stage="stage2"))
    log = [json.loads(line) for line in (tmp_path / "stage2" / "train_log.jsonl").read_text().splitlines()]
    assert [r["frozen"] for r in log] == [["fuser"]] * 3 + [[]]


def test_sensor_dropout_trains_without_lidar_or_without_cameras_and_dropped_samples_get_no_input(tmp_path,
                                                                                                 monkeypatch):
    """Stage 2 with every issue-14 option on (3 merged sweeps, velocity from history, completed cameras
    in the BEV with the temporal level, LiDAR and camera-stream dropout): some streams run without
    LiDAR, some with every camera failed, and exactly the samples logged as dropped reach the LiDAR
    branch without a single point, or the model with all their cameras masked and black."""
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=2, frames=5, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    model_yaml = tmp_path / "micro_sweeps.yaml"
    model_yaml.write_text(yaml.safe_dump(to_dict(micro_config(
        lidar={"sweeps": 3}, head={"velocity_from_history": True},
        view_transform={"use_completed_cameras": True, "extra_levels": [2]}))))
    seen_clouds: list[list[torch.Tensor]] = []
    lidar_forward = LidarBranch.forward

    def recording_lidar(self, points):
        seen_clouds.append([p.detach().clone() for p in points])
        return lidar_forward(self, points)
    monkeypatch.setattr(LidarBranch, "forward", recording_lidar)
    seen_cameras = record_detector_inputs(monkeypatch, failed_and_peak)
    cfg = config(tmp_path, "dropout", 10, stage="stage2")
    cfg.model, cfg.lidar_dropout, cfg.camera_stream_dropout = str(model_yaml), 0.4, 0.4
    train(cfg)
    log = [json.loads(line) for line in (tmp_path / "dropout" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log)
    no_lidar, no_cameras = [r["lidar_dropped"] for r in log], [r["cameras_dropped"] for r in log]
    assert 0 < sum(no_lidar) < 2 * len(log) and 0 < sum(no_cameras) < 2 * len(log)   # each, and also kept
    assert [sum(len(cloud) == 0 for cloud in clouds) for clouds in seen_clouds] == no_lidar
    # Camera dropout fails at most 2 of the 7 cameras: all 7 failed and black is the stream dropout.
    assert [int((mask.all(1) & (peak == 0).all(1)).sum()) for mask, peak in seen_cameras] == no_cameras
    kept = [cloud for clouds in seen_clouds for cloud in clouds if len(cloud)]
    assert all(cloud.shape[1] == 5 for cloud in kept)          # x, y, z, intensity, dt_s
    assert max(float(cloud[:, 4].max()) for cloud in kept) == pytest.approx(0.2)   # up to 2 sweeps back


def test_crashed_cameras_stay_failed_and_black_through_a_training_stream(tmp_path, monkeypatch):
    """camera_crash 1.0 without per-frame dropout: every frame the model trains on has 1 or 2
    cameras failed and black, the same ones while a stream goes on (same scene, time moving on),
    and a new stream draws again."""
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=2, frames=4, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    seen = record_detector_inputs(monkeypatch, lambda inputs: (list(inputs.sequence_ids), inputs.timestamp_us.tolist(),
                                                               *failed_and_peak(inputs)))
    cfg = config(tmp_path, "crash", 12, stage="stage2")
    cfg.camera_dropout, cfg.camera_crash = False, 1.0
    train(cfg)
    assert len(seen) == 12
    for _, _, mask, peak in seen:
        assert ((mask.sum(1) >= 1) & (mask.sum(1) <= 2)).all()
        assert (peak[mask] == 0).all() and (peak[~mask] > 0).all()
    continued = new_streams = 0
    for (ids, stamps, mask, _), (next_ids, next_stamps, next_mask, _) in zip(seen, seen[1:]):
        for slot in range(2):
            if ids[slot] == next_ids[slot] and next_stamps[slot] > stamps[slot]:
                assert torch.equal(mask[slot], next_mask[slot])
                continued += 1
            else:
                new_streams += not torch.equal(mask[slot], next_mask[slot])
    assert continued >= 6 and new_streams >= 1      # streams of up to 4 frames: both cases happen


def test_camera_dropout_faults_replace_the_model_configs_for_this_stage_and_are_saved_with_it(tmp_path,
                                                                                               monkeypatch):
    """A stage may fail more cameras than the model config's 1-2 (Frame Lost loses 3+ of 7 in a third of
    its frames): every training frame then has exactly the stage's count failed and black, and the
    saved model config says what the weights were trained with. More cameras than the rig has: refused."""
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=1, frames=4, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    masks = record_detector_inputs(monkeypatch, failed_and_peak)
    cfg = config(tmp_path, "faults", 3, stage="stage2")
    cfg.camera_dropout_faults = CameraDropoutConfig(p_missing=1.0, n_min=4, n_max=4)
    saved = torch.load(train(cfg), weights_only=False)["model_config"]
    assert masks and all((mask.sum(1) == 4).all() and (peak[mask] == 0).all() and (peak[~mask] > 0).all()
                         for mask, peak in masks)
    assert saved["camera_dropout"] == {"p_missing": 1.0, "n_min": 4, "n_max": 4}
    cfg = config(tmp_path, "too_many", 1)
    cfg.camera_dropout_faults = CameraDropoutConfig(p_missing=0.5, n_min=1, n_max=8)
    with pytest.raises(ValueError, match="n_max=8 cameras, but the rig 'default7' has 7"):
        train(cfg)


def test_a_stages_loss_weights_replace_the_model_configs_and_are_saved_with_it(tmp_path):
    """TrainConfig.loss (e.g. velocity weighed more for one stage) is the loss the stage trains
    with: a zero box weight leaves no box term in the logged losses, while the same stage with
    the model's weights has one; the saved model config says what was used."""
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=1, frames=3, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    box_terms = {}
    for name, loss in (("model_loss", None), ("no_box", DynamicLossConfig(box_weight=0.0))):
        cfg = config(tmp_path, name, 2)
        cfg.loss = loss
        saved = torch.load(train(cfg), weights_only=False)["model_config"]
        logged = [json.loads(line) for line in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        box_terms[name] = [entry["loss_box"] for entry in logged]
        assert saved["loss"]["box_weight"] == (0.25 if loss is None else 0.0)
    assert all(term > 0 for term in box_terms["model_loss"]) and all(term == 0 for term in box_terms["no_box"])


def test_camera_stream_dropout_needs_a_lidar_and_the_two_probabilities_sum_to_at_most_1(tmp_path):
    camera_only = tmp_path / "micro_camera.yaml"
    camera_only.write_text(yaml.safe_dump(to_dict(micro_config(lidar={"enable": False}))))
    cfg = config(tmp_path, "camera_only", 1)
    cfg.model, cfg.camera_stream_dropout = str(camera_only), 0.2
    with pytest.raises(ValueError, match="has no LiDAR"):
        train(cfg)
    with pytest.raises(ValueError, match="at most one modality"):
        TrainConfig(lidar_dropout=0.7, camera_stream_dropout=0.4)


def test_init_skip_modules_keeps_only_the_named_modules_fresh():
    """A stage-1 result of another head.queue_length starts stage 2: the skipped module keeps its fresh
    weights (its shape differs), everything else is the checkpoint's; any other mismatch stays an error."""
    def model(history_frames: int) -> torch.nn.Module:
        return torch.nn.ModuleDict({"trunk": torch.nn.Linear(4, 4), "fusion": torch.nn.Linear(4, history_frames + 1)})
    torch.manual_seed(0)
    trained = model(3).state_dict()
    torch.manual_seed(1)
    longer = model(8)
    fresh = {name: value.clone() for name, value in longer.state_dict().items()}
    load_initial_weights(longer, trained, ["fusion"])
    torch.testing.assert_close(longer.trunk.weight, trained["trunk.weight"], rtol=0, atol=0)
    torch.testing.assert_close(longer.fusion.weight, fresh["fusion.weight"], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_initial_weights(model(8), trained, [])
    with pytest.raises(ValueError, match="names no module"):
        load_initial_weights(model(8), trained, ["fusio"])


def test_init_modules_from_takes_the_named_module_from_another_model_and_nothing_else():
    """A fused model's camera path started from the camera-only model: the named module is the
    other model's, bit for bit; the rest stays; a module the two models shape differently is refused."""
    def model(fused_inputs: int) -> torch.nn.Module:
        return torch.nn.ModuleDict({"camera_branch": torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)),
                                    "fuser": torch.nn.Linear(4 * fused_inputs, 4)})
    torch.manual_seed(0)
    camera_only = model(1)
    camera_only.camera_branch[1].running_mean.fill_(3.0)      # buffers come along
    torch.manual_seed(1)
    fused = model(2)
    before = {name: value.clone() for name, value in fused.state_dict().items()}
    assert load_module_weights(fused, "camera_branch", camera_only.state_dict()) == 7    # 2 linear, 5 batch norm
    for name, value in fused.state_dict().items():
        expected = camera_only.state_dict()[name] if name.startswith("camera_branch.") else before[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="other shapes"):
        load_module_weights(fused, "fuser", camera_only.state_dict())
    with pytest.raises(ValueError, match="names no module"):
        load_module_weights(fused, "camera", camera_only.state_dict())
    with pytest.raises(ValueError, match="differs between the models"):
        load_module_weights(fused, "camera_branch", {"camera_branch.0.weight": torch.zeros(4, 4)})


def test_training_on_two_versions_streams_the_scenes_of_both(tmp_path, monkeypatch):
    """data_version as a list: one set of every version's scenes; stage 2 streams scenes of both, and
    two versions with the same scene names (one stream id for two scenes) are refused."""
    for version, seed in (("v1.0-train", 4), ("v1.0-more", 6)):
        generate(tmp_path / "data", version, "default7", seed=seed, scenes=1, frames=4, image_size=(64, 128),
                 lidar_beams=8, lidar_azimuths=128, progress=False)
    rig = load_rig("default7")
    first, second = (SequenceDataset(str(tmp_path / "data"), v, rig, (64, 128)) for v in ("v1.0-train", "v1.0-more"))
    both = ConcatSequenceDataset([first, second])
    assert [name for name, _ in both.scenes] == [first.scenes[0][0], second.scenes[0][0]]
    assert len(both) == 8 and both.scene_length(1) == 4
    assert both.load(1, 2).timestamp_us == second.load(0, 2).timestamp_us
    assert both.load(1, 2).sequence_id == second.scenes[0][0]

    streamed: list[str] = []
    load = SequenceDataset.load

    def recording_load(self, scene, index):
        frame = load(self, scene, index)
        streamed.append(frame.sequence_id)
        return frame
    monkeypatch.setattr(SequenceDataset, "load", recording_load)
    cfg = config(tmp_path, "two_versions", 6, stage="stage2")
    cfg.data_version = ["v1.0-train", "v1.0-more"]
    train(cfg)
    assert set(streamed) == {first.scenes[0][0], second.scenes[0][0]}

    generate(tmp_path / "data", "v1.0-again", "default7", seed=4, scenes=1, frames=4, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    again = SequenceDataset(str(tmp_path / "data"), "v1.0-again", rig, (64, 128))
    with pytest.raises(ValueError, match="scene names repeat"):
        ConcatSequenceDataset([first, again])
    with pytest.raises(ValueError, match="empty list"):
        TrainConfig(data_version=[])
