"""The protocol of evaluate.py: metrics by hand, LOF fit set, caching, determinism, the methods'
registry and the cache key's code, CLI errors."""
import dataclasses
import importlib
import json
import os
import types

import numpy as np
import torch
import pytest

import evaluate
from datasets import load_toy
from common import RecourseMethod
from evaluate import (Benchmark, fit_metric_lof, genre_configs_from_args, main, metrics_of, parse_args,
                      pick_test_negatives, prepare, train_classifier)
from genre import GenReConfig
from tables import METRICS


class StubOracle:
    """P(y = 1 | x) = x_0: the oracle says positive iff the first feature > 0.5."""

    def predict_proba(self, X):
        p = np.asarray(X)[:, 0]
        return np.stack([1 - p, p], axis=1)


class StubLOF:
    """Inlier (+1) iff the second feature < 0.5."""

    def predict(self, X):
        return np.where(np.asarray(X)[:, 1] < 0.5, 1, -1)


def test_metrics_by_hand():
    X = np.array([[0.2, 0.1, 0.0], [0.4, 0.3, 1.0]])
    Xp = np.array([[0.7, 0.1, 0.0], [0.4, 0.9, 0.0]])
    imm = np.array([False, False, True])
    r = metrics_of(X, Xp, StubOracle(), StubLOF(), imm)
    # costs: 0.5 and 0.6 + 1.0 -> mean 1.05; valid: [yes, no]; inlier: [yes, no]
    assert r["cost"] == pytest.approx(1.05)
    assert r["validity"] == 0.5 and r["lof"] == 0.5
    assert r["score"] == pytest.approx(0.5 + 0.5 - 1.05 / 3)
    assert r["immutable_violations"] == 1


def test_lof_is_fitted_on_the_oracles_positives_of_train_and_test():
    ds = load_toy("moons")
    bench = Benchmark(ds, StubOracle(), None, 0, {}, 0.0)
    lof = fit_metric_lof(bench)
    expected = ds.X_all[ds.X_all[:, 0] > 0.5]
    assert lof.n_samples_fit_ == len(expected) and lof.n_neighbors_ == 5 and lof.novelty
    np.testing.assert_array_equal(lof._fit_X, expected)


def test_classifier_same_seed_same_weights():
    ds = load_toy("moons")
    cfg = evaluate.ClassifierConfig(hidden=(4, 4), lr=0.05, epochs=5)
    a = train_classifier(ds.X_train, ds.y_train, cfg, seed=3, verbose=False)
    b = train_classifier(ds.X_train, ds.y_train, cfg, seed=3, verbose=False)
    np.testing.assert_array_equal(a.predict_proba(ds.X_test), b.predict_proba(ds.X_test))


def test_fast_classifier_loop_is_plain_minibatch_adam():
    """fit_classifier's fast loop (one thread, fused Adam, a slice of the shuffled X) trains
    the same h as the textbook loop: the same seed, a gather per minibatch, Adam's
    per-parameter update. It leaves torch's thread count as it found it."""
    import torch
    from common import set_seed
    ds = load_toy("moons")
    cfg = evaluate.ClassifierConfig(hidden=(4, 4), lr=0.05, epochs=3, balanced=True)
    threads = torch.get_num_threads()
    fast = evaluate.fit_classifier(ds.X_train, ds.y_train, cfg, seed=5, verbose=False)
    assert torch.get_num_threads() == threads

    set_seed(5)
    X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train, dtype=torch.float32)
    plain = evaluate.Classifier(X.shape[1], cfg.hidden)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(y == 0).sum() / (y == 1).sum())
    opt = torch.optim.Adam(plain.parameters(), lr=cfg.lr, foreach=False)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(X))
        for start in range(0, len(X), cfg.batch_size):
            batch = perm[start:start + cfg.batch_size]
            loss = loss_fn(plain(X[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    np.testing.assert_allclose(fast.predict_proba(ds.X_test), plain.eval().predict_proba(ds.X_test),
                               rtol=0, atol=1e-5)


def test_pipeline_is_deterministic_and_cached(tmp_path, capsys):
    kw = dict(methods=["nnr_dhplus", "wachter"], seeds=[0], n_test=30, cache_dir=str(tmp_path), verbose=False)
    first = evaluate.run_benchmark("moons", **kw)
    (cache,) = tmp_path.glob("moons_*_seed0.pkl")
    mtime = cache.stat().st_mtime_ns
    second = evaluate.run_benchmark("moons", **kw)          # loads oracle and h from the cache
    assert cache.stat().st_mtime_ns == mtime
    for m in kw["methods"]:
        for key in METRICS:
            assert first["methods"][m][key] == second["methods"][m][key]
        assert first["methods"][m]["immutable_violations"] == 0
    # A refit from an empty cache gives the same JSON: tests/test_reproducible.py (twice, cold).


def test_test_negatives_have_h_at_most_half(moons_cache):
    bench = prepare("moons", 0, cache_dir=moons_cache, verbose=False)
    X = pick_test_negatives(bench, 20)
    assert len(X) == min(20, (bench.h.predict_proba(bench.ds.X_test) <= 0.5).sum())
    assert np.all(bench.h.predict_proba(X) <= 0.5)
    assert len(np.unique(X, axis=0)) == len(X)


def test_cli_writes_json_and_table(tmp_path, capsys):
    rc = main(["--dataset", "compas", "--methods", "nnr", "genre", "--n-test", "10", "--quiet",
               "--tau", "7", "--set", "steps=2", "n_enc_layers=1", "n_dec_layers=1", "tau=5",
               "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| nnr |" in out and "| genre |" in out and "sample std" in out
    assert "GenRe:" not in out and "epoch" not in out          # --quiet: the table, no training progress
    data = json.loads((tmp_path / "out" / "compas.json").read_text())
    assert data["dataset"] == "compas" and data["n_test"] == 10 and data["seeds"] == [0]
    assert data["n_features"] == 7                          # compas: data/README.md lists 7 features
    assert set(data["methods"]["nnr"]) >= {"cost", "cost_std", "validity", "lof", "score",
                                           "immutable_violations", "seconds"}
    # the JSON records the GenRe config the numbers came from: --set applied last, the rest default
    expected = {**dataclasses.asdict(GenReConfig()), "steps": 2, "n_enc_layers": 1, "n_dec_layers": 1, "tau": 5.0}
    assert data["genre_configs"] == {"genre": expected}
    assert data["provenance"]["versions"]["torch"] == torch.__version__ and "commit" in data["provenance"]


def test_aggregate_over_seeds():
    """Means and sample stds (ddof = 1) by hand; per-seed values kept in seed order; counts summed."""
    rows = [dict(cost=c, validity=v, lof=l, score=v + l - c / 2, immutable_violations=i, failed=f,
                 seconds=s, fit_seconds=s - 1, recourse_seconds=0.5, score_seconds=0.5, h_valid=v, active_units=i,
                 constraint_violations=i + 1, features_changed=2.0 * i, diversity=s)
            for c, v, l, i, f, s in [(1.0, 0.5, 1.0, 0, 1, 3.0), (3.0, 1.0, 0.5, 2, 0, 5.0)]]
    out = evaluate.aggregate(rows)
    assert out["cost"] == 2.0 and out["cost_per_seed"] == [1.0, 3.0]
    assert out["cost_std"] == pytest.approx(2 ** 0.5)          # sqrt(((1-2)^2 + (3-2)^2) / (2 - 1))
    assert out["score_per_seed"] == [1.0, 0.0] and out["score"] == 0.5
    assert out["score_std"] == pytest.approx(0.5 ** 0.5)
    assert out["validity"] == 0.75 and out["lof_per_seed"] == [1.0, 0.5]
    assert (out["immutable_violations"], out["failed"], out["seconds"]) == (2, 1, 4.0)
    assert out["seconds_per_seed"] == [3.0, 5.0] and out["fit_seconds"] == 3.0
    assert out["h_valid"] == 0.75 and out["active_units_per_seed"] == [0, 2]
    assert (out["constraint_violations"], out["features_changed"], out["diversity"]) == (4, 2.0, 4.0)
    unconstrained = [{**r, "constraint_violations": None} for r in rows]
    assert evaluate.aggregate(unconstrained)["constraint_violations"] is None   # no rules given: none to break
    assert evaluate.aggregate(rows[:1])["score_std"] is None   # one seed: no spread to report


def test_set_reads_each_value_as_its_field_type():
    args = parse_args(["--dataset", "adult", "--set", "lam=2", "n_bins=7", "select=plausible",
                       "feature_steps=None", "dropout=0.1"])
    configs = genre_configs_from_args(args, "adult")
    for cfg in configs.values():                                 # --set applies to both GenRe rows
        assert (cfg.lam, cfg.n_bins, cfg.select, cfg.feature_steps, cfg.dropout) == (2.0, 7, "plausible", None, 0.1)
        assert type(cfg.lam) is float and type(cfg.n_bins) is int
    assert configs["genre"].tau == 10.0 and configs["genre_plausible"].tau == 5.0
    paper = genre_configs_from_args(parse_args(["--dataset", "adult", "--genre-sizes", "paper"]), "adult")
    assert (paper["genre"].n_enc_layers, paper["genre"].batch_size, paper["genre_plausible"].tau) == (16, 16384, 5.0)


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "unknown data set 'nope'; available: adult, compas, heloc"),
    (["--dataset", "compas", "--methods", "magic"], "unknown method 'magic'; available:"),
    (["--dataset", "compas", "--set", "layers=4"], "--set: GenReConfig has no field 'layers'; fields: lam,"),
    (["--dataset", "compas", "--set", "n_bins=3.5"], "--set n_bins: '3.5' is not a valid int"),
    (["--dataset", "compas", "--set", "lam=maybe"], "--set lam: 'maybe' is not a valid float"),
    (["--dataset", "compas", "--set", "steps=None", "n_heads=None"], "--set n_heads: 'None' is not a valid int"),
    (["--dataset", "compas", "--set", "tau"], "--set takes FIELD=VALUE, got 'tau'"),
    (["--dataset", "compas", "--set", "select=best"], "GenReConfig.select must be one of ('h', 'plausible'), got 'best'"),
    (["--dataset", "compas", "--lam", "nan"], "GenReConfig.lam must be at least 0, got nan"),
    (["--dataset", "compas", "--set", "n_heads=5"], "GenReConfig.d_model (32) must be a multiple of n_heads (5)"),
    (["--dataset", "compas", "--test-size", "0.5"], "--test-size describes a CSV and is not used with --dataset"),
    (["--dataset", "compas", "--positive", "1"], "--positive describes a CSV and is not used with --dataset"),
    (["--dataset", "compas", "--seeds", "0", "0"], "--seeds names a seed twice: [0, 0]"),
    (["--dataset", "compas", "--methods", "nnr", "nnr"], "method 'nnr' is named twice"),
    (["--dataset", "compas", "--n-test", "0"], "--n-test must be at least 1, got 0"),
    (["--dataset", "compas", "--out", evaluate.PUBLISHED], "results/ holds the published numbers"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_streams_are_distinct_and_repeatable():
    from common import child_seed
    names = ["oracle", "labels", "h", "negatives", "dev", "genre"]
    seeds = [child_seed(0, n) for n in names] + [child_seed(1, n) for n in names]
    assert len(set(seeds)) == len(seeds)                          # no two streams share a seed
    assert seeds[:6] == [child_seed(0, n) for n in names]         # the same name gives the same stream


def test_label_draw_uses_only_its_own_stream():
    """Redrawn labels are Bernoulli(oracle) with the 'labels' stream, whatever the other draws."""
    from common import child_seed
    ds = load_toy("moons")
    drawn = evaluate.redraw_labels(ds, StubOracle(), seed=3)
    rng = np.random.default_rng(child_seed(3, "labels"))           # an independent re-draw by hand
    y_train = (rng.random(len(ds.X_train)) < ds.X_train[:, 0]).astype(int)
    y_test = (rng.random(len(ds.X_test)) < ds.X_test[:, 0]).astype(int)
    assert np.array_equal(drawn.y_train, y_train) and np.array_equal(drawn.y_test, y_test)


class Spy:
    """A recourse method that records everything the protocol hands it."""
    seen = []
    cfg_ = GenReConfig()                                          # as GenRe's rows read it

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None):
        Spy.seen += [("fit", X, y, h, immutable, categorical, groups)]
        return self

    def recourse(self, X, options=None):
        Spy.seen += [("recourse", X)]
        return X.copy() if options is None else np.repeat(X[:, None], options, axis=1)   # GenRe's rows ask for options


def test_no_method_sees_the_oracle_the_test_labels_or_the_metrics_lof(moons_cache, monkeypatch):
    bench = prepare("moons", 0, cache_dir=moons_cache, verbose=False)
    monkeypatch.setattr(evaluate, "make_method", lambda *a, **k: Spy())
    Spy.seen = []
    scores, fitted, X_neg, lof = evaluate.run_seed(dataclasses.replace(bench, cache_dir=None),
                                                        ["nnr", "wachter", "genre"], 20, verbose=False)
    assert len(Spy.seen) == 7                                     # three fits, three recourse calls, GenRe's options
    forbidden = [bench.oracle, lof, bench.ds.y_test]
    for call in Spy.seen:
        for arg in call[1:]:
            assert not any(arg is f for f in forbidden)
        if call[0] == "fit":
            assert call[1] is bench.ds.X_train and call[2] is bench.ds.y_train and call[3] is bench.h
        else:
            assert np.array_equal(call[1], X_neg)                 # only the test negatives' features


def test_development_split_never_touches_the_test_split(moons_cache, tmp_path, monkeypatch):
    full = prepare("moons", 0, cache_dir=moons_cache, verbose=False)
    rows = lambda X: {r.tobytes() for r in X}
    train_rows = rows(full.ds.X_train)
    test_rows = rows(full.ds.X_test) - train_rows
    # Watch what the development h is trained on: a cache holding the seed's oracle and h but no
    # development h, and fit_h replaced by a spy that records its rows (and returns a small h).
    import shutil
    (entry,) = [f for f in os.listdir(moons_cache) if f.startswith("moons_") and "_dev_" not in f]
    shutil.copy(os.path.join(moons_cache, entry), tmp_path)
    seen = []

    def spy(ds, seed, verbose):
        seen.append((ds.X_train.copy(), ds.y_train.copy()))
        return {"h_hidden": (4,), "h_state": evaluate.Classifier(ds.n_features, (4,)).state_dict()}

    monkeypatch.setattr(evaluate, "fit_h", spy)
    dev = evaluate.development("moons", 0, cache_dir=str(tmp_path), verbose=False)
    for X in (dev.ds.X_train, dev.ds.X_test):                     # fit rows and development rows
        assert rows(X) <= train_rows and not rows(X) & test_rows
    assert len(dev.ds.X_train) + len(dev.ds.X_test) == len(full.ds.X_train)
    assert abs(len(dev.ds.X_test) / len(full.ds.X_train) - evaluate.DEV_FRACTION) < 0.01
    (X_h, y_h), = seen                                            # h trained once, on the fit rows only
    assert np.array_equal(X_h, dev.ds.X_train) and np.array_equal(y_h, dev.ds.y_train)
    assert not rows(X_h) & rows(dev.ds.X_test)                    # no development row (moons' rows are distinct)
    assert len(rows(X_h)) == len(X_h)


def test_copies_of_training_rows_by_brute_force():
    rng = np.random.default_rng(0)
    X_train = rng.integers(0, 3, (50, 3)).astype(np.float32)
    X = rng.integers(0, 3, (40, 3)).astype(np.float32)
    expected = [any((x == t).all() for t in X_train) for x in X]
    assert evaluate.copies_of_training_rows(X, X_train).tolist() == expected


def test_a_csv_named_like_a_benchmark_gets_the_default_classifier(tmp_path):
    """Benchmark settings for h go by what was loaded, not by the file's name."""
    from datasets import from_csv, load
    rows = ["x,z,y"] + [f"{i % 7},{i % 5},{int(i % 7 > 3)}" for i in range(60)]
    (tmp_path / "moons.csv").write_text("\n".join(rows) + "\n")
    csv_ds = from_csv(str(tmp_path / "moons.csv"), "y")
    assert csv_ds.name == "moons" and not csv_ds.builtin
    assert evaluate.classifier_config(csv_ds) == evaluate.ClassifierConfig(balanced=True)
    assert evaluate.classifier_config(load("moons")).hidden == (4, 4)


def test_the_preset_row_samples_the_papers_trained_model_its_own_way(moons_cache):
    """One training serves both rows: genre_plausible = genre's model sampled at tau 5, best plausible."""
    bench = dataclasses.replace(prepare("moons", 0, cache_dir=moons_cache, verbose=False), cache_dir=None)
    configs = evaluate.genre_configs(dict(d_model=16, n_enc_layers=1, n_dec_layers=1, steps=10))
    scores, fitted, X_neg, lof = evaluate.run_seed(bench, ["genre", "genre_plausible"], 20, configs, verbose=False)
    assert fitted["genre_plausible"].model_ is fitted["genre"].model_
    expected = fitted["genre"].recourse(X_neg, tau=5.0, select="plausible")
    assert np.array_equal(fitted["genre_plausible"].recourse(X_neg), expected)
    expected_metrics = metrics_of(X_neg, expected, bench.oracle, lof, bench.ds.immutable)
    assert scores["genre_plausible"]["score"] == expected_metrics["score"]
    assert not np.array_equal(fitted["genre"].recourse(X_neg), expected)


def test_cached_genre_is_the_fitted_one_with_the_sampling_asked_for(tmp_path, moons_cache):
    bench = dataclasses.replace(prepare("moons", 0, cache_dir=moons_cache, verbose=False), cache_dir=str(tmp_path))
    tiny = GenReConfig(d_model=16, n_enc_layers=1, n_dec_layers=1, steps=10)
    first = evaluate.fit_genre(bench, tiny, verbose=False)
    (path,) = tmp_path.glob("genre_moons_*.pt")
    again = evaluate.fit_genre(bench, dataclasses.replace(tiny, tau=3.0, select="h"), verbose=False)
    assert list(tmp_path.glob("genre_moons_*.pt")) == [path]      # same training fields: loaded, not refitted
    assert again.cfg_.tau == 3.0 and again.cfg_.select == "h"
    X = bench.ds.X_test[:5]
    assert np.array_equal(again.sample(X, tau=3.0), first.sample(X, tau=3.0))
    evaluate.fit_genre(bench, dataclasses.replace(tiny, lam=2.0), verbose=False)
    assert len(list(tmp_path.glob("genre_moons_*.pt"))) == 2       # a training field changed: refitted


def test_code_fingerprint_ignores_comments_and_docstrings(monkeypatch):
    """Only what the code does changes the hash: a comment or a docstring does not."""
    plain = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    texts = {"pairing": plain}
    monkeypatch.setattr(evaluate, "module_source", lambda name: texts.get(name, ""))
    first = evaluate.code_fingerprint("pairing")
    texts["pairing"] = 'def f(x):\n    """Other doc."""\n    # a comment\n    return x + 1\n'
    assert evaluate.code_fingerprint("pairing") == first
    texts["pairing"] = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert evaluate.code_fingerprint("pairing") != first


def test_code_fingerprint_reads_the_import_closure_that_python_binds(monkeypatch):
    """The modules code_fingerprint reads are those a module reaches through the names Python
    binds when it imports it (a project module, or a function, class or table of one), followed
    transitively: computed here from the loaded modules, not from the source."""
    here = os.path.dirname(evaluate.__file__)
    project = {f[:-3] for f in os.listdir(here) if f.endswith(".py")}
    owner = lambda v: v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)

    def bound(name):                                    # the project modules whose objects `name` holds
        held = set()
        for v in vars(importlib.import_module(name)).values():
            inside = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else []
            held |= {owner(x) for x in [v, *inside] if owner(x) in project}
        return held - {name}

    def reached(name, seen):
        seen.add(name)
        for other in bound(name) - seen:
            reached(other, seen)
        return seen

    real, read = evaluate.module_source, []
    monkeypatch.setattr(evaluate, "module_source", lambda name: read.append(name) or real(name))
    for module in ("genre", "ablation", "evaluate"):
        read.clear()
        evaluate.code_fingerprint(module)
        assert sorted(read) == sorted(reached(module, set())), module
    assert {"genre", "common", "pairing", "constraints", "engine"} <= reached("genre", set())


def test_a_change_to_code_genre_runs_retrains_it_and_one_outside_does_not(tmp_path, moons_cache, monkeypatch):
    """GenRe's cache key is the code of its import closure: a new line of code in common.py (Eq. 6's
    cost, common.l1_cost, lives there) is a cache miss and a retrain; a new line in report.py,
    outside the closure, or a comment in common.py, finds the model trained before."""
    bench = dataclasses.replace(prepare("moons", 0, cache_dir=moons_cache, verbose=False), cache_dir=str(tmp_path))
    tiny = GenReConfig(d_model=16, n_enc_layers=1, n_dec_layers=1, steps=4)
    trained = lambda: sorted(p.name for p in tmp_path.glob("genre_moons_*.pt"))
    evaluate.fit_genre(bench, tiny, verbose=False)
    (first,) = trained()
    real = evaluate.module_source
    for changed, text in (("report", "CHANGED = True\n"), ("common", "# a comment\n")):
        monkeypatch.setattr(evaluate, "module_source", lambda name: real(name) + (text if name == changed else ""))
        evaluate.fit_genre(bench, tiny, verbose=False)
        assert trained() == [first]                                  # the same key: loaded, not retrained
    monkeypatch.setattr(evaluate, "module_source",
                        lambda name: real(name) + ("CHANGED = True\n" if name == "common" else ""))
    evaluate.fit_genre(bench, tiny, verbose=False)
    assert len(trained()) == 2                                       # a new key: trained again


def test_the_registry_makes_every_row_as_its_groups_say():
    """Every row name has a factory, the rows' groups cover the registry exactly, each made method
    keeps common.RecourseMethod's contract, and a row of Table 2 in paper mode differs from its
    designed row only in mode (same class, same random stream)."""
    groups = [*evaluate.GENRE_ROWS, *evaluate.POST_STEPS, *evaluate.PAPER_ROWS, *evaluate.PAPER_ROWS.values(),
              *evaluate.NNR_ROWS, *evaluate.DIFFUSION]
    assert sorted(groups) == sorted(evaluate.METHODS) and len(groups) == len(set(groups))
    for name in evaluate.METHODS:
        method = evaluate.make_method(name, 3, verbose=False)
        assert RecourseMethod in type(method).__mro__, name
    for designed, paper in evaluate.PAPER_ROWS.items():
        a, b = evaluate.make_method(designed, 3, verbose=False), evaluate.make_method(paper, 3, verbose=False)
        assert type(a) is type(b) and (a.mode, b.mode) == ("designed", "paper")
        assert {**a.get_params(), "mode": None} == {**b.get_params(), "mode": None}
    with pytest.raises(ValueError, match="unknown method 'genre_paper'; available: genre, genre_plausible"):
        evaluate.make_method("genre_paper", 0)
