"""The data's domain: a numeric feature of whole numbers takes whole numbers only, every
designed method returns profiles in it (constraints still kept), and what is shown is what
is scored. Checked against brute force (the nearest allowed value by enumeration) and
against the data's own rows (bit-identical when rounded)."""
import numpy as np
import pytest

import evaluate
from constraints import Domain
from datasets import from_table, load
from test_guarantees import METHODS, fit, random_data

DESIGNED = [m for m in METHODS if not m.endswith("_paper")]


def test_rounding_is_the_nearest_allowed_value_inside_the_bounds_by_brute_force():
    rng = np.random.default_rng(0)
    resolution, span = np.array([1.0, 0.0, 5.0]), np.array([62.0, 3.0, 40.0])
    domain = Domain(resolution, span)
    X = rng.uniform(-0.2, 1.2, (300, 3)).astype(np.float32)
    L = np.where(rng.random((300, 3)) < 0.5, rng.uniform(0, 0.6, (300, 3)), -np.inf)
    U = np.where(rng.random((300, 3)) < 0.5, rng.uniform(0.4, 1, (300, 3)), np.inf)
    out = domain.round(X, L, U)
    np.testing.assert_array_equal(out[:, 1], X[:, 1])                          # continuous: as it is
    for j in (0, 2):
        grid = np.arange(-40, 100) * resolution[j] / span[j]                   # every allowed value
        for i in range(len(X)):
            inside = grid[(grid >= L[i, j] - 1e-9) & (grid <= U[i, j] + 1e-9)]
            pool = inside if len(inside) else grid                             # none inside: the nearest
            want = pool[np.argmin(np.abs(pool - X[i, j]))]
            assert out[i, j] == np.float32(want), (i, j, X[i, j], L[i, j], U[i, j])


def test_the_data_is_in_its_own_domain_and_a_rounded_value_is_bit_identical_to_a_row():
    for name in ("compas", "adult"):
        ds = load(name)
        domain = ds.domain()
        assert not domain.off_grid(ds.X_train).any() and not domain.off_grid(ds.X_test).any()
        discrete = np.flatnonzero(domain.discrete)
        assert {ds.feature_names[j] for j in discrete} >= {"age"}
        noisy = ds.X_train[:500] + np.float32(0.3) * np.float32(domain.resolution / domain.span)
        np.testing.assert_array_equal(domain.round(noisy)[:, discrete], ds.X_train[:500, discrete])


def test_the_resolution_is_a_role_the_user_can_set_and_bad_ones_are_refused():
    ds, _ = random_data(0)
    res = dict(zip(ds.feature_names, ds.resolution))
    assert res["age"] == 1 and res["height"] == 1 and res["score"] == 0 and res["member"] == 0
    assert dict(zip(ds.feature_names, ds.with_resolution(continuous=["age"]).resolution))["age"] == 0
    assert dict(zip(ds.feature_names, ds.with_resolution(resolution={"height": 10}).resolution))["height"] == 10
    for kwargs, message in ((dict(resolution={"height": 7}), "the training value 1[678]0 is not a multiple of 7"),
                            (dict(resolution={"colour": 1}), "not a numeric column"),
                            (dict(resolution={"age": -1}), "must be a positive number"),
                            (dict(continuous=["nope"]), "not a numeric column")):
        with pytest.raises(ValueError, match=message):
            ds.with_resolution(**kwargs)


def test_describe_shows_exactly_the_profile_it_is_given():
    ds, _ = random_data(0)
    x = ds.X_test[0].copy()
    age = ds.feature_names.index("age")
    assert ds.describe(x)["age"] == f"{ds.unscale(x[None])[0, age]:g}"           # whole: shown whole
    x[age] += np.float32(0.37 / (ds.x_max[age] - ds.x_min[age]))                 # 0.37 years off the grid
    assert ds.describe(x)["age"].endswith(".37")                                 # shown as it is, not rounded


@pytest.mark.parametrize("name", DESIGNED)
def test_every_designed_method_returns_whole_numbers_and_keeps_its_constraints(name):
    """Given the domain and a lender's rules, every whole-number feature of every recourse is a
    whole number in original units, every rule holds where it can, and describe() shows the
    very numbers the metrics score."""
    ds, h = random_data(0)
    rules = ds.constraints(increase=["age"], ranges={"age": (None, 70.0)})
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5]
    method = fit(name, ds, h, 0, constraints=None if name.startswith("diffusion") else rules, domain=ds.domain())
    out = method.recourse(X)
    whole = ds.resolution == 1
    raw = np.round(ds.unscale(out))                                            # the whole numbers nearest
    np.testing.assert_array_equal(out[:, whole], ds.scale(raw)[:, whole])      # ... are exactly what it returned
    if not name.startswith("diffusion"):
        feasible = ~rules.violated(X, X)                                       # x itself keeps them
        assert not rules.violated(X[feasible], out[feasible]).any()
    for x_plus, values in zip(out[:5], raw[:5]):                                 # shown = scored: the numbers
        shown = ds.describe(x_plus)                                              # printed scale back to x+
        assert all(float(shown[ds.feature_names[j]]) == values[j] for j in np.flatnonzero(whole))


def test_a_paper_row_runs_as_the_paper_ran_it_whatever_the_domain():
    ds, h = random_data(0)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5]
    with_domain = fit("wachter_paper", ds, h, 0, domain=ds.domain()).recourse(X)
    np.testing.assert_array_equal(with_domain, fit("wachter_paper", ds, h, 0).recourse(X))


def test_a_users_csv_is_in_its_domain_unless_a_column_is_said_continuous(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    years, income = rng.integers(0, 30, n), rng.normal(50, 10, n).round(2)
    y = (years / 10 + income / 20 + rng.normal(0, 0.5, n) > 4.5).astype(int)
    path = tmp_path / "loans.csv"
    path.write_text("years,income,y\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(years, income, y)))
    args = evaluate.parse_args(["--csv", str(path), "--target", "y"])
    ds = evaluate.data_from_args(args)
    assert list(ds.resolution) == [1.0, 0.0] and evaluate.in_domain_default(ds)
    off = evaluate.data_from_args(evaluate.parse_args(["--csv", str(path), "--target", "y", "--continuous", "years"]))
    assert list(off.resolution) == [0.0, 0.0]
    assert not evaluate.in_domain_default(load("compas"))                        # as results/ was made
