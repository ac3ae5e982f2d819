"""keras-tuner search whose trials are engine runs: real tiny searches on converted data, and
failed trials made loud."""

import json
import os

import keras_tuner
import numpy as np
import pytest
import soundfile as sf

from keras_astpe.models import KaldiFbankAudioConverter, LogMelAudioConverter, get_preset
from keras_astpe.normalization import STATS_FILENAME
from keras_astpe.training import trainer, tuning
from keras_astpe.training.tuning import (
    BEST_HYPERPARAMETERS_FILE,
    TRIALS_FILE,
    SearchSpace,
    TrialsFailedError,
    TuneConfig,
    check_trials,
    make_tuner,
    run_search,
)
from tfrecords_tools import common

pytestmark = pytest.mark.backend_agnostic

CLASSES = ("low", "mid", "high")
FRAMES = 48  # 0.5 s clips: a 2 x 6 patch grid with the ast-pe-tiny preset


def _convert(data_dir, audio_dir, multi_label):
    """Tones per class over noise in 0.5 s WAVs, converted into `train` and `eval` splits:
    clip k of a split has the labels {k % 3} (and {2k % 3} too when multi-label)."""
    dataset = common.DatasetDescription(
        name="tones", kind="folder", class_names=CLASSES, multi_label=multi_label,
        clip_seconds=0.5, command="python -m tfrecords_tools.folder --input_dir=audio")
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    os.makedirs(audio_dir, exist_ok=True)
    for split, role, count in (("train", "train", 8), ("eval", "eval", 6)):
        items = []
        for k in range(count):
            labels = tuple(sorted({k % 3, 2 * k % 3} if multi_label else {k % 3}))
            wave = 0.05 * rng.standard_normal(t.size) + sum(
                0.3 * np.sin(2 * np.pi * (300 + 900 * label) * t) for label in labels)
            path = os.path.join(audio_dir, f"{split}{k}.wav")
            sf.write(path, np.clip(wave, -1, 1), 16000, subtype="PCM_16")
            items.append(common.WorkItem(path, f"{split}{k}", labels, expected_seconds=0.5))
        common.convert_split(items, output_dir=str(data_dir), split=split, role=role,
                             dataset=dataset, num_workers=1, progress=False)
    return str(data_dir)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    return _convert(folder / "data", folder / "audio", multi_label=True)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _config(output_dir, **overrides):
    settings = {"preset": "ast-pe-tiny", "frames": FRAMES, "epochs": 1, "steps_per_epoch": 1,
                "batch_size": 4, "max_trials": 2, "pe_kinds": ("none", "absolute"),
                "num_layers_range": (1, 2), "output_dir": str(output_dir), **overrides}
    return TuneConfig(**settings)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bayesian", "hyperband"])
def test_tiny_search_runs_engine_trials_and_writes_results(kind, tagged, tmp_path):
    # hyperband: two 1-epoch trials, the better continued to 2 epochs
    epochs = 2 if kind == "hyperband" else 1
    best = tuning.tune(_config(tmp_path, tuner=kind, epochs=epochs, max_trials=3,
                               hyperband_factor=2), tagged, log=lambda message: None)
    results = _read_json(tmp_path / TRIALS_FILE)
    assert results["objective"] == best["objective"] == "mAP"  # multi-label data
    rows = results["trials"]
    assert len(rows) == 3 and all(row["status"] == "COMPLETED" for row in rows)
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows),
                                                    reverse=True)
    for row in rows:  # each trial is an engine run, scored by its evaluation
        metrics = _read_json(os.path.join(row["run"], "metrics.json"))
        assert metrics["mAP"] == pytest.approx(row["score"]) and row["error"] is None
        assert metrics["eval_split"] == "eval" and metrics["config"]["train_splits"] == ["train"]
        assert metrics["config"]["max_lr"] == pytest.approx(
            row["hyperparameters"]["learning_rate"])
        if row["continues"] is None:
            assert metrics["config"]["pe"] == row["hyperparameters"]["position_encoding"]
            assert metrics["config"]["num_layers"] == row["hyperparameters"]["num_layers"]
        else:  # Hyperband: fine-tunes the model of the trial it continues
            continued = next(r for r in rows if r["trial_id"] == row["continues"])
            assert metrics["config"]["init"] == os.path.join(continued["run"], "model.keras")
    assert (kind == "hyperband") == any(row["continues"] for row in rows)
    assert set(rows[0]["hyperparameters"]) == {"position_encoding", "learning_rate",
                                               "num_layers", "dropout"}
    assert _read_json(tmp_path / BEST_HYPERPARAMETERS_FILE) == best
    assert best["score"] == rows[0]["score"] and os.path.isfile(best["model"])
    # Plain Python values, printed without numpy's repr.
    assert all(type(value) in (str, int, float) for value in best["hyperparameters"].values())
    # One statistics pass for the search, given to every trial.
    assert (tmp_path / STATS_FILENAME).exists()


class _FirstTrialFails(tuning.EngineTuner):
    calls = 0

    def run_trial(self, trial, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise ValueError("boom: this trial cannot train")
        return super().run_trial(trial, *args, **kwargs)


def _tuner(directory, data_dir, cls=tuning.EngineTuner):
    oracle = keras_tuner.oracles.BayesianOptimizationOracle(
        keras_tuner.Objective("mAP", "max"), max_trials=2, seed=0)
    return cls(oracle, space=SearchSpace(pe_kinds=("none",), num_layers=(1, 1)),
               settings={"data_dir": data_dir, "preset": "ast-pe-tiny", "frames": FRAMES,
                         "batch_size": 4, "train_splits": ("train",), "eval_split": "eval",
                         "validation_split": "eval"},
               epochs=1, steps_per_epoch=1, log=lambda message: None,
               directory=str(directory), project_name="search")


def test_a_failed_trial_fails_the_search_loudly(tagged, tmp_path):
    (tmp_path / BEST_HYPERPARAMETERS_FILE).write_text("{}")  # from an earlier search
    tuner = _tuner(tmp_path / "search", tagged, _FirstTrialFails)
    with pytest.raises(TrialsFailedError, match=r"1 of 2 trials did not complete"
                       r"(.|\n)*ValueError: boom: this trial cannot train(.|\n)*Traceback"):
        run_search(tuner, tmp_path)
    # The trap: keras-tuner still names "best" hyperparameters.
    assert tuner.get_best_hyperparameters()[0].values
    rows = _read_json(tmp_path / TRIALS_FILE)["trials"]
    assert [row["status"] for row in rows] == ["COMPLETED", "FAILED"]
    assert rows[1]["error"] == "ValueError: boom: this trial cannot train"
    assert not (tmp_path / BEST_HYPERPARAMETERS_FILE).exists()


def test_damaged_training_data_stop_the_search_naming_the_shard(tmp_path):
    """The search's statistics pass reads every training clip: a damaged shard stops it
    before any trial, with the shard's name."""
    data_dir = _convert(tmp_path / "data", tmp_path / "audio", multi_label=False)
    shard = "train-00000-of-00001.tfrecord"
    with open(os.path.join(data_dir, shard), "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xfe\xfd")
    with pytest.raises(Exception, match=rf"damaged TFRecord file(.|\n)*{shard}"):
        tuning.tune(_config(tmp_path / "out"), data_dir, log=lambda message: None)
    assert not (tmp_path / "out" / TRIALS_FILE).exists()


def test_no_trial_is_a_failure(tagged, tmp_path):
    with pytest.raises(TrialsFailedError, match="no trial"):
        check_trials(_tuner(tmp_path, tagged))


@pytest.mark.parametrize("arguments, message", [
    ({"pe_kinds": ("absolute", "sinusoidal")}, "pe_kinds"),
    ({"pe_kinds": ()}, "pe_kinds"),
    ({"num_layers": (0, 2)}, "num_layers"),
    ({"dropout": (0.3, 0.1)}, "min <= max"),
    ({"learning_rate": (0.0, 1e-3)}, "learning_rate"),
])
def test_search_space_rejects_bad_ranges(arguments, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**arguments)


def test_fixed_ranges_and_unknown_tuner(tagged, tmp_path):
    space = SearchSpace(pe_kinds=("conditional",), num_layers=(1, 1), dropout=(0.1, 0.1),
                        learning_rate=(1e-4, 1e-4))
    hp = keras_tuner.HyperParameters()
    assert space.draw(hp) == {"pe": "conditional", "max_lr": 1e-4, "num_layers": 1,
                              "dropout": 0.1}
    assert hp.values == {"position_encoding": "conditional", "learning_rate": 1e-4,
                         "num_layers": 1, "dropout": 0.1}
    with pytest.raises(ValueError, match="Unknown tuner"):
        make_tuner("grid", space, {}, objective="mAP", directory=tmp_path, epochs=1,
                   steps_per_epoch=1)
    with pytest.raises(ValueError, match="--tuner must be one of"):
        TuneConfig(tuner="grid")


class _Stop(Exception):
    pass


@pytest.mark.parametrize("preset, front_end", [("ast", KaldiFbankAudioConverter),
                                               ("ast-pe-tiny", LogMelAudioConverter)])
def test_a_trial_trains_on_the_front_end_of_its_preset(preset, front_end, monkeypatch,
                                                       tagged, tmp_path):
    """`--preset=ast` tunes on AST's kaldi fbank (fixed statistics: no statistics pass),
    the paper's presets on the scaled log-mel of the training clips."""
    seen = {}

    def dataset_maker(**kwargs):
        seen.update(kwargs)
        raise _Stop("seen")

    monkeypatch.setattr(trainer, "dataset_maker", dataset_maker)
    config = TuneConfig(preset=preset, max_trials=1, output_dir=str(tmp_path / "out"))
    with pytest.raises(TrialsFailedError, match="_Stop: seen"):
        tuning.tune(config, tagged, log=lambda message: None)
    converter = seen["converter"]
    assert type(converter) is front_end
    assert converter.num_mel_bins == get_preset(preset)["num_mel_bins"]
    assert (tmp_path / "out" / STATS_FILENAME).exists() == (preset != "ast")
    if preset == "ast":  # the whole clips, the fbank padded to the preset's frames
        assert seen["clip_samples"] == 8000 and converter.num_frames(8000) == 1024
