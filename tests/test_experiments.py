"""experiments.py: the study of where GenRe's Score comes from (exact draws from Q, the choices),
the development choice, and the plan of a run."""
import dataclasses

import numpy as np
import pytest

from common import child_seed
from datasets import load_toy
from evaluate import Benchmark, ClassifierConfig, dh_plus, metrics_of, pick_test_negatives, train_classifier
import experiments
from experiments import H_BANDS, choice_study, dh_plus_validity, draw_from_q
from genre import GenRe, GenReConfig
from test_evaluate import StubLOF, StubOracle       # valid iff x_0 > 0.5; inlier iff x_1 < 0.5


def test_q_draws_keep_immutables_and_a_huge_lambda_gives_the_nearest_neighbour():
    rng = np.random.default_rng(0)
    X_pos = rng.random((40, 4)).astype(np.float32)
    X_pos[:, 3] = rng.integers(0, 2, 40)                       # an immutable binary feature
    X = rng.random((12, 4)).astype(np.float32)
    X[:, 3] = np.arange(12) % 2
    immutable = np.array([False, False, False, True])

    S = draw_from_q(X, X_pos, 5.0, immutable, 1000, 7, seed=0)           # (12, 7, 4)
    assert S.shape == (12, 7, 4)
    assert (S[:, :, 3] == X[:, None, 3]).all()                          # every draw keeps the immutable
    rows = {tuple(r) for r in X_pos}
    assert all(tuple(r) in rows for r in S.reshape(-1, 4))              # every draw is a row of X_pos

    # lambda -> infinity: Q is a point mass on the L1-nearest row with the same immutable (brute force)
    S = draw_from_q(X, X_pos, 1e4, immutable, 1000, 3, seed=0)
    for x, s in zip(X, S):
        same = X_pos[X_pos[:, 3] == x[3]]
        nearest = same[np.abs(same - x).sum(1).argmin()]
        np.testing.assert_array_equal(s, np.repeat(nearest[None], 3, axis=0))


def test_q_draws_keep_x_where_no_target_shares_its_immutables():
    X_pos = np.array([[0.1, 0.0], [0.9, 0.0]], dtype=np.float32)
    X = np.array([[0.5, 1.0]], dtype=np.float32)
    with pytest.warns(UserWarning, match="no target"):
        S = draw_from_q(X, X_pos, 5.0, np.array([False, True]), 1000, 4, seed=0)
    np.testing.assert_array_equal(S, np.repeat(X[:, None], 4, axis=1))


def test_choice_study_agrees_with_genre_and_the_oracle_choice_is_a_bound():
    ds = load_toy("moons")
    h = train_classifier(ds.X_train, ds.y_train, ClassifierConfig(hidden=(8, 8), lr=0.05, epochs=20),
                         seed=0, verbose=False)
    bench = Benchmark(ds, StubOracle(), h, 0, {}, 0.0)
    X_neg, lof = pick_test_negatives(bench, 30), StubLOF()
    genre = GenRe(GenReConfig(d_model=16, n_enc_layers=1, n_dec_layers=1, steps=20),
                  random_state=0, verbose=False).fit(
        ds.X_train, ds.y_train, h, immutable=ds.immutable, categorical=ds.categorical)

    rows = {(r["sampler"], r["choice"]): r for r in choice_study(bench, genre, X_neg, lof)}
    assert len(rows) == 8
    # the paper's choice over the model's samples is exactly what GenRe.recourse returns, and so
    # is the plausible one with select="plausible"
    for choice, select in (("best of 10 by h", "h"), ("best of 10 by h among plausible", "plausible")):
        direct = metrics_of(X_neg, genre.recourse(X_neg, select=select), bench.oracle, lof, ds.immutable)
        assert rows[("GenRe", choice)]["score"] == pytest.approx(direct["score"])
    # the oracle's choice, by brute force: each row's best candidate by Val + LOF - Cost/d
    X_pos = ds.X_train[dh_plus(ds, h, genre.cfg_.gamma)]
    for sampler, S in (("GenRe", genre.sample(X_neg)),                 # (30, 10, 2), the study's samples
                       ("Q", draw_from_q(X_neg, X_pos, genre.cfg_.lam, ds.immutable, genre.cfg_.top_k, 10,
                                         child_seed(0, "q draws")))):
        best = [max(float(s[0] > 0.5) + float(s[1] < 0.5) - np.abs(s - x).sum() / 2 for s in cands)
                for x, cands in zip(X_neg, S)]
        assert rows[(sampler, "best of 10 by the oracle")]["score"] == pytest.approx(np.mean(best))
        # near gamma, by hand: the chosen candidates with h(x+) <= 0.8, and the share the oracle takes
        for choice, pick in (("one draw", lambda cands: cands[0]),
                             ("best of 10 by h", lambda cands: cands[np.argmax(h.predict_proba(cands))])):
            chosen = [pick(cands) for cands in S]
            near = [c for c in chosen if h.predict_proba(c[None])[0] <= 0.8]
            r = rows[(sampler, choice)]
            assert r["near_gamma"] == pytest.approx(len(near) / len(chosen))
            if near:
                assert r["near_gamma_valid"] == pytest.approx(np.mean([c[0] > 0.5 for c in near]))
            else:
                assert np.isnan(r["near_gamma_valid"])
    # choosing each row's best candidate by Val + LOF - Cost/d can only beat another choice
    for sampler in ("GenRe", "Q"):
        bound = rows[(sampler, "best of 10 by the oracle")]["score"]
        assert bound >= rows[(sampler, "one draw")]["score"] - 1e-9
        assert bound >= rows[(sampler, "best of 10 by h")]["score"] - 1e-9
        assert bound >= rows[(sampler, "best of 10 by h among plausible")]["score"] - 1e-9


class FixedH:
    """h(x) = x_1, so each row's band is set by hand."""

    def predict_proba(self, X):
        return np.asarray(X)[:, 1]


def test_dh_plus_validity_counts_the_oracles_yes_row_by_row_and_per_band():
    rng = np.random.default_rng(3)
    toy = load_toy("moons")
    X = rng.random((len(toy.X_train), 2)).astype(np.float32)     # x_0: the oracle's P(y = 1); x_1: h
    ds = dataclasses.replace(toy, X_train=X, y_train=rng.integers(0, 2, len(X)))
    bench = Benchmark(ds, StubOracle(), FixedH(), 0, {}, 0.0)
    shares = dh_plus_validity(bench, 0.7)

    rows = [(x, y) for x, y in zip(ds.X_train, ds.y_train) if y == 1 and x[1] > 0.7]   # D_h^+ by hand
    assert shares["all"] == pytest.approx(np.mean([x[0] > 0.5 for x, _ in rows]))
    for band, (lo, hi) in H_BANDS.items():
        inside = [x[0] > 0.5 for x, _ in rows if lo < x[1] <= hi]
        assert shares[band] == pytest.approx(np.mean(inside))


def test_development_candidates_are_ranked_by_their_mean_score_over_data_sets_and_seeds():
    metrics = lambda s: {"cost": 0.0, "validity": 1.0, "lof": s - 1.0, "score": s}
    x = {"a": [metrics(1.90), metrics(1.80)], "b": [metrics(1.86), metrics(1.86)], "c": [metrics(1.70), metrics(1.70)]}
    y = {"a": [metrics(1.80), metrics(1.80)], "b": [metrics(1.80), metrics(1.78)], "c": [metrics(1.99), metrics(1.99)]}
    dev = experiments.rank_candidates({"x": x, "y": y}, seeds=(0, 1), n_test=5)
    # means over seeds: a 1.85 / 1.80, b 1.86 / 1.79, c 1.70 / 1.99; over data sets a 1.825, b 1.825, c 1.845
    assert [r["candidate"] for r in dev["candidates"]] == ["c", "a", "b"] and dev["first"] == "c"
    assert dev["candidates"][1]["datasets"]["x"]["score"] == pytest.approx(1.85)
    assert dev["candidates"][0]["mean_score"] == pytest.approx(1.845)


def test_plan_runs_each_stage_once_per_data_set_and_quick_uses_one_seed():
    args = experiments.parse_args(["--quick", "--datasets", "compas", "heloc", "--only", "comparison", "lambda"])
    assert experiments.plan(args) == [("comparison", "heloc"), ("comparison", "compas")]   # heloc's takes longer
    assert args.seeds == args.generative_seeds == [0] and args.out != "results"
    args = experiments.parse_args(["--methods", "genre", "cruds", "--datasets", "adult"])
    assert experiments.plan(args) == [(stage, "adult") for stage in experiments.LONGEST_FIRST if stage != "gaps"]
    every = experiments.parse_args(["--methods", "genre", "cruds"])
    assert every.datasets == list(experiments.DATASETS) and ("gaps", "all") in experiments.plan(every)
    assert args.generative_seeds == [0, 1, 2, 3, 4]
    args = experiments.parse_args(["--methods", "genre", "--datasets", "compas", "--only", "fractions", "ablation"])
    assert experiments.plan(args) == [("ablation", "compas")]            # fractions and constrained: adult only


def test_lambda_labels_of_coinciding_points_are_joined():
    groups = experiments.label_groups([0.0, 0.01, 1.0, 0.02], [0.5, 0.52, 0.5, 0.9], [0.5, 1, 2.5, 5], (0.05, 0.05))
    assert groups == [(0.0, 0.5, [0.5, 1]), (1.0, 0.5, [2.5]), (0.02, 0.9, [5])]
