"""recipes/train_audioset.py --distribute on the CPU with the real engines: TensorFlow's
MirroredStrategy on two logical CPUs and a two-process MultiWorkerMirroredStrategy on
127.0.0.1, JAX's DataParallel on two host devices and in two processes (jax.distributed on
127.0.0.1), against one device; SIGKILLed runs resume (subprocesses, the tiny demo).

Tolerances: JAX trains on the one-device batches with the one-device dropout masks, so its
losses agree to float rounding (rtol 1e-4). TensorFlow's replicas draw their own dropout
masks (0.1 in every block), which moves the per-interval losses by about 3% here: rtol 10%
against one device; two workers of one replica and two replicas of one worker draw the same
(rtol 1e-5). (tests/training/test_distribution.py checks the steps without dropout.)
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_astpe  # noqa: F401  (registers the model classes for load_model)
from keras_astpe.training import distribution
from tfrecords_tools.demo import DEMO_DIR, prepare_demo_data

pytestmark = [pytest.mark.backend_agnostic, pytest.mark.slow]

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train_audioset.py"
# 2 checkpoint intervals of 3 steps, global batch 4; SWA of both checkpoints.
TINY = ["--pe=time_alibi", "--preset=ast-pe-tiny", "--demo_size=tiny", "--batch_size=4",
        "--train_steps=6", "--checkpoint_every=3", "--swa_last=2", "--warmup_steps=2"]
FIRST_CHECKPOINT = Path("checkpoints") / "ckpt-000000000003.weights.h5"
TIMEOUT = 400  # seconds a run may take here (2 shared cores)
TWO_HOST_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
TF_RTOL, JAX_RTOL = 0.1, 1e-4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory whose demo_data/ holds the tiny demo, generated and converted."""
    work = tmp_path_factory.mktemp("distributed")
    prepare_demo_data("audioset", root=work / DEMO_DIR, size="tiny", progress=False)
    return work


class Runs:
    """Recipe processes, all killed when the test ends."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.processes = []

    def start(self, name, *args, backend="tensorflow", env=None):
        process = subprocess.Popen(
            [sys.executable, str(RECIPE), *TINY, f"--output_dir={self.workdir / name}", *args],
            cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                     PYTHONUNBUFFERED="1", **(env or {})))
        self.processes.append(process)
        return process

    def start_workers(self, name, *args):
        """The two workers of a MultiWorkerMirroredStrategy run on 127.0.0.1."""
        ports = _free_ports(2)
        return [self.start(name, "--distribute=multi_worker", *args, env={"TF_CONFIG": json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
             "task": {"type": "worker", "index": index}})}) for index in (0, 1)]

    def start_processes(self, name, *args):
        """The two processes of a JAX DataParallel run on 127.0.0.1 (jax.distributed)."""
        address = f"127.0.0.1:{_free_ports(1)[0]}"
        return [self.start(name, "--distribute=data_parallel", *args, backend="jax", env={
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": address, "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}) for index in (0, 1)]

    def kill_all(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


@pytest.fixture
def runs(workdir):
    runs = Runs(workdir)
    yield runs
    runs.kill_all()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _finish(*processes):
    outputs = []
    for process in processes:
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, output[-3000:]
        outputs.append(output)
    return outputs


def _kill_when(path, *processes):
    """SIGKILLs `processes` as soon as `path` exists; they must still be running."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        for process in processes:
            assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    outputs = []
    for process in processes:
        outputs.append(process.communicate(timeout=60)[0])
        assert process.returncode == -signal.SIGKILL
    return outputs


def _log(run_dir, *columns):
    with open(run_dir / "training_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    return np.array([[float(row[column]) for column in columns] for row in rows])


def _json(path):
    with open(path) as f:
        return json.load(f)


def _weights(run_dir):
    return keras.saving.load_model(run_dir / "model.keras").get_weights()


def _assert_same_model(a, b, atol):
    for x, y in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def tensorflow_runs(workdir):
    """One device and MirroredStrategy on 2 logical CPUs, side by side."""
    runs = Runs(workdir)
    try:
        outputs = _finish(runs.start("tf_one"), runs.start(
            "tf_mirrored", "--distribute=mirrored",
            env={distribution.CPU_REPLICAS_ENV: "2"}))
    finally:
        runs.kill_all()
    return outputs


def test_mirrored_on_two_logical_cpus_matches_one_device(workdir, tensorflow_runs):
    output = tensorflow_runs[1]
    assert ("Training on 2 replicas (mirrored: 2 cpu devices): per-replica batch 2, "
            "global batch 4") in output
    assert "Training on one device: batch 4" in tensorflow_runs[0]
    one, mirrored = workdir / "tf_one", workdir / "tf_mirrored"
    np.testing.assert_allclose(_log(mirrored, "loss", "val_loss"), _log(one, "loss", "val_loss"),
                               rtol=TF_RTOL)
    throughput = _log(mirrored, "clips_per_second", "compute_clips_per_second",
                      "input_wait_fraction")
    assert (throughput[:, :2] > 0).all()
    assert ((throughput[:, 2] >= 0) & (throughput[:, 2] < 1)).all()
    assert "Input pipeline alone:" in output
    record = _json(mirrored / "metrics.json")["distribution"]
    assert record == {"distribute": "mirrored", "backend": "tensorflow", "num_replicas": 2,
                      "num_workers": 1}
    starts = _json(mirrored / "run_config.json")["starts"]
    assert [(start["step"], start["num_replicas"]) for start in starts] == [(0, 2)]


@pytest.fixture(scope="module")
def jax_one_device(workdir):
    runs = Runs(workdir)
    try:
        output = _finish(runs.start("jax_one", backend="jax"))[0]
    finally:
        runs.kill_all()
    assert "Training on one device: batch 4" in output
    return workdir / "jax_one"


def test_data_parallel_matches_one_device_and_resumes_on_one_device(workdir, runs,
                                                                     jax_one_device):
    # JAX on two host devices, SIGKILLed after its first checkpoint, then resumed on one
    # device: global-batch semantics let another number of replicas go on with the run.
    parallel = runs.start("jax_parallel", "--distribute=data_parallel", backend="jax",
                          env=TWO_HOST_DEVICES)
    killed = _kill_when(workdir / "jax_parallel" / FIRST_CHECKPOINT, parallel)[0]
    assert ("Training on 2 replicas (data_parallel: 2 cpu devices): per-replica batch 2, "
            "global batch 4") in killed
    output = _finish(runs.start("jax_parallel", backend="jax"))[0]
    assert "Resuming" in output and "from step 3" in output
    np.testing.assert_allclose(_log(workdir / "jax_parallel", "loss", "val_loss"),
                               _log(workdir / "jax_one", "loss", "val_loss"), rtol=JAX_RTOL)
    _assert_same_model(workdir / "jax_parallel", workdir / "jax_one", atol=1e-5)
    starts = _json(workdir / "jax_parallel" / "run_config.json")["starts"]
    assert [(s["step"], s["distribute"], s["num_replicas"]) for s in starts] == [
        (0, "data_parallel", 2), (3, "none", 1)]


def test_data_parallel_in_two_processes_matches_one_device(workdir, runs, jax_one_device):
    chief, worker = _finish(*runs.start_processes("jax_processes"))
    assert ("Training on 2 replicas (data_parallel: 2 processes x 1 cpu device): per-replica "
            "batch 2, global batch 4") in chief
    assert "Worker 1 of 2 done; worker 0 writes the results" in worker
    np.testing.assert_allclose(_log(workdir / "jax_processes", "loss", "val_loss"),
                               _log(jax_one_device, "loss", "val_loss"), rtol=JAX_RTOL)
    _assert_same_model(workdir / "jax_processes", jax_one_device, atol=1e-5)


def test_multi_worker_on_loopback_matches_one_device_and_resumes(workdir, runs,
                                                                  tensorflow_runs):
    uninterrupted = runs.start_workers("tf_workers")
    _kill_when(workdir / "tf_killed" / FIRST_CHECKPOINT, *runs.start_workers("tf_killed"))
    chief, worker, resumed_chief, _ = _finish(*uninterrupted, *runs.start_workers("tf_killed"))
    assert ("Training on 2 replicas (multi_worker: 2 workers x 1 cpu device): per-replica "
            "batch 2, global batch 4") in chief
    assert "Worker 1 of 2 done; worker 0 writes the results" in worker
    assert "Resuming" in resumed_chief and "from step 3" in resumed_chief
    workers, killed = workdir / "tf_workers", workdir / "tf_killed"
    np.testing.assert_allclose(_log(workers, "loss", "val_loss"),
                               _log(workdir / "tf_one", "loss", "val_loss"), rtol=TF_RTOL)
    # Replica r takes the r-th block of each global batch and the r-th dropout seed,
    # whether the replicas are devices of one worker or workers.
    np.testing.assert_allclose(_log(workers, "loss", "val_loss"),
                               _log(workdir / "tf_mirrored", "loss", "val_loss"), rtol=1e-5)
    # The killed run goes on as if never stopped: the same data, seeds and dropout masks.
    np.testing.assert_allclose(_log(killed, "loss", "val_loss"), _log(workers, "loss", "val_loss"),
                               rtol=1e-5)
    _assert_same_model(killed, workers, atol=1e-6)
    # Only the chief writes: no file of the other worker in the run folder.
    assert sorted(os.listdir(killed / "checkpoints")) == sorted(
        os.listdir(workers / "checkpoints"))
    assert _json(killed / "metrics.json")["distribution"]["num_workers"] == 2
