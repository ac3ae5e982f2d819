"""keras-tuner search: a real tiny search on tiny records, and failed trials made loud."""

import json
import sys

import keras
import keras_tuner
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from keras_astpe.data.pipeline import make_dataset
from keras_astpe.data.schema import encode_example
from keras_astpe.frontend import FrontEndConfig
from keras_astpe.models import KaldiFbankAudioConverter, LogMelAudioConverter, get_preset
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import trainer, tuning
from keras_astpe.training.tuning import (
    BEST_HYPERPARAMETERS_FILE,
    OBJECTIVE,
    TRIALS_FILE,
    ASTHyperModel,
    TrialsFailedError,
    check_tensorboard,
    check_trials,
    make_tuner,
    run_search,
)
from tfrecords_tools import common

pytestmark = pytest.mark.backend_agnostic

NUM_CLASSES = 3
NUM_FRAMES = 128  # 1.3 s clips: a 4 x 8 patch grid with the ast-pe-tiny preset


def _write_split(path, num_clips, rng):
    """Tones per class over noise; clip i has labels {i % 3, 2i % 3} (1 or 2 labels)."""
    t = np.arange(24000) / 16000
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(num_clips):
            labels = sorted({i % NUM_CLASSES, 2 * i % NUM_CLASSES})
            wave = 0.05 * rng.standard_normal(t.size) + sum(
                0.3 * np.sin(2 * np.pi * (300 + 900 * label) * t) for label in labels)
            writer.write(encode_example(np.clip(wave, -1, 1), f"clip{i}", labels,
                                        original_sample_rate=16000, duration=1.5))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    _write_split(folder / "train-00000-of-00001.tfrecord", 8, rng)
    _write_split(folder / "eval-00000-of-00001.tfrecord", 6, rng)
    frontend = FrontEndConfig()
    common = {"num_classes": NUM_CLASSES, "batch_size": 4, "seed": 0,
              "clip_samples": frontend.num_samples(NUM_FRAMES),
              "converter": LogMelAudioConverter(frontend)}
    validation = make_dataset(str(folder / "eval-*.tfrecord"), training=False, **common)
    return (make_dataset(str(folder / "train-*.tfrecord"), training=True, **common),
            validation.apply(tf.data.experimental.assert_cardinality(2)))


def _read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("kind", ["bayesian", "hyperband"])
def test_tiny_search_completes_and_writes_results(kind, datasets, tmp_path):
    hypermodel = ASTHyperModel(NUM_CLASSES, preset="ast-pe-tiny",
                               pe_kinds=("none", "absolute"), num_layers=(1, 2),
                               num_frames=NUM_FRAMES)
    tuner = make_tuner(kind, hypermodel, directory=tmp_path / "search", max_trials=2,
                       epochs=2, seed=0)
    best = run_search(tuner, *datasets, tmp_path, epochs=1, steps_per_epoch=2, verbose=0)

    trials = list(tuner.oracle.trials.values())
    assert [trial.status for trial in trials] == ["COMPLETED", "COMPLETED"]
    results = _read_json(tmp_path / TRIALS_FILE)
    assert results["objective"] == OBJECTIVE == "val_pr_auc"
    rows = results["trials"]
    assert len(rows) == 2 and all(row["status"] == "COMPLETED" for row in rows)
    assert rows[0]["score"] >= rows[1]["score"]
    assert all(0.0 <= row["score"] <= 1.0 and row["error"] is None for row in rows)
    assert set(rows[0]["hyperparameters"]) == {"position_encoding", "learning_rate",
                                               "num_layers", "dropout"}
    assert _read_json(tmp_path / BEST_HYPERPARAMETERS_FILE) == best
    assert best["score"] == rows[0]["score"]
    assert best["hyperparameters"]["position_encoding"] in ("none", "absolute")
    # Plain Python values, printed without numpy's repr.
    assert all(type(value) in (str, int, float) for value in best["hyperparameters"].values())
    assert best["score"] == pytest.approx(tuner.oracle.get_best_trials()[0].score)


class _DenseHyperModel(keras_tuner.HyperModel):
    """A tiny dense model whose first `failures` trials raise (the tuner's own build of the
    search space at construction is not a trial)."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    def build(self, hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("units", 2, 8)),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy", metrics=[
            keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc")])
        return model

    def fit(self, hp, model, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            raise ValueError("boom: this hypermodel cannot train")
        return super().fit(hp, model, *args, **kwargs)


def _dense_data():
    x = np.random.rand(16, 4).astype("float32")
    y = (x[:, :1] > 0.5).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


def _dense_tuner(directory, failures):
    return keras_tuner.RandomSearch(
        _DenseHyperModel(failures), objective=keras_tuner.Objective(OBJECTIVE, "max"),
        max_trials=2, seed=0, directory=str(directory), project_name="dense")


@pytest.mark.parametrize("failures", [2, 1])
def test_failed_trials_fail_loudly(failures, tmp_path):
    (tmp_path / BEST_HYPERPARAMETERS_FILE).write_text("{}")  # from an earlier search
    tuner = _dense_tuner(tmp_path, failures)
    with pytest.raises(TrialsFailedError, match=rf"{failures} of 2 trials did not complete"
                       r"(.|\n)*ValueError: boom: this hypermodel cannot train(.|\n)*"
                       "Traceback"):
        run_search(tuner, _dense_data(), _dense_data(), tmp_path, epochs=1, verbose=0)
    # The trap: keras-tuner still names "best" hyperparameters.
    assert tuner.get_best_hyperparameters()[0].values
    with pytest.raises(TrialsFailedError):
        check_trials(tuner)
    rows = _read_json(tmp_path / TRIALS_FILE)["trials"]
    assert sorted(row["status"] for row in rows) == ["COMPLETED"] * (2 - failures) + [
        "FAILED"] * failures
    failed = [row for row in rows if row["status"] == "FAILED"]
    assert all(row["error"] == "ValueError: boom: this hypermodel cannot train"
               for row in failed)
    assert not (tmp_path / BEST_HYPERPARAMETERS_FILE).exists()


def test_missing_tensorboard_is_detected_before_and_after_the_search(monkeypatch, tmp_path):
    """keras-tuner 1.4.8 fails every trial on the TensorFlow backend without tensorboard."""
    monkeypatch.setitem(sys.modules, "tensorboard.plugins.hparams", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        check_tensorboard()
    tuner = _dense_tuner(tmp_path, failures=0)
    with pytest.raises(TrialsFailedError, match=r"2 of 2 trials(.|\n)*tensorboard"):
        run_search(tuner, _dense_data(), _dense_data(), tmp_path, epochs=1, verbose=0)


def test_check_tensorboard_passes_when_installed():
    check_tensorboard()


def test_no_trial_is_a_failure(tmp_path):
    with pytest.raises(TrialsFailedError, match="no trial"):
        check_trials(_dense_tuner(tmp_path, failures=0))


@pytest.mark.parametrize("arguments, message", [
    ({"pe_kinds": ("absolute", "sinusoidal")}, "pe_kinds"),
    ({"pe_kinds": ()}, "pe_kinds"),
    ({"num_layers": (0, 2)}, "num_layers"),
    ({"dropout": (0.3, 0.1)}, "min <= max"),
    ({"learning_rate": (0.0, 1e-3)}, "learning_rate"),
    ({"preset": "huge"}, "Unknown preset"),
])
def test_hypermodel_rejects_bad_search_spaces(arguments, message):
    with pytest.raises(ValueError, match=message):
        ASTHyperModel(NUM_CLASSES, **arguments)


def test_fixed_ranges_and_unknown_tuner(tmp_path):
    hypermodel = ASTHyperModel(NUM_CLASSES, pe_kinds=("conditional",), num_layers=(1, 1),
                               dropout=(0.1, 0.1), learning_rate=(1e-4, 1e-4),
                               num_frames=NUM_FRAMES)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.values == {"position_encoding": "conditional", "learning_rate": 1e-4,
                         "num_layers": 1, "dropout": 0.1}
    assert model.backbone.position_encoding == "conditional"
    assert model.backbone.num_layers == 1 and model.backbone.dropout == 0.1
    with pytest.raises(ValueError, match="Unknown tuner"):
        make_tuner("grid", hypermodel, directory=tmp_path)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("preset, front_end", [("ast", KaldiFbankAudioConverter),
                                               ("ast-pe-tiny", LogMelAudioConverter)])
def test_a_search_trains_on_the_front_end_of_its_preset(preset, front_end, monkeypatch,
                                                        tmp_path):
    """`--preset=ast` tunes on AST's kaldi fbank (fixed statistics: no statistics pass),
    the paper's presets on the scaled log-mel of the training clips."""
    audio, data_dir = tmp_path / "audio", tmp_path / "data"
    audio.mkdir()
    data_dir.mkdir()
    dataset = common.DatasetDescription(
        name="tiny", kind="folder", class_names=("a", "b"), multi_label=False,
        clip_seconds=0.5, command="python -m tfrecords_tools.folder --input_dir=audio")
    rng = np.random.default_rng(0)
    for split, role in (("train", "train"), ("eval", "eval")):
        items = []
        for k in range(4):
            path = audio / f"{split}{k}.wav"
            sf.write(path, 0.2 * rng.standard_normal(8000), 16000, subtype="PCM_16")
            items.append(common.WorkItem(str(path), f"{split}{k}", (k % 2,),
                                         expected_seconds=0.5))
        common.convert_split(items, output_dir=str(data_dir), split=split, role=role,
                             dataset=dataset, num_workers=1, progress=False)
    seen = {}

    def dataset_maker(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(trainer, "dataset_maker", dataset_maker)
    config = tuning.TuneConfig(preset=preset, output_dir=str(tmp_path / "out"))
    with pytest.raises(_Stop):
        tuning.tune(config, str(data_dir), log=lambda message: None)
    converter = seen["converter"]
    assert type(converter) is front_end
    assert converter.num_mel_bins == get_preset(preset)["num_mel_bins"]
    assert (tmp_path / "out" / STATS_FILENAME).exists() == (preset != "ast")
    if preset == "ast":  # the whole clips, the fbank padded to the preset's frames
        assert seen["clip_samples"] == 8000 and converter.num_frames(8000) == 1024
