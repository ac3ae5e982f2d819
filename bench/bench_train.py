"""Training throughput and model FLOP utilisation of every backend, side by side.

    python bench/bench_train.py                            # CPU: ast-pe-small, batch 8
    python bench/bench_train.py --preset=ast-pe --pe=none,absolute --rounds=3
    python bench/bench_train.py --mixed_precision --jit_compile=true   # a GPU: ast-pe, batch 64

One training step (forward, backward, Adam with clipping by value as in the recipe, binary
cross-entropy on 527 classes, a fixed random batch, dropout on) of the chosen preset
(default: the paper's `ast-pe` on a GPU, `ast-pe-small` on a CPU) for every PE kind, on
the TensorFlow, JAX and PyTorch backends (those installed), each in its own worker process,
next to the peer: transformers' `ASTForAudioClassification` of the same size on PyTorch
(when transformers is installed; square 16x16 patches of the same area and number as the
preset's 32x8 ones, a distillation token, the same dropout).

Every worker builds and warms up its model for one PE kind; then the workers time
`--steps` steps each in turn, in `--rounds` rounds whose order rotates, so load from other
work on the machine hits every engine alike. A figure is the median over the rounds of
each round's median step; the spread is the range of the rounds. CPU-s/step (all threads
of the worker) is printed too: on a shared machine it moves less than the wall time. The
peer is timed in the rounds of `absolute` (AST's own PE), or of the first PE kind asked
for.

Model FLOPs per step are counted from the configuration: the matrix products of the
forward pass (patch projection 2*P*A*D for P patches of A values, per block 8*L*D^2 for
the Q, K, V and output projections, 4*L^2*D for QK^T and the weighted sum of V,
4*L*D*F for the feed-forward; the learned relative logits 2*(L-1)*D*(2T-1 + 2F-1); a
PEG's 3x3 depthwise conv 18*P*D; the head 2*D*C), times 3 for forward plus backward
(standard: the backward pass costs two forward passes), times the batch. Elementwise
work (softmax, LayerNorm, dropout, Adam) is not counted. Model FLOP utilisation (MFU) is
those FLOPs per second over the device's peak: `--peak_tflops`, else a table of GPUs
(bf16 dense, or TF32 for float32), else on a CPU the best float32 2048^3 matrix
product any of the engines ran, measured here (printed per engine).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PE_KINDS = ("none", "absolute", "alibi_2d", "time_alibi", "learned_relative", "conditional",
            "conditional_absolute")
BACKENDS = ("tensorflow", "jax", "torch")
PEER = "transformers"
NUM_CLASSES = 527
# Dense peak TFLOP/s: (bfloat16, TF32), SXM parts.
GPU_PEAKS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0),
             "L40S": (362.0, 183.0), "L4": (121.0, 60.0)}
PEAK_SIZE = 2048


# === FLOPs from the configuration ===

def forward_flops(*, patches, patch_area, prefix_tokens, hidden_dim, num_layers,
                  intermediate_dim, grid_shape=None, relative=False, peg_layers=0,
                  num_classes=NUM_CLASSES):
    """Matrix-product FLOPs of one clip's forward pass (see the module docstring)."""
    length = patches + prefix_tokens
    block = (8 * length * hidden_dim**2 + 4 * length**2 * hidden_dim
             + 4 * length * hidden_dim * intermediate_dim)
    if relative:
        time_patches, freq_patches = grid_shape
        block += 2 * patches * hidden_dim * (2 * time_patches - 1 + 2 * freq_patches - 1)
    return (2 * patches * patch_area * hidden_dim + num_layers * block
            + peg_layers * 18 * patches * hidden_dim + 2 * hidden_dim * num_classes)


def keras_model_flops(model):
    backbone = model.backbone
    time, freq = backbone.grid_shape
    return forward_flops(
        patches=time * freq, patch_area=int(np.prod(backbone.patch_size)),
        prefix_tokens=getattr(backbone, "num_prefix_tokens", 1),
        hidden_dim=backbone.hidden_dim, num_layers=backbone.num_layers,
        intermediate_dim=backbone.intermediate_dim, grid_shape=backbone.grid_shape,
        relative=backbone.position_encoding == "learned_relative",
        peg_layers=len(backbone.pegs))


# === Workers: one process per engine ===

class Worker:
    """Answers JSON commands on stdin: `peak`, `build` (a PE kind), `time` (steps), `free`."""

    def __init__(self, args):
        self.args = args
        self.step = None

    def serve(self):
        for line in sys.stdin:
            command = json.loads(line)
            reply = getattr(self, command.pop("cmd"))(**command)
            print(json.dumps(reply), flush=True)

    def peak(self):
        matmul = self.matmul_fn(PEAK_SIZE)
        matmul()
        best = min(_timed(matmul) for _ in range(5))
        return {"gflops": 2 * PEAK_SIZE**3 / best / 1e9}

    def time(self, steps):
        wall, cpu = [], []
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            self.step()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        return {"wall": wall, "cpu": cpu}

    def free(self):
        self.step = None
        self.release()
        gc.collect()
        return {}

    def release(self):
        pass


class KerasWorker(Worker):
    def __init__(self, args):
        super().__init__(args)
        import keras_astpe_startup

        keras_astpe_startup.configure()  # as the recipes start, before Keras is imported

        import keras

        import keras_astpe

        self.keras, self.keras_astpe = keras, keras_astpe
        if args.mixed_precision:
            keras.config.set_dtype_policy("mixed_bfloat16")
        self.device = _keras_device(keras.backend.backend())
        self.model = None

    def matmul_fn(self, size):
        ops = self.keras.ops
        a, b = (ops.convert_to_tensor(np.random.rand(size, size).astype("float32"))
                for _ in range(2))
        backend = self.keras.backend.backend()
        if backend == "jax":
            import jax
            matmul = jax.jit(lambda a, b: a @ b)
            return lambda: matmul(a, b).block_until_ready()
        if backend == "tensorflow":
            import tensorflow as tf
            matmul = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=False)
            return lambda: matmul(a, b).numpy()
        return lambda: ops.convert_to_numpy(ops.matmul(a, b)[:1, :1])

    def build(self, pe):
        keras = self.keras
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        model = self.keras_astpe.build_model(pe, preset=self.args.preset,
                                             num_classes=NUM_CLASSES)
        adam = _module("training", "keras_internals").fused_adam_on_torch(
            keras.optimizers.Adam)  # the recipes' Adam (trainer.compile_classifier)
        model.compile(optimizer=adam(1e-4, clipvalue=1.0),
                      loss=keras.losses.BinaryCrossentropy(),
                      jit_compile=_jit_compile(self.args.jit_compile))
        x, y = _batch(self.args.batch_size, model.backbone.num_frames,
                      model.backbone.num_mel_bins)

        def step():
            float(np.asarray(model.train_on_batch(x, y)).ravel()[0])

        for _ in range(self.args.warmup):
            step()
        self.model, self.step = model, step
        return {"flops": 3 * self.args.batch_size * keras_model_flops(model),
                "params": model.count_params(), "setup_s": time.perf_counter() - start,
                "device": self.device}

    def release(self):
        self.model = None
        self.keras.backend.clear_session()


class PeerWorker(Worker):
    """transformers' ASTForAudioClassification of the preset's size, trained in PyTorch."""

    def __init__(self, args):
        super().__init__(args)
        import torch
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def matmul_fn(self, size):
        torch = self.torch
        a, b = (torch.rand(size, size, device=self.device) for _ in range(2))
        return lambda: (a @ b)[0, 0].item()

    def build(self, pe):
        import transformers

        torch = self.torch
        torch.manual_seed(0)
        start = time.perf_counter()
        preset = _preset(self.args.preset)
        patch = _square_patch(preset)
        config = ast_config(self.args.preset, NUM_CLASSES, hidden_dropout_prob=0.1)
        model = transformers.ASTForAudioClassification(config).to(self.device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        forward = torch.compile(model) if self.args.jit_compile == "true" else model
        x, y = (torch.from_numpy(a).to(self.device) for a in
                _batch(self.args.batch_size, preset["num_frames"], preset["num_mel_bins"]))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        autocast = torch.autocast(self.device, dtype=torch.bfloat16,
                                  enabled=self.args.mixed_precision)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = forward(input_values=x).logits
            loss = loss_fn(logits.float(), y)
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
            optimizer.step()
            loss.item()

        for _ in range(self.args.warmup):
            step()
        self.step = step
        time_patches, freq_patches = patch["grid"]
        flops = forward_flops(
            patches=time_patches * freq_patches, patch_area=patch["size"] ** 2,
            prefix_tokens=2, hidden_dim=config.hidden_size,
            num_layers=config.num_hidden_layers, intermediate_dim=config.intermediate_size)
        return {"flops": 3 * self.args.batch_size * flops,
                "params": sum(p.numel() for p in model.parameters()),
                "setup_s": time.perf_counter() - start,
                "device": torch.cuda.get_device_name() if self.device == "cuda" else "CPU"}


def _module(package, name):
    """A module of keras_astpe read from its file, without its package's `__init__`
    (`keras_astpe.training` imports TensorFlow, which the JAX and PyTorch workers may lack)."""
    import importlib.util
    path = os.path.join(ROOT, "keras_astpe", package, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _preset(name):
    """The preset's arguments (presets.py)."""
    return _module("models", "presets").get_preset(name)


def ast_config(preset_name, num_labels, **overrides):
    """transformers' `ASTConfig` of the preset's size: its width, depth, heads, FF,
    activation and input, its patches as `_square_patch` makes them square."""
    import transformers

    preset = _preset(preset_name)
    patch = _square_patch(preset)
    return transformers.ASTConfig(
        hidden_size=preset["hidden_dim"], num_hidden_layers=preset["num_layers"],
        num_attention_heads=preset["num_heads"], intermediate_size=preset["intermediate_dim"],
        hidden_act=preset.get("activation", "relu"), layer_norm_eps=1e-6,
        qkv_bias=preset.get("use_attention_bias", False), patch_size=patch["size"],
        frequency_stride=patch["stride"][1], time_stride=patch["stride"][0],
        max_length=preset["num_frames"], num_mel_bins=preset["num_mel_bins"],
        num_labels=num_labels, **overrides)


def _square_patch(preset):
    """The preset's patches as transformers' square ones: same size and stride if square,
    else non-overlapping squares of the same area (32x8 -> 16x16: 31 x 8 -> 62 x 4)."""
    height, width = preset["patch_size"]
    stride = preset.get("patch_stride") or (height, width)
    if height != width:
        side = int(round((height * width) ** 0.5))
        if side * side != height * width:
            raise ValueError(f"No square patch has the area of {height}x{width}.")
        height = width = side
        stride = (side, side)
    grid = ((preset["num_frames"] - height) // stride[0] + 1,
            (preset["num_mel_bins"] - width) // stride[1] + 1)
    return {"size": height, "stride": tuple(stride), "grid": grid}


def _batch(batch_size, frames, mel_bins):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, frames, mel_bins)).astype("float32")
    y = (rng.random((batch_size, NUM_CLASSES)) > 0.99).astype("float32")
    return x, y


def _jit_compile(value):
    return {"auto": "auto", "true": True, "false": False}[value]


def _keras_device(backend):
    if backend == "jax":
        import jax
        device = jax.devices()[0]
        return "CPU" if device.platform == "cpu" else device.device_kind
    if backend == "tensorflow":
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") \
            if gpus else "CPU"
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_worker(args):
    worker = PeerWorker(args) if args.worker == PEER else KerasWorker(args)
    print(json.dumps({"started": args.worker}), flush=True)
    worker.serve()


# === The parent: rounds over the workers ===

class Engine:
    """A worker process seen from the parent."""

    def __init__(self, name, args):
        self.name = name
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false",
                   TF_FORCE_GPU_ALLOW_GROWTH="true", PYTHONPATH=ROOT)
        if name != PEER:
            env["KERAS_BACKEND"] = name
        command = [sys.executable, os.path.abspath(__file__), f"--worker={name}",
                   f"--preset={args.preset}", f"--batch_size={args.batch_size}",
                   f"--warmup={args.warmup}", f"--jit_compile={args.jit_compile}"]
        if args.mixed_precision:
            command.append("--mixed_precision")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env, cwd=ROOT)

    def send(self, cmd, **kwargs):
        self.process.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.process.stdin.flush()

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The {self.name} worker stopped (exit code "
                               f"{self.process.wait()}); its error is above.")
        return json.loads(line)

    def call(self, cmd, **kwargs):
        self.send(cmd, **kwargs)
        return self.receive()

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def _gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout else None


def _table_peak(gpu_name, mixed_precision):
    for key, (bf16, tf32) in GPU_PEAKS.items():
        if key in gpu_name:
            return (bf16 if mixed_precision else tf32) * 1e12
    return None


def _rounds(engines, rounds, steps, settle):
    """Per engine, each round's median step time (wall and CPU seconds). Each turn starts
    `settle` seconds after the previous one ends, so that the threads of the engine that
    just ran stop spinning (PyTorch's OpenMP workers, statically split, otherwise lose
    whole steps to them on a machine with few cores)."""
    wall = {e.name: [] for e in engines}
    cpu = {e.name: [] for e in engines}
    for r in range(rounds):
        for engine in engines[r % len(engines):] + engines[:r % len(engines)]:
            time.sleep(settle)
            times = engine.call("time", steps=steps)
            wall[engine.name].append(float(np.median(times["wall"])))
            cpu[engine.name].append(float(np.median(times["cpu"])))
    return wall, cpu


def _names(text):
    """The comma-separated names of `text`, each once, in order."""
    return list(dict.fromkeys(name for name in text.split(",") if name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", help="model preset (default: ast-pe on a GPU, "
                        "ast-pe-small on a CPU)")
    parser.add_argument("--batch_size", type=int, help="clips per step (default: 64 on a "
                        "GPU, 8 on a CPU)")
    parser.add_argument("--pe", default=",".join(PE_KINDS), help="comma-separated PE kinds")
    parser.add_argument("--backends", help="comma-separated Keras backends (default: those "
                        "installed of tensorflow, jax, torch)")
    parser.add_argument("--peer", choices=("auto", "yes", "no"), default="auto",
                        help="time transformers' AST too (auto: when transformers is "
                        "installed)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after building")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of idle before each engine's turn")
    parser.add_argument("--mixed_precision", action="store_true",
                        help="mixed_bfloat16 (Keras) / bfloat16 autocast (peer)")
    parser.add_argument("--jit_compile", choices=("auto", "true", "false"), default="auto",
                        help="Keras' jit_compile (auto: XLA on GPUs for TensorFlow, always "
                        "for JAX, never for torch); true also torch.compiles the peer")
    parser.add_argument("--peak_tflops", type=float,
                        help="the device's peak TFLOP/s for MFU (default: table or measured)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)

    gpu = _gpu_name()
    args.preset = args.preset or ("ast-pe" if gpu else "ast-pe-small")
    args.batch_size = args.batch_size or (64 if gpu else 8)

    pe_kinds = _names(args.pe)
    installed = [b for b in BACKENDS if _importable(b)]
    backends = _names(args.backends or ",".join(installed))
    for name, given, known in (("PE kind", pe_kinds, PE_KINDS),
                               ("backend", backends, BACKENDS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {name} {unknown}; expected any of {list(known)}")
    missing = [b for b in backends if b not in installed]
    if missing:
        parser.error(f"backend {missing} not installed here; installed: {installed}")
    with_peer = args.peer == "yes" or (args.peer == "auto" and _importable("transformers"))
    names = backends + ([PEER] if with_peer else [])
    engines = [Engine(name, args) for name in names]
    for engine in engines:
        engine.receive()
    try:
        report(args, gpu, pe_kinds, engines)
    finally:
        for engine in engines:
            engine.close()


def _importable(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


def report(args, gpu, pe_kinds, engines):
    began = time.perf_counter()
    peaks = {}
    for _ in range(2):  # twice round-robin, the best of each engine
        for engine in engines:
            gflops = engine.call("peak")["gflops"]
            peaks[engine.name] = max(peaks.get(engine.name, 0.0), gflops)
    if args.peak_tflops:
        peak, source = args.peak_tflops * 1e12, "--peak_tflops"
    elif gpu and _table_peak(gpu, args.mixed_precision):
        peak = _table_peak(gpu, args.mixed_precision)
        source = f"{gpu}, {'bfloat16' if args.mixed_precision else 'TF32'} dense peak (table)"
    else:
        peak = max(peaks.values()) * 1e9
        source = f"best float32 {PEAK_SIZE}^3 matrix product measured here"
    peer_pe = "absolute" if "absolute" in pe_kinds else pe_kinds[0]
    keras_engines = [e for e in engines if e.name != PEER]
    peer = next((e for e in engines if e.name == PEER), None)

    rows = []
    for pe in pe_kinds:
        timed = keras_engines + ([peer] if peer and pe == peer_pe else [])
        for engine in timed:
            engine.send("build", pe=pe)
        built = {engine.name: engine.receive() for engine in timed}
        wall, cpu = _rounds(timed, args.rounds, args.steps, args.settle)
        for engine in timed:
            rows.append(_row(pe, engine.name, built[engine.name], wall[engine.name],
                             cpu[engine.name], args.batch_size, peak))
            engine.call("free")
        print(f"[{pe}: built and timed in {time.perf_counter() - began:.0f} s]", flush=True)

    device = built[keras_engines[0].name]["device"]
    precision = "mixed bfloat16" if args.mixed_precision else "float32"
    print(f"\nTraining step (forward, backward, Adam), preset {args.preset}, batch "
          f"{args.batch_size}, {precision}, jit_compile={args.jit_compile}, device {device}, "
          f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.steps} steps, engine order "
          f"rotating; load average {os.getloadavg()[0]:.1f}")
    speeds = ", ".join(f"{name} {value:.0f}" for name, value in peaks.items())
    print(f"Matrix-product speed, best float32 {PEAK_SIZE}^3 (GFLOP/s): {speeds}")
    print(f"MFU reference peak: {peak / 1e12:.3f} TFLOP/s ({source})\n")
    header = (f"{'pe':<22}{'engine':<18}{'clips/s':>9}{'rounds':>16}{'x best':>8}"
              f"{'CPU-s/step':>12}{'GFLOP/step':>12}{'MFU':>7}")
    print(header)
    print("-" * len(header))
    worst = None
    for pe in pe_kinds:
        group = [r for r in rows if r["pe"] == pe]
        best = max(r["clips_s"] for r in group if r["engine"] != PEER)
        for r in group:
            r["x_best"] = r["clips_s"] / best
            if r["engine"] != PEER and (worst is None or r["x_best"] < worst["x_best"]):
                worst = r
            label = "transformers AST" if r["engine"] == PEER else r["engine"]
            print(f"{pe if r is group[0] else '':<22}{label:<18}{r['clips_s']:>9.3f}"
                  f"{r['low']:>8.3f}-{r['high']:<7.3f}{r['x_best']:>8.2f}"
                  f"{r['cpu_s']:>12.2f}{r['gflops']:>12.1f}{100 * r['mfu']:>6.1f}%")
    print(f"\nSlowest backend against the fastest on the same PE kind: {worst['engine']} on "
          f"{worst['pe']}, {worst['x_best']:.2f}x (target >= 0.8: "
          f"{'met' if worst['x_best'] >= 0.8 else 'MISSED'}).")
    if peer:
        ours = {r["engine"]: r["clips_s"] for r in rows if r["pe"] == peer_pe}
        print(f"Against transformers' AST (on {peer_pe}'s rounds): " + ", ".join(
            f"{name} {value / ours[PEER]:.2f}x" for name, value in ours.items()
            if name != PEER))
    print(f"Total time {time.perf_counter() - began:.0f} s.")


def _row(pe, engine, built, wall, cpu, batch_size, peak):
    step = float(np.median(wall))
    return {"pe": pe, "engine": engine, "clips_s": batch_size / step,
            "low": batch_size / max(wall), "high": batch_size / min(wall),
            "cpu_s": float(np.median(cpu)), "gflops": built["flops"] / 1e9,
            "mfu": built["flops"] / step / peak}


if __name__ == "__main__":
    main()
