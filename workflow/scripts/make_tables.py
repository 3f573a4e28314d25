"""Snakemake job: check every per-job CSV against the configuration and aggregate them into the
tidy tables (under the work directory; the tables rule publishes them into results/tables/)."""
import sys

from analysis.io import write_csv
from analysis.tables import INPUT_KINDS, InputError, build_tables

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
inputs = {kind: list(snakemake.input[kind]) for kind in INPUT_KINDS}  # noqa: F821
try:
    tables = build_tables(inputs, snakemake.params.variants,  # noqa: F821
                          paper_len_scale=snakemake.params.paper_len_scale,  # noqa: F821
                          expect=snakemake.params.expect,  # noqa: F821
                          model_params=snakemake.params.model_params,  # noqa: F821
                          model_size_len=snakemake.params.model_size_len)  # noqa: F821
except InputError as error:  # a damaged input: set aside, so the next run makes it again
    sys.exit(error.set_aside())
for name, df in tables.items():
    write_csv(df, snakemake.output[name])  # noqa: F821
    print(f"{name}: {len(df)} rows")
