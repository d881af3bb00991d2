"""nuScenes submissions and the nuScenes protocol: our --protocol nuscenes equals the
devkit's DetectionEval on the same submission file; generated sets open in the devkit."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsecomp_core import jsonio
from sparsecomp_core.data.nuscenes_layout import NuScenesLayout
from sparsecomp_core.evaluation import nuscenes_protocol
from sparsecomp_core.evaluation.evaluate import main as evaluate_main

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from eval_fixtures import micro_checkpoint, small_dataset  # noqa: E402
from test_metrics_devkit import devkit_python  # noqa: E402,F401  (fixture)

VERSION = "v1.0-eval"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return small_dataset(tmp_path_factory.mktemp("nuscenes_protocol"), VERSION, seed=4, scenes=2, frames=5,
                         lidar_beams=32, lidar_azimuths=512)


@pytest.fixture(scope="module")
def model_run(generated, tmp_path_factory) -> dict:
    """A micro model's run through the CLI: its submission and both reports."""
    folder = tmp_path_factory.mktemp("model_run")
    checkpoint = micro_checkpoint(folder / "micro.pt", seed=1)
    common = ["--checkpoint", str(checkpoint), "--data-root", str(generated), "--version", VERSION, "--device", "cpu"]
    report_file = folder / "reports" / "report.json"                # a folder that does not exist yet
    nuscenes = evaluate_main([*common, "--protocol", "nuscenes", "--results-out", str(folder / "submission.json"),
                              "--out", str(report_file)])
    return {"submission": folder / "submission.json", "report": nuscenes, "report_file": report_file,
            "ours": evaluate_main(common)}


def noisy_submission(root: Path, seed: int) -> dict:
    """Every sample of the set: its ground truth (detection classes) perturbed, some missed,
    some renamed, wrong attributes, flipped headings, false positives near and beyond the
    class ranges, equal scores (ties), a few empty samples."""
    rng = np.random.default_rng(seed)
    layout = NuScenesLayout(root, VERSION)
    gt, _ = nuscenes_protocol.ground_truth(layout, nuscenes_protocol.split_samples(layout))
    results = {}
    for token, boxes in gt.items():
        out = []
        if rng.random() < 0.1:
            results[token] = out
            continue
        for box in boxes:
            if rng.random() < (0.2 if box.num_pts else 0.8):      # boxes without points leave the ground truth
                continue
            det = box.detection
            yaw = det.box[6] + rng.choice([0.0, 0.0, math.pi]) + rng.normal(0, 0.15)
            name = box.name if rng.random() < 0.9 else str(rng.choice(nuscenes_protocol.DETECTION_NAMES))
            relevant = [a for a in nuscenes_protocol.ATTRIBUTE_NAMES if a.split(".")[0] ==
                        {"car": "vehicle", "truck": "vehicle", "bus": "vehicle", "pedestrian": "pedestrian",
                         "bicycle": "cycle", "motorcycle": "cycle"}.get(name, "-")]
            out.append({"sample_token": token,
                        "translation": [float(v) for v in det.box[:3] + [*rng.normal(0, 0.5, 2), 0.0]],
                        "size": [float(v) for v in np.array([det.box[4], det.box[3], det.box[5]]) *
                                 rng.uniform(0.8, 1.2, 3)],
                        "rotation": [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)],
                        "velocity": [float(v) for v in np.nan_to_num(det.box[7:9]) + rng.normal(0, 1.0, 2)],
                        "detection_name": name,
                        "detection_score": float(rng.choice([0.5, rng.uniform(0.05, 1.0)])),
                        "attribute_name": str(rng.choice(relevant)) if relevant else ""})
        pose = layout.tables["ego_pose"][layout.sample_data_by_sample[token]["LIDAR_TOP"]["ego_pose_token"]]
        for distance in (*rng.uniform(2, 60, 2), 29.9, 30.1):
            angle = rng.uniform(-math.pi, math.pi)
            out.append({"sample_token": token,
                        "translation": [pose["translation"][0] + distance * math.cos(angle),
                                        pose["translation"][1] + distance * math.sin(angle), 1.0],
                        "size": [1.0, 1.0, 1.0], "rotation": [1.0, 0.0, 0.0, 0.0], "velocity": [0.0, 0.0],
                        "detection_name": str(rng.choice(nuscenes_protocol.DETECTION_NAMES)),
                        "detection_score": float(rng.uniform(0.05, 0.5)), "attribute_name": ""})
        results[token] = out
    return nuscenes_protocol.submission(results)


def assert_equal_to_devkit(ours: dict, devkit: dict) -> None:
    assert ours["mAP"] == pytest.approx(devkit["mean_ap"], abs=1e-6)
    assert ours["NDS"] == pytest.approx(devkit["nd_score"], abs=1e-6)
    for metric, name in nuscenes_protocol.METRIC_NAMES.items():
        assert ours[name] == pytest.approx(devkit["tp_errors"][metric], abs=1e-6), name
    for cls, values in ours["per_class"].items():
        for threshold, ap in values["ap"].items():
            assert ap == pytest.approx(devkit["label_aps"][cls][threshold], abs=1e-6), (cls, threshold)
        for metric in nuscenes_protocol.ALL_TP_METRICS:
            expected = devkit["label_tp_errors"][cls][metric]
            if expected is None or (isinstance(expected, float) and math.isnan(expected)):
                assert values[metric] is None or math.isnan(values[metric]), (cls, metric)
            else:
                assert values[metric] == pytest.approx(expected, abs=1e-6), (cls, metric)


def test_submission_boxes_are_global_nuscenes_boxes():
    ego2global = np.eye(4)
    ego2global[:3, :3] = nuscenes_protocol.yaw_matrix(math.pi / 2)
    ego2global[:3, 3] = [100.0, 50.0, 0.0]
    box = nuscenes_protocol.submission_box("tok", np.array([10.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0, 5.0, 0.0, 0.0]), 0,
                                           0.75, ego2global)
    assert box["translation"] == pytest.approx([100.0, 60.0, 1.0]) and box["size"] == [2.0, 4.0, 1.5]
    assert box["rotation"] == pytest.approx([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    assert box["velocity"] == pytest.approx([0.0, 5.0]) and box["detection_score"] == 0.75
    assert (box["detection_name"], box["attribute_name"]) == ("car", "vehicle.moving")
    names = [nuscenes_protocol.submission_box("t", np.zeros(10) + 1, label, 0.5, np.eye(4))["detection_name"]
             for label in range(8)]
    assert names == ["car", "truck", "bus", "pedestrian", "bicycle", "bicycle", "barrier", "traffic_cone"]


def test_results_out_is_a_strict_json_submission_for_every_sample(generated, model_run):
    content = jsonio.loads_strict(model_run["submission"].read_text())
    jsonio.loads_strict(model_run["report_file"].read_text())
    layout = NuScenesLayout(generated, VERSION)
    assert set(content["results"]) == set(layout.tables["sample"])
    assert set(content["meta"]) == {"use_camera", "use_lidar", "use_radar", "use_map", "use_external"}
    assert content["meta"]["use_camera"] and content["meta"]["use_lidar"] and not content["meta"]["use_radar"]
    boxes = [b for items in content["results"].values() for b in items]
    assert boxes and all(b["sample_token"] == t for t, items in content["results"].items() for b in items)
    for box in boxes:
        assert len(box["translation"]) == 3 and len(box["size"]) == 3 and len(box["velocity"]) == 2
        assert min(box["size"]) > 0 and np.linalg.norm(box["rotation"]) == pytest.approx(1.0)
        assert box["detection_name"] in nuscenes_protocol.DETECTION_NAMES
    report = model_run["report"]
    assert report["protocol"] == "nuscenes" and report["samples"] == 10 and 0.0 <= report["NDS"] <= 1.0
    assert set(report["classes_without_gt"]) >= {"trailer", "construction_vehicle", "motorcycle"}
    assert model_run["ours"]["frames"] == 10 and "occlusion_accuracy" in model_run["ours"]


def test_results_are_checked(generated, tmp_path):
    content = noisy_submission(generated, 0)
    dropped = dict(content, results=dict(list(content["results"].items())[1:]))
    nuscenes_protocol.write_submission(tmp_path / "short.json", dropped)
    common = ["--data-root", str(generated), "--version", VERSION]
    with pytest.raises(ValueError, match="no entry for 1 of the 10 evaluated samples"):
        evaluate_main(["--results", str(tmp_path / "short.json"), *common])
    (tmp_path / "nan.json").write_text(json.dumps(content).replace("0.5,", "NaN,", 1))
    with pytest.raises(ValueError, match="not a valid JSON submission"):
        evaluate_main(["--results", str(tmp_path / "nan.json"), *common])
    with pytest.raises(SystemExit):
        evaluate_main(["--results", str(tmp_path / "short.json"), "--protocol", "sparsecomp", *common])
    with pytest.raises(ValueError, match="split 'val' is not in"):
        evaluate_main(["--results", str(tmp_path / "short.json"), "--split", "val", *common])


def test_nuscenes_protocol_equals_the_devkit_and_generated_sets_open_in_it(devkit_python, generated, model_run,
                                                                            tmp_path):
    noisy = nuscenes_protocol.write_submission(tmp_path / "noisy.json", noisy_submission(generated, 3))
    ours_noisy = evaluate_main(["--results", str(noisy), "--data-root", str(generated), "--version", VERSION,
                                "--split", "all"])
    request = {"dataroot": str(generated), "version": VERSION, "eval_set": "all", "output_dir": str(tmp_path / "dk"),
               "submissions": [str(noisy), str(model_run["submission"])]}
    done = subprocess.run([str(devkit_python), str(Path(__file__).parent / "helpers" / "devkit_eval.py")],
                          input=json.dumps(request), capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    devkit = json.loads(done.stdout.strip().splitlines()[-1])
    dataset = devkit["dataset"]
    assert dataset["samples"] == 10 and dataset["sensor_rows"] == 8 and dataset["get_sample_data_calls"] == 80
    assert len(dataset["channels"]) == 8 and "LIDAR_TOP" in dataset["channels"]
    assert dataset["boxes_checked"] > 50 and dataset["num_lidar_pts_mismatches"] == 0
    noisy_devkit, model_devkit = devkit["metrics"]
    assert_equal_to_devkit(ours_noisy, noisy_devkit)
    assert_equal_to_devkit(model_run["report"], model_devkit)
    assert noisy_devkit["mean_ap"] > 0.15 and noisy_devkit["tp_errors"]["attr_err"] > 0.05      # a non-trivial case
    assert ours_noisy["gt_filtering"]["after_points"] < ours_noisy["gt_filtering"]["after_distance"]
