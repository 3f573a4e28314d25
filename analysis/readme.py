"""results/README.md: every result file, what it holds, its columns and the command that made it.

The descriptions are the `snakemake --report` captions (workflow/report/{tables,figures}/*.rst),
so the report and the README never disagree; the columns are read from the tables themselves.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

MAIN_COMMAND = "snakemake --cores 2"


def caption(captions_dir, kind: str, name: str) -> str:
    return (Path(captions_dir) / kind / f"{name}.rst").read_text().strip()


def table2_markdown(table2: pd.DataFrame) -> str:
    """Ours and the paper's perplexity side by side, one row per model, one column per eval length."""
    if table2.empty:
        return "(no perplexity evaluations in this run)"
    cell = table2.assign(value=[f"{p:.2f}" + (f" ({q:.2f})" if pd.notna(q) else "")
                                for p, q in zip(table2["perplexity"], table2["paper_perplexity"])])
    wide = cell.pivot_table(index=["variant", "train_len"], columns="eval_len", values="value",
                            aggfunc="first").reset_index()
    header = ["variant", "train len"] + [f"eval {c}" for c in wide.columns[2:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
              for row in wide.itertuples(index=False)]
    return "\n".join(lines)


def results_readme(tables: dict[str, pd.DataFrame], figures: list[str], captions_dir) -> str:
    """The text of results/README.md for these tables (name -> DataFrame) and figure names."""
    out = [
        "# Results",
        "",
        f"Made by `{MAIN_COMMAND}` from the repository root (default configuration "
        "`workflow/configs/default.yaml`); the HTML report by "
        "`snakemake --report results/report.html`. What made this run (git commit, torch "
        "version, device, date, config hash and the whole configuration): `provenance.json`. "
        "Per-job intermediates are under `results/work/` and logs under `results/logs/` "
        "(neither committed). Any single file below is remade by naming it: "
        f"`{MAIN_COMMAND} <path>`.",
        "",
        "## Table 2: test perplexity, ours (paper's in parentheses, lengths scaled)",
        "",
        table2_markdown(tables.get("table2_perplexity", pd.DataFrame())),
        "",
        "## Figures (rule `figures`)",
        "",
    ]
    for name in figures:
        out += [f"### figures/{name}.png", "", caption(captions_dir, "figures", name), "",
                f"![{name}](figures/{name}.png)", ""]
    out += ["## Tables (rule `tables`, one row per measurement)", ""]
    for name, df in tables.items():
        columns = ", ".join(f"`{c}`" for c in df.columns) or "(empty in this run)"
        out += [f"### tables/{name}.csv", "", caption(captions_dir, "tables", name), "",
                f"{len(df)} rows. Columns: {columns}.", ""]
    return "\n".join(out)
