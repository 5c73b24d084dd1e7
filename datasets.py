"""Data sets of the GenRe paper (Appendix C.1): Adult, COMPAS, HELOC and the 2-D toys.

Every loader returns one `Dataset`: the scaled feature matrices of the train and
test splits, the labels, and the two feature masks the recourse methods need
(which features are categorical, which are immutable), plus what it takes to
map scaled values back to original units.

Conventions used everywhere in the project:
  - N rows, D features; X is a float32 array (N, D).
  - Every categorical is binary and encoded 0/1. The two values of a column are
    sorted as strings and the first becomes 0 (e.g. sex: Female=0, Male=1).
  - Every feature is min-max scaled to [0, 1] with the *train* split's min and
    max (the authors' code); test values may fall slightly outside [0, 1].
  - y = 1 is the favourable outcome.

The CSVs ship in `data/` (CARLA's preprocessed release; see data/README.md for
provenance). Nothing is ever downloaded.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# Feature roles of the paper (Appendix C.1); `target` is the favourable-label column.
BENCHMARKS = {
    "adult": dict(
        target="income",
        categorical=["workclass", "marital-status", "occupation", "relationship",
                     "race", "sex", "native-country"],
        immutable=["race", "sex"],
    ),
    "compas": dict(
        target="score",
        categorical=["two_year_recid", "c_charge_degree", "race", "sex"],
        immutable=["race", "sex"],
    ),
    "heloc": dict(target="RiskPerformance", categorical=[], immutable=[]),
}
TOYS = ("moons", "circles", "corr")


def set_seed(seed: int) -> None:
    """One seed for Python's random, numpy and torch (minGPT's helper)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Dataset:
    """One loaded data set: scaled features, labels, feature roles, scaling."""

    name: str
    feature_names: list[str]
    X_train: np.ndarray        # (N_train, D) float32, scaled to [0, 1] by the train split
    y_train: np.ndarray        # (N_train,) int64 in {0, 1}
    X_test: np.ndarray         # (N_test, D) float32, same scaling (may leave [0, 1] slightly)
    y_test: np.ndarray         # (N_test,) int64
    categorical: np.ndarray    # (D,) bool: binary 0/1 feature
    immutable: np.ndarray      # (D,) bool: recourse must keep it equal to x
    x_min: np.ndarray          # (D,) float64: train min in original units
    x_max: np.ndarray          # (D,) float64: train max in original units
    categories: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (name of 0, name of 1)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def X_all(self) -> np.ndarray:
        """Train and test rows stacked, (N_train + N_test, D)."""
        return np.concatenate([self.X_train, self.X_test])

    def with_labels(self, y_train: np.ndarray, y_test: np.ndarray) -> "Dataset":
        """A copy whose labels are replaced (used for the oracle's label redraw, Sec. 5.1)."""
        return dataclasses.replace(self, y_train=np.asarray(y_train, dtype=np.int64),
                                   y_test=np.asarray(y_test, dtype=np.int64))

    def unscale(self, X: np.ndarray) -> np.ndarray:
        """Scaled values -> original units: x * (max - min) + min."""
        return np.asarray(X, dtype=np.float64) * (self.x_max - self.x_min) + self.x_min

    def describe(self, x: np.ndarray) -> dict[str, str]:
        """One row in original units, categoricals by name: {"age": "39", "sex": "Male", ...}."""
        values = self.unscale(np.asarray(x)[None])[0]
        out = {}
        for name, v in zip(self.feature_names, values):
            if name in self.categories:
                out[name] = self.categories[name][int(round(v))]
            else:
                out[name] = f"{v:.4g}"
        return out


# ----------------------------------------------------------------------------- input checks

def check_features(X, n_features: int, what: str = "X") -> np.ndarray:
    """Return X as float32 (N, D), or raise a one-line ValueError naming the problem."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows, features), got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"{what} has {X.shape[1]} features, the model was fitted on {n_features}")
    if X.shape[0] == 0:
        raise ValueError(f"{what} has no rows: nothing to give recourse to")
    bad = ~np.isfinite(X)
    if bad.any():
        col = int(np.argwhere(bad)[0, 1])
        raise ValueError(f"{what} contains NaN or infinite values (feature {col})")
    return X


def check_fitted(estimator, attribute: str) -> None:
    """Raise sklearn's NotFittedError, naming the class, if `fit` has not run yet."""
    from sklearn.exceptions import NotFittedError
    if not hasattr(estimator, attribute):
        name = type(estimator).__name__
        raise NotFittedError(f"{name} is not fitted yet: call {name}.fit(X, y, h) first")


def as_mask(mask, n_features: int, what: str) -> np.ndarray:
    """A (D,) bool mask; None means all False."""
    if mask is None:
        return np.zeros(n_features, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (n_features,):
        raise ValueError(f"{what} mask must have shape ({n_features},), got {mask.shape}")
    return mask


# ----------------------------------------------------------------------------- CSV loading

def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path} (the CSVs ship in data/; see data/README.md)")
    with open(path, newline="") as f:          # newline="" also handles COMPAS's CRLF endings
        rows = [r for r in csv.reader(f) if r]
    return [c.strip() for c in rows[0]], [[v.strip() for v in r] for r in rows[1:]]


def _encode(header, rows, target, categorical, categories):
    """String rows -> float matrix (N, D) and labels (N,); binary categoricals -> 0/1."""
    features = [c for c in header if c != target]
    cols = {c: [r[i] for r in rows] for i, c in enumerate(header)}
    X = np.empty((len(rows), len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        if name in categorical:
            lookup = {v: k for k, v in enumerate(categories[name])}
            unknown = set(cols[name]) - set(lookup)
            if unknown:
                raise ValueError(f"column {name!r} has values {sorted(unknown)} never seen in training")
            X[:, j] = [lookup[v] for v in cols[name]]
        else:
            X[:, j] = np.asarray(cols[name], dtype=np.float64)
    y = np.asarray([float(v) for v in cols[target]]).astype(np.int64)
    return features, X, y


def load_dataset(name: str, data_dir: str = DATA_DIR) -> Dataset:
    """Load adult, compas or heloc from `data_dir/<name>/<name>_{train,test}.csv`."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(BENCHMARKS)}")
    roles = BENCHMARKS[name]
    target, categorical = roles["target"], roles["categorical"]
    header, train_rows = _read_csv(os.path.join(data_dir, name, f"{name}_train.csv"))
    _, test_rows = _read_csv(os.path.join(data_dir, name, f"{name}_test.csv"))

    # Category names come from the train split; each categorical must have exactly two.
    categories = {}
    for c in categorical:
        values = sorted({r[header.index(c)] for r in train_rows})
        if len(values) != 2:
            raise ValueError(f"categorical column {c!r} has {len(values)} values, expected 2")
        categories[c] = tuple(values)

    features, X_tr, y_tr = _encode(header, train_rows, target, categorical, categories)
    _, X_te, y_te = _encode(header, test_rows, target, categorical, categories)
    return _scaled(name, features, X_tr, y_tr, X_te, y_te, categorical, roles["immutable"], categories)


def _scaled(name, features, X_tr, y_tr, X_te, y_te, categorical, immutable, categories) -> Dataset:
    """Min-max scale both splits with the train split's min and max (code)."""
    x_min, x_max = X_tr.min(axis=0), X_tr.max(axis=0)
    span = np.where(x_max > x_min, x_max - x_min, 1.0)   # a constant column maps to 0
    scale = lambda X: ((X - x_min) / span).astype(np.float32)
    return Dataset(
        name=name, feature_names=list(features),
        X_train=scale(X_tr), y_train=y_tr, X_test=scale(X_te), y_test=y_te,
        categorical=np.array([f in categorical for f in features]),
        immutable=np.array([f in immutable for f in features]),
        x_min=x_min, x_max=x_min + span, categories=categories,
    )


# ----------------------------------------------------------------------------- 2-D toys

def _toy_points(name: str, n: int, rng: np.random.Generator, seed: int):
    """Raw 2-D points and labels of the authors' toy sets (METHOD.md §1)."""
    from sklearn.datasets import make_circles, make_moons
    if name == "moons":
        return make_moons(n, noise=0.04, random_state=seed)
    if name == "circles":
        return make_circles(n, noise=0.04, factor=0.7, random_state=seed)
    x1 = rng.uniform(-0.5, 0.5, n)
    x2 = np.tanh(20 * x1) * rng.uniform(0, 1, n) / 2
    p = 1 / (1 + np.exp(-(x2 + 60 * x1 ** 3) / 0.5))
    return np.stack([x1, x2], axis=1), rng.binomial(1, p)


def load_toy(name: str, n: int = 1000, seed: int = 42) -> Dataset:
    """moons, circles or corr: n points, 90/10 split, z-score then min-max to [0, 1] (code)."""
    if name not in TOYS:
        raise ValueError(f"unknown toy data set {name!r}; available: {', '.join(TOYS)}")
    rng = np.random.default_rng(seed)
    X, y = _toy_points(name, n, rng, seed)
    perm = rng.permutation(n)
    n_train = int(0.9 * n)
    tr, te = perm[:n_train], perm[n_train:]
    mean, std = X[tr].mean(axis=0), X[tr].std(axis=0)
    Z = (X - mean) / std
    return _scaled(name, ["x1", "x2"], Z[tr], y[tr].astype(np.int64), Z[te], y[te].astype(np.int64),
                   categorical=[], immutable=[], categories={})


def load(name: str) -> Dataset:
    """Any data set of the project by name: a benchmark or a toy."""
    if name in TOYS:
        return load_toy(name)
    if name in BENCHMARKS:
        return load_dataset(name)
    raise ValueError(f"unknown data set {name!r}; available: {', '.join([*BENCHMARKS, *TOYS])}")
