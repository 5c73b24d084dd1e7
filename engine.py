"""Speed, scale and bookkeeping for genre.py, kept apart so that genre.py reads as the paper.

genre.py imports this file; this file imports nothing of genre.py (it sees GenRe's model
and bins only as the objects it is handed). Nothing here changes what GenRe computes;
tests/test_engine.py checks each piece against the plain code of genre.py:

    Settings           how GenRe runs: threads, the validation cadence, large tables, chunks
    check_fit_inputs   fit's inputs checked: features, labels, masks and one-hot groups
    pairing_method     which search finds Q: exact, or pairing.prefiltered_pairing past
                       EXACT_COSTS source-target costs
    TrainingLog        Algorithm 1's bookkeeping: the validation loss every eval_every
                       steps, the best parameters, progress with the time left
    cached_decoder     Algorithm 2's decoder keeping each layer's keys and values: O(D)
                       positions a feature where genre.full_decoder runs O(D^2)
    row_chunks,
    sampling_bounds    Algorithm 2 over many rows: chunks of rows, the constraints' bounds
    save, read_saved   one file, written whole, read back with weights_only=True
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
from sklearn.neighbors import LocalOutlierFactor

from common import as_mask, atomic_write, check_features, check_fitted, check_groups, check_labels, torch_threads
from constraints import RULES, Constraints, Domain


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
def threads(estimator):
    """The fit's torch thread setting (Settings.threads on a CPU), restored afterwards."""
    with torch_threads(estimator.settings_.threads if estimator.device_.type == "cpu" else None):
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


def check_options(options) -> int:
    if isinstance(options, bool) or not isinstance(options, (int, np.integer)) or options < 1:
        raise ValueError(f"options (per row) must be a whole number of at least 1, got {options!r}")
    return int(options)


def best_distinct(S, rank, options):
    """The `options` highest-ranked distinct candidates of each row: S (M, n, D), rank (M, n)
    -> (M, options, D), the last distinct one repeated where a row has fewer."""
    M, n, D = S.shape
    out = np.empty((M, options, D), dtype=S.dtype)
    for i in range(M):
        chosen = []
        for c in np.argsort(-rank[i], kind="stable"):
            if not any(np.array_equal(S[i, c], S[i, d]) for d in chosen):
                chosen.append(c)
            if len(chosen) == options:
                break
        out[i] = S[i, chosen + [chosen[-1]] * (options - len(chosen))]
    return out


# ----------------------------------------------------------------------------- pairs (Algorithm 1, line 3)

# pairing="auto" computes Eq. 6 exactly up to this many source-target costs (adult's 1.5e8
# take ~4 s on one core), and with pairing.prefiltered_pairing beyond (BENCHMARKS.md).
EXACT_COSTS = 2e9


def pairing_method(pairing: str, n_src: int, n_dst: int) -> str:
    """What Settings.pairing means for n_src sources and n_dst targets: "exact" or "prefilter"."""
    if pairing != "auto":
        return pairing
    return "exact" if n_src * n_dst <= EXACT_COSTS else "prefilter"


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
    without a validation split), the history, and progress with the time left.

    estimator: the GenRe being fitted (its model_, bins_, generator_, settings_, verbose);
    train, val: its Pairs; X_neg, X_pos: D_h^- and D_h^+; batch, total: Algorithm 1's loop
    bounds; check(model, x, x_plus, bins) -> the validation loss (genre.validation_loss)."""

    def __init__(self, estimator, train, val, X_neg, X_pos, batch, total, check):
        self.estimator, self.check, self.history, self.t0, self.last_print = estimator, check, [], time.time(), -math.inf
        settings = estimator.settings_
        self.eval_every = settings.eval_every or math.ceil(len(train.x) / batch)
        self.val = None
        if val is not None:
            self.val = (val.x.repeat(settings.val_draws, 1),
                        torch.cat([val.draw(estimator.generator_) for _ in range(settings.val_draws)]))
        self.best_loss, self.best_state = math.inf, None
        n_params = sum(q.numel() for q in estimator.model_.parameters())
        if n_params > WIDE_PARAMETERS:
            warnings.warn(f"GenRe's model has {n_params:,} parameters ({train.x.shape[1]} features): each of "
                          f"its {total:,} steps will be slow; a categorical with many values makes a wide "
                          "one-hot table, consider grouping rare values.")
        if estimator.verbose:
            print(f"GenRe: |D_h^-| = {len(X_neg)}, |D_h^+| = {len(X_pos)}, pairs from {len(train.x)} sources, "
                  f"validation from {0 if val is None else len(val.x)}; {n_params / 1e3:.1f}k parameters, "
                  f"{total} steps on {estimator.device_}", flush=True)

    def step(self, model, step, total, loss):
        """After optimiser step `step` of `total`: check, keep the best, print."""
        if step % self.eval_every and step != total:
            return
        check = self.check(model, *self.val, self.estimator.bins_) if self.val else loss.item()
        if check < self.best_loss:                                         # NaN never wins
            self.best_loss = check
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elapsed = time.time() - self.t0
        self.history.append(dict(step=step, train_loss=loss.item(), val_loss=check, seconds=elapsed))
        if self.estimator.verbose and (elapsed - self.last_print >= 3 or step == total):
            self.last_print = elapsed
            left = elapsed / step * (total - step)
            print(f"GenRe step {step:5d}/{total} | train {loss.item():.4f} | val {check:.4f} | "
                  f"{elapsed:6.1f}s, ~{left:.0f}s left", flush=True)

    def restore_best(self, model):
        if self.best_state is None:
            raise ValueError("GenRe training diverged: every checked loss was NaN; try a lower lr.")
        model.load_state_dict(self.best_state)


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
        return model.head(model.dec_norm(y), first=j)[:, 0]                 # (B, 1, V) -> (B, V)
    return next_logits


def row_chunks(M, n, chunk):
    """Algorithm 2 over M rows, n sequences each, about `chunk` sequences at a time: yields
    (rows, sequences), slices into the rows of X and into the M n sequences."""
    rows = max(1, chunk // n)
    for s in range(0, M, rows):
        yield slice(s, s + rows), slice(s * n, (s + rows) * n)


def sampling_bounds(rules, X, n, immutable, device):
    """Each sequence's bounds (L, U), (M n, D) each, from the Constraints `rules` for the rows
    of X (M, D), n sequences a row; None where the rules fix nothing but the immutables,
    which Algorithm 2 copies from x without a mask."""
    if not (rules.beyond_fixed() or (np.broadcast_to(rules.fixed, X.shape) & ~immutable).any()):
        return None
    return [torch.from_numpy(np.repeat(b, n, axis=0)).to(device) for b in rules.bounds(X)]


# ----------------------------------------------------------------------------- saving and loading

SAVED = ("config", "settings", "n_features", "state_dict", "bins", "immutable", "categorical", "groups",
         "constraints", "positives", "random_state", "fit_seconds")


def save(estimator, path, include_positives=True):
    """Config, settings, weights, bins and masks as plain tensors and dicts (readable with
    weights_only=True), written whole: a failed write leaves an earlier file as it was."""
    check_fitted(estimator, "model_")
    state = dict(config=asdict(estimator.cfg_), settings=asdict(estimator.settings_),
                 n_features=estimator.n_features_in_,
                 state_dict={k: v.cpu() for k, v in estimator.model_.state_dict().items()},
                 bins={k: v.cpu() for k, v in asdict(estimator.bins_).items()},
                 immutable=torch.from_numpy(estimator.immutable_), categorical=torch.from_numpy(estimator.categorical_),
                 groups=estimator.groups_,
                 constraints=constraints_state(estimator.constraints_),
                 domain=None if estimator.domain_ is None else {k: torch.from_numpy(np.asarray(v)) for k, v in
                                                                asdict(estimator.domain_).items()},
                 positives=torch.from_numpy(estimator.positives_) if include_positives else None,
                 random_state=estimator.random_state, fit_seconds=estimator.fit_seconds_)
    if hasattr(path, "write"):
        torch.save(state, path)
    else:
        atomic_write(os.fspath(path), lambda f: torch.save(state, f))


def constraints_state(rules) -> dict:
    """A Constraints as plain tensors, and its feature names as a list (None: built by hand)."""
    names = None if rules.names is None else list(rules.names)
    return {**{k: torch.from_numpy(np.asarray(getattr(rules, k))) for k in RULES}, "names": names}


def read_saved(path) -> dict:
    """What save() wrote, as plain tensors and dicts, or a one-line ValueError naming the file
    if it is not a saved GenRe; the saved constraints as a Constraints."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in SAVED if k not in state]
    except Exception as e:                                                   # truncated, not a torch file, ...
        raise ValueError(f"{path} is not a saved GenRe model (it cannot be read: {type(e).__name__})") from None
    if missing:
        raise ValueError(f"{path} is not a saved GenRe model (it has no {missing[0]!r})")
    rules, domain = state["constraints"], state.get("domain")
    state["constraints"] = Constraints(*(rules[k].numpy() for k in RULES), names=rules.get("names"))
    state["domain"] = None if domain is None else Domain(**{k: v.numpy() for k, v in domain.items()})
    return state


def load_weights(model, state_dict, path):
    """model.load_state_dict, with a one-line ValueError naming the file if they do not match."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise ValueError(f"{path} does not match its own config: {str(e).splitlines()[0]}") from None
    return model
