"""What every method promises on any input: the output has X's shape, immutable features
keep X's exact values, binary categoricals are 0 or 1 and one-hot groups hold exactly
one 1, a row the method counts as a success is one h accepts (and so a real change),
and the same seed gives the same result; bad input gets a clear error.
(Numeric outputs inside the training range are not promised: GenRe keeps a feature
outside D_h^+'s range where x already is.) test_the_checks_catch_each_violation shows
that each check fails on an output that breaks it.

Every method of evaluate.METHODS that promises to keep the immutables runs (all but the
paper's SVDD on a diffusion model, which does not: Table 4), each in both modes, made by make_method as the
benchmark makes it, then shrunk to a tiny configuration so that all of them take a few
seconds: GenRe with TINY, the VAEs of CCHVAE, REVISE and CRUDS with 3 epochs and small
layers, and each search with fewer iterations (SMALL). The promises hold at any size,
since every method enforces them when it builds its output, not by training well."""
import functools

import numpy as np
import pytest

from common import torch_threads
from datasets import from_table
from evaluate import METHODS as ALL_METHODS, NNR_ROWS, ClassifierConfig, genre_configs, make_method, train_classifier

METHODS = [m for m in ALL_METHODS if m not in ("diffusion_svdd5", "diffusion_svdd10")]

TINY = genre_configs(dict(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=30))
VAE_EPOCHS = 3
SMALL = {  # iteration caps by method (both modes), set on the made method as sklearn's set_params would
    "wachter": dict(n_iter=100), "gs": dict(n_samples=200), "dice": dict(n_iter=100, n_rounds=2),
    "roar": dict(n_iter=300, n_lime=300), "probe": dict(n_iter=50, n_rounds=3, n_mc=300),
    "tap": dict(n_steps=100, n_iter=40, n_rounds=2),
    "cchvae": dict(vae_layers=(32, 16, 4), max_iter=50, n_search_samples=20),
    "revise": dict(vae_layers=(32, 16, 4), n_iter=100), "cruds": dict(vae_layers=(32, 16, 4), n_iter=100),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Every method on one torch thread, as the benchmark runs them (evaluate.run_method):
    their tensors are small, and on a busy 2-core machine two threads run them 4x slower."""
    with torch_threads(1):
        yield


@functools.lru_cache(maxsize=None)
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


def fit(name, ds, h, seed, **given):
    """The method made as the benchmark makes it, shrunk, fitted; `given`: constraints, domain."""
    method = make_method(name, seed, TINY, verbose=False, vae_epochs=VAE_EPOCHS)
    if name.startswith("diffusion"):                             # a small diffusion model (test_diffusion's)
        from test_diffusion import TINY as TINY_DIFFUSION
        method.cfg = TINY_DIFFUSION
    for field, value in SMALL.get(name.removesuffix("_paper"), {}).items():
        assert hasattr(method, field), f"{name} has no {field}"
        setattr(method, field, value)
    return method.fit(ds.X_train, ds.y_train, h, immutable=ds.immutable, categorical=ds.categorical,
                      groups=ds.groups, **given)


@functools.lru_cache(maxsize=None)
def fitted(name, seed):
    """One fit per method and seed, shared by the tests that only ask for recourse."""
    ds, h = random_data(seed)
    return fit(name, ds, h, seed)


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
    # check_successes: row 0 handed back unchanged yet counted as found, and no row with a recourse
    _, h = random_data(0)
    X_neg = X[h.predict_proba(X) <= 0.5]
    nnr = fitted("nnr_dhplus", 0)
    out = nnr.recourse(X_neg)
    check_successes(type("Reported", (), {"n_failed_": int((h.predict_proba(out) <= 0.5).sum())})(), "x", out, X_neg, h)
    one_back = np.concatenate([X_neg[:1], out[1:]])                                 # row 0 given x itself
    boasts = type("Boasts", (), {"n_failed_": 0})()                                # claims success on every row
    with pytest.raises(AssertionError, match="misses rows h rejects"):
        check_successes(boasts, "x", np.concatenate([out[:-1], X_neg[-1:]]), X_neg, h)
    for method, result in ((boasts, one_back), (object(), X_neg)):
        with pytest.raises(AssertionError):
            check_successes(method, "x", result, X_neg, h)


def check_successes(method, name, out, X, h):
    """A method's own success test (n_failed_ counts the rows that miss it) includes h's
    acceptance, so it fails at least every row h rejects; the rows h accepts are each a real
    change of x (h rejected x itself), and there is at least one."""
    accepted = h.predict_proba(out) > 0.5                                           # (M,)
    if name not in NNR_ROWS:                    # NNR's n_failed_ counts rows with no pool row to copy
        n_failed = getattr(method, "n_failed_", None)                              # GenRe reports none
        assert n_failed is None or n_failed >= int((~accepted).sum()), "n_failed_ misses rows h rejects"
    assert accepted.any(), "no row got a recourse h accepts"
    assert (out[accepted] != X[accepted]).any(axis=1).all()                        # a change, not x back


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", METHODS)
def test_guarantees_hold_for_every_method(name, seed):
    ds, h = random_data(seed)
    X = ds.X_test[h.predict_proba(ds.X_test) <= 0.5]
    method = fitted(name, seed)
    out = method.recourse(X)
    check_guarantees(out, X, ds)
    check_successes(method, name, out, X, h)
    if seed == 0:                                                                   # same seed, same result
        np.testing.assert_array_equal(out, fit(name, ds, h, seed).recourse(X))


@pytest.mark.parametrize("name", METHODS)
def test_bad_inputs_at_recourse_time(name):
    ds, h = random_data(0)
    m = fitted(name, 0)
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
