"""A Hugging Face Llama with its attention swapped to LongNet's dilated attention, by name.

    pip install -e '.[hf]'
    python examples/hf_dilated_llama.py                  # about 4 minutes on 2 CPU cores
    python examples/hf_dilated_llama.py --steps 50       # quicker

Builds one small randomly initialised LlamaForCausalLM (no download), trains two copies from the
same initial weights and the same batches on byte-level Python source (this interpreter's standard
library, longnet.data): one with transformers' "sdpa" attention, one with
`attn_implementation=register(...)`. Prints the test perplexity of both, and of the dense-trained
model with its attention swapped to dilated without further training (what a user gets by
switching an existing model's attention, `model.set_attn_implementation(name)`).
"""
import argparse
import copy
import math
import tempfile
import time

import numpy as np
import torch
import transformers

from longnet.data import load_split, prepare_corpus
from longnet.integrations.transformers import register


def batches(tokens: np.ndarray, length: int, batch: int, seed: int):
    """Endless random windows of length + 1 tokens (inputs and next-token targets)."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - length - 1, batch)
        yield torch.from_numpy(np.stack([tokens[s:s + length + 1] for s in starts]).astype(np.int64))


def train(model, tokens, steps, length, batch, lr, seed):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    model.train()
    for step, window in zip(range(steps), batches(tokens, length, batch, seed)):
        loss = model(window[:, :-1], labels=window[:, :-1].clone()).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return loss.item()


@torch.no_grad()
def perplexity(model, tokens, length, windows=16):
    """exp(mean next-token loss) over the first `windows` disjoint windows of the test split."""
    model.eval()
    ids = torch.from_numpy(np.asarray(tokens[:windows * length]).astype(np.int64)).view(windows, length)
    losses = [model(ids[i:i + 4], labels=ids[i:i + 4]).loss for i in range(0, windows, 4)]
    return math.exp(float(torch.stack(losses).mean()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segment_lengths, dilation_rates = [64, 128, 256, 512], [1, 2, 4, 8]
    name = register(segment_lengths, dilation_rates)

    with tempfile.TemporaryDirectory() as data_dir:
        prepare_corpus(data_dir, source="stdlib", max_bytes=4_000_000)
        train_tokens, test_tokens = np.asarray(load_split(data_dir, "train")), np.asarray(load_split(data_dir, "test"))
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=4,
                                      max_position_embeddings=args.length, attn_implementation="sdpa")
    torch.manual_seed(args.seed)
    dense = transformers.LlamaForCausalLM(config)
    dilated = copy.deepcopy(dense)
    dilated.set_attn_implementation(name)
    print(f"Llama {sum(p.numel() for p in dense.parameters()) / 1e6:.2f}M parameters, 8 query / 4 key-value heads; "
          f"{args.steps} steps of {args.batch} x {args.length} byte tokens; dilated schedule "
          f"w={segment_lengths} r={dilation_rates}")
    for label, model in (("dense (sdpa)", dense), (f"dilated ({name})", dilated)):
        start = time.perf_counter()
        loss = train(model, train_tokens, args.steps, args.length, args.batch, args.lr, args.seed)
        print(f"{label:26s} trained in {time.perf_counter() - start:6.1f} s, last train loss {loss:.3f}, "
              f"test perplexity {perplexity(model, test_tokens, args.length):.3f}")
    dense.set_attn_implementation(name)
    print(f"{'dense, swapped to dilated':26s} no further training,{'':22s} "
          f"test perplexity {perplexity(dense, test_tokens, args.length):.3f}")


if __name__ == "__main__":
    main()
