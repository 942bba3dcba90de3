"""Experiment files: strict parsing (errors name the key and the file), grid expansion, config hash."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from slidebench.harness.spec import SpecError, expand, load_experiment, parse_experiment

GOOD = """
[experiment]
name = "{name}"
description = "test"
protocol = "fair"

[data]
preset = ["amazon", "delicious"]
scale = "tiny"

[budget]
train_seconds = 10
target_p_at_1 = 0.3

[eval]
every_seconds = 2
subset_size = 100

[run]
seeds = [0, 1]
threads = [1, "max"]
batch_sizes = [64, 128]

[[systems]]
label = "SLIDE"
system = "slide"
params = {{ sampler = "vanilla", K = 6, L = 50 }}
sweep = {{ K = [4, 8], L = [10, 20, 30] }}

[[systems]]
label = "TF-CPU"
system = "tf_full_softmax"
config = "paper"
"""


def write(tmp_path: Path, text: str, name: str = "exp") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(text.replace("{name}", name) if "{name}" in text else text)
    return p


def good(tmp_path, name="exp") -> Path:
    return write(tmp_path, GOOD.replace("{{", "{").replace("}}", "}").replace("{name}", name), name)


def test_valid_file_expands_into_full_grid(tmp_path):
    exp = load_experiment(good(tmp_path))
    runs = expand(exp)
    n_threads = len({1, os.cpu_count()})
    # SLIDE: 2x3 sweep, TF: 1; x 2 presets x 2 seeds x threads x 2 batch sizes
    assert len(runs) == (6 + 1) * 2 * 2 * n_threads * 2
    slide = [r for r in runs if r.label == "SLIDE"]
    assert {(r.params["K"], r.params["L"]) for r in slide} == {(k, l) for k in (4, 8) for l in (10, 20, 30)}
    assert all(r.params["sampler"] == "vanilla" for r in slide)
    assert {r.n_threads for r in runs} == {1, os.cpu_count()}
    assert all(r.trainer_params()["batch_size"] == r.batch_size and r.trainer_params()["shuffle"] for r in runs)
    assert len({r.log_path() for r in runs}) == len(runs)
    p = runs[0].log_path("res")
    assert p == Path("res/raw/exp") / runs[0].label / f"s{runs[0].seed}-{runs[0].config_hash}.jsonl"


def test_overrides_filter_and_replace(tmp_path):
    exp = load_experiment(good(tmp_path))
    runs = expand(exp, scale="small", seeds=[7], threads=3, labels=["TF-CPU"])
    assert len(runs) == 2 * 1 * 1 * 2
    assert {r.seed for r in runs} == {7} and {r.n_threads for r in runs} == {3}
    assert {r.data["scale"] for r in runs} == {"small"}
    with pytest.raises(ValueError, match="NOPE"):
        expand(exp, labels=["NOPE"])
    real = expand(exp, data_dir=tmp_path, labels=["TF-CPU"])
    assert all(r.data["scale"] is None and r.data["data_dir"] == str(tmp_path.resolve()) for r in real)


def test_config_hash_stable_and_sensitive(tmp_path):
    a = expand(load_experiment(good(tmp_path, "exp")))
    b = expand(load_experiment(good(tmp_path, "other")))
    # same configuration under another experiment name -> same hash (reuse across experiments)
    assert [r.config_hash for r in a] == [r.config_hash for r in b]
    # pinned value: the hash is a pure function of the canonical identity (guards accidental changes)
    r0 = a[0]
    assert r0.identity()["params"] == {"sampler": "vanilla", "K": 4, "L": 10}
    assert r0.config_hash == expand(load_experiment(good(tmp_path, "exp")))[0].config_hash
    assert len(r0.config_hash) == 8 and int(r0.config_hash, 16) >= 0
    # every defining field changes it
    hashes = {r.config_hash for r in a}
    assert len(hashes) == len(a)
    changed = GOOD.replace("train_seconds = 10", "train_seconds = 11").replace("{{", "{").replace("}}", "}")
    c = expand(load_experiment(write(tmp_path, changed.replace("{name}", "exp3"), "exp3")))
    assert not hashes & {r.config_hash for r in c}


def test_config_hash_follows_the_named_configs_values(tmp_path, monkeypatch):
    """A run names its configuration ("tuned"); its hash must also follow what that name means, so a
    changed configuration (the sampled softmax's loss in "tuned" did change) never reuses an old log."""
    from slidebench.baselines import sampled_softmax
    from slidebench.harness import spec
    from slidebench.trainers.slide import CONFIGS as SC
    a = expand(load_experiment(good(tmp_path, "exp")))
    r0 = a[0]
    assert r0.identity()["config_values"] == json.loads(json.dumps(SC[r0.config]))
    before = {r.config_hash for r in a}
    monkeypatch.setitem(SC, r0.config, {**SC[r0.config], "lr": 0.123})
    spec._named_config_json.cache_clear()
    try:
        after = {r.config_hash for r in expand(load_experiment(good(tmp_path, "exp")))}
    finally:
        monkeypatch.undo()
        spec._named_config_json.cache_clear()
    assert before != after
    assert spec.named_config_values("tf_sampled_softmax", "tuned")["multilabel"] == \
        sampled_softmax.CONFIGS["tuned"]["multilabel"]
    assert spec.named_config_values("no_such_system", "tuned") is None

def test_pinned_hash_value():
    from slidebench.harness.spec import config_hash
    assert config_hash({"b": 1, "a": [1, 2.5, "x"]}) == config_hash({"a": [1, 2.5, "x"], "b": 1})
    assert config_hash({"a": 1}) == "015abd7f"


@pytest.mark.parametrize("table,line,key", [
    ("[budget]", "train_secs = 5", "train_secs"),
    ("[eval]", "every_second = 5", "every_second"),
    ("[run]", "seed = [0]", "seed"),
    ("[data]", "presets = 'amazon'", "presets"),
    ("[experiment]", "kindd = 'train'", "kindd"),
])
def test_unknown_key_names_key_and_file(tmp_path, table, line, key):
    text = GOOD.replace("{{", "{").replace("}}", "}").replace(table + "\n", table + "\n" + line + "\n", 1)
    p = write(tmp_path, text.replace("{name}", "bad"), "bad")
    with pytest.raises(SpecError) as e:
        load_experiment(p)
    assert repr(key) in str(e.value) and str(p) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_unknown_key_in_systems_and_unknown_table(tmp_path):
    text = GOOD.replace("{{", "{").replace("}}", "}").replace('config = "paper"', 'config = "paper"\nlr = 0.1')
    with pytest.raises(SpecError, match=r"TF-CPU.*'lr'|'lr'"):
        load_experiment(write(tmp_path, text.replace("{name}", "s1"), "s1"))
    text2 = GOOD.replace("{{", "{").replace("}}", "}") + "\n[extra]\nx = 1\n"
    with pytest.raises(SpecError, match=r"\[extra\]"):
        load_experiment(write(tmp_path, text2.replace("{name}", "s2"), "s2"))


@pytest.mark.parametrize("old,new,key", [
    ("train_seconds = 10", 'train_seconds = "10"', "train_seconds"),
    ("train_seconds = 10", "train_seconds = true", "train_seconds"),
    ("seeds = [0, 1]", 'seeds = "0"', "seeds"),
    ("seeds = [0, 1]", "seeds = [-1]", "seeds"),
    ('threads = [1, "max"]', "threads = [0]", "threads"),
    ("batch_sizes = [64, 128]", "batch_sizes = [64.5]", "batch_sizes"),
    ("target_p_at_1 = 0.3", "target_p_at_1 = 1.5", "target_p_at_1"),
    ('scale = "tiny"', 'scale = "huge"', "scale"),
    ('preset = ["amazon", "delicious"]', 'preset = "wiki"', "preset"),
    ("subset_size = 100", "subset_size = 0", "subset_size"),
    ('protocol = "fair"', 'protocol = "unfair"', "protocol"),
    ('system = "slide"', 'system = "nosuch"', "system"),
    ('sweep = { K = [4, 8], L = [10, 20, 30] }', "sweep = { K = 4 }", "K"),
    ('params = { sampler = "vanilla", K = 6, L = 50 }', "params = { batch_size = 3 }", "batch_size"),
])
def test_wrong_type_names_key(tmp_path, old, new, key):
    text = GOOD.replace("{{", "{").replace("}}", "}")
    assert old in text
    p = write(tmp_path, text.replace(old, new, 1).replace("{name}", "wt"), "wt")
    with pytest.raises(SpecError) as e:
        load_experiment(p)
    assert key in str(e.value) and str(p) in str(e.value)


def test_structural_errors(tmp_path):
    base = GOOD.replace("{{", "{").replace("}}", "}")
    with pytest.raises(SpecError, match="file stem"):
        load_experiment(write(tmp_path, base.replace("{name}", "other"), "mine"))
    with pytest.raises(SpecError, match="exactly one of"):
        load_experiment(write(tmp_path, base.replace("subset_size = 100", "subset_size = 100\nevery_steps = 3")
                              .replace("{name}", "e1"), "e1"))
    with pytest.raises(SpecError, match="at least one of"):
        load_experiment(write(tmp_path, base.replace("train_seconds = 10\n", "").replace("{name}", "e2"), "e2"))
    with pytest.raises(SpecError, match="used twice"):
        load_experiment(write(tmp_path, base.replace('label = "TF-CPU"', 'label = "SLIDE"')
                              .replace("{name}", "e3"), "e3"))
    with pytest.raises(SpecError, match="every_steps"):   # paper protocol evaluates every N batches
        load_experiment(write(tmp_path, base.replace('protocol = "fair"', 'protocol = "paper"')
                              .replace("subset_size = 100", "").replace("{name}", "e4"), "e4"))
    with pytest.raises(SpecError, match="not valid TOML"):
        load_experiment(write(tmp_path, "[experiment\nname=", "e5"))
    with pytest.raises(SpecError, match="no such"):
        load_experiment(tmp_path / "missing.toml")


def test_micro_kind(tmp_path):
    text = '[experiment]\nname = "m"\nkind = "micro"\n[run]\nthreads = [2]\n[micro]\nanything = [1, 2]\n'
    exp = load_experiment(write(tmp_path, text, "m"))
    assert exp.kind == "micro" and exp.raw["micro"]["anything"] == [1, 2]
    with pytest.raises(SpecError, match=r"\[budget\]"):
        parse_experiment({"experiment": {"name": "m", "kind": "micro"}, "budget": {"steps": 1}}, tmp_path / "m.toml")


def test_shipped_experiment_files_parse():
    """Every experiments/*.toml in the repository is valid against the schema."""
    root = Path(__file__).resolve().parent.parent / "experiments"
    files = sorted(root.glob("*.toml"))
    assert files, "no experiment files in experiments/"
    for f in files:
        exp = load_experiment(f)
        if exp.kind == "train":
            assert expand(exp, scale="tiny")


def test_per_preset_target_resolves_per_run_and_bad_tables_name_the_key(tmp_path):
    text = GOOD.replace("{{", "{").replace("}}", "}")
    p = write(tmp_path, text.replace("target_p_at_1 = 0.3", "target_p_at_1 = { amazon = 0.15, delicious = 0.25 }"))
    runs = expand(load_experiment(p))
    by_preset = {r.data["preset"]: r.budget["target_p_at_1"] for r in runs}
    assert by_preset == {"amazon": 0.15, "delicious": 0.25}
    # a preset missing from the table runs without a target (and hashes differently from one with it)
    p2 = write(tmp_path, text.replace("target_p_at_1 = 0.3", "target_p_at_1 = { amazon = 0.15 }"), "exp2")
    runs2 = expand(load_experiment(p2))
    assert all("target_p_at_1" not in r.budget for r in runs2 if r.data["preset"] == "delicious")
    for bad, msg in [("{ amazn = 0.2 }", "target_p_at_1.amazn"), ("{ amazon = 1.5 }", "target_p_at_1.amazon")]:
        p3 = write(tmp_path, text.replace("target_p_at_1 = 0.3", f"target_p_at_1 = {bad}"), "exp3")
        with pytest.raises(SpecError, match=msg):
            load_experiment(p3)


def test_per_scale_budget_and_eval_overrides(tmp_path):
    text = GOOD.replace("{{", "{").replace("}}", "}")
    text = text.replace("target_p_at_1 = 0.3\n", "target_p_at_1 = 0.3\n\n[budget.paper]\ntrain_seconds = 3600\nepochs = 10\n")
    text = text.replace("subset_size = 100\n", "subset_size = 100\n\n[eval.paper]\nevery_seconds = 120\n")
    exp = load_experiment(write(tmp_path, text))
    small = expand(exp, scale="small")
    base_hashes = {r.config_hash for r in expand(load_experiment(good(tmp_path, "plain")), scale="small")}
    assert all(r.budget["train_seconds"] == 10 and "epochs" not in r.budget for r in small)
    assert all(r.eval["every_seconds"] == 2 for r in small)
    assert {r.config_hash for r in small} == base_hashes       # overrides for other scales change nothing here
    for runs in (expand(exp, scale="paper"), expand(exp, data_dir=tmp_path)):   # real files count as paper
        assert all(r.budget["train_seconds"] == 3600 and r.budget["epochs"] == 10 for r in runs)
        assert all(r.budget["target_p_at_1"] == 0.3 and r.eval["every_seconds"] == 120 for r in runs)
        assert all(r.eval["subset_size"] == 100 for r in runs)
    bad = text.replace("[budget.paper]\ntrain_seconds = 3600", "[budget.paper]\ntrain_secs = 3600")
    with pytest.raises(SpecError, match=r"\[budget.paper\].*train_secs"):
        load_experiment(write(tmp_path, bad, "bad"))


def test_a_param_may_take_one_value_per_data_set(tmp_path):
    text = GOOD.replace("{{", "{").replace("}}", "}").replace("{name}", "exp").replace(
        'config = "paper"', 'config = "paper"\nparams = { lr = { amazon = 0.01, delicious = 0.005 } }')
    runs = expand(load_experiment(write(tmp_path, text)))
    tf = [r for r in runs if r.label == "TF-CPU"]
    by = {r.data["preset"]: r.params["lr"] for r in tf}
    assert by == {"amazon": 0.01, "delicious": 0.005}
    # the resolved value is part of the run's identity: different data sets, different config hashes
    assert len({r.log_path() for r in tf}) == len(tf)


@pytest.mark.parametrize("table,msg", [
    ("{ amazon = 0.01 }", "must name exactly the presets"),
    ("{ amazon = 0.01, delicious = 0.005, wiki = 0.1 }", "must name exactly the presets"),
    ("{ amazon = 0.01, delicious = { x = 1 } }", "must be a scalar or a list"),
])
def test_a_per_data_set_param_table_must_name_every_preset(tmp_path, table, msg):
    text = GOOD.replace("{{", "{").replace("}}", "}").replace("{name}", "exp").replace(
        'config = "paper"', f'config = "paper"\nparams = {{ lr = {table} }}')
    with pytest.raises(SpecError, match=msg):
        load_experiment(write(tmp_path, text))


def test_runs_execute_round_by_round_over_the_seeds_unless_grouped(tmp_path):
    from slidebench.harness.spec import execution_order
    exp = load_experiment(good(tmp_path))
    assert exp.order == "interleaved"
    runs = expand(exp)
    order = execution_order(runs, exp.order)
    assert sorted(order) == list(range(len(runs)))
    seeds = [runs[i].seed for i in order]
    half = len(runs) // 2
    assert seeds == [0] * half + [1] * half                  # seed 0 of every run, then seed 1
    for s in (0, 1):                                         # grid order inside a round
        round_ = [i for i in order if runs[i].seed == s]
        assert round_ == sorted(round_)
        assert {runs[i].label for i in round_} == {"SLIDE", "TF-CPU"}
    assert execution_order(runs, "grouped") == list(range(len(runs)))
    grouped = load_experiment(write(tmp_path, good(tmp_path).read_text().replace('name = "exp"', 'name = "exp2"').replace(
        'batch_sizes = [64, 128]', 'batch_sizes = [64, 128]\norder = "grouped"'), "exp2"))
    assert grouped.order == "grouped"
    assert [r.run_id.split("/", 1)[1] for r in expand(grouped)] == [r.run_id.split("/", 1)[1] for r in runs]
    with pytest.raises(ValueError, match="order"):
        execution_order(runs, "random")
    bad = write(tmp_path, good(tmp_path).read_text().replace('name = "exp"', 'name = "exp3"').replace(
        'batch_sizes = [64, 128]', 'batch_sizes = [64, 128]\norder = "shuffled"'), "exp3")
    with pytest.raises(SpecError, match=r"\[run\].*order"):
        load_experiment(bad)


def test_sweep_values_per_data_set(tmp_path):
    """A sweep member may give one value per data set (the GPU lr check scales each data set's own lr);
    each run carries its data set's value, in its params and in its sweep (the param_* columns)."""
    text = GOOD.replace("{{", "{").replace("}}", "}")
    old = "sweep = { K = [4, 8], L = [10, 20, 30] }"
    p = write(tmp_path, text.replace(old, "sweep = { lr = [{ amazon = 2e-3, delicious = 1.3e-3 }, 3e-4] }")
              .replace("{name}", "pd"), "pd")
    slide = [r for r in expand(load_experiment(p)) if r.label == "SLIDE"]
    got = {(r.data["preset"], r.params["lr"], r.sweep["lr"]) for r in slide}
    assert got == {("amazon", 2e-3, 2e-3), ("delicious", 1.3e-3, 1.3e-3), ("amazon", 3e-4, 3e-4),
                   ("delicious", 3e-4, 3e-4)}
    assert len({r.log_path() for r in slide}) == len(slide)
    for bad, match in [("[{ amazon = 2e-3 }]", "exactly the presets"),
                       ("[{ amazon = 2e-3, delicious = nan }]", "finite"),
                       ("[{ amazon = 2e-3, delicious = { x = 1 } }]", "table")]:
        q = write(tmp_path, text.replace(old, f"sweep = {{ lr = {bad} }}").replace("{name}", "pdb"), "pdb")
        with pytest.raises(SpecError, match=match):
            load_experiment(q)
