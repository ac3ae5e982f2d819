"""End-to-end tests of recipes/train_audioset.py on the tiny demo data (subprocesses)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_astpe  # noqa: F401  (registers the model classes for load_model)
from keras_astpe.training import AudioSetConfig, run_store
from tfrecords_tools.demo import DEMO_DIR, prepare_demo_data

pytestmark = [pytest.mark.backend_agnostic, pytest.mark.slow]

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train_audioset.py"
# 4 checkpoint intervals of 3 steps; the final model averages the last 2 checkpoints.
TINY = ["--pe=time_alibi", "--preset=ast-pe-tiny", "--demo_size=tiny", "--batch_size=4",
        "--train_steps=12", "--checkpoint_every=3", "--swa_last=2", "--warmup_steps=2"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory whose demo_data/ holds the tiny demo, generated and converted."""
    work = tmp_path_factory.mktemp("train_audioset")
    prepare_demo_data("audioset", root=work / DEMO_DIR, size="tiny", progress=False)
    return work


def _env(backend="tensorflow"):
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")


def _start(workdir, *args, backend="tensorflow"):
    return subprocess.Popen([sys.executable, str(RECIPE), *args], cwd=workdir,
                            env=_env(backend), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=300):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _kill_when(process, path, timeout=240):
    """SIGKILLs `process` as soon as `path` exists; the process must still be running."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def _weights(path):
    return keras.saving.load_model(path).get_weights()


def test_killed_and_resumed_run_equals_uninterrupted_run(workdir):
    # The uninterrupted run uses the default output folder of the demo mode.
    uninterrupted = _start(workdir, *TINY)
    resumed_dir = workdir / "resumed"
    checkpoints = resumed_dir / "checkpoints"
    # Killed right after its first checkpoint, then again after its second (in the first
    # resumed process): each restart goes on from the newest checkpoint. Whether the run
    # ends with an export may change between starts.
    _kill_when(_start(workdir, *TINY, "--noexport", f"--output_dir={resumed_dir}"),
               checkpoints / "ckpt-000000000003.weights.h5")
    _kill_when(_start(workdir, *TINY, f"--output_dir={resumed_dir}"),
               checkpoints / "ckpt-000000000006.weights.h5")
    assert not (resumed_dir / "model.keras").exists()
    output = _finish(_start(workdir, *TINY, f"--output_dir={resumed_dir}"))
    assert "Resuming" in output and "from step 6" in output
    _finish(uninterrupted)

    run_dir = workdir / "saved_models" / "audioset-demo" / "time_alibi"
    for a, b in zip(_weights(run_dir / "model.keras"), _weights(resumed_dir / "model.keras"),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    with open(run_dir / "metrics.json") as f:
        metrics = json.load(f)
    with open(resumed_dir / "metrics.json") as f:
        resumed_metrics = json.load(f)
    for key in ("mAP", "AUC", "d_prime"):
        assert np.isfinite(metrics[key]) and np.isfinite(metrics["last_checkpoint"][key])
        assert resumed_metrics[key] == pytest.approx(metrics[key], abs=1e-5)
    assert metrics["last_checkpoint"]["step"] == 12
    assert metrics["skipped_bad_records"] == {"the statistics pass": 0}
    assert 0 < metrics["chance_mAP"] < 1 and metrics["num_eval_clips"] == 10
    assert metrics["swa_steps"] == [9, 12] == resumed_metrics["swa_steps"]
    assert metrics["config"]["pe"] == "time_alibi" and metrics["config"]["train_steps"] == 12

    for name in ("model.keras", "learning_curves.png", "per_class_ap.png",
                 "normalization_stats.json", "run_config.json"):
        assert (run_dir / name).is_file(), name
    assert os.listdir(run_dir / "tensorboard")
    # Readable by others as the umask allows (a serving account), not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.keras", "metrics.json", "per_class_ap.csv", "run_config.json",
                 "checkpoints/ckpt-000000000012.weights.h5"):
        assert os.stat(run_dir / name).st_mode & 0o777 == 0o666 & ~umask, name
    with open(run_dir / "per_class_ap.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and rows[0]["class_name"] == "Sine wave"
    # Each interval logged once, also in the run killed twice.
    for folder in (run_dir, resumed_dir):
        with open(folder / "training_log.csv", newline="") as f:
            log = list(csv.DictReader(f))
        assert [int(row["epoch"]) for row in log] == [0, 1, 2, 3]
        assert {"loss", "val_loss", "mAP", "val_mAP", "learning_rate", "clips_per_second",
                "compute_clips_per_second", "input_wait_fraction"} <= set(log[0])
    assert metrics["distribution"] == {"distribute": "none", "backend": "tensorflow",
                                       "num_replicas": 1, "num_workers": 1}
    starts = json.loads((resumed_dir / "run_config.json").read_text())["starts"]
    assert [start["step"] for start in starts] == [0, 3, 6]
    assert [start["export"] for start in starts] == [False, True, True]
    assert (resumed_dir / "saved_model" / "1" / "saved_model.pb").is_file()

    # Rerunning a finished run trains no more and gives the same results.
    output = _finish(_start(workdir, *TINY, f"--output_dir={resumed_dir}"))
    assert "training already complete at step 12" in output
    assert f"eval mAP {metrics['mAP']:.3f} (chance {metrics['chance_mAP']:.3f})" in output
    assert f"Last checkpoint (step 12) alone: mAP {metrics['last_checkpoint']['mAP']:.3f}" \
        in output
    # The saved model carries its front end, statistics and class names.
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.class_names[0] == "Sine wave" and len(model.class_names) == 10
    assert model.audio_converter.stats.low == pytest.approx(
        json.loads((run_dir / "normalization_stats.json").read_text())["low"])


def test_short_runs_on_jax_and_torch(workdir):
    backends = ("jax", "torch")
    processes = [_start(workdir, "--pe=conditional", "--preset=ast-pe-tiny", "--demo_size=tiny",
                        "--batch_size=4", "--train_steps=4", "--checkpoint_every=2",
                        "--swa_last=2", "--warmup_steps=1", "--schedule=inverse_sqrt",
                        f"--output_dir={workdir / backend}", backend=backend)
                 for backend in backends]  # concurrently: two cores
    for process in processes:
        _finish(process)
    for backend in backends:
        with open(workdir / backend / "metrics.json") as f:
            metrics = json.load(f)
        assert metrics["backend"] == backend and np.isfinite(metrics["mAP"])
        assert metrics["swa_steps"] == [2, 4]
        model = keras.saving.load_model(workdir / backend / "model.keras")
        assert model.backbone.position_encoding == "conditional"


def _error(workdir, *args):
    """The output of a run expected to fail with one error line."""
    process = _start(workdir, *args)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    return output


def test_missing_records_and_bad_flags_give_clear_errors(tmp_path):
    output = _error(tmp_path, "--pe=none", f"--data_dir={tmp_path}")
    assert "python -m tfrecords_tools.audioset" in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path) in last

    output = _error(tmp_path, "--pe=none", "--train_steps=10", "--checkpoint_every=3")
    assert output.strip().splitlines()[-1] == \
        "error: --checkpoint_every (3) must divide --train_steps (10)"
    (tmp_path / "a_file").write_text("x")
    output = _error(tmp_path, "--pe=none", f"--output_dir={tmp_path / 'a_file'}")
    assert output.strip().splitlines()[-1] == \
        f"error: --output_dir={tmp_path / 'a_file'} is a file, not a folder"

    output = _error(tmp_path, "--pe=none", "--distribute=data_parallel")
    assert output.strip().splitlines()[-1] == (
        "error: --distribute=data_parallel needs the jax backend (KERAS_BACKEND=jax); on "
        "tensorflow, use --distribute=mirrored (one host) or multi_worker")
    output = _error(tmp_path, "--pe=none", "--distribute=multi_worker")
    assert output.strip().splitlines()[-1] == (
        "error: --distribute=multi_worker reads the cluster from the TF_CONFIG environment "
        "variable, which is not set")

    with pytest.raises(ValueError, match="must divide"):
        AudioSetConfig.named(pe="none", train_steps=10, checkpoint_every=3)
    with pytest.raises(ValueError, match="swa_last"):
        AudioSetConfig.named(pe="none", train_steps=10, checkpoint_every=5, swa_last=3)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB file system (tmpfs; needs root): the tiny run fills it after 2 checkpoints."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_keeps_the_last_checkpoint_and_the_rerun_resumes(workdir, small_disk):
    reference = _start(workdir, *TINY, "--noexport", f"--output_dir={workdir / 'reference'}")
    run_dir = small_disk / "run"
    output = _error(workdir, *TINY, "--noexport", f"--output_dir={run_dir}")
    assert output.strip().splitlines()[-1].startswith("error: no space left on the device")
    checkpoints = run_store.list_checkpoints(run_dir / "checkpoints")
    assert checkpoints  # the newest one is intact, and no partial file is left
    run_store.verify_file(checkpoints[0][1])
    assert not [name for name in os.listdir(run_dir / "checkpoints") if name.startswith(".")]
    # Space freed: the same command goes on from that checkpoint to the same model.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    output = _finish(_start(workdir, *TINY, "--noexport", f"--output_dir={run_dir}"))
    assert f"from step {checkpoints[0][0]}" in output
    _finish(reference)
    for a, b in zip(_weights(workdir / "reference" / "model.keras"),
                    _weights(run_dir / "model.keras"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mode_defaults():
    paper = AudioSetConfig.named(pe="conditional", data_dir="data/audioset")
    assert (paper.preset, paper.batch_size, paper.train_steps, paper.warmup_steps,
            paper.max_lr, paper.checkpoint_every, paper.swa_last) == \
        ("ast-pe", 64, 290_000, 30_000, 5e-4, 10_000, 10)
    assert paper.output_dir == os.path.join("saved_models", "audioset", "conditional")
    relative = AudioSetConfig.named(pe="learned_relative", data_dir="d", max_lr=1e-4)
    assert (relative.batch_size, relative.train_steps, relative.max_lr) == (32, 470_000, 1e-4)
    demo = AudioSetConfig.named(pe="none")
    assert demo.preset == "ast-pe-tiny" and demo.output_dir.endswith("audioset-demo/none")
    demo_on_data = AudioSetConfig.named("demo", pe="none", data_dir="d")
    assert (demo_on_data.train_steps, demo_on_data.data_dir) == (800, "d")


def test_help_explains_flags():
    result = subprocess.run([sys.executable, str(RECIPE), "--help"], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl exits 1 after --help
    for flag in ("--pe", "--preset", "--data_dir", "--batch_size", "--train_steps",
                 "--warmup_steps", "--max_lr", "--schedule", "--checkpoint_every",
                 "--swa_last", "--output_dir", "--[no]mixed_precision", "--seed",
                 "--distribute", "--jit_compile", "--config"):
        assert flag.lstrip("-") in result.stdout, flag  # booleans print as --[no]name
    assert "290000" in result.stdout and "inverse_sqrt" in result.stdout
    assert "<none|mirrored|multi_worker|data_parallel>" in result.stdout
