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


def _plot_models(ax, df: pd.DataFrame, x: str, y: str) -> None:
    """One line per trained model (variant, training length) of y against x."""
    for (variant, train_len), run in df.groupby(["variant", "train_len"]):
        run = run.sort_values(x)
        ax.plot(run[x], run[y], "o-", label=f"{variant} (train {train_len})")


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
            ax.plot(cells["seq_len"], cells["median_ms"] / cells["batch"], "o-",
                    color=color(variant), label=f"{variant}, 1 device (measured)")
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
    """Test loss against training FLOPs, one line per trained model."""
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
    """Perplexity vs evaluation length: ours (left) beside the paper's (right)."""
    fig, (ours, paper) = _axes("Table 2: test perplexity by evaluation length",
                               "evaluation length (tokens)", "perplexity", ncols=2)
    ours.set_title("this run")
    paper.set_title("paper (lengths as published)")
    if not table.empty:
        for (variant, train_len), run in table.groupby(["variant", "train_len"]):
            run = run.sort_values("eval_len")
            line, = ours.plot(run["eval_len"], run["perplexity"], "o-",
                              label=f"{variant} (train {train_len})")
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
        axes[0].plot(rows["context_len"], rows["ms_per_token"], label=label, **style)
        axes[1].plot(rows["context_len"], rows["cache_bytes"], label=label, **style)
    return _finish(fig, axes, ok.empty, "decoding benchmark")


FIGURES = ("figure5_latency", "figure6_loss_vs_compute", "figure7_context_window",
           "table2_perplexity", "distributed_bytes", "attention_graph", "passkey")


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
        "passkey": passkey(tables["passkey"]),
    }
