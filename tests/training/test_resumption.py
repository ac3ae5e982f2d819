"""Exact resumption: seeds, interval data, dropout, verified checkpoints, run identity."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.training import keras_internals, outputs, resumption

BATCH = 4
STEPS = 3  # batches per epoch (= checkpoint interval)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 6)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")


def _interval(k):
    """A repeated, reshuffling tf.data pipeline seeded from the interval, as make_dataset."""
    x, y = _data()
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(32, seed=resumption.derive_seed(7, k), reshuffle_each_iteration=True)
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
    dataset = resumption.interval_dataset(_interval, start, epochs, STEPS)
    keras_internals.build_for_fit(model, dataset)
    model.fit(dataset, epochs=epochs, steps_per_epoch=STEPS, initial_epoch=start, verbose=0,
              callbacks=[resumption.DropoutReseed(5),
                         resumption.IntervalCheckpoint(directory, keep=2)])


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    # Dropout masks, data order and optimizer state after a restart are those of a run that
    # never stopped, on every backend.
    full = _model()
    _fit(full, tmp_path / "full", 0, 3)

    resumed = _model()
    _fit(resumed, tmp_path / "part", 0, 1)
    fresh = _model()
    assert resumption.restore_latest(fresh, tmp_path / "part") == (STEPS, [])
    _fit(fresh, tmp_path / "part", 1, 3)

    for a, b in zip(full.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 3 * STEPS


def test_dropout_reseed_sets_seed_generators_at_each_epoch(tmp_path):
    model = _model()
    _fit(model, tmp_path / "ckpt", 0, 2)
    states = resumption.seed_generator_states(model)
    assert len(states) == 2  # one per Dropout layer
    for index, state in enumerate(states):
        # Re-seeded at the first batch of epoch 1, then advanced by its training steps.
        value = keras.ops.convert_to_numpy(state.value)
        assert value[0] == resumption.derive_seed(5, 0, 1, index)
    assert keras.ops.convert_to_numpy(states[1].value)[1] == STEPS


def test_interval_checkpoint_keeps_newest_with_digests(tmp_path):
    model = _model()
    _fit(model, tmp_path, 0, 3)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"ckpt-{6:012d}.weights.h5", f"ckpt-{6:012d}.weights.h5.sha256",
                     f"ckpt-{9:012d}.weights.h5", f"ckpt-{9:012d}.weights.h5.sha256"]
    assert oct(os.stat(tmp_path / names[2]).st_mode & 0o777) == oct(0o666 & ~_umask())
    (tmp_path / ".tmp-abc.weights.h5").write_bytes(b"partial")  # a killed write
    assert resumption.list_checkpoints(tmp_path) == [
        (9, str(tmp_path / names[2])), (6, str(tmp_path / names[0]))]
    assert resumption.list_checkpoints(tmp_path / "missing") == []


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing_digest"])
def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path, damage):
    trained = _model()
    _fit(trained, tmp_path, 0, 3)
    latest = tmp_path / f"ckpt-{9:012d}.weights.h5"
    size = os.path.getsize(latest)
    if damage == "flip":  # inside the weights, where h5py notices nothing
        _flip_byte(latest, size // 2)
    elif damage == "truncate":
        with open(latest, "r+b") as f:
            f.truncate(size // 3)
    else:  # every checkpoint gets its digest before its name: one without is damaged
        os.remove(str(latest) + ".sha256")
    messages = []
    model = _model()
    step, damaged = resumption.restore_latest(model, tmp_path, log=messages.append)
    assert step == 6 and len(damaged) == 1 and str(latest) in damaged[0]
    assert any(str(latest) in m for m in messages)
    assert any("Falling back" in m and f"ckpt-{6:012d}" in m for m in messages)
    reference = _model()
    _fit(reference, tmp_path / "reference", 0, 2)
    for a, b in zip(reference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_checkpoint_damaged_means_start_over(tmp_path):
    _fit(_model(), tmp_path, 0, 2)
    for _, path in resumption.list_checkpoints(tmp_path):
        _flip_byte(path, 100)
    step, damaged = resumption.restore_latest(_model(), tmp_path, log=lambda m: None)
    assert step == 0 and len(damaged) == 2


def test_verify_file_names_the_damage(tmp_path):
    path = str(tmp_path / "f.bin")
    with open(path, "wb") as f:
        f.write(b"abc" * 100)
    resumption.write_digest(path)
    resumption.verify_file(path)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(resumption.DamagedFileError, match=r"f\.bin.*301 bytes, but 300"):
        resumption.verify_file(path)
    os.remove(path + ".sha256")
    with pytest.raises(resumption.DamagedFileError, match=r"f\.bin has no digest record"):
        resumption.verify_file(path)


def test_restore_checkpoint_needs_compiled_model(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled"):
        resumption.restore_checkpoint(model, tmp_path / "x.weights.h5")


def test_log_learning_rate():
    model = _model()
    callback = outputs.LogLearningRate()
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["learning_rate"] == pytest.approx(1e-2)


@pytest.mark.backend_agnostic
def test_interval_dataset_resumed_equals_tail():
    full = list(resumption.interval_dataset(_interval, 0, 3, STEPS).as_numpy_iterator())
    tail = list(resumption.interval_dataset(_interval, 1, 3, STEPS).as_numpy_iterator())
    assert len(full) == 3 * STEPS and len(tail) == 2 * STEPS
    for (xa, ya), (xb, yb) in zip(full[STEPS:], tail, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="start"):
        resumption.interval_dataset(_interval, 3, 3, STEPS)


@pytest.mark.backend_agnostic
def test_derive_seed():
    seeds = {resumption.derive_seed(0, k, p) for k in range(50) for p in range(3)}
    assert len(seeds) == 150
    assert all(1 <= s < 2**30 for s in seeds)
    assert resumption.derive_seed(1, 2) == resumption.derive_seed(1, 2)


@pytest.mark.backend_agnostic
def test_run_config_detects_other_settings(tmp_path):
    resumption.RunConfig.check_or_write(tmp_path, {"pe": "none", "steps": (1, 2)})
    resumption.RunConfig.check_or_write(tmp_path, {"pe": "none", "steps": (1, 2)})
    with pytest.raises(ValueError, match=r"pe: 'none' -> 'absolute'.*another --output_dir"):
        resumption.RunConfig.check_or_write(tmp_path, {"pe": "absolute", "steps": (1, 2)})
    # How each start ran is recorded, not compared.
    resumption.RunConfig.record_start(tmp_path, {"step": 0, "num_replicas": 2})
    resumption.RunConfig.record_start(tmp_path, {"step": 30, "num_replicas": 1})
    resumption.RunConfig.check_or_write(tmp_path, {"pe": "none", "steps": (1, 2)})
    stored = json.loads((tmp_path / "run_config.json").read_text())
    assert stored["starts"] == [{"step": 0, "num_replicas": 2}, {"step": 30, "num_replicas": 1}]
    assert stored["pe"] == "none"
    (tmp_path / "run_config.json").write_text("{trunc")
    with pytest.raises(resumption.RunMismatchError, match="unreadable"):
        resumption.RunConfig.check_or_write(tmp_path, {"pe": "none", "steps": (1, 2)})


@pytest.mark.backend_agnostic
def test_training_log_truncate_and_read(tmp_path):
    path = tmp_path / "log.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["epoch", "loss", "val_loss"], [0, 1.0, 2.0], [1, 0.5, ""],
                                 [2, 0.25, 1.0]])
    resumption.truncate_training_log(path, 2)
    columns = outputs.read_training_log(path, steps_per_epoch=10)
    assert columns["step"] == [10, 20] and "epoch" not in columns
    assert columns["loss"] == [1.0, 0.5] and np.isnan(columns["val_loss"][1])
    resumption.truncate_training_log(tmp_path / "missing.csv", 0)  # nothing to do
