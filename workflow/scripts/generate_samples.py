"""Snakemake job: one trained model continues the start of the test split; the text goes to
results/samples/<variant>_L<train_len>.txt (prompt, then the model's continuation)."""
import sys

import torch

from baselines import load_modules
from longnet.data import get_tokenizer, load_split
from longnet.evaluate import load_model
from analysis.io import write_text

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
torch.set_num_threads(snakemake.threads)  # noqa: F821
params = snakemake.params  # noqa: F821
load_modules(params.modules)
samples = params.samples
data_dir = snakemake.input.manifest.rsplit("/", 1)[0]  # noqa: F821
model, state = load_model(snakemake.input.checkpoint, params.device, data_dir)  # noqa: F821
tokenizer = get_tokenizer(state["manifest"]["tokenizer"])
test = load_split(data_dir, "test")
prompt = torch.tensor(test[:samples["prompt_tokens"]].astype("int64"), device=params.device)[None]
generator = torch.Generator(device=params.device).manual_seed(params.seed)
out = model.generate(prompt, samples["new_tokens"], temperature=samples["temperature"],
                     top_k=samples.get("top_k"), generator=generator)
spec = params.spec
header = (f"# {spec['id']} ({spec['variant']}), trained at length {spec['train_len']}: "
          f"{samples['new_tokens']} tokens after a {prompt.shape[1]}-token prompt from the test "
          f"split, temperature {samples['temperature']}, top_k {samples.get('top_k')}, "
          f"seed {params.seed}\n")
text = (f"{header}\n--- prompt ---\n{tokenizer.decode(out[0, :prompt.shape[1]].tolist())}\n"
        f"--- generated ---\n{tokenizer.decode(out[0, prompt.shape[1]:].tolist())}\n")
write_text(text, snakemake.output[0])  # noqa: F821
print(text)
