"""Speed, scale and bookkeeping for genre.py, kept apart so that genre.py reads as the paper.

Nothing here changes what GenRe computes; tests/test_engine.py checks each piece against
the plain code of genre.py:

    Settings           how GenRe runs: threads, the validation cadence, large tables, chunks
    split_pairs        Algorithm 1, line 3: Q (Eq. 6) for the training sources and for the
                       held-out validation sources; exact (genre.pairing_distribution), or
                       pairing.prefiltered_pairing past EXACT_COSTS costs; at most
                       max_sources sources, a uniform subsample
    TrainingLog        Algorithm 1's bookkeeping: the validation loss every eval_every
                       steps, the best parameters, progress with the time left
    cached_decoder     Algorithm 2's decoder keeping each layer's keys and values: O(D)
                       positions a feature where genre.full_decoder runs O(D^2)
    sampling_noise     every random number Algorithm 2 uses, row by row
    sample             Algorithm 2 over many rows: chunks of rows, noise, cached decoding
    save, load         one file, written whole, read back with weights_only=True
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np
import torch

from common import as_mask, atomic_write, check_features, check_groups, check_labels, torch_threads


@dataclass
class Settings:
    """How GenRe runs. These change speed and memory, not the method; eval_every and
    val_draws decide which checkpoint Algorithm 1 keeps, and max_sources and pairing
    apply only past this project's benchmarks' sizes."""
    threads: Optional[int] = 1         # torch threads while training (None: torch's own setting); the
                                       # small kernels of a laptop-size model gain nothing from more
    eval_every: int = 250              # steps between validation checks (0: once an epoch, authors' code)
    val_draws: int = 8                 # partners drawn per validation source (authors' code: 1), once
    pairing: str = "auto"              # "exact": Eq. 6 over all of D_h^+; "prefilter": pairing.py;
                                       # "auto": exact up to EXACT_COSTS source-target costs
    max_sources: Optional[int] = 100_000   # Q for a uniform subsample of at most this many sources
    lof_rows: Optional[int] = 50_000   # select="plausible": its LOF sees at most this many positives
    sample_chunk: int = 4096           # sequences decoded at once

    def __post_init__(self):
        if self.pairing not in ("auto", "exact", "prefilter"):
            raise ValueError(f"Settings.pairing must be 'auto', 'exact' or 'prefilter', got {self.pairing!r}.")
        for name, low in dict(threads=1, eval_every=0, val_draws=1, max_sources=1, lof_rows=2,
                              sample_chunk=1).items():
            value = getattr(self, name)
            if value is not None and not value >= low:
                raise ValueError(f"Settings.{name} must be at least {low}, got {value}.")


def check_arguments(cfg, settings, random_state) -> None:
    """GenRe's constructor arguments, checked where fit begins (__init__ only stores them): a
    one-line ValueError for a cfg that is not a GenReConfig (a dict is not read as one), settings
    that are not Settings, or a random_state that is not a seed."""
    from genre import GenReConfig
    if cfg is not None and not isinstance(cfg, GenReConfig):
        raise ValueError(f"cfg must be a GenReConfig, got a {type(cfg).__name__} (GenReConfig(**d) builds one from a dict)")
    if settings is not None and not isinstance(settings, Settings):
        raise ValueError(f"settings must be an engine.Settings, got a {type(settings).__name__}")
    whole = isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
    if random_state is not None and not (whole and 0 <= random_state < 2 ** 32):
        raise ValueError(f"random_state must be a whole number from 0 to 2**32 - 1 (a seed) or None, got {random_state!r}")


def with_overrides(cfg, **overrides):
    """cfg with one call's settings in place of its own (None keeps the config's), checked by
    GenReConfig's own rules: recourse(X, tau=inf) is refused as GenReConfig(tau=inf) is."""
    return replace(cfg, **{name: value for name, value in overrides.items() if value is not None})


def resolve_device(device) -> torch.device:
    """device="auto": CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def threads(genre):
    """The fit's torch thread setting (Settings.threads on a CPU), restored afterwards."""
    with torch_threads(genre.settings_.threads if genre.device_.type == "cpu" else None):
        yield


# ----------------------------------------------------------------------------- checks

def check_fit_inputs(X, y, immutable, categorical, groups):
    """X as float32 (N, D), y (N,) in {0, 1}, the (D,) masks, and the one-hot groups as sorted
    index lists (their members count as categorical), or a one-line ValueError."""
    X = check_features(X, np.shape(X)[-1], "training X")
    D = X.shape[1]
    immutable, categorical = as_mask(immutable, D, "immutable"), as_mask(categorical, D, "categorical")
    groups = [g.tolist() for g in check_groups(groups, D)]
    for g in groups:
        categorical[g] = True
    return X, check_labels(y, len(X)), immutable, categorical, groups


def fit_constraints(immutable, constraints):
    """The rules a fit keeps: the immutables fixed, and a lender's constraints (one set for
    every row; constraints.Constraints) -> Constraints."""
    from constraints import Constraints
    rules = as_constraints(constraints, None, len(immutable))
    if rules is not None and rules.fixed.ndim != 1:
        raise ValueError("constraints given to fit are a lender's rules, one set for every row; give a "
                         "person's own limits to recourse(X, constraints=...)")
    return Constraints.immutables(immutable) & rules


def as_constraints(constraints, n_rows, n_features):
    from constraints import as_constraints
    return as_constraints(constraints, n_rows, n_features)


def check_options(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (options per row) must be a whole number of at least 1, got {k!r}")
    return int(k)


def best_distinct(S, score, k):
    """The k highest-scoring distinct candidates of each row: S (M, n, D), score (M, n) ->
    (M, k, D), the last distinct one repeated where a row has fewer than k."""
    M, n, D = S.shape
    out = np.empty((M, k, D), dtype=S.dtype)
    for i in range(M):
        chosen = []
        for c in np.argsort(-score[i], kind="stable"):
            if not any(np.array_equal(S[i, c], S[i, d]) for d in chosen):
                chosen.append(c)
            if len(chosen) == k:
                break
        out[i] = S[i, chosen + [chosen[-1]] * (k - len(chosen))]
    return out


def check_training_sets(X, neg, pos, gamma):
    """D_h^- and D_h^+ as float tensors (N-, D), (N+, D), or a one-line error if one is empty."""
    if not neg.any():
        raise ValueError("D_h^- is empty: no training row has y = 0 and h(x) <= 0.5; check the labels.")
    if not pos.any():
        raise ValueError(f"D_h^+ is empty: no training row has y = 1 and h(x) > gamma = {gamma}; "
                         "try a lower gamma (>= 0.5).")
    return torch.from_numpy(X[neg]), torch.from_numpy(X[pos])


# ----------------------------------------------------------------------------- pairs (Algorithm 1, line 3)

# pairing="auto" computes Eq. 6 exactly up to this many source-target costs (adult's 1.5e8
# take ~4 s on one core), and with pairing.prefiltered_pairing beyond (BENCHMARKS.md).
EXACT_COSTS = 2e9


def pairing_method(pairing: str, n_src: int, n_dst: int) -> str:
    """What Settings.pairing means for n_src sources and n_dst targets: "exact" or "prefilter"."""
    if pairing != "auto":
        return pairing
    return "exact" if n_src * n_dst <= EXACT_COSTS else "prefilter"


def make_pairs(X_src, X_dst, lam, immutable, top_k, pairing="auto", device="cpu", constraints=None):
    """Q over the given sources and targets (genre.pairing_distribution, or the prefiltered
    search of pairing.py for large tables), computed on `device`, kept on the CPU;
    constraints (optional) rule out the targets that break one for their source."""
    from genre import Pairs, pairing_distribution
    if pairing_method(pairing, len(X_src), len(X_dst)) == "prefilter":
        from pairing import prefiltered_pairing as find_pairs
    else:
        find_pairs = pairing_distribution
    idx, prob, keep = find_pairs(X_src.to(device), X_dst.to(device), lam, immutable.to(device), top_k,
                                 constraints=constraints)
    return Pairs.from_q(X_src[keep.cpu()], X_dst, idx.cpu(), prob.cpu())


def split_pairs(X_neg, X_pos, rules, cfg, settings, seed, device="cpu"):
    """Algorithm 1, line 3: Q for the training sources, and for cfg.val_frac of the sources held
    out to pick the best checkpoint (paired over all of D_h^+, the Q asked for at test time;
    the authors' code holds out val_frac of the targets too). At most settings.max_sources
    sources, a uniform subsample. rules: the fit's Constraints (C = inf where a target breaks
    one; fixed features as immutables). Returns (train Pairs, validation Pairs or None)."""
    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(len(X_neg)))[:settings.max_sources]
    n_val = int(round(cfg.val_frac * len(order))) if len(order) >= 10 else 0
    immutable = torch.as_tensor(rules.fixed)
    rules = rules if rules.beyond_fixed() else None                         # the fixed ones: as immutables
    train = make_pairs(X_neg[order[n_val:]], X_pos, cfg.lam, immutable, cfg.top_k, settings.pairing, device, rules)
    if len(train.x) == 0:
        raise ValueError(f"No source in D_h^- has a target in D_h^+ {kept_rules(rules)}.")
    val = None
    if n_val:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                                 # a small val set may miss a group
            val = make_pairs(X_neg[order[:n_val]], X_pos, cfg.lam, immutable, cfg.top_k, settings.pairing, device,
                             rules)
        val = val if len(val.x) else None
    if val is None:
        warnings.warn("Too few sources for a validation split; keeping the checkpoint with the lowest "
                      "training-batch loss.")
    return train, val


def kept_rules(constraints) -> str:
    """What a pair must keep, for the messages about sources left without a target: a rule given
    to fit may leave a source none, where the same rule given to recourse binds only the samples."""
    if constraints is None:
        return "with the same immutable features"
    return ("that keeps the immutable features and the constraints given to fit (to keep the constraints "
            "without training on them, pass them to recourse instead of fit: --constraints-at recourse)")


def subsample_rows(X, n, seed):
    """At most n rows of X, a uniform subsample drawn from the seed if there are more."""
    if n is None or len(X) <= n:
        return X
    return X[np.sort(np.random.default_rng(seed).choice(len(X), n, replace=False))]


def fit_plausibility(positives):
    """LocalOutlierFactor(n_neighbors=5, novelty=True) of the training positives (P, D)."""
    from sklearn.neighbors import LocalOutlierFactor
    if positives is None:
        raise ValueError("select='plausible' needs the training positives, which this model was saved "
                         "without (include_positives=False); use select='h' or refit.")
    if len(positives) < 2:
        raise ValueError("select='plausible' needs at least 2 training rows with y = 1.")
    return LocalOutlierFactor(n_neighbors=min(5, len(positives) - 1), novelty=True).fit(positives)


# ----------------------------------------------------------------------------- Algorithm 1's bookkeeping

# A fit whose model has more parameters than this gets a warning before it trains: a wide
# one-hot table (a 1,000-value categorical) makes the per-feature embedding and output
# layers large, and each step slow.
WIDE_PARAMETERS = 2_000_000


class TrainingLog:
    """The validation loss every eval_every steps (on partners drawn once, so every check
    scores the same pairs), the parameters with the lowest one (the training-batch loss
    without a validation split), the history, and progress with the time left."""

    def __init__(self, genre, train, val, X_neg, X_pos):
        from genre import training_steps
        self.genre, self.history, self.t0, self.last_print = genre, [], time.time(), -math.inf
        cfg, settings = genre.cfg_, genre.settings_
        batch, total = training_steps(len(train.x), train.x.shape[1], cfg)
        self.eval_every = settings.eval_every or math.ceil(len(train.x) / batch)
        self.val = None
        if val is not None:
            self.val = (val.x.repeat(settings.val_draws, 1),
                        torch.cat([val.draw(genre.generator_) for _ in range(settings.val_draws)]))
        self.best_loss, self.best_state = math.inf, None
        n_params = sum(q.numel() for q in genre.model_.parameters())
        if n_params > WIDE_PARAMETERS:
            warnings.warn(f"GenRe's model has {n_params:,} parameters ({train.x.shape[1]} features): each of "
                          f"its {total:,} steps will be slow; a categorical with many values makes a wide "
                          "one-hot table, consider grouping rare values.")
        if genre.verbose:
            print(f"GenRe: |D_h^-| = {len(X_neg)}, |D_h^+| = {len(X_pos)}, pairs from {len(train.x)} sources, "
                  f"validation from {0 if val is None else len(val.x)}; {n_params / 1e3:.1f}k parameters, "
                  f"{total} steps on {genre.device_}", flush=True)

    def step(self, model, step, total, loss):
        """After optimiser step `step` of `total`: check, keep the best, print."""
        if step % self.eval_every and step != total:
            return
        check = validation_loss(model, *self.val, self.genre.bins_) if self.val else loss.item()
        if check < self.best_loss:                                         # NaN never wins
            self.best_loss = check
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elapsed = time.time() - self.t0
        self.history.append(dict(step=step, train_loss=loss.item(), val_loss=check, seconds=elapsed))
        if self.genre.verbose and (elapsed - self.last_print >= 3 or step == total):
            self.last_print = elapsed
            left = elapsed / step * (total - step)
            print(f"GenRe step {step:5d}/{total} | train {loss.item():.4f} | val {check:.4f} | "
                  f"{elapsed:6.1f}s, ~{left:.0f}s left", flush=True)

    def restore_best(self, model):
        if self.best_state is None:
            raise ValueError("GenRe training diverged: every checked loss was NaN; try a lower lr.")
        model.load_state_dict(self.best_state)


@torch.no_grad()
def validation_loss(model, x, x_plus, bins, batch=512):
    """Eq. 8 averaged over the pairs x, x_plus (N, D), in training-size batches (on a CPU
    larger ones are slower per pair: their activations leave the cache)."""
    from genre import jensen_loss, soft_labels
    model.eval()
    device, total = bins.mu.device, 0.0
    for s in range(0, len(x), batch):
        xb, xpb = x[s:s + batch].to(device), x_plus[s:s + batch].to(device)
        total += jensen_loss(model(xb, xpb), soft_labels(xpb, bins)).item() * len(xb)
    model.train()
    return total / len(x)


# ----------------------------------------------------------------------------- Algorithm 2, fast

class KVCache:
    """One decoder layer's state while sampling n sequences for each of m rows (B = m n):
    the self-attention keys and values of positions 0..j, filled as decoding goes, and the
    cross-attention keys and values of the m encoder outputs, computed once."""

    def __init__(self, block, memory, n):
        attn = block.cross_attn
        m, D, E = memory.shape
        k, v = attn.key_value(memory).chunk(2, dim=-1)                       # (m, D, E) each
        self.memory_k, self.memory_v = attn.heads(k), attn.heads(v)          # (m, H, D, E/H)
        self.kv = memory.new_empty(m * n, D, 2 * E)                          # (B, D, 2E), position-major
        self.n = n


def attend(attn, q_in, k, v):
    """attn's output for queries from q_in (B, Lq, E) over heads k, v (B, H, Lk, E/H)."""
    y = torch.nn.functional.scaled_dot_product_attention(attn.heads(attn.query(q_in)), k, v)
    return attn.out(y.transpose(1, 2).flatten(2))


def decoder_step(block, y, cache, j):
    """DecoderBlock.forward for the single new position j, reusing the cache. y (B, 1, E)."""
    B, _, E = y.shape
    a = block.ln1(y)
    cache.kv[:, j:j + 1] = block.self_attn.key_value(a)                     # (B, 1, 2E)
    k, v = cache.kv[:, :j + 1].chunk(2, dim=-1)                             # positions 0..j: causal as it is
    y = y + attend(block.self_attn, a, block.self_attn.heads(k), block.self_attn.heads(v))
    # The n sequences of one row share its memory: ask it their n queries at once,
    # (B, 1, E) -> (m, n, E), n times fewer attention calls.
    y = y + attend(block.cross_attn, block.ln2(y).view(-1, cache.n, E),
                   cache.memory_k, cache.memory_v).view(B, 1, E)
    return y + block.ffn(block.ln3(y))


def cached_decoder(model, memory, n):
    """genre.full_decoder's next_logits(x_plus, j), keeping each layer's keys and values."""
    caches = [KVCache(block, memory, n) for block in model.decoder]

    def next_logits(x_plus, j):
        if j == 0:
            y = model.start.expand(len(x_plus), 1, -1)                      # (B, 1, E)
        else:
            y = model.dec_embed(x_plus[:, j - 1:j], first=j - 1)            # (B, 1) -> (B, 1, E)
        y = y + model.dec_pos[j]
        for block, cache in zip(model.decoder, caches):
            y = decoder_step(block, y, cache, j)
        return model.head(model.dec_norm(y), first=j)[:, 0]                 # (B, 1, K) -> (B, K)
    return next_logits


def sampling_noise(B, D, seed):
    """Every random number Algorithm 2 uses for B sequences: u (B, D) uniform in (0, 1] for
    the bins (line 5) and eps (B, D) standard normal for the noise (line 6).

    Each comes from its own stream, filled row after row, so row b's numbers are the same
    whatever B is. eps is the inverse normal CDF of uniforms (at the midpoints of float32's
    grid of 2^-24, so never 0 or 1): torch.randn fills blocks of 16 and is not prefix-stable.
    """
    u = 1.0 - torch.rand(B, D, generator=torch.Generator().manual_seed(seed))
    noise_seed = int(np.random.SeedSequence(seed).spawn(1)[0].generate_state(1)[0])
    v = torch.rand(B, D, generator=torch.Generator().manual_seed(noise_seed)).double() + 2 ** -25
    return u, torch.special.ndtri(v).float()


def sample(genre, X, n, kinds, tau, sigma, rules):
    """genre.sample_recourse with cached_decoder for the rows of X (M, D), n each, in chunks
    of about settings.sample_chunk sequences -> (M, n, D) numpy. rules: the Constraints to
    keep (constraints.BinMask), beyond the immutables that feature_value copies."""
    from constraints import BinMask
    from genre import sample_recourse
    M, D = X.shape
    u, eps = sampling_noise(M * n, D, genre.seed_)                          # (M n, D) each
    x, out, dev = torch.from_numpy(X), torch.empty(M * n, D), genre.device_
    bounds = None
    if rules.beyond_fixed() or (np.broadcast_to(rules.fixed, X.shape) & ~genre.immutable_).any():
        bounds = [torch.from_numpy(np.repeat(b, n, axis=0)).to(dev) for b in rules.bounds(X)]   # (M n, D) each
    rows = max(1, genre.settings_.sample_chunk // n)                        # rows of X per chunk
    for s in range(0, M, rows):
        c = slice(s * n, (s + rows) * n)                                    # their sequences
        mask = None if bounds is None else BinMask(genre.bins_, kinds, bounds[0][c], bounds[1][c])
        out[c] = sample_recourse(genre.model_, x[s:s + rows].to(dev), n, u[c].to(dev), eps[c].to(dev),
                                 genre.bins_, kinds, tau, sigma, cached_decoder, mask).cpu()
    return out.view(M, n, D).numpy()


# ----------------------------------------------------------------------------- saving and loading

SAVED = ("config", "settings", "n_features", "state_dict", "bins", "immutable", "categorical", "groups",
         "constraints", "positives", "random_state", "fit_seconds")


def save(genre, path, include_positives=True):
    """Config, settings, weights, bins and masks as plain tensors and dicts (readable with
    weights_only=True), written whole: a failed write leaves an earlier file as it was."""
    from common import check_fitted
    check_fitted(genre, "model_")
    state = dict(config=asdict(genre.cfg_), settings=asdict(genre.settings_), n_features=genre.n_features_in_,
                 state_dict={k: v.cpu() for k, v in genre.model_.state_dict().items()},
                 bins={k: v.cpu() for k, v in asdict(genre.bins_).items()},
                 immutable=torch.from_numpy(genre.immutable_), categorical=torch.from_numpy(genre.categorical_),
                 groups=genre.groups_,
                 constraints=constraints_state(genre.constraints_),
                 positives=torch.from_numpy(genre.positives_) if include_positives else None,
                 random_state=genre.random_state, fit_seconds=genre.fit_seconds_)
    if hasattr(path, "write"):
        torch.save(state, path)
    else:
        atomic_write(os.fspath(path), lambda f: torch.save(state, f))


def constraints_state(rules) -> dict:
    """A Constraints as plain tensors, and its feature names as a list (None: built by hand)."""
    from constraints import RULES
    names = None if rules.names is None else list(rules.names)
    return {**{k: torch.from_numpy(np.asarray(getattr(rules, k))) for k in RULES}, "names": names}


def load(cls, path, h=None, device="auto", verbose=True):
    """A fitted GenRe from save(), or a one-line ValueError naming the file if it is not one."""
    from genre import Bins, GenReConfig, RecourseTransformer
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in SAVED if k not in state]
    except Exception as e:                                                   # truncated, not a torch file, ...
        raise ValueError(f"{path} is not a saved GenRe model (it cannot be read: {type(e).__name__})") from None
    if missing:
        raise ValueError(f"{path} is not a saved GenRe model (it has no {missing[0]!r})")
    cfg, settings = GenReConfig(**state["config"]), Settings(**state["settings"])
    genre = cls(cfg, random_state=state["random_state"], device=device, verbose=verbose, settings=settings)
    genre._setup()
    genre.model_ = RecourseTransformer(state["n_features"], cfg)
    try:
        genre.model_.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path} does not match its own config: {str(e).splitlines()[0]}") from None
    genre.model_.to(genre.device_).eval()
    genre.bins_ = Bins(**state["bins"]).to(genre.device_)
    genre.immutable_, genre.categorical_ = state["immutable"].numpy(), state["categorical"].numpy()
    genre.groups_ = state["groups"]
    from constraints import RULES, Constraints
    rules = state["constraints"]
    genre.constraints_ = Constraints(*(rules[k].numpy() for k in RULES), names=rules.get("names"))
    genre.positives_ = None if state["positives"] is None else state["positives"].numpy()
    genre.n_features_in_, genre.h_, genre.fit_seconds_ = state["n_features"], h, state["fit_seconds"]
    return genre
