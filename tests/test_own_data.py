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
    row = ds.transform({k: [v[7]] for k, v in t.items()})[0]
    d = ds.describe(row)
    assert d["city"] == t["city"][7] and d["owner"] == t["owner"][7]
    assert float(d["age"]) == t["age"][7]


def test_csv_path(tmp_path):
    t = small_table(60)
    path = tmp_path / "loans.csv"
    lines = [",".join(t)] + [",".join(str(t[c][i]) for c in t) for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    ds = from_csv(str(path), "approved", categorical=["city", "owner"], positive="granted", test_size=0.5)
    assert ds.name == "loans" and ds.X_train.shape == (30, 6) and not ds.builtin
    # Every row keeps its own label: (age, income, label) of each split is a row of the file.
    rows = set(zip(t["age"], t["income"], t["approved"]))
    for X, y in ((ds.X_train, ds.y_train), (ds.X_test, ds.y_test)):
        raw = ds.unscale(X)
        for a, inc, lab in zip(raw[:, 0].round(), raw[:, 5].round(1), y):
            assert (int(a), float(inc), "granted" if lab else "denied") in rows


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
    (lambda t: {**t, "city": t["city"][:5] + [" "] + t["city"][6:]}, {},
     "categorical column 'city' has an empty value in data row 6"),
    (lambda t: {**t, "approved": t["approved"][:3] + [""] + t["approved"][4:]}, {},
     "target column 'approved' has an empty value in data row 4"),
    (lambda t: t, dict(immutable=["approved"]), "the target column 'approved' cannot be immutable"),
    (lambda t: t, dict(categorical=["approved"]), "the target column 'approved' cannot be categorical"),
    (lambda t: t, dict(positive=None), "target column 'approved' has values 'denied' and 'granted'; "
                                       "name the favourable one with --positive"),
    (lambda t: {**t, "approved": ["denied"] + ["granted"] * 199}, {},
     "target value 'denied' has only 1 row: too few for both a train and a test split"),
    (lambda t: {**t, "age": t["age"][:-1]}, {}, "column 'age' has 199 values, the target has 200"),
])
def test_bad_tables_give_one_line_errors(change, kwargs, message):
    t = change(small_table())
    args = dict(target="approved", categorical=["city", "owner"], positive="granted")
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        from_table(t, **args)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("labels, positive", [([0, 1], 1), (["0", "1"], "1"), (["0.0", "1.0"], "1.0")])
def test_zero_one_labels_need_no_positive(labels, positive):
    t = {**small_table(), "approved": [labels[i % 2] for i in range(200)]}
    ds = from_table(t, "approved", categorical=["city", "owner"])
    assert ds.y_train.sum() + ds.y_test.sum() == 100                    # the rows labelled 1 are favourable
    explicit = from_table(t, "approved", categorical=["city", "owner"], positive=positive)
    np.testing.assert_array_equal(ds.y_train, explicit.y_train)


@pytest.mark.parametrize("seed", range(5))
def test_split_is_stratified_by_the_label(seed):
    # 2 positives in 40 rows: an unstratified 25% test split often leaves one split without them.
    t = {"x": list(range(40)), "y": ["good", "good"] + ["bad"] * 38}
    ds = from_table(t, "y", positive="good", seed=seed)
    assert ds.y_train.sum() == 1 and ds.y_test.sum() == 1
    assert len(ds.y_test) == 1 + round(0.25 * 38)
    rows = np.concatenate([ds.unscale(ds.X_train), ds.unscale(ds.X_test)])[:, 0]
    assert sorted(rows.round().astype(int).tolist()) == list(range(40))    # a partition of the rows
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert sorted(rows[labels == 1].round().astype(int).tolist()) == [0, 1]


def test_unseen_category_at_recourse_time():
    ds = from_table(small_table(), "approved", categorical=["city", "owner"], positive="granted")
    new = {k: [v[0]] for k, v in small_table().items()}
    new["city"] = ["Quito"]
    with pytest.raises(ValueError, match="column 'city' has value 'Quito' never seen in training"):
        ds.transform(new)
    new["city"] = ["Oslo"]
    del new["owner"]
    with pytest.raises(ValueError, match="column 'owner' is missing"):
        ds.transform(new)


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
    (["--csv", "tests", "--target", "y"], "tests is a directory, not a CSV file"),
    (["--csv", "x.csv"], "--csv needs --target COLUMN"),
    ([], "give exactly one of --dataset NAME or --csv PATH"),
])
def test_csv_command_line_errors(argv, message, capsys):
    from evaluate import main
    assert main(argv + ["--quiet"]) == 2
    assert message in capsys.readouterr().err
