"""Throughput logs: the time a trainer waits for its input, clips per second."""

import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.training import throughput

BATCH = 4


def _slow(seconds, batches):
    """`batches` batches of 4, each made in about `seconds` (a sleep in the pipeline)."""
    def wait(index):
        time.sleep(seconds)
        return index

    return (tf.data.Dataset.range(batches)
            .map(lambda i: tf.py_function(wait, [i], tf.int64))
            .map(lambda i: (tf.fill([BATCH, 3], tf.cast(i, tf.float32)), tf.ones([BATCH, 1]))))


@pytest.mark.backend_agnostic
def test_input_wait_adds_up_the_waits():
    timer = throughput.InputWait()
    assert [int(x[0, 0]) for x, _ in timer.wrap(_slow(0.05, 6))] == list(range(6))
    waited = timer.take()
    assert 0.25 < waited < 1.0  # 6 waits of ~50 ms
    assert timer.take() == 0.0
    # A pipeline that runs ahead (prefetched, consumed slowly) is not waited for.
    ahead = timer.wrap(_slow(0.01, 6).prefetch(6))
    iterator = iter(ahead)
    next(iterator)  # starting up
    time.sleep(0.5)
    timer.take()
    for _ in range(5):
        next(iterator)
    assert timer.take() < 0.05 * waited


def test_throughput_logs_starved_training():
    timer = throughput.InputWait()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    callback = throughput.Throughput(BATCH, timer)
    history = model.fit(timer.wrap(_slow(0.05, 8).repeat()), epochs=3, steps_per_epoch=4,
                        callbacks=[callback], verbose=0)
    logs = history.history
    for epoch in (1, 2):  # the first compiles the step
        # The steps of a one-weight model take ~ms: the input (50 ms a batch) limits them.
        assert logs["input_wait_fraction"][epoch] > 0.5
        # (PyTorch's loader reads ahead across the epoch's end: some batches come early.)
        assert logs["clips_per_second"][epoch] < BATCH / 0.05 * 1.5
        assert logs["compute_clips_per_second"][epoch] > 2 * logs["clips_per_second"][epoch]


@pytest.mark.backend_agnostic
def test_probe_input():
    rate = throughput.probe_input(_slow(0.02, 40), BATCH, seconds=0.3)
    assert 0.5 * BATCH / 0.02 < rate < 1.5 * BATCH / 0.02
    assert throughput.probe_input(_slow(0.0, 1), BATCH) is None
    assert np.isfinite(throughput.probe_input(_slow(0.0, 3), BATCH))
