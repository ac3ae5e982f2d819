"""Training throughput against input throughput, so that a starved accelerator shows.

`InputWait.wrap(dataset)` times, batch by batch, how long whoever reads the dataset (the
trainer, or tf.distribute's prefetcher) waits for the next batch; `Throughput`, a callback,
turns that into per-interval logs: `clips_per_second` (what trained), `input_wait_fraction`
(the fraction of the interval spent waiting for input) and `compute_clips_per_second` (the
clips per second of the steps alone). `probe_input` measures the input pipeline alone, before
training, in clips per second. A pipeline that keeps up shows an `input_wait_fraction` near 0; a
starved accelerator a large one, with `clips_per_second` near the probe's figure.
"""

import threading
import time

import keras
import tensorflow as tf


class InputWait:
    """Adds up the time spent waiting for the batches of the datasets it wraps."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seconds = 0.0

    def wrap(self, dataset):
        """`dataset`, timed: each batch's wait is measured from the request to its arrival
        (a timestamp taken first, in the same request, then one after the batch came)."""
        def record(wait):
            with self._lock:
                self._seconds += float(wait)
            return 0

        def timed(start, element):
            done = tf.py_function(record, [tf.timestamp() - start], tf.int32)
            with tf.control_dependencies([done]):
                return tf.nest.map_structure(tf.identity, element)

        # `zip` asks its first input, the clock, before the dataset, in the same request.
        clock = tf.data.Dataset.from_tensors(0).repeat().map(lambda _: tf.timestamp())
        timed_dataset = tf.data.Dataset.zip(clock, dataset).map(timed)
        options = tf.data.Options()
        options.autotune.enabled = False  # no prefetch injected between the two clocks
        return timed_dataset.with_options(options)

    def take(self):
        """The seconds waited since the last call."""
        with self._lock:
            seconds, self._seconds = self._seconds, 0.0
        return seconds


class Throughput(keras.callbacks.Callback):
    """Logs per epoch (a checkpoint interval) `clips_per_second`, `compute_clips_per_second`
    and `input_wait_fraction`, and prints them through `log` (None: quiet; Keras' epoch
    lines show them).

    The interval's time runs from its first batch to the end of its last step (validation
    excluded). Place it before the loggers.

    Args:
        clips_per_step: the global batch size.
        input_wait: the `InputWait` of the training dataset.
        log: a function taking one line, or None.
        total_steps: the run's last step, for the printed lines.
    """

    def __init__(self, clips_per_step, input_wait, log=None, total_steps=None):
        super().__init__()
        self.clips_per_step = int(clips_per_step)
        self.input_wait = input_wait
        self.log = log
        self.total_steps = total_steps
        self._start = self._end = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = None, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._start is None:
            self._start = time.perf_counter()
            self.input_wait.take()  # waits before the interval (validation) do not count

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if logs and batch + 1 == self.params.get("steps"):
            # The step's results are ready only when its computation ended (JAX dispatches
            # asynchronously).
            keras.ops.convert_to_numpy(next(iter(logs.values())))
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._steps:
            return
        seconds = max(self._end - self._start, 1e-9)
        waited = min(self.input_wait.take(), seconds)
        clips = self._steps * self.clips_per_step
        logs["clips_per_second"] = clips / seconds
        logs["compute_clips_per_second"] = clips / max(seconds - waited, 1e-9)
        logs["input_wait_fraction"] = waited / seconds
        if self.log is not None:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            of = f"/{self.total_steps}" if self.total_steps else ""
            self.log(f"Steps {step - self._steps + 1}-{step}{of}: "
                     f"{logs['clips_per_second']:.1f} clips/s; the steps alone "
                     f"{logs['compute_clips_per_second']:.1f} clips/s, waiting for input "
                     f"{100 * logs['input_wait_fraction']:.0f}% of the time")


def probe_input(dataset, clips_per_batch, seconds=1.0, max_batches=50):
    """Clips per second `dataset` delivers alone, after its first batch (which pays for
    starting up: opening files, filling the shuffle buffer): batches are read for about
    `seconds`, at most `max_batches`. Returns None if it holds fewer than two batches."""
    iterator = iter(dataset)
    try:
        next(iterator)
    except StopIteration:
        return None
    start, batches = time.perf_counter(), 0
    while batches < max_batches and time.perf_counter() - start < seconds:
        try:
            next(iterator)
        except StopIteration:
            break
        batches += 1
    if not batches:
        return None
    return batches * clips_per_batch / (time.perf_counter() - start)
