"""datasets.py against the CSVs themselves: row counts, scaling, masks, encodings."""
import csv
import os

import numpy as np
import pytest

from common import check_features
from datasets import BENCHMARKS, DATA_DIR, load, load_dataset, load_toy


def csv_rows(name, split):
    with open(os.path.join(DATA_DIR, name, f"{name}_{split}.csv"), newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.mark.parametrize("name, n_train, n_test, d", [
    ("adult", 36624, 12208, 13), ("compas", 4629, 1543, 7), ("heloc", 7403, 2468, 21)])
def test_row_counts_and_shapes(name, n_train, n_test, d):
    ds = load_dataset(name)
    assert ds.X_train.shape == (n_train, d) and ds.X_test.shape == (n_test, d)
    assert len(csv_rows(name, "train")[1]) == n_train and len(csv_rows(name, "test")[1]) == n_test
    assert set(np.unique(ds.y_train)) == {0, 1}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_scaling_is_train_min_max_and_inverts(name):
    ds = load_dataset(name)
    header, rows = csv_rows(name, "train")
    varying = ds.x_max > ds.x_min
    np.testing.assert_allclose(ds.X_train.min(axis=0)[varying], 0, atol=1e-6)
    np.testing.assert_allclose(ds.X_train.max(axis=0)[varying], 1, atol=1e-6)
    # Unscaling the numeric columns gives back the CSV's numbers.
    back = ds.unscale(ds.X_train)
    for j, f in enumerate(ds.feature_names):
        if not ds.categorical[j]:
            raw = np.array([float(r[header.index(f)]) for r in rows])
            np.testing.assert_allclose(back[:, j], raw, rtol=1e-5, atol=1e-3 * (abs(raw).max() + 1))


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_masks_and_binary_categoricals(name):
    ds = load_dataset(name)
    roles = BENCHMARKS[name]
    assert [f for f, c in zip(ds.feature_names, ds.categorical) if c] == \
        [f for f in ds.feature_names if f in roles["categorical"]]
    assert sorted(f for f, m in zip(ds.feature_names, ds.immutable) if m) == sorted(roles["immutable"])
    for X in (ds.X_train, ds.X_test):
        assert set(np.unique(X[:, ds.categorical])) <= {0.0, 1.0}
    # Codes follow the sorted string values: code 1 rows carry the second name in the CSV.
    header, rows = csv_rows(name, "train")
    for f, (zero, one) in ds.categories.items():
        j = ds.feature_names.index(f)
        raw = np.array([r[header.index(f)] for r in rows])
        assert np.array_equal(raw == one, ds.X_train[:, j] == 1) and zero < one


def test_compas_crlf_and_describe():
    ds = load_dataset("compas")
    desc = ds.describe(ds.X_train[0])
    header, rows = csv_rows("compas", "train")
    assert desc["sex"] == rows[0][header.index("sex")].strip()
    assert float(desc["age"]) == float(rows[0][header.index("age")])


@pytest.mark.parametrize("name", ["moons", "circles", "corr"])
def test_toys(name):
    ds = load_toy(name)
    assert ds.X_train.shape == (900, 2) and ds.X_test.shape == (100, 2)
    assert ds.X_train.min() >= 0 and ds.X_train.max() <= 1 + 1e-6
    assert 0.2 < ds.y_train.mean() < 0.8
    np.testing.assert_array_equal(load_toy(name).X_train, ds.X_train)   # same seed, same data


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'nope'; available: adult, compas, heloc"):
        load("nope")
    with pytest.raises(FileNotFoundError, match="data file not found"):
        load_dataset("adult", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="has 3 features, the model was fitted on 2"):
        check_features(np.zeros((4, 3)), 2)
    with pytest.raises(ValueError, match="NaN or infinite values \\(feature 1\\)"):
        check_features(np.array([[0.0, np.nan]]), 2)
    with pytest.raises(ValueError, match="no rows: nothing to give recourse to"):
        check_features(np.zeros((0, 2)), 2)
