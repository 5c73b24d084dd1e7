"""toy2d.py end to end with a tiny configuration: figures, exact densities, determinism."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import numpy as np
import pytest
import torch

import toy2d


def run_quick(out, cache):
    return toy2d.main(["--quick", "--datasets", "moons", "--grid", "61",
                       "--out", str(out), "--cache", str(cache)])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy2d")
    (run,) = run_quick(root / "figures", root / "cache")
    return root, run


def test_both_figures_are_non_trivial_images(quick):
    root, _ = quick
    for name in ("toy2d_recourse.png", "toy2d_density.png"):
        img = matplotlib.image.imread(root / "figures" / name)             # (H, W, 4) floats in [0, 1]
        assert img.shape[0] > 300 and img.shape[1] > 300
        assert img[..., :3].var() > 1e-3                                    # not a blank canvas


def test_grid_densities_integrate_to_one(quick):
    """Each factor sum_k p_jk N(x_j; mu_jk, w_j) integrates to one, so the product does.
    A grid well beyond [0, 1]^2 with a step (0.005) below the kernel width w checks it."""
    _, run = quick
    genre, uncond = run["genre"], run["uncond"]
    assert genre.bins_.w.min() > 0.005
    grid, _, area = toy2d.make_grid(-0.5, 1.5, 401)
    for x in run["pair"]:
        mass = toy2d.grid_density(toy2d.conditional_logits(genre, x), grid, genre.bins_.mu, genre.bins_.w).sum() * area
        assert 0.98 < float(mass) < 1.02
    mass = toy2d.grid_density(uncond, grid, genre.bins_.mu, genre.bins_.w).sum() * area
    assert 0.98 < float(mass) < 1.02


@torch.no_grad()
def test_teacher_forced_density_equals_feature_by_feature_product(quick):
    """Independent path: decode R(x+_0 | x) and then R(x+_1 | x, x+_0) one step at a time
    (as sampling does), multiply the two 1-D mixtures by hand, and compare."""
    _, run = quick
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
    got = toy2d.grid_density(toy2d.conditional_logits(genre, x), x_plus, genre.bins_.mu, genre.bins_.w).numpy()
    assert (expected[:40] > 1e-3).mean() > 0.5                            # a non-vacuous comparison
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-12)


def test_metrics_are_in_range_and_the_pipeline_is_deterministic(quick, tmp_path):
    root, first = quick
    for s in first["scores"].values():
        assert 0 <= s["validity"] <= 1 and 0 <= s["lof"] <= 1 and s["cost"] >= 0
    assert first["scores"]["NNR (D_h^+)"]["validity"] > 0.9               # real points of D_h^+
    (second,) = run_quick(tmp_path, root / "cache")                        # same seed, cached h
    for m in toy2d.METHOD_NAMES:
        np.testing.assert_array_equal(first["recourse"][m], second["recourse"][m])
    np.testing.assert_array_equal(first["density"]["unconditional"], second["density"]["unconditional"])
    for name in ("toy2d_recourse.png", "toy2d_density.png"):
        np.testing.assert_array_equal(matplotlib.image.imread(root / "figures" / name),
                                      matplotlib.image.imread(tmp_path / name))
