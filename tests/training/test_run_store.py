"""The run folder: verified files, checkpoints, weight snapshots, identity, the log."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_astpe.training import outputs, run_store
from keras_astpe.training.run_store import RunStore, WeightSnapshots
from tests.training.test_resumption import _fit, _model


def test_interval_checkpoint_keeps_newest_with_digests(tmp_path):
    model = _model()
    _fit(model, tmp_path, 0, 3)
    names = sorted(os.listdir(tmp_path))
    assert names == [f"ckpt-{6:012d}.weights.h5", f"ckpt-{6:012d}.weights.h5.sha256",
                     f"ckpt-{9:012d}.weights.h5", f"ckpt-{9:012d}.weights.h5.sha256"]
    assert oct(os.stat(tmp_path / names[2]).st_mode & 0o777) == oct(0o666 & ~_umask())
    (tmp_path / ".tmp-abc.weights.h5").write_bytes(b"partial")  # a killed write
    assert run_store.list_checkpoints(tmp_path) == [
        (9, str(tmp_path / names[2])), (6, str(tmp_path / names[0]))]
    assert run_store.list_checkpoints(tmp_path / "missing") == []


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
    step, damaged = run_store.restore_latest(model, tmp_path, log=messages.append)
    assert step == 6 and len(damaged) == 1 and str(latest) in damaged[0]
    assert any(str(latest) in m for m in messages)
    assert any("Falling back" in m and f"ckpt-{6:012d}" in m for m in messages)
    reference = _model()
    _fit(reference, tmp_path / "reference", 0, 2)
    for a, b in zip(reference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_every_checkpoint_damaged_means_start_over(tmp_path):
    _fit(_model(), tmp_path, 0, 2)
    for _, path in run_store.list_checkpoints(tmp_path):
        _flip_byte(path, 100)
    step, damaged = run_store.restore_latest(_model(), tmp_path, log=lambda m: None)
    assert step == 0 and len(damaged) == 2


def test_verify_file_names_the_damage(tmp_path):
    path = str(tmp_path / "f.bin")
    with run_store.verified_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"abc" * 100)
    assert sorted(os.listdir(tmp_path)) == ["f.bin", "f.bin.sha256"]
    run_store.verify_file(path)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(run_store.DamagedFileError, match=r"f\.bin.*301 bytes, but 300"):
        run_store.verify_file(path)
    os.remove(path + ".sha256")
    with pytest.raises(run_store.DamagedFileError, match=r"f\.bin has no digest record"):
        run_store.verify_file(path)
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"f\.bin is missing"):
        run_store.verify_file(path)


def test_a_failed_write_leaves_neither_file_nor_digest(tmp_path):
    path = tmp_path / "f.bin"
    with pytest.raises(RuntimeError), run_store.verified_path(path) as tmp:
        open(tmp, "wb").write(b"partial")
        raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


@pytest.mark.backend_agnostic
def test_verified_json_round_trip_and_damage(tmp_path):
    path = str(tmp_path / "state.json")
    assert run_store.read_verified_json(path) is None
    run_store.write_verified_json(path, {"history": [[3, 0.5]]})
    assert run_store.read_verified_json(path) == {"history": [[3, 0.5]]}
    with open(path, "a") as f:
        f.write(" ")
    with pytest.raises(run_store.DamagedFileError, match="state.json is damaged"):
        run_store.read_verified_json(path)


@pytest.mark.backend_agnostic
def test_weight_snapshots_round_trip_check_and_keep_only(tmp_path):
    snapshots = WeightSnapshots(tmp_path / "swa", "snapshot")
    assert snapshots.steps() == []
    weights = [np.arange(6, dtype="float32").reshape(2, 3), np.array(7, dtype="int64")]
    for step in (3, 6, 9):
        snapshots.save(step, [w * step for w in weights])
    assert snapshots.steps() == [3, 6, 9]
    loaded = WeightSnapshots(tmp_path / "swa", "snapshot").load(6, weights)
    np.testing.assert_array_equal(loaded[0], weights[0] * 6)
    assert loaded[1].dtype == np.int64 and loaded[1] == 42
    with pytest.raises(ValueError, match="holds 2 weight arrays, but the model has 1"):
        snapshots.load(6, weights[:1])
    with pytest.raises(ValueError, match=r"weight 0 is float32\[2, 3\], but the model's is "
                       r"float32\[3, 2\]"):
        snapshots.load(6, [weights[0].T, weights[1]])
    (tmp_path / "swa" / ".tmp-snapshot-x.npz").write_bytes(b"partial")  # a killed write
    _flip_byte(snapshots.path(3), 60)
    fresh = WeightSnapshots(tmp_path / "swa", "snapshot")
    with pytest.raises(run_store.DamagedFileError, match=r"snapshot-000000000003\.npz"):
        fresh.check(3)
    fresh.keep_only([6, 9])
    assert sorted(os.listdir(tmp_path / "swa")) == [
        "snapshot-000000000006.npz", "snapshot-000000000006.npz.sha256",
        "snapshot-000000000009.npz", "snapshot-000000000009.npz.sha256"]


def test_restore_checkpoint_needs_compiled_model(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compiled"):
        run_store.restore_checkpoint(model, tmp_path / "x.weights.h5")


@pytest.mark.backend_agnostic
def test_run_config_detects_other_settings(tmp_path):
    RunStore(tmp_path).open({"pe": "none", "steps": (1, 2)})
    RunStore(tmp_path).open({"pe": "none", "steps": (1, 2)})
    with pytest.raises(ValueError, match=r"pe: 'none' -> 'absolute'.*another --output_dir"):
        RunStore(tmp_path).open({"pe": "absolute", "steps": (1, 2)})
    # How each start ran is recorded, not compared.
    RunStore(tmp_path).record_start({"step": 0, "num_replicas": 2})
    RunStore(tmp_path).record_start({"step": 30, "num_replicas": 1})
    RunStore(tmp_path).open({"pe": "none", "steps": (1, 2)})
    stored = json.loads((tmp_path / "run_config.json").read_text())
    assert stored["starts"] == [{"step": 0, "num_replicas": 2}, {"step": 30, "num_replicas": 1}]
    assert stored["pe"] == "none"
    (tmp_path / "run_config.json").write_text("{trunc")
    with pytest.raises(run_store.RunMismatchError, match="unreadable"):
        RunStore(tmp_path).open({"pe": "none", "steps": (1, 2)})


@pytest.mark.backend_agnostic
def test_training_log_truncate_and_read(tmp_path):
    path = tmp_path / "training_log.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["epoch", "loss", "val_loss"], [0, 1.0, 2.0], [1, 0.5, ""],
                                 [2, 0.25, 1.0]])
    RunStore(tmp_path).truncate_log(2)
    columns = outputs.read_training_log(path, steps_per_epoch=10)
    assert columns["step"] == [10, 20] and "epoch" not in columns
    assert columns["loss"] == [1.0, 0.5] and np.isnan(columns["val_loss"][1])
    RunStore(tmp_path / "missing").truncate_log(0)  # nothing to do
