"""Speed and memory of the positional encodings.

    python bench/bench_model.py                       # both parts, TensorFlow backend, CPU
    python bench/bench_model.py --part=attention      # learned relative vs plain attention
    python bench/bench_model.py --part=step --backend=jax --preset=ast-pe-small

Part `attention`: one self-attention layer at the paper size (L = 249 = 1 + 31 x 8 tokens,
12 heads of 64, width 768), forward + backward, with no bias, ALiBi and learned relative
bias; both the attention core (the model's `scaled_dot_product_attention` from projected
Q, K, V, with the bias layer: where the bias costs) and the whole layer (with projections),
in TensorFlow graph mode (what `model.fit` runs on a CPU: Keras turns XLA off there) and
XLA-compiled (its default on a GPU). Target: learned relative within 1.3x of no bias.

Part `step`: one full training step (forward, backward, Adam) of the whole model for every
PE kind, each in a fresh process, with the process's peak resident memory. Target: every
PE kind within 1.3x of `none`. On a GPU machine the paper preset at batch 64 is used. The
timing and memory processes of this part run with the recipes' start-up settings
(`keras_astpe_startup.configure()`).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PE_KINDS = ("none", "absolute", "alibi_2d", "time_alibi", "learned_relative", "conditional",
            "conditional_absolute")

# Run first in every process of part `step`: the recipes' start-up settings.
STARTUP = "import keras_astpe_startup\nkeras_astpe_startup.configure()\n"

MEMORY_SCRIPT = """
import json, resource, sys
import keras, numpy as np
import keras_astpe
pe, preset, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = keras_astpe.build_model(pe, preset=preset, num_classes=527)
model.compile(optimizer=keras.optimizers.Adam(1e-4, clipvalue=1.0), loss="binary_crossentropy")
x = np.random.rand(batch, model.backbone.num_frames, model.backbone.num_mel_bins).astype("float32")
y = (np.random.rand(batch, 527) > 0.99).astype("float32")
for _ in range(3):
    model.train_on_batch(x, y)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "params": model.count_params()}))
"""

TIMING_SCRIPT = """
import json, sys, time
import keras, numpy as np
import keras_astpe
preset, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(0)
models = {}
for pe in keras_astpe.PE_KINDS:
    model = keras_astpe.build_model(pe, preset=preset, num_classes=527)
    model.compile(optimizer=keras.optimizers.Adam(1e-4, clipvalue=1.0),
                  loss="binary_crossentropy")
    models[pe] = model
frames, mels = model.backbone.num_frames, model.backbone.num_mel_bins
x = np.random.rand(batch, frames, mels).astype("float32")
y = (np.random.rand(batch, 527) > 0.99).astype("float32")
for model in models.values():
    for _ in range(3):
        model.train_on_batch(x, y)
times = {pe: [] for pe in models}
for _ in range(steps):  # round-robin, so load changes hit every PE kind alike
    for pe, model in models.items():
        start = time.perf_counter()
        float(np.asarray(model.train_on_batch(x, y)).ravel()[0])
        times[pe].append(time.perf_counter() - start)
print(json.dumps({pe: 1000 * float(np.median(t)) for pe, t in times.items()}))
"""


def bench_attention(batch, repeats, jit_compile):
    """Forward + backward of one attention layer, TensorFlow, as a tf.function."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    from keras_astpe.layers import ALiBiBias, LearnedRelativeBias, MultiHeadSelfAttention
    from keras_astpe.layers.attention import scaled_dot_product_attention

    grid, heads, head_dim = (31, 8), 12, 64
    length, dim = 1 + grid[0] * grid[1], heads * head_dim
    variants = {
        "no bias": None,
        "alibi_2d": ALiBiBias(heads, grid[1], mode="2d"),
        "learned_relative": LearnedRelativeBias(grid),
    }
    x = tf.constant(np.random.rand(batch, length, dim).astype("float32"))
    qkv = [tf.constant(np.random.randn(batch, length, heads, head_dim).astype("float32"))
           for _ in range(3)]
    timed = {}
    for name, position_bias in variants.items():
        layer = MultiHeadSelfAttention(heads, head_dim, position_bias=position_bias)
        layer.build((None, None, dim))
        scale = 1.0 / head_dim**0.5

        @tf.function(jit_compile=jit_compile)
        def core(q, k, v, position_bias=position_bias, scale=scale):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                bias = None if position_bias is None else position_bias(q, scale=scale)
                out = scaled_dot_product_attention(q, k, v, bias, scale)
                loss = tf.reduce_sum(out**2)
            grads = tape.gradient(loss, [q, k, v] + _variables(position_bias))
            return [tf.convert_to_tensor(g) for g in grads]

        @tf.function(jit_compile=jit_compile)
        def full(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x) ** 2)
            grads = tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])
            return [tf.convert_to_tensor(g) for g in grads]

        timed[(name, "core_ms")] = lambda core=core: core(*qkv)
        timed[(name, "layer_ms")] = lambda full=full: full(x)
    medians = _interleaved_medians(timed, repeats)
    results = {name: {"core_ms": medians[(name, "core_ms")],
                      "layer_ms": medians[(name, "layer_ms")]} for name in variants}
    base = results["no bias"]
    mode = "XLA" if jit_compile else "graph"
    print(f"\nSelf-attention forward+backward, TensorFlow {mode}, batch {batch}, L={length}, "
          f"{heads} heads of {head_dim}")
    print(f"{'bias':<18}{'core ms':>10}{'x no bias':>11}{'layer ms':>11}{'x no bias':>11}")
    for name, r in results.items():
        print(f"{name:<18}{r['core_ms']:>10.1f}{r['core_ms'] / base['core_ms']:>11.2f}"
              f"{r['layer_ms']:>11.1f}{r['layer_ms'] / base['layer_ms']:>11.2f}")
    ratio = results["learned_relative"]["core_ms"] / base["core_ms"]
    print(f"target ({mode}): learned_relative core <= 1.3x no bias -> {ratio:.2f}x "
          f"{'OK' if ratio <= 1.3 else 'MISSED'}")
    return results


def _variables(layer):
    return [] if layer is None else [v.value for v in layer.trainable_variables]


def _interleaved_medians(functions, repeats):
    """Median milliseconds of each function, timed round-robin so load hits all alike."""
    import numpy as np

    for fn in functions.values():
        for _ in range(3):
            [t.numpy() for t in fn()]
    times = {key: [] for key in functions}
    for _ in range(repeats):
        for key, fn in functions.items():
            start = time.perf_counter()
            [t.numpy() for t in fn()]
            times[key].append(time.perf_counter() - start)
    return {key: 1000 * float(np.median(t)) for key, t in times.items()}


def bench_steps(backend, preset, batch, steps):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)

    def run(script, *args):
        out = subprocess.run([sys.executable, "-c", STARTUP + script, *map(str, args)], env=env,
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise RuntimeError(f"benchmark process failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    step_ms = run(TIMING_SCRIPT, preset, batch, steps)
    memory = {pe: run(MEMORY_SCRIPT, pe, preset, batch) for pe in PE_KINDS}
    base = step_ms["none"]
    print(f"\nTraining step (forward+backward+Adam), backend {backend}, preset {preset}, "
          f"batch {batch}, median of {steps} round-robin steps; peak RSS of a process that "
          f"builds the model and runs 3 steps")
    print(f"{'pe':<22}{'params':>12}{'step ms':>10}{'x none':>8}{'peak RSS MB':>13}")
    for pe in PE_KINDS:
        print(f"{pe:<22}{memory[pe]['params']:>12,}{step_ms[pe]:>10.1f}"
              f"{step_ms[pe] / base:>8.2f}{memory[pe]['peak_rss_mb']:>13.0f}")
    worst = max(ms / base for ms in step_ms.values())
    print(f"target: every PE kind <= 1.3x none -> worst {worst:.2f}x "
          f"{'OK' if worst <= 1.3 else 'MISSED'}")
    return step_ms, memory


def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("attention", "step", "all"), default="all")
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--preset", default=None,
                        help="default: ast-pe at batch 64 on a GPU, ast-pe-small on CPU")
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print("$ python " + " ".join(sys.argv))
    if args.part in ("attention", "all"):
        for jit_compile in (False, True):
            bench_attention(batch=8, repeats=args.steps, jit_compile=jit_compile)
    if args.part in ("step", "all"):
        gpu = _has_gpu()
        preset = args.preset or ("ast-pe" if gpu else "ast-pe-small")
        batch = args.batch_size or (64 if gpu else 16)
        bench_steps(args.backend, preset, batch, args.steps)


if __name__ == "__main__":
    main()
