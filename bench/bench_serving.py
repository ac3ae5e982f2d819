"""Serving speed: the exported SavedModel next to the in-process Keras model, on CPU.

    python bench/bench_serving.py                        # ast-pe-small, every PE kind
    python bench/bench_serving.py --kinds none,learned_relative --rounds 6
    python bench/bench_serving.py --preset ast-pe --lengths 1,10 --batches 1

For each PE kind, a model with the paper's front end (527 classes) is saved and exported
with `keras_astpe.serving.export_saved_model` (`whole_clips=True`, so that a 60 s clip is
one clip in both, as the Keras model scores it; `bench_long_audio.py` measures the default
windows), and the export is loaded with `tf.saved_model.load`. Each cell (clip length x
batch) times the export's `serving_default` signature (waveform in, scores and embedding
out: input checks, front end and model in one graph) and the in-process Keras model with
the same front end on the same audio (the model's audio converter and `model(...)` in one
`tf.function`, traced once for any length as the export is; tracing per shape measured no
faster), alternately, in round-robin rounds over every kind and cell. Target: SavedModel
within 1.1x of Keras.

In the same rounds, for the clips of `--portable_lengths` (default 1 s and 10 s): the
model's ONNX export in ONNX Runtime and its LiteRT export in LiteRT's interpreter (waveform
in, scores and embedding out, front end inside; `keras_astpe.serving.export_onnx` and
`export_litert`), each given `--cores` threads; and for reference transformers'
`ASTForAudioClassification` of the preset's size in PyTorch (square patches of the same
area and number, inference mode) with its `ASTFeatureExtractor` on the same clips, as an
AST user scores them: AST pads or cuts every clip to its fixed input (the preset's
frames), so a 1 s clip costs it a 10 s one.

The resampler's share: per kind, `serving_wav` on one 10 s WAV at 44.1 kHz (decode,
resampling to 16 kHz, front end, model) against `serving_wav` on the same 10 s at 16 kHz
(no resampling), in the same rounds: the difference is the resampler's cost inside the
graph, its share the difference over the 44.1 kHz time (which also counts decoding 2.75x
more samples, so it overstates the resampler a little). Target: under 10%. The resampler
alone, in a `tf.function` of its own (so with the cost of one call), is listed beside it.
The share is also measured on a model of `--share_preset` (default: the paper's `ast-pe`;
only its `serving_wav` is timed): the small CPU presets take so little time that any front
end is a large part of it.

As `bench_pipeline.py` does, the process is pinned to `--cores` cores (default 1) before
TensorFlow sizes its thread pools, and times are CPU time of the process (user + system of
all its threads): on a machine shared with other jobs that is the cost on a core of one's
own, which wall-clock time is not (the median wall time is printed too). Ratios are taken
within each round; the median and the range over rounds are reported. The 60 s clips at
batch 16 take most of the time: they run in the first `--long_rounds` rounds only.
TensorFlow backend (the export is a TensorFlow graph).
"""

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

RATE = 16000
WAV_RATE = 44100
MIN_MEASURE_S = 0.2  # a measurement repeats a call until it has used this much CPU
LONG_CELL = (60.0, 16)
PORTABLE = ("onnx", "litert")


def build(pe, preset):
    import keras_astpe
    from keras_astpe.models.audio_converter import LogMelAudioConverter
    from keras_astpe.models.classifier import ASTClassifier

    bare = keras_astpe.build_model(pe, preset=preset, num_classes=527)
    return ASTClassifier(bare.backbone, 527, audio_converter=LogMelAudioConverter(),
                         class_names=[f"class {i}" for i in range(527)])


def portable_functions(model, folder, name, cores):
    """The model's ONNX export in ONNX Runtime and its LiteRT export in LiteRT's
    interpreter, each with `cores` threads, as functions of a numpy waveform batch."""
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from keras_astpe.serving import export_litert, export_onnx

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = cores, 1
    session = onnxruntime.InferenceSession(
        export_onnx(model, os.path.join(folder, f"{name}.onnx")), options,
        providers=["CPUExecutionProvider"])
    runner = Interpreter(model_path=export_litert(model, os.path.join(folder, f"{name}.tflite")),
                         num_threads=cores).get_signature_runner()
    return {"onnx": lambda w: session.run(None, {"waveform": w}),
            "litert": lambda w: runner(waveform=w)}


def ast_function(preset, cores):
    """transformers' AST of the preset's size, with its feature extractor, in PyTorch."""
    import torch
    import transformers
    from bench_train import _preset, ast_config

    torch.set_num_threads(cores)
    torch.manual_seed(0)
    config = _preset(preset)
    model = transformers.ASTForAudioClassification(ast_config(preset, 527)).eval()
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=config["num_mel_bins"],
                                                 max_length=config["num_frames"])

    def run(waveforms):
        with torch.inference_mode():
            inputs = extractor(list(waveforms), sampling_rate=RATE, return_tensors="pt")
            return torch.sigmoid(model(**inputs).logits).numpy()

    return run


def keras_function(model):
    """The Keras model and its audio converter, as Keras runs them in a TensorFlow graph."""
    import tensorflow as tf

    converter = model.audio_converter

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def run(waveform):
        return model(converter.features(waveform), training=False)

    return run


def timed(function, argument, reps):
    """`(wall, cpu)` seconds per call, over `reps` calls (each result fetched)."""
    import tensorflow as tf

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        for value in tf.nest.flatten(function(argument)):
            np.asarray(value)
    return (time.perf_counter() - wall) / reps, (time.process_time() - cpu) / reps


def reps_for(function, argument):
    """Calls per measurement: enough to use MIN_MEASURE_S of CPU."""
    _, cpu = timed(function, argument, 1)
    return max(1, int(np.ceil(MIN_MEASURE_S / max(cpu, 1e-6))))


def wav_bytes(seconds, rate, seed):
    import soundfile as sf

    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate))
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def median_range(values, scale=1.0, digits=2):
    return (f"{scale * statistics.median(values):.{digits}f} [{scale * min(values):.{digits}f}"
            f"-{scale * max(values):.{digits}f}]")


def benchmark(args):
    import soundfile as sf
    import tensorflow as tf

    from keras_astpe.serving import export_saved_model, resample

    kinds = args.kinds.split(",")
    lengths = [float(v) for v in args.lengths.split(",")]
    batches = [int(v) for v in args.batches.split(",")]
    cells = [(length, batch) for length in lengths for batch in batches]
    started = time.perf_counter()
    print(f"{platform.processor() or platform.machine()}, pinned to {args.cores} of "
          f"{os.cpu_count()} cores, TensorFlow {tf.__version__}, preset {args.preset}, load "
          f"average {os.getloadavg()[0]:.1f} at start", flush=True)

    portable_cells = [cell for cell in cells if cell[0] in
                      {float(v) for v in args.portable_lengths.split(",") if v}]
    rng = np.random.default_rng(0)
    waveforms = {cell: rng.uniform(-0.5, 0.5, (cell[1], int(cell[0] * RATE))).astype(
        np.float32) for cell in cells}
    audio = {cell: tf.constant(waveforms[cell]) for cell in cells}
    wavs = {"wav": tf.constant([wav_bytes(10.0, WAV_RATE, 1)]),
            "wav_16k": tf.constant([wav_bytes(10.0, RATE, 1)])}
    samples_44k = tf.constant(sf.read(io.BytesIO(wavs["wav"].numpy()[0]), dtype="float32")[0])
    resampler = tf.function(lambda x: resample.resample(x, WAV_RATE),
                            input_signature=[tf.TensorSpec([None], tf.float32)])

    functions = {}
    share_models = [(args.preset, pe) for pe in kinds]
    if args.share_preset and args.share_preset != args.preset:
        share_models.append((args.share_preset, kinds[0]))
    with tempfile.TemporaryDirectory() as tmp:
        for preset, pe in share_models:
            model = build(pe, preset)
            path = os.path.join(tmp, f"{preset}-{pe}.keras")
            model.save(path)
            loaded = tf.saved_model.load(
                export_saved_model(path, os.path.join(tmp, preset, pe, "1"), whole_clips=True))
            serving, serving_wav = (loaded.signatures[name]
                                    for name in ("serving_default", "serving_wav"))
            functions[preset, pe] = {"saved": lambda w, f=serving: f(waveform=w),
                                     "keras": keras_function(model),
                                     "wav": lambda b, f=serving_wav: f(wav_bytes=b),
                                     "loaded": loaded}  # keeps the signatures' resources alive
            if portable_cells and preset == args.preset:
                functions[preset, pe].update(portable_functions(model, tmp, pe, args.cores))
        reference = ast_function(args.preset, args.cores) if portable_cells else None
        print(f"built and exported {len(share_models)} models in "
              f"{time.perf_counter() - started:.0f} s; timing...", flush=True)

        smallest = min(cells, key=lambda cell: cell[0] * cell[1])
        reps = {"resampler": reps_for(resampler, samples_44k)}
        for pe in kinds:
            for name in ("saved", "keras"):
                function = functions[args.preset, pe][name]
                timed(function, audio[smallest], 1)  # warm-up: one trace for all lengths
                for cell in cells:  # cells of 10 clip-seconds or more: one call a measurement
                    reps[pe, cell, name] = (reps_for(function, audio[cell])
                                            if cell[0] * cell[1] < 10 else 1)
            for name in PORTABLE:
                function = functions[args.preset, pe][name] if portable_cells else None
                for cell in portable_cells:
                    timed(function, waveforms[cell], 1)  # warm-up: LiteRT sizes its tensors
                    reps[pe, cell, name] = reps_for(function, waveforms[cell])
        for cell in portable_cells:
            timed(reference, waveforms[cell], 1)
            reps["ast", cell] = reps_for(reference, waveforms[cell])
        for key in share_models:
            for name, contents in wavs.items():
                reps[key, name] = reps_for(functions[key]["wav"], contents)

        times = {}  # key -> [(wall, cpu) per round]
        for round_index in range(args.rounds):
            for pe in kinds:
                for cell in cells:
                    if cell == LONG_CELL and round_index >= args.long_rounds:
                        continue
                    order = ("saved", "keras") if round_index % 2 == 0 else ("keras", "saved")
                    for name in order:
                        times.setdefault((pe, cell, name), []).append(timed(
                            functions[args.preset, pe][name], audio[cell],
                            reps[pe, cell, name]))
                    for name in PORTABLE if cell in portable_cells else ():
                        times.setdefault((pe, cell, name), []).append(timed(
                            functions[args.preset, pe][name], waveforms[cell],
                            reps[pe, cell, name]))
            for cell in portable_cells:
                times.setdefault(("ast", cell), []).append(
                    timed(reference, waveforms[cell], reps["ast", cell]))
            for key in share_models:
                for name, contents in wavs.items():
                    times.setdefault((key, name), []).append(
                        timed(functions[key]["wav"], contents, reps[key, name]))
            times.setdefault("resampler", []).append(
                timed(resampler, samples_44k, reps["resampler"]))
            print(f"round {round_index + 1}/{args.rounds} done "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return kinds, cells, portable_cells, share_models, times, started


def report(args, kinds, cells, portable_cells, share_models, times, started):
    def cpu(key):
        return [c for _, c in times[key]]

    print("\nSavedModel `serving_default` vs in-process Keras: CPU ms per batch (median over "
          "rounds), ratio SavedModel / Keras: median [min-max] over rounds")
    print("| PE kind | clip | batch | SavedModel CPU ms | Keras CPU ms | ratio | SavedModel "
          "wall ms | clips per CPU-s |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for pe in kinds:
        for cell in cells:
            saved, keras_cpu = cpu((pe, cell, "saved")), cpu((pe, cell, "keras"))
            ratios = [s / k for s, k in zip(saved, keras_cpu, strict=True)]
            worst = max(worst, statistics.median(ratios))
            wall = statistics.median(w for w, _ in times[pe, cell, "saved"])
            print(f"| {pe} | {cell[0]:g} s | {cell[1]} | {1e3 * statistics.median(saved):.1f} "
                  f"| {1e3 * statistics.median(keras_cpu):.1f} | {median_range(ratios)} | "
                  f"{1e3 * wall:.1f} | {cell[1] / statistics.median(saved):.1f} |")
    print(f"\nWorst median ratio: {worst:.2f} (target <= 1.1)")

    if portable_cells:
        print("\nClips per CPU-second (median over rounds): the SavedModel, the ONNX export "
              "in ONNX Runtime, the LiteRT export in LiteRT; transformers' AST (PyTorch, its "
              "feature extractor, fixed input) on the same clips for reference")
        print("| PE kind | clip | batch | SavedModel | ONNX Runtime | LiteRT | transformers' "
              "AST |")
        print("|---|---|---|---|---|---|---|")
        for pe in kinds:
            for cell in portable_cells:
                rates = [cell[1] / statistics.median(cpu(key)) for key in
                         ((pe, cell, "saved"), (pe, cell, "onnx"), (pe, cell, "litert"),
                          ("ast", cell))]
                print(f"| {pe} | {cell[0]:g} s | {cell[1]} | "
                      + " | ".join(f"{rate:.1f}" for rate in rates) + " |")

    print(f"\n`serving_wav`, one 10 s WAV (batch 1): at {WAV_RATE} Hz and at {RATE} Hz; the "
          f"difference is the resampler's cost in the graph (CPU ms, median over rounds). "
          f"The resampler alone: {1e3 * statistics.median(cpu('resampler')):.2f} ms")
    print(f"| preset | PE kind | {WAV_RATE} Hz | {RATE} Hz | resampler in the graph | share "
          f"(median [min-max]) |")
    print("|---|---|---|---|---|---|")
    shares_by_model = {}
    for key in share_models:
        costs = [a - b for a, b in zip(cpu((key, "wav")), cpu((key, "wav_16k")), strict=True)]
        shares = shares_by_model[key] = [c / a for c, a in zip(costs, cpu((key, "wav")),
                                                               strict=True)]
        print(f"| {key[0]} | {key[1]} | {1e3 * statistics.median(cpu((key, 'wav'))):.1f} | "
              f"{1e3 * statistics.median(cpu((key, 'wav_16k'))):.1f} | "
              f"{1e3 * statistics.median(costs):.2f} | {median_range(shares, 100, 1)}% |")
    worst_share = max(statistics.median(shares_by_model[key]) for key in share_models
                      if key[0] == share_models[-1][0])
    print(f"\nWorst median share with {share_models[-1][0]}: {100 * worst_share:.1f}% "
          f"(target < 10%)")
    print(f"Total {time.perf_counter() - started:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f} at the end")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ast-pe-small")
    parser.add_argument("--kinds", default="none,absolute,alibi_2d,time_alibi,"
                        "learned_relative,conditional,conditional_absolute")
    parser.add_argument("--lengths", default="1,10,60", help="clip lengths in seconds")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--portable_lengths", default="1,10",
                        help="clip lengths (of --lengths) at which the ONNX and LiteRT exports "
                        "and transformers' AST are timed too ('' for none)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--long_rounds", type=int, default=3,
                        help="rounds that include the 60 s x batch 16 cell")
    parser.add_argument("--share_preset", default="ast-pe",
                        help="preset of one more model whose resampler share is measured "
                        "('' for none)")
    parser.add_argument("--cores", type=int, default=1, help="cores to pin the process to")
    args = parser.parse_args()
    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.cores <= len(available):
        parser.error(f"--cores must be in 1..{len(available)}")
    os.sched_setaffinity(0, available[:args.cores])  # before TensorFlow sizes its pools
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f"$ python bench/bench_serving.py {' '.join(sys.argv[1:])}".rstrip())
    report(args, *benchmark(args))


if __name__ == "__main__":
    main()
