"""Your own data: tables and CSVs with multi-valued categoricals, and clear errors on bad input."""
import numpy as np
import pytest

from common import project_categoricals
from datasets import from_csv, from_table


def small_table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "age": rng.integers(18, 70, n).tolist(),
        "city": rng.choice(["Lyon", "Oslo", "Pune"], n).tolist(),
        "owner": rng.choice(["no", "yes"], n).tolist(),
        "income": rng.normal(50, 10, n).round(1).tolist(),
        "approved": rng.choice(["denied", "granted"], n).tolist(),
    }


def test_table_encoding_with_one_hot_groups():
    t = small_table()
    ds = from_table(t, "approved", categorical=["city", "owner"], immutable=["city"], positive="granted")
    assert ds.feature_names == ["age", "city=Lyon", "city=Oslo", "city=Pune", "owner", "income"]
    assert [g.tolist() for g in ds.groups] == [[1, 2, 3]]
    assert ds.categorical.tolist() == [False, True, True, True, True, False]
    assert ds.immutable.tolist() == [False, True, True, True, False, False]
    X = ds.X_all
    np.testing.assert_array_equal(X[:, 1:4].sum(axis=1), 1)            # exactly one city per row
    assert len(ds.X_test) == 50 and len(ds.X_train) == 150
    # Round trip: describe() gives back the raw values of some row.
    row = ds.encode({k: [v[7]] for k, v in t.items()})[0]
    d = ds.describe(row)
    assert d["city"] == t["city"][7] and d["owner"] == t["owner"][7]
    assert float(d["age"]) == t["age"][7]


def test_csv_path(tmp_path):
    t = small_table(60)
    path = tmp_path / "loans.csv"
    lines = [",".join(t)] + [",".join(str(t[c][i]) for c in t) for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    ds = from_csv(str(path), "approved", categorical=["city", "owner"], test_size=0.5)
    assert ds.name == "loans" and ds.X_train.shape == (30, 6)
    assert ds.y_train.tolist() == [int(v == "granted") for v in np.array(t["approved"])[
        np.random.default_rng(0).permutation(60)[30:]]]


def test_project_categoricals():
    rng = np.random.default_rng(0)
    X = rng.random((50, 6)).astype(np.float32)
    cat = np.array([False, True, True, True, True, False])
    P = project_categoricals(X, cat, [np.array([1, 2, 3])])
    np.testing.assert_array_equal(P[:, 1:4].sum(axis=1), 1)
    np.testing.assert_array_equal(P[:, 1:4].argmax(axis=1), X[:, 1:4].argmax(axis=1))
    assert set(np.unique(P[:, 4])) <= {0, 1}
    np.testing.assert_array_equal(P[:, [0, 5]], X[:, [0, 5]])
    np.testing.assert_array_equal(project_categoricals(P, cat, [np.array([1, 2, 3])]), P)


@pytest.mark.parametrize("change, kwargs, message", [
    (lambda t: t, dict(target="nope"), "target column 'nope' is missing or empty"),
    (lambda t: t, dict(categorical=["colour"]), "categorical column 'colour' is not in the data"),
    (lambda t: t, dict(immutable=["colour"]), "immutable column 'colour' is not in the data"),
    (lambda t: {**t, "approved": ["a", "b", "c", "d"] * 50}, {}, "target column 'approved' has 4 classes"),
    (lambda t: t, dict(positive="maybe"), "positive value 'maybe' is not in target column 'approved'"),
    (lambda t: {**t, "income": [float("nan")] + t["income"][1:]}, {}, "column 'income' has NaN"),
    (lambda t: {**t, "income": [""] + t["income"][1:]}, {}, "column 'income' has NaN, missing"),
    (lambda t: {**t, "income": [float("inf")] + t["income"][1:]}, {}, "column 'income' has NaN"),
    (lambda t: t, dict(categorical=["owner"]), "column 'city' is not numeric (value '"),
])
def test_bad_tables_give_one_line_errors(change, kwargs, message):
    t = change(small_table())
    args = dict(target="approved", categorical=["city", "owner"])
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        from_table(t, **args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unseen_category_at_recourse_time():
    ds = from_table(small_table(), "approved", categorical=["city", "owner"])
    new = {k: [v[0]] for k, v in small_table().items()}
    new["city"] = ["Quito"]
    with pytest.raises(ValueError, match="column 'city' has value 'Quito' never seen in training"):
        ds.encode(new)
    new["city"] = ["Oslo"]
    del new["owner"]
    with pytest.raises(ValueError, match="column 'owner' is missing"):
        ds.encode(new)


def test_csv_through_the_command_line(tmp_path, capsys):
    from evaluate import main
    t = small_table(300, seed=3)
    t["approved"] = np.where(np.array(t["income"]) + 5 * (np.array(t["city"]) == "Oslo") > 52,
                             "granted", "denied").tolist()
    path = tmp_path / "loans.csv"
    path.write_text("\n".join([",".join(t)] + [",".join(str(t[c][i]) for c in t) for i in range(300)]) + "\n")
    rc = main(["--csv", str(path), "--target", "approved", "--positive", "granted",
               "--categorical", "city,owner", "--immutable", "city", "--methods", "nnr_dhplus", "wachter",
               "--explain", "2", "--n-test", "20", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Recourse by nnr_dhplus for 2 test negatives" in out and "P(favourable)" in out
    assert "| nnr_dhplus |" in out and "| wachter |" in out
    assert (tmp_path / "out" / "loans.json").exists()
    for line in out.splitlines():
        if line.strip().startswith("#"):
            assert "city:" not in line                     # the immutable column never changes


@pytest.mark.parametrize("argv, message", [
    (["--csv", "nope.csv", "--target", "y"], "data file not found: nope.csv"),
    (["--csv", "x.csv"], "--csv needs --target COLUMN"),
    ([], "give exactly one of --dataset NAME or --csv PATH"),
])
def test_csv_command_line_errors(argv, message, capsys):
    from evaluate import main
    assert main(argv + ["--quiet"]) == 2
    assert message in capsys.readouterr().err
