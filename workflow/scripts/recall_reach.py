"""Snakemake job: for one recall variant, the share of the held-out answers at each distance whose
pair token the pattern connects to its query within the model's depth (no training).

The attention graph's `layers_to_reach` looks from the last position only; a pattern with
aligned segments (LongNet's) connects a pair and its query only when both fall in the same
segment of some branch, so at one distance some placements are connected and others are not at
any depth. A model that guesses uniformly where no path exists scores at most
reachable + (1 - reachable) x chance; tables.recall writes that as `ceiling` beside the accuracy.
"""
import json
import sys

import pandas as pd

from analysis.attention_graph import layer_matrix
from analysis.io import write_csv
from baselines import load_modules
from longnet.provenance import provenance
from longnet.recall import RecallTask, answer_positions

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
params = snakemake.params  # noqa: F821
load_modules(params.modules)
recall, spec = params.recall, params.spec
task = RecallTask(seq_len=recall["seq_len"], **recall["task"])
n_layer, heads = recall["model"]["n_layer"], recall["model"]["n_head"]
layers = layer_matrix(spec["name"], spec["params"], seq_len=task.seq_len, heads=heads)
prov = provenance(dict(recall=recall, spec=spec))
rows = []
for distance in recall["distances"]:
    # the very sequences recall_accuracy scores (same n, seed, batch)
    queries = answer_positions(task, distance, n=recall["eval_sequences"], seed=params.eval_seed)
    connected = layers[queries, queries - distance] <= n_layer
    rows.append(dict(variant=spec["id"], params=json.dumps(spec["params"], sort_keys=True),
                     distance=distance, seq_len=task.seq_len, n_layer=n_layer,
                     answers=len(queries), reachable=connected.float().mean().item(), **prov))
    print(f"distance {distance}: {rows[-1]['reachable']:.3f} of {len(queries)} answers connected")
write_csv(pd.DataFrame(rows), snakemake.output[0])  # noqa: F821
