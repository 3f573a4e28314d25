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
    # unless it is a training output its state directory holds as is: republishing would give
    # the same file again, so only training the model again can change it
    model_dir = error.path.parent
    same = [state for state in sorted(model_dir.glob("state-*"))
            if error.path.is_file() and (state / error.path.name).is_file()
            and (state / error.path.name).read_bytes() == error.path.read_bytes()]
    if error.damaged and same:
        sys.exit(f"{error}; the training run wrote it so (its state directory {same[0]} holds "
                 f"the same file): delete the model directory {model_dir} and run the same "
                 "command again to train that model again")
    sys.exit(error.set_aside())
for name, df in tables.items():
    write_csv(df, snakemake.output[name])  # noqa: F821
    print(f"{name}: {len(df)} rows")
