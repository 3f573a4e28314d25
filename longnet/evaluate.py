"""Evaluate trained LMs: perplexity vs length (Table 2), context window (Figure 7 right), passkey.

    perplexity(ckpt, data_dir, eval_lens=[256, 1024, 4096])      -> DataFrame, one row per length
    context_window(ckpt, data_dir, prompt_lens=[0, 256, 1024])   -> DataFrame, one row per prompt
    passkey(ckpt, context_lens=[256, 1024], depths=[0.1, 0.5, 0.9])  -> DataFrame
(loss vs training FLOPs, Figure 6, is measured during training: train.py's compute_curve.csv.)

Every row says which attention produced it in `eval_attention`: "native" (the model's own
attention, at any length) or "blockwise_causal". Beyond its training length every model is
evaluated both ways (`eval_attentions`): natively, and with blockwise causal attention as the
paper did "when the input is longer than the maximum length that the models support" (section
4.2): each query sees its own block of train_len tokens and the whole previous block, causally,
through the model's own attention inside that window (the registered variant "blockwise_causal"
with inner = the model's attention; dense for vanilla). Rows carry the model's variant / params /
train length / tokens seen / seed and the `longnet.provenance` columns.
"""

import json
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from longnet.checkpoint import load_checkpoint
from longnet.data import check_same_corpus, get_tokenizer, load_split
from longnet.model import LanguageModel, ModelConfig, mixed_precision
from longnet.provenance import provenance
from longnet.variants import build, schedule_columns

EVAL_ATTENTIONS = ("native", "blockwise_causal")


def load_model(checkpoint, device="cpu", data_dir=None):
    """The model of a checkpoint written by longnet.train, in eval mode, and the checkpoint dict.
    data_dir: the corpus it is about to be scored on, refused unless it is the one the model was
    trained on (longnet.data.check_same_corpus)."""
    state = load_checkpoint(checkpoint, map_location=device)  # verified: names a damaged file
    if data_dir is not None:
        check_same_corpus(state["manifest"], data_dir, str(checkpoint))
    model = LanguageModel(ModelConfig(**state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def eval_attentions(train_len: int, length: int) -> tuple[str, ...]:
    """The attentions a model trained at train_len is evaluated with at `length`: its own
    ("native"), and beyond its training length also "blockwise_causal" (the paper's protocol)."""
    return EVAL_ATTENTIONS if length > train_len else EVAL_ATTENTIONS[:1]


def context_prompts(prompt_lens, n_final: int, train_len: int) -> list[int]:
    """The prompt lengths of the context-window evaluation a model trained at train_len gets:
    those whose prompt and scored tokens fit inside its training length (P + n_final <=
    train_len), so its own pattern, as trained, connects the scored tokens to the prompt."""
    return [p for p in prompt_lens if p + n_final <= train_len]


def _use_attention(model, state: dict, eval_attention: str) -> None:
    cfg = state["model_config"]
    if eval_attention == "blockwise_causal":
        model.set_attention(build("blockwise_causal", num_heads=cfg["n_head"],
                                  block=state["train_config"]["seq_len"], inner=cfg["attention"],
                                  inner_params=dict(cfg["attention_params"])))
    else:
        model.set_attention(build(cfg["attention"], num_heads=cfg["n_head"],
                                  **cfg["attention_params"]))


def spread_starts(n_tokens: int, span: int, count: int) -> np.ndarray:
    """`count` start offsets of spans of `span` (+1 target) tokens spread evenly over n_tokens."""
    if span + 1 > n_tokens:
        raise ValueError(f"a window of {span} tokens does not fit in {n_tokens} tokens")
    return np.linspace(0, n_tokens - span - 1, count).astype(np.int64)


@torch.no_grad()
def sequence_loss(model, tokens, seq_len: int, max_tokens: int, device="cpu",
                  batch_tokens: int = 16384, score_last: int | None = None,
                  starts=None, per_window: list | None = None) -> tuple[float, int]:
    """Mean next-token loss (nats) over windows of seq_len tokens; returns (loss, tokens scored).
    per_window: a list that receives each window's mean loss, in the order of `starts`.

    Windows begin at `starts`, or, by default, max_tokens // seq_len windows (at least one) spread
    evenly over `tokens` (a corpus split is files in path-hash order: a prefix would be a handful
    of files). score_last: score only the last this-many positions of each window (the rest is
    context); None scores every position.
    """
    was_training = model.training
    model.eval()
    if starts is None:
        starts = spread_starts(len(tokens), seq_len, max(1, max_tokens // seq_len))
    starts = np.asarray(starts)
    if starts.min() < 0 or starts.max() + seq_len + 1 > len(tokens):
        raise ValueError(f"windows of seq_len={seq_len} do not fit in {len(tokens)} tokens")
    per_batch = max(1, batch_tokens // seq_len)
    total, count = 0.0, 0
    for b in range(0, len(starts), per_batch):
        idx = starts[b:b + per_batch, None] + np.arange(seq_len + 1)
        window = torch.from_numpy(tokens[idx].astype(np.int64)).to(device)
        with mixed_precision(device):  # bf16 on CUDA, as trained; the loss below in float32
            logits = model(window[:, :-1])
        targets = window[:, 1:]
        if score_last is not None:
            logits, targets = logits[:, -score_last:], targets[:, -score_last:]
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        total += losses.sum().item()
        count += targets.numel()
        if per_window is not None:
            per_window.extend(losses.view(targets.shape).mean(1).tolist())
    model.train(was_training)
    return total / count, count


def _model_columns(state: dict) -> dict:
    tc = state["train_config"]
    return dict(variant=tc["attention"], params=json.dumps(tc["attention_params"], sort_keys=True),
                train_len=tc["seq_len"], tokens_seen=state["tokens_seen"], seed=tc["seed"])


def _provenance(state: dict, **eval_args) -> dict:
    return provenance(dict(train_config=state["train_config"], evaluation=eval_args))


def perplexity(checkpoint, data_dir, eval_lens, max_tokens: int = 65536, split: str = "test",
               device="cpu", batch_tokens: int = 16384) -> pd.DataFrame:
    """Test perplexity of a checkpoint at each evaluation length.

    Every length scores the same tokens: max_tokens // max(eval_lens) chunks (at least one) of
    max(eval_lens) tokens spread evenly over the split, each tiled by windows of the length (a
    length that does not divide the longest leaves the chunk's tail unscored). The loss is the
    mean over every position of every window; loss_se its standard error over the chunks (the
    sd of the chunks' mean losses / sqrt(chunks): the test set's sampling noise); chunk_losses
    the chunks' mean losses (JSON), the same chunks for every model, so a comparison of two
    models measures the noise of their difference (analysis.tables.claims).
    Columns: variant, params, train_len, eval_len, eval_attention, loss, loss_se, chunk_losses, perplexity,
    tokens_evaluated, tokens_seen, seed, split, schedule, widest_segment, + provenance.
    """
    model, state = load_model(checkpoint, device, data_dir)
    tokens = load_split(data_dir, split, verify=True)
    prov = _provenance(state, kind="perplexity", eval_lens=list(eval_lens), max_tokens=max_tokens,
                       split=split)
    longest = max(eval_lens)
    chunks = spread_starts(len(tokens), longest, max(1, max_tokens // longest))
    rows = []
    for L in eval_lens:
        starts = (chunks[:, None] + np.arange(longest // L) * L).ravel()
        for attention in eval_attentions(state["train_config"]["seq_len"], L):
            _use_attention(model, state, attention)
            windows = []
            loss, n = sequence_loss(model, tokens, L, max_tokens, device, batch_tokens,
                                    starts=starts, per_window=windows)
            per_chunk = np.asarray(windows).reshape(len(chunks), -1).mean(1)
            se = per_chunk.std(ddof=1) / math.sqrt(len(chunks)) if len(chunks) > 1 else math.nan
            rows.append(dict(_model_columns(state), eval_len=L, eval_attention=attention,
                             loss=loss, loss_se=se, chunk_losses=json.dumps(per_chunk.tolist()),
                             perplexity=math.exp(loss),
                             tokens_evaluated=n, split=split, **_attention_columns(model, L),
                             **prov))
    return pd.DataFrame(rows)


def _attention_columns(model, length: int) -> dict:
    """The schedule columns of the attention a row was evaluated with (longnet.variants); for
    blockwise causal, its inner attention over the windows of two blocks it runs on."""
    attend = model.blocks[0].attn.attend
    if getattr(attend, "inner_variant", None) is not None:
        return schedule_columns(attend.inner_variant, min(length, 2 * attend.block))
    return schedule_columns(attend, length)


def context_window(checkpoint, data_dir, prompt_lens, n_final: int = 128, n_windows: int = 16,
                   split: str = "test", device="cpu", batch_tokens: int = 16384) -> pd.DataFrame:
    """Loss on a fixed set of final tokens as the prompt before them grows (Figure 7, right).

    n_windows spans of n_final tokens, spread evenly over the split, are scored after prompts of
    each length in prompt_lens (the same spans for every prompt length and every model). A
    model gets the prompts that fit its training length with the scored tokens
    (`context_prompts`), evaluated natively: the curve measures its use of context it was
    trained to reach, not a segment alignment or an extrapolation.
    Columns: variant, params, train_len, prompt_len, context_len (prompt + n_final),
    eval_attention, loss, perplexity, tokens_evaluated, tokens_seen, seed, split, schedule,
    widest_segment, + provenance.
    """
    model, state = load_model(checkpoint, device, data_dir)
    tokens = load_split(data_dir, split, verify=True)
    longest = max(prompt_lens) + n_final
    if longest + 1 > len(tokens):
        raise ValueError(f"prompt_lens up to {max(prompt_lens)} + n_final={n_final} do not fit "
                         f"in the {split} split ({len(tokens)} tokens)")
    # span ends (exclusive), evenly spread, each with room for the longest prompt before it
    ends = spread_starts(len(tokens), longest, n_windows) + longest
    prov = _provenance(state, kind="context_window", prompt_lens=list(prompt_lens),
                       n_final=n_final, n_windows=n_windows, split=split)
    rows = []
    _use_attention(model, state, "native")
    for P in context_prompts(prompt_lens, n_final, state["train_config"]["seq_len"]):
        L = P + n_final
        loss, n = sequence_loss(model, tokens, L, 0, device, batch_tokens, score_last=n_final,
                                starts=ends - L)
        rows.append(dict(_model_columns(state), prompt_len=P, context_len=L,
                         eval_attention="native", loss=loss, perplexity=math.exp(loss),
                         tokens_evaluated=n, split=split, **_attention_columns(model, L), **prov))
    return pd.DataFrame(rows)


# Passkey retrieval, phrased as code (the models are trained on source code): a key assigned once
# somewhere in a long run of comment lines, asked for again at the end.
PASSKEY_FILLER = "# The grass is green. The sky is blue. The sun is yellow. Here we go.\n"
PASSKEY_NEEDLE = "PASS_KEY = {key}\n"
PASSKEY_QUERY = "\nprint(PASS_KEY)\nPASS_KEY = "


def passkey_prompt(tokenizer, context_len: int, depth: float, key: str):
    """(prompt tokens, key tokens): filler with the needle at `depth` (0 = start, 1 = end) and the
    query at the end, trimmed so prompt + key is exactly context_len tokens."""
    needle = tokenizer.encode(PASSKEY_NEEDLE.format(key=key))
    query = tokenizer.encode(PASSKEY_QUERY)
    answer = tokenizer.encode(key)
    n_filler = context_len - len(needle) - len(query) - len(answer)
    if n_filler < 0:
        raise ValueError(f"context_len={context_len} is too short for the passkey prompt "
                         f"(needs at least {context_len - n_filler})")
    unit = tokenizer.encode(PASSKEY_FILLER)
    whole, part = divmod(n_filler, len(unit))
    # whole filler lines after a partial first one; the needle goes between two lines
    filler = unit[len(unit) - part:] + unit * whole
    at = part + round(depth * whole) * len(unit)
    return filler[:at] + needle + filler[at:] + query, answer


@torch.no_grad()
def passkey(checkpoint, context_lens, depths=(0.1, 0.5, 0.9), trials: int = 10, seed: int = 0,
            device="cpu") -> pd.DataFrame:
    """Passkey retrieval accuracy vs context length and needle depth.

    A trial hides a random 5-digit key; it counts as retrieved when the model's greedy next tokens
    after the query are exactly the key (checked in one teacher-forced pass: greedy decoding
    returns the key exactly when every key token is the argmax given the ones before it).
    Columns: variant, params, train_len, context_len, depth, mode, accuracy, token_accuracy
    (fraction of key tokens predicted), trials, tokens_seen, seed (the model's), passkey_seed,
    + provenance.
    """
    model, state = load_model(checkpoint, device)
    tokenizer = get_tokenizer(state["manifest"]["tokenizer"])
    rng = np.random.default_rng(seed)
    prov = _provenance(state, kind="passkey", context_lens=list(context_lens),
                       depths=list(depths), trials=trials, passkey_seed=seed)
    rows = []
    for L in context_lens:
        mode = eval_attentions(state["train_config"]["seq_len"], L)[-1]  # BCA beyond train_len
        _use_attention(model, state, mode)
        for depth in depths:
            exact, correct_tokens, total_tokens = 0, 0, 0
            for _ in range(trials):
                key = str(rng.integers(10000, 100000))
                prompt, answer = passkey_prompt(tokenizer, L, depth, key)
                x = torch.tensor([prompt + answer], device=device)
                predicted = model(x[:, :-1])[0, len(prompt) - 1:].argmax(-1).tolist()
                hits = sum(p == a for p, a in zip(predicted, answer))
                exact += hits == len(answer)
                correct_tokens += hits
                total_tokens += len(answer)
            rows.append(dict(_model_columns(state), context_len=L, depth=depth, eval_attention=mode,
                             accuracy=exact / trials, token_accuracy=correct_tokens / total_tokens,
                             trials=trials, passkey_seed=seed, **prov))
    return pd.DataFrame(rows)
