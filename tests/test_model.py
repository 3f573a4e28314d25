"""The decoder LM: shapes, causality with every registered attention variant, init, config."""
import math

import pytest
import torch

import baselines
from longnet.model import SIZES, LanguageModel, ModelConfig

TINY = dict(n_layer=2, d_model=32, n_head=4, d_ff=64, max_seq_len=64)


@pytest.mark.parametrize("attention", baselines.available())
def test_causal_and_finite_with_every_variant(attention):
    torch.manual_seed(0)
    params = {"longnet": dict(segment_lengths=[8, 16], dilation_rates=[1, 2]),
              "sparse_fixed": dict(block=8, summary=2), "sparse_strided": dict(stride=8),
              "longformer": dict(window=8)}.get(attention, {})
    # params that a variant does not have are dropped, so a renamed param fails loudly here only
    params = {k: v for k, v in params.items() if k in baselines.param_defaults(attention)}
    model = LanguageModel(ModelConfig(attention=attention, attention_params=params, **TINY))
    tokens = torch.randint(0, 256, (2, 40))
    logits = model(tokens)
    assert logits.shape == (2, 40, 256) and torch.isfinite(logits).all()
    changed = tokens.clone()
    changed[:, 25:] = torch.randint(0, 256, (2, 15))
    torch.testing.assert_close(model(changed)[:, :25], logits[:, :25])
    logits.logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("positions", ["xpos", "rotary", "none"])
def test_positions_options(positions):
    model = LanguageModel(ModelConfig(positions=positions, **TINY))
    attn = model.blocks[0].attn
    assert (attn.positions is None) == (positions == "none")
    logits = model(torch.randint(0, 256, (1, 16)))
    assert torch.isfinite(logits).all()


def test_relative_positions_shift_invariant():
    """XPos and rotary see only relative positions: shifting every position changes nothing."""
    torch.manual_seed(0)
    for positions in ("xpos", "rotary"):
        model = LanguageModel(ModelConfig(positions=positions, **TINY)).double()
        tokens = torch.randint(0, 256, (1, 24))
        shifted = model(tokens, positions=torch.arange(24) + 17)
        torch.testing.assert_close(shifted, model(tokens))


def test_magneto_layout_and_init_scale():
    torch.manual_seed(0)
    cfg = dict(TINY, n_layer=6, d_model=64, d_ff=256)
    sub = LanguageModel(ModelConfig(sub_ln=True, **cfg))
    plain = LanguageModel(ModelConfig(sub_ln=False, **cfg))
    assert isinstance(sub.blocks[0].attn.inner_ln, torch.nn.LayerNorm)
    assert isinstance(sub.blocks[0].ffn.inner_ln, torch.nn.LayerNorm)
    assert isinstance(plain.blocks[0].attn.inner_ln, torch.nn.Identity)
    gain = math.sqrt(math.log(2 * 6))
    ratio = (sub.blocks[0].ffn.fc1.weight.std() / plain.blocks[0].ffn.fc1.weight.std()).item()
    assert ratio == pytest.approx(gain, rel=0.05)
    C = 64
    qkv = sub.blocks[0].attn.qkv_proj.weight.detach()
    v_ratio = (qkv[2 * C:].std() / qkv[:C].std()).item()
    assert v_ratio == pytest.approx(gain, rel=0.1)  # v scaled, q not
    # the output head is the embedding: changing it changes the logits' projection
    x = torch.randint(0, 256, (1, 4))
    with torch.no_grad():
        before = sub(x)
        sub.embed.weight[7] += torch.randn(64)
        after = sub(x)
    assert not torch.allclose(before[..., 7], after[..., 7])


def test_size_registry_and_config_errors():
    assert SIZES["base"] == dict(n_layer=12, d_model=768, n_head=12, d_ff=3072)  # the paper's
    cfg = ModelConfig.from_size("small", attention="longnet")
    assert (cfg.n_layer, cfg.d_model, cfg.attention) == (6, 384, "longnet")
    with pytest.raises(ValueError, match="allowed: tiny, small, base"):
        ModelConfig.from_size("huge")
    with pytest.raises(ValueError, match="unknown model field"):
        ModelConfig.from_size("tiny", width=3)
    with pytest.raises(ValueError, match="multiple of n_head"):
        ModelConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="available: "):
        ModelConfig(attention="nope")
    with pytest.raises(ValueError, match="allowed: xpos, rotary, none"):
        ModelConfig(positions="alibi")


def test_training_flops_per_token_counts_weights_and_attention():
    model = LanguageModel(ModelConfig(**TINY))
    d, f, v, n = 32, 64, 256, 64
    weights = 2 * (3 * d * d + d * d + 2 * d * f) + v * d
    attention = 2 * 4 * d * (n + 1) / 2 * 3.5  # layers * 4*H*D*pairs/n * (fwd + bwd)
    assert model.training_flops_per_token(n) == pytest.approx(6 * weights + attention)


def test_mixed_precision_is_bf16_autocast_on_cuda_only_and_used_by_evaluation_and_recall(monkeypatch):
    """Training, evaluation and recall share one precision rule (evaluation and recall ran fp32
    without autocast on CUDA before)."""
    from contextlib import nullcontext

    import longnet.evaluate as evaluate
    import longnet.recall as recall
    from longnet.model import mixed_precision

    import warnings
    with warnings.catch_warnings():  # a CPU-only torch disables CUDA autocast, with a warning
        warnings.simplefilter("ignore")
        on_gpu = mixed_precision("cuda")
    assert (on_gpu.device, on_gpu.fast_dtype) == ("cuda", torch.bfloat16)
    assert mixed_precision("cpu")._enabled is False
    seen = []

    def spy(device):
        seen.append(torch.device(device).type)
        return nullcontext()

    monkeypatch.setattr(evaluate, "mixed_precision", spy)
    monkeypatch.setattr(recall, "mixed_precision", spy)
    cfg = ModelConfig(vocab_size=32, n_layer=1, d_model=16, n_head=2, d_ff=32, max_seq_len=64)
    model = LanguageModel(cfg)
    tokens = torch.randint(0, 32, (200,)).numpy()
    evaluate.sequence_loss(model, tokens, 16, 64)
    task = recall.RecallTask(seq_len=16, pairs=2, keys=4, values=4, filler=4)
    rmodel = LanguageModel(ModelConfig(vocab_size=task.vocab_size, n_layer=1, d_model=16, n_head=2,
                                       d_ff=32, max_seq_len=16))
    recall.recall_accuracy(rmodel, task, distance=3, n=4)
    recall.train_recall(rmodel, task, steps=1, batch=4, lr=1e-3, warmup=0, seed=0)
    assert seen.count("cpu") >= 3
