"""Every table and sentence the project publishes, rendered from result files alone.

experiments.py, evaluate.py and toy2d.py run things and write JSON; this module
turns those files into markdown: results/README.md, and the blocks of the
top-level README between <!-- NAME:start --> and <!-- NAME:end --> markers. The
comparison table and the paper's numbers come from tables.py, the gaps studies'
section from gaps.py. A sentence that says which method wins is computed here
from the JSON (means, sample standard deviations, wins per seed), so it cannot
go stale.
"""
from __future__ import annotations

import json
import os

from common import atomic_write
from gaps import gaps_section
from genre import GenReConfig
from tables import METRICS, PAPER, PAPER_CLASSIFIERS, PAPER_TABLE4, comparison_table, paper_key, paper_label, table

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------- claims

def winners_per_seed(res: dict, methods=None) -> list[str]:
    """The method with the highest Score at each seed (among `methods`, default all)."""
    ms = {m: r for m, r in res["methods"].items() if (methods is None or m in methods)
          and len(r["score_per_seed"]) == len(res["seeds"])}
    return [max(ms, key=lambda m: ms[m]["score_per_seed"][i]) for i in range(len(res["seeds"]))]


def claim(res: dict) -> str:
    """Who has the highest mean Score on one data set, by how much, and at how many seeds
    (among the methods run on every seed)."""
    ms = {m: r for m, r in res["methods"].items() if len(r["score_per_seed"]) == len(res["seeds"])}
    ranked = sorted(ms, key=lambda m: -ms[m]["score"])
    n, wins = len(res["seeds"]), winners_per_seed(res)
    std = lambda m: "" if ms[m]["score_std"] is None else f" ± {ms[m]['score_std']:.3f}"
    best = ranked[0]
    text = (f"On {res['dataset']}, {best} has the highest mean Score, {ms[best]['score']:.3f}{std(best)}, "
            f"and the highest Score at {wins.count(best)} of {n} seed{'s' * (n > 1)}")
    if len(ranked) > 1:
        second = ranked[1]
        text += f"; next is {second} at {ms[second]['score']:.3f}{std(second)}"
    named = set(ranked[:2])
    for m in ("genre", "genre_plausible"):                        # both GenRe rows are always named
        if m in ms and m not in named:
            text += f"; {m} scores {ms[m]['score']:.3f}{std(m)}"
            named.add(m)
    baselines = [m for m in ranked if not m.startswith("genre")]
    if baselines and baselines[0] not in named:
        text += f"; the best baseline is {baselines[0]} at {ms[baselines[0]]['score']:.3f}{std(baselines[0])}"
    return text + " (± is the sample std over seeds)."


# ----------------------------------------------------------------------------- README blocks

def replace_block(path: str, marker: str, text: str) -> None:
    """Put text between <!-- marker:start --> and <!-- marker:end --> in a file, written whole."""
    with open(path) as f:
        doc = f.read()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in doc or end not in doc:
        raise ValueError(f"{path} has no {start} ... {end} block")
    doc = doc[:doc.index(start) + len(start)] + "\n" + text + "\n" + doc[doc.index(end):]
    atomic_write(path, lambda f: f.write(doc.encode()))


def headline(results: dict, methods=None, paper_rows=None) -> str:
    """The README's results block: Cost / Val / LOF / Score per data set for each method, the
    paper's Table 2 row beside each method of paper_rows (None: every one), and the claims."""
    first = next(iter(results.values()))
    names = [m for m in first["methods"] if methods is None or m in methods]
    out = [f"Made by `python experiments.py`; mean over seeds {first['seeds']}, {first['n_test']} test "
           "negatives each; ± is the sample std of the Score over seeds (ddof = 1). Every method and "
           "mode beside the paper's Table 2, with the std of each metric, is in "
           "[results/README.md](results/README.md).", "",
           "| method | " + " | ".join(f"{n} Cost / Val / LOF / Score" for n in results) + " |",
           "|---" * (len(results) + 1) + "|"]
    for i, m in enumerate(names):
        cells = []
        for res in results.values():
            r = res["methods"].get(m)
            cells.append("" if r is None else f"{r['cost']:.2f} / {r['validity']:.2f} / {r['lof']:.2f} / "
                         f"**{r['score']:.2f}**" + ("" if r["score_std"] is None else f" ± {r['score_std']:.2f}"))
        out.append(f"| {m} | " + " | ".join(cells) + " |")
        key = paper_key(m)
        shown = key and (paper_rows is None or key in paper_rows)
        if shown and (i + 1 == len(names) or paper_key(names[i + 1]) != key):    # after a method's last mode
            out.append(f"| {paper_label(key)} | " + " | ".join(" / ".join(f"{v:.2f}" for v in PAPER[key][n])
                                                               for n in results) + " |")
    fewer = any(len(r["score_per_seed"]) < len(res["seeds"]) for res in results.values()
                for r in res["methods"].values())
    notes = ["", "Methods run on fewer seeds show no ±; the claims above compare the methods run on "
             "every seed."] if fewer else []
    return "\n".join(out + ["", *(f"- {claim(res)}" for res in results.values()), *notes])


def toy_table(toys: dict) -> str:
    """The toy table from results/toy2d.json: Val / LOF / Cost / Score per toy and method, and
    which method scores highest on each toy."""
    runs = toys["toys"]
    methods = list(next(iter(runs.values()))["methods"])
    out = [f"Made by `{toys.get('command', 'python toy2d.py')}` (seed {toys['seed']}, "
           f"{toys['seconds']:.0f} s); every test negative of each toy "
           "(" + ", ".join(f"{n} {r['n_test_negatives']}" for n, r in runs.items()) + ").", "",
           "| toy | " + " | ".join(f"{m} Val / LOF / Cost / Score" for m in methods) + " |",
           "|---" * (len(methods) + 1) + "|"]
    for name, run in runs.items():
        out.append(f"| {name} | " + " | ".join(
            f"{r['validity']:.2f} / {r['lof']:.2f} / {r['cost']:.2f} / {r['score']:.2f}"
            for r in run["methods"].values()) + " |")
    best = {name: max(run["methods"], key=lambda m: run["methods"][m]["score"]) for name, run in runs.items()}
    return "\n".join(out + ["", "Highest Score: " + ", ".join(f"{n}: {m}" for n, m in best.items()) + "."])


def load_json(path: str):
    """A results file's content; its "provenance" (versions and commit) is read by provenance_of."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        data.pop("provenance", None)
    return data


# ----------------------------------------------------------------------------- results/README.md

def candidate_name(sampling: dict) -> str:
    """A development candidate's name (experiments.SAMPLINGS): {"tau": 5.0, "select": "plausible"}
    -> "tau 5, plausible"."""
    return f"tau {sampling['tau']:g}, " + ("best by h" if sampling["select"] == "h" else "plausible")


def preset_candidate() -> str:
    """The development candidate GenReConfig.plausible() is (read when the page is written)."""
    preset = GenReConfig.plausible()
    return candidate_name(dict(tau=preset.tau, select=preset.select))


def development_section(dev: dict) -> list[str]:
    """The decision table of the preset (experiments.rank_candidates)."""
    names, preset = list(dev["candidates"][0]["datasets"]), preset_candidate()
    out = ["## The project's preset, chosen on the development split", "",
           f"`genre_plausible` (`GenReConfig.plausible()`) samples the paper's trained model its own way. "
           f"Its candidates were scored on a development split of the training rows ({dev['split']}; seeds "
           f"{dev['seeds']}, up to {dev['n_test']} development negatives each): h and GenRe were fitted on "
           "the other training rows, and the test split was not used. They cross Algorithm 2's temperature "
           "with the choice among the 10 samples (the paper's best by h, or the best by h among those an "
           "LOF of the training positives calls inliers), ranked by the mean development Score over data "
           "sets and seeds.", "",
           f"The first row is **{dev['first']}**; `GenReConfig.plausible()` is **{preset}**"
           + (" (the first row)." if dev["first"] == preset else " (NOT the first row: rerun after updating it)."), "",
           "| candidate | mean dev Score | " + " | ".join(f"{n} Cost / Val / LOF / Score" for n in names) + " |",
           "|---|---|" + "---|" * len(names)]
    for row in dev["candidates"]:
        cells = [" / ".join(f"{row['datasets'][n][k]:.2f}" for k in METRICS) for n in names]
        mark = " (the paper's sampling)" if row["candidate"] == "tau 10, best by h" else ""
        out.append(f"| {row['candidate']}{mark} | {row['mean_score']:.3f} | " + " | ".join(cells) + " |")
    return out + [""]


def ablation_section(ablation: dict) -> list[str]:
    """The paper's method against the authors' recipe, one departure at a time (ablation.py)."""
    rows = ablation["rows"]
    names = list(rows[0]["datasets"])
    out = ["## The paper's method and the authors' recipe, one departure at a time", "",
           f"`python experiments.py --only ablation` (ablation.py): the development split, seeds "
           f"{ablation['seeds']}, up to {ablation['n_test']} development negatives each. Each row changes "
           "one thing from the first (a config field, or the authors' version of one piece of genre.py or "
           "engine.py). Cells: the mean development Score, then the change against the first row as its "
           "mean ± the sample std of the per-seed change (paired: the same data, h and negatives); "
           "'distinct' is how many different recourses the 200 negatives got (mean over seeds); seconds "
           "is GenRe's pairing and training. A change is a difference when it exceeds the spread of the "
           "second row, the first row's recipe trained from another GenRe seed.", "",
           "| variant | " + " | ".join(f"{n} Score (change) | {n} LOF | {n} distinct | {n} seconds" for n in names) + " |",
           "|---" * (1 + 4 * len(names)) + "|"]
    for row in rows:
        cells = []
        for n in names:
            d = row["datasets"][n]
            change = "" if row["label"] == ablation["first"] else \
                f" ({d['change']:+.3f} ± {d['change_std']:.3f})" if d["change_std"] is not None else f" ({d['change']:+.3f})"
            cells += [f"{d['score']:.3f}{change}", f"{d['lof']:.2f}", f"{d['distinct']:.0f}", f"{d['fit_seconds']:.0f}"]
        out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return out + ["", "What the table says about the gap to the paper on compas is the first point of "
                      "\"Where and why our numbers differ from the paper's\" below.", ""]


def classifier_section(results: dict) -> list[str]:
    bands = list(next(iter(results.values()))["dh_plus_valid_by_h"])
    out = ["## The oracle and the classifier h (paper Tables 6 and 7)", "",
           "The oracle is scored on the test split against the data set's own labels, h against the "
           "drawn labels; means over seeds. \"D_h^+ valid\" is the share of GenRe's targets (y = 1, "
           "h > gamma) that the oracle accepts, overall and by band of h(x+).", "",
           "| data set | oracle accuracy | oracle ROC AUC | (paper) | h test accuracy | (paper) | D_h^+ valid | "
           + " | ".join(f"of which {b}" for b in bands) + " |",
           "|---|---|---|---|---|---|---|" + "---|" * len(bands)]
    for name, res in results.items():
        o, paper = res["oracle"], PAPER_CLASSIFIERS.get(name, ("", ""))
        out.append(f"| {name} | {o['accuracy']:.4f} | {o['roc_auc']:.4f} | {paper[0]}% | "
                   f"{res['h_test_accuracy']:.4f} | {paper[1]}% | {res['dh_plus_valid']:.3f} | "
                   + " | ".join(f"{res['dh_plus_valid_by_h'][b]:.3f}" for b in bands) + " |")
    return out + [""]


def comparison_section(results: dict) -> list[str]:
    out = ["## Comparison (paper Table 2 and Table 3)", "",
           "NAME is a baseline as its authors designed it, NAME_paper as the paper's runner ran it "
           "(baselines.py, generative.py); genre is the paper's method (`GenReConfig()`, at laptop sizes), "
           "genre_plausible the same trained model sampled with the project's preset (tau 5, the best "
           "plausible sample), genre_sparse genre's recourse with the sparsity post-step "
           "(constraints.revert_unneeded: changes h does not need are undone, one feature at a time). "
           "The paper's Table 2 row follows each method. ± is the sample standard deviation over seeds "
           "(ddof = 1).", ""]
    out += [f"- {claim(res)}" for res in results.values()] + [""]
    for name, res in results.items():
        out += [f"### {name}", "", comparison_table(res, with_paper=True), ""]
        if "lof_reference_per_seed" in res:                  # what real rows score under the same LOF
            ref = res["lof_reference_per_seed"]
            out += ["The LOF metric on real rows, per seed: GenRe's targets D_h^+ " +
                    " / ".join(f"{v:.2f}" for v in ref["dh_plus"]) + ", the test negatives themselves " +
                    " / ".join(f"{v:.2f}" for v in ref["test_negatives"]) + ".", ""]
        wins = winners_per_seed(res)
        out += ["Highest Score per seed: " + ", ".join(f"seed {s}: {w}" for s, w in zip(res["seeds"], wins)) + ".", ""]
    return out


def generative_section(generative: dict) -> list[str]:
    """CCHVAE, REVISE and CRUDS where they ran on other seeds than the comparison (--generative-seeds)."""
    if not generative:
        return []
    first = next(iter(generative.values()))
    out = ["## The generative baselines (CCHVAE, REVISE, CRUDS) on other seeds", "",
           f"These ran on seeds {first['seeds']} (`--generative-seeds`): same oracle, labels, h and test "
           "negatives as those seeds of the comparison above. REVISE has no Table 2 row in the paper "
           "(it is named in Sec. 5.1).", ""]
    for name, res in generative.items():
        out += [f"### {name}", "", comparison_table(res, with_paper=True), ""]
    return out


def agreement_section(results: dict) -> list[str]:
    """For each method: the share of its recourses h accepts beside the share the oracle
    accepts, and for the generative baselines the latent units their VAE uses, per seed."""
    names = [n for n, res in results.items() if all("h_valid" in r for r in res["methods"].values())]
    if not names:
        return []
    methods = list(dict.fromkeys(m for n in names for m in results[n]["methods"]))
    out = ["## What h accepts and what the oracle accepts", "",
           "Each cell: the share of a method's recourses that h accepts (h(x+) > 0.5, what every "
           "search aims at) / the share the oracle accepts (Val), mean over seeds. A method whose "
           "first share is near one and second low stops where h and the oracle disagree. For "
           "CCHVAE, REVISE and CRUDS, 'units' gives the latent units their VAE (CSVAE: "
           "z) uses, per seed, of 8 (active units, Var_x E[z_u | x] > 0.01, Burda et al. 2016): 0 is "
           "posterior collapse, where every x encodes to the same code.", "",
           "| method | " + " | ".join(f"{n} h accepts / Val" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for m in methods:
        cells = []
        for n in names:
            r = results[n]["methods"].get(m)
            cell = "" if r is None else f"{r['h_valid']:.2f} / {r['validity']:.2f}"
            if r is not None and "active_units_per_seed" in r:
                cell += f" (units {r['active_units_per_seed']})"
            cells.append(cell)
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out + [""]


def novel_section(results: dict) -> list[str]:
    """The comparison restricted to test negatives that are not copies of a training row."""
    if not any("novel" in r for res in results.values() for r in res["methods"].values()):
        return []
    out = ["## Test negatives that are not copies of a training row", "",
           "A test negative identical to a training row can be answered by looking it up (NNR "
           "returns training rows). Scores over the test negatives with no exact copy in the train "
           "split, mean over seeds:", "",
           "| data set | test negatives kept per seed | " + " | ".join(f"{m}" for m in ("genre", "genre_plausible", "nnr_dhplus")) + " |",
           "|---|---|---|---|---|"]
    for name, res in results.items():
        ms = res["methods"]
        kept = next((r["novel"]["n_per_seed"] for r in ms.values() if "novel" in r), [])
        cells = [f"{ms[m]['novel']['score']:.3f}" if m in ms and "novel" in ms[m] else "" for m in
                 ("genre", "genre_plausible", "nnr_dhplus")]
        out.append(f"| {name} | {kept} of {res['n_test']} | " + " | ".join(cells) + " |")
    best = {name: max((m for m in res["methods"] if "novel" in res["methods"][m]),
                      key=lambda m: res["methods"][m]["novel"]["score"]) for name, res in results.items()
            if any("novel" in r for r in res["methods"].values())}
    return out + ["", "Highest Score on these rows: " + ", ".join(f"{n}: {m}" for n, m in best.items()) + ".", ""]


def choice_section(results: dict) -> list[str]:
    if not all("choice" in res for res in results.values()):
        return []
    out = ["## Where GenRe's Score comes from (mean over seeds)", "",
           "The same trained model's 10 samples (GenRe) and 10 exact draws from the pairing "
           "distribution Q of Eq. 6 (Q: a perfect model) are each scored under four choices: the "
           "first draw, the paper's best by h, the best by h among the candidates an LOF of the "
           "training positives calls inliers (the preset's `select=\"plausible\"`; it sees only the drawn "
           "labels), and the best by the oracle (the highest Val + LOF - Cost/d; it peeks at the "
           "oracle and the LOF, so no method can use it: a bound). The paper's nearest row is "
           "TabSyn+Q (Table 4). The last two columns: the share of chosen candidates with "
           "h(x+) <= 0.8 (near gamma) and their validity.", "",
           "| data set | sampler | choice | Cost | Val | LOF | Score | chosen near gamma | Val there |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        out += [f"| {name} | {r['sampler']} | {r['choice']} | {r['cost']:.2f} | {r['validity']:.2f} | "
                f"{r['lof']:.2f} | {r['score']:.2f} | {r['near_gamma']:.2f} | {r['near_gamma_valid']:.2f} |"
                for r in res["choice"]]
        out.append(f"| {name} | TabSyn+Q (paper) | | " + " | ".join(f"{v:.2f}" for v in PAPER_TABLE4["diffusion_q"][name])
                   + " | | |")
    return out + [""]


def options_section(results: dict) -> list[str]:
    """How far apart GenRe's three options per person are (GenRe.recourse(X, options=3))."""
    rows = [(n, m, r["diversity"]) for n, res in results.items() for m, r in res["methods"].items() if "diversity" in r]
    if not rows:
        return []
    out = ["## Several options per person", "",
           "GenRe's rows also gave each test negative 3 options (`recourse(X, options=3)`: the 3 best distinct "
           "candidates by the row's selection rule among 30 samples). The mean L1 cost between two options "
           "of the same person, over pairs, people and seeds (0 where the sampler gave one candidate "
           "only):", "", "| data set | row | mean cost between options |", "|---|---|---|"]
    return out + [f"| {n} | {m} | {d:.3f} |" for n, m, d in rows] + [""]


def diffusion_section(diffusion: dict) -> list[str]:
    """Table 4: GenRe against a tabular diffusion model with Q and with SVDD guidance."""
    labels = {"diffusion_q": "TabSyn+Q", "diffusion_svdd5": "TabSyn+SVDD (lambda 5)",
              "diffusion_svdd10": "TabSyn+SVDD (lambda 10)", "genre": "GenRe"}
    paper = {m: (labels[m], numbers) for m, numbers in PAPER_TABLE4.items()}
    names = list(diffusion)
    methods = list(next(iter(diffusion.values()))["methods"])
    out = ["## GenRe against a tabular diffusion model (paper Table 4)", "",
           "`python experiments.py --only diffusion` (diffusion.py): the diffusion model is trained on "
           "D_h^+ only; `diffusion_q` draws recourse from Q (Eq. 6) over a synthetic D_syn^+ of |D_h^+| rows, "
           "`diffusion_svdd5` / `diffusion_svdd10` guide its sampling towards x by SVDD at lambda 5 and 10 "
           "(immutables not projected, as the paper; their violations are counted), `diffusion_svdd5_kept` "
           "copies the immutables. Each of our rows, then the paper's. Cells: Cost / Val / LOF / Score "
           "(immutable violations), mean over seeds " f"{next(iter(diffusion.values()))['seeds']}.", "",
           "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m in methods:
        cells = []
        for n in names:
            r = diffusion[n]["methods"][m]
            cells.append(f"{r['cost']:.2f} / {r['validity']:.2f} / {r['lof']:.2f} / **{r['score']:.2f}** "
                         f"({r['immutable_violations']})")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
        if m in paper:
            label, numbers = paper[m]
            out.append(f"| *{label}, the paper's Table 4* | " + " | ".join(" / ".join(f"{v:.2f}" for v in numbers[n])
                                                                        for n in names) + " |")
    return out + [""]


def fractions_section(fractions: dict) -> list[str]:
    """Table 13: GenRe trained on fractions of the training rows."""
    (name, study), = fractions.items()
    rows = [row for row in next(iter(study.values())) if row not in ("n_train", "fit_seconds")]
    mean = lambda xs: sum(xs) / len(xs)
    out = ["## GenRe on fractions of the training data (paper Table 13)", "",
           f"`python experiments.py --only fractions`: GenRe trained on a uniform share of {name}'s training "
           "rows (h, the test negatives and the metric stay each seed's); mean over seeds "
           f"(Cost / Val / LOF / Score). Training seconds are GenRe's pairing and training; the step "
           "budget is the same at every share.", "", "![fractions](../figures/fractions.png)", "",
           "| share | training rows | " + " | ".join(rows) + " | training seconds |", "|---" * (3 + len(rows)) + "|"]
    for share, r in study.items():
        cells = [" / ".join(f"{mean([x[k] for x in r[row]]):.2f}" for k in METRICS) for row in rows]
        out.append(f"| {float(share):g} | {mean(r['n_train']):.0f} | " + " | ".join(cells) + f" | {mean(r['fit_seconds']):.0f} |")
    return out + [""]


def constrained_section(study: dict) -> list[str]:
    """The constrained study: every method with a lender's rules, GenRe given them only at
    recourse time, and every method without them (their breaks counted)."""
    (name, runs), = study.items()
    rules = runs["rules"]
    said = [f"{c} only increases" for c in rules.get("increase", [])] + \
           [f"{c} within {lo:g}-{hi:g}" for c, (lo, hi) in rules.get("ranges", {}).items()] + \
           [f"{c} as it is" for c in rules.get("fixed", [])]
    out = ["## Recourse under actionability constraints", "",
           f"`python experiments.py --only constrained`, {name}: {', '.join(said)} (the data set's immutables "
           "too). 'with': every method given the rules at fit (a lender's rules; GenRe is trained with them, "
           "each baseline keeps them in its designed mode, and the search baselines' _paper modes, which "
           "ignore them, are measured as they are; the generative baselines' _paper modes, which ignore them "
           "too and search longest, are left out: their numbers are Table 2's); 'at recourse': GenRe trained "
           "without them and given them only at recourse time; 'without': no method given them, their breaks "
           "counted. Cost / Val / LOF / Score, features "
           f"changed, rows breaking a rule (of {runs['with']['n_test']} a seed, summed over seeds "
           f"{runs['with']['seeds']}).", "",
           "| method | with | at recourse | without |", "|---|---|---|---|"]
    cell = lambda r: "" if r is None else (f"{r['cost']:.2f} / {r['validity']:.2f} / {r['lof']:.2f} / **{r['score']:.2f}**, "
                                           f"{r['features_changed']:.1f} changed, {r['constraint_violations']} broken")
    for m in runs["with"]["methods"]:
        out.append(f"| {m} | " + " | ".join(cell(runs[k]["methods"].get(m)) for k in ("with", "at_recourse", "without")) + " |")
    return out + [""]


def provenance_section(folder: str) -> list[str]:
    """The versions, machine and commit each results file records."""
    seen = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".json"):
            with open(os.path.join(folder, f)) as fh:
                p = json.load(fh).get("provenance") if f != "toy2d.json" else None
            if p:
                machine = p["machine"] + (f", {p['cpu']}" if p.get("cpu") else "")
                key = (json.dumps(p["versions"], sort_keys=True), machine, p["commit"], p["dirty"])
                seen.setdefault(key, []).append(f)
    if not seen:
        return []
    out = ["## What the numbers were computed with", "",
           "Each file records the versions of the packages that compute, the CPU architecture and, where "
           "recorded, its model (the kernels the libraries pick for it move the last bits: BENCHMARKS.md, "
           "kernel paths) and the "
           "commit of the code (`dirty`: the code differed from it).", "",
           "| files | versions | machine | commit |", "|---|---|---|---|"]
    for (versions, machine, commit, dirty), files in seen.items():
        v = ", ".join(f"{k} {x}" for k, x in json.loads(versions).items())
        out.append(f"| {', '.join(files)} | {v} | {machine} | {str(commit)[:10]}{' (dirty)' if dirty else ''} |")
    return out + [""]


def lambda_section(sweeps: dict) -> list[str]:
    out = ["## The lambda study (Sec. 5.3, Figure 4; seed 0)", "", "![lambda sweep](../figures/lambda_sweep.png)", "",
           "| data set | method | λ | Cost | Val | LOF | Score |", "|---|---|---|---|---|---|---|"]
    for name, by_method in sweeps.items():
        for method, rows in by_method.items():
            out += [f"| {name} | {method} | {r['lam']:g} | {r['cost']:.2f} | {r['validity']:.2f} | "
                    f"{r['lof']:.2f} | {r['score']:.2f} |" for r in rows]
    return out + [""]


def tau_sigma_section(studies: dict) -> list[str]:
    out = ["## The tau/sigma study (Table 11; seed 0, sampling only)", "",
           "The default GenRe model of the comparison sampled as the paper (bin centres, best of 10 "
           "by h) with other temperatures tau and noise levels sigma.", "",
           "| data set | τ | σ | Cost | Val | LOF | Score |", "|---|---|---|---|---|---|---|"]
    for name, rows in studies.items():
        out += [f"| {name} | {r['tau']:g} | {r['sigma']:g} | {r['cost']:.2f} | {r['validity']:.2f} | "
                f"{r['lof']:.2f} | {r['score']:.2f} |" for r in rows]
    return out + [""]


def results_readme(folder: str) -> str:
    """results/README.md from the JSON files in `folder` alone (missing studies are skipped)."""
    path = lambda f: os.path.join(folder, f)
    exists = lambda f: os.path.exists(path(f))
    results = {n: load_json(path(f"{n}.json")) for n in ("adult", "compas", "heloc") if exists(f"{n}.json")}
    timing = load_json(path("timing.json")) if exists("timing.json") else {}
    out = ["# Results", "", "Regenerated by `python experiments.py` (every file here, this page and the "
           "README's tables) on this 2-core CPU: each unit's wall-clock minutes and the command that "
           "last ran it; units run side by side (`--jobs`), so the whole run takes less than their sum.",
           "", *timing_table(timing), ""]
    if exists("ablation.json"):
        out += ablation_section(load_json(path("ablation.json")))
    if exists("development.json"):
        out += development_section(load_json(path("development.json")))
    if exists("HISTORY.md"):                    # how the defaults came to be, written by hand
        with open(path("HISTORY.md")) as f:
            out += f.read().splitlines() + [""]
    generative = {n: load_json(path(f"{n}_generative.json")) for n in results if exists(f"{n}_generative.json")}
    fewer_seeds = {n: g for n, g in generative.items() if g["seeds"] != results[n]["seeds"]}
    if results:
        whole_table = with_generative(results, folder)
        out += classifier_section(results) + comparison_section(whole_table)
        out += generative_section(fewer_seeds) + agreement_section(whole_table)
        out += novel_section(results) + choice_section(results) + options_section(results)
    sections = (("diffusion.json", diffusion_section), ("fractions.json", fractions_section),
                ("constrained.json", constrained_section), ("lambda_sweep.json", lambda_section),
                ("tau_sigma.json", tau_sigma_section))
    for f, section in sections:
        if exists(f):
            out += section(load_json(path(f)))
    if exists("toy2d.json"):
        out += ["## Figure 2 on the 2-D toys", "", "![recourse on the 2-D toys](../figures/toy2d_recourse.png)", "",
                "Test negatives (dark red) joined to their recourse, one column per method; h's boundary "
                "dashed, positives blue.", "", toy_table(load_json(path("toy2d.json"))), ""]
    if exists("gaps.json"):
        data = load_json(path("gaps.json"))
        out += ["## Why the paper-mode rows differ: one study per method", "",
                f"`python experiments.py --only gaps` (gaps.py; `python gaps.py` writes the same to runs/gaps/), "
                f"seeds {data['seeds']}, {data['n_test']} test negatives: each study reruns one baseline with one "
                "thing changed at a time.", ""] + gaps_section(data)
    if exists("NOTES.md"):
        with open(path("NOTES.md")) as f:
            out += [f.read()]
    return "\n".join(out + provenance_section(folder)) + "\n"


def timing_table(timing: dict) -> list[str]:
    """Minutes per unit of experiments.py, then the whole run's wall clock (its "run" entry)."""
    units = {k: t for k, t in timing.items() if not k.startswith("run")}
    rows = [[k, f"{t['minutes']:.1f}", f"`{t['command'].strip()}`"] for k, t in units.items()]
    rows.append(["sum of the units", f"{sum(t['minutes'] for t in units.values()):.1f}", ""])
    rows += [[f"later command, {t['jobs']} job(s), wall clock", f"{t['minutes']:.1f}", f"`{t['command'].strip()}`"]
             for k, t in timing.items() if k.startswith("run:")]
    if "run" in timing:
        run = timing["run"]
        rows.append([f"**whole run, {run['jobs']} job(s), wall clock**", f"**{run['minutes']:.1f}**",
                     f"`{run['command'].strip()}`"])
    return table("| unit | minutes | command |", rows)


def publish_results(folder: str = "results") -> None:
    """Write results/README.md and the README's results block from the JSON files."""
    text = results_readme(folder)
    atomic_write(os.path.join(folder, "README.md"), lambda f: f.write(text.encode()))
    readme = os.path.join(HERE, "README.md")
    results = {n: load_json(os.path.join(folder, f"{n}.json")) for n in ("adult", "compas", "heloc")
               if os.path.exists(os.path.join(folder, f"{n}.json"))}
    if results:
        replace_block(readme, "results", headline(with_generative(results, folder), HEADLINE_METHODS, ("genre",)))
    print(f"written: {os.path.join(folder, 'README.md')} and the results table of {readme}")


def with_generative(results: dict, folder: str) -> dict:
    """Each data set's results with the generative baselines' rows added where they ran on the
    same seeds, in the paper's order (before the NNR rows): the whole Table 2."""
    merged = {}
    for name, res in results.items():
        path = os.path.join(folder, f"{name}_generative.json")
        extra = load_json(path) if os.path.exists(path) else {"seeds": None, "methods": {}}
        if extra["seeds"] != res["seeds"]:
            merged[name] = res
            continue
        methods = list(res["methods"].items())
        at = next((i for i, (m, _) in enumerate(methods) if m.startswith("nnr")), len(methods))
        merged[name] = {**res, "methods": dict(methods[:at] + list(extra["methods"].items()) + methods[at:])}
    return merged


# The README's table: GenRe's rows and each baseline as the paper ran it (results/README.md has all).
HEADLINE_METHODS = ("genre", "genre_plausible", "wachter_paper", "gs_paper", "dice_paper", "roar_paper", "probe_paper",
                    "tap_paper", "cchvae_paper", "revise_paper", "cruds_paper", "nnr_dhplus")
