"""The Python interface as a careless or hostile user meets it, and as a practitioner who brings
their own model: per-call settings checked like the config's, constraints that know their data
set, masks that are masks, scikit-learn's clone, and any fitted binary classifier as h where the
method allows it. Each bad input is a one-line ValueError naming the problem, before any training
where it can be known up front."""
import types

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingClassifier

import common
import evaluate
from baselines import ANY_CLASSIFIER, NNR, SEARCH_METHODS, GrowingSpheres
from constraints import Constraints, revert_unneeded
from datasets import from_table
from diffusion import DiffusionConfig, DiffusionQ, DiffusionSVDD
from engine import Settings
from generative import GENERATIVE_METHODS, CCHVAE
from genre import GenRe, GenReConfig

TINY = GenReConfig(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=30, n_bins=10, top_k=50)
TINY_DIFFUSION = DiffusionConfig(width=16, train_steps=30, batch_size=64, n_steps=8, n_samples=3, n_candidates=3)


def loans(names=("income", "years", "city"), n=300, seed=0):
    """The README's table (numbers and a three-valued city), its columns named `names`."""
    rng = np.random.default_rng(seed)
    income, years, city = rng.normal(50, 15, n).round(1), rng.integers(0, 30, n), rng.choice(["Lyon", "Oslo", "Pune"], n)
    good = income / 15 + years / 10 + (city == "Oslo") > 5.5
    return {names[0]: income, names[1]: years, names[2]: city, "approved": np.where(good, "yes", "no")}


def dataset(names=("income", "years", "city")):
    return from_table(loans(names), "approved", categorical=[names[2]], immutable=[names[2]], positive="yes")


def roles(ds):
    return dict(immutable=ds.immutable, categorical=ds.categorical, groups=ds.groups)


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def fitted():
    """GenRe fitted with a scikit-learn classifier as h, and a lender's rule from the Dataset."""
    ds = dataset()
    h = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(ds.X_train, ds.y_train)
    genre = GenRe(TINY, random_state=0, verbose=False, settings=Settings(eval_every=10))
    genre.fit(ds.X_train, ds.y_train, h, constraints=ds.constraints(increase=["years"]), **roles(ds))
    X = ds.X_test[h.predict_proba(ds.X_test)[:, 1] <= 0.5][:6]
    return genre, ds, h, X


# ----------------------------------------------------------------------------- 7. per-call settings

def test_per_call_overrides_obey_the_configs_own_rules(fitted):
    genre, ds, h, X = fitted
    refused = [(dict(tau=float("inf")), "GenReConfig.tau must be a positive number, got inf"),
               (dict(tau=float("nan")), "GenReConfig.tau must be a positive number, got nan"),
               (dict(tau=0), "GenReConfig.tau must be a positive number, got 0"),
               (dict(tau=-1), "GenReConfig.tau must be a positive number, got -1"),
               (dict(sigma=float("nan")), "GenReConfig.sigma must be at least 0, got nan"),
               (dict(sigma=-0.5), "GenReConfig.sigma must be at least 0, got -0.5")]
    for call in (genre.recourse, genre.sample):
        for override, message in refused:
            with pytest.raises(ValueError) as err:
                call(X, **override)
            assert one_line(err).startswith(message)
    for n in (0, -3):
        with pytest.raises(ValueError, match=f"GenReConfig.n_samples must be at least 1, got {n}"):
            genre.sample(X, n=n)
    with pytest.raises(ValueError, match="GenReConfig.select must be one of"):
        genre.recourse(X, select="best")
    assert genre.sample(X, n=2, tau=1.0, sigma=0.01).shape == (len(X), 2, ds.n_features)


# ----------------------------------------------------------------------------- 8. a rule that leaves no pair

def test_a_fit_time_rule_that_leaves_no_target_names_the_rule_and_the_way_out():
    ds = dataset()
    h = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(ds.X_train, ds.y_train)
    no_one = ds.constraints(ranges={"income": (1000, 2000)})            # no training row earns that much
    with pytest.warns(UserWarning, match="constraints given to fit"), pytest.raises(ValueError) as err:
        GenRe(TINY, verbose=False).fit(ds.X_train, ds.y_train, h, constraints=no_one, **roles(ds))
    message = one_line(err)
    assert "same immutable features" not in message
    assert "constraints given to fit" in message and "pass them to recourse instead of fit" in message
    assert "--constraints-at recourse" in message


# ----------------------------------------------------------------------------- 11. constraints know their data set

def test_constraints_built_for_another_data_set_are_refused(fitted, tmp_path):
    genre, ds, h, X = fitted
    other = dataset(("salary", "tenure", "town"))                      # the same width, other features
    theirs = other.constraints(increase=["tenure"])
    assert ds.constraints().names == tuple(ds.feature_names) and theirs.n_features == ds.n_features
    with pytest.raises(ValueError, match="constraints built for another data set: their feature 0 is 'salary', "
                                         "where the data has 'income'") as err:
        genre.recourse(X, constraints=theirs)                          # GenRe kept its fit-time rules' names
    one_line(err)
    with pytest.raises(ValueError, match="another data set"):
        genre.recourse(X, constraints=[theirs] * len(X))
    genre.save(tmp_path / "genre.pt")
    with pytest.raises(ValueError, match="another data set"):          # the names are saved with the model
        GenRe.load(tmp_path / "genre.pt", h=h, verbose=False).recourse(X, constraints=theirs)
    nnr = NNR().fit(ds.X_train, ds.y_train, h, constraints=ds.constraints(increase=["years"]), **roles(ds))
    with pytest.raises(ValueError, match="another data set"):
        nnr.recourse(X, constraints=theirs)
    bench = evaluate.Benchmark(ds, None, h, 0, {}, 0.0, constraints=theirs)   # evaluate knows the data's names
    with pytest.raises(ValueError, match="another data set"):
        evaluate.fit_one(NNR(), bench)
    hand_made = Constraints.free(ds.n_features)                        # no names: taken as it is
    assert genre.recourse(X, constraints=hand_made).shape == X.shape


def test_constraints_refuse_ragged_fields_and_non_finite_bounds():
    free = Constraints.free(3)
    with pytest.raises(ValueError) as err:
        Constraints(free.fixed, free.increase, free.decrease, free.lo, free.hi[:2])
    assert one_line(err) == ("Constraints' fields must share one shape, (D,) or (M, D); got fixed (3,), "
                             "increase (3,), decrease (3,), lo (3,), hi (2,)")
    with pytest.raises(ValueError, match="infinite"):
        Constraints(free.fixed, free.increase, free.decrease, [np.inf, 0, 0], free.hi)
    with pytest.raises(ValueError, match="name 2 features for rules on 3"):
        Constraints.free(3, names=["a", "b"])
    ds = dataset()
    for bad in (float("inf"), float("nan"), "high"):
        with pytest.raises(ValueError, match="range 'income': the upper end .* is not a finite number") as err:
            ds.constraints(ranges={"income": (None, bad)})             # what the run's JSON would have held
        one_line(err)


# ----------------------------------------------------------------------------- 12. masks are masks

def test_an_index_list_is_refused_where_a_mask_is_expected(fitted):
    genre, ds, h, X = fitted
    with pytest.raises(ValueError) as err:
        GenRe(TINY, verbose=False).fit(ds.X_train, ds.y_train, h, immutable=[0, 1, 2, 3, 4])
    assert one_line(err).startswith("immutable must be a bool mask (True where the feature is immutable), "
                                    "got int64 values [0, 1, 2, 3, 4]; from feature indices, np.isin(np.arange(5)")
    with pytest.raises(ValueError, match="categorical must be a bool mask"):
        NNR().fit(ds.X_train, ds.y_train, h, categorical=np.ones(5))
    mask = np.isin(np.arange(5), [1, 2, 3])                            # the way the message shows
    assert common.as_mask(list(mask), 5, "immutable").tolist() == [False, True, True, True, False]


# ----------------------------------------------------------------------------- 13. clone

@pytest.mark.parametrize("cls", [GenRe, NNR, *SEARCH_METHODS.values(), *GENERATIVE_METHODS.values(), DiffusionQ,
                                 DiffusionSVDD])
def test_clone_gives_an_unfitted_copy_with_the_same_parameters(cls):
    key = "gamma" if cls is NNR else "random_state"
    method = cls(**{key: 7})
    copy = clone(method)
    assert type(copy) is cls and copy is not method and copy.get_params() == method.get_params()
    assert copy.set_params(**{key: 9}) is copy and (copy.get_params()[key], method.get_params()[key]) == (9, 7)


def test_clone_of_a_fitted_genre_keeps_the_settings_and_drops_the_fit(fitted):
    genre = fitted[0]
    copy = clone(genre)
    assert copy.get_params()["cfg"] == genre.cfg and copy.cfg is not genre.cfg
    assert not hasattr(copy, "model_") and copy.set_params(random_state=3).random_state == 3


# ----------------------------------------------------------------------------- 14. constructor arguments

@pytest.mark.parametrize("arguments, message", [
    (dict(cfg={"steps": 10}), "cfg must be a GenReConfig, got a dict (GenReConfig(**d) builds one from a dict)"),
    (dict(random_state="abc"), "random_state must be a whole number from 0 to 2**32 - 1 (a seed) or None, got 'abc'"),
    (dict(random_state=1.5), "random_state must be a whole number"),
    (dict(settings={"threads": 2}), "settings must be an engine.Settings, got a dict"),
])
def test_bad_constructor_arguments_are_one_line_at_fit(arguments, message):
    ds = dataset()
    with pytest.raises(ValueError) as err:
        GenRe(**{"verbose": False, **arguments}).fit(ds.X_train, ds.y_train, None)
    assert one_line(err).startswith(message)


# ----------------------------------------------------------------------------- 16. any fitted classifier as h

class ByClass:
    """A classifier with scikit-learn's (N, 2) predict_proba, its columns in the order of classes_."""

    def __init__(self, classes, columns=2):
        self.classes_, self.columns = np.array(classes), columns

    def predict_proba(self, X):
        p = np.asarray(X, dtype=np.float64)[:, 0].clip(0, 1)
        return np.stack([p, 1 - p] + [np.zeros_like(p)] * (self.columns - 2), axis=1)


def test_predict_proba_with_one_column_per_class_is_read_by_classes_():
    X = np.random.default_rng(0).random((6, 3))
    np.testing.assert_array_equal(common.check_classifier(ByClass([1, 0]), X), X[:, 0])      # class 1 first
    np.testing.assert_array_equal(common.probability_of_1(ByClass([0, 1]), X), 1 - X[:, 0])
    for h, message in ((ByClass([0, 1, 2], columns=3), "its classes_ are \\[0, 1, 2\\] and predict_proba gives 3"),
                       (ByClass(["no", "yes"]), "binary classifier of the labels 0 and 1")):
        with pytest.raises(ValueError, match=message) as err:
            common.check_classifier(h, X)
        one_line(err)


def test_genre_returns_the_sample_a_scikit_learn_h_rates_highest(fitted):
    genre, ds, h, X = fitted
    S = genre.sample(X)                                                # (M, n, D)
    p = h.predict_proba(S.reshape(-1, ds.n_features))[:, 1].reshape(S.shape[:2])
    np.testing.assert_array_equal(genre.recourse(X), S[np.arange(len(X)), p.argmax(1)])


def test_the_benchmark_and_the_sparsity_step_ask_a_scikit_learn_h_by_classes_(fitted):
    genre, ds, h, X = fitted
    bench = evaluate.Benchmark(ds, None, h, 0, {}, 0.0)
    picked = evaluate.pick_test_negatives(bench, 5)
    assert (h.predict_proba(picked)[:, 1] <= 0.5).all()
    X_plus = genre.recourse(X)
    sparse = revert_unneeded(X, X_plus, h, ds.categorical, ds.groups)
    accepted = h.predict_proba(X_plus)[:, 1] > 0.5
    assert (h.predict_proba(sparse[accepted])[:, 1] > 0.5).all()


# ----------------------------------------------------------------------------- 17. methods that need h's logits

ANY_H = {"NNR": lambda: NNR(),
         "GrowingSpheres": lambda: GrowingSpheres(n_samples=100, max_shells=200),
         "CCHVAE": lambda: CCHVAE(vae_epochs=1, vae_layers=(16, 8, 4), max_iter=30),
         "DiffusionQ": lambda: DiffusionQ(cfg=TINY_DIFFUSION),
         "DiffusionSVDD": lambda: DiffusionSVDD(cfg=TINY_DIFFUSION, keep_immutables=True)}


def test_any_classifier_names_exactly_the_methods_that_take_any_h(fitted):
    """Each named method fits and gives recourse with a scikit-learn h (GenRe: the fixture);
    every other baseline refuses it at fit, in one line naming itself and the alternatives."""
    genre, ds, h, X = fitted
    assert set(ANY_CLASSIFIER.replace(" or ", ", ").split(", ")) == {"GenRe", *ANY_H}
    for name, make in ANY_H.items():
        X_plus = make().fit(ds.X_train, ds.y_train, h, **roles(ds)).recourse(X)
        assert X_plus.shape == X.shape and (X_plus[:, ds.immutable] == X[:, ds.immutable]).all(), name
    needs_logits = {cls.__name__: cls for cls in [*SEARCH_METHODS.values(), *GENERATIVE_METHODS.values()]
                    if cls.__name__ not in ANY_H}
    assert set(needs_logits) == {"Wachter", "DiCE", "ROAR", "PROBE", "TAP", "REVISE", "CRUDS"}
    for name, cls in needs_logits.items():
        with pytest.raises(ValueError) as err:
            cls().fit(ds.X_train, ds.y_train, h, **roles(ds))
        assert one_line(err) == (f"{name} needs a differentiable h, a torch.nn.Module whose forward gives logits; "
                                 f"GradientBoostingClassifier is not one: with any fitted classifier use {ANY_CLASSIFIER}")


def test_growing_spheres_asks_a_scikit_learn_h_only_for_predictions(fitted):
    """Every recourse GS reports found is one h accepts, by h's own predict_proba."""
    genre, ds, h, X = fitted
    gs = GrowingSpheres(n_samples=100, max_shells=200).fit(ds.X_train, ds.y_train, h, **roles(ds))
    X_plus = gs.recourse(X)
    accepted = h.predict_proba(X_plus)[:, 1] > 0.5
    assert accepted.sum() == len(X) - gs.n_failed_ and accepted.any()


# ----------------------------------------------------------------------------- 18. DataFrame-like tables

class FakeFrame:
    """What from_table may use of a pandas DataFrame: .columns, and frame[name] gives a column."""

    def __init__(self, table):
        self.table = table
        self.columns = list(table)

    def __getitem__(self, name):
        return list(self.table[name])


def test_from_table_takes_any_mapping_of_columns_or_a_data_frame():
    table = loans()
    args = dict(target="approved", categorical=["city"], immutable=["city"], positive="yes")
    ds = from_table(table, **args)
    for same in (FakeFrame(table), types.MappingProxyType(table)):
        other = from_table(same, **args)
        assert other.feature_names == ds.feature_names
        np.testing.assert_array_equal(other.X_train, ds.X_train)
        np.testing.assert_array_equal(other.y_test, ds.y_test)
    with pytest.raises(ValueError, match="table must be a mapping of column name -> values, or a DataFrame; "
                                         "got a list"):
        from_table([table], **args)
