"""Experiment files: strict parsing of experiments/*.toml and expansion into a grid of runs.

The schema is documented in experiments/README.md. Every error is a ``SpecError`` (a ValueError)
naming the file and the offending key.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tables import (_KEYS, _TABLES_MICRO, _TABLES_TRAIN, DEFAULT_EPOCH_PREFIX, DEFAULT_PREFIX,  # noqa: F401
                     DEFAULT_ORDER, DEFAULT_SUBSET, KINDS, ORDERS, LABEL_RE, PRESETS, PROTOCOLS, RESERVED_PARAMS, SCALES, SpecError,
                     _check_keys, _check_param_value, _err, _int_list, _is_num, _parse_budget, _parse_eval,
                     _pos_int, _pos_num, _scaled, _string)

# ------------------------------------------------------------------------------------ data model


@dataclass(frozen=True)
class SystemSpec:
    label: str
    system: str
    config: str = "default"
    params: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, list] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    kind: str
    protocol: str
    description: str
    presets: tuple[str, ...]
    scale: str
    data_seed: int
    budget: dict[str, Any]
    eval: dict[str, Any]
    seeds: tuple[int, ...]
    threads: tuple[int | str, ...]
    batch_sizes: tuple[int, ...]
    systems: tuple[SystemSpec, ...]
    raw: dict[str, Any]
    budget_scales: dict[str, dict[str, Any]] = field(default_factory=dict)   # [budget.<scale>] merged
    files: dict[str, str] | None = None      # data by path: {"train", "test" (absolute), "name"}
    validation: float | None = None          # [data] validation: fraction of the training set evaluated on
    scale_given: bool = False                # [data] scale written in the file
    eval_scales: dict[str, dict[str, Any]] = field(default_factory=dict)     # [eval.<scale>] merged
    order: str = DEFAULT_ORDER               # [run] order: see execution_order()


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid. ``to_json``/``from_json`` carry it to the child process."""

    experiment: str
    label: str
    system: str
    config: str
    params: dict[str, Any]          # the system's own keys after the sweep (no batch_size/shuffle)
    sweep: dict[str, Any]           # the swept keys and this run's values (for param_<key> columns)
    seed: int
    n_threads: int
    batch_size: int
    protocol: str
    data: dict[str, Any]            # {"preset", "scale", "data_dir", "seed"} or, by path, {"name", "train",
                                    # "test", "preset": None, "scale", "data_dir": None, "seed"}; plus
                                    # "validation" when set
    budget: dict[str, Any]
    eval: dict[str, Any]

    @property
    def shuffle(self) -> bool:
        return self.protocol != "paper"      # the 2019 release reads the training file in order

    def trainer_params(self) -> dict[str, Any]:
        p = dict(self.params)
        p["batch_size"] = self.batch_size
        p["shuffle"] = self.shuffle
        p["config"] = self.config          # the named configuration ("paper", "tuned", ...)
        return p

    def identity(self) -> dict[str, Any]:
        """Everything that defines the run except the experiment name and the display label; the named
        configuration by its values too (``config_values``), so that a changed configuration (say the
        sampled softmax's loss in ``tuned``) gets a new hash and --resume or reuse never hands back a log
        trained under the old one."""
        return {"system": self.system, "config": self.config, "config_values": named_config_values(
                    self.system, self.config), "params": self.params, "seed": self.seed,
                "n_threads": self.n_threads, "batch_size": self.batch_size, "shuffle": self.shuffle,
                "data": self.data, "protocol": self.protocol, "budget": self.budget, "eval": self.eval}

    @property
    def config_hash(self) -> str:
        return config_hash(self.identity())

    @property
    def run_id(self) -> str:
        return f"{self.experiment}/{self.label}/s{self.seed}-{self.config_hash}"

    def log_path(self, results_dir: str | Path = "results") -> Path:
        return run_log_path(results_dir, self.experiment, self.label, self.seed, self.config_hash)

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "RunSpec":
        return cls(**json.loads(s))


@functools.lru_cache(maxsize=None)
def _named_config_json(system: str, config: str) -> str:
    from ..trainers import REGISTRY, get_trainer
    if system not in REGISTRY:
        return "null"
    configs = getattr(get_trainer(system), "CONFIGS", None) or {}
    return canonical_json(configs.get(config))


def named_config_values(system: str, config: str) -> Any:
    """The values of a system's named configuration (its trainer class's ``CONFIGS[config]``; importing
    a baseline's class does not import TensorFlow); None for a system or name without one."""
    return json.loads(_named_config_json(system, config))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:8]


def run_log_path(results_dir: str | Path, experiment: str, label: str, seed: int, hash8: str) -> Path:
    return Path(results_dir) / "raw" / experiment / label / f"s{seed}-{hash8}.jsonl"


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such experiment file")
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.startswith("\ufeff"):
        raise SpecError(f"{path}: the file starts with a UTF-8 byte-order mark (BOM); save it without one")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse_experiment(raw, path)


def _check_per_preset(path, where, what: str, key: str, table: dict, presets) -> None:
    """A table of one value per data set (``what``: "param 'lr'", "sweep key 'lr'"): it needs [data]
    preset, must name exactly those presets, and each value must be a valid param value."""
    if not presets:
        raise _err(path, where, f"{what}: a table of values per data set needs [data] preset (a user's file "
                                "takes one value)")
    if set(table) != set(presets):
        raise _err(path, where, f"{what}: a table of values per data set must name exactly the presets "
                                f"{', '.join(presets)}, got {', '.join(map(str, table))}")
    for pv in table.values():
        _check_param_value(path, where, key, pv)


def _for_preset(values: dict[str, Any], preset: str | None) -> dict[str, Any]:
    """Params (or a sweep member) with each per-data-set table resolved to ``preset``'s value."""
    return {k: (v[preset] if isinstance(v, dict) else v) for k, v in values.items()}


def parse_experiment(raw: dict[str, Any], path: str | Path) -> Experiment:
    path = Path(path)
    if "experiment" not in raw:
        raise _err(path, "top level:", "missing required table [experiment]")
    ex = _check_keys(path, "[experiment]", raw["experiment"], _KEYS["experiment"], {"name"})
    name = _string(path, "[experiment]", "name", ex["name"])
    if name != path.stem:
        raise _err(path, "[experiment]", f"key 'name' is {name!r} but must equal the file stem {path.stem!r}")
    kind = _string(path, "[experiment]", "kind", ex.get("kind", "train"), KINDS)
    protocol = _string(path, "[experiment]", "protocol", ex.get("protocol", "fair"), PROTOCOLS)
    description = _string(path, "[experiment]", "description", ex.get("description", ""))

    allowed_tables = _TABLES_TRAIN if kind == "train" else _TABLES_MICRO
    for t in raw:
        if t not in allowed_tables:
            raise _err(path, "top level:", f"unknown table [{t}] for kind {kind!r} "
                                           f"(allowed: {', '.join(sorted(allowed_tables))})")

    # [data]
    if kind == "train" and "data" not in raw:
        raise _err(path, "top level:", "missing required table [data]")
    data = _check_keys(path, "[data]", raw.get("data", {}), _KEYS["data"])
    presets: tuple[str, ...] = ()
    files = None
    if "preset" in data and ("train" in data or "test" in data):
        raise _err(path, "[data]", "takes either 'preset' or 'train' + 'test' (files by path), not both")
    if "preset" in data:
        pv = data["preset"]
        pl = pv if isinstance(pv, list) else [pv]
        if not pl:
            raise _err(path, "[data]", "key 'preset' must not be an empty list")
        presets = tuple(_string(path, "[data]", "preset", p, PRESETS) for p in pl)
        if len(set(presets)) != len(presets):
            raise _err(path, "[data]", f"key 'preset' has duplicate entries: {pv!r}")
        if "name" in data:
            raise _err(path, "[data]", "key 'name' names a data set given by path ('train' + 'test'); a preset "
                                       "has its own name")
    elif "train" in data or "test" in data:
        for k in ("train", "test"):
            if k not in data:
                raise _err(path, "[data]", f"missing key {k!r} (a data set by path needs both 'train' and 'test')")
            _string(path, "[data]", k, data[k])
        tr, te = (Path(data[k]).expanduser() for k in ("train", "test"))
        tr, te = (p if p.is_absolute() else (path.parent / p) for p in (tr, te))
        dname = _string(path, "[data]", "name", data.get("name", tr.resolve().parent.name or tr.stem))
        if not dname or not LABEL_RE.match(dname):
            raise _err(path, "[data]", f"key 'name' may only contain letters, digits and _ . + -, got {dname!r}")
        files = {"train": str(tr.resolve()), "test": str(te.resolve()), "name": dname}
    elif "data" in raw:
        raise _err(path, "[data]", "needs 'preset' or 'train' + 'test' (files by path)")
    validation = None
    if "validation" in data:
        v = data["validation"]
        if not _is_num(v) or not (0 < v <= 0.5):
            raise _err(path, "[data]", f"key 'validation' must be a fraction in (0, 0.5], got {v!r}")
        validation = float(v)
    scale = _string(path, "[data]", "scale", data.get("scale", "small"), SCALES)
    data_seed = _pos_int(path, "[data]", "seed", data.get("seed", 0), 0)

    # [run]
    run_t = raw.get("run", {})
    if kind == "train" and "run" not in raw:
        raise _err(path, "top level:", "missing required table [run]")
    run_t = _check_keys(path, "[run]", run_t, _KEYS["run"], {"seeds"} if kind == "train" else set())
    seeds = _int_list(path, "[run]", "seeds", run_t["seeds"], 0) if "seeds" in run_t else (0,)
    threads = _int_list(path, "[run]", "threads", run_t.get("threads", [1]), 1, allow_max=True)
    batch_sizes = _int_list(path, "[run]", "batch_sizes", run_t.get("batch_sizes", [128]), 1)
    order = _string(path, "[run]", "order", run_t.get("order", DEFAULT_ORDER), ORDERS)

    budget: dict[str, Any] = {}
    evalc: dict[str, Any] = {}
    budget_scales: dict[str, dict[str, Any]] = {}
    eval_scales: dict[str, dict[str, Any]] = {}
    systems: list[SystemSpec] = []
    if kind == "train":
        # [budget] and [eval], each with optional per-scale override subtables ([budget.paper], ...)
        names = frozenset([files["name"]]) if files else frozenset()
        for tbl in ("budget", "eval"):
            if tbl not in raw:
                raise _err(path, "top level:", f"missing required table [{tbl}]")
        budget, budget_scales = _scaled(path, "budget", raw["budget"], lambda where, t: _parse_budget(path, where, t, names))
        evalc, eval_scales = _scaled(path, "eval", raw["eval"], lambda where, t: _parse_eval(path, where, t, protocol))

        # [[systems]]
        if "systems" not in raw:
            raise _err(path, "top level:", "missing required array [[systems]]")
        if not isinstance(raw["systems"], list) or not raw["systems"]:
            raise _err(path, "[[systems]]", "must be a non-empty array of tables")
        seen: set[str] = set()
        for i, s in enumerate(raw["systems"]):
            where = f"[[systems]] #{i + 1}"
            _check_keys(path, where, s, _KEYS["systems"], {"label", "system"})
            label = _string(path, where, "label", s["label"])
            where = f"[[systems]] {label!r}"
            if not LABEL_RE.match(label):
                raise _err(path, where, f"key 'label' may only contain letters, digits and _ . + -, got {label!r}")
            if label in seen:
                raise _err(path, where, f"key 'label' {label!r} is used twice")
            seen.add(label)
            system = _string(path, where, "system", s["system"])
            from ..trainers import REGISTRY
            if system not in REGISTRY:
                raise _err(path, where, f"key 'system' {system!r} is not a registered system "
                                        f"(known: {', '.join(sorted(REGISTRY))})")
            config = _string(path, where, "config", s.get("config", "default"))
            params = s.get("params", {})
            if not isinstance(params, dict):
                raise _err(path, where, f"key 'params' must be a table, got {type(params).__name__}")
            for k, v in params.items():
                if k in RESERVED_PARAMS:
                    raise _err(path, where, f"param {k!r} is set by the runner ([run] batch_sizes / protocol), "
                                            "not in params")
                if isinstance(v, dict):
                    # one value per data set (a tuned learning rate differs between data sets)
                    _check_per_preset(path, where, f"param {k!r}", k, v, presets)
                    continue
                _check_param_value(path, where, k, v)
            sweep = s.get("sweep", {})
            if not isinstance(sweep, dict):
                raise _err(path, where, f"key 'sweep' must be a table, got {type(sweep).__name__}")
            for k, v in sweep.items():
                if k in RESERVED_PARAMS:
                    raise _err(path, where, f"sweep key {k!r} is set by the runner; use [run] batch_sizes")
                if not isinstance(v, list) or not v:
                    raise _err(path, where, f"sweep key {k!r} must be a non-empty list, got {v!r}")
                for sv in v:
                    if isinstance(sv, dict):      # one value per data set, as in params
                        _check_per_preset(path, where, f"sweep key {k!r}", k, sv, presets)
                    else:
                        _check_param_value(path, where, k, sv)
            systems.append(SystemSpec(label, system, config, dict(params), {k: list(v) for k, v in sweep.items()}))

    return Experiment(name=name, path=path, kind=kind, protocol=protocol, description=description,
                      presets=presets, scale=scale, data_seed=data_seed, budget=budget, eval=evalc,
                      seeds=seeds, threads=threads, batch_sizes=batch_sizes, systems=tuple(systems), raw=raw,
                      budget_scales=budget_scales, eval_scales=eval_scales, files=files, validation=validation,
                      scale_given="scale" in data, order=order)


# ------------------------------------------------------------------------------------- expansion


def resolve_threads(t: int | str) -> int:
    if t == "max":
        return int(os.cpu_count() or 1)
    return int(t)


def _budget_for(exp: "Experiment", preset: str, scale: str) -> dict[str, Any]:
    """The run's budget: the [budget.<scale>] overrides when the file has them for this scale, and
    a per-preset target table resolved to this preset's number (no target when the table does not
    name the preset)."""
    b = dict(exp.budget_scales.get(scale, exp.budget))
    t = b.get("target_p_at_1")
    if isinstance(t, dict):
        if preset in t:
            b["target_p_at_1"] = t[preset]
        else:
            del b["target_p_at_1"]
    return b


def expand(exp: Experiment, *, scale: str | None = None, data_dir: str | Path | None = None,
           seeds: list[int] | None = None, threads: int | None = None,
           labels: list[str] | None = None) -> list[RunSpec]:
    """The grid: systems x sweep x presets x seeds x threads x batch_sizes, in that nesting order.

    Overrides (the CLI's): ``scale`` replaces [data] scale, ``data_dir`` replaces the synthetic set by
    real files, ``seeds`` replaces [run] seeds, ``threads`` replaces [run] threads, ``labels`` keeps
    only those systems (unknown labels are an error).
    """
    if exp.kind != "train":
        raise ValueError(f"{exp.path}: expand() is for kind 'train', this file is kind {exp.kind!r}")
    if scale is not None and scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if seeds is not None:
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise ValueError(f"seeds must be integers >= 0, got {s!r}")
    systems = list(exp.systems)
    if labels:
        known = {s.label for s in systems}
        bad = [l for l in labels if l not in known]
        if bad:
            raise ValueError(f"{exp.path}: no system labelled {', '.join(map(repr, bad))} "
                             f"(labels: {', '.join(sorted(known))})")
        systems = [s for s in systems if s.label in labels]
    sc = scale or exp.scale
    ddir = str(Path(data_dir).resolve()) if data_dir and not exp.files else None
    eff_scale = "paper" if ddir else sc          # real files are paper scale for per-scale budgets
    if exp.files:
        # a user's files: the [budget.<scale>]/[eval.<scale>] overrides only for a scale the user named
        # ([data] scale or --scale), else the base tables; never the paper ones by default
        sc = scale or (exp.scale if exp.scale_given else None)
        eff_scale = sc
    thread_list = [threads] if threads is not None else [resolve_threads(t) for t in exp.threads]
    thread_list = list(dict.fromkeys(thread_list))
    seed_list = list(dict.fromkeys(seeds)) if seeds is not None else list(exp.seeds)
    runs: list[RunSpec] = []
    for s in systems:
        keys = list(s.sweep)
        for values in itertools.product(*(s.sweep[k] for k in keys)):
            sw = dict(zip(keys, values))
            for preset in (exp.presets or (None,)):
                sw_run = _for_preset(sw, preset)
                params = {**_for_preset(s.params, preset), **sw_run}
                if exp.files:
                    data = {"preset": None, "name": exp.files["name"], "train": exp.files["train"],
                            "test": exp.files["test"], "scale": sc, "data_dir": None, "seed": exp.data_seed}
                else:
                    data = {"preset": preset, "scale": None if ddir else sc, "data_dir": ddir, "seed": exp.data_seed}
                if exp.validation is not None:
                    data["validation"] = exp.validation
                for seed in seed_list:
                    for nt in thread_list:
                        for bs in exp.batch_sizes:
                            runs.append(RunSpec(experiment=exp.name, label=s.label, system=s.system,
                                                config=s.config, params=params, sweep=sw_run, seed=seed,
                                                n_threads=nt, batch_size=bs, protocol=exp.protocol,
                                                data=data, budget=_budget_for(exp, preset or exp.files["name"], eff_scale),
                                                eval=dict(exp.eval_scales.get(eff_scale, exp.eval))))
    seen: dict[Path, RunSpec] = {}
    for r in runs:
        p = r.log_path()
        if p in seen:
            raise ValueError(f"{exp.path}: two runs map to the same log {p} (duplicate sweep values?)")
        seen[p] = r
    return runs


def execution_order(runs: list[RunSpec], order: str = DEFAULT_ORDER) -> list[int]:
    """The order to execute ``runs`` (spec.expand's grid order) in, as indices into ``runs``.

    "grouped": grid order (every seed of one system back to back). "interleaved" (the default): round
    by round over the seeds, each round the whole grid at one seed (seed 0 of every system and data
    set, then seed 1, ...). A slow drift of the machine (another tenant, the memory bandwidth of a
    shared VM, which moved one system's step rate by 1.5x within an hour on the reference's VM) then
    falls on every system alike and shows in each system's seed spread, instead of landing on
    whichever system ran in that stretch. The runs, their ids and their results are the same in
    either order; only when each one runs changes."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    idx = list(range(len(runs)))
    if order == "grouped":
        return idx
    rank: dict[int, int] = {}
    for r in runs:
        rank.setdefault(r.seed, len(rank))
    return sorted(idx, key=lambda i: rank[runs[i].seed])          # stable: grid order within a round
