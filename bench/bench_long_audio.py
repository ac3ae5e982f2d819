"""Peak memory and time of scoring one long recording, against its length.

    python bench/bench_long_audio.py                                  # ast-pe-tiny, 10 s - 1 h
    python bench/bench_long_audio.py --preset ast-pe --lengths 10,60,600 --whole_lengths 10,60
    python bench/bench_long_audio.py --modes serving_wav --lengths 10,3600

A model of `--preset` (random weights, the paper's front end, 527 classes) is saved and
exported with the default settings (`keras_astpe.serving.export_saved_model`: clips past
the trained length as windows of that length, `window_batch` windows at a time), and once
more with `whole_clips` for the whole-clip rows. For each length, a 16 kHz mono 16-bit WAV
of noise is written (a one-hour file is 115 MB; `--rate` and `--channels` for others) and
scored once, each mode in a fresh child process:

- `serving_wav`: a process that imports TensorFlow alone loads the export
  (`tf.saved_model.load`), sends a 1 s WAV (warm-up), then the file's bytes as one request.
- `tag`: `keras.saving.load_model` of the `.keras` file and `keras_astpe.tag` on a 1 s file
  (warm-up), then on the file (`--backend`, default tensorflow).
- `predict`: `python recipes/predict.py --model=... --audio=<file>`, the whole process.
- `whole`: `serving_wav` of the `whole_clips` export, at `--whole_lengths` only.

Peak memory is the child's peak resident set (`os.wait4`'s `ru_maxrss`); "after warm-up"
is its peak before the measured request (load and warm-up included), so the difference is
what the request added. Time is the measured request's wall and CPU time (for `predict`,
the whole process's). Targets: memory flat past the window (up to the decoded waveform,
4 bytes a sample at 16 kHz: 0.23 GB an hour, and the request's bytes), time linear.
"""

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

RATE = 16000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVING_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import tensorflow as tf
    export_dir, warm_up, path = sys.argv[1:4]
    serve = tf.saved_model.load(export_dir).signatures["serving_wav"]
    serve(wav_bytes=tf.constant([open(warm_up, "rb").read()]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    scores = serve(wav_bytes=tf.constant([open(path, "rb").read()]))["scores"].numpy()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert "keras_astpe" not in sys.modules
    print(json.dumps({"before_kb": before, "wall": wall, "cpu": cpu,
                      "top": float(scores.max())}))
""")

TAG_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import keras_astpe, keras
    model_path, warm_up, path = sys.argv[1:4]
    model = keras.saving.load_model(model_path, compile=False)
    keras_astpe.tag(model, warm_up)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    result = keras_astpe.tag(model, path, top_k=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"before_kb": before, "wall": wall, "cpu": cpu, "top": result[0][1]}))
""")


def write_wav(path, seconds, seed, rate=RATE, channels=1):
    """16-bit noise, written a minute at a time."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16", format="WAV") as f:
        left = int(seconds * rate)
        while left:
            block = min(left, 60 * rate)
            f.write((0.3 * rng.standard_normal((block, channels))).clip(-1, 1).astype(
                np.float32))
            left -= block


class Children:
    """Runs the children and keeps their rusage: `subprocess` reaps a child itself, so each
    child is started with Popen and reaped here with `os.wait4`."""

    def __init__(self, env):
        self.env = env

    def run(self, command):
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=self.env, cwd=ROOT)
        stdout, stderr = _drain(child)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])}... failed ({child.returncode}): "
                               f"{stderr.decode(errors='replace').strip()[-2000:]}")
        lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
        return (json.loads(lines[-1]) if lines else None), usage.ru_maxrss / 2**20, wall


def _drain(child):
    """stdout and stderr of `child`, read to their end without reaping it."""
    chunks = {child.stdout: [], child.stderr: []}
    selector = selectors.DefaultSelector()
    for stream in chunks:
        selector.register(stream, selectors.EVENT_READ)
    while selector.get_map():
        for key, _ in selector.select():
            data = os.read(key.fileobj.fileno(), 1 << 16)
            if data:
                chunks[key.fileobj].append(data)
            else:
                selector.unregister(key.fileobj)
    return b"".join(chunks[child.stdout]), b"".join(chunks[child.stderr])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ast-pe-tiny")
    parser.add_argument("--lengths", default="10,60,600,3600", help="seconds")
    parser.add_argument("--whole_lengths", default="10,60,120,240",
                        help="seconds, for the whole-clip export ('' for none)")
    parser.add_argument("--modes", default="serving_wav,tag,predict")
    parser.add_argument("--backend", default="tensorflow", help="Keras backend of tag")
    parser.add_argument("--rate", type=int, default=RATE, help="sample rate of the WAV files")
    parser.add_argument("--channels", type=int, default=1, help="channels of the WAV files")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    print(f"$ python bench/bench_long_audio.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)

    import keras_astpe
    from keras_astpe.inference import Windows
    from keras_astpe.models.audio_converter import LogMelAudioConverter
    from keras_astpe.serving import export_saved_model

    lengths = [float(v) for v in args.lengths.split(",")]
    whole_lengths = [float(v) for v in args.whole_lengths.split(",") if v]
    modes = args.modes.split(",")
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=ROOT)
    children = Children(env)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = keras_astpe.build_model(
            "time_alibi", preset=args.preset, num_classes=527,
            audio_converter=LogMelAudioConverter(),
            class_names=[f"class {i}" for i in range(527)])
        windows = Windows.for_model(model)
        model_path = os.path.join(tmp, "model.keras")
        model.save(model_path)
        export = export_saved_model(model, os.path.join(tmp, "windows", "1"))
        whole = (export_saved_model(model, os.path.join(tmp, "whole", "1"), whole_clips=True)
                 if whole_lengths else None)
        del model
        warm_up = os.path.join(tmp, "warm_up.wav")
        write_wav(warm_up, 1.0, seed=0)
        print(f"{args.preset}: windows of {windows.window} samples "
              f"({windows.window / RATE:.3f} s), {windows.batch} at a time; saved and "
              f"exported in {time.perf_counter() - started:.0f} s; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)

        for seconds in sorted(set(lengths) | set(whole_lengths)):
            path = os.path.join(tmp, f"{seconds:g}s.wav")
            write_wav(path, seconds, seed=1, rate=args.rate, channels=args.channels)
            cells = [(mode, seconds) for mode in modes if seconds in lengths]
            if seconds in whole_lengths:
                cells.append(("whole", seconds))
            for mode, _ in cells:
                if mode in ("serving_wav", "whole"):
                    command = [sys.executable, "-c", SERVING_CHILD,
                               export if mode == "serving_wav" else whole, warm_up, path]
                elif mode == "tag":
                    command = [sys.executable, "-c", TAG_CHILD, model_path, warm_up, path]
                else:
                    command = [sys.executable, os.path.join(ROOT, "recipes", "predict.py"),
                               f"--model={model_path}", f"--audio={path}", "--top_k=1",
                               "--noprogress"]
                if mode == "tag":
                    children.env = dict(env, KERAS_BACKEND=args.backend)
                else:
                    children.env = env
                result, peak, wall = children.run(command)
                rows.append({"mode": mode, "seconds": seconds, "peak_gb": peak,
                             "before_gb": None if result is None else
                             result["before_kb"] / 2**20,
                             "wall": wall if result is None else result["wall"],
                             "cpu": None if result is None else result["cpu"]})
                row = rows[-1]
                print(f"  {mode} {seconds:g} s: peak {peak:.2f} GB, "
                      f"{row['wall']:.1f} s wall", flush=True)
            os.remove(path)

    print(f"\n{args.preset}, one 16-bit WAV per request ({args.rate} Hz, {args.channels} "
          f"channel(s)); tag on the {args.backend} backend; peak resident memory of the "
          f"child process")
    print("| mode | length | peak RSS (GB) | after warm-up (GB) | added by the request (GB) "
          "| wall (s) | CPU (s) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        before, cpu = row["before_gb"], row["cpu"]
        before_text = "" if before is None else f"{before:.2f}"
        added = "" if before is None else f"{row['peak_gb'] - before:.2f}"
        cpu_text = "" if cpu is None else f"{cpu:.1f}"
        print(f"| {row['mode']} | {_length(row['seconds'])} | {row['peak_gb']:.2f} | "
              f"{before_text} | {added} | {row['wall']:.1f} | {cpu_text} |")
    print(f"\nTotal {time.perf_counter() - started:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f} at the end")


def _length(seconds):
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


if __name__ == "__main__":
    main()
