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
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.stats import cell_interval, paired_test

INPUT_KINDS = ("profile", "perplexity", "context_window", "passkey", "compute_curve",
               "metrics", "distributed", "projected", "attention_graph", "recall",
               "recall_reach")

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

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem} (delete it and rerun, so the job that writes it "
                         "runs again)")


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
}


def read_checked(path, kind: str, expect: dict | None = None) -> pd.DataFrame:
    """One per-job CSV, refused (InputError naming the file) unless it is whole: a final newline,
    every row as many fields as the header, at least one row, the columns of NUMERIC[kind]
    present and finite, and the rows `expect` asks for (column -> values that must all occur,
    or a single value every row must have)."""
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
        if isinstance(wanted, (list, tuple, set)):
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
                             "among the inputs")
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

    One row per seed (statistic "seed": seed, perplexity, loss, ...) and one aggregate row per
    cell (statistic "mean": perplexity_mean, ci_low, ci_high of the 95% interval over seeds with
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
    shared = ["eval_attention", "paper_model", "paper_train_len", "paper_eval_len", "paper_perplexity",
              "tokens_evaluated", "split"]
    means = [dict(zip(MODEL_KEYS, key), statistic="mean",
                  **{c: rows[c].iloc[0] for c in shared if c in rows}, **seed_mean(rows))
             for key, rows in df.groupby(MODEL_KEYS)]
    df = pd.concat([df, pd.DataFrame(means)], ignore_index=True)
    df = df[[c for c in TABLE2_FIRST if c in df] + [c for c in df.columns if c not in TABLE2_FIRST]]
    return df.sort_values([*MODEL_KEYS, "statistic", "seed"], ignore_index=True)


def claims(table: pd.DataFrame, variants) -> pd.DataFrame:
    """The paper's Table 2 claims, each decided by a paired t-test over seeds on the test loss
    (analysis.stats.paired_test; seed s of one model against seed s of the other):

    - LongNet beats the Sparse Transformer (sparse_fixed) at every equal training length and
      evaluation length;
    - LongNet beats the vanilla Transformer at evaluation lengths beyond vanilla's training length;
    - LongNet trained on the longest length beats LongNet trained on the shortest, at the longest
      evaluation length (the paper: longer training sequences help).

    Columns: claim, better, worse (variant ids), train_len_better, train_len_worse, eval_len, n,
    mean_diff (loss of worse minus better, nats/token), ci_low, ci_high, p_value, verdict, and
    the paper's perplexities for the two cells (paper_better, paper_worse). Entries with their
    own model size (model_overrides: the model-size study) are left out: a claim compares
    patterns at one model size."""
    columns = ["claim", "better", "train_len_better", "worse", "train_len_worse", "eval_len", "n",
               "mean_diff", "ci_low", "ci_high", "p_value", "verdict", "paper_better",
               "paper_worse"]
    seeds = table[table["statistic"] == "seed"] if len(table) else table
    if seeds.empty:
        return pd.DataFrame(columns=columns)
    name = registry_names(variants)
    by_name = {}
    resized = {v.get("id", v["name"]) for v in variants if v.get("model_overrides")}
    for vid in (v for v in seeds["variant"].unique() if v not in resized):
        by_name.setdefault(name.get(vid), []).append(vid)
    cells = {key: rows.set_index("seed") for key, rows in seeds.groupby(MODEL_KEYS)}
    rows = []

    def compare(claim, better, worse):
        a, b = cells.get(better), cells.get(worse)
        if a is None or b is None:
            return
        common = sorted(set(a.index) & set(b.index))
        result = paired_test(a.loc[common, "loss"], b.loc[common, "loss"])
        rows.append(dict(claim=claim, better=better[0], train_len_better=better[1],
                         worse=worse[0], train_len_worse=worse[1], eval_len=better[2], **result,
                         paper_better=a["paper_perplexity"].iloc[0],
                         paper_worse=b["paper_perplexity"].iloc[0]))

    for ln in by_name.get("longnet", []):
        ln_lens = sorted(seeds.loc[seeds["variant"] == ln, "train_len"].unique())
        evals = sorted(seeds.loc[seeds["variant"] == ln, "eval_len"].unique())
        for sp in by_name.get("sparse_fixed", []):
            for n in ln_lens:
                for e in evals:
                    compare("longnet beats sparse_fixed at equal lengths", (ln, n, e), (sp, n, e))
        for va in by_name.get("vanilla", []):
            for m in seeds.loc[seeds["variant"] == va, "train_len"].unique():
                for n in ln_lens:
                    for e in (e for e in evals if e > m):
                        compare("longnet beats vanilla beyond vanilla's training length",
                                (ln, n, e), (va, m, e))
        if len(ln_lens) > 1:
            compare("longer training length helps longnet at the longest evaluation",
                    (ln, ln_lens[-1], evals[-1]), (ln, ln_lens[0], evals[-1]))
    return pd.DataFrame(rows, columns=columns)


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
                 & (table["eval_len"] == train_len) & table["variant"].isin(params)].copy()
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
                         "the inputs")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


TABLES = ("table1_scaling", "table2_perplexity", "claims", "latency", "latency_projected", "distributed",
          "loss_vs_compute", "training", "context_window", "passkey", "attention_graph",
          "recall", "model_size")


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
    return {
        "table1_scaling": scaling_exponents(latency, variants),
        "table2_perplexity": perplexity,
        "claims": claims(perplexity, variants),
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
        "recall": recall(read["recall"], read["recall_reach"]),
        "model_size": model_size(perplexity, variants, model_params or {}, model_size_len),
    }
