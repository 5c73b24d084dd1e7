"""report.py and tables.py: generated claims agree with the numbers, the comparison table sets the paper's
row after a method's last mode, and the README's tables agree with the results files."""
import os
import re

import numpy as np
import pytest

import report
import tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_results(scores: dict, name="compas") -> dict:
    """A results dict as evaluate.summarise writes it, from per-seed Scores of each method."""
    methods = {}
    for m, per_seed in scores.items():
        s = np.array(per_seed)
        methods[m] = {"cost": 0.5, "validity": 1.0, "lof": 1.0, "score": float(s.mean()),
                      "score_std": float(s.std(ddof=1)), "score_per_seed": s.tolist(),
                      **{f"{k}_std": 0.0 for k in ("cost", "validity", "lof")},
                      "immutable_violations": 0, "constraint_violations": None, "features_changed": 3.0,
                      "failed": 0, "seconds": 1.0}
    return {"dataset": name, "n_features": 7, "n_test": 200, "seeds": [0, 1, 2],
            "h_test_accuracy": 0.7, "methods": methods}


def test_claim_names_the_highest_mean_and_counts_wins_by_seed():
    res = fake_results({"genre": [1.90, 1.80, 1.95], "nnr_dhplus": [1.91, 1.89, 1.86], "genre_plausible": [1.5, 1.6, 1.7]})
    text = report.claim(res)
    # means: genre 1.8833, nnr_dhplus 1.8867 -> nnr_dhplus is highest; per seed: nnr, nnr, genre
    assert text.startswith("On compas, nnr_dhplus has the highest mean Score, 1.887")
    assert "at 2 of 3 seeds" in text and "next is genre at 1.883" in text
    assert report.winners_per_seed(res) == ["nnr_dhplus", "nnr_dhplus", "genre"]
    assert "sample std" in text and "genre_plausible scores 1.600" in text     # both GenRe rows are named


def test_mean_std_shows_no_spread_for_one_seed():
    assert tables.mean_std({"score": 1.234, "score_std": None}, "score") == "1.23"
    assert tables.mean_std({"score": 1.234, "score_std": 0.05}, "score") == "1.23 ± 0.05"


def test_paper_rows_follow_the_last_mode_of_a_method():
    res = fake_results({"genre": [1, 1, 1], "genre_plausible": [1, 1, 1], "dice": [1, 1, 1], "dice_paper": [1, 1, 1],
                        "nnr": [1, 1, 1]})
    rows = tables.method_rows(res, with_paper=True)
    names = [row[0] for row in rows]
    assert names == ["genre", tables.paper_label("genre"), "genre_plausible", "dice", "dice_paper",
                     tables.paper_label("dice"), "nnr"]                 # the paper's GenRe row is the genre row's
    assert rows[0][5:8] == ["3.0", "0", "–"] and all(len(r) == len(rows[0]) for r in rows)


def test_ablation_table_shows_each_change_against_the_first_row_with_its_spread():
    row = lambda label, score, change, std: {"label": label, "datasets": {"compas": {
        "score": score, "lof": 0.9, "distinct": 12.0, "fit_seconds": 30.0, "change": change, "change_std": std}}}
    lines = report.ablation_section({"seeds": [0, 1], "n_test": 200, "first": "base",
                                     "rows": [row("base", 1.8, 0.0, 0.0), row("lr", 1.75, -0.05, 0.02)]})
    assert "| base | 1.800 | 0.90 | 12 | 30 |" in lines
    assert "| lr | 1.750 (-0.050 ± 0.020) | 0.90 | 12 | 30 |" in lines


def block(text: str, marker: str) -> str:
    return text[text.index(f"<!-- {marker}:start -->") + len(f"<!-- {marker}:start -->"):
                text.index(f"<!-- {marker}:end -->")].strip()


def test_readme_tables_are_the_results_files_rendered():
    """The README's results table is exactly what report.py makes of results/*.json, and the
    toy table is on results/README.md."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    folder = os.path.join(ROOT, "results")
    results = {n: report.load_json(os.path.join(folder, f"{n}.json")) for n in ("adult", "compas", "heloc")}
    assert block(readme, "results") == report.headline(report.with_generative(results, folder),
                                                          report.HEADLINE_METHODS, ("genre",)).strip()
    toys = report.load_json(os.path.join(folder, "toy2d.json"))
    assert report.toy_table(toys) in report.results_readme(folder)
    # and the published results/README.md is the rendering of the same files
    assert open(os.path.join(folder, "README.md")).read() == report.results_readme(folder)


def test_agreement_table_shows_h_acceptance_beside_val_and_latent_units_per_seed():
    res = {"compas": {"methods": {"cruds_paper": {"h_valid": 1.0, "validity": 0.29, "active_units_per_seed": [0, 3, 8]},
                                  "wachter": {"h_valid": 0.995, "validity": 0.5}}}}
    lines = report.agreement_section(res)
    assert "| cruds_paper | 1.00 / 0.29 (units [0, 3, 8]) |" in lines and "| wachter | 0.99 / 0.50 |" in lines
    old = {"compas": {"methods": {"wachter": {"validity": 0.5}}}}       # results from before h_valid: no table
    assert report.agreement_section(old) == []


def test_the_lof_of_real_rows_is_shown_beside_a_table_where_the_run_measured_it(moons_cache):
    """evaluate records, per seed, the share of D_h^+ and of the test negatives the metric's LOF
    calls inliers (the same LOF.predict as the metric's), and the comparison shows them."""
    import evaluate
    res = evaluate.run_benchmark("moons", ["nnr"], [0], 30, moons_cache, verbose=False)
    bench = evaluate.prepare("moons", 0, cache_dir=moons_cache, verbose=False)
    lof = evaluate.fit_metric_lof(bench)
    X_pos = bench.ds.X_train[evaluate.dh_plus(bench.ds, bench.h, 0.7)]
    ref = res["lof_reference_per_seed"]
    assert ref["dh_plus"] == [float(np.mean(lof.predict(X_pos) == 1))]
    assert ref["test_negatives"] == [float(np.mean(lof.predict(evaluate.pick_test_negatives(bench, 30)) == 1))]
    lines = report.comparison_section({"moons": res})
    assert f"GenRe's targets D_h^+ {ref['dh_plus'][0]:.2f}, the test negatives themselves" in " ".join(lines)
