"""Where the training pipeline spends CPU beyond its own front end, function by function.

    python bench/profile_pipeline.py [--seconds 20] [--num_clips 512] [--top 30]

`bench_pipeline.py --breakdown` shows that the pipeline's parts, each timed alone, cost
less than the whole pipeline: sharing one core costs extra. This script says what that
extra is. It samples two processes, each pinned to one core, with Linux `perf` (the
`cpu-clock` event, so it works in VMs without hardware counters):
  (1) crop + front end (with SpecAugment) on int16 clips already in memory, as a tf.data
      map: the pipeline's per-clip work with no reader;
  (2) the full training pipeline, `make_dataset(training=True)`, on TFRecord shards of the
      same kind of clips (written as `bench_pipeline.py` does).
Each function's share of the samples, times the process's measured CPU time per clip,
gives CPU microseconds per 10 s clip; the table lists the functions by how much more they
cost in (2) than in (1). oneDNN's JIT-compiled kernels have no symbols and are summed as
one row. Needs `perf` on the PATH and permission to sample the child processes
(`kernel.perf_event_paranoid` <= 1, or root).
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
MODES = {"front_end": "crop + front end, clips in memory",
         "pipeline": "full pipeline from TFRecords"}


def child(mode, pattern, seconds, ready_path, result_path):
    """Runs one mode: warms up, signals `ready_path`, then works for `seconds`."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf

    from keras_astpe.data import pipeline
    from keras_astpe.models import LogMelAudioConverter

    sys.path.insert(0, BENCH)
    import bench_pipeline
    from bench_pipeline import CLIP_SAMPLES, NUM_CLASSES

    batch_size = 64
    if mode == "pipeline":
        dataset = pipeline.make_dataset(pattern, num_classes=NUM_CLASSES, batch_size=batch_size,
                                        training=True, clip_samples=CLIP_SAMPLES, seed=0,
                                        shuffle_buffer=128, converter=LogMelAudioConverter())
    else:
        rng = np.random.default_rng(0)
        pcm16 = tf.constant((3000 * rng.standard_normal((256, CLIP_SAMPLES + 1040)))
                            .astype(np.int16))
        dataset = (bench_pipeline.with_draws(tf.data.Dataset.from_tensor_slices(pcm16).repeat(),
                                             pipeline.DEFAULT_SPEC_AUGMENT)
                   .map(bench_pipeline.clip_features, num_parallel_calls=tf.data.AUTOTUNE)
                   .batch(batch_size).prefetch(tf.data.AUTOTUNE)
                   .with_options(pipeline._dataset_options(deterministic=False)))
    iterator = iter(dataset)
    for _ in range(4):
        next(iterator)
    with open(ready_path, "w") as f:
        f.write(str(os.getpid()))
    clips, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        next(iterator)[0].numpy()
        clips += batch_size
    with open(result_path, "w") as f:
        f.write(f"{clips} {time.process_time() - cpu}")


def profile(mode, pattern, seconds, directory):
    """{(library, function): CPU microseconds per clip} of one mode, sampled by perf."""
    ready, result = (os.path.join(directory, f"{mode}.{name}") for name in ("ready", "result"))
    data = os.path.join(directory, f"{mode}.perf")
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", mode,
                                "--pattern", pattern, "--seconds", str(seconds + 2),
                                "--ready", ready, "--result", result],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not os.path.exists(ready):
        if process.poll() is not None:
            raise RuntimeError(f"the {mode} process failed:\n{process.stderr.read()[-3000:]}")
        time.sleep(0.5)
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-o", data, "-p",
                    str(process.pid), "--", "sleep", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if process.wait() != 0:
        raise RuntimeError(f"the {mode} process failed:\n{process.stderr.read()[-3000:]}")
    with open(result) as f:
        clips, cpu_seconds = f.read().split()
    report = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
         "-F", "sample,dso,sym"], check=True, capture_output=True, text=True).stdout
    samples = collections.Counter()
    for line in report.splitlines():
        fields = line.split(maxsplit=3)
        if len(fields) < 4 or line.startswith("#") or not fields[0].isdigit():
            continue
        count, library, _, function = fields
        if library.startswith("[JIT]"):
            library, function = "[JIT]", "oneDNN JIT-compiled kernels"
        samples[library, function[:80]] += int(count)
    per_clip = 1e6 * float(cpu_seconds) / int(clips)
    total = sum(samples.values())
    return {key: per_clip * count / total for key, count in samples.items()}, per_clip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="sampling time per mode")
    parser.add_argument("--num_clips", type=int, default=512)
    parser.add_argument("--top", type=int, default=30, help="rows of the table")
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--pattern", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.pattern, args.seconds, args.ready, args.result)
    if shutil.which("perf") is None:
        parser.error("needs Linux `perf` on the PATH (package linux-tools / linux-perf)")

    sys.path.insert(0, ROOT)
    sys.path.insert(0, BENCH)
    from bench_pipeline import write_shards

    with tempfile.TemporaryDirectory() as directory:
        pattern = write_shards(directory, args.num_clips, num_shards=8)
        costs = {}
        for mode, description in MODES.items():
            print(f"sampling {description} for {args.seconds:.0f} s ...", flush=True)
            costs[mode] = profile(mode, pattern, args.seconds, directory)
    (front_end, front_end_clip), (full, full_clip) = costs["front_end"], costs["pipeline"]
    print(f"\nCPU microseconds per 10 s clip, one pinned core: full pipeline {full_clip:.0f}, "
          f"crop + front end from memory {front_end_clip:.0f}, "
          f"difference {full_clip - front_end_clip:.0f}")
    print(f"{'pipeline':>8} {'front end':>9} {'extra':>7}  library: function")
    rows = sorted(set(full) | set(front_end),
                  key=lambda key: front_end.get(key, 0.0) - full.get(key, 0.0))
    for library, function in rows[:args.top]:
        a, b = full.get((library, function), 0.0), front_end.get((library, function), 0.0)
        print(f"{a:8.0f} {b:9.0f} {a - b:7.0f}  {os.path.basename(library)}: {function}")
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
