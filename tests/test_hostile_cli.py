"""Careless and hostile command lines: a repeated flag keeps every rule it gives, a full or
read-only disk costs one line (and never the table, nor the run when only a cache is lost),
flags that would run nothing or mislead are refused in one line before any work, and a
user's CSV never takes a benchmark's name."""
import dataclasses
import errno
import json
import os

import numpy as np
import pytest
import torch

import bench
import common
import evaluate
import experiments
import toy2d
from datasets import from_csv
from genre import GenReConfig
from test_bad_input import never, one_line_error


def refused(argv, tmp_path, capsys, monkeypatch) -> str:
    """evaluate.py's one-line error for argv on compas, checked to come before any work."""
    monkeypatch.setattr(evaluate, "run_benchmark", never)
    rc = evaluate.main(["--dataset", "compas", "--quiet", "--out", str(tmp_path), "--cache", str(tmp_path)] + argv)
    assert rc == 2
    return one_line_error(capsys)


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="a full disk is simulated with /dev/full")


def fill_the_disk(monkeypatch):
    """From now on every file atomic_write writes meets a full disk: its bytes go to /dev/full."""
    def mkstemp(dir, prefix, suffix):
        return os.open("/dev/full", os.O_WRONLY), os.path.join(dir, f"{prefix}x{suffix}")
    monkeypatch.setattr(common.tempfile, "mkstemp", mkstemp)


# ----------------------------------------------------------------------------- 1. repeated constraint flags

def test_a_repeated_constraint_flag_keeps_both_rules():
    args = evaluate.parse_args(["--dataset", "compas", "--fixed", "age", "--fixed", "priors_count,age",
                                "--increase", "a", "--increase", "b", "--decrease", "c", "--decrease", "d",
                                "--range", "age=20:30", "--range", "age=25:", "--range", "x=:5",
                                "--allow", "sex=Male", "--allow", "sex=Female,Male"])
    assert evaluate.constraints_from_args(args) == dict(
        fixed=["age", "priors_count"], increase=["a", "b"], decrease=["c", "d"],
        ranges={"age": (25.0, 30.0), "x": (None, 5.0)}, allowed={"sex": ["Male", "Female"]})


def loans_csv(path) -> str:
    """300 rows: four numeric columns, a city (one name holds a comma) and a 0/1 label."""
    rng = np.random.default_rng(0)
    cities = ["Oslo", '"Washington, DC"', "Lima"]
    rows = ["a,b,c,d,city,y"]
    for _ in range(300):
        x = rng.uniform(0, 10, 4).round(2)
        rows.append(",".join(map(str, x)) + f",{cities[rng.integers(3)]},{int(x.sum() > 20)}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_repeated_constraints_are_all_kept_by_a_run(tmp_path, capsys):
    rc = evaluate.main(["--csv", loans_csv(tmp_path / "loans.csv"), "--target", "y", "--categorical", "city",
                        "--methods", "nnr_dhplus", "--n-test", "20", "--explain", "5", "--quiet",
                        "--fixed", "a", "--fixed", "b", "--increase", "c", "--increase", "d",
                        "--range", "c=-1:12", "--range", "c=:11", "--allow", "city=Oslo",
                        "--allow", "city=Washington\\, DC", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "k")])
    out = capsys.readouterr().out
    assert rc == 0, out
    results = json.loads((tmp_path / "o" / "loans.json").read_text())
    assert results["constraints"]["rules"] == dict(fixed=["a", "b"], increase=["c", "d"], decrease=[],
                                                  ranges={"c": [-1.0, 11.0]}, allowed={"city": ["Oslo", "Washington, DC"]})
    assert results["methods"]["nnr_dhplus"]["constraint_violations"] == 0
    explained = [line for line in out.splitlines() if line.strip().startswith("#")]
    assert len(explained) == 5
    for line in explained:                                     # "#1: P(favourable) 0.1 -> 0.8; c: 2 -> 5; ..."
        changes = dict(c.split(": ", 1) for c in line.split("; ")[1:] if c != "no change")
        assert not {"a", "b"} & set(changes) and not changes.get("city", "").endswith("Lima")
        if "c" in changes:
            before, after = map(float, changes["c"].split(" -> "))
            assert before <= after <= 11


@pytest.mark.parametrize("argv, message", [
    (["--range", "age=20:30", "--range", "age=40:50"], "--range age: 20:30 and 40:50 allow no value in common"),
    (["--increase", "age", "--decrease", "priors_count,age"], "--increase and --decrease both name 'age'"),
    (["--allow", "sex="], "--allow sex: give at least one value"),
    (["--allow", "sex= , "], "--allow sex: give at least one value"),
    (["--range", "age=inf:"], "--range age=inf:: the ends must be finite numbers"),
    (["--range", "age=:nan"], "--range age=:nan: the ends must be finite numbers"),
    (["--methods", "all", "genre"], "--methods all names every method; it cannot be combined with other names"),
])
def test_contradictory_or_empty_rules_are_refused_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    assert message in refused(argv, tmp_path, capsys, monkeypatch)


def test_a_comma_inside_a_value_is_written_with_a_backslash():
    assert evaluate.split_list("Washington\\, DC, Oslo,,") == ["Washington, DC", "Oslo"]


# ----------------------------------------------------------------------------- 2. a full disk

@pytest.fixture
def moons_results(moons_cache):
    return evaluate.run_benchmark("moons", ["nnr"], [0], n_test=20, cache_dir=moons_cache, verbose=False)


@needs_dev_full
def test_a_full_disk_prints_the_table_then_one_line(moons_results, tmp_path, capsys, monkeypatch):
    def run_then_fill(*args, **kwargs):
        fill_the_disk(monkeypatch)
        return moons_results
    monkeypatch.setattr(evaluate, "run_benchmark", run_then_fill)
    rc = evaluate.main(["--dataset", "compas", "--methods", "nnr", "--quiet", "--out", str(tmp_path),
                        "--cache", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 2 and "| nnr |" in captured.out                              # the table was shown
    assert captured.err.strip() == f"error: cannot write {tmp_path / 'moons.json'}: No space left on device"
    assert os.listdir(tmp_path) == []


def test_a_write_error_names_the_file(tmp_path):
    def full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(common.WriteError) as e:
        common.atomic_write(str(tmp_path / "a.json"), full)
    assert str(e.value) == f"cannot write {tmp_path / 'a.json'}: No space left on device"
    assert os.listdir(tmp_path) == []


@needs_dev_full
def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, capsys, monkeypatch):
    fill_the_disk(monkeypatch)
    path = str(tmp_path / "entry.pkl")
    value, made = evaluate.cached(path, False, lambda: {"value": 7}, False, "entry")
    assert made and value["value"] == 7
    assert capsys.readouterr().err.strip() == (f"warning: cannot write the cache {path}: No space left on device; "
                                               f"going on without it")


@needs_dev_full
def test_a_trained_genre_survives_a_cache_it_cannot_be_written_to(tmp_path, moons_cache, capsys, monkeypatch):
    bench_ = dataclasses.replace(evaluate.prepare("moons", 0, cache_dir=moons_cache, verbose=False),
                                 cache_dir=str(tmp_path))
    fill_the_disk(monkeypatch)
    tiny = GenReConfig(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, steps=6)
    genre = evaluate.fit_genre(bench_, tiny, verbose=False)
    assert genre.recourse(bench_.ds.X_test[:3]).shape == (3, 2)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: cannot write the cache {tmp_path}{os.sep}genre_moons_")
    assert err.endswith(": No space left on device; going on without it") and "\n" not in err


@needs_dev_full
def test_a_baselines_model_cache_that_cannot_be_written_is_a_warning_too(tmp_path, capsys, monkeypatch):
    """The VAEs' and diffusion models' cache (generative.cached_model), like the oracle's and GenRe's."""
    import generative
    fill_the_disk(monkeypatch)
    model = generative.cached_model(lambda: None, lambda: torch.nn.Linear(2, 1), np.zeros((4, 2)), np.zeros(4),
                                    {"model": "test"}, str(tmp_path), "vae", False)
    assert isinstance(model, torch.nn.Linear)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: cannot write the cache {tmp_path}{os.sep}vae_") and "\n" not in err


# ----------------------------------------------------------------------------- 3-5. experiments.py

@pytest.mark.parametrize("argv, message", [
    (["--only", "fractions", "--datasets", "compas"], "--only fractions runs on adult only; add adult to --datasets"),
    (["--only", "gaps", "--datasets", "adult"], "--only gaps runs gaps.py's studies, which use adult, compas, heloc"),
    (["--only", "generative", "--methods", "genre"], "--only generative runs cchvae"),
    (["--only", "comparison", "--seeds", "0", "0"], "--seeds names a seed twice: [0, 0]"),
    (["--generative-seeds", "1", "1"], "--generative-seeds names a seed twice: [1, 1]"),
])
def test_experiments_refuses_flags_that_run_nothing_or_repeat_a_seed(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        experiments.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_stage_with_nothing_to_run_beside_others_is_named_and_skipped(capsys):
    args = experiments.parse_args(["--only", "comparison", "constrained", "--datasets", "heloc"])
    assert experiments.plan(args) == [("comparison", "heloc")]
    assert capsys.readouterr().err.strip() == ("warning: --only constrained runs on adult only; add adult to "
                                               "--datasets; skipped")


def test_report_only_into_a_folder_says_what_it_wrote_or_refuses(tmp_path, capsys):
    assert experiments.main(["--report-only", "--out", str(tmp_path)]) == 2
    assert f"--report-only: {tmp_path} holds no result files to report" in one_line_error(capsys)
    (tmp_path / "compas.json").write_text(open(os.path.join(evaluate.PUBLISHED, "compas.json")).read())
    assert experiments.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert f"written: {tmp_path / 'README.md'}" in capsys.readouterr().out
    assert "| genre |" in (tmp_path / "README.md").read_text()


# ----------------------------------------------------------------------------- 6. bench.py and toy2d.py numbers

@pytest.mark.parametrize("main, argv, message", [
    (bench.main, ["--threads", "0"], "argument --threads: must be at least 1, got 0"),
    (bench.main, ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (bench.main, ["--e2e-repeats", "-2"], "argument --e2e-repeats: must be at least 1"),
    (bench.main, ["--paper-steps", "0"], "argument --paper-steps: must be at least 1"),
    (bench.main, ["--n-candidates", "0"], "argument --n-candidates: must be at least 1"),
    (bench.main, ["--subsample", "0"], "argument --subsample: must be at least 1"),
    (bench.main, ["--million-rows", "2000000"], "--million-rows must be at most 1,000,000"),
    (bench.main, ["--scaling-n", "5"], "argument --scaling-n: invalid choice: 5"),
    (toy2d.cli, ["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (toy2d.cli, ["--grid", "0"], "argument --grid: must be at least 2, got 0"),
    (toy2d.cli, ["--n-show", "-3"], "argument --n-show: must be at least 1, got -3"),
    (toy2d.cli, ["--n-samples-shown", "-1"], "argument --n-samples-shown: must be at least 0"),
    (toy2d.cli, ["--threads", "two"], "argument --threads: 'two' is not a whole number"),
])
def test_numeric_flags_are_checked_before_any_work(main, argv, message, capsys, monkeypatch):
    monkeypatch.setattr(toy2d, "run_toy", never)
    for work in ("median_throughput", "pairing", "constraint_overhead", "end_to_end", "pairing_error", "million",
                 "scaling", "write_section"):
        monkeypatch.setattr(bench, work, never)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- 10. --options

@pytest.mark.parametrize("argv, message", [
    (["--options", "3"], "--options 3 needs --explain N to show them"),
    (["--options", "0", "--explain", "2"], "--options must be at least 1, got 0"),
    (["--explain", "-1"], "--explain must be 0 or more, got -1"),
])
def test_options_without_people_to_show_them_are_refused(argv, message, tmp_path, capsys, monkeypatch):
    assert message in refused(argv, tmp_path, capsys, monkeypatch)


def test_repeated_options_are_shown_once_and_the_shortfall_said(moons_cache):
    bench_ = evaluate.prepare("moons", 0, cache_dir=moons_cache, verbose=False)
    X = bench_.ds.X_test[:2]
    a, b, c = X + 0.05, X + 0.1, X + 0.15
    options = np.stack([np.stack([a[0], a[0], b[0]]), np.stack([a[1], b[1], c[1]])])     # (2, 3, D)
    lines = evaluate.explain_recourse(bench_, X, options, "genre").splitlines()
    assert lines[1].endswith("; only 2 distinct options among GenRe's samples")
    assert [line.split(":")[0].strip() for line in lines[2:4]] == ["option 1", "option 2"]
    assert lines[4].startswith("  #2: ") and "only" not in lines[4] and len(lines) == 8
    assert lines[3].split("; ", 1)[1] == evaluate.actions_text(bench_.ds.describe(X[0]), bench_.ds.describe(b[0]))


# ----------------------------------------------------------------------------- 15. a CSV named like a benchmark

def test_a_csv_named_like_a_benchmark_never_takes_its_name(tmp_path):
    rows = "x,z,y\n" + "".join(f"{i % 7},{i % 5},{int(i % 7 > 3)}\n" for i in range(60))
    (tmp_path / "compas.csv").write_text(rows)
    (tmp_path / "loans.csv").write_text(rows)
    assert from_csv(str(tmp_path / "loans.csv"), "y").name == "loans"
    ds = from_csv(str(tmp_path / "compas.csv"), "y")
    assert ds.name == "csv-compas"
    assert evaluate.write_json({"dataset": ds.name}, str(tmp_path)) == str(tmp_path / "csv-compas.json")


def test_the_paper_size_run_refuses_to_start_without_a_gpu_unless_told(capsys, monkeypatch):
    import paper_sizes
    monkeypatch.setattr(paper_sizes.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(paper_sizes, "run_benchmark", never)
    assert common.command_line(paper_sizes.main, []) == 2
    assert "no CUDA device" in one_line_error(capsys)
