"""longnet.integrations.transformers: dilated attention in a Hugging Face Llama, by name.

A tiny randomly initialised LlamaForCausalLM built from a config in code (no download), with
grouped-query attention (4 query heads, 2 key/value heads)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from longnet.dilated_attention import dilated_attention  # noqa: E402
from longnet.integrations.transformers import register  # noqa: E402

N = 24
# segments of 4, 8 and 16 tokens with dilations 1, 2, 4: decoding crosses segment boundaries of
# every branch, and the r = 4 branch has offsets only some heads use
SCHEDULE = ([4, 8, 16], [1, 2, 4])


def tiny_llama(attn_implementation="sdpa", seed=0):
    config = transformers.LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      attn_implementation=attn_implementation)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def tokens(n=N, seed=1, batch=2):
    return torch.randint(0, 61, (batch, n), generator=torch.Generator().manual_seed(seed))


def test_one_dense_branch_equals_sdpa():
    name = register([64], [1], name="longnet_test_dense")
    model, ids = tiny_llama(), tokens()
    with torch.no_grad():
        dense = model(ids).logits
        model.set_attn_implementation(name)
        dilated = model(ids).logits
    torch.testing.assert_close(dilated, dense, atol=1e-5, rtol=1e-5)


def test_dilated_differs_from_dense_and_is_causal():
    name = register(*SCHEDULE, name="longnet_test_causal")
    model, ids = tiny_llama(name), tokens()
    changed = ids.clone()
    changed[:, 15:] = (changed[:, 15:] + 7) % 61
    with torch.no_grad():
        logits, changed_logits = model(ids).logits, model(changed).logits
        model.set_attn_implementation("sdpa")
        dense = model(ids).logits
    torch.testing.assert_close(changed_logits[:, :15], logits[:, :15], atol=1e-6, rtol=0)
    assert (changed_logits[:, 15:] - logits[:, 15:]).abs().max() > 1e-3
    assert (dense[:, 1:] - logits[:, 1:]).abs().max() > 1e-3  # the sparse pattern really is in use
    torch.testing.assert_close(dense[:, 0], logits[:, 0], atol=1e-5, rtol=1e-5)  # token 0 sees only itself


def test_attention_function_matches_library_with_gqa():
    """The registered function on (B, H, N, D) inputs with 2 key/value heads for 4 query heads
    equals longnet.dilated_attention on the repeated heads in (B, N, H, D) layout."""
    name = register(*SCHEDULE, name="longnet_test_function")
    function = transformers.AttentionInterface()[name]
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, N, 8, generator=g)
    k, v = torch.randn(1, 2, N, 8, generator=g), torch.randn(1, 2, N, 8, generator=g)
    out, weights = function(module, q, k, v, None, scaling=0.3)
    expected = dilated_attention(q.transpose(1, 2), k[:, [0, 0, 1, 1]].transpose(1, 2),
                                 v[:, [0, 0, 1, 1]].transpose(1, 2), *SCHEDULE, scale=0.3)
    assert weights is None and out.shape == (1, N, 4, 8)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    # the last 3 queries against the whole cache (chunked decoding) equal the forward's last rows
    last, _ = function(module, q[:, :, -3:], k, v, None, scaling=0.3)
    torch.testing.assert_close(last, expected[:, -3:], atol=1e-6, rtol=1e-6)


def test_cached_greedy_generation_equals_full_forward_argmax():
    name = register(*SCHEDULE, name="longnet_test_generate")
    model, prompt = tiny_llama(name), tokens(n=5)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=N - 5, do_sample=False, use_cache=True,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
        sequences = out.sequences
        assert sequences.shape == (2, N)
        full = model(sequences).logits
    for step, step_logits in enumerate(out.logits):
        position = 5 + step - 1  # the logits that chose token 5 + step
        assert torch.equal(sequences[:, 5 + step], full[:, position].argmax(-1))
        torch.testing.assert_close(step_logits, full[:, position], atol=1e-5, rtol=1e-5)


def test_padding_is_refused_clearly():
    name = register(*SCHEDULE, name="longnet_test_padding")
    model, ids = tiny_llama(name), tokens()
    mask = torch.ones_like(ids)
    with torch.no_grad():
        model(ids, attention_mask=mask)  # an all-ones mask is no padding: accepted
        mask[0, :3] = 0
        with pytest.raises(ValueError, match="does not support padding"):
            model(ids, attention_mask=mask)


def test_register_refuses_bad_schedules_and_names():
    with pytest.raises(ValueError, match="same length"):
        register([4, 8], [1])
    with pytest.raises(ValueError, match="name"):
        register([4], [1], name="sdpa")
