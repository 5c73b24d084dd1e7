"""Small helpers every module shares: seeding, the contract every recourse method keeps
(RecourseMethod), input checks, feature masks, the categorical projection, the recourse
cost, a random forest whose predictions repeat, and writing files whole.

Nothing here is specific to one method; the paper's pieces live in genre.py
(GenRe), baselines.py (the methods it is compared with) and evaluate.py (the
protocol).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from typing import Protocol

import numpy as np
import scipy
import sklearn
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError


# ----------------------------------------------------------------------------- seeding

def child_seed(seed: int, stream: str) -> int:
    """An independent seed for one named random stream of a run (numpy's SeedSequence).

    One run seed drives several draws (the oracle, the label draw, h, the test
    negatives, the development split, each method); each gets its own stream,
    spawned from the run's seed by the stream's name, so changing how one of them
    draws leaves the others as they were. Deterministic: same (seed, stream), same int.
    """
    key = tuple(stream.encode())                                    # the name as a spawn key
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])


def set_seed(seed: int) -> None:
    """One seed for Python's random, numpy and torch (minGPT's helper)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n):
    """Run torch on n CPU threads inside the block (None: leave the setting alone), then
    restore the setting. Small tensors (a GenRe step of 512 x D tokens of width 32, a
    baseline's search over 200 rows, h's batches of 64) are many small kernels, too small
    to share between threads: on a busy 2-core CPU two threads are slower than one."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the recourse-method contract

class RecourseMethod(Protocol):
    """What every recourse method keeps, so that evaluate.py treats them alike: GenRe, NNR and
    the searches (baselines.py), the generative baselines, the diffusion methods and
    evaluate.Sparse each declare it by subclassing it (beside scikit-learn's BaseEstimator,
    whose get_params, set_params and clone they keep).

        method.fit(X, y, h, immutable=mask, categorical=mask, groups=groups)   # returns self
        X_plus = method.recourse(X_neg)          # (M, D): one recourse per row
        method.n_failed_                         # rows that miss the method's own success test

    X is min-max scaled (N, D) float32, y the labels in {0, 1} (1 = favourable), h the
    classifier (never trained here), the masks (D,) bool, groups a list of one-hot column
    lists, constraints a constraints.Constraints: a lender's rules at fit, a person's at
    recourse (the baselines' paper modes ignore them, as the paper's runner had none; the
    diffusion methods, which keep none, refuse them).
    """

    n_failed_: int            # set by recourse: its rows that miss the method's own success test

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None, constraints=None,
            domain=None) -> "RecourseMethod":
        """Learn what the method needs from the train split (X (N, D), y (N,)) and h; returns self.
        domain (constraints.Domain): the values a recourse may take (whole numbers whole)."""

    def recourse(self, X, constraints=None) -> np.ndarray:
        """One recourse per row of X (M, D) -> (M, D) float32."""


# ----------------------------------------------------------------------------- input checks

def check_features(X, n_features: int, what: str = "X") -> np.ndarray:
    """Return X as float32 (N, D), or raise a one-line ValueError naming the problem."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows, features), got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(f"{what} has {X.shape[1]} features, the model was fitted on {n_features}")
    if X.shape[0] == 0:
        raise ValueError(f"{what} has no rows: nothing to give recourse to")
    bad = ~np.isfinite(X)
    if bad.any():
        col = int(np.argwhere(bad)[0, 1])
        raise ValueError(f"{what} contains NaN or infinite values (feature {col})")
    return X


def check_fitted(estimator, attribute: str) -> None:
    """Raise sklearn's NotFittedError, naming the class, if `fit` has not run yet."""
    if not hasattr(estimator, attribute):
        name = type(estimator).__name__
        raise NotFittedError(f"{name} is not fitted yet: call {name}.fit(X, y, h) first")


def as_mask(mask, n_features: int, what: str) -> np.ndarray:
    """A (D,) bool mask, a copy; None means all False. Only booleans are a mask (True where the
    feature is `what`): a list of feature indices such as [0, 1, 2] is refused with a one-line
    ValueError, since read as a mask it would silently mean [False, True, True]; from indices,
    np.isin(np.arange(D), indices) builds the mask."""
    if mask is None:
        return np.zeros(n_features, dtype=bool)
    mask = np.array(mask)
    if mask.shape != (n_features,):
        raise ValueError(f"{what} mask must have shape ({n_features},), got {mask.shape}")
    if mask.dtype != bool:
        shown = np.array2string(mask, threshold=8, separator=", ")
        raise ValueError(f"{what} must be a bool mask (True where the feature is {what}), got {mask.dtype} values "
                         f"{shown}; from feature indices, np.isin(np.arange({n_features}), indices) builds it")
    return mask


def check_labels(y, n_rows: int) -> np.ndarray:
    """y as int64 (N,) in {0, 1} (1 = favourable), or a one-line ValueError: one label per
    row of X, and no value but 0 and 1 (True/False and 0.0/1.0 count as 1/0). Text labels
    must be encoded first (datasets.encode_labels), since only the user knows which is good."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_rows:
        raise ValueError(f"y has shape {y.shape}; it needs one label per row of X ({n_rows} rows)")
    try:
        bad = [v for v in np.unique(y).tolist() if v not in (0, 1)]
    except TypeError:                                               # mixed types cannot be sorted
        bad = [v for v in y.tolist() if v not in (0, 1)]
    if bad:
        raise ValueError(f"y must hold only the labels 0 and 1 (1 = favourable), found {bad[0]!r}; "
                         f"encode other labels first (datasets.encode_labels)")
    return y.astype(np.int64)


def check_classifier(h, X: np.ndarray) -> np.ndarray:
    """h's P(y = 1 | x) for the rows of X, (N,) float64, or a one-line ValueError naming h.

    h may be any fitted binary classifier with predict_proba(X) for X with the D features the
    methods are fitted on: one probability per row, (N,), or one column per class, (N, 2) with
    classes_ (scikit-learn's), read as column_of_1 reads them. The gradient searches also call
    h(x) as a torch module for logits; they check that themselves (baselines.search_roles)."""
    if not callable(getattr(h, "predict_proba", None)):
        raise ValueError(f"h ({type(h).__name__}) has no predict_proba(X) method")
    try:
        out = h.predict_proba(X)
    except Exception as e:                                          # any failure of a user's h: one line
        reason = (str(e).splitlines() or [""])[0]
        raise ValueError(f"h.predict_proba failed on X with {np.shape(X)[1]} features "
                         f"({type(e).__name__}: {reason}); is h fitted on these features?") from None
    p = np.asarray(column_of_1(h, out, len(X)), dtype=np.float64)
    if p.shape != (len(X),):
        raise ValueError(f"h.predict_proba must return one probability P(y = 1 | x) per row, shape "
                         f"({len(X)},); it returned shape {p.shape}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("h.predict_proba returned values outside [0, 1] (or NaN): it must give probabilities")
    return p


def probability_of_1(h, X) -> np.ndarray:
    """h's P(y = 1 | x) for the rows X: how every method and the benchmark ask h, so that h may
    be this project's classifier or any fitted scikit-learn one (see column_of_1)."""
    return column_of_1(h, h.predict_proba(X), len(X))


def column_of_1(h, p, n_rows: int) -> np.ndarray:
    """What h.predict_proba returned, as P(y = 1 | x) (N,): one probability per row is returned
    as it is (this project's h, its dtype kept); one column per class, (N, 2), gives the column
    of class 1 named by h.classes_ (scikit-learn's). Two columns without classes_ (which one
    is class 1?), three or more classes, or classes_ other than 0 and 1 are a one-line ValueError."""
    p = np.asarray(p)
    if p.ndim != 2 or p.shape[0] != n_rows:
        return p                                                    # (N,), or a shape check_classifier names
    classes = getattr(h, "classes_", None)
    if classes is None:
        raise ValueError(f"h.predict_proba must return one probability P(y = 1 | x) per row, shape ({n_rows},); "
                         f"it returned shape {p.shape}; for a scikit-learn style output h needs classes_ naming "
                         f"the column of class 1, or pass one whose predict_proba returns [:, 1]")
    classes = np.asarray(classes).tolist()
    if len(classes) != 2 or p.shape[1] != 2 or set(classes) != {0, 1}:
        raise ValueError(f"h must be a binary classifier of the labels 0 and 1 (1 = favourable); its classes_ are "
                         f"{classes} and predict_proba gives {p.shape[1]} columns")
    return p[:, classes.index(1)]


def check_groups(groups, n_features: int, categorical=None) -> list[np.ndarray]:
    """The one-hot groups as sorted int arrays, or a one-line ValueError: each group lists two
    or more feature indices in [0, D), no feature is in two groups (or twice in one), and,
    when the categorical mask is given, every member is categorical. None means no groups."""
    cat = None if categorical is None else np.asarray(categorical, dtype=bool)
    out, seen = [], set()
    for k, g in enumerate(groups if groups is not None else []):
        g = np.asarray(g)
        if g.ndim != 1 or len(g) < 2 or not np.issubdtype(g.dtype, np.integer):
            raise ValueError(f"one-hot group {k} must list two or more feature indices, got {g.tolist()}")
        outside = [int(j) for j in g if not 0 <= j < n_features]
        if outside:
            raise ValueError(f"one-hot group {k} names feature {outside[0]}, outside 0 ... {n_features - 1}")
        twice = [int(j) for j in g if int(j) in seen or list(g).count(j) > 1]
        if twice:
            raise ValueError(f"feature {twice[0]} is in more than one one-hot group (or twice in group {k})")
        if cat is not None and not cat[g].all():
            raise ValueError(f"one-hot group {k} holds feature {int(g[~cat[g]][0])}, which is not marked categorical")
        seen.update(int(j) for j in g)
        out.append(np.sort(g.astype(np.int64)))
    return out


# ----------------------------------------------------------------------------- categoricals

def project_categoricals(X: np.ndarray, categorical: np.ndarray, groups=()) -> np.ndarray:
    """projectCategoricals (Algorithm 2): binary categoricals rounded to {0, 1}, each
    one-hot group set to the one-hot vector of its largest entry. X (M, D) -> (M, D)."""
    X = np.array(X, dtype=np.float32, copy=True)
    binary = np.asarray(categorical, dtype=bool).copy()
    for g in groups:
        binary[g] = False
        X[:, g] = np.eye(len(g), dtype=np.float32)[X[:, g].argmax(axis=1)]
    X[:, binary] = np.clip(np.round(X[:, binary]), 0, 1)
    return X


# ----------------------------------------------------------------------------- a forest that repeats

class TreeOrderForest(RandomForestClassifier):
    """A random forest that grows its trees in parallel (each from its own seed: the same forest
    at any n_jobs) but adds their votes in tree order. A parallel predict_proba adds them in
    whatever order the threads finish, which moves the last bits from call to call, and the
    oracle's calibration (evaluate.fit_oracle) fits on such predictions of held-out folds."""

    def predict_proba(self, X):
        n_jobs, self.n_jobs = self.n_jobs, 1
        try:
            return super().predict_proba(X)
        finally:
            self.n_jobs = n_jobs


# ----------------------------------------------------------------------------- the cost

def l1_cost(X_src: torch.Tensor, X_dst: torch.Tensor, immutable: torch.Tensor) -> torch.Tensor:
    """C(x, x+) = ||x - x+||_1, and +inf where any immutable feature differs (Sec. 5.1, Eq. 6).

    Immutable values are compared exactly: they are copied, never computed.
    X_src (S, D), X_dst (T, D), immutable (D,) bool -> cost (S, T).
    """
    cost = torch.cdist(X_src, X_dst, p=1)                                    # (S, T)
    if immutable.any():
        breaks = torch.cdist(X_src[:, immutable], X_dst[:, immutable], p=1) > 0   # (S, T)
        cost = cost.masked_fill(breaks, float("inf"))
    return cost


# ----------------------------------------------------------------------------- files

def check_folder(path: str, flag: str) -> str:
    """Make `path` a folder this process can write into (created if missing), or raise a
    one-line ValueError naming the flag: a bad --out or --cache is found before the work
    whose results it would hold, not when the first file is written after it. The test is
    the run's own operation, writing a (probe) file: permission bits do not bind root, and
    os.access can say yes where a write fails."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


# A file being written is "<name>.partial-<pid>-<random>.tmp" beside it; a run killed
# mid-write leaves one behind, which the next write into the folder removes once stale.
PARTIAL = re.compile(r"\.partial-(\d+)-\w+\.tmp$")
STALE_SECONDS = (60, 600)    # stale: untouched 1 min and its writer is gone, or untouched 10 min


class WriteError(OSError):
    """A file that could not be written (a full disk, a read-only folder): one line naming it,
    "cannot write PATH: reason". An OSError, so code that survives a failed write still does."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def write_cache(path: str, write) -> None:
    """atomic_write for a cache file. One that cannot be written (a full disk, a read-only
    folder) costs only the next run's time: a one-line warning on stderr, and the run goes on
    with what it made."""
    try:
        atomic_write(path, write)
    except OSError as e:
        print(f"warning: cannot write the cache {path}: {e.strerror or e}; going on without it",
              file=sys.stderr, flush=True)


def atomic_write(path: str, write) -> None:
    """Write a file whole or not at all: `write(f)` fills a temp file, which is then renamed.
    A write the file system refuses leaves no temp file and raises WriteError naming `path`."""
    folder, tmp = os.path.dirname(path) or ".", None
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_partials(folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{os.path.basename(path)}.partial-{os.getpid()}-",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)                                        # mkstemp's 0600 -> a normal file's mode
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):                      # a folder made read-only meanwhile
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(e.errno, e.strerror or str(e), path) from e
        raise


def write_section(path: str, name: str, text: str) -> None:
    """Put text between a markdown file's markers for `name` (<!-- bench:NAME --> ... <!-- /bench:NAME -->,
    appended if the file has none), the rest of the file kept: how BENCHMARKS.md's sections are
    each written by the command that measured them."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(path, lambda f: f.write(new.encode()))


def remove_stale_partials(folder: str) -> None:
    """Delete the temp files of atomic_write that no write will finish: untouched for a
    minute and their process no longer runs (a killed run), or untouched for ten minutes
    (a reused pid, or a writer on another machine sharing the folder). A live write keeps
    touching its file, and takes seconds."""
    now = time.time()
    for name in os.listdir(folder):
        match = PARTIAL.search(name)
        if not match:
            continue
        path = os.path.join(folder, name)
        try:
            idle = now - os.path.getmtime(path)
            if idle > STALE_SECONDS[1] or (idle > STALE_SECONDS[0] and not process_running(int(match[1]))):
                os.unlink(path)
        except FileNotFoundError:                                   # another process removed it first
            pass


def process_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)                                             # signal 0: only asks
    except (ProcessLookupError, OverflowError):                     # no such process; no such pid
        return False
    except PermissionError:                                         # it runs, as another user
        return True
    return True


# ----------------------------------------------------------------------------- provenance

HERE = os.path.dirname(os.path.abspath(__file__))


def provenance() -> dict:
    """What a result was computed with: the versions of Python and of every package that
    computes a number, the CPU architecture and model (its vector kernels move the last
    bits: kernel_paths.py), and the git commit of this code ("dirty": the
    code differed from that commit: a tracked .py file, requirements.txt or data/; documents
    and what the commands write do not count)."""
    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "*.py", "requirements.txt", "data")
    return {"versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__},
            "machine": platform.machine(), "cpu": cpu_model(), "commit": git("rev-parse", "HEAD"),
            "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


# ----------------------------------------------------------------------------- command lines

def int_at_least(low: int):
    """An argparse type: a whole number of at least `low`. A bad value is argparse's error
    naming the flag ("argument --grid: must be at least 2, got 0", exit code 2), before any work."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return whole_number


positive_int = int_at_least(1)          # counts: threads, repeats, rows, grid points
non_negative_int = int_at_least(0)      # seeds, and counts where 0 means none


def command_line(main, argv=None) -> int:
    """main(argv) as a command: bad input, and a file that cannot be written (WriteError), are
    one line `error: ...` on stderr and exit code 2, Ctrl-C one line `interrupted` and 130,
    instead of a traceback; else main's code (0 for None)."""
    try:
        return main(argv) or 0
    except (ValueError, FileNotFoundError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
