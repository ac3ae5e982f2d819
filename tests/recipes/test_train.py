"""End-to-end tests of recipes/train.py on small datasets of your own sounds: converted with
tfrecords_tools (a folder per class, with and without Speech Commands' lists; a CSV, single-
and multi-label), trained a few steps, evaluated on the test split, and the model scoring
a file; resumption after a kill; the demo; errors (subprocesses)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_astpe
from keras_astpe.data.dataset_info import DatasetInfo
from tests import sounds
from tests.recipes.running import run_recipe
from tests.taggers import CLASSES, tagger
from tfrecords_tools.csv import convert_csv
from tfrecords_tools.demo import DEMO_DIR, prepare_demo_data
from tfrecords_tools.folder import convert_folder

pytestmark = [pytest.mark.backend_agnostic, pytest.mark.slow]

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train.py"
# 3 checkpoint intervals of 2 steps, each validated; the best one is the final model.
TINY = ["--preset=ast-pe-tiny", "--batch_size=4", "--train_steps=6", "--checkpoint_every=2",
        "--warmup_steps=1", "--max_lr=3e-3"]


def _env(backend="tensorflow", **extra):
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def _start(workdir, *args, backend="tensorflow", env=None):
    return subprocess.Popen([sys.executable, str(RECIPE), *args], cwd=workdir,
                            env=_env(backend, **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _error(workdir, *args):
    """The last line of a run expected to fail with one error line."""
    process = _start(workdir, *args)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    return output.strip().splitlines()[-1]


def _metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Converted datasets: `folder` (hash split), `lists` (Speech Commands' lists), `csv`,
    `multi` (multi-label CSV), `no_validation` (no validation split); and `init.keras`, a
    model of other classes to fine-tune."""
    root = tmp_path_factory.mktemp("train")
    sounds.write_class_folders(root / "src" / "folder", per_class=12)
    convert_folder(str(root / "src" / "folder"), str(root / "folder"), validation_percent=25,
                   test_percent=25, num_workers=1, progress=False)
    sounds.write_class_folders(root / "src" / "lists", per_class=10, lists=True, seed=1)
    convert_folder(str(root / "src" / "lists"), str(root / "lists"), num_workers=1,
                   progress=False)
    convert_folder(str(root / "src" / "folder"), str(root / "no_validation"),
                   validation_percent=0, test_percent=25, num_workers=1, progress=False)
    for name, multi_label in (("csv", False), ("multi", True)):
        labels = sounds.write_csv_dataset(root / "src" / name, multi_label=multi_label)
        convert_csv(labels, str(root / name), audio_dir=str(root / "src" / name / "clips"),
                    num_workers=1, progress=False)
    tagger(activation="softmax").save(root / "init.keras")
    return root


@pytest.fixture(scope="module")
def runs(work):
    """Each dataset trained by the recipe (concurrently), with the output of each run."""
    args = {
        "folder": ["--pe=time_alibi"],
        "lists": ["--pe=conditional", "--noexport"],
        "csv": [f"--init={work / 'init.keras'}", "--noexport"],
        "multi": ["--pe=none", "--noexport"],
        "no_validation": ["--pe=none", "--selection=swa", "--train_steps=2", "--noexport"],
    }
    processes = {name: _start(work, *TINY, *extra, f"--data_dir={work / name}",
                              f"--output_dir={work / 'runs' / name}")
                 for name, extra in args.items()}
    return {name: _finish(process) for name, process in processes.items()}


def _check_model(run_dir, class_names, audio):
    """model.keras loads (after `import keras_astpe`), carries its class names and tags."""
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.class_names == tuple(class_names)
    scores = keras_astpe.tag(model, audio)
    assert sorted(name for name, _ in scores) == sorted(class_names)
    return model, dict(scores)


def test_class_folders_train_evaluate_on_test_and_tag(work, runs):
    run_dir = work / "runs" / "folder"
    metrics = _metrics(run_dir)
    info = DatasetInfo.load(work / "folder")
    assert (metrics["eval_split"], metrics["validation_split"]) == ("test", "validation")
    assert metrics["num_eval_clips"] == info.num_clips("test") > 0
    assert 0 <= metrics["accuracy"] <= 1 and metrics["chance_accuracy"] >= 1 / 3
    best = metrics["best_checkpoint"]
    assert best["step"] in (2, 4, 6) and len(best["history"]) == 3
    assert metrics["config"]["frames"] == 48  # the clips' 0.5 s, not the preset's 992
    summary = (f"time_alibi: test accuracy {100 * metrics['accuracy']:.1f}% (chance "
               f"{100 * metrics['chance_accuracy']:.1f}%) on {metrics['num_eval_clips']} "
               f"clips; the model at step {best['step']}, the best of 3 checkpoints on "
               f"validation (accuracy {100 * best['value']:.1f}%).")
    assert summary in runs["folder"]
    for name in ("per_class_accuracy.csv", "confusion_matrix.csv", "confusion_matrix.png",
                 "learning_curves.png", "training_log.csv", "run_config.json",
                 "saved_model/1/saved_model.pb"):
        assert (run_dir / name).is_file(), name
    assert os.listdir(run_dir / "tensorboard")
    clip = work / "src" / "folder" / "whistle" / "w000x0_nohash_0.wav"
    _, scores = _check_model(run_dir, sounds.CLASSES, str(clip))
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)  # softmax

    result = run_recipe("predict", f"--model={run_dir / 'model.keras'}", f"--audio={clip}",
                        "--top_k=3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Scored 1 of 1 files." in result.stdout


def test_speech_commands_lists_give_validation_and_test(work, runs):
    metrics = _metrics(work / "runs" / "lists")
    # The lists name every fifth clip of each class for validation and for test.
    assert metrics["num_eval_clips"] == 6 and metrics["eval_split"] == "test"
    assert metrics["validation_split"] == "validation"
    assert [len(entry) for entry in metrics["best_checkpoint"]["history"]] == [2, 2, 2]
    model, _ = _check_model(work / "runs" / "lists", sounds.CLASSES,
                            str(work / "src" / "lists" / "hum" / "h000x1_nohash_0.wav"))
    assert model.backbone.position_encoding == "conditional"


def test_csv_fine_tunes_a_model_of_other_classes(work, runs):
    assert f"Fine-tuning {work / 'init.keras'}" in runs["csv"]
    metrics = _metrics(work / "runs" / "csv")
    assert metrics["eval_split"] == "test" and metrics["num_eval_clips"] == 5
    model, _ = _check_model(work / "runs" / "csv", sounds.CLASSES,
                            str(work / "src" / "csv" / "clips" / "clip000.wav"))
    # A new head for the new classes on the backbone of init.keras (fine-tuned).
    assert model.num_classes == 3 and tuple(CLASSES) != sounds.CLASSES
    assert model.backbone.position_encoding == "time_alibi"


def test_multi_label_csv_gives_map(work, runs):
    metrics = _metrics(work / "runs" / "multi")
    for key in ("mAP", "AUC", "d_prime", "chance_mAP"):
        assert key in metrics
    assert metrics["best_checkpoint"]["monitor"] == "val_mAP"
    assert (work / "runs" / "multi" / "per_class_ap.csv").is_file()
    model, scores = _check_model(work / "runs" / "multi", sounds.CLASSES,
                                 str(work / "src" / "multi" / "clips" / "clip001.wav"))
    assert model.activation == "sigmoid"
    assert all(0 <= score <= 1 for score in scores.values())
    assert "none: test mAP" in runs["multi"]


def test_no_validation_split_is_an_error_or_a_stated_fallback(work, runs):
    line = _error(work, *TINY, "--pe=none", f"--data_dir={work / 'no_validation'}",
                  f"--output_dir={work / 'runs' / 'refused'}")
    assert line.startswith(f"error: {work / 'no_validation'} has no validation split with "
                           "clips (its splits: test ")
    assert "--selection=swa" in line
    assert (f"No validation split in {work / 'no_validation'}: validating on 'test', the "
            "evaluation split (logs only: the final model is the SWA of the last "
            "checkpoints)") in runs["no_validation"]
    assert _metrics(work / "runs" / "no_validation")["validation_split"] == "test"


def test_bad_init_and_flags_give_one_line_errors(work):
    data = f"--data_dir={work / 'folder'}"
    assert _error(work, data, "--init=missing.keras") == \
        "error: --init=missing.keras: model file not found"
    assert _error(work, data, "--pe=absolute", f"--init={work / 'init.keras'}") == (
        f"error: --pe applies to a new model; --init={work / 'init.keras'} keeps its own "
        "positional encoding")
    assert _error(work, data) == \
        "error: give --pe (a new model) or --init (a model or weights to start from)"
    assert _error(work, f"--data_dir={work / 'src'}", "--pe=none").startswith(
        f"error: {work / 'src'} holds no dataset.json")


def _kill_when(process, path, timeout=300):
    """SIGKILLs `process` as soon as `path` exists; the process must still be running."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()


def test_killed_and_resumed_run_selects_the_same_checkpoint(work):
    steps = ["--pe=time_alibi", "--noexport", f"--data_dir={work / 'folder'}",
             "--train_steps=8"]
    reference_dir, resumed_dir = work / "runs" / "reference", work / "runs" / "resumed"
    reference = _start(work, *TINY, *steps, f"--output_dir={reference_dir}")
    _kill_when(_start(work, *TINY, *steps, f"--output_dir={resumed_dir}"),
               resumed_dir / "checkpoints" / "ckpt-000000000004.weights.h5")
    output = _finish(_start(work, *TINY, *steps, f"--output_dir={resumed_dir}"))
    assert "from step 4" in output
    _finish(reference)
    expected, got = _metrics(reference_dir), _metrics(resumed_dir)
    assert got["best_checkpoint"] == expected["best_checkpoint"]
    assert got["accuracy"] == expected["accuracy"]
    for a, b in zip(keras.saving.load_model(reference_dir / "model.keras").get_weights(),
                    keras.saving.load_model(resumed_dir / "model.keras").get_weights(),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_short_runs_on_jax_and_torch_and_data_parallel(work):
    # JAX's DataParallel on two host devices trains on the one-device batches: it validates
    # alike and selects the same checkpoint (float rounding apart).
    runs = {"jax": {"backend": "jax"}, "torch": {"backend": "torch"},
            "jax_parallel": {"backend": "jax", "env": {
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}}}
    processes = [_start(work, *TINY, "--pe=conditional", "--noexport",
                        f"--data_dir={work / 'folder'}", f"--output_dir={work / 'runs' / name}",
                        *(["--distribute=data_parallel"] if name == "jax_parallel" else []),
                        **settings)
                 for name, settings in runs.items()]
    for process in processes:
        _finish(process)
    for name, settings in runs.items():
        metrics = _metrics(work / "runs" / name)
        assert metrics["backend"] == settings["backend"]
        assert metrics["best_checkpoint"]["step"] in (2, 4, 6)
        model = keras.saving.load_model(work / "runs" / name / "model.keras")
        assert model.class_names == sounds.CLASSES
    one, parallel = (_metrics(work / "runs" / name) for name in ("jax", "jax_parallel"))
    assert parallel["distribution"]["num_replicas"] == 2
    assert parallel["best_checkpoint"]["step"] == one["best_checkpoint"]["step"]
    np.testing.assert_allclose([value for _, value in parallel["best_checkpoint"]["history"]],
                               [value for _, value in one["best_checkpoint"]["history"]],
                               rtol=1e-4)
    for a, b in zip(keras.saving.load_model(work / "runs" / "jax" / "model.keras").get_weights(),
                    keras.saving.load_model(work / "runs" / "jax_parallel" / "model.keras")
                    .get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_demo_generates_converts_and_fine_tunes_the_quick_start_model(tmp_path):
    prepare_demo_data("sounds", root=tmp_path / DEMO_DIR, size="tiny", progress=False)
    quick_start = tmp_path / "saved_models" / "audioset-demo" / "time_alibi"
    quick_start.mkdir(parents=True)
    tagger().save(quick_start / "model.keras")  # stands for the quick start's model
    output = _finish(_start(tmp_path, "--demo_size=tiny", "--train_steps=4",
                            "--checkpoint_every=2", "--noexport"))
    assert "Fine-tuning saved_models/audioset-demo/time_alibi/model.keras" in output
    run_dir = tmp_path / "saved_models" / "sounds-demo" / "time_alibi"
    metrics = _metrics(run_dir)
    assert metrics["eval_split"] == "test" and metrics["num_classes"] == 5
    assert "time_alibi: test accuracy" in output and "(chance " in output
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.class_names == ("beep", "bell", "buzz", "chirp", "siren")
    # Without the quick start's model, the demo trains time_alibi from scratch.
    shutil.rmtree(tmp_path / "saved_models")
    output = _finish(_start(tmp_path, "--demo_size=tiny", "--train_steps=2",
                            "--checkpoint_every=2", "--noexport"))
    assert "Training time_alibi (ast-pe-tiny" in output


def test_help_explains_flags_and_configurations():
    result = subprocess.run([sys.executable, str(RECIPE), "--help"], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    for flag in ("--data_dir", "--init", "--pe", "--selection", "--validation_split",
                 "--eval_split", "--frames", "--fbank_stats", "--max_freq_mask",
                 "--[no]mixed_precision", "--distribute", "--[no]skip_bad_records", "--mixup",
                 "--[no]balanced_sampling", "--config"):
        assert flag.lstrip("-") in result.stdout, flag
    text = " ".join(result.stdout.split())  # absl wraps the lines
    assert "<default|demo|speech_commands>" in text
    assert "default: 5000, demo: 300, speech_commands: 19890" in text
    assert "a few hundred to a few hundred thousand clips" in text
