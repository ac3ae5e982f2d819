"""Tests of recipes/eval_esc50.py and keras_astpe.training.esc50 on the tiny demo data."""

import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models.audio_converter import LogMelAudioConverter
from keras_astpe.normalization import NormalizationStats
from keras_astpe.training import engine, esc50, outputs, trainer
from tfrecords_tools.demo import DEMO_DIR, prepare_demo_data

pytestmark = pytest.mark.backend_agnostic

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "eval_esc50.py"


def _pretrained(folder, pe="time_alibi", stats="carried"):
    """A tiny "AudioSet" model (10 s clips, 10 sigmoid outputs) saved as train_audioset does
    (`stats="carried"`), or as older versions did: statistics beside it (`"beside"`) or
    lost (None)."""
    os.makedirs(folder, exist_ok=True)
    keras.utils.set_random_seed(0)
    converter = LogMelAudioConverter(FrontEndConfig(), NormalizationStats(-4.5, 2.5, 7))
    model = keras_astpe.build_model(pe, preset="ast-pe-tiny", num_classes=10,
                                    audio_converter=converter if stats == "carried" else None)
    path = outputs.save_model(model, os.path.join(folder, "model.keras"))
    if stats == "beside":
        NormalizationStats(frontend=FrontEndConfig()).save(folder)
    return path, model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory whose demo_data/ holds the tiny demo ESC-50, converted."""
    work = tmp_path_factory.mktemp("eval_esc50")
    prepare_demo_data("esc50", root=work / DEMO_DIR, size="tiny", progress=False)
    return work


def _cross_validate(workdir, init):
    """Folds 1 and 3 of the tiny demo, 1 head epoch and 2 whole-model epochs each."""
    return subprocess.run(
        [sys.executable, str(RECIPE), f"--init={init}", "--demo_size=tiny", "--folds=1,3",
         "--batch_size=4", "--head_epochs=1", "--finetune_epochs=2"],
        cwd=workdir, env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cross_validation_from_audioset_model(workdir):
    init, _ = _pretrained(workdir / "pretrained" / "time_alibi")
    result = _cross_validate(workdir, init)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ESC-50 (time_alibi): accuracy" in result.stdout and "chance 10.0%" in result.stdout

    run_dir = workdir / "saved_models" / "esc50-demo" / "time_alibi"
    with open(run_dir / "results.json") as f:
        results = json.load(f)
    accuracies = [results["accuracy_per_fold"][fold] for fold in ("1", "3")]
    assert results["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert results["accuracy_std"] == pytest.approx(np.std(accuracies))
    assert results["chance_accuracy"] == pytest.approx(0.1)
    assert results["folds"]["1"] == {"accuracy": accuracies[0], "num_test_clips": 10,
                                     "num_train_clips": 40}
    assert results["config"]["clip_samples"] == 80000
    # The statistics the pretrained model carries are used, not recomputed.
    assert results["normalization"]["low"] == pytest.approx(-4.5)
    assert results["clips_per_fold"] == {str(fold): 10 for fold in range(1, 6)}
    assert results["unbalanced_folds"] == []
    pooled = (results["folds"]["1"]["accuracy"] + results["folds"]["3"]["accuracy"]) / 2
    assert results["accuracy_pooled"] == pytest.approx(pooled)
    assert "pooled over all test clips" in result.stdout
    with open(run_dir / "confusion_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 11 and sum(int(v) for row in rows[1:] for v in row[1:]) == 20
    assert (run_dir / "confusion_matrix.png").is_file()
    # Each fold: two engine runs, the output layer (1 epoch), then the whole model (2).
    logs = {}
    for stage in ("fold_1/head", "fold_1"):
        with open(run_dir / stage / "training_log.csv", newline="") as f:
            logs[stage] = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in logs["fold_1/head"]] == [0]
    assert float(logs["fold_1/head"][0]["learning_rate"]) == pytest.approx(1e-2)
    assert [int(row["epoch"]) for row in logs["fold_1"]] == [0, 1]
    # Logged at each epoch's end: x0.85 once per epoch from 5e-4.
    assert [float(row["learning_rate"]) for row in logs["fold_1"]] == pytest.approx(
        [5e-4 * 0.85, 5e-4 * 0.85 ** 2])
    assert "val_accuracy" in logs["fold_1"][0]
    with open(run_dir / "fold_1" / "metrics.json") as f:
        fold_metrics = json.load(f)
    assert fold_metrics["accuracy"] == accuracies[0] and fold_metrics["num_eval_clips"] == 10
    assert fold_metrics["config"]["init"] == os.path.join(
        "saved_models", "esc50-demo", "time_alibi", "fold_1", "head", "model.keras")
    assert (run_dir / "fold_3" / "learning_curves.png").is_file()
    assert (run_dir / "fold_3" / "model.keras").is_file()
    assert not (run_dir / "fold_2").exists()

    # Rerun: every run is complete and is evaluated again, with the same accuracy.
    again = _cross_validate(workdir, init)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "training already complete" in again.stdout
    with open(run_dir / "results.json") as f:
        assert json.load(f)["accuracy_per_fold"] == results["accuracy_per_fold"]


@pytest.mark.parametrize("pe", keras_astpe.PE_KINDS)
def test_every_pe_fine_tunes_on_5_second_clips(tmp_path, pe):
    _, pretrained = _pretrained(tmp_path, pe)
    esc = types.SimpleNamespace(multi_label=False, num_classes=7,
                                class_names=[f"c{i}" for i in range(7)])
    model = engine.fine_tuning_classifier(pretrained, esc, pretrained.audio_converter)
    assert model.backbone.position_encoding == pe
    # The pretrained backbone, a new 7-class softmax head.
    for a, b in zip(model.backbone.get_weights(), pretrained.backbone.get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    frames = FrontEndConfig().num_frames(80000)
    x = np.random.rand(4, frames, 64).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 6], 7)
    trainer.compile_classifier(model, 1e-3)
    model.run_eagerly = True  # one step: tracing would cost more than it saves
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    scores = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    assert scores.shape == (4, 7) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_fold_configs_are_the_papers_two_stages(tmp_path):
    init, _ = _pretrained(tmp_path / "run")
    config = esc50.ESC50Config.named(init=init, data_dir="data/esc50", output_dir="out")
    plan = esc50._FoldPlan({k: 400 for k in range(1, 6)}, {k: 400 for k in range(1, 6)},
                           [1, 2, 3, 4, 5], [])
    head, whole = esc50.fold_configs(config, types.SimpleNamespace(clip_seconds=5.0), plan, 2)
    steps = 1600 // 32  # an epoch: the 4 training folds
    for stage in (head, whole):
        assert (stage.train_splits, stage.train_folds, stage.eval_split, stage.eval_folds) == \
            (("esc50",), (1, 3, 4, 5), "esc50", (2,))
        assert (stage.checkpoint_every, stage.warmup_steps, stage.export) == (steps, 0, False)
    assert (head.init, head.trainable, head.schedule, head.max_lr, head.train_steps,
            head.output_dir) == (init, "head", "constant", 1e-3, 10 * steps,
                                 os.path.join("out", "fold_2", "head"))
    assert (whole.init, whole.trainable, whole.max_lr, whole.decay_every,
            whole.train_steps, whole.output_dir) == (
        os.path.join("out", "fold_2", "head", "model.keras"), "all", 1e-4, steps,
        40 * steps, os.path.join("out", "fold_2"))
    assert whole.decay_rate == pytest.approx(0.85 ** 40)  # x0.85 per epoch
    scratch = esc50.ESC50Config.named(pe="alibi_2d", data_dir="data/esc50", output_dir="out")
    (only,) = esc50.fold_configs(scratch, types.SimpleNamespace(clip_seconds=5.0), plan, 2)
    assert (only.pe, only.preset, only.init, only.frames) == ("alibi_2d", "ast-pe", None, 498)


def test_config_defaults_and_errors(tmp_path):
    init, _ = _pretrained(tmp_path / "run", stats=None)
    paper = esc50.ESC50Config.named(init=init, data_dir="data/esc50")
    assert (paper.head_epochs, paper.head_lr, paper.finetune_epochs, paper.finetune_lr,
            paper.lr_decay) == (10, 1e-3, 40, 1e-4, 0.85)
    assert paper.output_dir == os.path.join("saved_models", "esc50", "run")
    scratch = esc50.ESC50Config.named(pe="none")
    assert scratch.head_epochs == 0 and scratch.output_dir.endswith("esc50-demo/none-scratch")
    with pytest.raises(ValueError, match="either"):
        esc50.ESC50Config.named(init=init, pe="none")
    with pytest.raises(ValueError, match="either"):
        esc50.ESC50Config.named(data_dir="data/esc50")
    with pytest.raises(FileNotFoundError, match="train_audioset"):
        esc50.ESC50Config.named(init=str(tmp_path / "missing.keras"))


def test_demo_default_fine_tunes_the_main_job_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train_audioset\.py --pe=time_alibi"):
        esc50.ESC50Config.named()
    _pretrained(tmp_path / os.path.dirname(esc50.DEMO_INIT), stats=None)
    config = esc50.ESC50Config.named()
    assert config.init == esc50.DEMO_INIT and config.head_epochs == 5
    assert config.output_dir == os.path.join("saved_models", "esc50-demo", "time_alibi")


def test_unbalanced_folds_are_refused_or_reported():
    counts = {1: 0, 2: 11, 3: 1, 4: 400, 5: 2}  # a real, partial ESC-50 download
    with pytest.raises(ValueError, match=r"folds \[1, 2, 3, 5\] are empty or hold fewer"):
        esc50.check_folds(counts, [1, 2, 3, 4, 5], allow_unbalanced=False)
    messages = []
    assert esc50.check_folds(counts, [1, 2, 3, 4, 5], allow_unbalanced=True,
                             log=messages.append) == [1, 2, 3, 5]
    assert "pooled" in messages[0]
    assert esc50.check_folds({k: 400 for k in range(1, 6)}, [1, 2], allow_unbalanced=False) \
        == []


def test_help_explains_flags():
    result = subprocess.run([sys.executable, str(RECIPE), "--help"],
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl exits 1 after --help
    for flag in ("--init", "--pe", "--preset", "--data_dir", "--folds", "--batch_size",
                 "--head_epochs", "--head_lr", "--finetune_epochs", "--finetune_lr",
                 "--lr_decay", "--output_dir", "--seed", "--[no]skip_bad_records", "--mixup",
                 "--[no]balanced_sampling", "--[no]allow_unbalanced_folds"):
        assert flag in result.stdout, flag
