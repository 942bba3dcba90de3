"""Figures and report from small hand-made summary CSVs (no training, no engine, no TensorFlow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slidebench.reporting import plots, report, style

CPU = "Test CPU 9000"
CORES = 2


def _curves_runs(exp: str, systems: list[dict], seeds=(0, 1, 2), datasets=("amazon",), threads=(2,),
                 batch_sizes=(128,), protocols=("fair",), n_eval: int = 8, target: float = 0.3,
                 extra_params: dict | None = None):
    """Planted curves: P@1 rises like 1 - exp(-t / tau) with a per-system tau, per-seed jitter."""
    crow, rrow = [], []
    rng = np.random.default_rng(0)
    for ds in datasets:
        for sysd in systems:
            for nt in threads:
                for bs in batch_sizes:
                    for pr in protocols:
                        for seed in seeds:
                            rid = f"{exp}/{sysd['label']}/s{seed}-{ds}{nt}{bs}{pr}{sysd.get('p', '')}"
                            tau = sysd["tau"] * (1 + 0.1 * rng.standard_normal()) * (2.0 / nt)
                            t = np.geomspace(0.5, 30, n_eval)
                            p1 = 0.5 * (1 - np.exp(-t / tau))
                            steps = (t * 100 / tau).astype(int) + 1
                            params = dict(extra_params or {})
                            params.update({f"param_{k}": v for k, v in sysd.get("params", {}).items()})
                            for i in range(n_eval):
                                crow.append(dict(experiment=exp, run_id=rid, label=sysd["label"],
                                                 system=sysd["system"], config=sysd.get("config", "default"),
                                                 seed=seed, n_threads=nt, batch_size=bs, protocol=pr,
                                                 scale="small", dataset=ds, step=steps[i],
                                                 samples_seen=steps[i] * bs, epoch=steps[i] / 100,
                                                 train_time_s=t[i], eval_time_s=0.1, wall_time_s=t[i] * 1.2,
                                                 train_loss=5 - p1[i], p_at_1=p1[i], p_at_3=p1[i] * 0.8,
                                                 p_at_5=p1[i] * 0.7, n_eval=2000, **params))
                            reached = np.nonzero(p1 >= target)[0]
                            rrow.append(dict(experiment=exp, run_id=rid, label=sysd["label"],
                                             system=sysd["system"], config=sysd.get("config", "default"),
                                             seed=seed, n_threads=nt, batch_size=bs, protocol=pr,
                                             scale="small", dataset=ds, device=sysd.get("device", "cpu"),
                                             status="target" if len(reached) else "budget", complete=True,
                                             steps=steps[-1], samples_seen=steps[-1] * bs, epochs=steps[-1] / 100,
                                             train_time_s=t[-1],
                                             time_to_target_s=t[reached[0]] if len(reached) else np.nan,
                                             target_p_at_1=target, final_p_at_1=p1[-1] - 0.01,
                                             final_p_at_3=p1[-1] * 0.8, final_p_at_5=p1[-1] * 0.7,
                                             best_p_at_1=p1.max(), host_cpu=CPU, cores=CORES, **params))
    return pd.DataFrame(crow), pd.DataFrame(rrow)


def _ttt(runs: pd.DataFrame) -> pd.DataFrame:
    keys = ["label", "n_threads", "batch_size"] + [c for c in runs.columns if c.startswith("param_")]
    out = []
    for k, g in runs.groupby(keys):
        r = g["time_to_target_s"].dropna()
        out.append(dict(zip(keys, k), n_seeds=len(g), n_reached=len(r),
                        ttt_olympic_mean_s=report.olympic_mean(r) if len(r) else np.nan,
                        ttt_min_s=r.min() if len(r) else np.nan, ttt_max_s=r.max() if len(r) else np.nan,
                        final_p_at_1_mean=g["final_p_at_1"].mean(), final_p_at_1_std=g["final_p_at_1"].std()))
    return pd.DataFrame(out)


SLIDE = {"label": "SLIDE", "system": "slide", "tau": 2.0}
SLIDE_PAPER = {"label": "SLIDE-paper", "system": "slide", "config": "paper", "tau": 3.0}
TF = {"label": "TF-full", "system": "tf_full_softmax", "config": "tuned", "tau": 6.0}
TF_PAPER = {"label": "TF-full-paper", "system": "tf_full_softmax", "config": "paper", "tau": 12.0}
TFS = {"label": "TF-sampled", "system": "tf_sampled_softmax", "config": "tuned", "tau": 8.0}


def _write(results: Path, exp: str, curves: pd.DataFrame, runs: pd.DataFrame):
    s = results / "summary"
    s.mkdir(parents=True, exist_ok=True)
    curves.to_csv(s / f"{exp}_curves.csv", index=False)
    runs.to_csv(s / f"{exp}_runs.csv", index=False)
    _ttt(runs).to_csv(s / f"{exp}_ttt.csv", index=False)


def _micro(results: Path):
    s = results / "summary"
    s.mkdir(parents=True, exist_ok=True)
    ctx = dict(experiment="x", scale="tiny", host_cpu=CPU, cores=CORES, n_threads=1, seed=0)
    rows = []
    for what in ("query", "train"):
        for sm, c in (("vanilla", 3.0), ("topk", 9.0), ("threshold", 5.0), ("random", 1.0)):
            rows.append(dict(ctx, experiment="fig4", n_labels=5000, hidden=128, family="dwta", K=6, L=50,
                             sampler=sm, what=what, us_per_sample=c, us_per_sample_min=c * 0.9,
                             us_per_sample_max=c * 1.2, repeats=5, active_mean=100.0))
    pd.DataFrame(rows).to_csv(s / "fig4.csv", index=False)
    rows = []
    for m in (1, 3, 5):
        for p in np.linspace(0, 1, 21):
            rows.append(dict(ctx, experiment="fig11", family="simhash", K=4, L=10, m=m, source="analytic", p=p,
                             prob=float(plots.hard_threshold_prob(p, 10, m)), n_pairs=0))
        for p in (0.1, 0.5, 0.9):
            rows.append(dict(ctx, experiment="fig11", family="simhash", K=4, L=10, m=m, source="measured", p=p,
                             prob=float(plots.hard_threshold_prob(p, 10, m)) + 0.01, n_pairs=100))
    pd.DataFrame(rows).to_csv(s / "fig11.csv", index=False)
    rows = [dict(ctx, experiment="tab3", n_neurons=20000, dim=128, family="dwta", K=6, L=50, range_pow=18,
                 bucket_size=128, operation=op, seconds_median=v, seconds_min=v * 0.9, seconds_max=v * 1.1,
                 repeats=3)
            for op, v in (("insert_fifo", 0.05), ("insert_reservoir", 0.04), ("hash_rows", 0.5),
                          ("rebuild_fifo", 0.55))]
    pd.DataFrame(rows).to_csv(s / "tab3.csv", index=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    res = tmp_path_factory.mktemp("results")
    _write(res, "fig5", *_curves_runs("fig5", [SLIDE, SLIDE_PAPER, TF, TF_PAPER], datasets=("amazon", "delicious")))
    _write(res, "fig7", *_curves_runs("fig7", [SLIDE, TFS]))
    _write(res, "fig8", *_curves_runs("fig8", [SLIDE, TF, TFS], seeds=(0,), batch_sizes=(64, 128, 256)))
    _write(res, "fig9", *_curves_runs("fig9", [SLIDE, TF], threads=(1, 2)))
    abl = [dict(SLIDE, label="SLIDE-hash", params={"hash": h, "K": 6}, p=h, tau=t)
           for h, t in (("dwta", 2.0), ("simhash", 1.5), ("wta", 2.5))]
    abl += [dict(SLIDE, label="SLIDE-K", params={"hash": "dwta", "K": k}, p=k, tau=1 + k / 4) for k in (4, 8)]
    abl += [dict(SLIDE, label="SLIDE-random", params={"sampler": "random"}, tau=2.2)]
    c, r = _curves_runs("ablation", abl, seeds=(0,))
    _write(res, "ablation", c, r)
    _write(res, "protocol", *_curves_runs("protocol", [SLIDE, TF], protocols=("fair", "paper")))
    oc, orr = _curves_runs("overfit", [dict(SLIDE, params={"lr": lr}, p=lr, tau=t) for lr, t in ((1e-2, 2.0),
                                                                                             (5e-3, 4.0))],
                           seeds=(0,), datasets=("amazon",))
    _write(res, "overfit", oc.assign(train_p_at_1=oc["p_at_1"] * 1.3), orr)
    _micro(res)
    # protocol "tab3" etc. are micro; fig-less experiment "smoke" found by discovery
    _write(res, "smoke", *_curves_runs("smoke", [SLIDE], seeds=(0,)))
    return res


@pytest.fixture(scope="module")
def drawn(results) -> list[Path]:
    return plots.make_figures(results, progress=False)


def test_every_experiment_gets_png_and_pdf(results, drawn):
    names = {p.stem for p in drawn}
    for exp in ("fig5", "fig7", "fig8", "fig9", "fig4", "fig11", "tab3", "ablation", "protocol", "overfit",
                "smoke"):
        assert exp in names, f"no figure for {exp}: {sorted(names)}"
        assert (results / "figures" / f"{exp}.png").stat().st_size > 5000
        assert (results / "figures" / f"{exp}.pdf").stat().st_size > 1000
    assert all(p.exists() for p in drawn)
    # PNG really is a PNG
    assert (results / "figures" / "fig5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("exp", ["fig5", "fig9", "protocol", "fig4", "tab3"])
def test_caption_names_machine_threads_protocol_scale_seeds(results, drawn, exp):
    cap = (results / "figures" / f"{exp}.caption.txt").read_text()
    assert CPU in cap and f"({CORES} cores)" in cap
    for key in ("threads:", "protocol:", "scale:", "seeds:"):
        assert key in cap
    if exp in ("fig5", "fig9", "protocol"):
        assert "seeds: 0,1,2" in cap and "scale: small" in cap
    if exp == "fig9":
        assert "threads: 1,2" in cap
    if exp == "protocol":
        assert "protocol: fair,paper" in cap


def test_footer_text_reads_na_for_missing_columns():
    txt = plots.footer_text(pd.DataFrame({"seed": [2, 0]}))
    assert "seeds: 0,2" in txt and "machine: n/a" in txt


def test_seed_band_median_min_max_and_no_extrapolation():
    grid = np.array([0.0, 1.0, 2.0, 3.0])
    runs = [(np.array([0.0, 2.0]), np.array([0.0, 2.0])),   # y = x, covers [0, 2]
            (np.array([0.0, 3.0]), np.array([0.0, 6.0])),   # y = 2x
            (np.array([0.0, 3.0]), np.array([0.0, 3.0]))]   # y = x
    b = plots.seed_band(runs, grid)
    np.testing.assert_allclose(b["median"][:3], [0, 1, 2])
    np.testing.assert_allclose(b["max"], [0, 2, 4, 6])
    np.testing.assert_allclose(b["min"], [0, 1, 2, 3])
    assert list(b["n"]) == [3, 3, 3, 2]          # the first run stops at x=2: not extrapolated
    empty = plots.seed_band([], grid)
    assert np.isnan(empty["median"]).all() and (empty["n"] == 0).all()


def test_report_has_every_experiment_claims_and_embedded_figures(results, drawn):
    path = report.write_report(results)
    assert path == results / "REPORT.md"
    text = path.read_text()
    for exp in plots.KNOWN_EXPERIMENTS:
        assert report.TITLES[exp] in text, f"{exp} missing from report"
    assert "Experiments missing: none" in text
    # figures embedded with relative paths that exist
    import re
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "figures/fig5.png" in links and "figures/fig11.png" in links
    for link in links:
        assert not Path(link).is_absolute() and (results / link).exists()
    # paper claims beside measurements
    assert "2.7x faster than TF-GPU" in text and "0.371 s" in text
    # speedup ratio of the planted data: TF tau 6 vs SLIDE tau 2 -> about 3x in time to target
    assert "ttt ratio" in text
    assert "smoke" in text
    # every ablation variant has a row (the random active set has no hash/K params: NaN-safe grouping)
    abl = text.split("## Ablation")[1].split("## ")[0]
    for v in ("SLIDE-random", "simhash", "wta"):
        assert v in abl


def test_report_time_to_target_and_speedup_numbers(results):
    runs = pd.read_csv(results / "summary" / "fig5_runs.csv")
    tab = report.group_table(runs)
    a = tab[(tab["dataset"] == "amazon")].set_index("label")
    assert set(a.index) == {"SLIDE", "SLIDE-paper", "TF-full", "TF-full-paper"}
    assert (a["n_seeds"] == 3).all()
    # olympic mean of 3 = the middle value
    r = runs[(runs["dataset"] == "amazon") & (runs["label"] == "SLIDE")]["time_to_target_s"]
    assert a.loc["SLIDE", "ttt_olympic_s"] == pytest.approx(sorted(r)[1])
    sp = report.speedups(tab)
    row = sp[(sp["dataset"] == "amazon") & (sp["slide"] == "SLIDE") & (sp["baseline"] == "TF-full")].iloc[0]
    assert row["ttt_ratio"] == pytest.approx(a.loc["TF-full", "ttt_olympic_s"] / a.loc["SLIDE", "ttt_olympic_s"])
    assert row["ttt_ratio"] > 1.5    # planted: TF is about 3x slower


def test_olympic_mean():
    assert report.olympic_mean([1, 100, 5]) == 5
    assert report.olympic_mean([2, 4]) == 3
    assert report.olympic_mean([1, 2, 3, 1000, 4]) == pytest.approx(3)
    assert np.isnan(report.olympic_mean([]))


def test_missing_experiments_reported_not_crashed(tmp_path):
    res = tmp_path / "results"
    _write(res, "fig7", *_curves_runs("fig7", [SLIDE, TFS], seeds=(0,)))
    paths = plots.make_figures(res, progress=False)
    assert {p.stem for p in paths} == {"fig7", "fig7_speedup"}
    text = report.write_report(res).read_text()
    assert "Experiments present: fig7." in text
    for exp in ("fig5", "fig8", "fig9", "fig4", "fig11", "tab3", "ablation", "protocol", "overfit"):
        assert exp in text.split("Experiments missing:")[1].split("\n")[0]
    assert text.count("**MISSING**") == 9 + 1    # + the reference section


def test_empty_results_dir(tmp_path):
    assert plots.make_figures(tmp_path / "nothing", progress=False) == []
    text = report.render_report(tmp_path / "nothing")
    assert "Experiments present: none" in text and text.count("**MISSING**") == len(plots.KNOWN_EXPERIMENTS) + 1


def test_malformed_micro_csv_names_file(tmp_path):
    s = tmp_path / "summary"
    s.mkdir(parents=True)
    pd.DataFrame({"sampler": ["vanilla"], "us": [1.0]}).to_csv(s / "fig4.csv", index=False)
    with pytest.raises(ValueError, match="fig4.csv lacks columns"):
        plots.make_figures(tmp_path, ["fig4"], progress=False)


def test_incomplete_run_is_flagged(tmp_path):
    res = tmp_path / "r"
    c, r = _curves_runs("fig7", [SLIDE], seeds=(0, 1))
    r.loc[0, "complete"] = False
    r.loc[0, "status"] = "running"
    _write(res, "fig7", c, r)
    text = report.render_report(res, ["fig7"])
    assert "incomplete" in text and "budget,running" in text or "running" in text


def test_report_reads_summaries_never_raw_logs(tmp_path, monkeypatch):
    """The manifest comes from summary/<exp>_manifest.json; nothing under results/raw is opened."""
    import builtins
    import io
    res = tmp_path / "r"
    _write(res, "fig7", *_curves_runs("fig7", [SLIDE, TFS], seeds=(0,)))
    raw = res / "raw" / "fig7" / "SLIDE"
    raw.mkdir(parents=True)
    (raw / "s0-abcdef12.jsonl").write_text(json.dumps({"event": "run_start", "manifest": {"cpu": "Raw CPU"}}) + "\n")
    (res / "summary" / "fig7_manifest.json").write_text(json.dumps({"cpu": "Summary CPU"}))
    opened = []
    real_open, real_io_open = builtins.open, io.open

    def spy(f, *a, **k):
        opened.append(str(f))
        return real_open(f, *a, **k)

    def spy_io(f, *a, **k):
        opened.append(str(f))
        return real_io_open(f, *a, **k)
    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy_io)
    text = report.render_report(res, ["fig7"])
    monkeypatch.undo()
    assert "Summary CPU" in text and "Raw CPU" not in text
    assert opened and not [p for p in opened if "/raw/" in p], opened


def test_style_is_stable_and_distinguishes_configs_and_devices():
    a = style.style_for("slide")
    assert a == style.style_for({"system": "slide", "config": "default"})
    tf = style.style_for("tf_full_softmax", "tuned")
    tfp = style.style_for("tf_full_softmax", "paper")
    gpu = style.style_for("tf_full_softmax", "tuned", "gpu")
    # the 2019 release's config: same family, lighter shade, dashed, hollow markers
    assert tf.color != tfp.color and tf.linestyle != tfp.linestyle and tf.filled and not tfp.filled
    assert tf.marker == tfp.marker
    assert gpu.color != tf.color
    assert a.order < tf.order < style.style_for("tf_sampled_softmax").order
    assert style.display_name("tf_full_softmax", "paper", "gpu") == "TF full softmax (GPU, paper config)"
    v = [style.variant_style(a, i) for i in range(3)]
    assert len({s.color for s in v}) == 3
    with pytest.raises(ValueError):
        style.variant_style(a, -1)


def test_headline_labels_get_six_distinct_looks_from_system_and_config():
    """The medium headline's labels map to looks by (system, config), whatever the labels say."""
    from slidebench.reporting.drawing import curve_groups
    rows = []
    for label, system, config in (("SLIDE", "slide", "default"), ("SLIDE-paper", "slide", "paper"),
                                  ("TF-full", "tf_full_softmax", "tuned"),
                                  ("TF-full-paper", "tf_full_softmax", "paper"),
                                  ("TF-sampled", "tf_sampled_softmax", "tuned"),
                                  ("TF-sampled-paper", "tf_sampled_softmax", "paper")):
        for seed in (0, 1):
            rows.append({"label": label, "system": system, "config": config, "seed": seed, "run_id": f"{label}{seed}",
                         "n_threads": 2, "batch_size": 128, "protocol": "fair", "dataset": "amazon-medium"})
    groups = curve_groups(pd.DataFrame(rows), split=("dataset",))
    assert len(groups) == 6
    looks = {(g.style.color, g.style.marker, g.style.linestyle, g.style.filled) for g in groups}
    assert len(looks) == 6 and len({g.style.color for g in groups}) == 6
    # the same system and config under another label looks the same
    renamed = pd.DataFrame(rows).replace({"TF-full": "TF-CPU"})
    a = {g.display.split(":")[0]: g.style.color for g in curve_groups(renamed, split=("dataset",))}
    b = {g.display.split(":")[0]: g.style.color for g in groups}
    assert a["TF-CPU"] == b["TF-full"]
    # legends say what a label is
    assert any(g.display == "TF-full-paper: TF full softmax, 2019 release's config" for g in groups)


def test_variants_of_one_system_get_distinct_colours_and_readable_names():
    from slidebench.reporting.drawing import curve_groups
    base = {"sampler": "vanilla", "hash": "dwta", "K": 6, "L": 50, "active": 0.05}
    runs = [("SLIDE", base, None, None), ("SLIDE-K", base, 8, None), ("SLIDE-hash", base, None, "simhash"),
            ("SLIDE-random", {"sampler": "random", "active": 0.05}, None, None),
            ("SLIDE-active", {**base, "active": 0.005}, None, None)]
    df = pd.DataFrame([{"label": lab, "system": "slide", "config": "default", "seed": 0, "run_id": f"{lab}{k}{h}",
                        "params": json.dumps(p), "param_K": k, "param_hash": h, "dataset": "a"}
                       for lab, p, k, h in runs])
    groups = curve_groups(df, split=("dataset",))
    names = [g.display for g in groups]
    assert names[0] == "SLIDE (DWTA, K=6, L=50, 5% active)"
    assert set(names[1:]) == {"SLIDE: K=8", "SLIDE: SimHash", "SLIDE: random active set (no LSH)",
                              "SLIDE: 0.5% active"}
    assert len({g.style.color for g in groups}) == 5 and len({g.style.marker for g in groups}) == 5


def test_hard_threshold_prob_matches_direct_binomial():
    from math import comb
    L = 10
    for m in (1, 3, 5, 10):
        for p in (0.0, 0.13, 0.5, 0.77, 1.0):
            direct = sum(comb(L, j) * p ** j * (1 - p) ** (L - j) for j in range(m, L + 1))
            assert plots.hard_threshold_prob(p, L, m) == pytest.approx(direct, abs=1e-12)
    with pytest.raises(ValueError):
        plots.hard_threshold_prob(0.5, 10, 11)


def test_protocol_takes_its_fair_side_from_fig8(tmp_path):
    """protocol.toml runs one protocol ("paper"); the fair side is fig8's runs with the same labels (fig5 is at medium scale, protocol at small)."""
    res = tmp_path / "r"
    _write(res, "fig8", *_curves_runs("fig8", [SLIDE, TF, TF_PAPER], datasets=("amazon", "delicious")))
    _write(res, "protocol", *_curves_runs("protocol", [SLIDE, TF], seeds=(0,), protocols=("paper",)))
    s = plots.load_summary(res, "protocol")
    assert set(s.runs["protocol"]) == {"fair", "paper"}
    fair = s.runs[s.runs["protocol"] == "fair"]
    # only the matching runs: same labels, dataset and seed; not TF-full-paper, not delicious, not seed 1
    assert set(fair["label"]) == {"SLIDE", "TF-full"} and set(fair["dataset"]) == {"amazon"}
    assert set(fair["seed"]) == {0} and (fair["source_experiment"] == "fig8").all()
    assert set(s.curves["run_id"]) == set(s.runs["run_id"])
    plots.make_figures(res, ["protocol"], progress=False)
    assert "protocol: fair,paper" in (res / "figures" / "protocol.caption.txt").read_text()
    text = report.render_report(res, ["protocol"])
    sec = text.split("## Protocol")[1]
    assert "| fair |" in sec and "| paper |" in sec


def test_speedup_lower_bound_when_the_baseline_never_reaches_the_target(tmp_path):
    res = tmp_path / "r"
    slow = dict(TF, tau=1e6)                      # flat curve: never reaches P@1 0.3
    c, r = _curves_runs("fig7", [SLIDE, slow], seeds=(0, 1, 2))
    gpu = r[r["label"] == "TF-full"].assign(label="TF-GPU", device="gpu", status="skipped", train_time_s=0.0,
                                            samples_seen=0, steps=0, final_p_at_1=np.nan,
                                            time_to_target_s=np.nan, run_id=lambda d: d["run_id"] + "gpu")
    r = pd.concat([r, gpu], ignore_index=True)
    _write(res, "fig7", c, r)
    tab = report.group_table(r)
    sp = report.speedups(tab)
    assert list(sp["baseline"]) == ["TF-full"]          # the skipped GPU row is not compared
    assert "skipped" in set(tab["statuses"])
    row = sp.iloc[0]
    assert np.isnan(row["ttt_ratio"])
    slide_ttt = tab.set_index("label").loc["SLIDE", "ttt_olympic_s"]
    assert row["ttt_lower_bound"] == pytest.approx(30.0 / slide_ttt)
    assert row["ttt_ratio_txt"].startswith("> ")
    text = report.render_report(res, ["fig7"])
    assert "not reached (0/3)" in text and "more than" in text and "TF-full did not reach it" in text


def test_a_variant_that_leaves_its_settings_to_the_config_is_named_as_that_config():
    """The ablation's engine default sets no sampler or hash by hand: it is the shipped config, and must
    not be labelled with the hand-set base run's description."""
    from slidebench.reporting.drawing import curve_groups
    common = {"config": "default", "batch_size": 128, "lr": 0.01}        # as the committed ablation's runs
    base = {**common, "sampler": "vanilla", "hash": "dwta", "K": 6, "L": 50, "active": 0.05, "correction": "none"}
    runs = [("SLIDE", base), ("SLIDE-K", {**base, "K": 8}), ("SLIDE-default", common)]
    df = pd.DataFrame([{"label": lab, "system": "slide", "config": "default", "seed": 0, "run_id": lab,
                        "params": json.dumps(p), "param_K": p.get("K") if lab == "SLIDE-K" else None,
                        "dataset": "a"} for lab, p in runs])
    names = {g.df["label"].iloc[0]: g.display for g in curve_groups(df, split=("dataset",))}
    assert names["SLIDE"] == "SLIDE (DWTA, K=6, L=50, 5% active)"
    assert names["SLIDE-default"] == "SLIDE: the engine's 'default' config as shipped"


def test_curves_panel_without_legend_still_draws_its_curves():
    """legend=False (the ablation's third panel) leaves out the legend only: the curves are drawn and the
    panel does not claim "no evaluations"."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from slidebench.reporting.drawing import _curves_panel
    curves, _ = _curves_runs("ablation", [{"label": "SLIDE", "system": "slide", "tau": 5.0}], seeds=(0,))
    fig, (a, b) = plt.subplots(1, 2)
    assert _curves_panel(a, curves, "train_time_s", True, ["dataset"], 0.3, "t", legend=False) == 1
    assert _curves_panel(b, curves, "train_time_s", True, ["dataset"], 0.3, "t") == 1
    assert a.get_legend() is None and b.get_legend() is not None
    assert not any("no evaluations" in t.get_text() for t in a.texts + b.texts)
    plt.close(fig)


def test_report_section_shows_its_own_figures_not_those_of_an_experiment_whose_name_extends_it(tmp_path):
    """Found in the cbb07ef reference: the `long` section embedded long_delicious.png and long_sampled.png
    because they start with `long_`. Its companions (`fig5_speedup`) must still be found."""
    from slidebench.reporting.report import _experiment_names, _figures_for
    (tmp_path / "figures").mkdir()
    (tmp_path / "summary").mkdir()
    for stem in ["long", "long_delicious", "long_sampled", "fig5", "fig5_speedup", "mine", "mine_big",
                 "mine_speedup"]:
        (tmp_path / "figures" / f"{stem}.png").write_bytes(b"")
    (tmp_path / "summary" / "mine_big_runs.csv").write_text("run_id\n")   # a user's, not in the catalogue
    known = _experiment_names(tmp_path)
    names = lambda exp: [p.stem for p in _figures_for(tmp_path, exp, known)]       # noqa: E731
    assert names("long") == ["long"]
    assert names("long_delicious") == ["long_delicious"]
    assert names("fig5") == ["fig5", "fig5_speedup"]
    assert names("mine") == ["mine", "mine_speedup"]


def test_another_named_config_neither_wears_the_systems_colour_nor_reads_as_a_bare_word():
    """Found in the cbb07ef reference's ablation: the engine's 'lsh' config was drawn in SLIDE's own red
    next to the base SLIDE run and named "SLIDE-lshmix: SLIDE, lsh"."""
    from slidebench.reporting.drawing import curve_groups
    base = {"config": "default", "sampler": "vanilla", "hash": "dwta", "K": 6, "L": 50, "active": 0.05}
    runs = [("SLIDE", "default", base), ("SLIDE-K", "default", {**base, "K": 8}),
            ("SLIDE-lshmix", "lsh", {"config": "lsh", "lr": 0.01})]
    df = pd.DataFrame([{"label": lab, "system": "slide", "config": cfg, "seed": 0, "run_id": lab,
                        "params": json.dumps(p), "param_K": p.get("K") if lab == "SLIDE-K" else None,
                        "dataset": "a"} for lab, cfg, p in runs])
    groups = {g.df["label"].iloc[0]: g for g in curve_groups(df, split=("dataset",))}
    assert len({g.style.color for g in groups.values()}) == 3
    assert groups["SLIDE-lshmix"].style.color != style.style_for("slide").color
    assert groups["SLIDE-lshmix"].display == "SLIDE-lshmix: SLIDE, its 'lsh' config"
    assert style.describe("tf_full_softmax", "tuned") == "TF full softmax, tuned"


def test_a_log_y_axis_over_decades_is_ticked_1_2_5_and_a_narrow_one_densely():
    """Found in the 04ad8c5 reference's Table 3 figure (0.07-20 s): the dense speedup ticks printed
    1, 1.2 and 1.5 (and 10, 12, 15) on top of each other."""
    import matplotlib.pyplot as plt
    from slidebench.reporting.drawing import plain_log_axis
    fig, (wide, narrow) = plt.subplots(1, 2)
    for ax, lim in ((wide, (0.07, 20.0)), (narrow, (0.9, 1.8))):
        ax.plot([1, 2], list(lim))
        plain_log_axis(ax, "y")
        ax.set_ylim(*lim)
    fig.canvas.draw()
    ticks = lambda ax: [v for v in ax.get_yticks() if ax.get_ylim()[0] <= v <= ax.get_ylim()[1]]   # noqa: E731
    mant = {round(v / 10 ** np.floor(np.log10(v)), 6) for v in ticks(wide)}
    assert mant <= {1.0, 2.0, 5.0} and len(ticks(wide)) >= 4
    assert {1.2, 1.5} <= {round(v, 6) for v in ticks(narrow)}
    plt.close(fig)


def test_speedup_figure_shades_the_verdicts_parity_zone(results, monkeypatch, tmp_path):
    """The speedup figure shows the zone (1/TIMING_DRIFT .. TIMING_DRIFT) inside which the verdict
    calls a ratio of two measured times parity, so the figure and the verdict table read alike."""
    from slidebench.reporting import figures_train
    from slidebench.reporting.catalogue import TIMING_DRIFT
    from slidebench.reporting.summaries import load_summary
    got = []
    monkeypatch.setattr(figures_train, "_finish", lambda fig, *a, **k: got.append(fig) or [])
    figures_train.fig_speedup(load_summary(results, "fig5"), tmp_path)
    assert len(got) == 1
    for ax in got[0].axes:
        zones = [p for p in ax.patches if "run-to-run drift" in str(p.get_label())]
        assert len(zones) == 1, [p.get_label() for p in ax.patches]
        ys = zones[0].get_patch_transform().transform(zones[0].get_path().vertices)[:, 1]
        assert ys.min() == pytest.approx(1 / TIMING_DRIFT) and ys.max() == pytest.approx(TIMING_DRIFT)
        assert any("run-to-run drift" in t.get_text() for t in ax.get_legend().get_texts())


def test_speedup_figure_keys_every_bound_marker_it_draws(monkeypatch, tmp_path):
    """Found in the 2026-12-04 Xeon reference's fig5_speedup: a 'mixed' level (SLIDE short in one seed,
    the baseline in another) was drawn as a diamond that the legend did not explain."""
    from slidebench.reporting import figures_train
    from slidebench.reporting.summaries import Summary
    rows = [{"dataset": "d", "slide": "SLIDE", "baseline": "TF-CPU", "baseline_system": "tf_full_softmax",
             "baseline_config": "tuned", "baseline_device": "cpu", "level_frac": f, "level_p1": 0.2 * f,
             "speedup_median": 1.5, "speedup_min": 1.2, "speedup_max": 1.8, "bound": b, "n_seeds": 3,
             "method": "interpolate"} for f, b in ((0.5, ""), (0.6, ">"), (0.7, "<"), (0.8, "mixed"))]
    runs = pd.DataFrame([{"label": "SLIDE", "system": "slide", "config": "default", "seed": s, "n_threads": 2,
                          "dataset": "d", "host_cpu": "cpu", "cores": 2} for s in range(3)])
    got = []
    monkeypatch.setattr(figures_train, "_finish", lambda fig, *a, **k: got.append(fig) or [])
    figures_train.fig_speedup(Summary("fig5", runs=runs, speedup=pd.DataFrame(rows)), tmp_path)
    texts = [t.get_text() for t in got[0].axes[0].get_legend().get_texts()]
    for key in ("at least", "at most", "bounds both ways"):
        assert any(t.startswith(key) for t in texts), texts
