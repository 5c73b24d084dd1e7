"""datasets.py against the CSVs themselves: row counts, scaling, masks, encodings."""
import csv
import os

import numpy as np
import pytest

from common import check_features
import datasets
from datasets import BENCHMARKS, DATA_DIR, from_csv, load, load_dataset, load_toy, read_csv


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


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return str(path)


def test_read_csv_chunk_by_chunk_matches_the_csv_module(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CHUNK_ROWS", 7)                     # 30 rows -> 5 chunks
    rng = np.random.default_rng(0)
    lines = ["a,b,c"] + [f"{rng.normal():.6f},{rng.choice(['x', 'y'])} ,{i}" for i in range(30)]
    lines.insert(12, "")                                               # a blank line is skipped
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    table = read_csv(path, text=["b"])
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r][1:]
    assert table["a"].dtype == np.float64                              # numbers parsed as read
    np.testing.assert_array_equal(table["a"], [float(r[0]) for r in rows])
    assert table["b"].tolist() == [r[1].strip() for r in rows]
    np.testing.assert_array_equal(table["c"], np.arange(30.0))


def test_byte_order_mark_is_not_part_of_a_name(tmp_path):
    path = write(tmp_path / "bom.csv", "age,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)), "utf-8-sig")
    ds = from_csv(path, "y")
    assert ds.columns == ["age"] and ds.feature_names == ["age"]


def test_builtin_only_for_shipped_data(tmp_path):
    assert load_toy("moons").builtin and load_dataset("compas").builtin
    path = write(tmp_path / "moons.csv", "x1,x2,y\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(20)))
    ds = from_csv(path, "y")
    assert ds.name == "moons" and not ds.builtin


def deny_reading(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


@pytest.mark.parametrize("text, message", [
    ("a,b,a,y\n1,2,3,0\n4,5,6,1\n", "column 'a' appears more than once in the header"),
    ("a,y\n1,0\n2\n", "line 3 has 1 fields, the header has 2"),
    ("a,y\n" + "x" * 200_000 + ",0\n", "is not a readable CSV file: field larger than field limit"),
    ("", "has no header row"),
    ("a,y\n", "has no data rows"),
], ids=["duplicate-header", "ragged-line", "csv-error", "empty-file", "header-only"])
def test_bad_csv_files_give_one_line_errors(tmp_path, text, message):
    path = write(tmp_path / "f.csv", text)
    with pytest.raises(ValueError) as e:
        read_csv(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unreadable_paths_give_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="is a directory, not a CSV file"):
        read_csv(str(tmp_path))
    (tmp_path / "latin.csv").write_bytes(b"name,y\nJos\xe9,1\n")
    with pytest.raises(ValueError, match="latin.csv is not UTF-8 text"):
        read_csv(str(tmp_path / "latin.csv"))
    path = write(tmp_path / "locked.csv", "a,y\n1,0\n")
    monkeypatch.setattr(datasets, "open", deny_reading, raising=False)   # root can read any file
    with pytest.raises(ValueError, match="locked.csv: permission denied"):
        read_csv(path)
