"""Fuzzing the export's WAV decoder: mutated WAV files sent to `serving_wav`, one per request.

    python bench/fuzz_wav.py                      # 400 cases, seed 0
    python bench/fuzz_wav.py --cases 1000 --seed 3 --slow_s 2

An `ast-pe-tiny` tagger with the paper's front end is exported with the default settings
(`keras_astpe.serving.export_saved_model`: windows past the trained length, the default
limits). The cases are written to a folder, then a child process that imports TensorFlow
alone (never keras_astpe) loads the export with `tf.saved_model.load` and sends each file
as a one-file request to `serving_wav`, timing it. The cases (seeded): valid files of every
supported rate, channel count and encoding, then mutations of them: header fields (format
tag, channels, rate, bits, block size, fmt chunk size, RIFF size), data and other chunk
sizes (0, odd, one byte off, 2^31, 2^32 - 1), truncations at random points, random bytes
written over a file or in place of it, odd encodings soundfile writes (8, 24 and 32-bit
PCM, 64-bit float, A-law, u-law, ADPCM, GSM, RF64 and W64 containers), chunk floods (up to
500,000 empty chunks before `data`), extreme rates and channel counts, NaN/Inf samples, and
requests mixing a good file and a bad one.

Each case ends as one of: scored (finite scores of the right shape), rejected (an
InvalidArgument whose message names the input, `wav_bytes[<i>]:` or `wav_bytes:`), other
error (any other exception or message), slow (over `--slow_s` seconds, counted on top of
its outcome), crash (the child died: it is restarted after that case) or hang (no answer in
`--hang_s` seconds: the child is killed and restarted). Target: 0 crashes, 0 hangs, 0 other
errors, nothing slow. The command, the counts and the slowest cases are printed.
"""

import argparse
import io
import json
import os
import selectors
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)

CHILD = textwrap.dedent("""
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    export_dir, cases_dir, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    serve = tf.saved_model.load(export_dir).signatures["serving_wav"]
    names = sorted(os.listdir(cases_dir))[first:]
    warm_up = np.zeros(16000, "<i2").tobytes()  # the first call sets the graph up
    serve(wav_bytes=tf.constant([b"RIFF" + (36 + len(warm_up)).to_bytes(4, "little")
                                 + b"WAVEfmt " + bytes.fromhex("1000000001000100803e0000007d0000"
                                 "02001000") + b"data" + len(warm_up).to_bytes(4, "little")
                                 + warm_up]))
    assert "keras_astpe" not in sys.modules, "the child imported keras_astpe"
    print(json.dumps({"ready": True}), flush=True)
    for name in names:
        with open(os.path.join(cases_dir, name), "rb") as f:
            request = json.loads(f.readline())
            files = [f.read(size) for size in request["sizes"]]
        print(json.dumps({"start": name}), flush=True)
        started = time.perf_counter()
        try:
            scores = serve(wav_bytes=tf.constant(files))["scores"].numpy()
            finite = bool(np.all(np.isfinite(scores))) and scores.shape[0] == len(files)
            outcome, message = ("scored" if finite else "other"), str(scores.shape)
        except tf.errors.InvalidArgumentError as error:
            message = error.message.split("assertion failed: [", 1)[-1].split("\\n")[0]
            message = message[:-1] if message.endswith("]") else message
            named = message.startswith(("wav_bytes[", "wav_bytes:"))
            outcome = "rejected" if named else "other"
        except Exception as error:
            outcome, message = "other", f"{type(error).__name__}: {error}"[:300]
        print(json.dumps({"name": name, "outcome": outcome, "seconds":
                          time.perf_counter() - started, "message": message[:300]}),
              flush=True)
""")


# === Cases ===

def chunk(chunk_id, payload, size=None):
    size = len(payload) if size is None else size
    return chunk_id + struct.pack("<I", size & 0xFFFFFFFF) + payload + (
        b"\0" if len(payload) % 2 else b"")


def fmt_payload(tag=1, channels=1, rate=16000, bits=16, block=None, byte_rate=None):
    block = channels * bits // 8 if block is None else block
    byte_rate = rate * block if byte_rate is None else byte_rate
    return struct.pack("<HHIIHH", tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF,
                       byte_rate & 0xFFFFFFFF, block & 0xFFFF, bits & 0xFFFF)


def riff(*chunks, size=None):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", (len(body) if size is None else size) & 0xFFFFFFFF) + body


def pcm16(rng, seconds, rate, channels=1):
    samples = rng.uniform(-0.5, 0.5, (int(seconds * rate), channels))
    return (samples * 32767).astype("<i2").tobytes()


def soundfile_bytes(rng, seconds, rate, channels, subtype, file_format="WAV"):
    import soundfile as sf

    buffer = io.BytesIO()
    samples = rng.uniform(-0.5, 0.5, (int(seconds * rate), channels))
    sf.write(buffer, samples, rate, subtype=subtype, format=file_format)
    return buffer.getvalue()


def make_cases(count, seed):
    """`[(name, [file bytes, ...])]`: valid files, then mutations, `count` in all."""
    rng = np.random.default_rng(seed)
    cases = []

    def add(name, *files):
        cases.append((f"{len(cases):04d}_{name}", list(files)))

    # Valid files: every supported rate, 1-8 channels, 16-bit PCM and float, WAVEX.
    for rate in SUPPORTED_RATES:
        add(f"valid_{rate}", soundfile_bytes(rng, 1.5, rate, 1, "PCM_16"))
    for channels in (2, 3, 6, 8):
        add(f"valid_{channels}ch", soundfile_bytes(rng, 1.0, 44100, channels, "FLOAT"))
    add("valid_wavex", soundfile_bytes(rng, 1.0, 48000, 2, "PCM_16", "WAVEX"))
    add("valid_streaming_size", riff(chunk(b"fmt ", fmt_payload()),
                                     chunk(b"data", pcm16(rng, 1.0, 16000), 0xFFFFFFFF)))
    # Odd encodings and containers.
    for subtype in ("PCM_U8", "PCM_24", "PCM_32", "DOUBLE", "ULAW", "ALAW", "IMA_ADPCM",
                    "MS_ADPCM", "GSM610"):
        add(f"encoding_{subtype}", soundfile_bytes(rng, 1.0, 16000, 1, subtype))
    for file_format in ("RF64", "W64", "FLAC", "OGG", "AIFF"):
        add(f"container_{file_format}", soundfile_bytes(rng, 1.0, 16000, 1, "PCM_16"
                                                        if file_format != "OGG" else "VORBIS",
                                                        file_format))
    # Extreme rates and channel counts in the header.
    for rate in (0, 1, 7999, 96000, 192000, 0xFFFFFFFF):
        add(f"rate_{rate}", riff(chunk(b"fmt ", fmt_payload(rate=rate)),
                                 chunk(b"data", pcm16(rng, 0.5, 16000))))
    for channels in (0, 255, 4096, 65535):
        data = pcm16(rng, 0.5, 16000) if channels == 0 else bytes(2 * channels * 100)
        add(f"channels_{channels}", riff(chunk(b"fmt ", fmt_payload(channels=channels)),
                                         chunk(b"data", data)))
    for seconds, rate, channels in ((0.2, 8000, 1), (30.0, 8000, 1), (10.0, 48000, 16)):
        add(f"length_{seconds}s_{rate}_{channels}ch",
            riff(chunk(b"fmt ", fmt_payload(channels=channels, rate=rate)),
                 chunk(b"data", pcm16(rng, seconds, rate, channels))))
    # Chunk floods and chunks before data.
    for empty in (10, 62, 63, 1000, 100_000, 500_000):
        add(f"flood_{empty}", riff(chunk(b"fmt ", fmt_payload()), chunk(b"junk", b"") * empty,
                                   chunk(b"data", pcm16(rng, 1.0, 16000))))
    add("flood_list_payloads", riff(chunk(b"fmt ", fmt_payload()),
                                    chunk(b"LIST", bytes(101)) * 20_000,
                                    chunk(b"data", pcm16(rng, 1.0, 16000))))
    # NaN and Inf samples.
    for value in (np.nan, np.inf, -np.inf):
        samples = rng.uniform(-0.5, 0.5, 16000).astype("<f4")
        samples[rng.integers(16000)] = value
        add(f"float_{value}", riff(chunk(b"fmt ", fmt_payload(tag=3, bits=32)),
                                   chunk(b"data", samples.tobytes())))
    # Requests of two files, the second bad.
    good = soundfile_bytes(rng, 1.0, 16000, 1, "PCM_16")
    add("request_good_then_garbage", good, bytes(rng.integers(0, 256, 5000, np.uint8)))
    add("request_good_then_empty", good, b"")

    bases = [soundfile_bytes(rng, rng.uniform(0.4, 3.0), int(rng.choice(SUPPORTED_RATES)),
                             int(rng.integers(1, 3)), str(rng.choice(["PCM_16", "FLOAT"])),
                             str(rng.choice(["WAV", "WAVEX"]))) for _ in range(8)]
    mutations = [mutate_header, mutate_chunk_size, truncate, overwrite_bytes, random_file]
    while len(cases) < count:
        base = bases[rng.integers(len(bases))]
        mutation = mutations[rng.integers(len(mutations))]
        name, contents = mutation(rng, base)
        add(name, contents)
    return cases[:count]


def _fmt_offset(contents):
    """Offset of the fmt chunk's payload (the bases have it first)."""
    return contents.index(b"fmt ") + 8


def mutate_header(rng, base):
    """One header field set to an extreme or random value."""
    contents = bytearray(base)
    fmt = _fmt_offset(base)
    fields = {"tag": (0, 2), "channels": (2, 2), "rate": (4, 4), "byte_rate": (8, 4),
              "block": (12, 2), "bits": (14, 2), "fmt_size": (-4, 4), "riff_size": (None, 4)}
    field = list(fields)[rng.integers(len(fields))]
    offset, width = fields[field]
    position = 4 if offset is None else fmt + offset
    extremes = [0, 1, 2, 3, 8, 16, 24, 32, 64, 0xFFFE, 2**(8 * width) - 1,
                int(rng.integers(0, 2**(8 * width)))]
    value = extremes[rng.integers(len(extremes))] % 2**(8 * width)
    contents[position:position + width] = value.to_bytes(width, "little")
    return f"header_{field}_{value}", bytes(contents)


def mutate_chunk_size(rng, base):
    """The size of the data chunk, or of a chunk put before it, set to an odd value."""
    contents = bytearray(base)
    sizes = [0, 1, 3, 2**31, 2**32 - 1, 2**32 - 2]
    data = base.index(b"data")
    actual = int.from_bytes(base[data + 4:data + 8], "little")
    sizes += [actual - 1, actual + 1, actual + 2]
    size = sizes[rng.integers(len(sizes))] % 2**32
    if rng.random() < 0.5:
        contents[data + 4:data + 8] = size.to_bytes(4, "little")
        return f"data_size_{size}", bytes(contents)
    extra = chunk(b"LIST", bytes(int(rng.integers(0, 64))), size)
    contents[data:data] = extra
    return f"list_size_{size}", bytes(contents)


def truncate(rng, base):
    cut = int(rng.integers(0, len(base)))
    return f"truncated_at_{cut}", base[:cut]


def overwrite_bytes(rng, base):
    """1 to 100 random bytes at random places (anywhere, or in the first 80 bytes)."""
    contents = bytearray(base)
    count = int(rng.integers(1, 101))
    limit = len(contents) if rng.random() < 0.5 else min(80, len(contents))
    for position in rng.integers(0, limit, count):
        contents[position] = int(rng.integers(256))
    return f"overwritten_{count}_bytes", bytes(contents)


def random_file(rng, base):
    """Random bytes, with or without a RIFF/WAVE header."""
    size = int(rng.integers(0, 20000))
    noise = bytes(rng.integers(0, 256, size, np.uint8))
    if rng.random() < 0.5:
        return f"random_{size}_bytes", noise
    return f"random_riff_{size}_bytes", riff(noise)


# === Running ===

def run_cases(export_dir, cases_dir, names, hang_s):
    """`{name: result}`, restarting the TensorFlow-only child after a crash or a hang."""
    results = {}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    while len(results) < len(names):
        first = len(results)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, export_dir, cases_dir, str(first)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        current = None
        try:
            selector = selectors.DefaultSelector()
            selector.register(child.stdout, selectors.EVENT_READ)
            while len(results) < len(names):
                timeout = 600 if current is None and first == len(results) else hang_s
                if not selector.select(timeout):
                    results[current or names[len(results)]] = {
                        "outcome": "hang", "seconds": hang_s, "message": "no answer"}
                    break
                line = child.stdout.readline()
                if not line:  # the child died
                    name = current or names[len(results)]
                    results[name] = {"outcome": "crash", "seconds": 0.0,
                                     "message": f"exit {child.wait()}"}
                    break
                record = json.loads(line)
                if "start" in record:
                    current = record["start"]
                elif "name" in record:
                    results[record.pop("name")] = record
                    current = None
        finally:
            child.kill()
            child.wait()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow_s", type=float, default=2.0,
                        help="a request slower than this (wall seconds) is counted as slow")
    parser.add_argument("--hang_s", type=float, default=120.0,
                        help="a request without an answer after this is a hang")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f"$ python bench/fuzz_wav.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)

    import keras_astpe
    from keras_astpe.models.audio_converter import LogMelAudioConverter
    from keras_astpe.serving import export_saved_model

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = keras_astpe.build_model(
            "time_alibi", preset="ast-pe-tiny", num_classes=10,
            audio_converter=LogMelAudioConverter(),
            class_names=[f"class {i}" for i in range(10)])
        export_dir = export_saved_model(model, os.path.join(tmp, "export", "1"))
        cases_dir = os.path.join(tmp, "cases")
        os.makedirs(cases_dir)
        cases = make_cases(args.cases, args.seed)
        for name, files in cases:
            with open(os.path.join(cases_dir, name), "wb") as f:
                f.write(json.dumps({"sizes": [len(c) for c in files]}).encode() + b"\n")
                f.writelines(files)
        total_mb = sum(len(c) for _, files in cases for c in files) / 1e6
        print(f"{len(cases)} cases ({total_mb:.0f} MB) written, export ready in "
              f"{time.perf_counter() - started:.0f} s; sending...", flush=True)
        names = sorted(name for name, _ in cases)
        results = run_cases(export_dir, cases_dir, names, args.hang_s)

    counts = {}
    for result in results.values():
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    slow = sorted(((r["seconds"], n) for n, r in results.items()
                   if r["seconds"] > args.slow_s and r["outcome"] not in ("hang", "crash")),
                  reverse=True)
    print("\n| outcome | cases |\n|---|---|")
    for outcome in ("scored", "rejected", "other", "crash", "hang"):
        print(f"| {outcome} | {counts.get(outcome, 0)} |")
    print(f"| slow (> {args.slow_s:g} s) | {len(slow)} |")
    timed = sorted(((r["seconds"], n) for n, r in results.items()), reverse=True)
    print("\nSlowest requests: " + ", ".join(f"{n} {s:.2f} s" for s, n in timed[:5]))
    print("Chunk floods: " + ", ".join(
        f"{name.split('_', 1)[1]} {1e3 * result['seconds']:.0f} ms ({result['outcome']})"
        for name, result in sorted(results.items()) if "flood" in name))
    print("Median request: "
          f"{np.median([r['seconds'] for r in results.values()]) * 1e3:.0f} ms")
    for outcome in ("other", "crash", "hang"):
        for name, result in sorted(results.items()):
            if result["outcome"] == outcome:
                print(f"{outcome}: {name}: {result['message']}")
    examples = {}
    for name, result in sorted(results.items()):
        if result["outcome"] == "rejected":
            kind = name.split("_", 1)[1].split("_")[0]
            examples.setdefault(kind, f"{name}: {result['message']}")
    print("\nOne rejection per kind of case:")
    for line in examples.values():
        print(f"  {line}")
    print(f"\nTotal {time.perf_counter() - started:.0f} s")
    bad = counts.get("other", 0) + counts.get("crash", 0) + counts.get("hang", 0) + len(slow)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
