"""The experiment-file schema's building blocks: names, allowed keys, SpecError, the value checks and the
[budget]/[eval] table parsers (with per-scale overrides). ``spec.py`` assembles them into
``parse_experiment``; experiments/README.md documents the schema."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..contract import RUNNER_KEYS as RESERVED_PARAMS  # noqa: F401  (one list, in the contract)

PRESETS = ("delicious", "amazon")
SCALES = ("tiny", "small", "medium", "paper")
PROTOCOLS = ("fair", "paper")
ORDERS = ("interleaved", "grouped")   # [run] order: the order runs execute in (spec.execution_order)
DEFAULT_ORDER = ORDERS[0]
KINDS = ("train", "micro")
LABEL_RE = re.compile(r"^[A-Za-z0-9_.+\-]+$")

DEFAULT_SUBSET = 2000
DEFAULT_PREFIX = 2560         # the 2019 release: 20 test batches of 128
DEFAULT_EPOCH_PREFIX = 6400   # the 2019 release: 50 test batches of 128 at each epoch end

_TABLES_TRAIN = {"experiment", "data", "budget", "eval", "run", "systems"}
_TABLES_MICRO = {"experiment", "data", "run", "micro"}
_KEYS = {
    "experiment": {"name", "description", "kind", "protocol"},
    "data": {"preset", "scale", "seed", "train", "test", "name", "validation"},
    "budget": {"train_seconds", "epochs", "steps", "target_p_at_1", "stop_at_target"},
    "eval": {"every_seconds", "every_steps", "subset_size", "prefix_size", "epoch_prefix_size", "ratio",
             "first_seconds", "first_steps", "train_subset_size"},
    "run": {"seeds", "threads", "batch_sizes", "order"},
    "systems": {"label", "system", "config", "params", "sweep"},
}


class SpecError(ValueError):
    """A malformed experiment file; the message names the file and the key."""



# --------------------------------------------------------------------------------------- parsing


def _err(path: Path, where: str, msg: str) -> SpecError:
    return SpecError(f"{path}: {where} {msg}")


def _check_keys(path: Path, where: str, table: Any, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(table, dict):
        raise _err(path, where, f"must be a table, got {type(table).__name__}")
    for k in table:
        if k not in allowed:
            raise _err(path, where, f"unknown key {k!r} (allowed: {', '.join(sorted(allowed))})")
    for k in sorted(required):
        if k not in table:
            raise _err(path, where, f"missing required key {k!r}")
    return table


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pos_num(path, where, key, v) -> float | int:
    if not _is_num(v) or not v > 0 or v != v or v == float("inf"):
        raise _err(path, where, f"key {key!r} must be a positive finite number, got {v!r}")
    return v


def _pos_int(path, where, key, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise _err(path, where, f"key {key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _string(path, where, key, v, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise _err(path, where, f"key {key!r} must be a string, got {type(v).__name__} {v!r}")
    if choices is not None and v not in choices:
        raise _err(path, where, f"key {key!r} must be one of {', '.join(choices)}, got {v!r}")
    return v


def _int_list(path, where, key, v, minimum: int, allow_max: bool = False) -> tuple:
    if not isinstance(v, list) or not v:
        raise _err(path, where, f"key {key!r} must be a non-empty list, got {v!r}")
    out = []
    for x in v:
        if allow_max and x == "max":
            out.append("max")
            continue
        _pos_int(path, where, f"{key}[]", x, minimum)
        out.append(x)
    if len(set(out)) != len(out):
        raise _err(path, where, f"key {key!r} has duplicate entries: {v!r}")
    return tuple(out)


def _check_param_value(path, where, key, v) -> None:
    """Params must be JSON-representable scalars or lists of them (they go into the config hash)."""
    if isinstance(v, dict):
        raise _err(path, where, f"param {key!r} must be a scalar or a list, got a table")
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        raise _err(path, where, f"param {key!r} must be finite, got {v!r}")
    if isinstance(v, list):
        for x in v:
            _check_param_value(path, where, key, x)


def _scaled(path, name: str, table: Any, parse) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Parse a [budget]/[eval] table and its per-scale overrides: a subtable named after a scale
    ([budget.paper]) replaces the keys it names for runs at that scale (a real data set via
    --data-dir counts as scale "paper"). Returns (base, {scale: merged})."""
    if not isinstance(table, dict):
        raise _err(path, f"[{name}]", f"must be a table, got {type(table).__name__}")
    base = {k: v for k, v in table.items() if k not in SCALES}
    out_base = parse(f"[{name}]", base)
    per_scale = {}
    for sc in SCALES:
        if sc in table:
            if not isinstance(table[sc], dict):
                raise _err(path, f"[{name}.{sc}]", f"must be a table, got {type(table[sc]).__name__}")
            per_scale[sc] = parse(f"[{name}.{sc}]", {**base, **table[sc]})
    return out_base, per_scale


def _parse_budget(path, where: str, raw_b: dict[str, Any], names: frozenset = frozenset()) -> dict[str, Any]:
    budget: dict[str, Any] = {}
    b = _check_keys(path, where, raw_b, _KEYS["budget"])
    if not any(k in b for k in ("train_seconds", "epochs", "steps")):
        raise _err(path, where, "needs at least one of 'train_seconds', 'epochs', 'steps'")
    if "train_seconds" in b:
        budget["train_seconds"] = _pos_num(path, where, "train_seconds", b["train_seconds"])
    if "epochs" in b:
        budget["epochs"] = _pos_num(path, where, "epochs", b["epochs"])
    if "steps" in b:
        budget["steps"] = _pos_int(path, where, "steps", b["steps"])
    if "target_p_at_1" in b:
        # a number, or a table {preset = number} (presets differ in how hard they are: the
        # majority-label P@1 is 0.06 on the amazon look-alike and 0.15 on delicious)
        t = b["target_p_at_1"]
        table = t if isinstance(t, dict) else {None: t}
        for k, v in table.items():
            key = "target_p_at_1" if k is None else f"target_p_at_1.{k}"
            if k is not None and k not in PRESETS and k not in names:
                raise _err(path, where, f"key '{key}': unknown data set {k!r} (known: "
                                        f"{', '.join(PRESETS + tuple(sorted(names)))})")
            if not _is_num(v) or not (0 < v <= 1):
                raise _err(path, where, f"key '{key}' must be a number in (0, 1], got {v!r}")
        budget["target_p_at_1"] = dict(t) if isinstance(t, dict) else t
    st = b.get("stop_at_target", True)
    if not isinstance(st, bool):
        raise _err(path, where, f"key 'stop_at_target' must be true or false, got {st!r}")
    budget["stop_at_target"] = st
    return budget


def _parse_eval(path, where: str, raw_e: dict[str, Any], protocol: str) -> dict[str, Any]:
    evalc: dict[str, Any] = {}
    e = _check_keys(path, where, raw_e, _KEYS["eval"])
    if ("every_seconds" in e) == ("every_steps" in e):
        raise _err(path, where, "needs exactly one of 'every_seconds' and 'every_steps'")
    if "every_seconds" in e:
        if protocol == "paper":
            raise _err(path, where, "key 'every_seconds' is not allowed with protocol 'paper' "
                                    "(the 2019 release evaluates every N batches: use 'every_steps')")
        evalc["every_seconds"] = _pos_num(path, where, "every_seconds", e["every_seconds"])
    else:
        evalc["every_steps"] = _pos_int(path, where, "every_steps", e["every_steps"])
    if "ratio" in e:
        r = e["ratio"]
        if not _is_num(r) or not (r > 1) or r == float("inf"):
            raise _err(path, where, f"key 'ratio' must be a number > 1, got {r!r}")
        first_key = "first_seconds" if "every_seconds" in e else "first_steps"
        other = "first_steps" if first_key == "first_seconds" else "first_seconds"
        if other in e:
            raise _err(path, where, f"key {other!r} does not go with "
                                    f"{'every_seconds' if first_key == 'first_seconds' else 'every_steps'}; use {first_key!r}")
        if first_key not in e:
            raise _err(path, where, f"key 'ratio' needs {first_key!r} (the first evaluation point)")
        evalc["ratio"] = float(r)
        evalc[first_key] = (_pos_num if first_key == "first_seconds" else _pos_int)(path, where, first_key, e[first_key])
    else:
        for k in ("first_seconds", "first_steps"):
            if k in e:
                raise _err(path, where, f"key {k!r} only goes with 'ratio' (log-spaced evaluations)")
    if protocol == "fair":
        for k in ("prefix_size", "epoch_prefix_size"):
            if k in e:
                raise _err(path, where, f"key {k!r} applies only to protocol 'paper'")
        evalc["subset_size"] = _pos_int(path, where, "subset_size", e.get("subset_size", DEFAULT_SUBSET))
    else:
        if "subset_size" in e:
            raise _err(path, where, "key 'subset_size' applies only to protocol 'fair' "
                                    "(the paper protocol evaluates on prefixes: 'prefix_size')")
        evalc["prefix_size"] = _pos_int(path, where, "prefix_size", e.get("prefix_size", DEFAULT_PREFIX))
        evalc["epoch_prefix_size"] = _pos_int(path, where, "epoch_prefix_size",
                                              e.get("epoch_prefix_size", DEFAULT_EPOCH_PREFIX))
    if "train_subset_size" in e:        # only when asked: an absent key keeps run identities unchanged
        evalc["train_subset_size"] = _pos_int(path, where, "train_subset_size", e["train_subset_size"])
    return evalc


