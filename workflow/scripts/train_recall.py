"""Snakemake job: train one small model on the recall task (longnet.recall) for one variant, then
write its accuracy at every configured distance beside the attention graph's answer
(analysis.attention_graph: the layers the variant's pattern needs to reach that distance).

Two rules run it:
- `recall_lr`: one run of the learning-rate sweep (recall.lr a list): the first training seed,
  `recall.lr_sweep_steps` steps, scored on the validation split;
- `recall`: one training seed at the rate the sweep chose for this variant (longnet.recall.
  choose_lr over the recall_lr runs; recall.lr itself when it is one number), scored on the test
  split. The two splits are different sequences (longnet.recall.split_generator)."""
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from analysis.attention_graph import path_lengths
from analysis.io import write_csv
from baselines import load_modules
from longnet.model import LanguageModel, ModelConfig
from longnet.provenance import provenance
from longnet.recall import RecallTask, choose_lr, recall_accuracy, train_recall
from longnet.variants import schedule_columns

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (workflow/)
from pipeline_config import require_device  # noqa: E402
params, wildcards = snakemake.params, snakemake.wildcards  # noqa: F821
load_modules(params.modules)
torch.set_num_threads(snakemake.threads)  # noqa: F821
recall, spec = params.recall, params.spec
sweep = snakemake.rule == "recall_lr"  # noqa: F821
if sweep:
    seed, steps, split = params.sweep_seed, params.sweep_steps, "validation"
    lr = params.lrs[int(wildcards.lr_index)]
else:
    seed, steps, split = int(wildcards.seed), recall["steps"], "test"
    runs = [pd.read_csv(path) for path in snakemake.input.sweep]  # noqa: F821
    lr = choose_lr(pd.concat(runs).to_dict("records")) if runs else params.lrs[0]
print(f"{spec['id']} seed {seed}: lr {lr} ({'sweep run' if sweep else 'chosen'}), {steps} steps")
task = RecallTask(seq_len=recall["seq_len"], **recall["task"])
torch.manual_seed(seed)  # initialisation; train_recall seeds the data order
model_cfg = ModelConfig(vocab_size=task.vocab_size, attention=spec["name"],
                        attention_params=spec["params"], max_seq_len=task.seq_len,
                        **recall["model"])
require_device(params.device)  # a cluster or dry run left this check to the job
model = LanguageModel(model_cfg).to(params.device)
curve = train_recall(model, task, steps=steps, batch=recall["batch"], lr=lr,
                     warmup=min(recall["warmup"], steps), seed=seed,
                     log_every=max(1, steps // 10), device=params.device)
train_s = curve[-1]["wall_s"]
graph = path_lengths(spec["name"], spec["params"], seq_len=task.seq_len, heads=model_cfg.n_head)
layers = dict(zip(graph["distance"], graph["layers"]))
attend = model.blocks[0].attn.attend
prov = provenance(dict(recall=recall, spec=spec, seed=seed, lr=lr, steps=steps, split=split))
rows = []
for distance in recall["distances"]:
    # the same held-out sequences for every variant and seed (paired comparisons)
    accuracy = recall_accuracy(model, task, distance, n=recall["eval_sequences"],
                               seed=params.eval_seed, split=split, device=params.device)
    rows.append(dict(variant=spec["id"], name=spec["name"],
                     params=json.dumps(spec["params"], sort_keys=True), distance=distance,
                     seq_len=task.seq_len, split=split, accuracy=accuracy, chance=1 / task.values,
                     seed=seed, lr=lr, layers_to_reach=layers[distance], n_layer=model_cfg.n_layer,
                     d_model=model_cfg.d_model, n_head=model_cfg.n_head,
                     attention_flops=attend.flops(task.seq_len, model_cfg.head_dim, causal=True),
                     flops_ratio=spec["flops_ratio"], **schedule_columns(attend, task.seq_len),
                     steps=steps, final_loss=curve[-1]["loss"], train_s=train_s, **prov))
    print(f"distance {distance}: {split} accuracy {accuracy:.3f}")
write_csv(pd.DataFrame(rows), snakemake.output[0])  # noqa: F821
