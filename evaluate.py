"""The paper's benchmark protocol (Sec. 5.1, Appendix C) and its command line.

    python evaluate.py --dataset compas --methods genre genre_plausible nnr_dhplus --seeds 0 1 2

For each seed the pipeline is:
  1. oracle:  a calibrated random forest fitted on train+test with the data set's
              own labels. It plays the hidden "true" decision maker (Sec. 5.1).
  2. labels:  every label is redrawn from Bernoulli(oracle probability); these
              drawn labels are the data set D from then on.
  3. h:       the classifier users see, an MLP trained on the train split of D.
  4. methods: each recourse method is fitted on the train split (X, y, h) and asked
              for recourse on 200 test rows with h(x) <= 0.5.
  5. scores:  Cost (L1), Validity (by the oracle), LOF (inlier fraction under a LOF
              fitted on the oracle's positives) and Score = Val + LOF - Cost / d.

Each of these draws has its own random stream spawned from the run's seed
(common.child_seed). Oracle, drawn labels, h and fitted GenRe models are cached
per data set and seed under --cache. The development benchmark (`development`)
repeats steps 3-5 inside the train split, for choosing defaults without the test.

The file, in that order: the oracle and the labels; h; the benchmark's set-up and its
cache (prepare); the development split; the test negatives; the metrics (metrics_of,
fit_metric_lof); the methods: their rows, the registry METHOD_FACTORIES (row name ->
factory, make_method) and the sparsity post-step Sparse; fitting them, with GenRe's
cache keyed by the code it runs (code_fingerprint); running and summarising
(run_method, run_seed, run_benchmark); the command line. Every method keeps
common.RecourseMethod's contract, so the protocol treats them alike.
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import hashlib
import json
import math
import os
import pickle
import re
import sys
import time
import typing
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import LocalOutlierFactor
from sklearn.utils.class_weight import compute_sample_weight
from torch import nn

from baselines import NNR, PROBE, ROAR, TAP, DiCE, GrowingSpheres, Wachter
from common import (RecourseMethod, TreeOrderForest, atomic_write, check_folder, child_seed, command_line,
                    positive_int, probability_of_1, provenance, set_seed, torch_threads, write_cache)
from constraints import as_constraints, features_changed, revert_unneeded
from datasets import BENCHMARKS, Dataset, from_csv, load
from diffusion import DIFFUSION_METHODS
from generative import CCHVAE, CRUDS, REVISE
from genre import GenRe, GenReConfig, training_sets
from tables import METRICS, comparison_table

CACHE_VERSION = 5   # bump when the oracle, labels or h change, to invalidate old caches
HERE = os.path.dirname(os.path.abspath(__file__))
CACHE_DIR = os.path.join(HERE, "cache")       # the default folders are the project's, wherever it runs from
RUNS_DIR = os.path.join(HERE, "runs")
PUBLISHED = os.path.join(HERE, "results")     # written only by experiments.py


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    """One line on stderr, shown even with --quiet."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- 1-2. oracle and labels

def fit_oracle(ds: Dataset, seed: int):
    """The hidden "true" classifier: isotonic-calibrated random forest (Sec. 5.1, C.2.1).

    Fitted on train+test with the data set's own labels and balanced sample
    weights (code). No recourse method ever sees it; it judges validity.
    """
    X = ds.X_all
    y = np.concatenate([ds.y_train, ds.y_test])
    forest = TreeOrderForest(random_state=child_seed(seed, "oracle"), n_jobs=-1)
    oracle = CalibratedClassifierCV(forest, method="isotonic")
    oracle.fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    return oracle


def oracle_proba(oracle, X: np.ndarray) -> np.ndarray:
    """P(y = 1 | x) under the oracle, (N,)."""
    return oracle.predict_proba(X)[:, 1]


def redraw_labels(ds: Dataset, oracle, seed: int) -> Dataset:
    """Replace every label by a draw from Bernoulli(oracle probability) (Sec. 5.1)."""
    rng = np.random.default_rng(child_seed(seed, "labels"))
    draw = lambda X: (rng.random(len(X)) < oracle_proba(oracle, X)).astype(np.int64)
    return ds.with_labels(draw(ds.X_train), draw(ds.X_test))


# ----------------------------------------------------------------------------- 3. the classifier h

@dataclass
class ClassifierConfig:
    hidden: tuple = (10, 10, 10)   # Sec. 5.1: three ReLU layers of 10
    lr: float = 1e-3               # Sec. 5.1
    epochs: int = 100              # Sec. 5.1
    batch_size: int = 64           # Sec. 5.1
    balanced: bool = False         # class-balanced BCE weights (code: adult and compas)


def classifier_config(ds: Dataset) -> ClassifierConfig:
    """h's hyperparameters per data set (Sec. 5.1; toys and class weights from the code).
    Only the shipped data sets get their own; any other table (a CSV named adult.csv
    too) gets the default with balanced class weights."""
    name = ds.name if ds.builtin else None
    if name in ("adult", "compas"):
        return ClassifierConfig(balanced=True)
    if name in ("moons", "corr"):
        return ClassifierConfig(hidden=(4, 4), lr=0.05, epochs=400)
    if name == "circles":
        return ClassifierConfig(hidden=(8, 4), lr=0.05, epochs=400)
    if name == "heloc":
        return ClassifierConfig()
    return ClassifierConfig(balanced=True)   # your own data: balanced, as safer for skewed labels


class Classifier(nn.Module):
    """h: an MLP with ReLU hidden layers; forward gives the logit, sigmoid the probability."""

    def __init__(self, n_features: int, hidden=(10, 10, 10)):
        super().__init__()
        sizes = [n_features, *hidden]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
        self.hidden = tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)          # (B, D) -> (B,) logits

    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        """P(y = 1 | x) = sigmoid(logit), (N,) numpy."""
        p = torch.sigmoid(self(torch.as_tensor(np.asarray(X, dtype=np.float32))))
        return p.numpy()


def train_classifier(X: np.ndarray, y: np.ndarray, cfg: ClassifierConfig, seed: int,
                     verbose: bool = True, restarts: int = 3) -> Classifier:
    """Train h (Sec. 5.1), restarting from a new initialisation if it comes out constant.

    A small ReLU net at a large learning rate (the toys' 0.05) can die: every
    hidden unit switched off, one output for every x (circles, seed 0). Such an
    h gives no recourse problem at all, so it is retrained with seed + 1000 r,
    r = 1, 2, ..., which keeps the result deterministic.
    """
    for r in range(restarts + 1):
        h = fit_classifier(X, y, cfg, seed + 1000 * r, verbose)
        p = h.predict_proba(X)
        if p.max() - p.min() > 1e-3:
            break
        log(f"    h came out constant (dead ReLUs); retraining from initialisation seed {seed + 1000 * (r + 1)}")
    return h


def fit_classifier(X: np.ndarray, y: np.ndarray, cfg: ClassifierConfig, seed: int,
                   verbose: bool = True) -> Classifier:
    """Train h with BCE and Adam on minibatches (Sec. 5.1)."""
    set_seed(seed)
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.float32)
    h = Classifier(X.shape[1], cfg.hidden)
    # Balanced weights: each class contributes half of the loss, as sklearn's "balanced".
    pos_weight = ((y_t == 0).sum() / (y_t == 1).sum().clamp(min=1)) if cfg.balanced else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    # Speed, same maths: one thread (torch_threads), the fused Adam updates all parameter
    # tensors in one kernel, and each epoch shuffles X once, so a minibatch is a slice.
    opt = torch.optim.Adam(h.parameters(), lr=cfg.lr, fused=True)
    t0 = time.time()
    with torch_threads(1):
        for epoch in range(cfg.epochs):
            perm = torch.randperm(len(X_t))
            X_e, y_e = X_t[perm], y_t[perm]                                 # (N, D), (N,) shuffled
            for start in range(0, len(X_t), cfg.batch_size):
                batch = slice(start, start + cfg.batch_size)
                loss = loss_fn(h(X_e[batch]), y_e[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if verbose and (epoch + 1) % max(1, cfg.epochs // 5) == 0:
                log(f"    h epoch {epoch + 1}/{cfg.epochs}  loss {loss.item():.4f}  {time.time() - t0:.1f}s")
    return h.eval()


# ----------------------------------------------------------------------------- benchmark set-up and cache

@dataclass
class Benchmark:
    """Everything the methods and the scoring need for one data set and seed."""

    ds: Dataset                 # features with the *drawn* labels
    oracle: object              # hidden true classifier (judges validity)
    h: Classifier               # the classifier the methods see
    seed: int
    oracle_metrics: dict        # Table 6: the oracle on the test split, original labels
    h_test_accuracy: float      # Table 7: h on the test split, drawn labels
    seconds: dict = dataclasses.field(default_factory=dict)   # stage -> wall time (0 when cached)
    cache_dir: str | None = None                              # where fitted models are kept
    n_negatives: int | None = None                            # test negatives scored (set by run_seed)
    constraints: object = None                                # constraints.Constraints the methods keep, or None
    constraints_at: str = "fit"                               # given to "fit" (a lender's rules), to "recourse"
                                                              # (a person's), or to no method ("count": only scored)
    threads: int = 1                                          # torch threads the methods fit and sample on
    in_domain: bool = False                                   # the methods are given ds.domain(): whole numbers
                                                              # stay whole (prepare: in_domain_default)
    lof_reference: dict | None = None                         # the metric's LOF on real rows (set by run_seed)


def oracle_metrics(oracle, ds: Dataset) -> dict:
    """Accuracy, ROC AUC and Brier score of the oracle on the test split (Table 6)."""
    p = oracle_proba(oracle, ds.X_test)
    return {"accuracy": float(accuracy_score(ds.y_test, p > 0.5)),
            "roc_auc": float(roc_auc_score(ds.y_test, p)),
            "brier": float(brier_score_loss(ds.y_test, p))}


def fingerprint(ds: Dataset) -> str:
    """A short hash of a data set's features, labels and roles: the cache key beside its name."""
    digest = hashlib.sha1()
    for a in (ds.X_train, ds.X_test, ds.y_train, ds.y_test, ds.categorical, ds.immutable):
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:10]


# What reading a damaged file raises (truncated, emptied, another file's bytes, classes renamed
# since it was written): such a cache file is reported and rebuilt, never fatal.
UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, RuntimeError, KeyError, IndexError,
              TypeError, AttributeError, ImportError, OSError)


def cached(path: str, retrain: bool, make, verbose: bool, what: str):
    """Load a pickled dict from path, or make() it and write it whole; (value, made now?).
    A file that cannot be read back (a run killed mid-copy, a full disk) is named on one
    line of stderr and rebuilt."""
    if os.path.exists(path) and not retrain:
        value = read_cache(path)
        if value is not None and value.get("version") == CACHE_VERSION:
            if verbose:
                log(f"{what} loaded from {path}")
            return value, False
    value = {"version": CACHE_VERSION, **make()}
    if path:
        write_cache(path, lambda f: pickle.dump(value, f))
    return value, True


def read_cache(path: str) -> dict | None:
    """The pickled dict in a cache file, or None (with a warning naming the file) if it is damaged."""
    try:
        with open(path, "rb") as f:
            value = pickle.load(f)
    except UNREADABLE as e:
        warn(f"cache file {path} is unreadable ({type(e).__name__}); rebuilding it")
        return None
    if not isinstance(value, dict):
        warn(f"cache file {path} holds a {type(value).__name__}, not a cache entry; rebuilding it")
        return None
    return value


def fit_h(ds: Dataset, seed: int, verbose: bool) -> dict:
    """Train h on ds's train split with its own random stream; its state as a cacheable dict."""
    h = train_classifier(ds.X_train, ds.y_train, classifier_config(ds), child_seed(seed, "h"), verbose)
    return {"h_hidden": h.hidden, "h_state": h.state_dict()}


def load_h(entry: dict, n_features: int) -> Classifier:
    h = Classifier(n_features, entry["h_hidden"])
    h.load_state_dict(entry["h_state"])
    return h.eval()


def prepare(data: str | Dataset, seed: int, cache_dir: str = CACHE_DIR, retrain: bool = False,
            verbose: bool = True) -> Benchmark:
    """Load the data set (by name, or given), fit (or load from cache) the oracle, redraw labels, train h."""
    ds = load(data) if isinstance(data, str) else data
    tag = f"[{ds.name} seed {seed}]"
    path = os.path.join(cache_dir, f"{ds.name}_{fingerprint(ds)}_seed{seed}.pkl") if cache_dir else ""
    seconds = {}

    def make():
        t0 = time.time()
        if verbose:
            log(f"{tag} fitting the oracle (calibrated random forest) ...")
        oracle = fit_oracle(ds, seed)
        drawn = redraw_labels(ds, oracle, seed)
        seconds["oracle"] = time.time() - t0
        if verbose:
            log(f"{tag} oracle done ({seconds['oracle']:.1f}s); training h ...")
        t0 = time.time()
        entry = fit_h(drawn, seed, verbose)
        seconds["h"] = time.time() - t0
        return {"oracle": oracle, "oracle_metrics": oracle_metrics(oracle, ds),
                "y_train": drawn.y_train, "y_test": drawn.y_test, **entry}

    entry, _ = cached(path, retrain, make, verbose, f"{tag} oracle and h")
    drawn = ds.with_labels(entry["y_train"], entry["y_test"])
    return make_benchmark(drawn, entry["oracle"], load_h(entry, ds.n_features), seed,
                          entry["oracle_metrics"], {"oracle": 0.0, "h": 0.0, **seconds}, cache_dir)


def make_benchmark(ds, oracle, h, seed, metrics, seconds, cache_dir) -> Benchmark:
    acc = float(((probability_of_1(h, ds.X_test) > 0.5) == ds.y_test).mean())
    return Benchmark(ds, oracle, h, seed, metrics, acc, seconds, cache_dir, in_domain=in_domain_default(ds))


# ----------------------------------------------------------------------------- the development split

DEV_FRACTION = 0.2   # share of the train split held out as development rows (CPU default)


def development(data: str | Dataset, seed: int, cache_dir: str = CACHE_DIR, retrain: bool = False,
                verbose: bool = True) -> Benchmark:
    """The development benchmark of a seed, for choosing defaults without the test split.

    The seed's train split (drawn labels) is cut, stratified by label with its own
    random stream, into fit rows (1 - DEV_FRACTION) and development rows; h is
    retrained on the fit rows alone; the methods are fitted on the fit rows and
    asked for recourse on development rows with h(x) <= 0.5; the metric's LOF is
    fitted on the oracle's positives among the train split. The test split is not
    used at all (the oracle, the simulated world, was fitted once on all rows).
    """
    full = prepare(data, seed, cache_dir, retrain, verbose)
    ds = full.ds
    fit_rows, dev_rows = train_test_split(np.arange(len(ds.y_train)), test_size=DEV_FRACTION,
                                          stratify=ds.y_train, random_state=child_seed(seed, "dev") % 2**32)
    dev = dataclasses.replace(ds, X_train=ds.X_train[fit_rows], y_train=ds.y_train[fit_rows],
                              X_test=ds.X_train[dev_rows], y_test=ds.y_train[dev_rows])
    path = os.path.join(cache_dir, f"{ds.name}_dev_{fingerprint(dev)}_seed{seed}.pkl") if cache_dir else ""
    entry, _ = cached(path, retrain, lambda: fit_h(dev, seed, verbose), verbose,
                      f"[{ds.name} seed {seed}] development h")
    return make_benchmark(dev, full.oracle, load_h(entry, ds.n_features), seed, full.oracle_metrics,
                          {"oracle": 0.0, "h": 0.0}, cache_dir)


def dh_plus(ds: Dataset, h, gamma: float) -> np.ndarray:
    """D_h^+ = {x in train : y = 1, h(x) > gamma} (Sec. 4.1), the positives GenRe pairs with:
    a (N_train,) bool mask over ds.X_train."""
    return training_sets(ds.y_train, probability_of_1(h, ds.X_train), gamma)[1]


# ----------------------------------------------------------------------------- 4. test negatives

def pick_test_negatives(bench: Benchmark, n: int) -> np.ndarray:
    """n test rows with h(x) <= 0.5, drawn without replacement with their own stream (Sec. 5.1)."""
    X = bench.ds.X_test
    neg = np.flatnonzero(probability_of_1(bench.h, X) <= 0.5)
    if len(neg) == 0:
        raise ValueError(f"no test row of {bench.ds.name} has h(x) <= 0.5: nothing to give recourse to")
    rng = np.random.default_rng(child_seed(bench.seed, "negatives"))
    return X[np.sort(rng.choice(neg, size=min(n, len(neg)), replace=False))]


def copies_of_training_rows(X: np.ndarray, X_train: np.ndarray) -> np.ndarray:
    """(M,) bool: row i of X equals some training row in every feature (compas has many)."""
    seen = {row.tobytes() for row in np.ascontiguousarray(X_train)}
    return np.array([row.tobytes() in seen for row in np.ascontiguousarray(X)], dtype=bool)


# ----------------------------------------------------------------------------- 5. scoring

def fit_metric_lof(bench: Benchmark):
    """The LOF metric's outlier detector: LOF(n_neighbors=5, novelty=True) on all rows (train +
    test) the oracle calls positive (C.3). No method sees it (GenRe's own plausibility LOF is
    fitted on the labels it may see: GenRe.plausibility)."""
    X = bench.ds.X_all
    positives = X[oracle_proba(bench.oracle, X) > 0.5]
    return LocalOutlierFactor(n_neighbors=5, novelty=True).fit(positives)


def metrics_of(X: np.ndarray, X_plus: np.ndarray, oracle, lof, immutable: np.ndarray, constraints=None) -> dict:
    """The paper's metrics (Sec. 5.1) for recourses X_plus of rows X, both (M, D).

    Cost = mean L1 distance; Val = fraction with oracle P(y=1|x+) > 0.5;
    LOF = fraction of inliers; Score = Val + LOF - Cost / d (maximum 2). Beside them:
    rows that change an immutable feature, rows that break a constraint (None when none
    was given), and the mean number of features a recourse changes.
    """
    moved = X_plus[:, immutable] != X[:, immutable]
    return {**metrics_of_rows(*row_metrics(X, X_plus, oracle, lof), d=X.shape[1]),
            "immutable_violations": int(moved.any(axis=1).sum()),
            "constraint_violations": None if constraints is None else int(constraints.violated(X, X_plus).sum()),
            "features_changed": float(features_changed(X, X_plus).mean())}


def row_metrics(X: np.ndarray, X_plus: np.ndarray, oracle, lof):
    """Each row's part of the metrics: L1 cost (M,), valid under the oracle (M,) bool, LOF inlier (M,) bool."""
    cost = np.abs(X_plus - X).sum(axis=1)
    valid = oracle_proba(oracle, X_plus) > 0.5
    inlier = lof.predict(X_plus) == 1
    return cost, valid, inlier


def metrics_of_rows(cost, valid, inlier, d: int) -> dict:
    """Cost, Val, LOF and Score (= Val + LOF - Cost / d) of the rows given by row_metrics."""
    cost, validity, lof_inliers = float(cost.mean()), float(valid.mean()), float(inlier.mean())
    return {"cost": cost, "validity": validity, "lof": lof_inliers,
            "score": validity + lof_inliers - cost / d}


# ----------------------------------------------------------------------------- methods: the rows

# GenRe's rows: the paper's method (GenReConfig()), and the project's own recipe
# (GenReConfig.plausible(): tau 5, the best plausible sample), sharing one trained model.
GENRE_ROWS = {"genre": GenReConfig, "genre_plausible": GenReConfig.plausible}
POST_STEPS = {"genre_sparse": "genre"}   # the paper's GenRe, then constraints.revert_unneeded
# The paper's Table 2 baselines, in its order: each row as its authors designed it (NAME) -> the
# row as the paper's runner ran it (NAME_paper), see baselines.py and generative.py.
PAPER_ROWS = {"wachter": "wachter_paper", "gs": "gs_paper", "dice": "dice_paper", "roar": "roar_paper",
              "probe": "probe_paper", "tap": "tap_paper", "cchvae": "cchvae_paper", "revise": "revise_paper",
              "cruds": "cruds_paper"}
NNR_ROWS = ("nnr", "nnr_h", "nnr_dhplus")                                 # Sec. 5.5
DIFFUSION = ("diffusion_q", "diffusion_svdd5", "diffusion_svdd10", "diffusion_svdd5_kept")   # Table 4, diffusion.py
OPTIONS = 3                               # options per person that GenRe's rows are scored for (diversity)


def options_diversity(options: np.ndarray) -> float:
    """The mean L1 cost between two options of the same person, over pairs and people. (M, k, D)."""
    M, k, _ = options.shape
    pairs = [np.abs(options[:, a] - options[:, b]).sum(1) for a in range(k) for b in range(a + 1, k)]
    return float(np.mean(pairs)) if pairs else 0.0


def genre_config(row: str, genre_configs: dict | None = None) -> GenReConfig:
    """A GenRe row's config: the one genre_configs gives it, else the row's preset (GENRE_ROWS)."""
    return (genre_configs or {}).get(row) or GENRE_ROWS[row]()


def genre_configs(overrides: dict | None = None, paper_sizes: bool = False, dataset: str = "") -> dict:
    """Each GenRe row's config: its preset, at Table 9's sizes if paper_sizes (batch 16384 for
    adult, C.2.4), then the overrides (they apply to every row) -> {row: GenReConfig}."""
    sizes = {}
    if paper_sizes:
        sizes = dataclasses.asdict(GenReConfig.paper_sizes(batch_size=16384 if dataset == "adult" else 2048))
        sizes = {k: v for k, v in sizes.items() if k not in SAMPLING_FIELDS}
    return {row: dataclasses.replace(preset(), **{**sizes, **(overrides or {})}) for row, preset in GENRE_ROWS.items()}


class Sparse(RecourseMethod):
    """A method followed by the sparsity post-step constraints.revert_unneeded (the row
    genre_sparse: the paper's GenRe, then the changes h does not need undone)."""

    def __init__(self, method):
        self.method = method

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None, constraints=None, domain=None) -> "Sparse":
        self.method.fit(X, y, h, immutable=immutable, categorical=categorical, groups=groups,
                        constraints=constraints, domain=domain)
        return self.fitted(h, categorical, groups, constraints)

    def fitted(self, h, categorical, groups, constraints) -> "Sparse":
        """Take an already fitted method's roles (fit_method shares GenRe's trained model)."""
        self.h_, self.categorical_, self.groups_, self.constraints_ = h, categorical, groups, constraints
        self.fit_seconds_ = getattr(self.method, "fit_seconds_", 0.0)
        return self

    def recourse(self, X, constraints=None):
        X_plus = self.method.recourse(X) if constraints is None else self.method.recourse(X, constraints=constraints)
        rules = self.constraints_ if constraints is None else as_constraints(constraints, len(X), X.shape[1]) & self.constraints_ \
            if self.constraints_ is not None else as_constraints(constraints, len(X), X.shape[1])
        return revert_unneeded(X, X_plus, self.h_, self.categorical_, self.groups_ or (), rules)


# ----------------------------------------------------------------------------- methods: the registry

@dataclass
class FactoryArgs:
    """What a factory of METHOD_FACTORIES is given beside the seed (make_method's arguments)."""
    genre_configs: dict | None = None   # GenRe row -> GenReConfig (a row not named: its preset)
    cache_dir: str | None = None        # where the methods that keep a trained model cache it
    verbose: bool = True
    vae_epochs: int | None = None       # CCHVAE, REVISE, CRUDS: VAE epochs (None: the class's default)


def stream(seed: int, name: str) -> int:
    """A method's random_state: the run seed's stream `name` (common.child_seed), below 2**31."""
    return child_seed(seed, name) % 2**31


def genre_row(row: str):
    """GenRe with the row's config on the seed's "genre" stream: both rows train one model."""
    return lambda seed, a: GenRe(genre_config(row, a.genre_configs), random_state=stream(seed, "genre"),
                                 verbose=a.verbose)


def search_row(cls, mode: str, name: str):
    """A search baseline of baselines.py in its mode ("designed" or "paper") on the stream `name`."""
    return lambda seed, a: cls(mode=mode, random_state=stream(seed, name))


def tap_row(mode: str):
    """TAP in its mode; it caches its trained verifier under cache_dir."""
    return lambda seed, a: TAP(mode=mode, random_state=stream(seed, "tap"), cache_dir=a.cache_dir, verbose=a.verbose)


def generative_row(cls, mode: str, name: str):
    """A generative baseline of generative.py in its mode on the stream `name` (CCHVAE and REVISE
    share "vae": one VAE per seed and mode), its VAE cached under cache_dir."""
    epochs = lambda a: {} if a.vae_epochs is None else {"vae_epochs": a.vae_epochs}
    return lambda seed, a: cls(mode=mode, random_state=stream(seed, name), cache_dir=a.cache_dir,
                               verbose=a.verbose, **epochs(a))


def diffusion_row(row: str):
    """A Table 4 method of diffusion.py; the four share one model of D_h^+ per seed (the stream "diffusion")."""
    return lambda seed, a: DIFFUSION_METHODS[row](random_state=stream(seed, "diffusion"), cache_dir=a.cache_dir,
                                                  verbose=a.verbose)


# Row name -> factory(seed, FactoryArgs) -> a fresh, unfitted method: Table 2's rows in the
# paper's order, then Table 4's.
METHOD_FACTORIES = {
    "genre": genre_row("genre"),
    "genre_plausible": genre_row("genre_plausible"),
    "genre_sparse": lambda seed, a: Sparse(METHOD_FACTORIES["genre"](seed, a)),
    "wachter": search_row(Wachter, "designed", "wachter"), "wachter_paper": search_row(Wachter, "paper", "wachter"),
    "gs": search_row(GrowingSpheres, "designed", "gs"), "gs_paper": search_row(GrowingSpheres, "paper", "gs"),
    "dice": search_row(DiCE, "designed", "dice"), "dice_paper": search_row(DiCE, "paper", "dice"),
    "roar": search_row(ROAR, "designed", "roar"), "roar_paper": search_row(ROAR, "paper", "roar"),
    "probe": search_row(PROBE, "designed", "probe"), "probe_paper": search_row(PROBE, "paper", "probe"),
    "tap": tap_row("designed"), "tap_paper": tap_row("paper"),
    "cchvae": generative_row(CCHVAE, "designed", "vae"), "cchvae_paper": generative_row(CCHVAE, "paper", "vae"),
    "revise": generative_row(REVISE, "designed", "vae"), "revise_paper": generative_row(REVISE, "paper", "vae"),
    "cruds": generative_row(CRUDS, "designed", "cruds"), "cruds_paper": generative_row(CRUDS, "paper", "cruds"),
    "nnr": lambda seed, a: NNR(pool="label"),
    "nnr_h": lambda seed, a: NNR(pool="h"),
    "nnr_dhplus": lambda seed, a: NNR(pool="dhplus"),
    **{row: diffusion_row(row) for row in DIFFUSION},
}
METHODS = tuple(METHOD_FACTORIES)
TABLE2 = tuple(m for m in METHODS if m not in DIFFUSION)
# What `python evaluate.py` runs unless told otherwise: the design's pieces (GenRe's rows, the
# search it replaces, and the nearest-neighbour rows that isolate what learning adds, Sec. 5.5).
DEFAULT_METHODS = ("genre", "genre_plausible", "wachter", *NNR_ROWS)


def make_method(name: str, seed: int, genre_configs=None, cache_dir=None, verbose: bool = True,
                vae_epochs: int | None = None) -> RecourseMethod:
    """A fresh, unfitted recourse method by its row name, with its own random stream of the seed."""
    if name not in METHOD_FACTORIES:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHOD_FACTORIES[name](seed, FactoryArgs(genre_configs, cache_dir, verbose, vae_epochs))


# ----------------------------------------------------------------------------- methods: fitting, GenRe's cache

SAMPLING_FIELDS = ("tau", "sigma", "n_samples", "select")   # Algorithm 2's: no effect on training


def module_source(name: str) -> str:
    """The source text of the project's module `name` (name.py beside this file)."""
    with open(os.path.join(HERE, f"{name}.py")) as f:
        return f.read()


def project_imports(tree: ast.Module) -> set[str]:
    """The project's modules a parsed module imports, at its top or inside a function."""
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named.add(node.module.split(".")[0])
    return {name for name in named if os.path.exists(os.path.join(HERE, f"{name}.py"))}


def without_docstrings(tree: ast.Module) -> ast.Module:
    """The parsed module with every docstring (module, class, function) dropped, in place."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(module: str) -> str:
    """A hash of the code a project module runs: the module and every project module it imports,
    directly or through another, at the top or inside a function (its import closure; the
    graph has no circles, tests/test_imports.py). Each is hashed without comments and
    docstrings, in name order, so only a change to what the code does changes the hash."""
    trees, todo = {}, [module]
    while todo:
        name = todo.pop()
        if name not in trees:
            trees[name] = ast.parse(module_source(name))
            todo += sorted(project_imports(trees[name]))
    digest = hashlib.sha1()
    for name in sorted(trees):
        digest.update(f"{name}\n{ast.dump(without_docstrings(trees[name]))}\n".encode())
    return digest.hexdigest()[:10]


def with_sampling(genre: GenRe, cfg: GenReConfig) -> GenRe:
    """The same fitted model, sampled with cfg's Algorithm 2 fields (a shallow copy)."""
    other = copy.copy(genre)
    other.cfg = other.cfg_ = dataclasses.replace(genre.cfg_, **{k: getattr(cfg, k) for k in SAMPLING_FIELDS})
    return other


def fit_genre(bench: Benchmark, cfg: GenReConfig | None = None, verbose: bool = True, memo: dict | None = None) -> GenRe:
    """GenRe fitted on the benchmark's train split with cfg, or the same training found in `memo`
    (training key -> GenRe) or in the cache. The key is the data, the seed, cfg's training
    fields, the constraints it is trained with and the code GenRe runs (code_fingerprint of
    its module), so a change to any of them retrains; the sampling fields are cfg's whatever
    model is reused."""
    cfg = cfg or GenReConfig()
    training = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in SAMPLING_FIELDS}
    rules = bench.constraints if bench.constraints is not None and bench.constraints_at == "fit" else None
    if rules is not None:
        training["constraints"] = {k: np.asarray(v).tolist() for k, v in vars(rules).items()}
    key = hashlib.sha1((json.dumps(training, sort_keys=True) + code_fingerprint(GenRe.__module__))
                       .encode()).hexdigest()[:10]
    memo = {} if memo is None else memo
    if key not in memo:
        memo[key] = load_or_fit_genre(bench, cfg, key, verbose)
    fitted = with_sampling(memo[key], cfg)
    fitted.domain_ = bench.ds.domain() if bench.in_domain else None       # sampling only: not in the key
    return fitted


def load_or_fit_genre(bench: Benchmark, cfg: GenReConfig, key: str, verbose: bool) -> GenRe:
    genre = make_method("genre", bench.seed, {"genre": cfg}, verbose=verbose)
    if not bench.cache_dir:
        return fit_one(genre, bench)
    ds = bench.ds
    path = os.path.join(bench.cache_dir, f"genre_{ds.name}_{fingerprint(ds)}_seed{bench.seed}_{key}.pt")
    if os.path.exists(path):
        try:
            return GenRe.load(path, h=bench.h, verbose=verbose)
        except UNREADABLE as e:                                     # a damaged file: retrain, rewrite
            warn(f"cached GenRe {path} is unreadable ({type(e).__name__}); retraining it")
    fit_one(genre, bench)
    write_cache(path, genre.save)                                   # GenRe.save writes into a file too
    return genre


def fit_one(method, bench: Benchmark):
    """Fit a method on what a method may see: the train split (X, drawn y), h, the feature
    roles and a lender's constraints (checked to be this data set's). Never the oracle, the
    test split's labels or the metric's LOF."""
    ds = bench.ds
    rules = {"constraints": bench.constraints.for_features(ds.feature_names)} \
        if bench.constraints is not None and bench.constraints_at == "fit" else {}
    domain = {"domain": ds.domain()} if bench.in_domain else {}
    return method.fit(ds.X_train, ds.y_train, bench.h, immutable=ds.immutable,
                      categorical=ds.categorical, groups=ds.groups, **rules, **domain)


def recourse_of(method, X, bench: Benchmark, **arguments):
    """method.recourse(X, **arguments), given the benchmark's constraints when they are a
    person's (recourse time)."""
    if bench.constraints is not None and bench.constraints_at == "recourse":
        arguments["constraints"] = bench.constraints.for_features(bench.ds.feature_names)
    return method.recourse(X, **arguments)


def fit_method(name: str, bench: Benchmark, genre_configs=None, verbose: bool = True, memo=None,
               vae_epochs: int | None = None):
    """Fit one method on the train split; GenRe's rows share a trained model through `memo`."""
    if name in GENRE_ROWS:
        return fit_genre(bench, genre_config(name, genre_configs), verbose, memo)
    if name in POST_STEPS:
        ds, at_fit = bench.ds, bench.constraints if bench.constraints_at == "fit" else None
        inner = fit_method(POST_STEPS[name], bench, genre_configs, verbose, memo, vae_epochs)
        return Sparse(inner).fitted(bench.h, ds.categorical, ds.groups, at_fit)
    method = make_method(name, bench.seed, genre_configs, bench.cache_dir, verbose, vae_epochs)
    return fit_one(method, bench)


def run_method(name: str, bench: Benchmark, X_neg: np.ndarray, lof, genre_configs=None,
               verbose: bool = True, memo=None, vae_epochs: int | None = None, novel=None):
    """Fit one method, give recourse to X_neg, score it. Returns (scores, fitted method).

    fit_seconds is the training time even when the model came from the cache (GenRe
    keeps its own); `novel` scores the rows of X_neg that are not copies of a training row."""
    t0 = time.time()
    with torch_threads(bench.threads):  # one by default: the same numbers whatever the machine's setting
        method = fit_method(name, bench, genre_configs, verbose, memo, vae_epochs)
        t1 = time.time()
        X_plus = recourse_of(method, X_neg, bench)
        t2 = time.time()
        if name in GENRE_ROWS:                                      # 3 options: how far apart they are
            result_options = options_diversity(recourse_of(method, X_neg, bench, options=OPTIONS))
    rules = bench.constraints
    result = metrics_of(X_neg, X_plus, bench.oracle, lof, bench.ds.immutable, rules)
    if name in GENRE_ROWS:
        result["diversity"] = result_options
    if novel is None:                                               # (M,) bool, usually given by run_seed
        novel = ~copies_of_training_rows(X_neg, bench.ds.X_train)
    if novel.any():
        result["novel"] = metrics_of(X_neg[novel], X_plus[novel], bench.oracle, lof, bench.ds.immutable,
                                     None if rules is None else rules.rows(novel))
    fit_seconds = getattr(method, "fit_seconds_", t1 - t0)
    result["h_valid"] = float((probability_of_1(bench.h, X_plus) > 0.5).mean())   # what the method aimed at
    if hasattr(method, "active_units_"):
        result["active_units"] = method.active_units_                    # generative.py: latent health
    result.update(failed=getattr(method, "n_failed_", 0), n_novel=int(novel.sum()),
                  fit_seconds=fit_seconds, recourse_seconds=t2 - t1, seconds=fit_seconds + t2 - t1,
                  score_seconds=time.time() - t2)
    return result, method


# ----------------------------------------------------------------------------- running and summarising

def sample_std(values: np.ndarray):
    """The sample standard deviation (ddof = 1) over seeds, or None for a single seed."""
    return float(values.std(ddof=1)) if len(values) > 1 else None


def aggregate(per_seed: list[dict]) -> dict:
    """Mean, sample std (ddof = 1) and the per-seed values of each metric; violations and
    failures summed, seconds averaged; `novel` aggregated the same way where every seed has it."""
    out = {}
    for key in METRICS:
        values = np.array([r[key] for r in per_seed])
        out[key], out[key + "_std"], out[key + "_per_seed"] = float(values.mean()), sample_std(values), values.tolist()
    out["immutable_violations"] = int(sum(r["immutable_violations"] for r in per_seed))
    broken = [r.get("constraint_violations") for r in per_seed]
    out["constraint_violations"] = None if None in broken else int(sum(broken))
    out["features_changed"] = float(np.mean([r["features_changed"] for r in per_seed]))
    if all("diversity" in r for r in per_seed):
        out["diversity"] = float(np.mean([r["diversity"] for r in per_seed]))
    out["failed"] = int(sum(r["failed"] for r in per_seed))
    out["h_valid"] = float(np.mean([r["h_valid"] for r in per_seed]))
    if all("active_units" in r for r in per_seed):
        out["active_units_per_seed"] = [r["active_units"] for r in per_seed]
    for key in ("seconds", "fit_seconds", "recourse_seconds", "score_seconds"):
        out[key] = float(np.mean([r[key] for r in per_seed]))
    out["seconds_per_seed"] = [float(r["seconds"]) for r in per_seed]
    if all("novel" in r for r in per_seed):
        out["novel"] = {k: float(np.mean([r["novel"][k] for r in per_seed])) for k in METRICS}
        out["novel"]["n_per_seed"] = [r["n_novel"] for r in per_seed]
    return out


def run_seed(bench: Benchmark, methods, n_test: int, genre_configs=None, verbose: bool = True,
             vae_epochs: int | None = None):
    """One seed of the protocol: pick the test negatives, fit the LOF, run and score each method.

    Returns (scores by method, fitted methods by name, X_neg, lof).
    """
    X_neg = pick_test_negatives(bench, n_test)
    bench.n_negatives = len(X_neg)
    if verbose and len(X_neg) < n_test:
        log(f"[{bench.ds.name} seed {bench.seed}] only {len(X_neg)} test rows have h(x) <= 0.5 "
            f"(--n-test {n_test}): all of them are scored")
    t0 = time.time()
    lof = fit_metric_lof(bench)
    bench.seconds["lof"] = time.time() - t0
    bench.lof_reference = lof_reference(bench, X_neg, lof)
    novel = ~copies_of_training_rows(X_neg, bench.ds.X_train)      # the same rows for every method
    scores, fitted, memo = {}, {}, {}
    for m in methods:
        tag = f"[{bench.ds.name} seed {bench.seed}] {m}"
        if verbose:
            log(f"{tag} ...")
        scores[m], fitted[m] = run_method(m, bench, X_neg, lof, genre_configs, verbose, memo, vae_epochs, novel)
        if verbose:
            r = scores[m]
            log(f"{tag}: cost {r['cost']:.3f}  val {r['validity']:.3f}  lof {r['lof']:.3f}  "
                f"score {r['score']:.3f}  ({r['seconds']:.1f}s)")
    return scores, fitted, X_neg, lof


def lof_reference(bench: Benchmark, X_neg: np.ndarray, lof) -> dict:
    """The metric's own reference: the share of real rows the same LOF calls inliers, GenRe's
    targets D_h^+ (what an on-data recourse can reach) and the test negatives themselves."""
    X_pos = bench.ds.X_train[dh_plus(bench.ds, bench.h, GenReConfig().gamma)]
    return {"dh_plus": float((lof.predict(X_pos) == 1).mean()), "test_negatives": float((lof.predict(X_neg) == 1).mean())}


def check_methods(methods) -> None:
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; available: {', '.join(METHODS)}")
    twice = sorted({m for m in methods if list(methods).count(m) > 1})
    if twice:
        raise ValueError(f"method {twice[0]!r} is named twice in --methods")


def summarise(name: str, n_test: int, seeds, benches, per_seed_scores, genre_configs=None) -> dict:
    """The results dict written to <dataset>.json: means and sample stds over seeds, and the
    GenRe config the numbers came from (when GenRe ran), so a run can be repeated.
    "n_test" is the number of test negatives scored, one int when every seed scored the
    same number, else the list per seed (a seed has fewer than asked, "n_test_requested",
    when fewer test rows have h(x) <= 0.5)."""
    methods = per_seed_scores[0].keys()
    oracle_m = [b.oracle_metrics for b in benches]
    scored = [n_test if b.n_negatives is None else b.n_negatives for b in benches]
    results = {
        "dataset": name, "n_features": benches[0].ds.n_features,
        "n_test": scored[0] if len(set(scored)) == 1 else scored, "n_test_per_seed": scored,
        "n_test_requested": n_test, "seeds": list(seeds),
        "std": "sample standard deviation over seeds (ddof = 1)",
        "h_test_accuracy": float(np.mean([b.h_test_accuracy for b in benches])),
        "oracle": {k: float(np.mean([o[k] for o in oracle_m])) for k in oracle_m[0]},
        "stage_seconds": {k: float(np.mean([b.seconds.get(k, 0.0) for b in benches])) for k in benches[0].seconds},
        "methods": {m: aggregate([s[m] for s in per_seed_scores]) for m in methods},
        "provenance": provenance(),
    }
    if all(b.lof_reference is not None for b in benches):
        results["lof_reference_per_seed"] = {k: [b.lof_reference[k] for b in benches] for k in benches[0].lof_reference}
    rows = [m for m in methods if m in GENRE_ROWS]
    if rows:
        results["genre_configs"] = {m: dataclasses.asdict(genre_config(m, genre_configs)) for m in rows}
    return results


def run_benchmark(data: str | Dataset, methods, seeds, n_test: int = 200, cache_dir: str = CACHE_DIR,
                  retrain: bool = False, verbose: bool = True, genre_configs=None, explain: int = 0,
                  vae_epochs: int | None = None, constraints: dict | None = None, constraints_at: str = "fit",
                  options: int = 1, threads: int = 1, in_domain: bool | None = None) -> dict:
    """Run the whole pipeline for one data set; return the results dict (see README).

    constraints: actionability rules in original units, the keyword arguments of
    Dataset.constraints (fixed, increase, decrease, ranges, allowed); every method keeps
    them, given to fit (a lender's rules) or, constraints_at="recourse", to recourse only.
    With explain > 0, the first method's recourses for that many test negatives of the
    first seed are printed as actions in original units, `options` per person. `threads`:
    the torch threads every method fits and samples on (tests/test_reproducible.py checks
    that 1 and 2 give the same JSON). in_domain: whether the methods return profiles in the
    data's domain (whole numbers whole; None: in_domain_default).
    """
    check_methods(methods)
    if len(seeds) == 0 or min(seeds) < 0:
        raise ValueError(f"--seeds takes one or more seeds of 0 or more, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds names a seed twice: {list(seeds)}")
    if n_test < 1:
        raise ValueError(f"--n-test must be at least 1, got {n_test}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    if explain < 0:
        raise ValueError(f"--explain must be 0 or more, got {explain}")
    if vae_epochs is not None and vae_epochs < 1:
        raise ValueError(f"--vae-epochs must be at least 1, got {vae_epochs} (a VAE needs training)")
    if constraints_at not in ("fit", "recourse"):
        raise ValueError(f"--constraints-at must be 'fit' or 'recourse', got {constraints_at!r}")
    if options < 1 or (options > 1 and methods[0] not in GENRE_ROWS):
        raise ValueError(f"--options {options}: several options per person come from GenRe's samples; "
                         f"name a GenRe row ({', '.join(GENRE_ROWS)}) first in --methods")
    loaded = load(data) if isinstance(data, str) else data
    rules = loaded.constraints(**constraints) if constraints else None
    in_domain = in_domain_default(loaded) if in_domain is None else bool(in_domain)
    if verbose:
        log(data_summary(loaded, in_domain))
    benches, per_seed = [], []
    for seed in seeds:
        bench = dataclasses.replace(prepare(data, seed, cache_dir, retrain, verbose), constraints=rules,
                                    constraints_at=constraints_at, threads=threads, in_domain=in_domain)
        scores, fitted, X_neg, _ = run_seed(bench, methods, n_test, genre_configs, verbose, vae_epochs)
        benches.append(bench)
        per_seed.append(scores)
        if explain and seed == seeds[0]:
            X = X_neg[:explain]
            shown = recourse_of(fitted[methods[0]], X, bench, **({"options": options} if options > 1 else {}))
            log(explain_recourse(bench, X, shown, methods[0]))
    results = summarise(benches[0].ds.name, n_test, seeds, benches, per_seed, genre_configs)
    if in_domain:
        results["in_domain"] = True
    if constraints:
        results["constraints"] = {"rules": constraints, "given_at": constraints_at}
    return results


def data_summary(ds: Dataset, in_domain: bool) -> str:
    """One line on the data's features and their domain, printed before a run."""
    whole = [n for n, r in zip(ds.feature_names, ds.resolution) if r == 1]
    steps = [f"{n} in steps of {r:g}" for n, r in zip(ds.feature_names, ds.resolution) if r > 0 and r != 1]
    kept = "the methods keep them so" if in_domain else "not kept by the methods: --domain data keeps them"
    return (f"[{ds.name}] {ds.n_features} features, {int(ds.categorical.sum())} categorical, "
            f"{int(ds.immutable.sum())} immutable; whole numbers: {', '.join(whole) or 'none'}"
            + "".join(f"; {s}" for s in steps) + f" ({kept})")


def in_domain_default(ds: Dataset) -> bool:
    """Whether a run's methods return profiles in the data's domain unless told: yes for a
    user's data; for the shipped benchmarks not yet, as results/ was made (the development
    ablation's row "integers whole" measures it, python experiments.py --only ablation)."""
    return not ds.builtin


def explain_recourse(bench: Benchmark, X: np.ndarray, X_plus: np.ndarray, method: str) -> str:
    """Recourses as actions in original units ("hours-per-week: 40 -> 45", categoricals by name),
    with the oracle's P(favourable) before and after. X_plus (M, D), or (M, k, D): k options
    for each person, one line each. Options that read as the same actions are shown once, and
    a person with fewer distinct options than k is told so (GenRe repeats its last one then)."""
    options = X_plus if X_plus.ndim == 3 else X_plus[:, None]
    p_before = oracle_proba(bench.oracle, X)
    k = options.shape[1]
    lines = [f"Recourse by {method} for {len(X)} test negatives (original units)"
             + (f", {k} options each:" if k > 1 else ":")]
    for i, x in enumerate(X):
        before = bench.ds.describe(x)
        actions = [actions_text(before, bench.ds.describe(xp)) for xp in options[i]]
        first = [actions.index(a) for a in dict.fromkeys(actions)]          # each distinct option, in order
        p_after = oracle_proba(bench.oracle, options[i][first])
        if k == 1:
            lines.append(f"  #{i + 1}: P(favourable) {p_before[i]:.2f} -> {p_after[0]:.2f}; {actions[0]}")
            continue
        fewer = f"; only {len(first)} distinct option{'s' * (len(first) > 1)} among GenRe's samples" \
            if len(first) < k else ""
        lines.append(f"  #{i + 1}: P(favourable) {p_before[i]:.2f} now{fewer}")
        lines += [f"      option {n + 1}: P(favourable) {p:.2f}; {actions[o]}"
                  for n, (o, p) in enumerate(zip(first, p_after))]
    return "\n".join(lines)


def actions_text(before: dict, after: dict) -> str:
    """The changes from one described row to another: "age: 30 -> 32; sex: ..." or "no change"."""
    changes = [f"{c}: {before[c]} -> {after[c]}" for c in before if before[c] != after[c]]
    return "; ".join(changes) if changes else "no change"


def write_json(results: dict, out_dir: str, published_ok: bool = False) -> str:
    """Write <out_dir>/<dataset>.json whole; refuses the published results/ folder unless
    published_ok (experiments.py), so no single run overwrites the published numbers."""
    if not published_ok and os.path.realpath(out_dir) == os.path.realpath(PUBLISHED):
        raise ValueError("results/ holds the published numbers and is written only by experiments.py; "
                         "choose another --out folder")
    path = os.path.join(out_dir, f"{results['dataset']}.json")
    atomic_write(path, lambda f: f.write(json.dumps(results, indent=2).encode()))
    return path


# ----------------------------------------------------------------------------- command line

CSV_ONLY = ("target", "positive", "categorical", "immutable", "test_size")   # flags that describe a CSV


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the GenRe paper's recourse benchmark on one data set "
                                            "(a benchmark, or your own CSV) and print the comparison table.")
    src = p.add_argument_group("data (one of --dataset or --csv)")
    src.add_argument("--dataset", help=f"a benchmark: {', '.join(BENCHMARKS)}")
    src.add_argument("--csv", help="your own CSV file (header row = column names)")
    src.add_argument("--target", help="with --csv: the label column")
    src.add_argument("--positive", help="with --csv: the favourable label value (needed unless the labels are 0/1)")
    src.add_argument("--categorical", help="with --csv: comma-separated categorical columns")
    src.add_argument("--immutable", help="with --csv: comma-separated columns recourse must keep")
    src.add_argument("--test-size", type=float, help="with --csv: test fraction (default 0.25)")
    src.add_argument("--continuous", action="append", default=[], metavar="COLS",
                     help="numeric columns that take any value (default: a column of whole numbers takes whole "
                          "numbers only); may be repeated")
    src.add_argument("--resolution", action="append", default=[], metavar="COL=R",
                     help="a numeric column's step in original units (income=100: multiples of 100); may be repeated")
    src.add_argument("--domain", choices=("data", "off"), default=None,
                     help="data: every method returns profiles in the data's domain (each numeric column's "
                          "resolution: whole numbers whole); off: any value; default: data for a CSV, off for the "
                          "shipped benchmarks, as results/ was made")
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"recourse methods to run (default: {' '.join(DEFAULT_METHODS)}, a few minutes on a "
                        f"laptop; 'all': the whole Table 2, baselines in --baseline-mode): {', '.join(METHODS)}")
    p.add_argument("--baseline-mode", choices=["designed", "paper", "both"], default="designed",
                   help="Table 2 baselines named without _paper run as their authors designed them (designed), "
                        "as the paper's runner ran them (paper, the NAME_paper rows), or both")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds; mean and sample std over them")
    p.add_argument("--n-test", type=int, default=200, help="test negatives per seed (default 200)")
    p.add_argument("--explain", type=int, default=0, metavar="N",
                   help="print the first method's recourse for N test negatives as actions")
    p.add_argument("--genre-sizes", choices=["laptop", "paper"], default="laptop",
                   help="GenRe's transformer and optimiser: genre.GenReConfig's laptop sizes, or Table 9's "
                        "(16 + 16 layers, 2000 epochs: slow without a GPU)")
    p.add_argument("--lam", type=float, help=f"GenRe: lambda of the pairing distribution (default {GenReConfig.lam:g})")
    p.add_argument("--tau", type=float, help="GenRe: sampling temperature, multiplies the logits "
                                             f"(default {GenReConfig.tau:g}; genre_plausible: 5)")
    p.add_argument("--sigma", type=float, help=f"GenRe: sampling noise (default {GenReConfig.sigma:g})")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="GenRe: any other genre.GenReConfig field, e.g. --set n_enc_layers=4 steps=None "
                        "(applied to both GenRe rows, last; the JSON records each row's config)")
    p.add_argument("--vae-epochs", type=int, help="CCHVAE, REVISE, CRUDS: VAE training epochs (default 20, "
                                                  "the paper's runner; Table 8: 100)")
    p.add_argument("--out", default=RUNS_DIR, help="folder for <dataset>.json (default runs/ beside evaluate.py, "
                                                   "git-ignored; results/ is written only by experiments.py); "
                                                   "a CSV's is named after its file: loans.csv -> loans.json, "
                                                   "and a file named like a benchmark, compas.csv -> csv-compas.json")
    p.add_argument("--cache", default=CACHE_DIR, help="folder for cached oracle, h and fitted models "
                                                      "(default cache/ beside evaluate.py)")
    p.add_argument("--retrain", action="store_true", help="retrain oracle and h, ignoring the cache")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads each method fits and samples on (default 1: the methods' small kernels "
                        "gain little from more on 2 cores, BENCHMARKS.md; the tests check 2 gives the same JSON)")
    act = p.add_argument_group(
        "actionability constraints (original units; every method keeps them)",
        "e.g. --increase age,education-num --range hours-per-week=35:60 --fixed relationship "
        "--allow workclass=Private --explain 3 --options 3. Every flag may be repeated and every rule "
        "is kept: repeated --fixed, --increase, --decrease add columns, two --range of one column keep "
        "what both allow, two --allow of one column what either names. In a list, a comma that is part "
        "of a name or value is written \\, (--allow 'city=Washington\\, DC,Boston').")
    act.add_argument("--fixed", action="append", default=[],
                     help="comma-separated columns that may not change (beyond the data set's immutables)")
    act.add_argument("--increase", action="append", default=[], help="comma-separated numeric columns that may only go up")
    act.add_argument("--decrease", action="append", default=[],
                     help="comma-separated numeric columns that may only go down")
    act.add_argument("--range", action="append", default=[], metavar="COLUMN=LO:HI",
                     help="a numeric column's permitted range, finite numbers (either end may be left open: age=:65)")
    act.add_argument("--allow", action="append", default=[], metavar="COLUMN=V1,V2",
                     help="the values a categorical column may take")
    act.add_argument("--constraints-at", choices=["fit", "recourse"], default="fit",
                     help="give the constraints to fit (a lender's rules: GenRe is trained with them) or only "
                          "to recourse (a person's own limits, no retraining); default fit")
    act.add_argument("--options", type=int, default=1, metavar="K",
                     help="with --explain: up to K distinct options per person (GenRe's rows; default 1); "
                          "a person with fewer distinct ones among GenRe's samples is told so")
    return p.parse_args(argv)


def split_list(text: str | None) -> list[str]:
    """A comma-separated flag value as its items, stripped; "\\," is a comma inside an item."""
    items = re.split(r"(?<!\\),", text or "")
    return [item.replace("\\,", ",").strip() for item in items if item.strip()]


def constraints_from_args(args) -> dict | None:
    """The constraint flags as Dataset.constraints' keyword arguments, or None if none was given.
    A repeated flag keeps every rule it was given (see --help)."""
    columns = lambda texts: list(dict.fromkeys(c for text in texts or [] for c in split_list(text)))
    fixed, increase, decrease = columns(args.fixed), columns(args.increase), columns(args.decrease)
    both = [c for c in increase if c in decrease]
    if both:
        raise ValueError(f"--increase and --decrease both name {both[0]!r}: a column that may not change "
                         f"is --fixed {both[0]}")
    spec = dict(fixed=fixed, increase=increase, decrease=decrease, ranges=ranges_from_args(args.range),
                allowed=allowed_from_args(args.allow))
    return spec if any(spec.values()) else None


def flag_pairs(items, flag: str) -> list[tuple[str, str]]:
    """["age=20:30", ...] -> [("age", "20:30"), ...], in the order given, repeats kept."""
    out = []
    for item in items or []:
        column, sep, value = item.partition("=")
        if not sep or not column.strip():
            raise ValueError(f"--{flag} takes COLUMN=VALUES, got {item!r}")
        out.append((column.strip(), value))
    return out


def ranges_from_args(items) -> dict:
    """--range flags -> {column: (lo, hi)}, None for an open end. Two ranges of one column keep
    the values both allow; two that share none are refused."""
    tighter = lambda a, b, pick: b if a is None else a if b is None else pick(a, b)   # None: no bound
    ranges, given = {}, {}                                          # column -> (lo, hi); the texts given
    for column, text in flag_pairs(items, "range"):
        lo, hi = read_range(column, text)
        if column in ranges:
            lo, hi = tighter(ranges[column][0], lo, max), tighter(ranges[column][1], hi, min)
            given[column] += f" and {text}"
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"--range {column}: {given[column]} allow no value in common")
        else:
            given[column] = text
        ranges[column] = (lo, hi)
    return ranges


def read_range(column: str, text: str) -> tuple:
    """"20:30" -> (20.0, 30.0), an empty end None; a one-line error naming --range otherwise."""
    lo, sep, hi = text.partition(":")
    if not sep:
        raise ValueError(f"--range {column}={text}: give LO:HI (either may be empty)")
    try:
        ends = tuple(float(v) if v.strip() else None for v in (lo, hi))
    except ValueError:
        raise ValueError(f"--range {column}={text}: give LO:HI as numbers (either may be empty)") from None
    if any(v is not None and not math.isfinite(v) for v in ends):
        raise ValueError(f"--range {column}={text}: the ends must be finite numbers (leave an end empty "
                         f"for no bound)")
    return ends


def allowed_from_args(items) -> dict:
    """--allow flags -> {column: values}; two of one column allow the values either names."""
    allowed = {}
    for column, text in flag_pairs(items, "allow"):
        values = split_list(text)
        if not values:
            raise ValueError(f"--allow {column}: give at least one value")
        allowed[column] = list(dict.fromkeys([*allowed.get(column, []), *values]))
    return allowed


def methods_from_args(args) -> list[str]:
    """--methods (default: DEFAULT_METHODS; "all": every method), each Table 2 baseline's short
    name mapped by --baseline-mode."""
    names = args.methods or list(DEFAULT_METHODS)
    if "all" in names and names != ["all"]:
        raise ValueError(f"--methods all names every method; it cannot be combined with other names "
                         f"(got {' '.join(names)})")
    if names == ["all"]:                                           # the whole Table 2
        names = [*GENRE_ROWS, *POST_STEPS, *PAPER_ROWS, *NNR_ROWS]
    check_methods(names)
    rows = {"designed": lambda m: [m], "paper": lambda m: [PAPER_ROWS[m]],
            "both": lambda m: [m, PAPER_ROWS[m]]}[args.baseline_mode]
    out = []
    for m in names:
        out += rows(m) if m in PAPER_ROWS else [m]
    return list(dict.fromkeys(out))


def data_from_args(args) -> str | Dataset:
    """The data set the flags name: a benchmark by name, or a CSV with its roles."""
    if (args.dataset is None) == (args.csv is None):
        raise ValueError("give exactly one of --dataset NAME or --csv PATH")
    if args.dataset is not None:
        given = [f"--{f.replace('_', '-')}" for f in CSV_ONLY if getattr(args, f) is not None]
        if given:
            raise ValueError(f"{given[0]} describes a CSV and is not used with --dataset "
                             f"(a benchmark's roles are fixed, datasets.BENCHMARKS)")
        if args.dataset not in BENCHMARKS:
            raise ValueError(f"unknown data set {args.dataset!r}; available: {', '.join(BENCHMARKS)}")
        if not (args.continuous or args.resolution):
            return args.dataset
        return load(args.dataset).with_resolution(*resolution_from_args(args))
    if not args.target:
        raise ValueError("--csv needs --target COLUMN (the label column)")
    continuous, resolution = resolution_from_args(args)
    return from_csv(args.csv, args.target, split_list(args.categorical), split_list(args.immutable),
                    args.positive, 0.25 if args.test_size is None else args.test_size,
                    continuous=continuous, resolution=resolution)


def resolution_from_args(args) -> tuple[list, dict]:
    """--continuous and --resolution: (columns that take any value, {column: step})."""
    continuous = [c for item in args.continuous for c in split_list(item)]
    steps = {}
    for column, text in flag_pairs(args.resolution, "resolution"):
        steps[column] = read_value(f"--resolution {column}", text, float)
    return continuous, steps


def genre_configs_from_args(args, dataset_name: str) -> dict:
    """Each GenRe row's config from the flags: its preset, at Table 9's sizes with
    --genre-sizes paper, then --lam/--tau/--sigma, then --set FIELD=VALUE (genre_configs)."""
    overrides = {k: getattr(args, k) for k in ("lam", "tau", "sigma") if getattr(args, k) is not None}
    return genre_configs({**overrides, **config_overrides(args.overrides)}, args.genre_sizes == "paper",
                         dataset_name)


def config_overrides(pairs) -> dict:
    """["n_enc_layers=4", "steps=None", ...] -> {"n_enc_layers": 4, "steps": None, ...},
    each value read as the type of its GenReConfig field (None for an Optional one)."""
    fields = typing.get_type_hints(GenReConfig)                            # field name -> type
    overrides = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set takes FIELD=VALUE, got {pair!r}")
        if name not in fields:
            raise ValueError(f"--set: GenReConfig has no field {name!r}; fields: {', '.join(fields)}")
        overrides[name] = read_value(name, text, fields[name])
    return overrides


def read_value(name: str, text: str, kind):
    """One --set value as `kind` (float, int, str, bool or Optional[int]); a clear error if it is not one."""
    options = [a for a in typing.get_args(kind) if a is not type(None)]   # Optional[int] -> [int]
    if options:
        if text.lower() == "none":
            return None
        kind = options[0]
    if kind is bool:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise ValueError(f"--set {name}: {text!r} is not a valid {kind.__name__}")


def main(argv=None) -> int:
    """The command line (common.command_line: bad input is one line and exit code 2)."""
    return command_line(run_command, argv)


def check_explain_flags(args) -> None:
    """--explain and --options, refused before any training: options are shown only to the
    people --explain names."""
    if args.explain < 0:
        raise ValueError(f"--explain must be 0 or more, got {args.explain}")
    if args.options < 1:
        raise ValueError(f"--options must be at least 1, got {args.options}")
    if args.options > 1 and not args.explain:
        raise ValueError(f"--options {args.options} needs --explain N to show them (the options of N people)")


def run_command(argv=None) -> int:
    args = parse_args(argv)
    check_folder(args.out, "--out")                                   # before any training
    check_folder(args.cache, "--cache")
    check_explain_flags(args)
    data = data_from_args(args)
    name = data if isinstance(data, str) else data.name
    methods = methods_from_args(args)
    constraints = constraints_from_args(args)
    if os.path.realpath(args.out) == os.path.realpath(PUBLISHED):
        write_json({"dataset": name}, args.out)                       # refuses, before any training
    results = run_benchmark(data, methods, args.seeds, args.n_test, args.cache, args.retrain,
                       verbose=not args.quiet, genre_configs=genre_configs_from_args(args, name),
                       explain=args.explain, vae_epochs=args.vae_epochs,
                       constraints=constraints, constraints_at=args.constraints_at,
                       options=args.options, threads=args.threads,
                       in_domain=None if args.domain is None else args.domain == "data")
    print(comparison_table(results))
    if min(results["n_test_per_seed"]) < args.n_test:
        print(f"\n--n-test {args.n_test}: fewer test rows have h(x) <= 0.5; every one was scored "
              f"({', '.join(f'seed {s}: {n}' for s, n in zip(results['seeds'], results['n_test_per_seed']))})")
    sys.stdout.flush()                                                # the table is shown even if the write fails
    print(f"\nwritten: {write_json(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
