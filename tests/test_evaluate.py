"""Evaluation: blockwise causal attention, perplexity grid, context-window curve, passkey."""
import math

import numpy as np
import pytest
import torch

from longnet.data import ByteTokenizer, prepare_corpus, stdlib_dir
from longnet.evaluate import context_window, passkey, passkey_prompt, perplexity
from longnet.train import train
from longnet.variants import build

PROVENANCE = {"git_commit", "torch_version", "device", "date", "config_hash"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A vanilla model trained for a few steps at length 32 and a longnet one, on a small corpus."""
    root = tmp_path_factory.mktemp("eval")
    prepare_corpus(root / "corpus", source="dir", path=stdlib_dir() / "email",
                   extensions=(".py",), fractions=(0.6, 0.2, 0.2))
    common = dict(model_overrides=dict(n_layer=1, d_model=32, n_head=2, d_ff=64,
                                       max_seq_len=256),
                  seq_len=32, tokens_per_step=128, steps=2, eval_every=0, eval_tokens=256,
                  progress=False, peak_flops=1e11)
    train(common, root / "corpus", root / "vanilla")
    train(dict(common, attention="longnet",
               attention_params=dict(segment_lengths=[16, 32, 64], dilation_rates=[1, 2, 4])),
          root / "corpus", root / "longnet")
    return root


def reference_blockwise(q, k, v, block):
    """Dense float64 attention with the blockwise causal mask written out position by position."""
    n = q.shape[1]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    mask = (j <= i) & (j // block >= i // block - 1)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    probs = scores.masked_fill(~mask, -math.inf).softmax(-1)
    return torch.einsum("bhij,bjhd->bihd", probs, v)


@pytest.mark.parametrize("n,block", [(37, 8), (32, 8), (5, 8), (1, 4)])
def test_blockwise_causal_matches_dense_reference(n, block):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 8, dtype=torch.float64) for _ in range(3))
    out = build("blockwise_causal", num_heads=3, block=block)(q, k, v)
    torch.testing.assert_close(out, reference_blockwise(q, k, v, block))
    if n <= block:  # within one block it is ordinary causal attention
        full = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        torch.testing.assert_close(out, full.transpose(1, 2))


def test_perplexity_grid_and_modes(run):
    df = perplexity(run / "vanilla" / "checkpoint.pt", run / "corpus", [16, 32, 128],
                    max_tokens=512)
    assert {"variant", "params", "train_len", "eval_len", "eval_attention", "loss", "perplexity",
            "tokens_evaluated", "tokens_seen", "seed"} | PROVENANCE <= set(df.columns)
    # beyond its training length every model is evaluated natively and with blockwise causal
    assert list(zip(df["eval_len"], df["eval_attention"])) == [
        (16, "native"), (32, "native"), (128, "native"), (128, "blockwise_causal")]
    assert (df["train_len"] == 32).all() and (df["tokens_seen"] == 256).all()
    assert list(df["tokens_evaluated"]) == [512] * 4  # every length scores the same tokens
    np.testing.assert_allclose(df["perplexity"], np.exp(df["loss"]))
    assert (df["loss_se"] > 0).all() and (df["loss_se"] < df["loss"]).all()  # 4 chunks of 128
    # blockwise causal at a length within train_len would equal native: same tokens, same loss
    # (checked through the context-window curve below); here at least one finite, sane value
    assert df["loss"].between(0, math.log(256) + 2).all()
    ln = perplexity(run / "longnet" / "checkpoint.pt", run / "corpus", [32, 128], max_tokens=256)
    assert list(ln["eval_attention"]) == ["native", "native", "blockwise_causal"]
    assert (ln["variant"] == "longnet").all()
    assert ln["params"][0] == '{"dilation_rates": [1, 2, 4], "segment_lengths": [16, 32, 64]}'
    # LongNet's rows say its schedule: by the paper's rule, the widest segment covers 128
    assert list(ln["schedule"]) == ["paper"] * 3 and list(ln["widest_segment"]) == [64, 128, 64]
    assert ln["loss"].iloc[1] != ln["loss"].iloc[2]  # BCA runs LongNet in windows of 2 x 32


def test_blockwise_causal_runs_the_inner_pattern_in_windows_of_two_blocks():
    torch.manual_seed(0)
    n, block = 37, 8
    q, k, v = (torch.randn(1, n, 4, 8, dtype=torch.float64) for _ in range(3))
    schedule = dict(segment_lengths=[4, 8], dilation_rates=[1, 2])
    inner = build("longnet", num_heads=4, **schedule)
    bca = build("blockwise_causal", num_heads=4, block=block, inner="longnet", inner_params=schedule)
    out = bca(q, k, v)
    for start in range(0, n, block):  # block i: the inner over blocks i-1 and i, rows of block i
        lo = max(0, start - block)
        want = inner(q[:, lo:start + block], k[:, lo:start + block], v[:, lo:start + block])
        torch.testing.assert_close(out[:, start:start + block], want[:, start - lo:])
    # the pattern: block i's queries see only blocks i-1 and i, through the inner's pattern
    pattern = bca.pattern(n)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    assert not (pattern & (j // block < i // block - 1)).any()
    for start in (8, 16):  # block i's rows: the inner's pattern over the window [start - 8, start + 8)
        window = inner.pattern(16)[:, 8:]
        assert torch.equal(pattern[:, start:start + 8, start - 8:start + 8], window)
    # a dense inner is the blockwise causal mask itself
    dense = build("blockwise_causal", num_heads=4, block=block)
    torch.testing.assert_close(dense(q, k, v), reference_blockwise(q, k, v, block))


def test_context_window_scores_the_same_final_tokens(run):
    df = context_window(run / "vanilla" / "checkpoint.pt", run / "corpus", [0, 16, 96],
                        n_final=16, n_windows=4)
    # prompt 96 + 16 scored tokens do not fit the training length 32: that model skips it
    assert list(df["prompt_len"]) == [0, 16] and list(df["context_len"]) == [16, 32]
    assert list(df["eval_attention"]) == ["native", "native"]
    assert (df["tokens_evaluated"] == 64).all()
    assert PROVENANCE <= set(df.columns)


def test_context_prompts_fit_the_training_length():
    from longnet.evaluate import context_prompts

    assert context_prompts([0, 64, 448, 1984], 64, 2048) == [0, 64, 448, 1984]
    assert context_prompts([0, 64, 448, 1984], 64, 512) == [0, 64, 448]
    assert context_prompts([0, 64, 448, 1984], 64, 128) == [0, 64]


def test_passkey_prompt_and_rows(run):
    tok = ByteTokenizer()
    for depth in (0.0, 0.5, 1.0):
        prompt, answer = passkey_prompt(tok, 1000, depth, "12345")
        assert len(prompt) + len(answer) == 1000 and tok.decode(answer) == "12345"
        text = tok.decode(prompt)
        assert text.endswith("PASS_KEY = ") and text.count("\nPASS_KEY = 12345\n") == 1
        assert abs(text.index("PASS_KEY = 12345") / len(text) - depth) < 0.1
    with pytest.raises(ValueError, match="too short"):
        passkey_prompt(tok, 10, 0.5, "12345")

    df = passkey(run / "vanilla" / "checkpoint.pt", [64, 96], depths=[0.0, 1.0], trials=2)
    assert len(df) == 4 and list(df["eval_attention"]) == ["blockwise_causal"] * 4
    assert {"variant", "train_len", "context_len", "depth", "accuracy",
            "token_accuracy"} | PROVENANCE <= set(df.columns)
    assert df["accuracy"].between(0, 1).all() and df["token_accuracy"].between(0, 1).all()
    again = passkey(run / "vanilla" / "checkpoint.pt", [64, 96], depths=[0.0, 1.0], trials=2)
    assert list(again["token_accuracy"]) == list(df["token_accuracy"])  # seeded
