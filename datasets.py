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
from dataclasses import dataclass, field

import numpy as np

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


@dataclass
class Dataset:
    """One loaded data set: scaled features, labels, feature roles, scaling.

    A raw column becomes one feature (numeric, or a binary categorical coded
    0/1) or, for a categorical with more than two values, a one-hot group of
    features; `groups` lists the feature indices of each such group.
    """

    name: str
    feature_names: list[str]   # (D,) encoded names; one-hot features are "column=value"
    X_train: np.ndarray        # (N_train, D) float32, scaled to [0, 1] by the train split
    y_train: np.ndarray        # (N_train,) int64 in {0, 1}
    X_test: np.ndarray         # (N_test, D) float32, same scaling (may leave [0, 1] slightly)
    y_test: np.ndarray         # (N_test,) int64
    categorical: np.ndarray    # (D,) bool: a 0/1 feature (binary categorical or one-hot)
    immutable: np.ndarray      # (D,) bool: recourse must keep it equal to x
    x_min: np.ndarray          # (D,) float64: train min in original units
    x_max: np.ndarray          # (D,) float64: train max in original units
    integer: np.ndarray | None = None  # (D,) bool: every train value is a whole number (display only)
    columns: list[str] = field(default_factory=list)      # raw feature columns, in order
    categories: dict[str, tuple] = field(default_factory=dict)  # categorical column -> its values, code order

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def groups(self) -> list[np.ndarray]:
        """Feature indices of each one-hot group (categoricals with more than two values)."""
        out, j = [], 0
        for c in self.columns:
            w = _width(c, self.categories)
            if w > 1:
                out.append(np.arange(j, j + w))
            j += w
        return out

    @property
    def X_all(self) -> np.ndarray:
        """Train and test rows stacked, (N_train + N_test, D)."""
        return np.concatenate([self.X_train, self.X_test])

    def with_labels(self, y_train: np.ndarray, y_test: np.ndarray) -> "Dataset":
        """A copy whose labels are replaced (used for the oracle's label redraw, Sec. 5.1)."""
        return dataclasses.replace(self, y_train=np.asarray(y_train, dtype=np.int64),
                                   y_test=np.asarray(y_test, dtype=np.int64))

    def scale(self, X_raw: np.ndarray) -> np.ndarray:
        """Original units -> scaled: (x - min) / (max - min)."""
        return ((np.asarray(X_raw, dtype=np.float64) - self.x_min) / (self.x_max - self.x_min)).astype(np.float32)

    def unscale(self, X: np.ndarray) -> np.ndarray:
        """Scaled values -> original units: x * (max - min) + min."""
        return np.asarray(X, dtype=np.float64) * (self.x_max - self.x_min) + self.x_min

    def encode(self, table: Table) -> np.ndarray:
        """New rows of raw values (a Table) -> scaled features (N, D), checked like the training data."""
        return self.scale(encode_table(table, self.columns, self.categories))

    def describe(self, x: np.ndarray) -> dict[str, str]:
        """One row in original units, categoricals by name: {"age": "39", "sex": "Male", ...}."""
        values = self.unscale(np.asarray(x)[None])[0]
        out, j = {}, 0
        for c in self.columns:
            w = _width(c, self.categories)
            if c in self.categories:
                code = int(np.argmax(values[j:j + w])) if w > 1 else int(round(values[j]))
                out[c] = self.categories[c][code]
            elif self.integer is not None and self.integer[j]:
                out[c] = str(int(round(values[j])))     # whole-number columns shown whole
            else:
                out[c] = f"{values[j]:.4g}"
            j += w
        return out


# ----------------------------------------------------------------------------- tables -> features

Table = dict   # column name -> sequence of raw values (strings or numbers), all of one length


def _width(column: str, categories: dict) -> int:
    """How many features a raw column becomes: V for a V-valued categorical (V > 2), else 1."""
    values = categories.get(column, ())
    return len(values) if len(values) > 2 else 1


def feature_names_of(columns: list[str], categories: dict) -> list[str]:
    """Encoded feature names: a binary categorical stays one 0/1 column, a categorical with
    more values becomes a one-hot group "col=value", a numeric column stays itself."""
    names = []
    for c in columns:
        names += [f"{c}={v}" for v in categories[c]] if _width(c, categories) > 1 else [c]
    return names


def encode_table(table: Table, columns: list[str], categories: dict) -> np.ndarray:
    """Raw columns -> unscaled feature matrix (N, D), with one-line errors naming the column."""
    blocks = []
    for c in columns:
        if c not in table:
            raise ValueError(f"column {c!r} is missing (columns present: {', '.join(map(str, table))})")
        raw = [str(v).strip() for v in table[c]]
        if c in categories:
            blocks.append(_one_hot(c, raw, categories[c]))
        else:
            blocks.append(_numeric(c, raw)[:, None])
    return np.concatenate(blocks, axis=1)


def _one_hot(column: str, raw: list[str], values: tuple) -> np.ndarray:
    """Categorical codes: (N, 1) 0/1 for two values, (N, V) one-hot for more."""
    lookup = {v: k for k, v in enumerate(values)}
    unknown = sorted(set(raw) - set(lookup))
    if unknown:
        raise ValueError(f"column {column!r} has value {unknown[0]!r} never seen in training "
                         f"(known: {', '.join(values)})")
    codes = np.array([lookup[v] for v in raw])
    return codes[:, None].astype(np.float64) if len(values) == 2 else np.eye(len(values))[codes]


def _numeric(column: str, raw: list[str]) -> np.ndarray:
    """A numeric column as float64; empty cells count as missing."""
    raw = ["nan" if v in ("", "NA") else v for v in raw]
    try:
        x = np.asarray(raw, dtype=np.float64)
    except ValueError:
        bad = next(v for v in raw if not _is_float(v))
        raise ValueError(f"column {column!r} is not numeric (value {bad!r}); "
                         f"name it as categorical") from None
    if not np.isfinite(x).all():
        raise ValueError(f"column {column!r} has NaN, missing or infinite values; fill or drop them first")
    return x


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def encode_labels(raw, target: str, positive=None) -> tuple[np.ndarray, str]:
    """Target column -> y in {0, 1} (1 = favourable) and the favourable value.

    The favourable value is `positive` if given, else the larger of the two
    values as sorted strings (so "1" over "0", "1.0" over "0.0").
    """
    raw = np.asarray([str(v).strip() for v in raw])
    values = sorted(set(raw))
    if len(values) != 2:
        shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
        raise ValueError(f"target column {target!r} has {len(values)} classes ({shown}); "
                         f"recourse needs exactly two")
    positive = values[1] if positive is None else str(positive)
    if positive not in values:
        raise ValueError(f"positive value {positive!r} is not in target column {target!r} "
                         f"(values: {', '.join(values)})")
    return (raw == positive).astype(np.int64), positive


def from_splits(name: str, train: Table, test: Table, target: str, categorical=(), immutable=(),
                positive=None, categories: dict | None = None) -> Dataset:
    """Build a Dataset from a train and a test table of raw values.

    Every column but the target is a feature: numeric unless named in
    `categorical`. Category values come from `categories` if given, else from
    the train split (sorted as strings; with two values the first is 0).
    """
    columns = [c for c in train if c != target]
    for role, names in (("target", [target]), ("categorical", categorical), ("immutable", immutable)):
        missing = [c for c in names if c not in train]
        if missing:
            raise ValueError(f"{role} column {missing[0]!r} is not in the data "
                             f"(columns: {', '.join(map(str, train))})")
    if categories is None:
        categories = {c: tuple(sorted({str(v).strip() for v in train[c]})) for c in categorical}
    for c, values in categories.items():
        if len(values) < 2:
            raise ValueError(f"categorical column {c!r} has a single value {values[0]!r}; drop it")
    y_tr, positive = encode_labels(train[target], target, positive)
    y_te, _ = encode_labels(test[target], target, positive) if len(test[target]) else (np.zeros(0, np.int64), 0)
    X_tr = encode_table(train, columns, categories)
    X_te = encode_table(test, columns, categories) if len(y_te) else np.zeros((0, X_tr.shape[1]))
    return _scaled(name, columns, categories, X_tr, y_tr, X_te, y_te, immutable)


def _scaled(name, columns, categories, X_tr, y_tr, X_te, y_te, immutable) -> Dataset:
    """Min-max scale both splits with the train split's min and max (code)."""
    x_min, x_max = X_tr.min(axis=0), X_tr.max(axis=0)
    span = np.where(x_max > x_min, x_max - x_min, 1.0)   # a constant column maps to 0
    scale = lambda X: ((X - x_min) / span).astype(np.float32)
    owner = [c for c in columns for _ in range(_width(c, categories))]   # raw column of each feature
    return Dataset(
        name=name, feature_names=feature_names_of(columns, categories),
        X_train=scale(X_tr), y_train=y_tr, X_test=scale(X_te), y_test=y_te,
        categorical=np.array([c in categories for c in owner]),
        immutable=np.array([c in immutable for c in owner]),
        x_min=x_min, x_max=x_min + span, integer=np.all(X_tr == np.round(X_tr), axis=0),
        columns=list(columns), categories=dict(categories),
    )


# ----------------------------------------------------------------------------- CSV files

def read_csv(path: str) -> Table:
    """A CSV file as a Table of strings (the header names the columns)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, newline="") as f:          # newline="" also handles COMPAS's CRLF endings
        rows = [r for r in csv.reader(f) if r]
    if len(rows) < 2:
        raise ValueError(f"{path} has no data rows")
    header = [c.strip() for c in rows[0]]
    bad = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line {bad[0]} has a different number of fields than the header")
    return {c: [r[j] for r in rows[1:]] for j, c in enumerate(header)}


def load_dataset(name: str, data_dir: str = DATA_DIR) -> Dataset:
    """Load adult, compas or heloc from `data_dir/<name>/<name>_{train,test}.csv` (Appendix C.1)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(BENCHMARKS)}")
    roles = BENCHMARKS[name]
    path = os.path.join(data_dir, name, f"{name}_{{}}.csv")
    if not os.path.exists(path.format("train")):
        raise FileNotFoundError(f"data file not found: {path.format('train')} "
                                f"(the CSVs ship in data/; see data/README.md)")
    ds = from_splits(name, read_csv(path.format("train")), read_csv(path.format("test")),
                     roles["target"], roles["categorical"], roles["immutable"])
    assert not ds.groups, "every categorical of the benchmarks is binary"
    return ds


def from_table(table: Table, target: str, categorical=(), immutable=(), positive=None,
               test_size: float = 0.25, seed: int = 0, name: str = "table") -> Dataset:
    """Your own data as a Dataset: a table of raw columns, split train/test at random.

    Categorical columns may have any number of values (two -> one 0/1 column,
    more -> a one-hot group); their values are taken from the whole table.
    """
    n = len(table.get(target, ()))
    if n == 0:
        raise ValueError(f"target column {target!r} is missing or empty")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    categories = {}
    for c in categorical:
        if c not in table:
            raise ValueError(f"categorical column {c!r} is not in the data (columns: {', '.join(table)})")
        categories[c] = tuple(sorted({str(v).strip() for v in table[c]}))
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_size * n))
    pick = lambda idx: {c: [table[c][i] for i in idx] for c in table}
    return from_splits(name, pick(perm[n_test:]), pick(perm[:n_test]), target, categorical,
                       immutable, positive, categories)


def from_csv(path: str, target: str, categorical=(), immutable=(), positive=None,
             test_size: float = 0.25, seed: int = 0) -> Dataset:
    """`from_table` on a CSV file; the data set is named after the file."""
    name = os.path.splitext(os.path.basename(path))[0]
    return from_table(read_csv(path), target, categorical, immutable, positive, test_size, seed, name)


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
    return _scaled(name, ["x1", "x2"], {}, Z[tr], y[tr].astype(np.int64), Z[te], y[te].astype(np.int64),
                   immutable=[])


def load(name: str) -> Dataset:
    """Any data set of the project by name: a benchmark or a toy."""
    if name in TOYS:
        return load_toy(name)
    if name in BENCHMARKS:
        return load_dataset(name)
    raise ValueError(f"unknown data set {name!r}; available: {', '.join([*BENCHMARKS, *TOYS])}")
