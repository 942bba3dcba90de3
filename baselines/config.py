"""Configuration of the TensorFlow baselines: the keys every baseline accepts, the resolution of a
named configuration plus overrides, and their validation. Pure Python (no TensorFlow).

The named configurations themselves live beside each trainer (``full_softmax.CONFIGS``,
``sampled_softmax.CONFIGS``); docs/baselines.md has the full table.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Keys the runner may put in params beside a system's own keys.
RUNNER_KEYS = {"batch_size", "shuffle", "config"}

#: Every parameter shared by both baselines, with its meaning (docs/baselines.md has the full table).
COMMON_KEYS = {
    "device": "'cpu' (default) or 'gpu' (DeviceUnavailable when none is visible)",
    "hidden": "hidden ReLU layer sizes, e.g. [128]",
    "optimizer": "'adam' or 'sgd'",
    "lr": "learning rate", "beta1": "Adam beta1", "beta2": "Adam beta2", "eps": "Adam epsilon",
    "init": "'release' (truncated normal, std 2/sqrt(fan_in+fan_out), biases 0) or 'normal' (N(0, init_std), biases 0)",
    "init_std": "std of the 'normal' init",
    "input_path": "'sparse_matmul' or 'gather'",
    "optimizer_impl": "'keras' (Keras 3 optimizers, dense Adam state) or 'rowsparse' (lazy Adam on touched rows)",
    "xla": "compile the training step with XLA (jit_compile=True); needs input_path='gather', optimizer_impl='rowsparse'",
    "xla_update": "compile only the row-sparse optimiser update with XLA (gradients padded to fixed shapes); for "
                  "steps whose loss XLA cannot compile (sampled softmax); needs optimizer_impl='rowsparse'",
    "inter_op_threads": "TensorFlow inter-op pool size (None: 1, the documented default)",
    "predict_batch": "rows per top-k batch at evaluation",
}


def resolve_params(system: str, configs: dict[str, dict[str, Any]], params: dict[str, Any],
                   extra_keys: dict[str, str]) -> dict[str, Any]:
    """Named configuration (params["config"]; absent or "default" means "tuned") + overrides, validated.

    Unknown keys raise ValueError naming the key. Returns a new dict with every key explicit.
    """
    p = merge_config(system, configs, params, set(COMMON_KEYS) | set(extra_keys))
    if "batch_size" not in p:
        raise ValueError(f"{system}: params must contain 'batch_size' (the runner puts it there)")
    validate_common(system, p)
    return p


def merge_config(system: str, configs: dict[str, dict[str, Any]], params: dict[str, Any],
                 keys: set[str]) -> dict[str, Any]:
    """params["config"]'s named configuration (absent or "default": "tuned") with params on top, as a new
    dict; unknown configs and keys (beyond ``keys`` and the runner's) raise ValueError naming them."""
    if not isinstance(params, dict):
        raise ValueError(f"{system}: params must be a dict, got {type(params).__name__}")
    name = params.get("config", "tuned")
    if name == "default":       # an experiment file that names no config gets the strongest honest one
        name = "tuned"
    if name not in configs:
        raise ValueError(f"{system}: unknown config {name!r}; known configs: {', '.join(sorted(configs))}")
    known = set(keys) | RUNNER_KEYS
    for key in params:
        if key not in known:
            raise ValueError(f"{system}: unknown parameter {key!r}; known parameters: {', '.join(sorted(known))}")
    p = dict(configs[name])
    p.update(params)
    p["config"] = name
    p.setdefault("shuffle", True)
    return p


def check(cond: bool, system: str, key: str, value: Any, what: str) -> None:
    if not cond:
        raise ValueError(f"{system}: parameter {key!r} = {value!r} is invalid: {what}")


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_setup_args(system: str, seed: Any, n_threads: Any) -> None:
    """A baseline's ``setup(seed=, n_threads=)``: ValueError unless seed >= 0 and n_threads >= 1 are ints."""
    if not is_int(n_threads) or n_threads < 1:
        raise ValueError(f"{system}: n_threads must be an int >= 1, got {n_threads!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"{system}: seed must be an int >= 0, got {seed!r}")


def require_setup(system: str, ready: bool, call: str) -> None:
    """RuntimeError for a trainer call made before ``setup``."""
    if not ready:
        raise RuntimeError(f"{system}: call setup() before {call}()")


def check_int(system: str, name: str, value: Any, lo: int, hi: int | None = None, what: str = "") -> None:
    """ValueError unless ``value`` (``n_steps``, ``k``) is an int in [lo, hi]; ``what`` words the range."""
    if not is_int(value) or value < lo or (hi is not None and value > hi):
        raise ValueError(f"{system}: {name} must be an int {what or f'>= {lo}'}, got {value!r}")


def validate_model(system: str, p: dict[str, Any]) -> None:
    """The keys every dense baseline shares (TensorFlow's and PyTorch's): runner keys, device, the
    network, Adam's constants, the init, predict_batch."""
    if "batch_size" in p:
        check(is_int(p["batch_size"]) and p["batch_size"] >= 1, system, "batch_size", p["batch_size"],
              "must be an int >= 1")
    check(isinstance(p["shuffle"], bool), system, "shuffle", p["shuffle"], "must be true or false")
    check(p["device"] in ("cpu", "gpu"), system, "device", p["device"], "must be 'cpu' or 'gpu'")
    h = p["hidden"]
    check(isinstance(h, (list, tuple)) and len(h) >= 1 and all(is_int(v) and v >= 1 for v in h),
           system, "hidden", h, "must be a non-empty list of ints >= 1")
    for key in ("lr", "eps"):
        check(isinstance(p[key], (int, float)) and not isinstance(p[key], bool) and p[key] > 0 and math.isfinite(p[key]),
               system, key, p[key], "must be a finite number > 0")
    for key in ("beta1", "beta2"):
        check(isinstance(p[key], (int, float)) and 0 <= p[key] < 1, system, key, p[key], "must be in [0, 1)")
    check(p["init"] in ("release", "normal"), system, "init", p["init"], "must be 'release' or 'normal'")
    check(isinstance(p["init_std"], (int, float)) and p["init_std"] > 0, system, "init_std", p["init_std"], "must be > 0")
    check(is_int(p["predict_batch"]) and p["predict_batch"] >= 1, system, "predict_batch", p["predict_batch"],
          "must be an int >= 1")


def validate_common(system: str, p: dict[str, Any]) -> None:
    validate_model(system, p)
    check(p["optimizer"] in ("adam", "sgd"), system, "optimizer", p["optimizer"], "must be 'adam' or 'sgd'")
    check(p["input_path"] in ("sparse_matmul", "gather"), system, "input_path", p["input_path"],
           "must be 'sparse_matmul' or 'gather'")
    check(p["optimizer_impl"] in ("keras", "rowsparse"), system, "optimizer_impl", p["optimizer_impl"],
           "must be 'keras' or 'rowsparse'")
    check(isinstance(p["xla"], bool), system, "xla", p["xla"], "must be true or false")
    if p["xla"]:
        check(p["input_path"] == "gather" and p["optimizer_impl"] == "rowsparse", system, "xla", p["xla"],
               "XLA needs input_path='gather' and optimizer_impl='rowsparse' (SparseTensorDenseMatMul has no "
               "XLA kernel and the Keras optimiser is not compiled with the step)")
    check(isinstance(p["xla_update"], bool), system, "xla_update", p["xla_update"], "must be true or false")
    if p["xla_update"]:
        check(p["optimizer_impl"] == "rowsparse", system, "xla_update", p["xla_update"],
               "needs optimizer_impl='rowsparse' (the Keras optimiser is not compiled)")
    t = p["inter_op_threads"]
    check(t is None or (is_int(t) and t >= 1), system, "inter_op_threads", t, "must be null/None or an int >= 1")



def thread_settings(p: dict[str, Any], n_threads: int) -> tuple[int, int]:
    """(intra-op, inter-op) TensorFlow pool sizes of a run: intra-op = the run's thread count; inter-op =
    ``inter_op_threads`` or 1 when unset (the documented default: one step's ops run one at a time, each
    parallelised inside over the run's threads, so the two pools never compete for the same cores)."""
    inter = p.get("inter_op_threads")
    return int(n_threads), (1 if inter is None else int(inter))
