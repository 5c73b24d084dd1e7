"""Tests for engine.py: each piece of machinery gives what genre.py's plain code gives
(cached decoding, prefiltered pairing, chunked sampling), and the bookkeeping keeps
its promises (the validation split, threads, files written whole, clear errors)."""
import numpy as np
import pytest
import torch

import engine
import genre
from constraints import Constraints
from engine import Settings
from genre import GenRe, RecourseTransformer, feature_kinds, full_decoder, pairing_distribution, sample_recourse
from test_genre import LinearH, dense, tiny, tiny_config, toy_data


@pytest.fixture(scope="module")
def fitted():
    X, y, h, imm, cat = toy_data()
    model = tiny(random_state=0).fit(X, y, h, immutable=imm, categorical=cat)
    return model, X, y, h, X[h.predict_proba(X) <= 0.5][:25]


# -- pairing for large tables ---------------------------------------------------------

def test_prefiltered_pairs_equal_the_exact_ones_on_small_data():
    """pairing="prefilter" goes through pairing.prefiltered_pairing, whose candidate pool
    (2048) covers all 40 targets here, so it must give exactly Q."""
    rng = np.random.default_rng(9)
    Xs, Xd = torch.from_numpy(rng.random((30, 3)).astype(np.float32)), torch.from_numpy(rng.random((40, 3)).astype(np.float32))
    Xs[:, 0], Xd[:, 0] = (Xs[:, 0] > 0.5).float(), (Xd[:, 0] > 0.5).float()
    imm = torch.tensor([True, False, False])
    q = {}
    for pairing in ("exact", "prefilter"):
        pairs = genre.make_pairs(Xs, Xd, 5.0, imm, 10, pairing)
        prob = torch.diff(pairs.cdf, dim=1, prepend=torch.zeros(len(pairs.cdf), 1))
        q[pairing] = dense(pairs.idx, prob, 40)
        assert pairs.idx.dtype == torch.int32 and pairs.cdf.dtype == torch.float32
    np.testing.assert_allclose(q["prefilter"], q["exact"], atol=1e-6)


def test_auto_pairing_is_exact_up_to_exact_costs_and_prefiltered_beyond(monkeypatch):
    calls = []
    spy = lambda *a, **k: calls.append(len(a[0]) * len(a[1])) or pairing_distribution(*a[:5])
    monkeypatch.setattr(genre, "prefiltered_pairing", spy)
    Xs, Xd, imm = torch.rand(30, 3), torch.rand(40, 3), torch.zeros(3, dtype=torch.bool)
    monkeypatch.setattr(engine, "EXACT_COSTS", 30 * 40)
    genre.make_pairs(Xs, Xd, 5.0, imm, 10, "auto")
    assert calls == []                                                    # 1,200 costs: exact
    monkeypatch.setattr(engine, "EXACT_COSTS", 30 * 40 - 1)
    genre.make_pairs(Xs, Xd, 5.0, imm, 10, "auto")
    assert calls == [30 * 40]                                             # one more than allowed: prefilter


def test_max_sources_pairs_a_uniform_subsample_and_changes_nothing_when_not_reached():
    """Q is built for max_sources rows of D_h^- (train + validation), distinct rows of it;
    a cap at or above |D_h^-| gives the same pairs as no cap (the same random draws)."""
    X_neg, X_pos = torch.rand(200, 3), torch.rand(50, 3)
    free = Constraints.free(3)
    pairs = lambda cap: genre.split_pairs(X_neg, X_pos, free, tiny_config(), Settings(max_sources=cap), seed=0)
    capped = pairs(30)
    sources = torch.cat([capped[0].x, capped[1].x])                       # (30, D)
    assert len(sources) == 30 and len(torch.unique(sources, dim=0)) == 30
    assert all((X_neg == s).all(1).any() for s in sources)                # rows of D_h^-
    for a, b in zip(pairs(None), pairs(200)):
        assert torch.equal(a.x, b.x) and torch.equal(a.idx, b.idx) and torch.equal(a.cdf, b.cdf)


def test_validation_sources_are_held_out_of_training():
    X_neg, X_pos = torch.rand(100, 3), torch.rand(50, 3)
    train, val = genre.split_pairs(X_neg, X_pos, Constraints.free(3), tiny_config(), Settings(), seed=1)
    assert len(train.x) == 90 and len(val.x) == 10                        # val_frac 0.1
    rows = lambda t: {tuple(r.tolist()) for r in t}
    assert not rows(train.x) & rows(val.x) and rows(train.x) | rows(val.x) == rows(X_neg)


def test_the_plausibility_lof_sees_a_uniform_subsample_of_the_positives_only_beyond_lof_rows():
    X = np.arange(60, dtype=np.float32).reshape(30, 2)
    assert engine.subsample_rows(X, None, 0) is X and engine.subsample_rows(X, 30, 0) is X
    sub = engine.subsample_rows(X, 10, 0)
    assert len(sub) == 10 and len(np.unique(sub[:, 0])) == 10 and np.isin(sub[:, 0], X[:, 0]).all()
    assert np.array_equal(sub, engine.subsample_rows(X, 10, 0))               # the seed fixes it


# -- Algorithm 1's bookkeeping --------------------------------------------------------

def test_validation_loss_is_the_mean_of_eq_8_over_pairs_whatever_the_batch():
    torch.manual_seed(0)
    D, K, N = 3, 10, 37
    model = RecourseTransformer(D, tiny_config(n_bins=K)).eval()
    x, x_plus = torch.rand(N, D), torch.rand(N, D)
    bins = genre.make_bins(torch.rand(20, D), K)
    with torch.no_grad():                                   # one pair at a time, by hand
        per_pair = [genre.jensen_loss(model(x[i:i + 1], x_plus[i:i + 1]), genre.soft_labels(x_plus[i:i + 1], bins)).item()
                    for i in range(N)]
    for batch in (1, 5, 16, N, 4096):                       # uneven last batches included
        assert genre.validation_loss(model, x, x_plus, bins, batch=batch) == pytest.approx(np.mean(per_pair), rel=1e-5)


def test_without_a_validation_split_the_best_training_loss_is_kept():
    X, y, h, *_ = toy_data()
    with pytest.warns(UserWarning, match="lowest training-batch loss"):
        model = tiny(tiny_config(steps=6), eval_every=2).fit(X[:20], y[:20], h)
    assert [r["val_loss"] for r in model.history_] == [r["train_loss"] for r in model.history_]


def test_training_runs_on_the_settings_threads_and_restores_the_setting(monkeypatch):
    X, y, h, *_ = toy_data()
    seen, train = [], genre.train_recourse_model
    monkeypatch.setattr(genre, "train_recourse_model",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or train(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        GenRe(tiny_config(steps=2), verbose=False, settings=Settings(threads=1)).fit(X, y, h)
        GenRe(tiny_config(steps=2), verbose=False, settings=Settings(threads=None)).fit(X, y, h)
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_wide_model_is_announced_before_it_trains(monkeypatch):
    X, y, h, *_ = toy_data()
    monkeypatch.setattr(engine, "WIDE_PARAMETERS", 100)
    with pytest.warns(UserWarning, match=r"GenRe's model has [\d,]+ parameters \(4 features\): each of its 2 steps"):
        tiny(tiny_config(steps=2)).fit(X, y, h)


def test_progress_says_the_step_the_losses_and_the_time_left(capsys):
    X, y, h, *_ = toy_data()
    GenRe(tiny_config(steps=4), settings=Settings(eval_every=2), verbose=True).fit(X, y, h)
    out = capsys.readouterr().out
    assert "parameters, 4 steps on cpu" in out and "step     4/4 | train" in out and "s left" in out


# -- Algorithm 2, fast -------------------------------------------------------------

@pytest.mark.parametrize("n_heads", [1, 2])
def test_cached_decoder_gives_the_full_decoders_logits(n_heads):
    torch.manual_seed(0)
    D, m, n = 6, 4, 3
    model = RecourseTransformer(D, tiny_config(n_heads=n_heads)).eval()
    x, x_plus = torch.rand(m, D), torch.rand(m * n, D)
    with torch.no_grad():
        memory = model.encode(x)
        plain, fast = full_decoder(model, memory, n), engine.cached_decoder(model, memory, n)
        for j in range(D):
            torch.testing.assert_close(fast(x_plus, j), plain(x_plus, j), atol=1e-5, rtol=1e-5)


def test_chunked_cached_sampling_gives_exactly_the_plain_algorithm_2(fitted):
    """GenRe.sample (chunks of rows, cached decoding, engine.row_chunks) against one call of
    genre.sample_recourse with the full decoder on the same random numbers."""
    model, X, y, h, X_neg = fitted
    kinds = feature_kinds(4, model.immutable_, model.categorical_)
    for tau, sigma in [(10.0, 0.0), (1.0, 0.01)]:
        u, eps = genre.sampling_noise(len(X_neg) * 5, 4, model.seed_)
        plain = sample_recourse(model.model_, torch.from_numpy(X_neg), 5, u, eps, model.bins_, kinds, tau, sigma)
        small_chunks = Settings(sample_chunk=7)                   # rows of 5 sequences: one row a chunk
        for settings in (model.settings_, small_chunks):
            model.settings_ = settings
            assert np.array_equal(model.sample(X_neg, n=5, tau=tau, sigma=sigma), plain.view(-1, 5, 4).numpy())
    model.settings_ = Settings()


def test_sampling_noise_of_a_row_does_not_depend_on_how_many_rows_are_drawn():
    u5, e5 = genre.sampling_noise(5, 3, seed=7)
    u9, e9 = genre.sampling_noise(9, 3, seed=7)
    assert torch.equal(u5, u9[:5]) and torch.equal(e5, e9[:5])
    assert (u9 > 0).all() and (u9 <= 1).all() and torch.isfinite(e9).all()
    assert abs(float(genre.sampling_noise(20000, 1, 0)[1].std()) - 1) < 0.02


# -- saving and loading ------------------------------------------------------------

def test_save_and_load_give_identical_samples(fitted, tmp_path):
    model, X, y, h, X_neg = fitted
    path = tmp_path / "genre.pt"
    model.save(path)
    again = GenRe.load(path, h=h)
    assert np.array_equal(again.sample(X_neg), model.sample(X_neg))
    assert np.array_equal(again.recourse(X_neg), model.recourse(X_neg))
    assert np.array_equal(again.recourse(X_neg, select="plausible"), model.recourse(X_neg, select="plausible"))
    torch.load(path, weights_only=True)                          # plain tensors and dicts only


def test_save_can_leave_out_the_training_positives(fitted, tmp_path):
    model, X, y, h, X_neg = fitted
    model.save(tmp_path / "with.pt")
    model.save(tmp_path / "without.pt", include_positives=False)
    assert np.array_equal(torch.load(tmp_path / "with.pt", weights_only=True)["positives"].numpy(), X[y == 1])
    again = GenRe.load(tmp_path / "without.pt", h=h)
    assert torch.load(tmp_path / "without.pt", weights_only=True)["positives"] is None
    assert np.array_equal(again.recourse(X_neg), model.recourse(X_neg))
    with pytest.raises(ValueError, match="saved without \\(include_positives=False\\)"):
        again.recourse(X_neg, select="plausible")


def test_a_failed_save_leaves_the_earlier_file_whole(fitted, tmp_path, monkeypatch):
    model, X, y, h, X_neg = fitted
    path = tmp_path / "genre.pt"
    model.save(path)
    before = path.read_bytes()

    def fail(state, f):                                          # the disk fills up halfway
        f.write(b"partial")
        raise OSError("No space left on device")
    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="No space"):
        model.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["genre.pt"]


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot be read"),                                     # an empty file
    ("truncated", "cannot be read"),                             # a model cut short
    ({"weights": 1}, "has no 'config'"),                         # a torch file of something else
])
def test_loading_a_file_that_is_not_a_saved_genre_says_so(fitted, tmp_path, content, reason):
    path = tmp_path / "model.pt"
    if content == "truncated":
        fitted[0].save(path)
        path.write_bytes(path.read_bytes()[:200])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=f"model.pt is not a saved GenRe model .*{reason}"):
        GenRe.load(path)
