"""Snakemake job: per-device latency projected toward 1B tokens over each configured link, and the
cost model checked against the measured multi-rank runs (longnet.cost_model)."""
import sys

import pandas as pd

from analysis.io import write_csv
from analysis.tables import read_csvs
from longnet.cost_model import MODELLED, project, validate

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
cost, variants = snakemake.params.cost_model, snakemake.params.variants  # noqa: F821
profile = read_csvs(snakemake.input.profile)  # noqa: F821
measured_runs = read_csvs(snakemake.input.measured)  # noqa: F821

# Rates come from the first configured variant of each modelled kind (longnet, vanilla) that has
# successful cells in the mode projected; a kind with none (e.g. every cell timed out) is left out.
first_id = {}
for v in variants:
    first_id.setdefault(v["name"], v["id"])
ok = profile[(profile["status"] == "ok") & (profile["mode"] == cost["mode"])] if len(profile) \
    else profile
modelled = [name for name in MODELLED if len(ok) and first_id.get(name) in set(ok["variant"])]
print("projecting", modelled or "nothing: no successful profiling cells of a modelled variant")
measured = ok[ok["variant"].isin([first_id[name] for name in modelled])] if modelled else ok
measured = measured.assign(variant=measured["variant"].map({first_id[n]: n for n in modelled}))
shape = {key: cost[key] for key in ("segment_lengths", "dilation_rates", "extend_schedule",
                                    "heads", "head_dim", "dtype", "mode")}
frames = [project(measured, cost["seq_lens"], cost["tokens_per_device"], link, variants=modelled,
                  **shape).assign(link=name)
          for name, link in cost["links"].items() if modelled]
frames.append(validate(measured_runs, link=cost["validation_link"])
              .assign(link="validation_link", variant="longnet"))
write_csv(pd.concat(frames, ignore_index=True), snakemake.output[0])  # noqa: F821
