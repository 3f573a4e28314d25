"""results/README.md: every result file, what it holds, its columns and the command that made it.

The descriptions are the `snakemake --report` captions (workflow/report/{tables,figures}/*.rst),
so the report and the README never disagree; the columns are read from the tables themselves.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.stats import t_interval

MAIN_COMMAND = "snakemake --cores 2"

# What each column means, wherever it appears (units in the name: _ms, _bytes, _s, _gflops).
COLUMNS = {
    "variant": "the config's id of the attention variant (its registry name unless given an id)",
    "name": "registry name of the variant (baselines.available())",
    "params": "the variant's params, JSON (model_size: the model's parameter count)",
    "mode": "fwd / fwd+bwd: what a timing measured",
    "eval_attention": "native / blockwise_causal: which attention evaluated the model (beyond its training length every model has both)",
    "paper_protocol": "true for the row the paper's protocol reports: native within the training length, blockwise causal beyond it (the claims read these)",
    "schedule": "LongNet rows: paper (widest segment extended by (2w, 2r) to cover the length), pinned (as given, covering it) or truncated (as given, stopping short of it); empty for other variants",
    "widest_segment": "LongNet rows: the widest segment length of the schedule that ran",
    "cache_rows_per_head": "key rows the decoding cache holds per head at that context",
    "flops_ratio": "the variant's attention FLOPs at seq_len over the recall benchmark's LongNet's",
    "lr": "learning rate the model was trained with (recall: chosen per variant by the validation sweep)",
    "mean_accuracy": "the sweep run's validation accuracy averaged over the distances",
    "chosen": "true for the learning rate the variant trains every seed with (highest mean_accuracy; ties: lower final_loss)",
    "split": "held-out split scored: validation (the learning-rate sweep) or test (reported)",
    "chunk_losses": "the mean test loss of each evaluation chunk (JSON; the same chunks for every model): the claims measure the test noise of a difference from them",
    "train_len": "training sequence length (tokens)",
    "eval_len": "evaluation sequence length (tokens)",
    "seq_len": "sequence length N (tokens)",
    "context_len": "tokens in the prompt (passkey) or prompt + scored tokens (context window)",
    "prompt_len": "tokens before the scored final tokens",
    "loss": "mean next-token cross-entropy (nats)",
    "val_loss": "test-split loss at that point of training (nats)",
    "perplexity": "exp(loss)",
    "paper_model": "the paper's name for this model (Tables 1 and 2)",
    "paper_train_len": "train_len x paper_len_scale: the paper's training length",
    "paper_eval_len": "eval_len x paper_len_scale: the paper's evaluation length",
    "paper_perplexity": "the paper's Table 2 value at those lengths (empty: none published)",
    "paper_complexity": "the paper's Table 1 complexity",
    "paper_exponent": "the power of N that complexity implies",
    "measured_exponent": "fitted slope of log(median_ms / batch) vs log(seq_len)",
    "flops_exponent": "fitted slope of log(flops / batch) vs log(seq_len)",
    "points": "cells the exponent was fitted on",
    "min_seq_len": "shortest length in the fit",
    "max_seq_len": "longest length in the fit",
    "step": "optimizer step",
    "tokens": "tokens processed (training: so far; profiling: seq_len x batch)",
    "tokens_seen": "training tokens the evaluated model saw",
    "tokens_evaluated": "tokens scored",
    "train_flops": "training FLOPs spent so far (longnet.flops conventions)",
    "lr": "learning rate",
    "tokens_per_s": "training throughput",
    "wall_s": "training wall time so far",
    "mfu": "model FLOP utilisation against the measured matmul rate",
    "seed": "training seed of the model (initialisation and data order)",
    "statistic": "seed: one trained model; mean: the aggregate over a cell's seeds",
    "perplexity_mean": "exp(mean test loss over seeds): the geometric mean perplexity",
    "ci_low": "Table 2: lower end of the 95% interval of the cell mean over seeds, test-set noise included (analysis.stats.cell_interval; perplexity: of the loss, exponentiated); claims: the one-sided 95% lower bound of mean_diff",
    "ci_high": "Table 2: upper end of that interval; claims: the one-sided 95% upper bound of mean_diff",
    "seed_sd": "Table 2: sd of the test loss over seeds; claims: sd of the paired differences (welch: sqrt(sd_better^2 + sd_worse^2); slope_t: sd of the per-seed slopes)",
    "eval_se": "test-set sampling noise: Table 2, sqrt(mean loss_se^2) over the cell's seeds; claims, the bound on the test-noise se of mean_diff (0 where loss_se is absent)",
    "loss_se": "standard error of the model's mean test loss over its evaluation chunks",
    "n_seeds": "seeds in the aggregate",
    "claim": "the paper's claim tested",
    "family": "primary: the pre-registered test of its claim, Holm-adjusted over every primary row; exploratory: unadjusted, never a verdict",
    "primary": "true for the one pre-registered test of each claim (docs/study_design.md, Pre-registration)",
    "metric": "what was compared (a single cell, or the average over the lengths / distances named)",
    "test": "paired_t (the two cells share initialisation and data order: same seeds, training length, tokens per step), welch (otherwise) or slope_t (one-sample t over per-seed slopes)",
    "alternative": "the one-sided alternative tested (the claimed direction)",
    "n_better": "seeds of the better-claimed cell in the test",
    "n_worse": "seeds of the other cell in the test",
    "n_wins": "paired tests: seeds in which the claim's direction held (welch: empty)",
    "p_opposite": "one-sided p-value of the opposite direction",
    "p_adjusted": "primary rows: Holm-adjusted p_value over the primary family",
    "p_opposite_adjusted": "primary rows: Holm-adjusted p_opposite over the primary family",
    "p_bh": "primary rows: Benjamini-Hochberg-adjusted p_value (reference only; verdicts use Holm)",
    "seeds_needed": "primary rows: seeds per cell for 80% power against 0.02 nats (accuracy: 0.05; slope: 0.02 nats per e-fold of parameters) at one-sided alpha 0.05, from this row's spreads (inf: test-set noise alone hides it)",
    "better": "the variant the claim says is better (lower loss)",
    "worse": "the variant it is compared with",
    "train_len_better": "training length of the better-claimed model",
    "train_len_worse": "training length of the other model",
    "n": "the test's sample: pairs (paired_t), both cells' seeds (welch), seeds (slope_t)",
    "mean_diff": "the metric of worse minus better, oriented so positive supports the claim: test loss in nats/token, accuracy (better minus worse), or -slope",
    "p_value": "one-sided p-value in the claimed direction (unadjusted)",
    "verdict": "primary rows: holds (p_adjusted < 0.05), does not hold (p_opposite_adjusted < 0.05), cannot tell; every other row: exploratory",
    "paper_better": "the paper's perplexity for the better-claimed cell",
    "paper_worse": "the paper's perplexity for the other cell",
    "passkey_seed": "seed of the random keys",
    "split": "corpus split evaluated",
    "depth": "where the key sits, as a fraction of the prompt",
    "accuracy": "fraction of trials whose key was retrieved exactly (greedy)",
    "token_accuracy": "fraction of key tokens predicted",
    "trials": "random keys per cell",
    "batch": "sequences per call",
    "heads": "attention heads",
    "head_dim": "dimension per head",
    "causal": "causal masking",
    "dtype": "tensor dtype",
    "device": "torch device type (or, in evaluation rows, the device name)",
    "device_name": "the device that measured (CPU model and threads, or GPU name)",
    "backend": "attention kernel backend used",
    "status": "ok, timeout (past time_cap_s), oom (past the memory cap) or error",
    "median_ms": "median latency of one call (sequence parallel: the slowest rank's)",
    "min_ms": "fastest timed call",
    "max_ms": "slowest timed call",
    "repeats": "timed calls",
    "peak_mem_bytes": "peak memory (CPU: peak RSS of the cell's process; CUDA: peak allocated)",
    "idle_mem_bytes": "memory before the inputs were made, of the same kind as peak_mem_bytes (CPU: RSS of the cell's process; CUDA: device memory allocated)",
    "flops": "forward (or forward+backward) FLOPs of the call",
    "gflops_per_s": "flops / median time",
    "world_size": "ranks P the sequence was split over",
    "tokens_per_rank": "seq_len / world_size",
    "segment_lengths": "dilated attention segment lengths w",
    "dilation_rates": "dilation rates r",
    "bytes_sent_per_rank": "bytes each rank sends per call (all-gathers + reduce-scatters)",
    "bytes_recv_per_rank": "bytes each rank receives per call",
    "min_rank_median_ms": "the fastest rank's median latency",
    "median_cpu_ms": "the largest per-rank median of process CPU time (less inflated by other "
                     "load on a shared CPU)",
    "max_abs_error_vs_single": "largest |difference| from the single-process result (empty past "
                               "check_max_len)",
    "threads_per_rank": "CPU threads per rank",
    "devices": "devices the sequence is split over",
    "tokens_per_device": "seq_len / devices",
    "algorithm": "all-gather algorithm of the alpha-beta model",
    "compute_ms": "modelled compute time of the slowest device",
    "comm_ms": "modelled all-gather time",
    "projected_ms": "compute_ms + comm_ms",
    "measured_ms": "measured latency the projection is checked against (validation rows)",
    "error": "why a cell failed (empty when it ran)",
    "relative_error": "projected / measured - 1 (the cost model's validation rows)",
    "flops_per_device": "FLOPs of the slowest device",
    "rate_gflops": "measured kernel throughput the projection uses",
    "link": "interconnect of the projection (validation_link: the measured runs' own)",
    "kind": "projected (beyond measurement) or validation (against a measured run)",
    "extend_schedule": "LongNet branches continued geometrically until a segment covers N",
    "oversubscription": "ranks per core in the measured run",
    "distance": "d: how far back the target token is",
    "layers": "attention layers needed to reach it (empty: unreachable)",
    "layers_to_reach": "attention layers the variant's pattern needs to reach that distance (attention graph at the benchmark's length and heads; empty: unreachable)",
    "n_layer": "layers of the trained model",
    "reachable": "share of the held-out answers at that distance whose pair token the pattern connects to the query within n_layer layers (every placement, not only the last position's)",
    "ceiling": "reachable + (1 - reachable) x chance: the accuracy of a model exact where a path exists and guessing uniformly where none does",
    "answers": "held-out answers scored at that distance",
    "chance": "accuracy of a uniform guess among the values (1 / values)",
    "fit_exponent": "alpha of the power law loss = fit_coefficient * params^-alpha, fitted to the seed means of this registry name",
    "fit_coefficient": "the power law's coefficient",
    "n_sizes": "model sizes in the fit",
    "d_model": "width of the trained model",
    "n_head": "heads of the trained model",
    "attention_flops": "causal attention FLOPs of one layer at seq_len (what flop_match equalises)",
    "steps": "optimizer steps trained",
    "final_loss": "training loss at the last step",
    "train_s": "wall time of the training (seconds)",
    "git_commit": "code version (-dirty-HASH: uncommitted changes, tracked or new files; HASH of them)",
    "torch_version": "torch version",
    "date": "when the row was made (UTC)",
    "config_hash": "hash of the configuration that made the row",
}


def caption(captions_dir, kind: str, name: str) -> str:
    return (Path(captions_dir) / kind / f"{name}.rst").read_text().strip()


def table2_markdown(table2: pd.DataFrame) -> str:
    """Ours (mean over seeds and its 95% interval) and the paper's perplexity side by side: a
    row per model, a column per eval length."""
    if table2.empty:
        return "(no perplexity evaluations in this run)"
    table2 = table2[table2["statistic"] == "mean"]
    blockwise = table2.get("eval_attention", pd.Series("", index=table2.index)) == "blockwise_causal"
    if "paper_protocol" in table2:  # the paper's protocol; the native rows beyond are in the CSV
        table2, blockwise = table2[table2["paper_protocol"].astype(bool)], blockwise[table2["paper_protocol"].astype(bool)]
    cell = table2.assign(value=[
        f"{p:.2f} [{lo:.2f}, {hi:.2f}]" + ("†" if b else "") + (f" ({q:.2f})" if pd.notna(q) else "")
        for p, lo, hi, q, b in zip(table2["perplexity_mean"], table2["ci_low"], table2["ci_high"],
                                   table2["paper_perplexity"], blockwise)])
    wide = cell.pivot_table(index=["variant", "train_len"], columns="eval_len", values="value",
                            aggfunc="first").reset_index()
    header = ["variant", "train len"] + [f"eval {c}" for c in wide.columns[2:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
              for row in wide.itertuples(index=False)]
    if blockwise.any():
        lines += ["", "† evaluated with blockwise causal attention beyond the training length, "
                      "as the paper did for the vanilla Transformer."]
    return "\n".join(lines)


def claims_markdown(claims: pd.DataFrame) -> str:
    """One line per pre-registered primary test: its metric, difference, one-sided bound,
    p-values (unadjusted and Holm-adjusted), verdict and the seeds a decision would need; the
    exploratory cells are counted, not listed (they are in tables/claims.csv)."""
    if claims.empty:
        return "(no claims could be tested in this run)"
    primary = claims[claims["primary"].astype(str).str.lower() == "true"]
    lines = ["| claim | better | worse | metric | test | diff [one-sided 95% bounds] | p | "
             "p (Holm) | verdict | seeds needed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in primary.itertuples(index=False):
        lines.append(f"| {c.claim} | {c.better} L{c.train_len_better} | {c.worse} "
                     f"L{c.train_len_worse} | {c.metric} | {c.test} | {c.mean_diff:+.4f} "
                     f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.p_value:.3g} | "
                     f"{c.p_adjusted:.3g} | {c.verdict} | {c.seeds_needed:g} |")
    lines += ["", "diff = the metric of `worse` minus `better` (loss in nats/token; accuracy and "
                  "slope oriented the same way): positive supports the claim. One-sided tests in "
                  "the claimed direction, Holm-adjusted over these primary rows; verdicts from "
                  "the adjusted p-values (analysis.stats, docs/study_design.md). "
                  f"{len(claims) - len(primary)} exploratory cells (unadjusted, no verdict) are "
                  "in `tables/claims.csv`."]
    return "\n".join(lines)


def recall_markdown(recall: pd.DataFrame) -> str:
    """Accuracy per variant (rows) and distance (columns): mean over seeds [95% t interval], and
    the layers the pattern needs to reach that distance (in the model's depth or not)."""
    if recall.empty:
        return "(no recall runs in this run)"
    distances = sorted(recall["distance"].unique())
    lines = ["| variant | params | lr | FLOPs / LongNet's | " + " | ".join(f"d = {d}" for d in distances) + " |",
             "|---|---|---|---|" + "---|" * len(distances)]
    for variant, rows in recall.groupby("variant"):
        cells = []
        for d in distances:
            at = rows[rows["distance"] == d]
            mean, low, high = t_interval(at["accuracy"])
            layers = at["layers_to_reach"].iloc[0]
            reach = "unreachable" if pd.isna(layers) else f"{int(layers)} layer{'s' if layers > 1 else ''}"
            if "ceiling" in at:
                reach += f"; ceiling {at['ceiling'].iloc[0]:.2f}"
            cells.append(f"{mean:.2f} [{max(low, 0):.2f}, {min(high, 1):.2f}] ({reach})")
        schedule = rows["schedule"].iloc[0] if "schedule" in rows and isinstance(rows["schedule"].iloc[0], str) else ""
        params = rows["params"].iloc[0] + (f" ({schedule} schedule, widest "
                                           f"{rows['widest_segment'].iloc[0]:.0f})" if schedule else "")
        lr = f"{rows['lr'].iloc[0]:g}" if "lr" in rows else ""
        ratio = f"{rows['flops_ratio'].iloc[0]:.2f}" if "flops_ratio" in rows else ""
        lines.append(f"| {variant} | {params} | {lr} | {ratio} | " + " | ".join(cells) + " |")
    first = recall.iloc[0]
    lines += ["", f"Accuracy on held-out sequences, mean over {recall['seed'].nunique()} seeds "
                  f"[95% t interval, clipped to 0..1]; in parentheses the layers the pattern needs "
                  f"to reach that distance from the last position (the models have "
                  f"{int(first['n_layer'])}) and the ceiling: the accuracy of a model exact "
                  f"wherever the pattern connects a held-out pair to its query within that "
                  f"depth and guessing elsewhere. Length "
                  f"{int(first['seq_len'])}, {int(first['steps'])} steps per model; lr: the rate "
                  f"the variant's sweep chose on the validation split (`tables/recall_lr.csv`), "
                  f"used for every seed; FLOPs / LongNet's: attention FLOPs at the length "
                  f"against the LongNet entry's."]
    return "\n".join(lines)


def results_readme(tables: dict[str, pd.DataFrame], figures: list[str], captions_dir,
                   config_hash: str) -> str:
    """The text of results/README.md for these tables (name -> DataFrame) and figure names."""
    out = [
        "# Results",
        "",
        f"Made by `{MAIN_COMMAND}` from the repository root (the default configuration, "
        "`workflow/configs/default.yaml`, unless `--configfile` named another; this run's "
        f"configuration hash: `{config_hash}`); the HTML report by "
        "`snakemake --report results/report.html`. What made this run (git commit, torch "
        "version, device, date, config hash and the whole configuration): `provenance.json`. "
        "Per-job intermediates are under `results/work/` and logs under `results/logs/` "
        "(neither committed). Any single file below is remade by naming it: "
        f"`{MAIN_COMMAND} <path>`.",
        "",
        "## Table 2: test perplexity, ours (paper's in parentheses, lengths scaled)",
        "",
        "Mean over training seeds [95% interval over seeds, test-set noise included where "
        "the evaluation measured it: analysis.stats.cell_interval]; per-seed rows, and each "
        "cell's seed_sd and eval_se, in `tables/table2_perplexity.csv`.",
        "",
        table2_markdown(tables.get("table2_perplexity", pd.DataFrame())),
        "",
        "## The paper's claims, decided over seeds (`tables/claims.csv`)",
        "",
        claims_markdown(tables.get("claims", pd.DataFrame())),
        "",
        "## Trained recall (`tables/recall.csv`)",
        "",
        recall_markdown(tables.get("recall", pd.DataFrame())),
        "",
        "## Figures (rule `figures`)",
        "",
    ]
    for name in figures:
        out += [f"### figures/{name}.png", "", caption(captions_dir, "figures", name), "",
                f"![{name}](figures/{name}.png)", ""]
    out += ["## Tables (rule `tables`, one row per measurement)", ""]
    for name, df in tables.items():
        out += [f"### tables/{name}.csv", "", caption(captions_dir, "tables", name), "",
                f"{len(df)} rows (empty in this run)." if df.empty else f"{len(df)} rows.", ""]
        out += [f"- `{c}`: {COLUMNS.get(c, '(see the producing function)')}" for c in df.columns]
        out += [""]
    return "\n".join(out)
