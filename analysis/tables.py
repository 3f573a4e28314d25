"""Aggregate the pipeline's per-job CSVs into tidy tables (one row per measurement).

Every table is keyed by `variant`: the config's id of a variant (its registry name unless the
config gives an id), so two configurations of one registered variant stay apart.

    tables = build_tables(inputs, variants, paper_len_scale=16)
    tables["table2_perplexity"]   # ours beside the paper's perplexity

`inputs` maps each input kind (see INPUT_KINDS) to a list of CSV paths; `variants` is the config's
variant list (dicts with id, name, paper_model).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.stats import cell_interval

INPUT_KINDS = ("profile", "perplexity", "context_window", "passkey", "compute_curve",
               "metrics", "distributed", "projected", "attention_graph", "recall",
               "recall_reach", "recall_lr")

# Fit latency exponents only where the kernels dominate: tiny lengths measure call overhead.
MIN_FIT_LEN = 2048


@lru_cache(maxsize=1)
def paper_numbers() -> dict:
    """The paper's Tables 1 and 2 (analysis/paper_numbers.yaml)."""
    return yaml.safe_load((Path(__file__).parent / "paper_numbers.yaml").read_text())


def paper_table2() -> pd.DataFrame:
    """Tidy paper Table 2: paper_model, paper_train_len, paper_eval_len, paper_perplexity."""
    rows = [dict(paper_model=r["model"], paper_train_len=r["train_len"], paper_eval_len=int(e),
                 paper_perplexity=p)
            for r in paper_numbers()["table2"] for e, p in r["perplexity"].items()]
    return pd.DataFrame(rows)


def read_csv(path) -> pd.DataFrame:
    """A CSV as a frame; a file with no columns (an empty table) reads as an empty frame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


class InputError(ValueError):
    """A per-job CSV that is not what the configuration says it must hold."""

    def __init__(self, path, problem: str, damaged: bool = True):
        super().__init__(f"{path}: {problem}")
        self.path, self.damaged = Path(path), damaged  # damaged: its content is refused

    def set_aside(self) -> str:
        """Move a damaged file aside (to NAME.refused, kept for a look) and say so: the pipeline
        rebuilds a missing input on its next run (workflow/rules/common.smk). A file refused for
        another reason (the inputs do not match the configuration) stays where it is."""
        if not (self.damaged and self.path.is_file()):
            return str(self)
        aside = self.path.with_name(self.path.name + ".refused")
        os.replace(self.path, aside)
        return (f"{self}; moved aside to {aside}: run the same command again and the job that "
                "writes it runs again")


# Per input kind: the columns every row must fill with a finite number ("profile" rows fill
# median_ms only where status is ok).
NUMERIC = {
    "profile": ("seq_len", "batch"),
    "perplexity": ("train_len", "eval_len", "loss", "perplexity"),
    "context_window": ("train_len", "prompt_len", "loss"),
    "passkey": ("train_len", "context_len", "depth", "accuracy"),
    "compute_curve": ("step", "tokens", "train_flops", "val_loss"),
    "metrics": ("step", "tokens", "loss", "lr"),
    "distributed": ("world_size", "seq_len"),
    "projected": (),
    "attention_graph": (),
    "recall": ("distance", "seq_len", "accuracy", "seed"),
    "recall_reach": ("distance", "reachable"),
    "recall_lr": ("distance", "accuracy", "lr", "final_loss"),
}


def read_checked(path, kind: str, expect: dict | None = None) -> pd.DataFrame:
    """One per-job CSV, refused (InputError naming the file) unless it is whole: a final newline,
    every row as many fields as the header, at least one row, the columns of NUMERIC[kind]
    present and finite, and the rows `expect` asks for (column -> values that must all occur,
    or a single value every row must have, or {"steps": spec}: each logged step once, no other)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(path, f"unreadable ({error})") from None
    if not text.strip():
        raise InputError(path, "empty")
    if not text.endswith("\n"):
        raise InputError(path, "truncated (its last line has no newline)")
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise InputError(path, f"not valid CSV ({error})") from None
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise InputError(path, f"line {number} has {len(row)} fields where the header has "
                             f"{len(rows[0])} (a cut or damaged row)")
    if len(rows) < 2:
        raise InputError(path, "no rows, only a header")
    df = pd.read_csv(io.StringIO(text))
    required = [*NUMERIC[kind], *(expect or {})]
    missing = [c for c in dict.fromkeys(required) if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    for column in NUMERIC[kind]:
        values = pd.to_numeric(df[column], errors="coerce")
        if not np.isfinite(values).all():
            raise InputError(path, f"column {column} has a value that is not a finite number "
                             f"in row(s) {list(np.flatnonzero(~np.isfinite(values)) + 2)}")
    for column, wanted in (expect or {}).items():
        if isinstance(wanted, dict):  # {"steps": longnet.train.logged_steps spec}: each once
            from longnet.train import steps_of
            want = steps_of(wanted["steps"])
            got = pd.to_numeric(df[column], errors="coerce").tolist()
            if sorted(got) != want:
                counts = pd.Series(got).value_counts()
                dropped = sorted(set(want) - set(got))
                repeated = sorted(counts[counts > 1].index)
                other = sorted(set(got) - set(want))

                def some(values):
                    return f"{values[:10]}{' ...' if len(values) > 10 else ''} ({len(values)})"
                raise InputError(path, f"{column} must be each logged step once ({len(want)} "
                                 f"rows, {wanted['steps']}): missing {some(dropped)}, repeated "
                                 f"{some(repeated)}, unexpected {some(other)}")
        elif isinstance(wanted, (list, tuple, set)):
            absent = sorted(set(wanted) - set(df[column]))
            if absent:
                raise InputError(path, f"no rows for {column} = {absent} (the configuration "
                                 f"asks for {sorted(set(wanted))})")
        elif not (df[column] == wanted).all():
            raise InputError(path, f"rows whose {column} is not {wanted!r}: "
                             f"{sorted(set(df[column]) - {wanted})}")
    return df


def read_csvs(paths, kind: str | None = None, expect: dict | None = None) -> pd.DataFrame:
    """Concatenate CSVs (an empty list gives an empty frame). With `expect` (path -> what the
    configuration says that file holds, see read_checked), every file is checked, and `paths`
    must hold every path of `expect`; without it, empty files are skipped."""
    paths = [str(p) for p in paths]
    if expect is None:
        frames = [df for df in map(read_csv, paths) if len(df)]
    else:
        missing = sorted(set(expect) - set(paths))
        if missing:
            raise InputError(missing[0], f"a {kind} input the configuration asks for is not "
                             "among the inputs", damaged=False)
        frames = [read_checked(p, kind, expect.get(p)) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_tables(paths: dict) -> dict[str, pd.DataFrame]:
    """The tidy tables back from their CSVs (name -> path)."""
    return {name: read_csv(path) for name, path in paths.items()}


def variant_info(variants) -> pd.DataFrame:
    """One row per configured variant: variant (id), name, paper_model."""
    return pd.DataFrame([dict(variant=v.get("id", v["name"]), name=v["name"],
                              paper_model=v.get("paper_model")) for v in variants],
                        columns=["variant", "name", "paper_model"])


def registry_names(variants) -> dict:
    """Variant id -> registry name, for the configured variants."""
    info = variant_info(variants)
    return dict(zip(info["variant"], info["name"]))


def fit_exponent(x, y) -> float:
    """Slope of log(y) against log(x): the power of a power law (nan with fewer than 2 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if len(np.unique(x[keep])) < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def scaling_exponents(latency: pd.DataFrame, variants, min_len: int = MIN_FIT_LEN) -> pd.DataFrame:
    """Table 1: the measured power of N of each variant's time per sequence, beside its FLOP count's
    and the paper's complexity. Fitted on successful cells with seq_len >= min_len (all successful
    cells when fewer than two are that long). Time per sequence = median_ms / batch, so a constant
    token budget (batch = tokens / N) does not bend the slope."""
    columns = ["variant", "mode", "points", "min_seq_len", "max_seq_len", "measured_exponent",
               "flops_exponent", "paper_model", "paper_complexity", "paper_exponent"]
    if latency.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (variant, mode), cells in latency[latency["status"] == "ok"].groupby(["variant", "mode"]):
        long = cells[cells["seq_len"] >= min_len]
        cells = long if long["seq_len"].nunique() >= 2 else cells
        rows.append(dict(variant=variant, mode=mode, points=len(cells),
                         min_seq_len=cells["seq_len"].min(), max_seq_len=cells["seq_len"].max(),
                         measured_exponent=fit_exponent(cells["seq_len"],
                                                        cells["median_ms"] / cells["batch"]),
                         flops_exponent=fit_exponent(cells["seq_len"],
                                                     cells["flops"] / cells["batch"])))
    table = pd.DataFrame(rows, columns=columns[:7])
    paper = pd.DataFrame(paper_numbers()["table1"]).rename(columns={
        "model": "paper_row", "complexity": "paper_complexity", "exponent": "paper_exponent"})
    info = variant_info(variants)
    info["paper_row"] = info["paper_model"].map(paper_numbers()["table1_row"])
    table = table.merge(info[["variant", "paper_model", "paper_row"]], on="variant", how="left")
    table = table.merge(paper, on="paper_row", how="left").drop(columns="paper_row")
    return table[columns].sort_values(["mode", "variant"], ignore_index=True)


TABLE2_FIRST = ["variant", "train_len", "eval_len", "statistic", "seed", "perplexity",
                "perplexity_mean", "ci_low", "ci_high", "n_seeds", "paper_model",
                "paper_train_len", "paper_eval_len", "paper_perplexity"]
MODEL_KEYS = ["variant", "train_len", "eval_len"]
TABLE2_KEYS = [*MODEL_KEYS, "eval_attention"]  # beyond train_len a model has a row per attention


def paper_protocol(rows: pd.DataFrame) -> pd.Series:
    """True for the rows evaluated as the paper evaluated (section 4.2): a model's own attention
    within its training length, blockwise causal attention beyond it. The claims and the
    model-size fit read these rows; the native rows beyond a model's training length stand
    beside them in Table 2 (longnet.evaluate.eval_attentions)."""
    if rows.empty:
        return pd.Series(dtype=bool)
    beyond = rows["eval_len"] > rows["train_len"]
    attention = rows["eval_attention"] if "eval_attention" in rows else pd.Series("native", index=rows.index)
    return attention == np.where(beyond, "blockwise_causal", "native")


def seed_mean(rows: pd.DataFrame) -> dict:
    """One model cell's seeds -> perplexity_mean (geometric: exp of the mean test loss), its 95%
    interval including test-set noise (analysis.stats.cell_interval: the seed spread and the
    rows' loss_se, 0 where the rows have none; the loss interval exponentiated), n_seeds and the
    two spreads: seed_sd (sd of the test loss over seeds) and eval_se (sqrt of the mean loss_se^2;
    0 without loss_se)."""
    cell = cell_interval(rows["loss"], rows["loss_se"] if "loss_se" in rows else None)
    return dict(perplexity_mean=math.exp(cell["mean"]), ci_low=math.exp(cell["low"]),
                ci_high=math.exp(cell["high"]), loss=cell["mean"], n_seeds=rows["seed"].nunique(),
                seed_sd=cell["seed_sd"], eval_se=cell["eval_se"])


def table2(perplexity: pd.DataFrame, variants, paper_len_scale: int = 1) -> pd.DataFrame:
    """Table 2: our perplexity per (variant, train_len, eval_len) with the paper's value for the
    same model at the same lengths scaled by paper_len_scale (NaN where the paper has none).

    A cell is (variant, train_len, eval_len, eval_attention): beyond its training length a model
    has a native and a blockwise causal cell; `paper_protocol` marks the one the paper's
    protocol reports (paper_protocol()). One row per seed (statistic "seed": seed, perplexity,
    loss, ...) and one aggregate row per cell (statistic "mean": perplexity_mean, ci_low, ci_high of the 95% interval over seeds with
    test-set noise included, n_seeds, seed_sd, eval_se; seed and perplexity empty). See
    analysis.stats.cell_interval for the interval."""
    if perplexity.empty:
        return pd.DataFrame(columns=TABLE2_FIRST)
    info = variant_info(variants)[["variant", "paper_model"]]
    df = perplexity.drop(columns=["paper_model"], errors="ignore").merge(info, on="variant",
                                                                          how="left")
    df["paper_train_len"] = df["train_len"] * paper_len_scale
    df["paper_eval_len"] = df["eval_len"] * paper_len_scale
    df = df.merge(paper_table2(), on=["paper_model", "paper_train_len", "paper_eval_len"],
                  how="left")
    df["statistic"] = "seed"
    if "eval_attention" not in df:
        df["eval_attention"] = "native"
    df["paper_protocol"] = paper_protocol(df)
    shared = ["paper_protocol", "paper_model", "paper_train_len", "paper_eval_len",
              "paper_perplexity", "tokens_evaluated", "split", "schedule", "widest_segment"]
    means = [dict(zip(TABLE2_KEYS, key), statistic="mean",
                  **{c: rows[c].iloc[0] for c in shared if c in rows}, **seed_mean(rows))
             for key, rows in df.groupby(TABLE2_KEYS)]
    df = pd.concat([df, pd.DataFrame(means)], ignore_index=True)
    df = df[[c for c in TABLE2_FIRST if c in df] + [c for c in df.columns if c not in TABLE2_FIRST]]
    return df.sort_values([*TABLE2_KEYS, "statistic", "seed"], ignore_index=True)


CLAIMS_COLUMNS = ["claim", "family", "primary", "metric", "test", "alternative", "better",
                  "train_len_better", "worse", "train_len_worse", "eval_len", "n", "n_better",
                  "n_worse", "n_wins", "mean_diff", "ci_low", "ci_high", "seed_sd", "eval_se",
                  "p_value", "p_opposite", "p_adjusted", "p_opposite_adjusted", "p_bh", "verdict",
                  "seeds_needed", "paper_better", "paper_worse"]
# The difference each claim's power is sized for, in its metric's unit.
MIN_EFFECT = {"loss": 0.02, "accuracy": 0.05, "slope": 0.02}
SPARSE_RECALL = ("sparse_fixed", "sparse_strided", "longformer")  # the FLOP-matched patterns
CLAIM_SPARSE = "longnet beats sparse_fixed at equal lengths"
CLAIM_VANILLA = "longnet beats vanilla beyond vanilla's training length"
CLAIM_LONGER = "longer training length helps longnet at the longest evaluation"
CLAIM_DENSE = "longnet beats dense attention trained at the same length (with less compute)"
CLAIM_DEGRADES = "sparse_fixed degrades beyond its training length more than longnet"
CLAIM_RECALL = "longnet recalls beyond its smallest segment better than {}"
CLAIM_SIZE = "{} loss falls with model size"


def _geomean(values) -> float:
    """exp(mean(log)): the paper's perplexities averaged as our losses are (nan if any is)."""
    v = np.asarray(list(values), dtype=float)
    return float(np.exp(np.log(v).mean())) if len(v) and np.isfinite(v).all() else math.nan


def chunk_diff_var(better_chunks, worse_chunks) -> float:
    """The test-set variance of a difference of two mean losses scored on the same chunks:
    var over chunks of the per-chunk differences / chunks (the chunks are the sampling unit)."""
    d = np.asarray(worse_chunks, dtype=float) - np.asarray(better_chunks, dtype=float)
    return float(d.var(ddof=1) / len(d)) if len(d) > 1 else 0.0


def claims(table: pd.DataFrame, variants, recall: pd.DataFrame | None = None,
           sizes: pd.DataFrame | None = None, eval_noise: bool = True) -> pd.DataFrame:
    """The paper's claims, one pre-registered PRIMARY test each (docs/study_design.md,
    "Pre-registration"), plus exploratory cells. Every test is one-sided in the claimed
    direction (analysis.stats.one_sided): paired by seed where the two cells share their
    initialisation and data order, Welch otherwise (analysis.stats.choose_test; `test` says
    which). The primary tests form one family, Holm-adjusted (p_adjusted); their verdict is
    holds / does not hold / cannot tell from the adjusted p-values (analysis.stats.verdict).
    Every other row is exploratory: unadjusted, verdict "exploratory", never "holds".

    Primary tests (table: Table 2 with per-seed rows; recall: the recall table; sizes: the
    model-size table):
    (a) CLAIM_SPARSE: LongNet vs sparse_fixed at their longest common training length, per-seed
        loss averaged over the evaluation lengths both have there (eval_len "mean").
        Exploratory: every (training length, evaluation length) cell.
    (b) CLAIM_VANILLA: LongNet at its longest training length vs vanilla at its shortest, per-seed
        loss averaged over the evaluation lengths > vanilla's training length (eval_len
        "mean>M"). Exploratory: each LongNet training length and evaluation length > M.
    (g) CLAIM_DENSE (the dense control, Figure 6's compute claim): LongNet vs vanilla trained at
        the same length (the longest both have, beyond vanilla's shortest) on the same tokens,
        per-seed loss averaged over the evaluation lengths up to it: LongNet spends fewer
        attention FLOPs per token, so a loss no worse is less compute for that loss. Exploratory:
        each common length and evaluation length.
    (c) CLAIM_LONGER: LongNet at its longest vs its shortest training length, loss at the
        longest evaluation length. Exploratory: every other pair of lengths, every eval length.
    (d) CLAIM_DEGRADES: the difference in differences (loss at the longest evaluation length E
        minus loss at the model's own training length n; sparse_fixed's minus LongNet's),
        paired by seed at the shortest n < E that has an evaluation at n (eval_len "E-n").
        Exploratory: other such n and other evaluation lengths between n and E.
    (e) CLAIM_RECALL, one claim per FLOP-matched sparse pattern present (SPARSE_RECALL): per-seed
        recall accuracy averaged over the distances > LongNet's smallest segment, LongNet vs the
        pattern (eval_len "mean>w"). Exploratory: each such distance.
    (f) CLAIM_SIZE for LongNet: the slope of test loss on ln(parameters), fitted per seed over
        the model sizes, tested < 0 over seeds (test "slope_t"; mean_diff = -slope).

    Columns (CLAIMS_COLUMNS): claim; family ("primary": the Holm family; "exploratory");
    primary (bool); metric (what was compared); test; alternative (the one-sided H1);
    better, train_len_better, worse, train_len_worse (variant ids and training lengths; recall:
    its sequence length); eval_len (an evaluation length or distance, or the label of what was
    averaged); n, n_better, n_worse, n_wins, mean_diff (the metric of worse minus better,
    oriented so that positive supports the claim: nats/token, accuracy, or -slope), ci_low,
    ci_high (one-sided 95% bounds), seed_sd, eval_se, p_value, p_opposite (analysis.stats.
    one_sided), p_adjusted, p_opposite_adjusted (Holm over the primary family), p_bh
    (Benjamini-Hochberg over it, for reference), verdict, seeds_needed (primary rows: seeds per
    cell for 80% power against MIN_EFFECT, analysis.stats.seeds_needed), paper_better,
    paper_worse (the paper's perplexities of the two cells; geometric mean over averaged
    lengths; empty where it has none).

    Test-set noise, measured: where both cells' rows carry `chunk_losses` (every model is scored
    on the same test chunks), the noise of a difference is the variance over chunks of the
    per-chunk differences / chunks (chunk_diff_var), per seed, averaged over the seeds. Without
    them, the bound: each row's `loss_se` (Table 2; absent: 0) enters as a known variance,
    bounded assuming non-negatively correlated chunk losses: an average over evaluation lengths
    of one model (the same chunks) has se <= the mean of its se's; a difference of two values
    has variance <= the sum of theirs; the bound is shared by all seeds (analysis.stats).
    eval_noise=False leaves it out (tests conditional on the test set). Recall accuracy and the
    size slope carry no test noise term (a slope's weights sum to zero, so error shared by the
    sizes cancels; the rest is not measured). Entries with their own model size
    (model_overrides) are left out of (a)-(d): a claim compares patterns at one size."""
    from analysis import stats as st

    rows = []
    seeds = table[table["statistic"] == "seed"] if len(table) else table
    if len(seeds) and "paper_protocol" in seeds:  # one row per cell: as the paper evaluated
        seeds = seeds[seeds["paper_protocol"].astype(bool)]
    name = registry_names(variants)
    resized = {v.get("id", v["name"]) for v in variants if v.get("model_overrides")}
    has_se = eval_noise and "loss_se" in seeds
    cells = {}
    for key, group in (seeds.groupby(MODEL_KEYS) if len(seeds) else ()):
        cells[key] = group.set_index("seed")

    def lens(variant, column):
        return sorted(seeds.loc[seeds["variant"] == variant, column].unique())

    def per_seed(variant, train_len, evals):
        """seed -> value (loss averaged over evals), eval_var ((mean loss_se)^2), paper."""
        got = [cells.get((variant, train_len, e)) for e in evals]
        if not evals or any(g is None for g in got):
            return None
        common = sorted(set.intersection(*(set(g.index) for g in got)))
        value = np.mean([g.loc[common, "loss"].to_numpy(float) for g in got], axis=0)
        se = (np.mean([g.loc[common, "loss_se"].fillna(0).to_numpy(float) for g in got], axis=0)
              if has_se else np.zeros(len(common)))
        tps = got[0]["tokens_per_step"].iloc[0] if "tokens_per_step" in got[0] else None
        chunks = None  # seed -> per-chunk losses averaged over evals (the same chunks every model)
        if has_se and all("chunk_losses" in g and g.loc[common, "chunk_losses"].notna().all()
                          for g in got):
            chunks = {s: np.mean([json.loads(g.loc[s, "chunk_losses"]) for g in got], axis=0)
                      for s in common}
        return dict(values=pd.Series(value, index=common),
                    eval_var=pd.Series(se * se, index=common), chunks=chunks,
                    paper=_geomean(g["paper_perplexity"].iloc[0] if "paper_perplexity" in g
                                   else math.nan for g in got), tokens_per_step=tps)

    def add(claim, primary, metric, kind, better, worse, eval_label, b, w, alternative,
            test=None, paper=(math.nan, math.nan)):
        if b is None or w is None or not len(b["values"]) or not len(w["values"]):
            return
        if test is None:
            test = st.choose_test(better[1], worse[1], b["values"].index, w["values"].index,
                                  b.get("tokens_per_step"), w.get("tokens_per_step"))
        if test in (st.PAIRED, st.SLOPE):
            common = sorted(set(b["values"].index) & set(w["values"].index))
            pick = (lambda d, c: d[c].loc[common])
        else:
            pick = (lambda d, c: d[c])
        b_var, w_var = pick(b, "eval_var"), pick(w, "eval_var")
        shared = sorted(set(b.get("chunks") or {}) & set(w.get("chunks") or {}))
        if shared:  # both scored on the same chunks: the noise of the difference, measured
            b_var = pd.Series([chunk_diff_var(b["chunks"][s], w["chunks"][s]) for s in shared],
                              index=shared).mean()
            w_var = 0.0
        result = st.one_sided(pick(b, "values"), pick(w, "values"), test, b_var, w_var)
        needed = math.nan
        if primary:
            sd = result["seed_sd"] if test != st.WELCH else result["sd_better"]
            needed = st.seeds_needed(sd, MIN_EFFECT[kind], test, result["sd_worse"],
                                     result["eval_se"] ** 2)
        rows.append(dict(claim=claim, family="primary" if primary else "exploratory",
                         primary=primary, metric=metric, alternative=alternative,
                         better=better[0], train_len_better=better[1], worse=worse[0],
                         train_len_worse=worse[1], eval_len=eval_label, seeds_needed=needed,
                         paper_better=paper[0], paper_worse=paper[1],
                         **{k: v for k, v in result.items() if k in CLAIMS_COLUMNS}))

    def loss_add(claim, primary, ln_cell, other_cell, evals, label, metric, test=None):
        b, w = per_seed(*ln_cell, evals), per_seed(*other_cell, evals)
        add(claim, primary, metric, "loss", ln_cell, other_cell, label, b, w,
            f"loss {ln_cell[0]} L{ln_cell[1]} < {other_cell[0]} L{other_cell[1]}", test,
            (b["paper"], w["paper"]) if b and w else (math.nan, math.nan))

    by_name = {}
    for vid in (v for v in (seeds["variant"].unique() if len(seeds) else []) if v not in resized):
        by_name.setdefault(name.get(vid), []).append(vid)
    for ln in by_name.get("longnet", []):
        ln_lens = lens(ln, "train_len")
        for sp in by_name.get("sparse_fixed", []):
            common = sorted(set(ln_lens) & set(lens(sp, "train_len")))
            for n in common:  # (a)
                evals = sorted(set(seeds.loc[(seeds["variant"] == ln) & (seeds["train_len"] == n),
                                             "eval_len"])
                               & set(seeds.loc[(seeds["variant"] == sp) & (seeds["train_len"] == n),
                                               "eval_len"]))
                if n == common[-1]:
                    loss_add(CLAIM_SPARSE, True, (ln, n), (sp, n), evals, "mean",
                             "loss, mean over eval lengths " + "/".join(map(str, evals)))
                for e in evals:
                    loss_add(CLAIM_SPARSE, False, (ln, n), (sp, n), [e], e, f"loss at eval {e}")
            evals_all = sorted(set(lens(ln, "eval_len")) & set(lens(sp, "eval_len")))
            if evals_all:  # (d)
                top = evals_all[-1]
                starts = [n for n in common if n < top and n in evals_all]
                for n in starts:
                    for e in (e for e in evals_all if e > n):
                        b, w = per_seed(ln, n, [e]), per_seed(sp, n, [e])
                        b0, w0 = per_seed(ln, n, [n]), per_seed(sp, n, [n])
                        if None in (b, w, b0, w0):
                            continue
                        deg = [dict(values=x["values"] - x0["values"],
                                    eval_var=x["eval_var"] + x0["eval_var"],
                                    chunks={s: x["chunks"][s] - x0["chunks"][s]
                                            for s in x["chunks"]} if x["chunks"] and x0["chunks"]
                                    else None)
                               for x, x0 in ((b, b0), (w, w0))]
                        add(CLAIM_DEGRADES, n == starts[0] and e == top,
                            f"loss at eval {e} minus loss at eval {n}, sparse_fixed's minus "
                            "longnet's", "loss", (ln, n), (sp, n), f"{e}-{n}", *deg,
                            f"degradation {sp} L{n} > {ln} L{n}",
                            st.choose_test(n, n, b["values"].index, w["values"].index))
        for va in by_name.get("vanilla", []):  # (b)
            va_lens = lens(va, "train_len")
            for m in va_lens:
                for n in ln_lens:
                    beyond = sorted(e for e in set(lens(ln, "eval_len")) & set(lens(va, "eval_len"))
                                    if e > m and (ln, n, e) in cells and (va, m, e) in cells)
                    if n == ln_lens[-1] and m == va_lens[0] and beyond:
                        loss_add(CLAIM_VANILLA, True, (ln, n), (va, m), beyond, f"mean>{m}",
                                 f"loss, mean over eval lengths > {m}: "
                                 + "/".join(map(str, beyond)))
                    for e in beyond:
                        loss_add(CLAIM_VANILLA, False, (ln, n), (va, m), [e], e,
                                 f"loss at eval {e}")
            common = sorted(set(ln_lens) & set(va_lens))
            for n in common:  # (g) the dense control: equal length and tokens, less compute
                evals = sorted(set(seeds.loc[(seeds["variant"] == ln) & (seeds["train_len"] == n),
                                             "eval_len"])
                               & set(seeds.loc[(seeds["variant"] == va) & (seeds["train_len"] == n),
                                               "eval_len"]))
                evals = [e for e in evals if e <= n]  # within both models' training length
                if n == common[-1] and n > va_lens[0] and evals:
                    loss_add(CLAIM_DENSE, True, (ln, n), (va, n), evals, "mean",
                             "loss, mean over eval lengths " + "/".join(map(str, evals)))
                for e in evals:
                    loss_add(CLAIM_DENSE, False, (ln, n), (va, n), [e], e, f"loss at eval {e}")
        if len(ln_lens) > 1:  # (c)
            evals = lens(ln, "eval_len")
            for i, short in enumerate(ln_lens):
                for long in ln_lens[i + 1:]:
                    for e in evals:
                        primary = short == ln_lens[0] and long == ln_lens[-1] and e == evals[-1]
                        loss_add(CLAIM_LONGER, primary, (ln, long), (ln, short), [e], e,
                                 f"loss at eval {e}")

    if recall is not None and len(recall):  # (e)
        for ln, rows_ln in recall[recall["name"] == "longnet"].groupby("variant"):
            params = rows_ln["params"].iloc[0]
            params = json.loads(params) if isinstance(params, str) else params
            w = min(params["segment_lengths"])
            for comparator in SPARSE_RECALL:
                for sp, rows_sp in recall[recall["name"] == comparator].groupby("variant"):
                    far = sorted(d for d in set(rows_ln["distance"]) & set(rows_sp["distance"])
                                 if d > w)

                    def acc(rows_v, ds):
                        at = rows_v[rows_v["distance"].isin(ds)]
                        full = at.groupby("seed")["distance"].nunique() == len(ds)
                        means = at.groupby("seed")["accuracy"].mean()[full]
                        return dict(values=-means, eval_var=pd.Series(0.0, index=means.index))

                    length = (int(rows_ln["seq_len"].iloc[0]), int(rows_sp["seq_len"].iloc[0]))
                    claim = CLAIM_RECALL.format(comparator)
                    for ds, primary in [(far, True)] + [([d], False) for d in far]:
                        if not ds:
                            continue
                        metric = (f"accuracy, mean over distances > {w}: "
                                  + "/".join(map(str, ds)) if primary
                                  else f"accuracy at distance {ds[0]}")
                        add(claim, primary, metric,
                            "accuracy", (ln, length[0]), (sp, length[1]),
                            f"mean>{w}" if primary else ds[0], acc(rows_ln, ds), acc(rows_sp, ds),
                            f"accuracy {ln} > {sp}")

    if sizes is not None and len(sizes):  # (f)
        for size_name, group in sizes.groupby("name"):
            if group["params"].nunique() < 2:
                continue
            slopes = {}
            n_sizes = group["params"].nunique()
            for seed, at in group.groupby("seed"):
                if at["params"].nunique() == n_sizes:
                    slopes[seed] = float(np.polyfit(np.log(at["params"].astype(float)),
                                                    at["loss"].astype(float), 1)[0])
            order = group.sort_values("params")
            zeros = pd.Series(0.0, index=list(slopes))
            add(CLAIM_SIZE.format(size_name), size_name == "longnet",
                f"slope of loss on ln(params) per seed, {n_sizes} sizes", "slope",
                (order["variant"].iloc[-1], int(order["train_len"].iloc[-1])),
                (order["variant"].iloc[0], int(order["train_len"].iloc[0])),
                int(order["eval_len"].iloc[0]),
                dict(values=zeros, eval_var=zeros),
                dict(values=-pd.Series(slopes), eval_var=zeros), "slope < 0", st.SLOPE)

    out = pd.DataFrame(rows, columns=CLAIMS_COLUMNS)
    if out.empty:
        return out
    out["primary"] = out["primary"].astype(bool)
    primary = out["primary"].to_numpy()
    out.loc[primary, "p_adjusted"] = st.holm(out.loc[primary, "p_value"])
    out.loc[primary, "p_opposite_adjusted"] = st.holm(out.loc[primary, "p_opposite"])
    out.loc[primary, "p_bh"] = st.benjamini_hochberg(out.loc[primary, "p_value"])
    out["verdict"] = [st.verdict(p, q) if is_primary else st.EXPLORATORY
                      for p, q, is_primary in zip(out["p_adjusted"], out["p_opposite_adjusted"],
                                                  primary)]
    return out.sort_values("primary", ascending=False, kind="stable", ignore_index=True)


def model_size(table: pd.DataFrame, variants, params: dict, train_len: int | None) -> pd.DataFrame:
    """Figure 7 (left): test loss against model parameters. One row per trained model (variant
    entry, seed) at training length `train_len`, evaluated at that length: variant, name, params,
    loss, perplexity, seed; with, per registry name of >= 3 sizes, the power law fitted to the
    seed-mean losses, loss = fit_coefficient * params ** -fit_exponent (least squares in log-log)."""
    columns = ["variant", "name", "params", "loss", "perplexity", "seed", "train_len", "eval_len",
               "fit_exponent", "fit_coefficient", "n_sizes"]
    if table.empty or train_len is None:
        return pd.DataFrame(columns=columns)
    rows = table[(table["statistic"] == "seed") & (table["train_len"] == train_len)
                 & (table["eval_len"] == train_len) & table["variant"].isin(params)
                 & paper_protocol(table)].copy()
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows["name"] = rows["variant"].map(registry_names(variants))
    rows["params"] = rows["variant"].map(params)
    fits = {}
    for name, group in rows.groupby("name"):
        means = group.groupby("params")["loss"].mean()
        if len(means) >= 3:
            slope, intercept = np.polyfit(np.log(means.index), np.log(means.values), 1)
            fits[name] = (-slope, math.exp(intercept), len(means))
        else:
            fits[name] = (math.nan, math.nan, len(means))
    rows["fit_exponent"] = rows["name"].map(lambda n: fits[n][0])
    rows["fit_coefficient"] = rows["name"].map(lambda n: fits[n][1])
    rows["n_sizes"] = rows["name"].map(lambda n: fits[n][2])
    return rows[columns].sort_values(["name", "params", "seed"], ignore_index=True)


def recall(accuracy: pd.DataFrame, reach: pd.DataFrame) -> pd.DataFrame:
    """The recall benchmark's per-seed rows with the theory beside them: `reachable`, the share
    of the held-out answers at that distance whose pair the pattern connects to the query within
    the model's depth (recall_reach), and `ceiling` = reachable + (1 - reachable) x chance, the
    accuracy of a model exact where a path exists and guessing uniformly where none does."""
    if accuracy.empty or reach.empty:
        return accuracy
    table = accuracy.merge(reach[["variant", "distance", "reachable"]], on=["variant", "distance"],
                           how="left", validate="many_to_one")
    table["ceiling"] = table["reachable"] + (1 - table["reachable"]) * table["chance"]
    return table


def recall_lr(sweep: pd.DataFrame) -> pd.DataFrame:
    """The recall benchmark's learning-rate sweep: per variant and rate, the validation accuracy
    at each distance and its mean, the final training loss, and `chosen` (the rate
    longnet.recall.choose_lr picks, which every seed of that variant then trains with)."""
    if sweep.empty:
        return sweep
    from longnet.recall import choose_lr

    table = sweep.copy()
    table["mean_accuracy"] = table.groupby(["variant", "lr"])["accuracy"].transform("mean")
    chosen = {v: choose_lr(rows.to_dict("records")) for v, rows in table.groupby("variant")}
    table["chosen"] = table["lr"] == table["variant"].map(chosen)
    return table.sort_values(["variant", "lr", "distance"], ignore_index=True)


def with_train_len(paths, kind: str | None = None, expect: dict | None = None) -> pd.DataFrame:
    """Training outputs carry their model in the path:
    .../train/<variant>/L<train_len>/s<seed>/<file>. kind, expect: as read_csvs."""
    frames = []
    for p in map(str, paths):
        df = read_csv(p) if expect is None else read_csvs([p], kind, {p: expect.get(p)})
        if len(df):
            parts = Path(p).parts
            df["variant"], df["train_len"], df["seed"] = parts[-4], int(parts[-3][1:]), int(parts[-2][1:])
            frames.append(df)
    missing = sorted(set(expect or {}) - set(map(str, paths)))
    if missing:
        raise InputError(missing[0], f"a {kind} input the configuration asks for is not among "
                         "the inputs", damaged=False)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


TABLES = ("table1_scaling", "table2_perplexity", "claims", "latency", "latency_projected", "distributed",
          "loss_vs_compute", "training", "context_window", "passkey", "attention_graph",
          "recall", "recall_lr", "model_size")


def build_tables(inputs: dict, variants, paper_len_scale: int = 1,
                 expect: dict | None = None, model_params: dict | None = None,
                 model_size_len: int | None = None) -> dict[str, pd.DataFrame]:
    """Every tidy table, by name (the file name under results/tables/).

    model_params: variant id -> parameters of its model; model_size_len: the training length of
    the model-size table (None: no such table).

    expect: input kind -> path -> what the file must hold (read_checked); the pipeline passes
    what its configuration implies, so a missing, empty, cut or incomplete input is refused
    (InputError naming the file) before any table is written."""
    unknown = set(inputs) - set(INPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown input kinds {sorted(unknown)}; "
                         f"allowed: {', '.join(INPUT_KINDS)}")
    if expect is not None:
        for kind in INPUT_KINDS:
            expect.setdefault(kind, {})
    read = {kind: read_csvs(inputs.get(kind, []), kind, None if expect is None else expect[kind])
            for kind in INPUT_KINDS if kind not in ("compute_curve", "metrics")}
    latency = read["profile"]
    perplexity = table2(read["perplexity"], variants, paper_len_scale)
    sizes = model_size(perplexity, variants, model_params or {}, model_size_len)
    recall_table = recall(read["recall"], read["recall_reach"])
    return {
        "table1_scaling": scaling_exponents(latency, variants),
        "table2_perplexity": perplexity,
        "claims": claims(perplexity, variants, recall_table, sizes),
        "latency": latency,
        "latency_projected": read["projected"],
        "distributed": read["distributed"],
        "loss_vs_compute": with_train_len(inputs.get("compute_curve", []), "compute_curve",
                                          None if expect is None else expect["compute_curve"]),
        "training": with_train_len(inputs.get("metrics", []), "metrics",
                                   None if expect is None else expect["metrics"]),
        "context_window": read["context_window"],
        "passkey": read["passkey"],
        "attention_graph": read["attention_graph"],
        "recall": recall_table,
        "recall_lr": recall_lr(read["recall_lr"]),
        "model_size": sizes,
    }
