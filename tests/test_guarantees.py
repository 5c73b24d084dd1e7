"""What every method promises on any input: the output has X's shape, immutable features
keep X's exact values, binary categoricals are 0 or 1 and one-hot groups hold exactly
one 1, and the same seed gives the same result; bad input gets a clear error.
(Numeric outputs inside the training range are not promised: GenRe keeps a feature
outside D_h^+'s range where x already is.) test_the_checks_catch_each_violation shows
that each check fails on an output that breaks it."""
import numpy as np
import pytest

from datasets import from_table
from evaluate import ClassifierConfig, genre_configs, make_method, train_classifier

TINY = genre_configs(dict(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=30))
METHODS = ["genre", "genre_plausible", "wachter", "nnr", "nnr_h", "nnr_dhplus"]


def random_data(seed):
    """A random table: numeric, binary and 3-valued categoricals, an immutable group and column."""
    rng = np.random.default_rng(seed)
    n = 240
    table = {
        "age": rng.integers(18, 80, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "region": rng.choice(["north", "south", "east", "west"], n),
        "member": rng.choice(["no", "yes"], n),
        "score": rng.normal(0, 1, n).round(3),
        "height": rng.choice([160.0, 170.0, 180.0], n),
    }
    logit = (table["score"] + (table["colour"] == "blue") - (table["age"] - 50) / 20)
    table["label"] = np.where(rng.random(n) < 1 / (1 + np.exp(-4 * logit)), "good", "bad")
    ds = from_table(table, "label", categorical=["colour", "region", "member"],
                    immutable=["region", "height"], positive="good", seed=seed)
    h = train_classifier(ds.X_train, ds.y_train, ClassifierConfig(hidden=(8,), lr=1e-2, epochs=40), seed, verbose=False)
    return ds, h


def fit(name, ds, h, seed):
    return make_method(name, seed, TINY, verbose=False).fit(
        ds.X_train, ds.y_train, h, immutable=ds.immutable, categorical=ds.categorical, groups=ds.groups)


def check_guarantees(out, X, ds):
    """Assert the promises on one method's output (M, D) for the inputs X (M, D)."""
    assert out.shape == X.shape
    np.testing.assert_array_equal(out[:, ds.immutable], X[:, ds.immutable])       # immutables kept
    binary = ds.categorical.copy()
    for g in ds.groups:
        assert np.isin(out[:, g], [0.0, 1.0]).all(), f"one-hot group {g} holds a value other than 0/1"
        np.testing.assert_array_equal(out[:, g].sum(axis=1), 1)                     # one value per group
        binary[g] = False
    assert np.isin(out[:, binary], [0.0, 1.0]).all(), "a binary categorical is neither 0 nor 1"


def test_the_checks_catch_each_violation():
    """Each promise, broken on purpose in a valid output, makes check_guarantees fail."""
    ds, _ = random_data(0)
    X = ds.X_test
    in_group = np.isin(np.arange(ds.n_features), np.concatenate(ds.groups))
    binary = np.flatnonzero(ds.categorical & ~in_group)                            # "member"
    group = next(g for g in ds.groups if not ds.immutable[g].any())                 # "colour"
    immutable = np.flatnonzero(ds.immutable & ~in_group)                           # "height"
    assert len(binary) and len(immutable)
    check_guarantees(X.copy(), X, ds)                                               # the input itself is valid
    broken = [X.copy() for _ in range(4)]
    broken[0][0, immutable[0]] += 0.25                                              # an immutable moved
    broken[1][0, group] = 1.0                                                       # two values in a group
    broken[2][0, group] = 0.0                                                       # no value in a group
    broken[3][0, binary[0]] = 0.5                                                   # a binary code at 0.5
    for bad in broken + [X[:, :-1]]:                                                # ... and a feature lost
        with pytest.raises(AssertionError):
            check_guarantees(bad, X, ds)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", METHODS)
def test_guarantees_hold_for_every_method(name, seed):
    ds, h = random_data(seed)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5]
    out = fit(name, ds, h, seed).recourse(X)
    check_guarantees(out, X, ds)
    assert not np.array_equal(out, X)                                               # it did give recourse
    again = fit(name, ds, h, seed).recourse(X)                                      # same seed, same result
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("name", METHODS)
def test_bad_inputs_at_recourse_time(name):
    ds, h = random_data(0)
    m = fit(name, ds, h, 0)
    d = ds.n_features
    with pytest.raises(ValueError, match=f"has {d - 1} features, the model was fitted on {d}"):
        m.recourse(ds.X_test[:3, :-1])
    bad = ds.X_test[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values \\(feature 2\\)"):
        m.recourse(bad)
    with pytest.raises(ValueError, match="no rows: nothing to give recourse to"):
        m.recourse(ds.X_test[:0])


@pytest.mark.parametrize("name, message", [
    ("genre", "D_h\\^\\+ is empty"), ("nnr_dhplus", "pool 'dhplus' is empty"), ("nnr_h", "pool 'h' is empty")])
def test_empty_positive_pool(name, message):
    ds, h = random_data(0)
    m = make_method(name, 0, TINY, verbose=False)
    with pytest.raises(ValueError, match=message):
        m.fit(ds.X_train, np.zeros_like(ds.y_train) if name != "nnr_h" else ds.y_train,
              _Constant(0.1), immutable=ds.immutable, categorical=ds.categorical, groups=ds.groups)


class _Constant:
    """An h that says p for everyone."""

    def __init__(self, p):
        self.p = p

    def predict_proba(self, X):
        return np.full(len(X), self.p)
