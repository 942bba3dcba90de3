"""TensorFlow runtime set-up for the baselines: quiet import, thread pools, visible devices.

Nothing here imports TensorFlow at module import time; ``import_tf`` does, once, inside ``setup``.
TensorFlow writes start-up lines to file descriptor 2 before absl logging is initialised (ignoring
TF_CPP_MIN_LOG_LEVEL); ``quiet_stderr`` captures them and writes back the lines that are not known
noise. ``SLIDEBENCH_TF_VERBOSE=1`` turns the capture off.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from . import DeviceUnavailable

# where a Linux GPU driver shows itself (NVIDIA's control node and driver folder; AMD ROCm's kfd): with
# none of them TensorFlow cannot see a GPU, so a GPU run is skipped without importing it
GPU_NODES = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd")

_NOISE_PREFIXES = ("I0000", "WARNING: All log messages before absl::InitializeLog()", "To enable the following instructions")
_NOISE_SUBSTRINGS = ("rebuild TensorFlow with the appropriate compiler flags", "oneDNN custom operations are on",
                     "XLA service", "StreamExecutor device", "Compiled cluster using XLA",
                     "disabling MLIR crash reproducer", "cpu_feature_guard")


@contextlib.contextmanager
def quiet_stderr():
    """Capture file descriptor 2 (TensorFlow's C++ logging writes there before absl is initialised and
    ignores TF_CPP_MIN_LOG_LEVEL for those lines); afterwards re-emit every captured line that is not
    known start-up/compile noise, so real warnings and errors still reach the user."""
    if os.environ.get("SLIDEBENCH_TF_VERBOSE", "") not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no real fd 2 (e.g. some embedded interpreters): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            keep = [ln for ln in text.splitlines()
                    if ln.strip() and not ln.startswith(_NOISE_PREFIXES) and not any(s in ln for s in _NOISE_SUBSTRINGS)]
            if keep:
                sys.stderr.write("\n".join(keep) + "\n")


_TF = None


def import_tf():
    """Import TensorFlow quietly (once). Only baseline setup() calls this."""
    global _TF
    if _TF is not None:
        return _TF
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():
        import tensorflow as tf
        try:
            import absl.logging
            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
        tf.get_logger().setLevel("ERROR")
        tf.autograph.set_verbosity(0)
    _TF = tf
    return tf


def configure_tf(n_threads: int, inter_op_threads: int, device: str):
    """Set thread pools and visible devices before the first op; returns (tf, device_string).

    Raises RuntimeError when TensorFlow was already initialised in this process with other thread
    settings (thread pools are per process; run each configuration in its own process), and
    DeviceUnavailable when device='gpu' and no GPU is visible.
    """
    if device == "gpu" and sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_NODES):
        raise DeviceUnavailable(      # decided before TensorFlow's ~5-s import: no GPU driver here at all
            f"device='gpu' was asked but this machine has no GPU device node ({', '.join(GPU_NODES)}); "
            "TensorFlow was not loaded; the run is skipped, not moved to the CPU")
    tf = import_tf()
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise DeviceUnavailable(
            "device='gpu' was asked but TensorFlow sees no GPU "
            f"(tensorflow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}); "
            "the run is skipped, not moved to the CPU")
    for what, want, getter, setter in (
            ("intra-op", n_threads, tf.config.threading.get_intra_op_parallelism_threads,
             tf.config.threading.set_intra_op_parallelism_threads),
            ("inter-op", inter_op_threads, tf.config.threading.get_inter_op_parallelism_threads,
             tf.config.threading.set_inter_op_parallelism_threads)):
        try:
            setter(int(want))
        except RuntimeError as e:
            if getter() != int(want):
                raise RuntimeError(
                    f"TensorFlow was already initialised in this process with {what} threads = {getter()}, "
                    f"but this run asks for {want}; thread pools are fixed per process, so run it in a fresh "
                    f"process (the runner does) ({e})") from None
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as e:
            if tf.config.get_visible_devices("GPU"):
                raise RuntimeError(f"cannot hide the GPUs for a CPU run: TensorFlow is already initialised ({e})") from None
    return tf, ("/GPU:0" if device == "gpu" else "/CPU:0")



def keras_version() -> str:
    try:
        import keras
        return keras.__version__
    except Exception:   # keras ships with TF 2.16+; report its absence rather than fail describe()
        return "unavailable"
