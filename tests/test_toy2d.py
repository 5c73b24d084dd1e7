"""toy2d.py end to end with a tiny configuration (--quick, moons only): each method's
recourse against a brute-force or closed-form reference, exact densities, the JSON
against what the run printed, the figure's columns, and determinism."""
import contextlib
import io
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import toy2d


def run_quick(root, cache):
    """One --quick run on moons into root; (the run's dict, its JSON, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        (run,) = toy2d.main(["--quick", "--datasets", "moons", "--grid", "61", "--out", str(root),
                             "--results", str(root / "toy2d.json"), "--cache", str(cache)])
    with open(root / "toy2d.json") as f:
        return run, json.load(f), printed.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy2d")
    run, data, printed = run_quick(root / "first", root / "cache")
    return root, run, data, printed


# ----------------------------------------------------------------------------- the methods

def test_figure_2_columns_run_the_papers_methods(quick):
    """The paper's Figure 2 shows Wachter, PROBE, CRUDS and GenRe; NNR (D_h^+) stands beside
    GenRe. Each column's fitted method is that method: the baselines as designed, NNR on
    GenRe's own targets D_h^+, GenRe sampled as the paper did (Table 9: lambda 5, tau 10,
    sigma 0, bin centres, best of 10 by h)."""
    from baselines import NNR, PROBE, Wachter
    from generative import CRUDS
    from genre import GenRe
    _, run, _, _ = quick
    methods = run["methods"]
    assert list(methods) == list(toy2d.METHOD_NAMES)
    expected = {"Wachter": Wachter, "PROBE": PROBE, "CRUDS": CRUDS, "NNR (D_h^+)": NNR, "GenRe": GenRe}
    for label, cls in expected.items():
        assert type(methods[label]) is cls, label
    assert all(methods[m].mode == "designed" for m in ("Wachter", "PROBE", "CRUDS"))
    assert methods["NNR (D_h^+)"].pool == "dhplus"
    cfg = methods["GenRe"].cfg_
    assert (cfg.lam, cfg.tau, cfg.sigma, cfg.n_samples, cfg.select) == (5.0, 10.0, 0.0, 10, "h")


def test_nnr_returns_the_nearest_row_of_dh_plus(quick):
    """Brute force: D_h^+ = train rows with y = 1 and h(x) > 0.7; the L1-nearest of them."""
    _, run, _, _ = quick
    ds, h = run["bench"].ds, run["bench"].h
    pool = ds.X_train[(ds.y_train == 1) & (h.predict_proba(ds.X_train) > 0.7)]    # (P, D)
    dist = np.abs(run["X_neg"][:, None, :] - pool[None, :, :]).sum(-1)           # (M, P)
    got = run["recourse"]["NNR (D_h^+)"]
    assert (np.abs(got[:, None, :] - pool[None]).sum(-1) == 0).any(axis=1).all()  # a row of D_h^+
    np.testing.assert_allclose(np.abs(got - run["X_neg"]).sum(1), dist.min(1), rtol=1e-6)


def test_genre_returns_the_sample_h_rates_highest(quick):
    """Sec. 5.1 (select="h", sigma 0, no snapping): the recourse is the best of its 10
    samples by h, and every coordinate of a sample is a bin centre mu_jk."""
    _, run, _, _ = quick
    genre, S = run["genre"], run["samples"]                                      # S (M, n, D)
    M, n, D = S.shape
    assert (M, n, D) == (len(run["X_neg"]), 10, 2)
    p = run["bench"].h.predict_proba(S.reshape(M * n, D)).reshape(M, n)
    np.testing.assert_array_equal(run["recourse"]["GenRe"], S[np.arange(M), p.argmax(1)])
    mu = genre.bins_.mu.numpy()                                                  # (D, K)
    for j in range(D):
        assert np.isclose(S[:, :, j, None], mu[j]).any(-1).all()


def test_designed_search_baselines_stay_in_the_data_range(quick):
    """As designed, Wachter, PROBE and CRUDS clamp their output to [0, 1] (the fork's
    mode does not); every method returns one finite point per negative."""
    _, run, _, _ = quick
    for m in toy2d.METHOD_NAMES:
        assert run["recourse"][m].shape == run["X_neg"].shape
        assert np.isfinite(run["recourse"][m]).all()
    for m in ("Wachter", "PROBE", "CRUDS"):
        assert run["recourse"][m].min() >= 0 and run["recourse"][m].max() <= 1


# ----------------------------------------------------------------------------- the numbers

def test_json_holds_the_metrics_recomputed_here(quick):
    """Cost, Validity and Score recomputed from the recourses, the oracle and the closed form
    Score = Validity + LOF - Cost / d; the negatives are every test row with h <= 0.5."""
    _, run, data, _ = quick
    bench, X = run["bench"], run["X_neg"]
    assert data["seed"] == 0 and list(data["toys"]) == ["moons"]
    toy = data["toys"]["moons"]
    assert toy["n_test_negatives"] == int((bench.h.predict_proba(bench.ds.X_test) <= 0.5).sum()) == len(X)
    assert toy["h_test_accuracy"] == pytest.approx(((bench.h.predict_proba(bench.ds.X_test) > 0.5)
                                                    == bench.ds.y_test).mean())
    assert list(toy["methods"]) == list(toy2d.METHOD_NAMES)
    for m, s in toy["methods"].items():
        assert set(s) == {"cost", "validity", "lof", "score"}
        R = run["recourse"][m]
        assert s["cost"] == pytest.approx(np.abs(R - X).sum(1).mean(), rel=1e-5)
        assert s["validity"] == pytest.approx((bench.oracle.predict_proba(R)[:, 1] > 0.5).mean())
        assert s["score"] == pytest.approx(s["validity"] + s["lof"] - s["cost"] / 2)


def test_json_holds_what_the_run_printed(quick):
    _, _, data, printed = quick
    assert data["command"].startswith("python toy2d.py --quick --datasets moons")
    assert f"total {data['seconds']:.1f}s" in printed
    lines = {line.strip().rsplit(maxsplit=4)[0]: line.split()[-4:] for line in printed.splitlines()
             if line.strip().startswith(toy2d.METHOD_NAMES)}
    assert list(lines) == list(toy2d.METHOD_NAMES)
    for m, s in data["toys"]["moons"]["methods"].items():
        assert lines[m] == [f"{s['validity']:.2f}", f"{s['lof']:.2f}", f"{s['cost']:.3f}", f"{s['score']:.3f}"]


def test_only_the_default_run_writes_the_published_files():
    default = toy2d.output_paths(toy2d.parse_args([]))
    published = (os.path.join(toy2d.HERE, "figures"), os.path.join(toy2d.HERE, "results", "toy2d.json"))
    assert default == published
    for argv in (["--quick"], ["--datasets", "moons"], ["--seed", "1"], ["--out", "elsewhere"]):
        out, results = toy2d.output_paths(toy2d.parse_args(argv))
        assert results != published[1] and out != published[0]
    assert toy2d.output_paths(toy2d.parse_args(["--quick", "--results", "x.json"]))[1] == "x.json"


# ----------------------------------------------------------------------------- the figures

def test_figure_2_has_one_column_per_method_and_figure_5_four(quick):
    root, run, _, _ = quick
    fig = toy2d.figure_recourse([run], 5)
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert len(titles) == len(toy2d.METHOD_NAMES)
    for title, m in zip(titles, toy2d.METHOD_NAMES):
        assert title.startswith(f"moons: {toy2d.LABELS[m]}\n")
    fig = toy2d.figure_density([run])
    assert sum(ax.get_title().startswith("moons: ") for ax in fig.axes) == 4      # 2 x, R and P each
    plt.close(fig)
    for name in ("toy2d_recourse.png", "toy2d_density.png"):
        img = matplotlib.image.imread(root / "first" / name)                      # (H, W, 4) in [0, 1]
        assert img.shape[1] > 1.5 * img.shape[0] > 300                            # one row of panels
        assert img[..., :3].var() > 1e-3                                          # not a blank canvas


def test_grid_densities_integrate_to_one(quick):
    """Each factor sum_k p_jk N(x_j; mu_jk, w_j) integrates to one, so the product does.
    A grid beyond [0, 1]^2 (the bins lie inside D_h^+'s range) with a step (0.0075) below
    the kernel width w checks it: a Riemann sum of a Gaussian at such a step is exact to
    far below the tolerance."""
    _, run, _, _ = quick
    genre, uncond = run["genre"], run["uncond"]
    assert genre.bins_.w.min() > 0.0075
    grid, _, area = toy2d.make_grid(-0.25, 1.25, 201)
    for x in run["pair"]:
        mass = toy2d.grid_density(toy2d.conditional_logits(genre, x), grid, genre.bins_).sum() * area
        assert 0.98 < float(mass) < 1.02
    mass = toy2d.grid_density(uncond, grid, genre.bins_).sum() * area
    assert 0.98 < float(mass) < 1.02


@torch.no_grad()
def test_teacher_forced_density_equals_feature_by_feature_product(quick):
    """Independent path: decode R(x+_0 | x) and then R(x+_1 | x, x+_0) one step at a time
    (as sampling does), multiply the two 1-D mixtures by hand, and compare."""
    _, run, _, _ = quick
    genre = run["genre"]
    mu, w = genre.bins_.mu.numpy(), genre.bins_.w.numpy()
    x = torch.as_tensor(run["pair"][0])
    x_plus = torch.cat([torch.as_tensor(run["X_pos"][:40]),                   # where the mass is
                        torch.rand(10, 2, generator=torch.Generator().manual_seed(0))])  # (B, D)
    memory = genre.model_.encode(x.expand(50, -1))
    expected = np.ones(50)
    for j in range(2):
        p = torch.softmax(genre.model_.decode(memory, x_plus[:, :j])[:, -1], dim=-1).numpy()  # (B, K)
        z = (x_plus[:, j, None].numpy() - mu[j]) / w[j]
        expected *= (p * np.exp(-0.5 * z ** 2) / (w[j] * np.sqrt(2 * np.pi))).sum(1)
    got = toy2d.grid_density(toy2d.conditional_logits(genre, x), x_plus, genre.bins_).numpy()
    assert (expected[:40] > 1e-3).mean() > 0.5                            # a non-vacuous comparison
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-12)


# ----------------------------------------------------------------------------- determinism

def test_the_same_seed_gives_the_same_numbers_and_figures(quick):
    root, first, data, _ = quick
    second, data2, _ = run_quick(root / "second", root / "cache")          # cached oracle, h, CSVAE
    for m in toy2d.METHOD_NAMES:
        np.testing.assert_array_equal(first["recourse"][m], second["recourse"][m])
    np.testing.assert_array_equal(first["density"]["unconditional"], second["density"]["unconditional"])
    assert data2["toys"] == data["toys"]
    for name in ("toy2d_recourse.png", "toy2d_density.png"):
        np.testing.assert_array_equal(matplotlib.image.imread(root / "first" / name),
                                      matplotlib.image.imread(root / "second" / name))
