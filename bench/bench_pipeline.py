"""Throughput of the training input pipeline against the bare front-end math, per CPU core.

    python bench/bench_pipeline.py [--cores 1] [--num_clips 1024] [--seconds 5] [--rounds 6]
        [--breakdown]

Writes synthetic 10 s clips into real TFRecord shards in a temporary directory, then
measures in the same run, in 10 s clips per second per core:
  (a) the full training pipeline, `make_dataset(training=True)` with its defaults (read and
      validate records, shuffle, parse and decode, random crop, STFT, SpecAugment, mel, log,
      scaling, batch);
  (b) the bare STFT + magnitude + mel + log math on the same clips, already in memory as a
      tensor: the better of one [batch, samples] call and a per-clip `tf.map_fn`.
Targets: (a) >= 0.9 x (b), and (a) >= 300 clips/s per core. `--breakdown` adds (c): the
pipeline without its shuffle buffer, and a reader with no validation (raw records, one
parse, the same crop and front end), shuffled and not; and (d): each part alone, in CPU
microseconds per clip (reading the records, parsing them, validating them, the shuffle
buffer, and the per-clip work on clips already in memory), whose sum, set against (a),
shows how much the parts cost when they share one core. The bare math run as a tf.data map,
and the front end without SpecAugment, split the per-clip work; "parts alone" is the bare math
over reading + parsing + crop + front end, each timed alone: the ratio with nothing for
validation, the shuffle buffer or sharing the core. `bench/profile_pipeline.py` shows, function
by function, what sharing the core costs. Every tf.data method runs with the pipeline's
options (autotuning's model off) and reads the local shards unbuffered, as the pipeline does.

The process is pinned to `--cores` cores (default 1) before TensorFlow starts, so that its
thread pools and tf.data's AUTOTUNE see that many. Rates are clips per CPU-second of this
process (user + system time of all its threads): on a machine shared with other jobs, that
is the throughput of one fully used core, which wall-clock time is not; wall-clock rates
are printed as well. The methods run in alternation, each in a fresh iterator, for several
short rounds; the ratio is taken within each round and the median over rounds is reported,
with the median rates. The speed of a shared machine drifts by +-15% over minutes; within a
round it hits all methods alike.
"""

import argparse
import gc
import os
import shlex
import statistics
import sys
import tempfile
import time

CLIP_SECONDS = 10
CLIP_SAMPLES = 158960  # 992 frames, as the paper's AudioSet setup
NUM_CLASSES = 527
TARGET_RATIO = 0.9
TARGET_PER_CORE = 300.0


def write_shards(directory, num_clips, num_shards, seed=0):
    """Noise plus three tones per clip, 1-3 labels, as 16-bit PCM TFRecord shards."""
    import numpy as np
    import tensorflow as tf

    from keras_astpe.data import schema

    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SECONDS * schema.SAMPLE_RATE) / schema.SAMPLE_RATE
    writers = [tf.io.TFRecordWriter(os.path.join(directory, f"train-{i:03d}.tfrecord"))
               for i in range(num_shards)]
    for clip in range(num_clips):
        waveform = 0.05 * rng.standard_normal(t.size)
        for freq in rng.uniform(100, 7000, size=3):
            waveform += 0.2 * np.sin(2 * np.pi * freq * t)
        labels = rng.choice(NUM_CLASSES, size=rng.integers(1, 4), replace=False)
        writers[clip % num_shards].write(schema.encode_example(
            np.clip(waveform, -1, 1), f"clip{clip:05d}", labels,
            original_sample_rate=44100, duration=float(CLIP_SECONDS)))
    for writer in writers:
        writer.close()
    return os.path.join(directory, "train-*.tfrecord")


def measure(make_run, clips_per_call, seconds):
    """(clips per wall second, clips per CPU second) of `make_run()` over `seconds`.

    `make_run` starts the method afresh (a new iterator); it is warmed up with two calls and
    dropped afterwards, so that no background prefetching leaks into another measurement.
    """
    run = make_run()
    run()
    run()
    calls = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        run()
        calls += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del run
    gc.collect()
    time.sleep(1.0)
    return calls * clips_per_call / wall, calls * clips_per_call / cpu


def raw_records(files):
    """The shards' serialized records, interleaved: no validation, no parsing."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=0),  # local, as the pipeline
        num_parallel_calls=tf.data.AUTOTUNE)


def with_draws(dataset, spec_augment):
    """`(element, draws)`: the training pipeline's per-clip crop seeds and SpecAugment masks."""
    import tensorflow as tf

    from keras_astpe.data import pipeline
    from keras_astpe.frontend import FrontEndConfig

    config = FrontEndConfig()
    return tf.data.Dataset.zip(dataset, pipeline._augmentation_draws(
        0, config.num_frames(CLIP_SAMPLES), config.num_spectrogram_bins, spec_augment))


def clip_features(pcm16, draws):
    """The training pipeline's per-clip work: random crop and front end."""
    from keras_astpe.data import pipeline
    from keras_astpe.models import LogMelAudioConverter

    return pipeline._clip_features(pcm16, draws, clip_samples=CLIP_SAMPLES,
                                   converter=LogMelAudioConverter())


def part_methods(args, pattern, clips_per_call, math, clips):
    """(d): the pipeline's parts alone, each ending in a tiny per-clip output, batched.

    `math` is (b)'s per-clip function and `clips` its float clips: run as a tf.data map,
    they show what tf.data's per-element call adds to the math.
    """
    import tensorflow as tf

    from keras_astpe.data import pipeline, schema, shards

    AUTOTUNE = tf.data.AUTOTUNE
    files = shards.resolve_files(pattern)

    def parse(record):
        parsed = tf.io.parse_single_example(record, schema.FEATURES)
        return {"pcm16": schema.decode_pcm16(parsed["audio/pcm16"])}

    def validated(shuffle):
        records = shards.read_records(files, num_classes=NUM_CLASSES, shuffle_seed=0)
        return records.shuffle(args.num_clips // 4, seed=0) if shuffle else records

    # The records' int16 samples (all 10 s here), decoded once into one tensor.
    in_memory = shards.read_records(files).map(lambda element: element["pcm16"]).batch(
        args.num_clips).get_single_element()

    def from_memory(samples, function, spec_augment=None):
        return lambda: with_draws(tf.data.Dataset.from_tensor_slices(samples).repeat(),
                                  spec_augment).map(function, num_parallel_calls=AUTOTUNE)

    def run_of(make):
        def make_run():
            iterator = iter(make().repeat().batch(args.batch_size).prefetch(AUTOTUNE)
                            .with_options(pipeline._dataset_options(deterministic=False)))

            def run():
                for _ in range(clips_per_call // args.batch_size):
                    out = next(iterator)
                tf.nest.flatten(out)[0].numpy()
            return run
        return make_run, clips_per_call

    def first(element):
        return element["pcm16"][:1]

    return {
        "(d) read records": run_of(lambda: raw_records(files).map(tf.strings.length)),
        "(d) read + parse": run_of(lambda: raw_records(files).map(
            parse, num_parallel_calls=AUTOTUNE).map(first)),
        "(d) read + parse + validate": run_of(lambda: validated(False).map(first)),
        "(d) ... + shuffle buffer": run_of(lambda: validated(True).map(first)),
        "(d) bare math as a tf.data map, from memory": run_of(
            from_memory(clips, lambda waveform, draws: math(waveform))),
        "(d) crop + front end, no SpecAugment": run_of(from_memory(in_memory, clip_features)),
        "(d) crop + front end, from memory": run_of(
            from_memory(in_memory, clip_features, pipeline.DEFAULT_SPEC_AUGMENT)),
    }


def benchmark(args, cores):
    import numpy as np
    import tensorflow as tf

    from keras_astpe.data import pipeline, schema
    from keras_astpe.frontend import FrontEndConfig, log_mel, magnitude_spectrogram
    from keras_astpe.models import LogMelAudioConverter

    AUTOTUNE = tf.data.AUTOTUNE

    config = FrontEndConfig()
    batches_per_call = max(1, args.num_clips // args.batch_size)

    def math(waveform):
        return log_mel(magnitude_spectrogram(waveform, config), config)

    batched = tf.function(math)
    per_clip = tf.function(lambda x: tf.map_fn(
        math, x, parallel_iterations=2 * cores,
        fn_output_signature=tf.TensorSpec([None, config.num_mel_bins], tf.float32)))

    with tempfile.TemporaryDirectory() as directory:
        pattern = write_shards(directory, args.num_clips, args.num_shards)
        # shuffle_buffer: a quarter of the synthetic set (the default 1000 exceeds it).
        dataset = pipeline.make_dataset(
            pattern, num_classes=NUM_CLASSES, batch_size=args.batch_size, training=True,
            clip_samples=CLIP_SAMPLES, seed=0, shuffle_buffer=args.num_clips // 4,
            converter=LogMelAudioConverter())
        clips = tf.constant(np.stack([
            schema.decode_example(record)["waveform"][:CLIP_SAMPLES].numpy()
            for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)))]))
        chunks = [clips[i:i + args.batch_size]
                  for i in range(0, clips.shape[0] - args.batch_size + 1, args.batch_size)]

        def unvalidated(shuffle_buffer):
            """Raw shard records, one parse, the pipeline's per-clip work: no validation."""
            def process(record, draws):
                parsed = tf.io.parse_single_example(record, schema.FEATURES)
                features = clip_features(schema.decode_pcm16(parsed["audio/pcm16"]), draws)
                return features, pipeline._multi_hot(
                    tf.sparse.to_dense(parsed["labels"]), NUM_CLASSES)

            records = raw_records(pipeline.resolve_files(pattern))
            if shuffle_buffer > 1:
                records = records.shuffle(shuffle_buffer, seed=0)
            return (with_draws(records.repeat(), pipeline.DEFAULT_SPEC_AUGMENT)
                    .map(process, num_parallel_calls=AUTOTUNE)
                    .batch(args.batch_size, drop_remainder=True).prefetch(AUTOTUNE)
                    .with_options(pipeline._dataset_options(deterministic=False)))

        def make_pipeline_run(dataset=dataset):
            iterator = iter(dataset)

            def run():
                for _ in range(batches_per_call):
                    features, _ = next(iterator)
                features.numpy()
            return run

        def math_run(function):
            def run():
                for chunk in chunks:
                    out = function(chunk)
                out.numpy()
            return lambda: run

        methods = {
            "(a) full pipeline": (make_pipeline_run, batches_per_call * args.batch_size),
            "(b) math, one [batch, samples] call": (math_run(batched),
                                                    len(chunks) * args.batch_size),
            "(b) math, per-clip tf.map_fn": (math_run(per_clip),
                                             len(chunks) * args.batch_size),
        }
        if args.breakdown:
            clips_per_call = batches_per_call * args.batch_size
            no_shuffle = pipeline.make_dataset(
                pattern, num_classes=NUM_CLASSES, batch_size=args.batch_size, training=True,
                clip_samples=CLIP_SAMPLES, seed=0, shuffle_buffer=1,
                converter=LogMelAudioConverter())
            methods.update({
                "(c) pipeline without shuffle": (
                    lambda: make_pipeline_run(no_shuffle), clips_per_call),
                "(c) unvalidated reader, shuffled": (
                    lambda: make_pipeline_run(unvalidated(args.num_clips // 4)),
                    clips_per_call),
                "(c) unvalidated reader, no shuffle": (
                    lambda: make_pipeline_run(unvalidated(1)), clips_per_call),
                **part_methods(args, pattern, clips_per_call, math, clips),
            })
        rounds = []  # per round: {name: (wall rate, cpu rate)}
        for _ in range(args.rounds):
            rounds.append({name: measure(make_run, clips_per_call, args.seconds)
                           for name, (make_run, clips_per_call) in methods.items()})
    return rounds, tf.__version__


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=1, help="cores to pin the process to")
    parser.add_argument("--num_clips", type=int, default=1024)
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measuring time per method and round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time (c): the pipeline without shuffling, and a reader "
                             "without validation, shuffled or not; and (d): each part alone, "
                             "in CPU microseconds per clip (where the time goes)")
    args = parser.parse_args()

    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.cores <= len(available):
        parser.error(f"--cores must be in 1..{len(available)}")
    os.sched_setaffinity(0, available[:args.cores])  # before TensorFlow sizes its pools
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    rounds, tf_version = benchmark(args, args.cores)

    def ratio(result, which, name="(a) full pipeline"):  # over the best (b) of one round
        best_math = max(rates[which] for key, rates in result.items() if key.startswith("(b)"))
        return result[name][which] / best_math

    results = {name: tuple(statistics.median(result[name][which] for result in rounds)
                           for which in (0, 1)) for name in rounds[0]}
    cpu_ratios = [ratio(result, 1) for result in rounds]
    ratio_cpu, ratio_wall = statistics.median(cpu_ratios), statistics.median(
        ratio(result, 0) for result in rounds)
    pipeline_cpu = results["(a) full pipeline"][1]
    print(f"\npinned to {args.cores} of {len(available)} cores; load average "
          f"{os.getloadavg()[0]:.2f} (all processes); TF {tf_version}; {args.num_clips} clips "
          f"of {CLIP_SECONDS} s in {args.num_shards} shards, batch {args.batch_size}")
    print(f"{'10 s clips per second (median of rounds)':<40} {'per CPU-s':>10} "
          f"{'wall/core':>10}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<40} {cpu:>10.0f} {wall / args.cores:>10.0f}")
    print(f"{'ratio (a) / best (b), median':<40} {ratio_cpu:>10.2f} {ratio_wall:>10.2f}")
    print(f"per-round ratios (CPU): {', '.join(f'{value:.2f}' for value in cpu_ratios)}")
    for name in results:
        if name.startswith("(c)"):
            value = statistics.median(ratio(result, 1, name) for result in rounds)
            print(f"{name + ' / best (b)':<52} {value:>5.2f}")
    parts = {name: 1e6 / cpu for name, (_, cpu) in results.items() if name.startswith("(d)")}
    if parts:
        best_math = max(cpu for name, (_, cpu) in results.items() if name.startswith("(b)"))
        print(f"\n{'CPU microseconds per clip (medians)':<52} {'us':>5}")
        print(f"{'(b) best bare math':<52} {1e6 / best_math:>5.0f}")
        for name, micros in parts.items():
            print(f"{name:<52} {micros:>5.0f}")
        front_end = parts["(d) crop + front end, from memory"]
        alone = parts["(d) ... + shuffle buffer"] + front_end
        print(f"{'shuffled reader + front end, each alone (sum)':<52} {alone:>5.0f}")
        print(f"{'(a) full pipeline, the same work on one core':<52} {1e6 / pipeline_cpu:>5.0f}")
        # TF's reader and parser, then the per-clip work, each alone: the ratio with nothing
        # for validation, the shuffle buffer or sharing the core.
        floor = parts["(d) read + parse"] + front_end
        print(f"parts alone: bare math / (read + parse + crop + front end) = "
              f"{1e6 / best_math:.0f} / {floor:.0f} = {1e6 / best_math / floor:.2f}")
    ok_ratio, ok_rate = ratio_cpu >= TARGET_RATIO, pipeline_cpu >= TARGET_PER_CORE
    print(f"targets (per CPU-second): (a) >= {TARGET_RATIO} x (b): "
          f"{'met' if ok_ratio else 'NOT met'}; (a) >= {TARGET_PER_CORE:.0f} clips/s per core: "
          f"{'met' if ok_rate else 'NOT met'}")
    print("command: " + shlex.join([os.path.basename(sys.executable), *sys.argv]))
    return 0 if ok_ratio and ok_rate else 1


if __name__ == "__main__":
    sys.exit(main())
