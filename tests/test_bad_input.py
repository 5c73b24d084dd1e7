"""Bad input and faults, as a hostile user meets them: each gets one line naming the problem
(`error: ...` and exit code 2 from a command line, a one-line ValueError from Python), found
before any long work where it can be known up front; files are written whole or not at all.
Most checks run without training anything."""
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import bench
import common
import datasets
import evaluate
import experiments
import tables
import toy2d
from common import atomic_write
from datasets import from_csv, from_table
from genre import GenReConfig


def one_line_error(capsys) -> str:
    """What a command printed on stderr, checked to be one `error: ...` line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def never(*args, **kwargs):
    raise AssertionError("the long work started before the bad input was refused")


def write_csv(path, header: str, rows) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def income_csv(path, income=lambda i, x: x):
    """A small CSV: age, income (row i may be replaced by income(i, value)), a 0/1 label."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        x = round(float(rng.normal(50, 10)), 2)
        rows.append(f"{rng.integers(18, 80)},{income(i, x)},{int(x > 50)}")
    return write_csv(path, "age,income,y", rows)


# ----------------------------------------------------------------------------- 1. output folders

@pytest.mark.parametrize("flag", ["--out", "--cache"])
def test_evaluate_refuses_a_file_as_a_folder_before_any_work(flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "run_benchmark", never)
    (tmp_path / "taken").write_text("a file")
    folders = {"--out": str(tmp_path / "out"), "--cache": str(tmp_path / "cache"), flag: str(tmp_path / "taken")}
    argv = ["--dataset", "compas", "--methods", "nnr", "--quiet"] + [a for kv in folders.items() for a in kv]
    assert evaluate.main(argv) == 2
    assert f"{flag} {tmp_path / 'taken'} is a file, not a folder" in one_line_error(capsys)


def deny_writing(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A read-only folder (simulated: root may write into any folder, so os.access says yes)."""
    monkeypatch.setattr(evaluate, "run_benchmark", never)
    monkeypatch.setattr(common.tempfile, "mkstemp", deny_writing)
    assert evaluate.main(["--dataset", "compas", "--out", str(tmp_path), "--quiet"]) == 2
    assert f"--out {tmp_path}: cannot write there (Permission denied)" in one_line_error(capsys)


def test_a_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ValueError, match="--cache .*: cannot write there"):
        common.check_folder(str(tmp_path / "f" / "sub"), "--cache")


def test_experiments_toy2d_and_bench_check_their_folders_first(tmp_path, capsys, monkeypatch):
    (tmp_path / "taken").write_text("a file")
    taken = str(tmp_path / "taken")
    monkeypatch.setattr(experiments, "run", never)
    assert experiments.main(["--datasets", "compas", "--only", "comparison", "--out", taken,
                             "--cache", str(tmp_path / "c")]) == 2
    assert "--out" in one_line_error(capsys)
    assert experiments.main(["--datasets", "compas", "--out", str(tmp_path / "o"), "--cache", taken]) == 2
    assert "--cache" in one_line_error(capsys)
    monkeypatch.setattr(toy2d, "run_toy", never)
    assert toy2d.cli(["--quick", "--out", taken, "--cache", str(tmp_path / "c")]) == 2
    assert "--out" in one_line_error(capsys)
    assert toy2d.cli(["--quick", "--out", str(tmp_path / "o"), "--cache", taken]) == 2
    assert "--cache" in one_line_error(capsys)
    monkeypatch.setattr(bench, "pairing", never)
    assert bench.main(["--only", "pairing", "--out", os.path.join(taken, "B.md")]) == 2
    assert "--out's folder" in one_line_error(capsys)


# ----------------------------------------------------------------------------- 2. extreme values

@pytest.mark.parametrize("big", [lambda i, x: "1e308" if i == 5 else x,
                                 lambda i, x: {5: "1e308", 6: "-1e308"}.get(i, x)], ids=["1e308", "+-1e308"])
def test_a_value_beyond_float32_is_refused_naming_its_column(big, tmp_path):
    with pytest.raises(ValueError) as e:
        from_csv(income_csv(tmp_path / "t.csv", big), "y")
    assert "column 'income' has value" in str(e.value) and "float32" in str(e.value)


def test_an_outlier_that_squeezes_a_column_flat_is_refused(tmp_path):
    """1e30 among incomes near 50: scaled to [0, 1], the rest become one float32 value."""
    path = income_csv(tmp_path / "t.csv", lambda i, x: "1e30" if i == 5 else x)
    with pytest.raises(ValueError, match="column 'income' spans .* distinct values stay apart"):
        from_csv(path, "y")


def test_a_heavy_tailed_column_is_kept_exactly():
    """Mostly zeros and a few large values (adult's capital-gain) lose nothing: accepted, and
    every distinct value stays distinct after scaling."""
    rng = np.random.default_rng(0)
    gain = np.where(rng.random(400) < 0.9, 0, rng.integers(100, 99_999, 400))
    ds = from_table({"gain": gain.tolist(), "y": (rng.random(400) < 0.5).astype(int).tolist()}, "y")
    raw = np.unique(ds.unscale(ds.X_train)[:, 0].round())
    assert len(np.unique(ds.X_train[:, 0])) == len(raw) > 10


def test_a_test_value_that_scales_beyond_float32_is_refused():
    train = {"x": [0.0, 1e-30, 2e-30] * 10, "y": [0, 1, 1] * 10}
    test = {"x": [3e38, 0.0], "y": [0, 1]}
    with pytest.raises(ValueError, match="column 'x' has test value 3e\\+38, too far outside the train range"):
        datasets.from_splits("t", train, test, "y")


# ----------------------------------------------------------------------------- 3. damaged caches

@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b""], ids=["truncated", "empty"])
def test_a_damaged_cache_file_is_named_and_rebuilt(damage, tmp_path, capsys):
    path = str(tmp_path / "entry.pkl")
    made = []
    make = lambda: made.append(1) or {"value": np.arange(1000)}
    evaluate.cached(path, False, make, False, "entry")
    with open(path, "rb") as f:
        good = f.read()
    with open(path, "wb") as f:
        f.write(damage(good))
    value, fresh = evaluate.cached(path, False, make, False, "entry")
    assert fresh and len(made) == 2 and np.array_equal(value["value"], np.arange(1000))
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: cache file {path} is unreadable (") and err.endswith("; rebuilding it")
    assert "\n" not in err
    with open(path, "rb") as f:                                           # rewritten whole
        assert pickle.load(f)["version"] == evaluate.CACHE_VERSION


def test_a_damaged_cached_genre_is_named_and_retrained(tmp_path, moons_cache, capsys):
    import dataclasses
    bench_ = dataclasses.replace(evaluate.prepare("moons", 0, cache_dir=moons_cache, verbose=False),
                                 cache_dir=str(tmp_path))
    tiny = GenReConfig(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=6)
    first = evaluate.fit_genre(bench_, tiny, verbose=False)
    (path,) = tmp_path.glob("genre_moons_*.pt")
    path.write_bytes(b"")                                                  # an empty cached model
    again = evaluate.fit_genre(bench_, tiny, verbose=False)
    err = capsys.readouterr().err.strip()
    assert err == f"warning: cached GenRe {path} is unreadable (ValueError); retraining it"
    X = bench_.ds.X_test[:5]
    np.testing.assert_array_equal(again.sample(X), first.sample(X))        # retrained: the same model
    assert evaluate.fit_genre(bench_, tiny, verbose=False) is not None     # the rewritten file loads
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- 6. test negatives scored

def test_the_number_of_test_negatives_scored_is_reported(moons_cache):
    results = evaluate.run_benchmark("moons", ["nnr"], [0], n_test=100_000, cache_dir=moons_cache, verbose=False)
    bench_ = evaluate.prepare("moons", 0, cache_dir=moons_cache, verbose=False)
    n_neg = int((bench_.h.predict_proba(bench_.ds.X_test) <= 0.5).sum())
    assert results["n_test"] == n_neg < 100_000
    assert results["n_test_per_seed"] == [n_neg] and results["n_test_requested"] == 100_000
    assert f"{n_neg} test negatives" in tables.comparison_table(results).splitlines()[0]


# ----------------------------------------------------------------------------- 7, 9. flags and tables

@pytest.mark.parametrize("argv, message", [
    (["--vae-epochs", "0"], "--vae-epochs must be at least 1, got 0"),
    (["--vae-epochs", "-1"], "--vae-epochs must be at least 1, got -1"),
    (["--explain", "-3"], "--explain must be 0 or more, got -3"),
    (["--seeds", "-1"], "--seeds takes one or more seeds of 0 or more, got [-1]"),
])
def test_bad_flag_values_are_refused_before_training(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "prepare", never)
    rc = evaluate.main(["--dataset", "compas", "--methods", "nnr", "--quiet", "--out", str(tmp_path),
                        "--cache", str(tmp_path)] + argv)
    assert rc == 2 and message in one_line_error(capsys)


def test_experiments_refuses_bad_numbers(capsys):
    for argv, message in ((["--seeds", "-1"], "--seeds must be 0 or more"),
                          (["--vae-epochs", "0"], "--vae-epochs must be at least 1"),
                          (["--n-test", "0"], "--n-test must be at least 1")):
        with pytest.raises(SystemExit) as e:
            experiments.parse_args(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_an_unnamed_header_column_is_refused_naming_its_position(tmp_path):
    """A pandas index saved with the table (a leading comma in the header)."""
    path = write_csv(tmp_path / "t.csv", ",age,y", [f"{i},{20 + i},{i % 2}" for i in range(40)])
    with pytest.raises(ValueError, match="column 1 of the header has no name \\(a saved pandas index"):
        from_csv(path, "y")
    with pytest.raises(ValueError, match="column 2 has no name"):
        from_table({"age": [1, 2] * 10, " ": [3, 4] * 10, "y": [0, 1] * 10}, "y")


def test_a_table_with_only_the_target_has_no_feature_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", "y", [str(i % 2) for i in range(40)])
    with pytest.raises(ValueError, match="the data has no feature columns: only the target 'y'"):
        from_csv(path, "y")


def test_a_test_size_that_starves_training_names_the_flag(tmp_path, capsys):
    path = income_csv(tmp_path / "t.csv")
    rc = evaluate.main(["--csv", path, "--target", "y", "--test-size", "0.999", "--quiet",
                        "--out", str(tmp_path), "--cache", str(tmp_path)])
    assert rc == 2 and "--test-size (test_size=) 0.999 leaves 1 train row of target value" in one_line_error(capsys)
    assert len(from_csv(path, "y", test_size=0.5).y_train) == 100    # a half split is fine


# ----------------------------------------------------------------------------- 9. the API's shared checks

class Wide:
    """An h with scikit-learn's (N, 2) predict_proba."""

    def predict_proba(self, X):
        p = np.asarray(X)[:, 0]
        return np.stack([1 - p, p], axis=1)


def test_check_labels():
    assert common.check_labels([0, 1, True, 0.0], 4).tolist() == [0, 1, 1, 0]
    for y, message in (([0, 2, 1], "found 2"), (["no", "yes", "no"], "found 'no'"),
                       ([0, np.nan, 1], "found nan"), ([0, 1], "one label per row of X \\(3 rows\\)")):
        with pytest.raises(ValueError, match=message):
            common.check_labels(y, 3)


def test_check_classifier():
    X = np.random.default_rng(0).random((6, 3)).astype(np.float32)
    h = evaluate.Classifier(3, (4,))
    np.testing.assert_array_equal(common.check_classifier(h, X), h.predict_proba(X))
    with pytest.raises(ValueError, match="h.predict_proba failed on X with 2 features \\(RuntimeError: "):
        common.check_classifier(h, X[:, :2])                                  # h of the wrong width
    with pytest.raises(ValueError, match="shape \\(6,\\); it returned shape \\(6, 2\\); for a scikit-learn"):
        common.check_classifier(Wide(), X)
    with pytest.raises(ValueError, match="has no predict_proba"):
        common.check_classifier(object(), X)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        common.check_classifier(type("Logits", (), {"predict_proba": lambda self, X: X[:, 0] * 5 - 2})(), X)


def test_check_groups():
    cat = np.array([False, True, True, True, True])
    assert [g.tolist() for g in common.check_groups([[3, 1, 2]], 5, cat)] == [[1, 2, 3]]
    assert common.check_groups(None, 5) == []
    for groups, message in (([[1, 5]], "names feature 5, outside 0 ... 4"), ([[-1, 2]], "names feature -1"),
                            ([[1, 2], [2, 3]], "feature 2 is in more than one"), ([[1, 1]], "feature 1 is in"),
                            ([[1]], "two or more feature indices"), ([[0, 1]], "holds feature 0, which is not")):
        with pytest.raises(ValueError, match=message):
            common.check_groups(groups, 5, cat)


# ----------------------------------------------------------------------------- 8. default folders

def test_default_folders_are_the_projects_wherever_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = os.path.dirname(os.path.abspath(evaluate.__file__))
    args = evaluate.parse_args(["--dataset", "compas"])
    assert (args.out, args.cache) == (os.path.join(here, "runs"), os.path.join(here, "cache"))
    args = experiments.parse_args([])
    assert (args.out, args.figures, args.cache) == (os.path.join(here, "results"), os.path.join(here, "figures"),
                                                    os.path.join(here, "cache"))
    assert experiments.parse_args(["--quick"]).out == os.path.join(here, "runs", "quick")
    assert toy2d.output_paths(toy2d.parse_args([])) == (os.path.join(here, "figures"),
                                                        os.path.join(here, "results", "toy2d.json"))
    assert toy2d.parse_args([]).cache == os.path.join(here, "cache")
    import inspect
    assert inspect.signature(evaluate.prepare).parameters["cache_dir"].default == os.path.join(here, "cache")


def test_toy2d_out_takes_every_file():
    """--out DIR on the default run writes the JSON under DIR too, never the published results/."""
    assert toy2d.output_paths(toy2d.parse_args(["--out", "d"])) == ("d", os.path.join("d", "toy2d.json"))
    assert toy2d.output_paths(toy2d.parse_args(["--out", "d", "--results", "r.json"])) == ("d", "r.json")


# ----------------------------------------------------------------------------- 10. Ctrl-C and temp files

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def exit_code(main, argv) -> int:
    """main(argv)'s return value; a KeyboardInterrupt that escapes it fails the test (rather than
    stopping the whole test session)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() as a traceback")


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "run_benchmark", interrupt)
    assert exit_code(evaluate.main, ["--dataset", "compas", "--out", str(tmp_path), "--cache", str(tmp_path)]) == 130
    monkeypatch.setattr(experiments, "run", interrupt)
    assert exit_code(experiments.main, ["--datasets", "compas", "--out", str(tmp_path), "--cache", str(tmp_path),
                                        "--figures", str(tmp_path)]) == 130
    monkeypatch.setattr(toy2d, "run_toy", interrupt)
    assert exit_code(toy2d.cli, ["--quick", "--out", str(tmp_path), "--cache", str(tmp_path)]) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted"] * 3


def test_temp_files_have_a_recognisable_name(tmp_path):
    seen = []
    atomic_write(str(tmp_path / "a.json"), lambda f: seen.extend(os.listdir(tmp_path)) or f.write(b"{}"))
    (tmp_name,) = seen
    assert tmp_name.startswith(f"a.json.partial-{os.getpid()}-") and tmp_name.endswith(".tmp")
    assert os.listdir(tmp_path) == ["a.json"]


def test_stale_temp_files_are_removed_on_the_next_write(tmp_path):
    """A killed writer's temp file goes once a minute old; a live writer's stays unless ten
    minutes untouched; other files are never touched."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = {"killed": f"a.json.partial-{dead.pid}-x1.tmp", "killed_just_now": f"a.json.partial-{dead.pid}-x2.tmp",
             "live": f"b.json.partial-{os.getpid()}-x3.tmp", "live_but_ancient": f"b.json.partial-{os.getpid()}-x4.tmp",
             "users": "tmpabc.tmp"}
    ages = {"killed": 120, "killed_just_now": 5, "live": 120, "live_but_ancient": 3600, "users": 3600}
    for key, name in names.items():
        (tmp_path / name).write_text("partial")
        t = time.time() - ages[key]
        os.utime(tmp_path / name, (t, t))
    atomic_write(str(tmp_path / "c.json"), lambda f: f.write(b"{}"))
    left = set(os.listdir(tmp_path))
    assert left == {"c.json", names["killed_just_now"], names["live"], names["users"]}
