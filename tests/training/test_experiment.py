import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.frontend import FrontEndConfig
from keras_astpe.normalization import STATS_FILENAME, NormalizationStats
from keras_astpe.training import experiment

BATCH = 4
STEPS = 3  # batches per epoch (= checkpoint interval)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 6)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")


def _interval(k):
    """A repeated, reshuffling tf.data pipeline seeded from the interval, as make_dataset."""
    x, y = _data()
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(32, seed=experiment.derive_seed(7, k), reshuffle_each_iteration=True)
            .batch(BATCH, drop_remainder=True).repeat())


def _model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.3),  # unseeded: torch's global generator on PyTorch
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.3, seed=11),  # a keras SeedGenerator
        keras.layers.Dense(2),
    ])
    model.compile(keras.optimizers.Adam(1e-2, clipvalue=1.0), loss="mse", metrics=["mae"])
    return model


def _fit(model, directory, start, epochs):
    dataset = experiment.interval_dataset(_interval, start, epochs, STEPS)
    experiment.build_for_fit(model, dataset)
    model.fit(dataset, epochs=epochs, steps_per_epoch=STEPS, initial_epoch=start, verbose=0,
              callbacks=[experiment.DropoutReseed(5),
                         experiment.IntervalCheckpoint(directory, keep=2)])


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    # Dropout masks, data order and optimizer state after a restart are those of a run that
    # never stopped, on every backend.
    full = _model()
    _fit(full, tmp_path / "full", 0, 3)

    resumed = _model()
    _fit(resumed, tmp_path / "part", 0, 1)
    path, step = experiment.latest_checkpoint(tmp_path / "part")
    assert step == STEPS
    fresh = _model()
    assert experiment.restore_checkpoint(fresh, path) == STEPS
    _fit(fresh, tmp_path / "part", 1, 3)

    for a, b in zip(full.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 3 * STEPS


def test_dropout_reseed_sets_seed_generators_at_each_epoch(tmp_path):
    model = _model()
    _fit(model, tmp_path / "ckpt", 0, 2)
    states = experiment.seed_generator_states(model)
    assert len(states) == 2  # one per Dropout layer
    for index, state in enumerate(states):
        # Re-seeded at the first batch of epoch 1, then advanced by its training steps.
        value = keras.ops.convert_to_numpy(state.value)
        assert value[0] == experiment.derive_seed(5, 0, 1, index)
    assert keras.ops.convert_to_numpy(states[1].value)[1] == STEPS


def test_interval_checkpoint_keeps_newest_and_writes_atomically(tmp_path):
    model = _model()
    _fit(model, tmp_path, 0, 3)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"ckpt-{6:012d}.weights.h5", f"ckpt-{9:012d}.weights.h5"]
    (tmp_path / ".tmp-abc.weights.h5").write_bytes(b"partial")  # a killed write
    assert experiment.latest_checkpoint(tmp_path) == (str(tmp_path / names[-1]), 9)
    assert experiment.latest_checkpoint(tmp_path / "missing") == (None, 0)


def test_restore_checkpoint_needs_compiled_model(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled"):
        experiment.restore_checkpoint(model, tmp_path / "x.weights.h5")


def test_log_learning_rate():
    model = _model()
    callback = experiment.LogLearningRate()
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["learning_rate"] == pytest.approx(1e-2)


@pytest.mark.backend_agnostic
def test_interval_dataset_resumed_equals_tail():
    full = list(experiment.interval_dataset(_interval, 0, 3, STEPS).as_numpy_iterator())
    tail = list(experiment.interval_dataset(_interval, 1, 3, STEPS).as_numpy_iterator())
    assert len(full) == 3 * STEPS and len(tail) == 2 * STEPS
    for (xa, ya), (xb, yb) in zip(full[STEPS:], tail, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="start"):
        experiment.interval_dataset(_interval, 3, 3, STEPS)


@pytest.mark.backend_agnostic
def test_derive_seed():
    seeds = {experiment.derive_seed(0, k, p) for k in range(50) for p in range(3)}
    assert len(seeds) == 150
    assert all(1 <= s < 2**30 for s in seeds)
    assert experiment.derive_seed(1, 2) == experiment.derive_seed(1, 2)


@pytest.mark.backend_agnostic
def test_run_config_detects_other_settings(tmp_path):
    experiment.RunConfig.check_or_write(tmp_path, {"pe": "none", "steps": (1, 2)})
    experiment.RunConfig.check_or_write(tmp_path, {"pe": "none", "steps": (1, 2)})
    with pytest.raises(ValueError, match=r"pe: 'none' -> 'absolute'.*another --output_dir"):
        experiment.RunConfig.check_or_write(tmp_path, {"pe": "absolute", "steps": (1, 2)})


@pytest.mark.backend_agnostic
def test_training_log_truncate_and_read(tmp_path):
    path = tmp_path / "log.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["epoch", "loss", "val_loss"], [0, 1.0, 2.0], [1, 0.5, ""],
                                 [2, 0.25, 1.0]])
    experiment.truncate_training_log(path, 2)
    columns = experiment.read_training_log(path, steps_per_epoch=10)
    assert columns["step"] == [10, 20] and "epoch" not in columns
    assert columns["loss"] == [1.0, 0.5] and np.isnan(columns["val_loss"][1])
    experiment.truncate_training_log(tmp_path / "missing.csv", 0)  # nothing to do


@pytest.mark.backend_agnostic
def test_split_files_error_names_pattern_and_converter(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        experiment.split_files(tmp_path, "eval")
    message = str(error.value)
    assert "eval-[0-9]*-of-[0-9]*.tfrecord" in message
    assert f"python -m tfrecords_tools.audioset --input_dir=<AudioSet folder> " \
           f"--output_dir={tmp_path}" in message
    with pytest.raises(FileNotFoundError, match="tfrecords_tools.esc50"):
        experiment.split_files(tmp_path / "nowhere", "esc50", dataset="esc50")
    with pytest.raises(FileNotFoundError, match="classes.csv"):
        experiment.read_class_names(tmp_path)


@pytest.mark.backend_agnostic
def test_resolve_stats_keeps_run_stats_and_copies_source(tmp_path):
    frontend = FrontEndConfig()
    source, run = tmp_path / "data", tmp_path / "run"
    os.makedirs(run)
    NormalizationStats(-3.0, 2.0, 10, frontend).save(source)
    stats = experiment.resolve_stats(run, [], frontend, source_dir=source)
    assert (stats.low, stats.high) == (-3.0, 2.0) and (run / STATS_FILENAME).exists()
    NormalizationStats(-1.0, 1.0, 10, frontend).save(source)
    assert experiment.resolve_stats(run, [], frontend, source_dir=source).low == -3.0
    with pytest.raises(ValueError, match="front end"):
        experiment.resolve_stats(run, [], FrontEndConfig(num_mel_bins=128))


@pytest.mark.backend_agnostic
def test_write_json_is_strict_json(tmp_path):
    path = experiment.write_json(tmp_path / "a" / "m.json",
                                 {"x": np.float32(0.5), "n": np.int64(3), "nan": float("nan"),
                                  "arr": np.array([1.0, np.nan]), "t": (1, 2)})
    with open(path) as f:
        assert json.load(f) == {"x": 0.5, "n": 3, "nan": None, "arr": [1.0, None],
                                "t": [1, 2]}
    assert os.listdir(tmp_path / "a") == ["m.json"]


@pytest.mark.backend_agnostic
def test_prepare_demo_data_converts_once(tmp_path):
    root = tmp_path / "demo"
    data_dir = experiment.prepare_demo_data("esc50", root=root, size="tiny", progress=False)
    files = experiment.split_files(data_dir, "esc50", dataset="esc50")
    assert len(files) == 1
    assert len(experiment.read_class_names(data_dir)) == 10
    assert experiment.count_clips(data_dir, "esc50") == 50
    assert experiment.count_clips(data_dir, "esc50", files, folds=[1, 2]) == 20
    mtime = os.path.getmtime(files[0])
    assert experiment.prepare_demo_data("esc50", root=root, size="tiny") == data_dir
    assert os.path.getmtime(files[0]) == mtime
    with pytest.raises(ValueError, match="dataset"):
        experiment.prepare_demo_data("speech", root=root)
