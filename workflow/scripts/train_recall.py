"""Snakemake job: train one small model on the recall task (longnet.recall) for one variant and
seed, then write its accuracy at every configured distance beside the attention graph's answer
(analysis.attention_graph: the layers the variant's pattern needs to reach that distance)."""
import json
import sys

import pandas as pd
import torch

from analysis.attention_graph import path_lengths
from analysis.io import write_csv
from baselines import load_modules
from longnet.model import LanguageModel, ModelConfig
from longnet.provenance import provenance
from longnet.recall import RecallTask, recall_accuracy, train_recall

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
params = snakemake.params  # noqa: F821
load_modules(params.modules)
torch.set_num_threads(snakemake.threads)  # noqa: F821
recall, spec, seed = params.recall, params.spec, int(snakemake.wildcards.seed)  # noqa: F821
task = RecallTask(seq_len=recall["seq_len"], **recall["task"])
torch.manual_seed(seed)  # initialisation; train_recall seeds the data order
model_cfg = ModelConfig(vocab_size=task.vocab_size, attention=spec["name"],
                        attention_params=spec["params"], max_seq_len=task.seq_len,
                        **recall["model"])
model = LanguageModel(model_cfg)
curve = train_recall(model, task, steps=recall["steps"], batch=recall["batch"], lr=recall["lr"],
                     warmup=recall["warmup"], seed=seed, log_every=max(1, recall["steps"] // 10))
train_s = curve[-1]["wall_s"]
graph = path_lengths(spec["name"], spec["params"], seq_len=task.seq_len, heads=model_cfg.n_head)
layers = dict(zip(graph["distance"], graph["layers"]))
attend = model.blocks[0].attn.attend
prov = provenance(dict(recall=recall, spec=spec, seed=seed))
rows = []
for distance in recall["distances"]:
    # the same held-out sequences for every variant and seed (paired comparisons)
    accuracy = recall_accuracy(model, task, distance, n=recall["eval_sequences"],
                               seed=params.eval_seed)
    rows.append(dict(variant=spec["id"], name=spec["name"],
                     params=json.dumps(spec["params"], sort_keys=True), distance=distance,
                     seq_len=task.seq_len, accuracy=accuracy, chance=1 / task.values, seed=seed,
                     layers_to_reach=layers[distance], n_layer=model_cfg.n_layer,
                     d_model=model_cfg.d_model, n_head=model_cfg.n_head,
                     attention_flops=attend.flops(task.seq_len, model_cfg.head_dim, causal=True),
                     steps=recall["steps"], final_loss=curve[-1]["loss"], train_s=train_s, **prov))
    print(f"distance {distance}: accuracy {accuracy:.3f}")
write_csv(pd.DataFrame(rows), snakemake.output[0])  # noqa: F821
