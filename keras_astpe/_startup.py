"""TensorFlow without its start-up noise.

Importing TensorFlow prints C++ log lines before Python can configure anything: "All log
messages before absl::InitializeLog() is called are written to STDERR", oneDNN and CPU
feature notes, "Could not find cuda drivers", and, on a machine without a GPU, an error
line "failed call to cuInit: ... CUDA error" from the first device query, which reads like
a failure although it is harmless. `import_tensorflow` imports TensorFlow and lists its
devices with the process's stderr pointed at a buffer; if that fails, the buffer is
replayed before the exception, so nothing a user needs is lost. `TF_CPP_MIN_LOG_LEVEL`
defaults to 3: TensorFlow's C++ code also logs notes at the error level while it runs
(e.g. "oneDNN supports DT_BOOL only on platforms with AVX-512"); real failures reach
Python as exceptions. Set it to 0 to see everything.
"""

import os
import sys
import tempfile


def import_tensorflow():
    """Imports TensorFlow (once), without the log lines its import and device query print."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
