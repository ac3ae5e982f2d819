"""Fault injection: damage what a training run reads and writes, and check it never finishes
silently different.

    python bench/fault_injection.py --rounds=12 [--seed=0] [--work_dir=/tmp/faults]

Trains the tiny demo once undisturbed (the reference), then, for each round, runs the same
training with one fault injected at a random place:

- `shard_flip` / `shard_truncate` / `shard_empty`: a byte of a random training or eval shard
  flipped, the shard cut at a random offset, or emptied, before the run;
- `checkpoint_flip` / `checkpoint_truncate`: the run is SIGKILLed after a random checkpoint,
  then a byte of the newest checkpoint is flipped (or it is cut) before the rerun;
- `snapshot_flip` / `snapshot_truncate`: likewise for a random SWA snapshot;
- `sigkill`: the run is killed at a random moment and rerun.

After each round the outcome is one of `same model` (the run finished and its model equals
the reference), `error naming the file` (the run stopped with exit code 1 and an error line
naming the damaged file), or a failure: `SILENT: finished different`, `error not naming the
file`, `crash` (a traceback). Prints the table of rounds and exits 1 on any failure.
"""

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_astpe import cli
from keras_astpe.cli import setting

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "train_audioset.py"
TINY = ["--pe=time_alibi", "--preset=ast-pe-tiny", "--batch_size=4", "--train_steps=12",
        "--checkpoint_every=3", "--swa_last=2", "--warmup_steps=2"]
FAULTS = ("shard_flip", "shard_truncate", "shard_empty", "checkpoint_flip",
          "checkpoint_truncate", "snapshot_flip", "snapshot_truncate", "sigkill")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaultConfig:
    rounds: int = setting(12, help="Rounds, one fault each (faults cycle in a random order).")
    seed: int = setting(0, help="Seed of the faults' kinds, targets and offsets.")
    work_dir: str | None = setting(None, help="Folder for the runs (default: a temporary "
                                   "folder, removed at the end).")
    timeout: int = setting(900, help="Seconds one training run may take.")


def _run(data_dir, output_dir, timeout, kill_when=None):
    """Runs the recipe; with `kill_when` (a callable of the output folder), SIGKILLs it when
    that returns True. Returns (exit code, output)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    process = subprocess.Popen(
        [sys.executable, str(RECIPE), *TINY, f"--data_dir={data_dir}",
         f"--output_dir={output_dir}"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    if kill_when is not None:
        deadline = time.monotonic() + timeout
        while process.poll() is None and not kill_when(Path(output_dir)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _weights(path):
    import keras

    return keras.saving.load_model(path, compile=False).get_weights()


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, rtol=1e-5, atol=1e-6)
                                    for x, y in zip(a, b, strict=True))


def _damage(path, how, rng):
    """Flips one byte of `path` or cuts it; returns a description."""
    size = os.path.getsize(path)
    if how == "empty":
        open(path, "wb").close()
        return f"emptied ({size} bytes)"
    offset = rng.randrange(size)
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(offset)
        return f"cut at byte {offset} of {size}"
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    return f"bit flipped at byte {offset} of {size}"


def _round(fault, rng, data_dir, work, reference, timeout):
    """One round: `(target, detail, outcome)`."""
    data = work / "data"
    shutil.copytree(data_dir, data)
    run_dir = work / "run"
    target = None
    if fault.startswith("shard"):
        target = rng.choice(sorted(data.glob("*.tfrecord")))
        detail = _damage(target, fault.split("_")[1], rng)
    elif fault == "sigkill":
        delay = rng.uniform(5.0, 40.0)
        deadline = time.monotonic() + delay
        _run(data, run_dir, timeout, kill_when=lambda _: time.monotonic() > deadline)
        detail = f"killed after {delay:.0f} s"
    else:
        kind = "checkpoints" if fault.startswith("checkpoint") else "swa"
        step = rng.choice([3, 6, 9])
        marker = (f"checkpoints/ckpt-{step:012d}.weights.h5" if kind == "checkpoints"
                  else f"swa/snapshot-{step:012d}.npz")
        _run(data, run_dir, timeout, kill_when=lambda out: (out / marker).exists())
        pattern = "ckpt-*.weights.h5" if kind == "checkpoints" else "snapshot-*.npz"
        candidates = sorted((run_dir / kind).glob(pattern))
        if not candidates:
            return None, "the killed run left nothing to damage", "skipped"
        target = candidates[-1] if kind == "checkpoints" else rng.choice(candidates)
        detail = _damage(target, fault.split("_")[1], rng)
    code, output = _run(data, run_dir, timeout)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if "Traceback" in output:
        outcome = "crash"
    elif code == 0:
        same = _same(_weights(run_dir / "model.keras"), reference)
        outcome = "same model" if same else "SILENT: finished different"
    elif target is not None and last.startswith("error:") and target.name in last:
        outcome = "error naming the file"
    else:
        outcome = "error not naming the file"
    return target, detail + (f"; {last[:160]}" if code else ""), outcome


def main(config):
    from tfrecords_tools.demo import prepare_demo_data

    rng = random.Random(config.seed)
    root = Path(config.work_dir or tempfile.mkdtemp(prefix="faults-"))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = Path(prepare_demo_data("audioset", root=str(root / "demo_data"), size="tiny",
                                      progress=False))
    print(f"Reference run on {data_dir}", flush=True)
    code, output = _run(data_dir, root / "reference", config.timeout)
    if code:
        sys.exit(f"error: the undisturbed run failed:\n{output[-3000:]}")
    reference = _weights(root / "reference" / "model.keras")
    faults = [FAULTS[i % len(FAULTS)] for i in range(config.rounds)]
    rng.shuffle(faults)
    rows = []
    for index, fault in enumerate(faults, start=1):
        work = root / f"round_{index:03d}"
        start = time.monotonic()
        target, detail, outcome = _round(fault, rng, data_dir, work, reference, config.timeout)
        rows.append((index, fault, "-" if target is None else target.name, outcome, detail))
        print(f"round {index}/{len(faults)} ({time.monotonic() - start:.0f} s): {fault} "
              f"{rows[-1][2]}: {outcome}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    ok = {"same model", "error naming the file", "skipped"}
    table = [("round", "fault", "target", "outcome", "detail"), *rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    print()
    for row in table:
        print("  ".join(str(value).ljust(width) for value, width in
                        zip(row[:4], widths, strict=True)) + "  " + str(row[4]))
    silent = sum(row[3].startswith("SILENT") for row in rows)
    bad = [row for row in rows if row[3] not in ok]
    print(f"\n{len(rows)} faults injected: "
          f"{sum(row[3] == 'same model' for row in rows)} finished with the reference model, "
          f"{sum(row[3] == 'error naming the file' for row in rows)} stopped with an error "
          f"naming the damaged file, {silent} silent, {len(bad) - silent} other failures.")
    if config.work_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main, FaultConfig)
