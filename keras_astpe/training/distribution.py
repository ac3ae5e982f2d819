"""Data-parallel training on the engines users already run (`--distribute`).

| `--distribute` | backend | engine |
|---|---|---|
| `none` | any | one device |
| `mirrored` | tensorflow | `tf.distribute.MirroredStrategy`: every GPU of this host |
| `multi_worker` | tensorflow | `MultiWorkerMirroredStrategy`: the hosts of `TF_CONFIG` |
| `data_parallel` | jax | `keras.distribution.DataParallel` over every device of every process |

The PyTorch backend trains on one device.

**Global-batch semantics.** The batch size is the global batch. Each worker (a host, or a
process) builds the same shuffled and augmented stream of clips as a single-device run and
keeps its block of every global batch before the front end (`make_dataset(shard_count=,
shard_index=)`), so each clip is decoded and augmented once, by one worker, and replica `r`
of step `s` holds the `r`-th block of batch `s` of a single-device run, with the same crops
and SpecAugment masks. The loss is the mean over the global batch and the gradients are
summed over the replicas before they are clipped, so a step is the single-device step up to
the order of floating-point sums, whatever the number of replicas: the learning-rate
schedule is the same function of the step, and a run may resume on another number of
replicas. What differs: on TensorFlow each replica draws its own dropout masks (JAX draws
the single-device masks); mixup mixes clips within a worker's block; and every worker reads
and parses every record (about 15% of the CPU time of a clip, the front end the rest).

**One writer.** Worker 0, the chief, writes the run folder (checkpoints, SWA snapshots,
logs, the model); the others read the statistics and checkpoints there when they start, so
the folder must be on a file system every worker reads. The others run the same callbacks
but write into a scratch folder they delete: Keras 3.15's `save_weights` creates a variable
(a reference optimizer), and creating a variable under `MultiWorkerMirroredStrategy` is a
collective every worker must join. The chief alone keeps the SWA snapshots (reading the
mirrored weights is local) and validates, on one device (`LocalValidation`). Every worker
resumes from the same checkpoint: the step and the run's settings are compared across
workers at start, and the workers end together.

**Several hosts.** TensorFlow: set `TF_CONFIG` on each host, e.g. on the second of two
`{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index":
1}}` (a `chief` task, if listed, is worker 0). JAX: set `KERAS_DISTRIBUTION_JOB_ADDRESSES`
(the coordinator's `host:port`, or every process's, comma-separated, the coordinator first),
`KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID` on each process:
`keras.distribution.initialize()` passes them to `jax.distributed.initialize`.

`KERAS_ASTPE_CPU_REPLICAS=N` splits the CPU into N logical TensorFlow devices, so that
`mirrored` runs N replicas without a GPU (to try and test the distributed path).

Keras' TensorFlow trainer needs three fixes under tf.distribute, applied to the model and
optimizer of a run here (`prepare`, `optimizer_class`, through `keras_internals`): it reads
(and so skips) a first batch before `fit` to build the model, and its reduction of the
step's logs fails under `MultiWorkerMirroredStrategy` (tensorflow/tensorflow#72388); and it
clips each replica's gradient before the sum over replicas, which differs from clipping the
global gradient.
"""

import contextlib
import hashlib
import json
import os

import keras
import numpy as np

from keras_astpe.training import keras_internals

KINDS = ("none", "mirrored", "multi_worker", "data_parallel")
_BACKEND = {"mirrored": "tensorflow", "multi_worker": "tensorflow", "data_parallel": "jax"}
CPU_REPLICAS_ENV = "KERAS_ASTPE_CPU_REPLICAS"
_JAX_CLUSTER_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                    "KERAS_DISTRIBUTION_PROCESS_ID")

_started = None


def check_backend(kind, backend=None):
    """Raises a one-line `ValueError` unless `--distribute=kind` runs on `backend` (default:
    the Keras backend)."""
    backend = backend or keras.backend.backend()
    if kind not in KINDS:
        raise ValueError(f"--distribute must be one of {KINDS}, got {kind!r}")
    needed = _BACKEND.get(kind)
    if needed is None or needed == backend:
        return
    if backend == "torch":
        raise ValueError(
            f"--distribute={kind}: the torch backend trains on one device (--distribute=none); "
            "distributed training runs on the tensorflow backend (--distribute=mirrored or "
            "multi_worker) and the jax backend (--distribute=data_parallel)")
    other = "data_parallel" if backend == "jax" else "mirrored (one host) or multi_worker"
    raise ValueError(f"--distribute={kind} needs the {needed} backend (KERAS_BACKEND={needed}); "
                     f"on {backend}, use --distribute={other}")


def check_jit_compile(kind, jit_compile):
    """Raises a one-line `ValueError` for XLA forced on under tf.distribute: Keras keeps XLA
    off there ("auto"), and a forced-on first step does not finish (bench/README.md, "XLA
    under tf.distribute")."""
    if jit_compile is True and _BACKEND.get(kind) == "tensorflow":
        raise ValueError(f"--jit_compile=true is not supported with --distribute={kind} "
                         "(tf.distribute): use --jit_compile=auto or false")


def start(kind):
    """The `Distribution` of `--distribute=kind`, started once per process.

    Call it before TensorFlow runs anything (tf.distribute configures the runtime when the
    strategy is made) and JAX computes anything (`jax.distributed.initialize`).
    """
    global _started
    check_backend(kind)
    if _started is not None:
        if _started.kind != kind:
            raise ValueError(f"this process already trains with --distribute={_started.kind}, "
                             f"not {kind}")
        return _started
    if kind == "none":
        _started = Distribution()
    elif kind == "data_parallel":
        _started = _JaxDataParallel()
    else:
        _started = _TensorFlowStrategy(kind)
    return _started


class Distribution:
    """How a run is spread over devices; this base class is one device (`none`).

    `num_replicas`: model replicas in all; `num_workers`: workers, each with its input
    pipeline (hosts, or processes); `worker_index`: this worker's, 0 being the chief.
    """

    kind = "none"

    def __init__(self, num_replicas=1, num_workers=1, worker_index=0, device="one device"):
        self.num_replicas = int(num_replicas)
        self.num_workers = int(num_workers)
        self.worker_index = int(worker_index)
        self.device = device

    @property
    def is_chief(self):
        return self.worker_index == 0

    @property
    def replicas_per_worker(self):
        return self.num_replicas // self.num_workers

    def check_batch(self, global_batch):
        if global_batch % self.num_replicas:
            raise ValueError(f"--batch_size={global_batch} (the global batch) must be divisible "
                             f"by the number of replicas, {self.num_replicas}")

    def input_batch(self, global_batch):
        """Clips per element of a worker's dataset."""
        return global_batch // self.num_workers

    @property
    def batches_per_step(self):
        """Elements of a worker's dataset one training step takes."""
        return 1

    def describe(self, global_batch):
        """The line a run prints at start, e.g. "Training on 16 replicas (multi_worker: 2
        workers x 8 gpu devices): per-replica batch 4, global batch 64"."""
        if self.kind == "none":
            return f"Training on {self.device}: batch {global_batch}"
        return (f"Training on {self.num_replicas} replicas ({self.kind}: {self.device}): "
                f"per-replica batch {global_batch // self.num_replicas}, "
                f"global batch {global_batch}")

    def record(self):
        """What `run_config.json` and `metrics.json` keep of the distribution."""
        return {"distribute": self.kind, "backend": keras.backend.backend(),
                "num_replicas": self.num_replicas, "num_workers": self.num_workers}

    def scope(self):
        """The context that model building, restoring and `fit` run in."""
        return contextlib.nullcontext()

    def distribute(self, make):
        """What `fit` trains on: `make()` returns this worker's tf.data dataset."""
        return make()

    def optimizer_class(self, cls):
        """The optimizer class to compile with (TensorFlow: clips after the replica sum)."""
        return cls

    def prepare(self, model, dataset):
        """Builds the compiled loss, metrics and optimizer before `fit` without reading data
        (see `keras_internals.build_for_fit`); `dataset` is a worker's dataset."""
        keras_internals.build_for_fit(model, dataset)  # the dataset's batch: splits evenly

    def assign_per_replica(self, variable, value_of):
        """Assigns `value_of(replica)` to each replica's copy of `variable` (one copy here:
        replica 0's value)."""
        variable.assign(value_of(0))

    def gather(self, value):
        """Every worker's integer `value`, in worker order (a collective: all must call)."""
        return [int(value)]

    def check_same(self, name, value):
        """Raises unless every worker holds the same integer `value` (a collective)."""
        values = self.gather(value)
        if len(set(values)) > 1:
            raise RuntimeError(f"the workers disagree on {name}: {values} (worker order); "
                               "start every worker with the same settings and run folder")

    def barrier(self):
        self.gather(0)

    @contextlib.contextmanager
    def local(self):
        """Where a model copy on this worker's first device is used (`local_model`)."""
        yield

    def local_model(self, model):
        """`model` with its weights on this worker's first device, outside the distribution
        (to evaluate and save on the chief); here `model` itself."""
        return model

    def predictor(self, local):
        """`predict(features) -> scores` (numpy) with a model from `local_model`, callable
        during `fit`."""
        return lambda features: keras.ops.convert_to_numpy(local.predict_on_batch(features))

    def local_function(self, fn):
        """`fn` compiled for the device of `local_model` where the backend needs it."""
        return fn


def _devices(workers, what, per_worker, kinds):
    """E.g. "2 workers x 8 gpu devices", "2 cpu devices"."""
    local = f"{per_worker} {'/'.join(sorted(kinds))} device{'s' if per_worker != 1 else ''}"
    return local if workers == 1 else f"{workers} {what} x {local}"


def settings_digest(settings):
    """An integer digest of a JSON-able dict, to compare settings across workers."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def _copy_model(model):
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


# ---------------------------------------------------------------------------------------
# TensorFlow: tf.distribute
# ---------------------------------------------------------------------------------------


class _TensorFlowStrategy(Distribution):
    def __init__(self, kind):
        import tensorflow as tf

        self.kind = kind
        if kind == "mirrored":
            self.strategy = tf.distribute.MirroredStrategy(_local_devices(tf))
            num_workers, worker_index = 1, 0
        else:
            if not os.environ.get("TF_CONFIG"):
                raise ValueError("--distribute=multi_worker reads the cluster from the "
                                 "TF_CONFIG environment variable, which is not set")
            if os.environ.get(CPU_REPLICAS_ENV):
                raise ValueError(f"{CPU_REPLICAS_ENV} applies to --distribute=mirrored only")
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
            num_workers, worker_index = _cluster_position(self.strategy.cluster_resolver)
        devices = self.strategy.extended.worker_devices
        kinds = {name.split("device:")[-1].split(":")[0].lower() for name in devices}
        super().__init__(self.strategy.num_replicas_in_sync, num_workers, worker_index,
                         device=_devices(num_workers, "workers", len(devices), kinds))

    def input_batch(self, global_batch):
        return global_batch // self.num_replicas  # each replica takes one element per step

    @property
    def batches_per_step(self):
        return self.replicas_per_worker

    def scope(self):
        return self.strategy.scope()

    def distribute(self, make):
        def dataset_fn(context):
            if (context.num_input_pipelines, context.input_pipeline_id) != (
                    self.num_workers, self.worker_index):
                raise RuntimeError(f"tf.distribute numbers this worker "
                                   f"{context.input_pipeline_id} of "
                                   f"{context.num_input_pipelines}, not {self.worker_index} of "
                                   f"{self.num_workers}")
            return make()

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def optimizer_class(self, cls):
        return keras_internals.clip_after_replica_sum(cls)

    def prepare(self, model, dataset):
        with self.strategy.scope():
            keras_internals.build_from_specs(model, dataset.element_spec)
        if not model.optimizer.built:
            raise RuntimeError("the optimizer was not built before fit")
        keras_internals.skip_build_from_data(model)  # built: no batch read before fit
        if self.num_workers > 1:
            # Keras averages the step's logs with `strategy.reduce("MEAN", v, axis=0)`,
            # which fails on the scalar logs under MultiWorkerMirroredStrategy; as rank-1
            # tensors they average over the replicas (the epoch logs are read from the
            # metrics themselves, across replicas).
            for name in ("train_step", "test_step"):
                setattr(model, name, _rank_one_logs(getattr(model, name)))

    def assign_per_replica(self, variable, value_of):
        first = self.worker_index * self.replicas_per_worker
        copies = getattr(variable.value, "values", None)
        if copies is None:  # created outside the strategy: one copy
            variable.assign(value_of(0))
            return
        for index, copy in enumerate(copies):
            copy.assign(value_of(first + index))

    def gather(self, value):
        if self.num_workers == 1:
            return [int(value)]
        import tensorflow as tf

        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant([int(value)], tf.int64))
        values = self.strategy.gather(per_replica, axis=0).numpy().tolist()
        return values[::self.replicas_per_worker]

    def local_model(self, model):
        import tensorflow as tf

        if tf.distribute.has_strategy():
            raise RuntimeError("local_model needs to run outside the strategy's scope")
        return _copy_model(model)

    def predictor(self, local):
        # A direct call: `predict_on_batch` inside the strategy's scope (as in `fit`) would
        # run on every replica and concatenate the copies.
        call = self.local_function(lambda features: local(features, training=False))
        return lambda features: call(features).numpy()

    def local_function(self, fn):
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)


def _local_devices(tf):
    """The devices of `mirrored`: the GPUs, or `KERAS_ASTPE_CPU_REPLICAS` logical CPUs."""
    count = os.environ.get(CPU_REPLICAS_ENV)
    if count is None:
        return None  # MirroredStrategy's own choice: every GPU, else the CPU
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{CPU_REPLICAS_ENV} must be an integer >= 1, got {count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(count))
    except RuntimeError:
        raise RuntimeError(f"{CPU_REPLICAS_ENV} must take effect before TensorFlow starts: "
                           "start the distribution first") from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def _cluster_position(resolver):
    """`(workers, this worker's index)` of a TF_CONFIG cluster; a chief is worker 0."""
    cluster = resolver.cluster_spec().as_dict()
    chiefs = len(cluster.get("chief", []))
    workers = chiefs + len(cluster.get("worker", []))
    if resolver.task_type == "chief":
        return workers, 0
    if resolver.task_type != "worker":
        raise ValueError(f"TF_CONFIG: task type {resolver.task_type!r} does not train; "
                         "use 'worker' (or 'chief')")
    return workers, chiefs + int(resolver.task_id)


def _rank_one_logs(step):
    def rank_one_step(data):
        return {name: keras.ops.reshape(value, [1]) for name, value in step(data).items()}

    return rank_one_step


# ---------------------------------------------------------------------------------------
# JAX: keras.distribution
# ---------------------------------------------------------------------------------------


class _JaxDataParallel(Distribution):
    kind = "data_parallel"

    def __init__(self):
        import jax

        if any(name in os.environ for name in _JAX_CLUSTER_ENV):
            keras.distribution.initialize()
        devices = jax.devices()
        # The workers feed their own clips (make_dataset's shards): no re-sharding.
        self.distribution = keras.distribution.DataParallel(devices=devices,
                                                            auto_shard_dataset=False)
        super().__init__(len(devices), jax.process_count(), jax.process_index(),
                         device=_devices(jax.process_count(), "processes",
                                         jax.local_device_count(),
                                         {device.platform for device in devices}))

    def scope(self):
        return self.distribution.scope()

    def gather(self, value):
        if self.num_workers == 1:
            return [int(value)]
        from jax.experimental import multihost_utils

        return [int(v) for v in multihost_utils.process_allgather(np.int64(value))]

    @contextlib.contextmanager
    def local(self):
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)

    def local_model(self, model):
        with self.local():
            return _copy_model(model)

    def predictor(self, local):
        def predict(features):
            with self.local():
                return keras.ops.convert_to_numpy(local.predict_on_batch(features))

        return predict


# ---------------------------------------------------------------------------------------
# Validation on the chief
# ---------------------------------------------------------------------------------------


class LocalValidation(keras.callbacks.Callback):
    """The validation logs of `fit(validation_data=...)` (`val_loss`, `val_<metric>`), for a
    distributed run, computed on one device of the chief from a copy of the weights.

    The numbers are those of a single-device run: the same loss (the mean over the clips)
    and freshly reset metrics of the same kind. A distributed evaluation would have to
    split every batch over the replicas, which the last, partial batch does not allow on
    every engine. Place it before the loggers.

    Args:
        distribution: the run's `Distribution`.
        local: a model from `distribution.local_model`, overwritten at each epoch end.
        dataset: the evaluation `(features, targets)` batches.
        loss: the compiled loss (a `keras.losses.Loss`).
        metrics: metrics like the compiled ones, made outside any distribution scope.
    """

    def __init__(self, distribution, local, dataset, loss, metrics):
        super().__init__()
        self.distribution = distribution
        self.local = local
        self.dataset = dataset
        self.loss = loss
        self.metrics = list(metrics)
        self._predict = distribution.predictor(local)
        self._update = distribution.local_function(self._update_metrics)

    def _update_metrics(self, targets, scores):
        for metric in self.metrics:
            metric.update_state(targets, scores)
        return keras.ops.convert_to_tensor(0)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        self.local.set_weights(self.model.get_weights())
        total, count = 0.0, 0
        with self.distribution.local():
            for metric in self.metrics:
                metric.reset_state()
            for features, targets in self.dataset.as_numpy_iterator():
                scores = self._predict(features)
                # `Loss.call`: per-clip losses, without the 1 / replicas scaling that
                # `Loss.__call__` applies inside a tf.distribute scope.
                per_clip = keras.ops.convert_to_numpy(self.loss.call(targets, scores))
                total += float(np.sum(per_clip, dtype=np.float64))
                count += len(per_clip)
                self._update(targets, scores)
            if not count:
                raise ValueError("The evaluation dataset is empty.")
            logs["val_loss"] = total / count
            for metric in self.metrics:
                logs[f"val_{metric.name}"] = float(keras.ops.convert_to_numpy(metric.result()))
