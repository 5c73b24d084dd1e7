"""The paper's published numbers and the markdown tables our results are shown in.

It imports nothing of the project, so that every module that prints or renders a
table can use it: evaluate.py's command line prints `comparison_table`, gaps.py
and report.py render their sections with `table` and set the paper's rows beside
ours from PAPER (Table 2), PAPER_CLASSIFIERS (Tables 6 and 7) and PAPER_TABLE4.
"""
from __future__ import annotations

# The protocol's metrics (evaluate.metrics_of), in the order every table shows them.
METRICS = ("cost", "validity", "lof", "score")

# The paper's Table 2 (Cost, Val, LOF, Score), keyed by our method names.
PAPER = {
    "wachter": {"adult": (0.31, 0.51, 0.76, 1.24), "compas": (0.20, 0.59, 0.23, 0.79), "heloc": (0.79, 0.35, 0.97, 1.28)},
    "gs": {"adult": (1.82, 0.40, 0.49, 0.75), "compas": (1.20, 0.66, 0.48, 0.97), "heloc": (0.58, 0.32, 0.94, 1.23)},
    "dice": {"adult": (0.22, 0.62, 0.73, 1.33), "compas": (0.19, 0.57, 0.44, 0.99), "heloc": (0.49, 0.34, 0.97, 1.29)},
    "roar": {"adult": (10.17, 0.96, 0.01, 0.19), "compas": (4.01, 0.87, 0.01, 0.30), "heloc": (9.64, 0.47, 0.17, 0.19)},
    "probe": {"adult": (33.91, 1.00, 0.00, -1.61), "compas": (5.77, 0.82, 0.00, -0.00), "heloc": (5.37, 0.69, 0.07, 0.49)},
    "tap": {"adult": (1.10, 0.99, 0.67, 1.57), "compas": (1.46, 0.88, 0.70, 1.37), "heloc": (0.71, 0.36, 0.53, 0.86)},
    "cchvae": {"adult": (2.11, 0.00, 1.00, 0.84), "compas": (3.03, 1.00, 0.07, 0.64), "heloc": (3.58, 0.04, 0.14, 0.02)},
    "cruds": {"adult": (3.17, 1.00, 0.96, 1.72), "compas": (1.10, 0.98, 1.00, 1.83), "heloc": (4.30, 1.00, 0.57, 1.37)},
    "genre": {"adult": (0.69, 1.00, 0.98, 1.93), "compas": (0.51, 0.99, 0.97, 1.89), "heloc": (2.01, 1.00, 1.00, 1.90)},
}
# Test accuracy of the oracle (Table 6) and of h (Table 7), in percent.
PAPER_CLASSIFIERS = {"adult": (94.36, 77.33), "compas": (85.74, 69.60), "heloc": (100.00, 74.23)}
# The paper's Table 4 (Cost / Val / LOF / Score) beside the method each row corresponds to
# (diffusion.py's methods, and GenRe).
PAPER_TABLE4 = {
    "diffusion_q": {"adult": (0.86, 1.00, 0.79, 1.72), "compas": (0.78, 0.99, 0.81, 1.69),
                    "heloc": (2.41, 0.99, 0.99, 1.87)},
    "diffusion_svdd5": {"adult": (3.11, 0.99, 0.83, 1.58), "compas": (2.18, 1.00, 0.69, 1.37),
                        "heloc": (3.14, 0.98, 0.97, 1.80)},
    "diffusion_svdd10": {"adult": (3.10, 1.00, 0.87, 1.63), "compas": (2.20, 1.00, 0.79, 1.48),
                         "heloc": (2.85, 0.99, 0.99, 1.84)},
    "genre": {"adult": (0.69, 1.00, 0.98, 1.93), "compas": (0.51, 0.99, 0.97, 1.89),
              "heloc": (2.01, 1.00, 1.00, 1.90)},
}
COLUMNS = ("| method | Cost | Val | LOF | Score | features changed | immutable violations | constraint violations "
           "| failed | seconds |")


def mean_std(r: dict, key: str) -> str:
    """'0.68 ± 0.02' (mean ± sample std over seeds), or the mean alone for one seed."""
    std = r.get(key + "_std")
    return f"{r[key]:.2f}" + ("" if std is None else f" ± {std:.2f}")


def paper_key(method: str) -> str | None:
    """The paper's Table 2 row for one of our methods: dice and dice_paper -> dice; genre -> genre."""
    base = method[:-len("_paper")] if method.endswith("_paper") else method
    return base if base in PAPER else None


def paper_label(key: str) -> str:
    return f"*{key}, the paper's Table 2*"


def table(header: str, rows: list[list[str]]) -> list[str]:
    """A markdown table: a header line and rows of cells."""
    return [header, "|" + "---|" * (header.count("|") - 1), *("| " + " | ".join(r) + " |" for r in rows)]


def method_rows(res: dict, with_paper: bool) -> list[list[str]]:
    """One row per method (mean ± sample std), the paper's Table 2 row after a method's last mode."""
    rows, names = [], list(res["methods"])
    for i, m in enumerate(names):
        r = res["methods"][m]
        broken = r.get("constraint_violations")
        rows.append([m, *(mean_std(r, k) for k in METRICS), f"{r['features_changed']:.1f}", str(r["immutable_violations"]),
                     "–" if broken is None else str(broken), str(r["failed"]), f"{r['seconds']:.1f}"])
        key = paper_key(m)
        last_of_key = i + 1 == len(names) or paper_key(names[i + 1]) != key
        if with_paper and key and res["dataset"] in PAPER[key] and last_of_key:
            rows.append([paper_label(key), *(f"{v:.2f}" for v in PAPER[key][res["dataset"]]), "", "", "", "", ""])
    return rows


def comparison_table(res: dict, with_paper: bool = False) -> str:
    """One data set's comparison (a results dict of evaluate.run_benchmark): Cost, Val, LOF,
    Score as mean ± sample std over seeds. "failed" counts recourses a method itself reports
    as not found, summed over seeds."""
    head = (f"{res['dataset']} (d = {res['n_features']}, seeds {res['seeds']}, {res['n_test']} test negatives, "
            f"h test accuracy {res['h_test_accuracy']:.4f}; ± is the sample std over seeds; features changed: "
            "mean per recourse; constraint violations: rows breaking a rule, – where none was given)")
    return "\n".join([head, "", *table(COLUMNS, method_rows(res, with_paper))])
