"""Data-parallel training: backend checks, sharded input, and steps on 2 replicas equal to
the steps on one device (TensorFlow on two logical CPUs, JAX on two host devices, each in a
fresh process: devices are set up before the engine starts)."""

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

from keras_astpe.data import pipeline, schema
from keras_astpe.models import LogMelAudioConverter
from keras_astpe.training import distribution

pytestmark = pytest.mark.backend_agnostic

CLIP = 1600  # 100 ms: 8 frames
CONVERTER = LogMelAudioConverter()  # the paper's front end, AudioSet statistics


def test_backend_mismatch_is_a_one_line_error():
    distribution.check_backend("none", "torch")
    distribution.check_backend("mirrored", "tensorflow")
    distribution.check_backend("multi_worker", "tensorflow")
    distribution.check_backend("data_parallel", "jax")
    with pytest.raises(ValueError, match=r"^--distribute=mirrored needs the tensorflow backend "
                                         r"\(KERAS_BACKEND=tensorflow\); on jax, use "
                                         r"--distribute=data_parallel$"):
        distribution.check_backend("mirrored", "jax")
    with pytest.raises(ValueError, match=r"data_parallel needs the jax backend.*on tensorflow, "
                                         r"use --distribute=mirrored \(one host\) or multi_wo"):
        distribution.check_backend("data_parallel", "tensorflow")
    for kind in ("mirrored", "multi_worker", "data_parallel"):
        with pytest.raises(ValueError, match=r"the torch backend trains on one device "
                                             r"\(--distribute=none\); distributed training "
                                             r"runs on the tensorflow backend"):
            distribution.check_backend(kind, "torch")
    with pytest.raises(ValueError, match="must be one of"):
        distribution.check_backend("horovod", "tensorflow")


def test_xla_forced_on_under_tf_distribute_is_an_error():
    for jit_compile in ("auto", True, False):
        distribution.check_jit_compile("none", jit_compile)
        distribution.check_jit_compile("data_parallel", jit_compile)
    distribution.check_jit_compile("mirrored", "auto")
    with pytest.raises(ValueError, match=r"^--jit_compile=true is not supported with "
                                         r"--distribute=multi_worker \(tf.distribute\)"):
        distribution.check_jit_compile("multi_worker", True)


def test_one_device():
    one = distribution.Distribution()
    assert (one.num_replicas, one.num_workers, one.is_chief, one.batches_per_step) == (
        1, 1, True, 1)
    assert one.input_batch(64) == 64
    assert one.describe(64) == "Training on one device: batch 64"
    assert one.gather(5) == [5]
    assert one.record()["distribute"] == "none"
    two = distribution.Distribution(num_replicas=4, num_workers=2, worker_index=1)
    assert not two.is_chief and two.input_batch(64) == 32
    with pytest.raises(ValueError, match=r"--batch_size=30 \(the global batch\) must be "
                                         r"divisible by the number of replicas, 4"):
        two.check_batch(30)


def _shards(tmp_path):
    paths = []
    for shard in range(2):
        path = tmp_path / f"train-{shard}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in range(5):
                clip_id = f"s{shard}c{i}"
                rng = np.random.default_rng(zlib.crc32(clip_id.encode()))
                writer.write(schema.encode_example(
                    0.2 * rng.standard_normal(CLIP + 400), clip_id, [i % 3],
                    original_sample_rate=16000, duration=(CLIP + 400) / 16000))
        paths.append(str(path))
    return paths


def _batches(files, batch_size, steps, **kwargs):
    dataset = pipeline.make_dataset(files, num_classes=3, batch_size=batch_size, training=True,
                                    clip_samples=CLIP, seed=7, deterministic=True,
                                    shuffle_buffer=4, return_clip_ids=True, **kwargs,
                                    converter=CONVERTER)
    return [(features.numpy(), [i.decode() for i in ids.numpy()])
            for features, _, ids in dataset.take(steps)]


def test_worker_shards_hold_the_global_batches(tmp_path):
    files = _shards(tmp_path)
    steps = 5  # 20 clips: two passes over the 10 (each pass reshuffled)
    whole = _batches(files, 4, steps)
    workers = [_batches(files, 2, steps, shard_count=2, shard_index=index) for index in (0, 1)]
    for step, (features, ids) in enumerate(whole):
        # The workers' batches, in worker order, are the global batch: the same clips in
        # the same order, with the same crops and SpecAugment masks.
        assert ids == workers[0][step][1] + workers[1][step][1]
        np.testing.assert_array_equal(
            features, np.concatenate([workers[0][step][0], workers[1][step][0]]))
    first_pass = [i for _, ids in whole[:2] for i in ids] + whole[2][1][:2]
    assert len(set(first_pass)) == 10  # every clip once per pass, across the workers
    with pytest.raises(ValueError, match="shard_index"):
        _batches(files, 2, 1, shard_count=2, shard_index=2)


def test_settings_digest():
    assert distribution.settings_digest({"a": 1, "b": [1, 2]}) == \
        distribution.settings_digest({"b": [1, 2], "a": 1})
    assert distribution.settings_digest({"a": 1}) != distribution.settings_digest({"a": 2})


# Runs in a fresh process with two replicas: steps on the 2 replicas against the same steps
# on one device, with gradient clipping by value (as the paper's compile) for a dense model
# whose gradients are all clipped and for the tiny AST (SGD: a step is linear in the
# gradient, so the comparison shows the gradient itself); prints JSON.
_SCRIPT = r"""
import json, os
import numpy as np
import keras_astpe
from keras_astpe.training import distribution, resumption, trainer
import keras
import tensorflow as tf

kind = os.environ["KIND"]
dist = distribution.start(kind)
out = {"replicas": dist.num_replicas, "describe": dist.describe(8),
       "batches_per_step": dist.batches_per_step}
rng = np.random.default_rng(0)

def train(model_fn, compile_fn, features, targets, distributed, steps):
    setup = dist if distributed else distribution.Distribution()
    keras.utils.set_random_seed(1)
    with setup.scope():
        model = model_fn()
        compile_fn(model, setup)
    batch = setup.input_batch(len(features) // steps)
    def make():
        # One element per replica and step (TensorFlow), or per worker (JAX, one device).
        return tf.data.Dataset.from_tensor_slices((features, targets)).batch(
            batch, drop_remainder=True)
    setup.prepare(model, make())
    with setup.scope():
        model.fit(setup.distribute(make), epochs=1, steps_per_epoch=steps, verbose=0,
                  shuffle=False)
    return model.get_weights()

def max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))

# Dense regression with large targets: every gradient element is clipped.
x = rng.normal(size=(16, 6)).astype("float32")
y = 100 * rng.normal(size=(16, 2)).astype("float32")
dense = lambda: keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
def paper_clip(model, setup):
    cls = setup.optimizer_class(keras.optimizers.SGD)
    model.compile(cls(0.1, clipvalue=1.0), "mse")
def keras_clip(model, setup):
    model.compile(keras.optimizers.SGD(0.1, clipvalue=1.0), "mse")
one = train(dense, paper_clip, x, y, False, 2)
out["clip_after_sum"] = max_difference(one, train(dense, paper_clip, x, y, True, 2))
out["keras_clip"] = max_difference(one, train(dense, keras_clip, x, y, True, 2))

# The tiny AST with the paper's compile, 2 steps of global batch 8.
features = rng.random((16, 64, 64)).astype("float32")
labels = (rng.random((16, 3)) > 0.6).astype("float32")
def ast(dropout=float(os.environ["DROPOUT"])):
    return keras_astpe.build_model("time_alibi", preset="ast-pe-tiny", num_classes=3,
                                   num_frames=64, dropout=dropout)
def sgd(model, setup):
    cls = setup.optimizer_class(keras.optimizers.SGD)
    model.compile(cls(0.1, clipvalue=1.0), keras.losses.BinaryCrossentropy(), metrics=None)
out["ast_sgd"] = max_difference(train(ast, sgd, features, labels, False, 2),
                                train(ast, sgd, features, labels, True, 2))

# Dropout seeds: replica 0 keeps the one-device seed, the others get their own.
with dist.scope():
    model = ast(dropout=0.1)
reseed = resumption.DropoutReseed(5, distribution=dist)
reseed.set_model(model)
reseed.on_epoch_begin(3)
reseed.on_train_batch_begin(0)
state = resumption.seed_generator_states(model)[0]
copies = getattr(state.value, "values", [state.value])
out["seeds"] = [int(np.asarray(copy)[0]) for copy in copies]
out["one_device_seed"] = resumption.derive_seed(5, 0, 3, 0)
print("RESULT " + json.dumps(out))
"""


def _run(backend, kind, env, dropout):
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, KERAS_BACKEND=backend, KIND=kind, DROPOUT=str(dropout),
                 TF_CPP_MIN_LOG_LEVEL="3", **env))
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, (result.stdout + result.stderr)[-3000:]
    return json.loads(lines[0][len("RESULT "):])


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_steps_as_one_device():
    out = _run("tensorflow", "mirrored", {distribution.CPU_REPLICAS_ENV: "2"}, dropout=0.0)
    assert out["replicas"] == 2 and out["batches_per_step"] == 2
    assert out["describe"] == ("Training on 2 replicas (mirrored: 2 cpu devices): "
                               "per-replica batch 4, global batch 8")
    # Clipping the gradient summed over the replicas is the one-device step; Keras' own
    # clipping of each replica's part is not (so the comparison can fail).
    assert out["clip_after_sum"] < 1e-6 < 0.01 < out["keras_clip"]
    # The tiny AST without dropout: the same steps up to the order of float sums.
    assert out["ast_sgd"] < 1e-6
    seeds = out["seeds"]
    assert seeds[0] == out["one_device_seed"] and len(set(seeds)) == 2


@pytest.mark.slow
def test_data_parallel_on_two_host_devices_steps_as_one_device():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = _run("jax", "data_parallel", env, dropout=0.1)
    assert out["replicas"] == 2 and out["batches_per_step"] == 1
    assert out["describe"] == ("Training on 2 replicas (data_parallel: 2 cpu devices): "
                               "per-replica batch 4, global batch 8")
    # JAX clips the global gradient and draws the one-device dropout masks.
    assert out["clip_after_sum"] < 1e-6 and out["keras_clip"] < 1e-6
    assert out["ast_sgd"] < 1e-6
    assert out["seeds"] == [out["one_device_seed"]]
