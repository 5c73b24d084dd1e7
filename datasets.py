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
  - y = 1 is the favourable outcome: the label value named `positive`, or 1
    when the labels are 0/1 (the benchmarks').
  - Your own data (from_table, from_csv) is split train/test stratified by
    the label, so both splits hold both classes.
  - A value no float32 feature can hold, or an extreme value that would squeeze
    the rest of its column flat when scaled, is refused with an error naming
    the column (_scaled), never scaled into a silent wrong answer.
  - A numeric feature has a resolution, its domain (a feature role like
    categorical and immutable): whole numbers (1) where every training value is
    a whole number, continuous (0) otherwise; with_resolution overrides it per
    column (from_table's continuous= and resolution=). Dataset.domain() gives
    it to the methods, which then return profiles a person can have.

The CSVs ship in `data/` (CARLA's preprocessed release; see data/README.md for
provenance). Nothing is ever downloaded.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.datasets import make_circles, make_moons

from constraints import Constraints, Domain

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FLOAT32_MAX = float(np.finfo(np.float32).max)   # about 3.4e38: features are float32
RESOLUTION = 2.0 ** -24    # float32's step just below 1: scaled values closer than this are one value
MIN_TRAIN_ROWS = 10        # a test size may not leave a class fewer train rows than this (and than test rows)

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
# Common sense for adult, the project's (stated in results/README.md), in Dataset.constraints'
# terms: age and education only go up, hours per week within 35-60, relationship and marital
# status as they are; race and sex are the data set's immutables. experiments.py's constrained
# study gives them; bench.py times GenRe with them.
ADULT_RULES = dict(increase=["age", "education-num"], ranges={"hours-per-week": (35.0, 60.0)},
                   fixed=["relationship", "marital-status"])


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
    resolution: np.ndarray | None = None  # (D,) float64, original units: a feature's values are multiples of it
                                          # (whole numbers: 1; 0: continuous, and every categorical)
    columns: list[str] = field(default_factory=list)      # raw feature columns, in order
    categories: dict[str, tuple] = field(default_factory=dict)  # categorical column -> its values, code order
    builtin: bool = False      # a shipped benchmark or toy (load_dataset, load_toy), never a user's file

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

    def transform(self, table: Table) -> np.ndarray:
        """New rows of raw values (a Table) -> scaled features (N, D), checked like the training data."""
        return self.scale(encode_table(table, self.columns, self.categories))

    def features_of(self, column: str) -> slice:
        """The features a raw column became (one, or a one-hot group), or a one-line error."""
        j = 0
        for c in self.columns:
            w = _width(c, self.categories)
            if c == column:
                return slice(j, j + w)
            j += w
        raise ValueError(f"no column {column!r}; columns: {', '.join(self.columns)}")

    def constraints(self, fixed=(), increase=(), decrease=(), ranges=None, allowed=None):
        """Actionability constraints in original units and column names -> constraints.Constraints
        in this data set's scaled units (one set for every row).

        fixed, increase, decrease: column names (a categorical has no order: increase and
        decrease take numeric columns only); ranges: {column: (lo, hi)}, original units, None
        for an open end; allowed: {categorical column: the values a recourse may take}.
        The data set's immutable features are not included (every method keeps those). The
        result carries this data set's feature names, so that it is refused by a model fitted
        with, or an evaluation of, another data set's (constraints.Constraints.for_features)."""
        rules = Constraints.free(self.n_features, names=self.feature_names)
        for c in fixed:
            rules.fixed[self.features_of(c)] = True
        for name, cols, mask in (("increase", increase, rules.increase), ("decrease", decrease, rules.decrease)):
            for c in cols:
                if c in self.categories:
                    raise ValueError(f"{name} {c!r}: a categorical has no order; say which values are allowed instead")
                mask[self.features_of(c)] = True
        for c, (lo, hi) in (ranges or {}).items():
            j = self.features_of(c).start
            if c in self.categories:
                raise ValueError(f"range {c!r}: a categorical has no range; say which values are allowed instead")
            for end, value in (("lower", lo), ("upper", hi)):
                if value is not None and not (isinstance(value, (int, float, np.number)) and np.isfinite(value)):
                    raise ValueError(f"range {c!r}: the {end} end {value!r} is not a finite number "
                                     f"(None leaves an end open)")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"range {c!r}: the lower end {lo:g} is above the upper end {hi:g}")
            span = self.x_max[j] - self.x_min[j]
            rules.lo[j] = -np.inf if lo is None else (lo - self.x_min[j]) / span
            rules.hi[j] = np.inf if hi is None else (hi - self.x_min[j]) / span
        for c, values in (allowed or {}).items():
            if c not in self.categories:
                raise ValueError(f"allowed values for {c!r}: only a categorical column takes a set of values")
            unknown = [v for v in values if v not in self.categories[c]]
            if unknown or not values:
                raise ValueError(f"allowed values for {c!r}: {unknown[0] if unknown else 'none'!r} is not one of "
                                 f"{', '.join(map(str, self.categories[c]))}")
            f = self.features_of(c)
            if f.stop - f.start == 1:                                       # binary: code 0 or 1
                codes = [self.categories[c].index(v) for v in values]
                rules.lo[f.start], rules.hi[f.start] = min(codes), max(codes)
            else:                                                           # one-hot: a member not allowed stays 0
                for i, v in enumerate(self.categories[c]):
                    if v not in values:
                        rules.hi[f.start + i] = 0.0
        return rules

    def domain(self) -> Domain:
        """The values each feature may take (constraints.Domain), for the methods' fit."""
        return Domain(np.asarray(self.resolution, dtype=np.float64), self.x_max - self.x_min)

    def with_resolution(self, continuous=(), resolution=None) -> "Dataset":
        """A copy whose numeric columns in `continuous` take any value, and each column of
        `resolution` ({column: r}, original units) only multiples of r; refused, naming the
        column, where the column is not numeric or a training value is not a multiple of r."""
        res = np.array(self.resolution, dtype=np.float64)
        for c, r in [*((c, 0.0) for c in continuous), *(resolution or {}).items()]:
            if c not in self.columns or c in self.categories:
                numeric = [n for n in self.columns if n not in self.categories]
                raise ValueError(f"resolution of {c!r}: not a numeric column (numeric: {', '.join(numeric)})")
            j = self.features_of(c).start
            if not (isinstance(r, (int, float)) and np.isfinite(r) and r >= 0):
                raise ValueError(f"resolution of {c!r} must be a positive number, got {r!r}")
            raw = self.unscale(self.X_train)[:, j].astype(np.float64)
            off = ~np.isclose(raw / r, np.round(raw / r), rtol=0, atol=1e-6) if r > 0 else np.zeros(0, bool)
            if off.any():
                raise ValueError(f"resolution of {c!r}: the training value {raw[off][0]:g} is not a multiple of {r:g}")
            res[j] = r
        return dataclasses.replace(self, resolution=res)

    def describe(self, x: np.ndarray) -> dict[str, str]:
        """One row in original units, categoricals by name: {"age": "39", "sex": "Male", ...}.
        A feature on its domain's values is shown as that value (whole numbers whole); any
        other value as it is (2.37 prior counts), never rounded for the eye."""
        x = np.asarray(x, dtype=np.float32)[None]
        values = self.unscale(x)[0]
        on_grid = self.domain().round(x)[0] == x[0]
        out, j = {}, 0
        for c in self.columns:
            w = _width(c, self.categories)
            if c in self.categories:
                code = int(np.argmax(values[j:j + w])) if w > 1 else int(round(values[j]))
                out[c] = self.categories[c][code]
            elif self.resolution[j] > 0 and on_grid[j]:
                r = self.resolution[j]
                out[c] = f"{round(values[j] / r) * r:g}"
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
        if c in categories:
            blocks.append(_one_hot(c, _texts(table[c]), categories[c]))
        else:
            blocks.append(_numeric(c, table[c])[:, None])
    return np.concatenate(blocks, axis=1)


def _texts(values) -> list[str]:
    """Raw values as stripped strings (how categorical and target cells are compared)."""
    return [str(v).strip() for v in values]


def _one_hot(column: str, raw: list[str], values: tuple) -> np.ndarray:
    """Categorical codes: (N, 1) 0/1 for two values, (N, V) one-hot for more."""
    lookup = {v: k for k, v in enumerate(values)}
    unknown = sorted(set(raw) - set(lookup))
    if unknown:
        raise ValueError(f"column {column!r} has value {unknown[0]!r} never seen in training "
                         f"(known: {', '.join(values)})")
    codes = np.array([lookup[v] for v in raw])
    return codes[:, None].astype(np.float64) if len(values) == 2 else np.eye(len(values))[codes]


def _numeric(column: str, values) -> np.ndarray:
    """A numeric column as float64; missing ("", "NA", NaN) and infinite cells are refused,
    and so are values beyond float32's range (about 3.4e38), which no feature can hold."""
    missing = ValueError(f"column {column!r} has NaN, missing or infinite values; fill or drop them first")
    try:
        x = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        bad = next(v for v in _texts(values) if not _is_float(v))
        if bad in ("", "NA"):
            raise missing from None
        raise ValueError(f"column {column!r} is not numeric (value {bad!r}); name it as categorical") from None
    if not np.isfinite(x).all():
        raise missing
    huge = np.abs(x) > FLOAT32_MAX
    if huge.any():
        raise ValueError(f"column {column!r} has value {x[huge][0]:g}, beyond the range of float32 "
                         f"features (about 3.4e38); fix or drop it first")
    return x


def _is_float(v) -> bool:
    """Whether float() reads v as a number."""
    try:
        float(v)
        return True
    except (ValueError, TypeError):
        return False


def _refuse_empty(column: str, raw: list[str], role: str) -> None:
    """Refuse an empty cell in a text column, naming the column and its first such row."""
    if "" in raw:
        raise ValueError(f"{role} column {column!r} has an empty value in data row {raw.index('') + 1}; "
                         f"fill or drop such rows first")


def categories_of(column: str, values) -> tuple:
    """The values of a categorical column, sorted as strings (with two, the first is code 0)."""
    raw = _texts(values)
    _refuse_empty(column, raw, "categorical")
    return tuple(sorted(set(raw)))


def encode_labels(raw, target: str, positive=None) -> tuple[np.ndarray, str]:
    """Target column -> y in {0, 1} (1 = favourable) and the favourable value.

    The favourable value is `positive`. It may be left out only when the two
    values read as the numbers 0 and 1 ("0"/"1", "0.0"/"1.0"): then 1 is
    favourable. Any other pair (approved/denied) must be named, since sorting
    cannot tell which outcome is the good one.
    """
    raw = _texts(raw)
    _refuse_empty(target, raw, "target")
    values = sorted(set(raw))
    raw = np.asarray(raw)
    if len(values) != 2:
        shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
        raise ValueError(f"target column {target!r} has {len(values)} classes ({shown}); "
                         f"recourse needs exactly two")
    positive = _reads_as_one(values) if positive is None else str(positive)
    if positive is None:
        raise ValueError(f"target column {target!r} has values {values[0]!r} and {values[1]!r}; "
                         f"name the favourable one with --positive VALUE (positive= in Python)")
    if positive not in values:
        raise ValueError(f"positive value {positive!r} is not in target column {target!r} "
                         f"(values: {', '.join(values)})")
    return (raw == positive).astype(np.int64), positive


def _reads_as_one(values: list[str]) -> str | None:
    """Of two label values that read as the numbers 0 and 1, the one that reads as 1; else None."""
    if not all(_is_float(v) for v in values):
        return None
    numbers = [float(v) for v in values]
    return values[numbers.index(1.0)] if sorted(numbers) == [0.0, 1.0] else None


def check_roles(table: Table, target: str, categorical=(), immutable=()) -> None:
    """Refuse feature roles that name the target or a column the table lacks, ragged columns,
    a column without a name, and a table with no feature column."""
    if len(table.get(target, ())) == 0:
        raise ValueError(f"target column {target!r} is missing or empty")
    unnamed = [k for k, c in enumerate(table) if not str(c).strip()]
    if unnamed:
        raise ValueError(f"column {unnamed[0] + 1} has no name; name it, or drop it if it is a saved index")
    if all(c == target for c in table):
        raise ValueError(f"the data has no feature columns: only the target {target!r}")
    for role, names in (("categorical", categorical), ("immutable", immutable)):
        for c in names:
            if c == target:
                raise ValueError(f"the target column {target!r} cannot be {role}")
            if c not in table:
                raise ValueError(f"{role} column {c!r} is not in the data "
                                 f"(columns: {', '.join(map(str, table))})")
    n = len(table[target])
    for c, values in table.items():
        if len(values) != n:
            raise ValueError(f"column {c!r} has {len(values)} values, the target has {n}")


def from_splits(name: str, train: Table, test: Table, target: str, categorical=(), immutable=(),
                positive=None, categories: dict | None = None) -> Dataset:
    """Build a Dataset from a train and a test table of raw values.

    Every column but the target is a feature: numeric unless named in
    `categorical`. Category values come from `categories` if given, else from
    the train split (sorted as strings; with two values the first is 0).
    """
    check_roles(train, target, categorical, immutable)
    columns = [c for c in train if c != target]
    if categories is None:
        categories = {c: categories_of(c, train[c]) for c in categorical}
    for c, values in categories.items():
        if len(values) < 2:
            raise ValueError(f"categorical column {c!r} has a single value {values[0]!r}; drop it")
    y_tr, positive = encode_labels(train[target], target, positive)
    y_te, _ = encode_labels(test[target], target, positive) if len(test[target]) else (np.zeros(0, np.int64), 0)
    X_tr = encode_table(train, columns, categories)
    X_te = encode_table(test, columns, categories) if len(y_te) else np.zeros((0, X_tr.shape[1]))
    return _scaled(name, columns, categories, X_tr, y_tr, X_te, y_te, immutable)


def _scaled(name, columns, categories, X_tr, y_tr, X_te, y_te, immutable) -> Dataset:
    """Min-max scale both splits with the train split's min and max (code), in float64,
    then store float32.

    What a careful user expects of an extreme value (a sentinel such as 1e308 or 999999,
    a typo of many zeros) is an error naming its column, not a column quietly squeezed
    flat: min-max scaling puts the rest of the column into a sliver of [0, 1] narrower
    than float32 can tell apart (1e308 among 4,000 incomes made 3,999 of them 0). So a
    numeric column is refused when fewer than half of its distinct training values stay
    apart at float32's resolution of [0, 1] (2^-24), and so is a test value that scales
    beyond float32's range. (Values beyond float32's range are refused on reading, so the
    span, at most 2 x 3.4e38, never overflows float64.)
    """
    x_min, x_max = X_tr.min(axis=0), X_tr.max(axis=0)
    span = np.where(x_max > x_min, x_max - x_min, 1.0)   # a constant column maps to 0
    owner = [c for c in columns for _ in range(_width(c, categories))]   # raw column of each feature
    for j, c in enumerate(owner):
        if c not in categories:
            _refuse_squeezed(c, X_tr[:, j], x_min[j], span[j])

    def scale(X, split):
        with np.errstate(over="ignore"):                              # checked just below
            Z = ((X - x_min) / span).astype(np.float32)
        bad = ~np.isfinite(Z)
        if bad.any():
            j = int(np.argwhere(bad)[0, 1])
            raise ValueError(f"column {owner[j]!r} has {split} value {X[bad][0]:g}, too far outside the "
                             f"train range ({x_min[j]:g} to {x_max[j]:g}) for a float32 feature")
        return Z

    return Dataset(
        name=name, feature_names=feature_names_of(columns, categories),
        X_train=scale(X_tr, "train"), y_train=y_tr, X_test=scale(X_te, "test"), y_test=y_te,
        categorical=np.array([c in categories for c in owner]),
        immutable=np.array([c in immutable for c in owner]),
        x_min=x_min, x_max=x_min + span,
        resolution=np.array([float(c not in categories and np.all(X_tr[:, j] == np.round(X_tr[:, j])))
                             for j, c in enumerate(owner)]),
        columns=list(columns), categories=dict(categories),
    )


def _refuse_squeezed(column: str, x: np.ndarray, lo: float, span: float) -> None:
    """Refuse a numeric column (train values x) whose min-max scaling leaves fewer than half of
    its distinct values apart at float32's resolution (see _scaled)."""
    n_raw = len(np.unique(x))
    n_apart = len(np.unique(np.round((x - lo) / span / RESOLUTION)))
    if 2 * n_apart < n_raw:
        raise ValueError(f"column {column!r} spans {lo:g} to {lo + span:g}: scaled to [0, 1], only {n_apart} "
                         f"of its {n_raw} distinct values stay apart in float32; an extreme value or "
                         f"sentinel squeezes the rest together; fix or drop it first")


# ----------------------------------------------------------------------------- CSV files

CHUNK_ROWS = 50_000   # CSV rows parsed at a time: bounds how many cells live as Python strings at once


def read_csv(path: str, text=None) -> Table:
    """A CSV file as a Table of column arrays (the header names the columns).

    Columns named in `text` (every column if None) stay strings, in an object
    array; every other column is parsed straight into a float64 array, a chunk
    of rows at a time, so a large file is never held as Python strings. Each
    problem with the file is a one-line ValueError naming it.

    A header cell without a name (",age,income": what pandas' to_csv writes for
    its index) is refused, naming its position, not dropped: such a column is
    usually row numbers, which as a feature would be noise, but it may be data
    whose name was lost, and only the user can tell.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:   # newline="": COMPAS's CRLF; -sig: a BOM
            return _read_columns(csv.reader(f), path, text)
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a CSV file") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise ValueError(f"{path} is not a readable CSV file: {e}") from None


def _read_columns(reader, path: str, text) -> Table:
    """The body of read_csv: header, then each chunk of rows split into its columns."""
    header = _header(next(reader, None), path, text)
    keep = set(header) if text is None else set(text)
    shared = {c: {} for c in keep}              # one str object per distinct value of a text column
    parts = {c: [] for c in header}
    for chunk in _chunks(reader, len(header), path):
        for c, cells in zip(header, zip(*chunk)):
            if c in keep:
                parts[c].append(np.array([shared[c].setdefault(v, v) for v in _texts(cells)], dtype=object))
            else:
                parts[c].append(_numeric(c, cells))
    if not parts[header[0]]:
        raise ValueError(f"{path} has no data rows")
    return {c: np.concatenate(p) for c, p in parts.items()}


def _header(row, path: str, text) -> list[str]:
    """The column names, refusing an empty file, a repeated name and a `text` column it lacks."""
    if not row:
        raise ValueError(f"{path} has no header row")
    header = [c.strip() for c in row]
    unnamed = [k for k, c in enumerate(header) if not c]
    if unnamed:
        raise ValueError(f"{path}: column {unnamed[0] + 1} of the header has no name (a saved pandas "
                         f"index? write the file with index=False, or name the column)")
    repeated = [c for i, c in enumerate(header) if c in header[:i]]
    if repeated:
        raise ValueError(f"{path}: column {repeated[0]!r} appears more than once in the header")
    missing = [c for c in (text or ()) if c not in header]
    if missing:
        raise ValueError(f"column {missing[0]!r} is not in {path} (columns: {', '.join(header)})")
    return header


def _chunks(reader, width: int, path: str):
    """The CSV's data rows, CHUNK_ROWS at a time; blank lines skipped, ragged lines refused."""
    chunk = []
    for row in reader:
        if not row:
            continue
        if len(row) != width:
            raise ValueError(f"{path}: line {reader.line_num} has {len(row)} fields, the header has {width}")
        chunk.append(row)
        if len(chunk) == CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_dataset(name: str, data_dir: str = DATA_DIR) -> Dataset:
    """Load adult, compas or heloc from `data_dir/<name>/<name>_{train,test}.csv` (Appendix C.1)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(BENCHMARKS)}")
    roles = BENCHMARKS[name]
    path = os.path.join(data_dir, name, f"{name}_{{}}.csv")
    if not os.path.exists(path.format("train")):
        raise FileNotFoundError(f"data file not found: {path.format('train')} "
                                f"(the CSVs ship in data/; see data/README.md)")
    text = [roles["target"], *roles["categorical"]]
    ds = from_splits(name, read_csv(path.format("train"), text), read_csv(path.format("test"), text),
                     roles["target"], roles["categorical"], roles["immutable"])
    assert not ds.groups, "every categorical of the benchmarks is binary"
    return dataclasses.replace(ds, builtin=True)


def stratified_split(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): the rows of each label value split test_size : 1 - test_size
    at random, so both splits hold every class; a class needs two rows for that. A test size
    that leaves a class fewer than MIN_TRAIN_ROWS train rows, and fewer than its test rows, is
    refused: h and every method learn from the train split (a class of 2 rows still splits 1 : 1)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in sorted(set(labels.tolist())):
        rows = rng.permutation(np.flatnonzero(labels == value))
        if len(rows) < 2:
            raise ValueError(f"target value {value!r} has only {len(rows)} row: "
                             f"too few for both a train and a test split")
        n_test = min(max(int(round(test_size * len(rows))), 1), len(rows) - 1)
        n_train = len(rows) - n_test
        if n_train < MIN_TRAIN_ROWS and n_train < n_test:
            raise ValueError(f"--test-size (test_size=) {test_size:g} leaves {n_train} train row"
                             f"{'s' * (n_train != 1)} of target value {value!r} against {n_test} test rows: "
                             f"too few to learn from; use a smaller test size")
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _columns(table) -> Table:
    """A table of raw columns as a Table: any mapping of column name -> values, or a DataFrame-like
    object (pandas, polars: it has .columns, and table[name] gives that column), read without pandas."""
    if isinstance(table, Mapping):
        return dict(table)
    if hasattr(table, "columns") and hasattr(table, "__getitem__"):
        return {c: np.asarray(table[c]) for c in table.columns}
    raise ValueError(f"table must be a mapping of column name -> values, or a DataFrame; got a {type(table).__name__}")


def from_table(table: Table, target: str, categorical=(), immutable=(), positive=None,
               test_size: float = 0.25, seed: int = 0, name: str = "table", continuous=(),
               resolution=None) -> Dataset:
    """Your own data as a Dataset: a table of raw columns (a dict of column name -> values, any
    other mapping, or a DataFrame), split train/test at random, stratified by the label.

    Categorical columns may have any number of values (two -> one 0/1 column,
    more -> a one-hot group); their values are taken from the whole table. A numeric column
    of whole numbers takes whole numbers only, unless named in `continuous`; `resolution`
    ({column: r}) sets another step (Dataset.with_resolution).
    """
    table = _columns(table)
    check_roles(table, target, categorical, immutable)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    table = {c: v if isinstance(v, np.ndarray) else np.array(v, dtype=object) for c, v in table.items()}
    _, positive = encode_labels(table[target], target, positive)    # refuse a bad target before splitting
    categories = {c: categories_of(c, table[c]) for c in categorical}
    train, test = stratified_split(np.asarray(_texts(table[target])), test_size, seed)
    pick = lambda rows: {c: values[rows] for c, values in table.items()}
    ds = from_splits(name, pick(train), pick(test), target, categorical, immutable, positive, categories)
    return ds.with_resolution(continuous, resolution) if continuous or resolution else ds


def from_csv(path: str, target: str, categorical=(), immutable=(), positive=None,
             test_size: float = 0.25, seed: int = 0, continuous=(), resolution=None) -> Dataset:
    """`from_table` on a CSV file; the data set is named after the file (loans.csv: "loans"),
    and a file named like a benchmark gets "csv-" in front (compas.csv: "csv-compas"), so its
    results never pass for, or overwrite, the benchmark's."""
    name = os.path.splitext(os.path.basename(path))[0]
    name = f"csv-{name}" if name in BENCHMARKS else name
    table = read_csv(path, text=[target, *categorical])
    return from_table(table, target, categorical, immutable, positive, test_size, seed, name, continuous, resolution)


# ----------------------------------------------------------------------------- 2-D toys

def _toy_points(name: str, n: int, rng: np.random.Generator, seed: int):
    """Raw 2-D points and labels of the authors' toy sets (their code: n points, noise 0.04)."""
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
    ds = _scaled(name, ["x1", "x2"], {}, Z[tr], y[tr].astype(np.int64), Z[te], y[te].astype(np.int64),
                 immutable=[])
    return dataclasses.replace(ds, builtin=True)


def load(name: str) -> Dataset:
    """Any data set of the project by name: a benchmark or a toy."""
    if name in TOYS:
        return load_toy(name)
    if name in BENCHMARKS:
        return load_dataset(name)
    raise ValueError(f"unknown data set {name!r}; available: {', '.join([*BENCHMARKS, *TOYS])}")
