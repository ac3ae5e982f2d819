"""Exports run under the TensorFlow backend: from JAX or PyTorch, in a child process with
`KERAS_BACKEND=tensorflow`, on the model's `.keras` file (which is backend-agnostic)."""

import importlib
import json
import os
import subprocess
import sys
import tempfile

from keras_astpe_startup import without_jax_xla_cpu_flags

# The errors an export raises that the parent raises again as they are.
_ERRORS = {error.__name__: error for error in (
    ValueError, TypeError, FileExistsError, FileNotFoundError, NotADirectoryError)}


def in_tensorflow_process(export, model, path, options):
    """`export(model_path, path, **options)` (a module-level function) in a child process
    under the TensorFlow backend; returns `path`, or raises the child's error here."""
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, (str, os.PathLike)):
            model_path = os.fspath(model)
        else:
            model_path = os.path.join(tmp, "model.keras")
            model.save(model_path)
        request = json.dumps({"export": f"{export.__module__}:{export.__name__}",
                              "model": model_path, "path": os.fspath(path),
                              "options": options})
        child = ("import sys; from keras_astpe.serving.tensorflow_process import _child; "
                 "_child(sys.argv[1])")
        env = dict(without_jax_xla_cpu_flags(os.environ), KERAS_BACKEND="tensorflow")
        result = subprocess.run([sys.executable, "-c", child, request], env=env,
                                capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        try:
            error = json.loads(lines[-1])
        except ValueError:
            raise RuntimeError(f"the export under the TensorFlow backend failed (exit "
                               f"{result.returncode}): {' | '.join(lines[-5:])}") from None
        raise _ERRORS.get(error["type"], RuntimeError)(error["message"])
    return path


def _child(request):
    """Entry point of `in_tensorflow_process`: the last line of stderr is a JSON error."""
    request = json.loads(request)
    module, name = request["export"].split(":")
    export = getattr(importlib.import_module(module), name)
    try:
        export(request["model"], request["path"], **request["options"])
    except Exception as error:  # reported to the parent, which raises it there
        print(json.dumps({"type": type(error).__name__, "message": str(error)}),
              file=sys.stderr)
        sys.exit(1)
