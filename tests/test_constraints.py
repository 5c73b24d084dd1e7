"""Actionability constraints (constraints.py) and the methods that keep them: random
constraint sets on random tables, every output checked rule by rule against the
constraints as written (in original units), for fit-time and recourse-time rules."""
import numpy as np
import pytest
import torch

from constraints import Constraints, as_constraints
from datasets import from_table
from evaluate import ClassifierConfig, train_classifier
from genre import GenRe, GenReConfig, pairing_distribution
from engine import Settings

TINY = GenReConfig(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=30, n_bins=10, top_k=50)


def random_table(seed, n=240):
    rng = np.random.default_rng(seed)
    table = {
        "age": rng.integers(18, 80, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "member": rng.choice(["no", "yes"], n),
        "score": rng.normal(0, 1, n).round(3),
        "hours": rng.integers(10, 70, n),
    }
    logit = table["score"] + (table["colour"] == "blue") - (table["age"] - 50) / 20 + (table["hours"] - 40) / 15
    table["label"] = np.where(rng.random(n) < 1 / (1 + np.exp(-3 * logit)), "good", "bad")
    ds = from_table(table, "label", categorical=["colour", "member"], positive="good", seed=seed)
    h = train_classifier(ds.X_train, ds.y_train, ClassifierConfig(hidden=(8,), lr=1e-2, epochs=30), seed, verbose=False)
    return ds, h


def random_rules(ds, rng):
    """A random constraint set in original units: directions, a range, allowed categories."""
    numeric = ["age", "score"]                                            # hours gets a range
    increase = list(rng.choice(numeric, rng.integers(0, 2), replace=False))
    decrease = [c for c in rng.choice(numeric, rng.integers(0, 2), replace=False) if c not in increase]
    lo = float(rng.uniform(-1, 0.5)) if "score" not in increase + decrease else None
    ranges = {"hours": (float(rng.integers(40, 50)), float(rng.integers(55, 65))), "score": (lo, None)}
    colours = list(rng.choice(["red", "green", "blue"], rng.integers(1, 3), replace=False))
    allowed = {"colour": colours, "member": ["yes"]} if rng.random() < 0.5 else {"colour": colours}
    return dict(increase=increase, decrease=decrease, ranges=ranges, allowed=allowed)


def check_rules(ds, X, X_plus, spec):
    """Every rule, checked in original units and by category name, row by row -> (M,) bool kept."""
    before = [ds.describe(x) for x in X]
    after = [ds.describe(x) for x in X_plus]
    raw_b, raw_a = ds.unscale(X), ds.unscale(X_plus)
    ok = np.ones(len(X), bool)
    for i in range(len(X)):
        for c in spec["increase"]:
            j = ds.features_of(c).start
            ok[i] &= raw_a[i, j] >= raw_b[i, j] - 1e-6 * (ds.x_max[j] - ds.x_min[j])
        for c in spec["decrease"]:
            j = ds.features_of(c).start
            ok[i] &= raw_a[i, j] <= raw_b[i, j] + 1e-6 * (ds.x_max[j] - ds.x_min[j])
        for c, (lo, hi) in spec["ranges"].items():
            j, tol = ds.features_of(c).start, 1e-6 * (ds.x_max[ds.features_of(c).start] - ds.x_min[ds.features_of(c).start])
            if lo is not None:
                ok[i] &= raw_a[i, j] >= lo - tol
            if hi is not None:
                ok[i] &= raw_a[i, j] <= hi + tol
        for c, values in spec["allowed"].items():
            ok[i] &= after[i][c] in values
    return ok


def one_hot(ds, X_plus):
    """Every one-hot group of every row holds exactly one 1."""
    return all(np.array_equal(X_plus[:, g].sum(1), np.ones(len(X_plus))) for g in ds.groups)


def feasible(ds, X, spec):
    """Rows whose constraints leave some allowed value for every feature (else a method keeps x there)."""
    L, U = ds.constraints(**spec).bounds(X)
    return (L <= U + 1e-6).all(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_genre_keeps_random_constraints_given_at_fit_and_at_recourse_time(seed):
    ds, h = random_table(seed)
    rng = np.random.default_rng(100 + seed)
    spec = random_rules(ds, rng)
    rules = ds.constraints(**spec)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5][:40]
    ok_rows = feasible(ds, X, spec)
    assert ok_rows.sum() >= 10
    fit_time = GenRe(TINY, random_state=seed, verbose=False).fit(
        ds.X_train, ds.y_train, h, categorical=ds.categorical, groups=ds.groups, constraints=rules)
    plain = GenRe(TINY, random_state=seed, verbose=False).fit(
        ds.X_train, ds.y_train, h, categorical=ds.categorical, groups=ds.groups)
    for X_plus in (fit_time.recourse(X), plain.recourse(X, constraints=rules),
                   fit_time.recourse(X, tau=0.5, sigma=0.3)):             # broad draws too
        assert check_rules(ds, X, X_plus, spec)[ok_rows].all() and one_hot(ds, X_plus)
        assert not rules.violated(X, X_plus)[ok_rows].any()
    unconstrained = plain.recourse(X, tau=0.5, sigma=0.3)
    assert not check_rules(ds, X, unconstrained, spec)[ok_rows].all()     # without them, broad draws break them


def test_per_row_constraints_bind_each_row_alone():
    ds, h = random_table(3)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5][:6]
    model = GenRe(TINY, random_state=0, verbose=False).fit(ds.X_train, ds.y_train, h, categorical=ds.categorical,
                                                           groups=ds.groups)
    keep_age = ds.constraints(fixed=["age"])
    per_row = [keep_age if i % 2 == 0 else Constraints.free(ds.n_features) for i in range(6)]
    X_plus = model.recourse(X, constraints=per_row)
    age = ds.features_of("age").start
    assert np.array_equal(X_plus[::2, age], X[::2, age])
    assert np.array_equal(X_plus[1::2], model.recourse(X)[1::2])          # the free rows are as without rules
    with pytest.raises(ValueError, match="2 sets given for 6 rows"):
        model.recourse(X, constraints=per_row[:2])


def test_fit_time_constraints_shape_q_as_a_brute_force_pairing():
    """Eq. 6 under constraints: a target that breaks a rule for its source has Q = 0; the rest
    keep exp(-lambda C) renormalised, by a double loop."""
    rng = np.random.default_rng(4)
    Xs, Xd = rng.random((8, 3)).astype(np.float32), rng.random((15, 3)).astype(np.float32)
    rules = Constraints.free(3)
    rules.increase[0], rules.lo[1], rules.hi[1] = True, 0.2, 0.8
    idx, prob, keep = pairing_distribution(torch.from_numpy(Xs), torch.from_numpy(Xd), 3.0,
                                           torch.zeros(3, dtype=torch.bool), 50, constraints=rules)
    Q = np.zeros((8, 15))
    for i, x in enumerate(Xs):
        for t, xp in enumerate(Xd):
            if xp[0] >= x[0] and 0.2 <= xp[1] <= 0.8:
                Q[i, t] = np.exp(-3.0 * np.abs(x - xp).sum())
    has = Q.sum(1) > 0
    assert keep.numpy().tolist() == has.tolist()
    got = np.zeros((int(has.sum()), 15))
    np.put_along_axis(got, idx.long().numpy(), prob.numpy(), axis=1)
    np.testing.assert_allclose(got, Q[has] / Q[has].sum(1, keepdims=True), atol=1e-6)


def test_project_is_the_nearest_allowed_point():
    rules = Constraints.free(5)
    rules.increase[0] = True
    rules.lo[1], rules.hi[1] = 0.3, 0.6
    rules.hi[3] = 0.0                                                       # group member 3 may not be 1
    rules.lo[2] = 1.0                                                       # binary 2 must be 1
    X = np.array([[0.5, 0.2, 0, 1, 0], [0.5, 0.9, 1, 0, 1]], np.float32)
    X_plus = np.array([[0.4, 0.1, 0.2, 0.8, 0.3], [0.7, 0.5, 0.9, 0.6, 0.2]], np.float32)
    P = rules.project(X, X_plus, [False, False, True, True, True], [[3, 4]])
    np.testing.assert_allclose(P, [[0.5, 0.3, 1, 0, 1], [0.7, 0.5, 1, 0, 1]], atol=1e-7)
    assert not rules.violated(X, P).any() and rules.violated(X, X_plus).all()


def test_an_empty_interval_keeps_x_and_is_counted():
    rules = Constraints.free(2)
    rules.decrease[0], rules.lo[0], rules.hi[0] = True, 0.5, 0.8              # x = 0.2: may only go down, yet >= 0.5
    X = np.array([[0.2, 0.5]], np.float32)
    P = rules.project(X, np.array([[0.6, 0.5]], np.float32), [False, False])
    assert P[0, 0] == np.float32(0.2) and rules.violated(X, P).all()


def test_options_are_the_k_best_distinct_candidates_by_the_selection_rule():
    ds, h = random_table(5)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5][:8]
    model = GenRe(TINY, random_state=0, verbose=False).fit(ds.X_train, ds.y_train, h, categorical=ds.categorical,
                                                           groups=ds.groups)
    O = model.recourse(X, options=3, tau=1.0)                               # (8, 3, D)
    S = model.sample(X, n=30, tau=1.0)                                      # the same 30 candidates
    p = h.predict_proba(S.reshape(-1, S.shape[2])).reshape(8, 30)
    for i in range(8):
        distinct = []
        for c in np.argsort(-p[i], kind="stable"):
            if not any(np.array_equal(S[i, c], d) for d in distinct):
                distinct.append(S[i, c])
        expected = (distinct + [distinct[-1]] * 3)[:3]
        assert np.array_equal(O[i], np.stack(expected))
    with pytest.raises(ValueError, match="options \\(per row\\) must be a whole number of at least 1"):
        model.recourse(X, options=0)


def test_constraints_in_original_units_name_the_problem():
    ds, _ = random_table(6)
    with pytest.raises(ValueError, match="no column 'height'; columns: age, colour"):
        ds.constraints(increase=["height"])
    with pytest.raises(ValueError, match="increase 'colour': a categorical has no order"):
        ds.constraints(increase=["colour"])
    with pytest.raises(ValueError, match="range 'hours': the lower end 60 is above the upper end 35"):
        ds.constraints(ranges={"hours": (60, 35)})
    with pytest.raises(ValueError, match="allowed values for 'colour': 'pink' is not one of"):
        ds.constraints(allowed={"colour": ["pink"]})
    with pytest.raises(ValueError, match="constraints for 3 features given to a model of"):
        as_constraints(Constraints.free(3), 1, ds.n_features)


DESIGNED = ["wachter", "gs", "dice", "roar", "probe", "tap", "cchvae", "revise", "cruds", "nnr", "nnr_h",
            "nnr_dhplus", "genre_sparse"]


@pytest.mark.parametrize("name", DESIGNED)
def test_every_designed_baseline_keeps_random_constraints_at_fit_and_at_recourse(name):
    """Each baseline as designed, tiny (test_guarantees' sizes), given a random rule set at fit
    (a lender's) and, fitted without, at recourse time (a person's): every row it returns keeps
    every rule (searches project each step, NNR filters, the generative baselines project
    their decoded rows, and a failure returns the point nearest x that keeps them)."""
    from evaluate import make_method
    from test_guarantees import SMALL, TINY, VAE_EPOCHS
    ds, h = random_table(7)
    spec = random_rules(ds, np.random.default_rng(sum(map(ord, name))))      # a rule set of its own
    rules = ds.constraints(**spec)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5][:25]
    ok_rows = feasible(ds, X, spec)

    def made():
        method = make_method(name, 0, TINY, verbose=False, vae_epochs=VAE_EPOCHS)
        for field, value in SMALL.get(name, {}).items():
            setattr(method, field, value)
        return method

    roles = dict(categorical=ds.categorical, groups=ds.groups)
    at_fit = made().fit(ds.X_train, ds.y_train, h, constraints=rules, **roles).recourse(X)
    at_recourse = made().fit(ds.X_train, ds.y_train, h, **roles).recourse(X, constraints=rules)
    for X_plus in (at_fit, at_recourse):
        assert check_rules(ds, X, X_plus, spec)[ok_rows].all() and one_hot(ds, X_plus)
        assert not rules.violated(X, X_plus)[ok_rows].any()
