"""gaps.py: the studies' pieces against hand computations, a tiny study end to end on moons,
and the rendering of a hand-made result."""
import json
import os

import numpy as np
import pytest

import evaluate
import gaps
from baselines import Wachter


@pytest.fixture(scope="module")
def moons(moons_cache):
    return gaps.Case("moons", 0, moons_cache, 20)


def test_row_scores_only_the_rows_asked_for(moons):
    X = moons.X_neg
    X_plus = X + np.array([0.1, -0.05], dtype=np.float32)                # every row moves by 0.15 in L1
    keep = np.arange(len(X)) % 2 == 0
    r = gaps.row(moons, "shifted", X_plus, keep, extra=3)
    assert r["n"] == keep.sum() and r["extra"] == 3 and r["variant"] == "shifted"
    assert abs(r["cost"] - 0.15) < 1e-5
    valid = evaluate.oracle_proba(moons.bench.oracle, X_plus[keep]) > 0.5
    inlier = moons.lof.predict(X_plus[keep]) == 1
    assert r["validity"] == valid.mean() and r["lof"] == inlier.mean()
    assert abs(r["score"] - (valid.mean() + inlier.mean() - 0.15 / 2)) < 1e-5


def test_fit_variant_overrides_settings_frees_immutables_and_picks_the_split(moons, monkeypatch):
    seen = {}
    real_fit = Wachter.fit

    def spy(self, X, y, h, immutable=None, **kw):
        seen.update(rows=len(X), immutable=immutable)
        return real_fit(self, X, y, h, immutable=immutable, **kw)
    monkeypatch.setattr(Wachter, "fit", spy)
    method = gaps.fit_variant("wachter_paper", moons, free_immutables=True, train_on="test", n_iter=7)
    assert method.n_iter == 7 and method.mode == "paper"
    assert seen == {"rows": len(moons.bench.ds.X_test), "immutable": None}
    with pytest.raises(ValueError, match="no setting 'n_iters'"):
        gaps.fit_variant("wachter", moons, n_iters=7)
    with pytest.raises(ValueError, match="train_on must be"):
        gaps.fit_variant("wachter", moons, train_on="dev")


def test_a_study_runs_end_to_end_and_is_json(moons_cache):
    result = gaps.wachter_study(seeds=(0,), cache_dir=moons_cache, n_test=10, datasets=("moons",))
    assert [r["variant"] for r in result["rows"]] == [
        "clamped, categoricals move (wachter)", "clamped, categoricals held",
        "not clamped, categoricals held (wachter_paper)"]
    assert all(r["n"] == 10 and set(gaps.METRICS) <= set(r) for r in result["rows"])
    json.dumps(result)
    assert result["paper"] == {}                                          # moons has no Table 2 row


def test_fork_round_seconds_is_a_positive_time(moons):
    assert 0 < gaps.fork_round_seconds(moons, n_steps=2) < 600


def hand_made():
    row = lambda seed, variant, cost, failed: {"data": "compas", "seed": seed, "variant": variant,
                                               "cost": cost, "validity": 0.5, "lof": 0.25, "score": 0.75 - cost / 7,
                                               "h_valid": 1.0, "immutable_violations": 0, "failed": failed}
    return {"study": "probe", "question": "Why?", "varied": "a thing", "counts": {"failed": "rows failing"},
            "paper": {"compas": (5.77, 0.82, 0.00, -0.00)},
            "rows": [row(0, "a", 1.0, 3), row(1, "a", 3.0, 4), row(0, "b", 2.0, 5)]}


def test_mean_rows_average_over_seeds():
    means = gaps.mean_rows(hand_made())
    assert [(m["variant"], m["seeds"]) for m in means] == [("a", [0, 1]), ("b", [0])]
    assert means[0]["cost"] == 2.0 and means[0]["failed"] == 3.5 and means[1]["failed"] == 5.0


def test_gaps_section_renders_each_variant_and_the_papers_row():
    lines = gaps.gaps_section({"studies": {"probe": hand_made()}})
    assert lines[0] == "### probe: Why?"
    body = [line for line in lines if line.startswith("| compas")]
    assert body == ["| compas | a | 2.00 | 0.50 | 0.25 | 0.46 | 1.00 | 3.50 |",
                    "| compas | b | 2.00 | 0.50 | 0.25 | 0.46 | 1.00 | 5 |",
                    "| compas | *the paper's Table 2* | 5.77 | 0.82 | 0.00 | -0.00 |  |  |"]


def test_cli_refuses_the_published_folder_and_a_repeated_seed(capsys):
    assert gaps.main(["--only", "wachter", "--out", evaluate.PUBLISHED]) == 2
    assert gaps.main(["--only", "wachter", "--out", os.path.join(evaluate.PUBLISHED, "gaps")]) == 2
    assert gaps.main(["--only", "wachter", "--seeds", "0", "0"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gaps.parse_args(["--only", "nothing"])
