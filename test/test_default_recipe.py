"""scripts/train_default.sh reproduces the shipped models from nothing: its stage configs
chain (each stage starts from what the script made just before it, a stage or an average;
stages that are averaged start from the first of them, which may itself be an average, or
where it started), train the model they are named
after (or a model config based on it, which switches an option on for a later stage), and
train only on data the script generates with seeds other than the held-out ones; what it
exports is its last stage or an average of stages it trains (and of averages of them)."""
from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO_ROOT
from sparsecomp_core.config import base_chain, load_config
from sparsecomp_core.models.model_config import load_model_config
from sparsecomp_core.training.train import TrainConfig

SCRIPT = REPO_ROOT / "scripts" / "train_default.sh"
# v1.0-synthetic-val (every reported number), v1.0-synthetic-tune, and the sets recipes are chosen and
# confirmed on (scripts/check_sets.sh's CHECK_SEEDS and CONFIRM_SEEDS)
sys.path.insert(0, str(REPO_ROOT / "bench"))
from seed_sets import check_set_seeds  # noqa: E402

CHECK_SETS_SEEDS = set(check_set_seeds())
HELD_OUT_SEEDS = {2, 3} | CHECK_SETS_SEEDS


def test_the_check_and_confirmation_seeds_are_read_from_check_sets():
    assert len(CHECK_SETS_SEEDS) == 20 and {29, 67, 71, 109} <= CHECK_SETS_SEEDS


def script_stages(model: str) -> tuple[list[str], str, dict[str, list[str]], list[str]]:
    """The stages the script trains for ``model`` (every model's, then those of its
    ``if [[ $MODEL == <model> ]]`` block), the one it exports (FINAL), its averages
    (``average <name> <input>...``: name -> its inputs, stages or averages made before it)
    and what it makes, stages and averages, in the order it makes them."""
    text = SCRIPT.read_text()
    stages = re.findall(r"^stage (stage\d+)\b", text, flags=re.MULTILINE)
    made = list(stages)
    final = re.findall(r"^FINAL=(\w+)$", text, flags=re.MULTILINE)
    averages = {}
    for block_model, block in re.findall(r"^if \[\[ \$MODEL == (\w+) \]\]; then.*?\n(.*?)^fi$", text,
                                         flags=re.MULTILINE | re.DOTALL):
        if block_model == model:
            for kind, name, inputs in re.findall(r"^  (stage|average) (\w+)((?: \w+)*)", block, flags=re.MULTILINE):
                made.append(name)
                if kind == "stage":
                    stages.append(name)
                else:
                    averages[name] = inputs.split()
            final += re.findall(r"^  FINAL=(\w+)$", block, flags=re.MULTILINE)
    return stages, final[-1], averages, made


def model_lineage(name: str) -> list[str]:
    """``name`` and the model configs it is based on (``base:`` in config/models/<name>.yaml), nearest first."""
    return [path.stem for path, _ in base_chain(REPO_ROOT / "config" / "models" / f"{name}.yaml")]


def generated_versions() -> dict[str, int]:
    """version -> seed of every ``generate <version> <seed> <scenes> <frames>`` line of the script."""
    return {version: int(seed) for version, seed in
            re.findall(r"^generate (\S+) (\d+) \d+ \d+", SCRIPT.read_text(), flags=re.MULTILINE)}


@pytest.mark.parametrize("model", ["tiny", "tiny_camera"])
def test_stages_chain_and_train_on_generated_training_data_only(model):
    stages, final, averages, made = script_stages(model)
    assert stages[0] == "stage1" and len(stages) >= 2
    versions = generated_versions()
    starts = {}
    for stage in stages:
        # the script's result just before this stage: the last stage or average it made
        latest = made[made.index(stage) - 1] if made.index(stage) > 0 else None
        cfg = load_config(TrainConfig, REPO_ROOT / "config" / "train" / f"{model}_{stage}.yaml")
        assert model in model_lineage(cfg.model), f"{stage} trains {cfg.model}, not {model} or a config based on it"
        load_model_config(cfg.model)
        assert cfg.out_dir == f"checkpoints/{model}_{stage}"
        if latest is None:
            assert cfg.init_from is None and cfg.stage == "stage1"
        else:
            branch_of = [inputs[0] for inputs in averages.values() if stage in inputs[1:]]
            if branch_of:      # averaged stages share one start (one basin): the first of them, or its start
                assert cfg.init_from in (f"checkpoints/{model}_{branch_of[0]}/model.pt", starts.get(branch_of[0])), \
                    f"{stage} is averaged with {branch_of[0]} but starts neither from it nor where it started"
            else:
                assert cfg.init_from == f"checkpoints/{model}_{latest}/model.pt", \
                    f"{stage} does not start from what the script made just before it ({latest})"
            assert cfg.stage == "stage2"
        assert cfg.data_root == "data/synthetic"
        for version in cfg.data_versions:
            assert version in versions, f"{stage} trains on {version}, which the script never generates"
            assert versions[version] not in HELD_OUT_SEEDS, f"{stage} trains on a held-out seed"
        for module, source in cfg.init_modules_from.items():
            # another model's stage result, which the script trains first (itself, for that model)
            match = re.fullmatch(r"checkpoints/(\w+)_(stage\d)/model\.pt", source)
            assert match and match.group(1) != model and match.group(2) in stages, f"{stage}: {module} from {source}"
            assert f'-f {source} ]]; then\n  "$SELF" {match.group(1)}' in SCRIPT.read_text(), \
                f"{stage} takes {module} from {source}, which the script does not train before it"
        starts[stage] = cfg.init_from
    assert '"checkpoints/${MODEL}_${FINAL}/model.pt"' in SCRIPT.read_text()
    names = list(averages)
    for index, (name, inputs) in enumerate(averages.items()):   # trained stages or averages made before it
        assert set(inputs) <= set(stages) | set(names[:index]), f"average {name}: {inputs}"
    if final in averages:      # the mean of trained stages (or of their averages), the last stage among them
        assert stages[-1] in averages[final], averages[final]
    else:
        assert final == stages[-1], "the script exports another stage than its last"
