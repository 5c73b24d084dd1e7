"""Guarantees every method keeps on any input: immutables fixed, valid categoricals, numeric
outputs inside the training range, same seed -> same result; and clear errors on bad input."""
import numpy as np
import pytest

from datasets import from_table
from evaluate import ClassifierConfig, make_method, train_classifier
from genre import GenReConfig

TINY = GenReConfig(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=30,
                   feature_steps=None, eval_every=15, warmup_steps=5)
METHODS = ["genre", "wachter", "nnr", "nnr_h", "nnr_dhplus"]


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
    m = make_method(name, ds.name, seed, TINY)
    m.verbose = False
    return m.fit(ds.X_train, ds.y_train, h, immutable=ds.immutable, categorical=ds.categorical,
                 groups=ds.groups)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", METHODS)
def test_guarantees_hold_for_every_method(name, seed):
    ds, h = random_data(seed)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5]
    out = fit(name, ds, h, seed).recourse(X)
    assert out.shape == X.shape
    np.testing.assert_array_equal(out[:, ds.immutable], X[:, ds.immutable])       # immutables kept
    cat = ds.categorical.copy()
    for g in ds.groups:
        np.testing.assert_array_equal(out[:, g].sum(axis=1), 1)                     # one value per group
        assert set(np.unique(out[:, g])) <= {0, 1}
        cat[g] = False
    assert set(np.unique(out[:, cat])) <= {0, 1}                                    # binary codes
    num = ~ds.categorical & ~ds.immutable
    lo, hi = ds.X_train.min(axis=0), ds.X_train.max(axis=0)
    assert np.all(out[:, num] >= lo[num] - 1e-6) and np.all(out[:, num] <= hi[num] + 1e-6)
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
    m = make_method(name, ds.name, 0, TINY)
    with pytest.raises(ValueError, match=message):
        m.fit(ds.X_train, np.zeros_like(ds.y_train) if name != "nnr_h" else ds.y_train,
              _Constant(0.1), immutable=ds.immutable, categorical=ds.categorical, groups=ds.groups)


class _Constant:
    """An h that says p for everyone."""

    def __init__(self, p):
        self.p = p

    def predict_proba(self, X):
        return np.full(len(X), self.p)
