"""Minor page faults per JAX training step, with and without the process start-up.

    python bench/bench_page_faults.py [--preset=ast-pe-small] [--batch_size=8] [--steps=4]

Trains the preset's `none` model on random data in two JAX processes, one plain and one
that calls `keras_astpe_startup.configure()` first (glibc malloc that keeps freed memory,
where JAX is CPU-only), and prints the minor page faults and the wall time per step of each
after two warm-up steps. Without the start-up, XLA:CPU's per-step temporary buffer is
mapped afresh and faulted in page by page every step (see bench/README.md, "Page faults").
Linux with glibc only; the user's MALLOC_* and GLIBC_TUNABLES settings are removed.
"""

import argparse
import os
import subprocess
import sys

_WORKER = """
import resource, sys, time
if sys.argv[1] == "configured":
    import keras_astpe_startup
    keras_astpe_startup.configure()
import numpy as np
import keras_astpe
preset, batch, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = keras_astpe.build_model("none", preset=preset, num_classes=10)
model.compile(optimizer="adam", loss="binary_crossentropy")
frames = model.backbone.num_frames
x = np.random.rand(batch, frames, model.backbone.num_mel_bins).astype("float32")
y = (np.random.rand(batch, 10) > 0.5).astype("float32")
for _ in range(2):
    model.train_on_batch(x, y)
before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(steps):
    model.train_on_batch(x, y)
seconds = (time.perf_counter() - start) / steps
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps, seconds)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ast-pe-small")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("error: bench_page_faults.py measures glibc's malloc: Linux only")
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environ.update(KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    results = {}
    for mode in ("plain", "configured"):
        result = subprocess.run(
            [sys.executable, "-c", _WORKER, mode, args.preset, str(args.batch_size),
             str(args.steps)], env=environ, capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"error: the {mode} process failed:\n{result.stderr[-3000:]}")
        faults, seconds = map(float, result.stdout.split()[-2:])
        results[mode] = (faults, seconds)
        print(f"{mode:>10}: {faults:>9,.0f} minor page faults per step, {seconds:.3f} s per "
              f"step")
    print(f"JAX, {args.preset}, batch {args.batch_size}, {args.steps} steps: page faults per "
          f"step {results['plain'][0]:,.0f} -> {results['configured'][0]:,.0f} with "
          f"keras_astpe_startup.configure()")


if __name__ == "__main__":
    main()
