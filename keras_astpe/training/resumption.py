"""Exact resumption: a run killed at any point (even by SIGKILL) and rerun ends as if never
stopped, and a damaged file is never loaded silently.

- An epoch of `fit` is one checkpoint interval. Everything random in interval `k` (data
  order, crops, SpecAugment, dropout) is seeded from `(seed, k)` (`derive_seed`,
  `interval_dataset`, `DropoutReseed`), so a run restarted from the checkpoint of interval
  `k` trains on the very batches, with the very dropout masks, of an uninterrupted run
  (bit-identical on CPU on the three backends; GPU kernels may add float noise).

What is written and read back (verified checkpoints, snapshots, the run's identity) is in
`keras_astpe.training.run_store`.
"""

import keras
import numpy as np


def derive_seed(seed, *keys):
    """A seed in [1, 2**30) from `seed` and integer `keys` (e.g. interval, purpose)."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0]
    return 1 + int(state) % (2**30 - 1)


def interval_dataset(make_interval, start, stop, steps):
    """Batches of checkpoint intervals `start .. stop - 1`, `steps` batches each.

    `make_interval(k)` returns the (repeated) dataset of interval `k`, seeded from `k`;
    the result concatenates the first `steps` batches of each, so that a run resumed at
    interval `start` sees the batches an uninterrupted run sees from there, without
    reading (or decoding) the data of the intervals before.

    Within an interval the data are shuffled and read once before any clip repeats; a new
    interval starts a new shuffle, so over a whole run clips are drawn in pieces of
    `steps` batches rather than whole passes over the data.
    """
    if not 0 <= start < stop:
        raise ValueError(f"need 0 <= start < stop, got start={start}, stop={stop}")
    dataset = None
    for k in range(start, stop):
        piece = make_interval(k).take(steps)
        dataset = piece if dataset is None else dataset.concatenate(piece)
    return dataset


def seed_generator_states(model):
    """The state variables of the model's seed generators (dropout), in a fixed order."""
    return [variable for variable in model.non_trainable_variables
            if variable.path.rsplit("/", 1)[-1] == "seed_generator_state"]


class DropoutReseed(keras.callbacks.Callback):
    """Re-seeds the random state of dropout at each epoch's first batch, from `(seed, epoch)`.

    Keras does not save the state of the seed generators in checkpoints, and on PyTorch
    unseeded `Dropout` layers draw from torch's global generator. Seeding every
    `keras.random.SeedGenerator` of the model (and, on PyTorch, the global generator) from
    `(seed, epoch)` makes the dropout masks of an epoch the same in a resumed run as in an
    uninterrupted one. It happens at the first batch rather than at the epoch start because
    on PyTorch, creating the data iterator (at the first epoch of a `fit`) draws from the
    global generator.

    With a `distribution` (`keras_astpe.training.distribution`) whose replicas each keep a
    copy of the state (tf.distribute), replica `r > 0` is seeded from `(seed, epoch, r)`:
    Keras would otherwise draw the same masks on every replica.
    """

    def __init__(self, seed, distribution=None):
        super().__init__()
        self.seed = int(seed)
        self.distribution = distribution
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch is None:
            return
        epoch, self._epoch = self._epoch, None
        for index, state in enumerate(seed_generator_states(self.model)):
            dtype = keras.backend.standardize_dtype(state.dtype)

            def value_of(replica, index=index, dtype=dtype):
                keys = (0, epoch, index) + ((replica,) if replica else ())
                return np.array([derive_seed(self.seed, *keys), 0]).astype(dtype)

            if self.distribution is None:
                state.assign(value_of(0))
            else:
                self.distribution.assign_per_replica(state, value_of)
        if keras.backend.backend() == "torch":
            import torch

            torch.manual_seed(derive_seed(self.seed, 1, epoch))
