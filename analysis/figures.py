"""The suite's figures, drawn with matplotlib from the tidy tables (analysis.tables).

    figs = draw_figures(tables)    # {name: matplotlib Figure}, saved as results/figures/<name>.png

Every function takes DataFrames and returns a Figure; an empty input gives a figure that says so,
so a partial configuration (e.g. no distributed runs) still yields every declared file.
Measured values are solid lines; the cost model's projections are dashed and labelled "projected".
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.stats import t_interval  # noqa: E402


def _axes(title: str, xlabel: str, ylabel: str, logx=True, logy=True, ncols=1):
    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols, 4.4), squeeze=False)
    for ax in axes[0]:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xscale("log" if logx else "linear", **({"base": 2} if logx else {}))
        ax.set_yscale("log" if logy else "linear")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    return fig, axes[0]


def _finish(fig, axes, empty: bool, what: str):
    for ax in axes:
        if empty:
            ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center",
                    transform=ax.transAxes)
        elif ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _seed_means(df: pd.DataFrame, x: str, y: str) -> tuple[list, list, list, list]:
    """(x values, mean of y, 95% t-interval low, high) over the rows (seeds) at each x."""
    points = [(at, *t_interval(rows[y])) for at, rows in df.groupby(x)]
    return tuple(list(v) for v in zip(*points))


def _plot_models(ax, df: pd.DataFrame, x: str, y: str) -> None:
    """One line per trained model (variant, training length) of y against x: the mean over its
    seeds, with the 95% t interval over seeds shaded (analysis.stats) where there are >= 2."""
    for (variant, train_len), run in df.groupby(["variant", "train_len"]):
        seeds = run["seed"].nunique() if "seed" in run else 1
        at, mean, low, high = _seed_means(run, x, y)
        line, = ax.plot(at, mean, "o-", ms=3,
                        label=f"{variant} (train {train_len}, {seeds} seed{'s' * (seeds > 1)})")
        if seeds > 1:
            ax.fill_between(at, low, high, color=line.get_color(), alpha=0.2, lw=0)


def figure5_latency(latency: pd.DataFrame, distributed: pd.DataFrame,
                    projected: pd.DataFrame):
    """Forward latency vs N: measured on one device by variant, measured per rank by device count,
    and the cost model's projection as devices are added (dashed, devices annotated)."""
    fig, (ax,) = _axes("Figure 5: attention forward latency", "sequence length N (tokens)",
                       "latency per sequence and device (ms)")
    empty = latency.empty and distributed.empty and projected.empty
    colors = {}

    def color(variant):
        return colors.setdefault(variant, f"C{len(colors)}")

    if not latency.empty:
        ok = latency[(latency["status"] == "ok") & (latency["mode"] == "fwd")]
        for variant, cells in ok.groupby("variant"):
            cells = cells.sort_values("seq_len")
            schedules = cells["schedule"].dropna().unique() if "schedule" in cells else []
            schedule = "".join(f", {s} schedule" for s in schedules if s)  # LongNet's, as run
            ax.plot(cells["seq_len"], cells["median_ms"] / cells["batch"], "o-",
                    color=color(variant), label=f"{variant}, 1 device (measured{schedule})")
    if not distributed.empty:
        for p, runs in distributed.groupby("world_size"):
            runs = runs.sort_values("seq_len")
            ax.plot(runs["seq_len"], runs["median_ms"], "s-", color=color(f"ranks{p}"),
                    label=f"longnet, {p} ranks (measured)")
    projected = projected[projected["kind"] == "projected"] if len(projected) else projected
    if not projected.empty:
        for i, (link, by_link) in enumerate(projected.groupby("link")):
            for variant, runs in by_link.groupby("variant"):
                runs = runs.sort_values("seq_len")
                ax.plot(runs["seq_len"], runs["projected_ms"], linestyle=(0, (6, 2 + 2 * i)),
                        color=color(variant), label=f"{variant}, {link} (projected)")
                if i == 0:
                    for n, ms, devices in zip(runs["seq_len"], runs["projected_ms"],
                                              runs["devices"]):
                        ax.annotate(f"{devices}", (n, ms), fontsize=6, xytext=(2, 3),
                                    textcoords="offset points", color=color(variant))
        ax.set_title("dashed: projected, numbers = devices", fontsize=8)
    return _finish(fig, [ax], empty, "latency measurements")


def figure6_loss_vs_compute(curve: pd.DataFrame):
    """Test loss against training FLOPs, one line per trained model (mean and 95% interval over
    seeds; a model's seeds share their FLOP counts)."""
    fig, (ax,) = _axes("Figure 6: loss vs training compute", "training FLOPs", "test loss",
                       logy=False)
    ax.set_xscale("log")
    if not curve.empty:
        _plot_models(ax, curve[curve["train_flops"] > 0], "train_flops", "val_loss")  # log x
    return _finish(fig, [ax], curve.empty, "compute curves")


def figure7_context_window(context: pd.DataFrame):
    """Loss on the same final tokens as the prompt before them grows (Figure 7 right)."""
    fig, (ax,) = _axes("Figure 7 (right): loss vs context length",
                       "context length: prompt + scored tokens", "test loss on the scored tokens",
                       logy=False)
    if not context.empty:
        _plot_models(ax, context, "context_len", "loss")
    return _finish(fig, [ax], context.empty, "context-window evaluations")


def table2_perplexity(table: pd.DataFrame):
    """Perplexity vs evaluation length: ours (left: the mean over seeds with its 95% interval as
    error bars, from the table's aggregate rows) beside the paper's (right)."""
    fig, (ours, paper) = _axes("Table 2: test perplexity by evaluation length",
                               "evaluation length (tokens)", "perplexity", ncols=2)
    ours.set_title("this run")
    paper.set_title("paper (lengths as published)")
    if not table.empty:
        means = table[table["statistic"] == "mean"]
        if "eval_attention" not in means:
            means = means.assign(eval_attention="native")
        colors = {}
        for (variant, train_len, attention), run in means.groupby(
                ["variant", "train_len", "eval_attention"]):
            run = run.sort_values("eval_len")
            color = colors.setdefault((variant, train_len), f"C{len(colors)}")
            bca = attention == "blockwise_causal"  # beyond the training length, the paper's protocol
            line = ours.errorbar(run["eval_len"], run["perplexity_mean"], capsize=3,
                                 fmt="s--" if bca else "o-", color=color,
                                 yerr=[run["perplexity_mean"] - run["ci_low"],
                                       run["ci_high"] - run["perplexity_mean"]],
                                 label=f"{variant} (train {train_len}, "
                                       f"{int(run['n_seeds'].iloc[0])} seeds"
                                       f"{', blockwise causal' if bca else ''})").lines[0]
            if bca:
                continue
            published = run.dropna(subset=["paper_perplexity"])
            if len(published):
                paper.plot(published["paper_eval_len"], published["paper_perplexity"], "o-",
                           color=line.get_color(),
                           label=f"{published['paper_model'].iloc[0]} "
                                 f"(train {published['paper_train_len'].iloc[0]})")
    return _finish(fig, [ours, paper], table.empty, "perplexity evaluations")


def distributed_bytes(distributed: pd.DataFrame):
    """MiB each rank sends per attention call vs N, by world size (paper: constant in N)."""
    fig, (ax,) = _axes("Sequence-parallel communication per rank", "sequence length N (tokens)",
                       "MiB sent per rank per call", logy=False)
    if not distributed.empty:
        for p, runs in distributed.groupby("world_size"):
            runs = runs.sort_values("seq_len")
            ax.plot(runs["seq_len"], runs["bytes_sent_per_rank"] / 2**20, "o-", label=f"{p} ranks")
    return _finish(fig, [ax], distributed.empty, "distributed runs")


def attention_graph(graph: pd.DataFrame):
    """Attention layers a token needs to reach every token up to d positions back, by variant
    (the running maximum over distances of the shortest-path layer counts)."""
    fig, (ax,) = _axes("Dependency path length in the stacked attention graph",
                       "distance d (tokens)", "layers to reach every token within d", logy=False)
    if not graph.empty:
        for variant, rows in graph[graph["distance"] > 0].groupby("variant"):
            rows = rows.sort_values("distance")
            ax.step(rows["distance"], rows["layers"].cummax(), where="post", label=variant)
        ax.yaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, [ax], graph.empty, "attention-graph analysis")


def model_size(sizes: pd.DataFrame):
    """Figure 7 (left): test loss vs parameters per registry name (seed means with 95% interval
    error bars), with the fitted power law dashed. The paper shows a power law from 125M to 2.7B
    parameters without publishing its values, so only the trend can be compared."""
    fig, (ax,) = _axes("Figure 7 (left): test loss vs model size", "parameters",
                       "test loss at the training length", logy=True)
    ax.set_xscale("log")
    if not sizes.empty:
        for i, (name, rows) in enumerate(sizes.groupby("name")):
            p, mean, low, high = _seed_means(rows, "params", "loss")
            ax.errorbar(p, mean, yerr=[[m - lo for m, lo in zip(mean, low)],
                                       [hi - m for m, hi in zip(mean, high)]],
                        fmt="o", color=f"C{i}", capsize=3,
                        label=f"{name} ({rows['seed'].nunique()} seeds)")
            alpha, a = rows["fit_exponent"].iloc[0], rows["fit_coefficient"].iloc[0]
            if alpha == alpha:
                ax.plot(p, [a * x ** -alpha for x in p], "--", color=f"C{i}",
                        label=f"{name}: loss = {a:.3g} N^-{alpha:.3f}")
    return _finish(fig, [ax], sizes.empty, "model-size runs")


def recall(results: pd.DataFrame):
    """The trained recall benchmark: accuracy vs key-query distance per variant (mean over seeds,
    95% interval shaded) with its ceiling dashed (the accuracy of a model exact wherever the
    pattern connects the pair to its query within the model's depth, guessing elsewhere), beside
    the layers each pattern needs to reach that distance from the last position (the
    attention-graph analysis at the benchmark's own length and heads; the model's depth dashed)."""
    fig, (acc, graph) = _axes("Multi-query associative recall: trained accuracy vs what the "
                              "pattern can reach", "key-query distance (tokens)", "accuracy",
                              logy=False, ncols=2)
    graph.set_ylabel("layers to reach the key (attention graph)")
    acc.set_ylim(-0.05, 1.05)
    if not results.empty:
        top = results["layers_to_reach"].max(skipna=True)  # unreachable: one row above the rest
        top = (top if top == top else results["n_layer"].iloc[0]) + 1
        for i, (variant, rows) in enumerate(results.groupby("variant")):
            d, mean, low, high = _seed_means(rows, "distance", "accuracy")
            seeds = rows["seed"].nunique()
            acc.plot(d, mean, "o-", color=f"C{i}", label=f"{variant} ({seeds} seeds)")
            if seeds > 1:
                acc.fill_between(d, low, high, color=f"C{i}", alpha=0.2, lw=0)
            reach = rows.drop_duplicates("distance").sort_values("distance")  # per-distance theory
            if "ceiling" in reach:
                acc.plot(reach["distance"], reach["ceiling"], "--", color=f"C{i}", lw=1,
                         label=f"{variant}: ceiling (connected placements)")
            graph.plot(reach["distance"], reach["layers_to_reach"], "o-", color=f"C{i}",
                       label=variant)
            unreachable = reach[reach["layers_to_reach"].isna()]
            if len(unreachable):  # no path at any depth: drawn as x on the row above the others
                graph.plot(unreachable["distance"], [top] * len(unreachable), "x", ms=9,
                           color=f"C{i}", label=f"{variant}: no path at any depth")
        if "chance" in results:
            acc.axhline(results["chance"].iloc[0], color="k", ls=":", lw=1,
                        label="chance (1 / values)")
        graph.axhline(results["n_layer"].iloc[0], color="k", ls="--", lw=1,
                      label=f"model depth ({results['n_layer'].iloc[0]} layers)")
        graph.yaxis.get_major_locator().set_params(integer=True)
    return _finish(fig, [acc, graph], results.empty, "recall runs")


def passkey(results: pd.DataFrame):
    """Passkey retrieval accuracy vs context length (mean over depths), one line per model."""
    fig, (ax,) = _axes("Passkey retrieval", "context length (tokens)", "accuracy", logy=False)
    ax.set_ylim(-0.05, 1.05)
    if not results.empty:
        mean = results.groupby(["variant", "train_len", "context_len"], as_index=False)["accuracy"]
        _plot_models(ax, mean.mean(), "context_len", "accuracy")
    return _finish(fig, [ax], results.empty, "passkey evaluations")


def decode_latency(decode: pd.DataFrame):
    """Per generated token: one attention layer's decode step (left) and its cache (right) vs the
    context length, one line per variant and layer shape (benchmarks/bench_decode.py)."""
    fig, axes = _axes("Decoding one token after N tokens of context", "context length N (tokens)",
                      "ms per token (one layer)", ncols=2)
    axes[1].set_ylabel("cache bytes (one layer)")
    ok = decode[decode["status"] == "ok"] if not decode.empty else decode
    colors, styles = {}, {}  # a colour per variant, a line style per layer shape
    for (shape, variant), rows in ok.groupby(["shape", "variant"]) if not ok.empty else []:
        rows = rows.sort_values("context_len")
        style = dict(color=colors.setdefault(variant, f"C{len(colors)}"),
                     **styles.setdefault(shape, [dict(marker="o", ls="-"), dict(marker="s", ls="--"),
                                                 dict(marker="^", ls=":")][len(styles) % 3]))
        label = f"{variant} ({shape}: H={rows['heads'].iloc[0]}, D={rows['head_dim'].iloc[0]})"
        schedule = rows["schedule"].dropna().iloc[-1] if "schedule" in rows and rows["schedule"].notna().any() else ""
        if schedule:  # LongNet: how its schedule met the context (paper: widest segment covers it)
            label += f", {schedule} schedule"
        axes[0].plot(rows["context_len"], rows["ms_per_token"], label=label, **style)
        axes[1].plot(rows["context_len"], rows["cache_bytes"], label=label, **style)
    return _finish(fig, axes, ok.empty, "decoding benchmark")


FIGURES = ("figure5_latency", "figure6_loss_vs_compute", "figure7_context_window",
           "table2_perplexity", "distributed_bytes", "attention_graph", "recall", "model_size",
           "passkey")


def draw_figures(tables: dict[str, pd.DataFrame]) -> dict:
    """Every figure, by name (the file name under results/figures/)."""
    return {
        "figure5_latency": figure5_latency(tables["latency"], tables["distributed"],
                                           tables["latency_projected"]),
        "figure6_loss_vs_compute": figure6_loss_vs_compute(tables["loss_vs_compute"]),
        "figure7_context_window": figure7_context_window(tables["context_window"]),
        "table2_perplexity": table2_perplexity(tables["table2_perplexity"]),
        "distributed_bytes": distributed_bytes(tables["distributed"]),
        "attention_graph": attention_graph(tables["attention_graph"]),
        "recall": recall(tables["recall"]),
        "model_size": model_size(tables["model_size"]),
        "passkey": passkey(tables["passkey"]),
    }
