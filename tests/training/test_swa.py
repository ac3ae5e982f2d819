import logging
import os

import keras
import numpy as np
import pytest

from keras_astpe.training import StochasticWeightAveraging, average_weights
from keras_astpe.training.run_store import DamagedFileError

BATCH = 4


@keras.saving.register_keras_serializable(package="keras_astpe_tests")
class StepCounter(keras.layers.Layer):
    """Identity with an int32 non-trainable counter of training calls."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                     trainable=False, name="count")

    def call(self, x, training=False):
        if training:
            self.count.assign_add(1)
        return x


def _iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class Recorder(keras.callbacks.Callback):
    """Records `get_weights()` whenever `iterations` is a multiple of `every`."""

    def __init__(self, every):
        super().__init__()
        self.every = every
        self.snapshots = {}

    def on_train_batch_end(self, batch, logs=None):
        step = _iterations(self.model)
        if step % self.every == 0:
            self.snapshots[step] = [np.array(w) for w in self.model.get_weights()]


class AtStep(keras.callbacks.Callback):
    """Calls `fn(model)` once `iterations` reaches `step`."""

    def __init__(self, step, fn):
        super().__init__()
        self.step, self.fn = step, fn

    def on_train_batch_end(self, batch, logs=None):
        if _iterations(self.model) == self.step:
            self.fn(self.model)


def _model(initial_weights=None):
    model = keras.Sequential([
        keras.Input((3,)),
        StepCounter(),
        keras.layers.Dense(5, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(2),
    ])
    if initial_weights is not None:
        model.set_weights(initial_weights)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def _data(steps):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, 3)).astype("float32")
    y = rng.normal(size=(steps * BATCH, 2)).astype("float32")
    return x, y


def _fit(model, x, y, callbacks, **kwargs):
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=callbacks,
              **kwargs)


def _manual_average(snapshots):
    averaged = []
    for arrays in zip(*snapshots, strict=True):
        if np.issubdtype(arrays[-1].dtype, np.floating):
            averaged.append(np.mean(np.stack(arrays), axis=0))
        else:
            averaged.append(arrays[-1])
    return averaged


def _assert_weights_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-6)


def test_final_weights_are_the_average_of_the_last_snapshots():
    model = _model()
    x, y = _data(10)
    recorder = Recorder(every=2)
    swa = StochasticWeightAveraging(snapshot_every=2, num_snapshots=3)
    _fit(model, x, y, [recorder, swa])

    assert swa.snapshot_steps == (6, 8, 10)
    assert sorted(recorder.snapshots) == [2, 4, 6, 8, 10]
    expected = _manual_average([recorder.snapshots[s] for s in (6, 8, 10)])
    _assert_weights_close(model.get_weights(), expected)
    _assert_weights_close(swa.averaged_weights(), expected)
    # Non-trainable float weights (BatchNorm statistics) are averaged, not copied.
    moving_mean = model.layers[2].moving_mean
    assert not np.allclose(keras.ops.convert_to_numpy(moving_mean),
                           recorder.snapshots[10][3])
    # The int counter comes from the last snapshot.
    assert int(model.get_weights()[0]) == 10


def test_average_applied_to_another_model():
    # apply_at_end=False: the trained model keeps its weights; apply_average sets the average
    # in a copy (as a distributed run does on the chief).
    model = _model()
    x, y = _data(4)
    recorder = Recorder(every=2)
    swa = StochasticWeightAveraging(snapshot_every=2, num_snapshots=2, apply_at_end=False)
    _fit(model, x, y, [recorder, swa])
    _assert_weights_close(model.get_weights(), recorder.snapshots[4])
    assert swa.last_weights is None
    copy = _model()
    swa.apply_average(copy)
    _assert_weights_close(copy.get_weights(), _manual_average([recorder.snapshots[2],
                                                               recorder.snapshots[4]]))
    _assert_weights_close(swa.last_weights, recorder.snapshots[4])


def test_fewer_snapshots_than_asked_are_averaged_and_logged(caplog):
    model = _model()
    x, y = _data(5)
    recorder = Recorder(every=2)
    swa = StochasticWeightAveraging(snapshot_every=2, num_snapshots=10)
    with caplog.at_level(logging.WARNING, logger="keras_astpe.training.swa"):
        _fit(model, x, y, [recorder, swa])
    assert swa.snapshot_steps == (2, 4)
    assert "fewer than num_snapshots=10" in caplog.text
    _assert_weights_close(model.get_weights(),
                          _manual_average([recorder.snapshots[2], recorder.snapshots[4]]))


def test_no_snapshot_leaves_weights_untouched_and_warns():
    model = _model()
    x, y = _data(3)
    recorder = Recorder(every=1)
    swa = StochasticWeightAveraging(snapshot_every=5)
    with pytest.warns(UserWarning, match="took no snapshot"):
        _fit(model, x, y, [recorder, swa])
    assert swa.snapshot_steps == ()
    _assert_weights_close(model.get_weights(), recorder.snapshots[3])
    with pytest.raises(ValueError, match="No snapshot"):
        swa.averaged_weights()


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    initial = _model().get_weights()
    x, y = _data(12)

    reference = _model(initial)
    _fit(reference, x, y, [StochasticWeightAveraging(2, num_snapshots=5,
                                                     state_dir=tmp_path / "reference")])

    # Interrupted run: a checkpoint at step 5, SWA state persisted up to step 6, crash at 7.
    state_dir = tmp_path / "interrupted"
    checkpoint = str(tmp_path / "step5.keras")

    def crash(model):
        raise RuntimeError("simulated crash")

    model = _model(initial)
    first = StochasticWeightAveraging(2, num_snapshots=5, state_dir=state_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(model, x, y, [first, AtStep(5, lambda m: m.save(checkpoint)), AtStep(7, crash)])
    assert first.snapshot_steps == (2, 4, 6)
    assert [name for name in sorted(os.listdir(state_dir)) if name.endswith(".npz")] == [
        "snapshot-000000000002.npz", "snapshot-000000000004.npz", "snapshot-000000000006.npz"]

    # Restart from scratch: model and optimizer from the checkpoint, SWA from state_dir.
    resumed = keras.saving.load_model(checkpoint)
    assert _iterations(resumed) == 5
    swa = StochasticWeightAveraging(2, num_snapshots=5, state_dir=state_dir)
    _fit(resumed, x[5 * BATCH:], y[5 * BATCH:], [swa])

    assert swa.snapshot_steps == (4, 6, 8, 10, 12)  # 4 restored, the stale 6 recomputed
    _assert_weights_close(resumed.get_weights(), reference.get_weights())
    # The five averaged and the one before (a run resumed from the checkpoint before the
    # last averages 2..10), each with its digest.
    assert sorted(os.listdir(state_dir)) == [
        f"snapshot-{step:012d}.npz{suffix}" for step in (2, 4, 6, 8, 10, 12)
        for suffix in ("", ".sha256")]


def test_resume_with_backup_and_restore_listed_after_swa(tmp_path):
    # BackupAndRestore restores model and optimizer in its `on_train_begin`, which runs
    # after the SWA callback's here: SWA must still see the restored step.
    initial = _model().get_weights()
    x, y = _data(4)  # 4 steps per epoch, 3 epochs

    reference = _model(initial)
    reference.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[StochasticWeightAveraging(2, num_snapshots=5)])

    def crash(model):
        raise RuntimeError("simulated crash")

    def callbacks(*extra):
        return [StochasticWeightAveraging(2, num_snapshots=5, state_dir=tmp_path / "swa"),
                keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), *extra]

    with pytest.raises(RuntimeError, match="simulated crash"):  # backup at step 4
        _model(initial).fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                            callbacks=callbacks(AtStep(6, crash)))
    resumed = _model(initial)
    swa, backup = callbacks()
    recorder = Recorder(every=1)
    resumed.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                callbacks=[swa, backup, recorder])
    assert min(recorder.snapshots) == 5  # resumed from the step-4 backup
    assert swa.snapshot_steps == (4, 6, 8, 10, 12)  # 4 restored, 6 recomputed
    _assert_weights_close(resumed.get_weights(), reference.get_weights())


def test_fresh_run_drops_snapshots_of_a_previous_run(tmp_path):
    x, y = _data(6)
    _fit(_model(), x, y, [StochasticWeightAveraging(2, num_snapshots=3, state_dir=tmp_path)])
    swa = StochasticWeightAveraging(2, num_snapshots=3, state_dir=tmp_path)
    _fit(_model(), x[: 4 * BATCH], y[: 4 * BATCH], [swa])
    assert swa.snapshot_steps == (2, 4)
    assert not (tmp_path / "snapshot-000000000006.npz").exists()
    assert not (tmp_path / "snapshot-000000000006.npz.sha256").exists()


def test_snapshots_of_another_model_are_refused(tmp_path):
    x, y = _data(2)
    _fit(_model(), x, y, [StochasticWeightAveraging(2, state_dir=tmp_path)])
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.compile("adam", "mse")
    _fit(other, x, y, [])  # at step 2, where the stored snapshot is read back
    with pytest.raises(ValueError, match="holds 9 weight arrays, but the model has 2: it "
                       "belongs to another model"):
        _fit(other, x, y, [StochasticWeightAveraging(2, state_dir=tmp_path)])


def test_a_missing_snapshot_is_named(tmp_path):
    x, y = _data(4)
    _fit(_model(), x, y, [StochasticWeightAveraging(2, state_dir=tmp_path)])
    os.remove(tmp_path / "snapshot-000000000002.npz")
    swa = StochasticWeightAveraging(2, state_dir=tmp_path)
    [(step, message)] = swa.damaged_snapshots(4)
    assert step == 2 and message.endswith("snapshot-000000000002.npz is missing")


@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="the torch trainer supports steps_per_execution=1 only")
def test_steps_per_execution_snapshots_at_the_next_boundary():
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), "mse", steps_per_execution=3)
    x, y = _data(12)
    swa = StochasticWeightAveraging(snapshot_every=2, num_snapshots=10)
    _fit(model, x, y, [swa])
    assert swa.snapshot_steps == (3, 6, 9, 12)


def test_snapshots_span_epochs():
    model = _model()
    x, y = _data(3)
    swa = StochasticWeightAveraging(snapshot_every=2, num_snapshots=10)
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=[swa])
    assert swa.snapshot_steps == (2, 4, 6, 8)


@pytest.mark.parametrize("kwargs", [{"snapshot_every": 0}, {"snapshot_every": 1.5},
                                    {"snapshot_every": 10, "num_snapshots": 0}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="integer >= 1"):
        StochasticWeightAveraging(**kwargs)


def test_average_weights_checks_structure():
    a = [np.zeros((2, 3), "float32"), np.array(1, "int64")]
    b = [np.ones((2, 3), "float32"), np.array(7, "int64")]
    averaged = average_weights([a, b])
    np.testing.assert_array_equal(averaged[0], np.full((2, 3), 0.5, "float32"))
    assert averaged[0].dtype == np.float32 and averaged[1] == 7
    with pytest.raises(ValueError, match="structure"):
        average_weights([a, [np.zeros((3, 2), "float32"), a[1]]])
    with pytest.raises(ValueError, match="empty"):
        average_weights([])


def _damage(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_snapshots_are_named_and_only_needed_ones_count(tmp_path):
    x, y = _data(12)  # 12 steps; snapshots every 2, the last 3 averaged
    model = _model()
    _fit(model, x[:8 * BATCH], y[:8 * BATCH],
         [StochasticWeightAveraging(2, num_snapshots=5, state_dir=tmp_path)])
    # A run resumed at step 8 that ends at step 12 averages the snapshots 8, 10 and 12:
    # of those on disk (2, 4, 6, 8) it needs only 8.
    def swa():
        return StochasticWeightAveraging(2, num_snapshots=3, state_dir=tmp_path, final_step=12)

    assert swa().damaged_snapshots(8) == []
    _damage(tmp_path / "snapshot-000000000004.npz")
    assert swa().damaged_snapshots(8) == []  # not needed: blocks nothing
    _damage(tmp_path / "snapshot-000000000008.npz")
    resumed = swa()
    [(step, message)] = resumed.damaged_snapshots(8)
    assert step == 8 and "snapshot-000000000008.npz is damaged" in message
    resumed.set_model(model)
    with pytest.raises(DamagedFileError, match="snapshot-000000000008"):
        resumed._setup(8)
    # Resumed from an earlier step, the damaged snapshot is made again, not read.
    assert swa().damaged_snapshots(6) == []
