"""LongNet's dilated attention in any Hugging Face transformers decoder, by name.

    from longnet.integrations.transformers import register
    name = register([2048, 4096, 8192], [1, 2, 4])
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation=name)
    # or, on a model already built: model.set_attn_implementation(name)

`register` adds an attention function to transformers' `AttentionInterface` (and a mask function to
its `AttentionMaskInterface`, so that padding reaches it and can be refused). transformers hands the
function q (B, H, N, D) and the keys/values the layer's cache holds (B, H_kv, N_kv, D):

- grouped-query attention: each key/value head serves module.num_key_value_groups query heads,
  repeated as transformers' own `repeat_kv` does (query head h reads key/value head h // groups);
- prefill (N == N_kv): `longnet.dilated_attention`, causal when the layer is;
- cached decoding (N < N_kv, the queries being the last N positions): each query at position t
  through `dilated_attention_decode` against keys and values 0..t, which equals the causal forward
  at t; so generation with a cache is exact, not an approximation;
- a padding mask (any masked key), or a custom 4D mask, is refused with a ValueError: dilated attention's segments are
  absolute positions, and padding would shift them (pad on the right and drop the mask, or run
  unpadded sequences one at a time);
- attention dropout, softcapping, sliding windows and output_attentions are refused the same way.

Positions (rotary embeddings) are the model's own; only who attends to whom changes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from longnet.dilated_attention import dilated_attention, dilated_attention_decode
from longnet.schedule import DilatedSchedule

DEFAULT_NAME = "longnet_dilated"


def _attention_function(schedule: DilatedSchedule, name: str):
    segment_lengths, dilation_rates = list(schedule.segment_lengths), list(schedule.dilation_rates)

    def longnet_dilated_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                                  value: torch.Tensor, attention_mask: torch.Tensor | None,
                                  dropout: float = 0.0, scaling: float | None = None, **kwargs):
        """transformers attention function: (B, H, N, D) in, ((B, N, H, D), None) out."""
        if attention_mask is not None:  # the mask function below passes only masks that mask something
            raise ValueError(f"attn_implementation {name!r} (LongNet dilated attention) does not support "
                             "padding or custom masks: the attention mask masks some keys. Dilated "
                             "segments are absolute positions, so pass unpadded sequences (batch only "
                             "equal lengths) and an all-ones or no attention_mask")
        if dropout:
            raise ValueError(f"attn_implementation {name!r} does not support attention dropout, got "
                             f"dropout={dropout}; set the config's attention_dropout to 0")
        for unsupported in ("softcap", "sliding_window"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(f"attn_implementation {name!r} does not support {unsupported} "
                                 f"(got {kwargs[unsupported]!r})")
        if kwargs.get("output_attentions"):
            raise ValueError(f"attn_implementation {name!r} computes no attention weights; "
                             "use output_attentions=False")
        groups = getattr(module, "num_key_value_groups", 1)
        if query.shape[1] != key.shape[1] * groups:
            raise ValueError(f"query has {query.shape[1]} heads but key has {key.shape[1]} heads with "
                             f"num_key_value_groups={groups}")
        q = query.transpose(1, 2)  # (B, N, H, D)
        k = key.repeat_interleave(groups, dim=1).transpose(1, 2)
        v = value.repeat_interleave(groups, dim=1).transpose(1, 2)
        n, n_kv = q.shape[1], k.shape[1]
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else causal
        if n == n_kv:
            out = dilated_attention(q.contiguous(), k.contiguous(), v.contiguous(), segment_lengths,
                                    dilation_rates, causal=causal, scale=scaling)
        elif n < n_kv and causal:
            first = n_kv - n  # the queries are the last n positions
            out = torch.cat([dilated_attention_decode(q[:, i:i + 1], k[:, :first + i + 1], v[:, :first + i + 1],
                                                      segment_lengths, dilation_rates, scale=scaling)
                             for i in range(n)], dim=1)
        else:
            raise ValueError(f"attn_implementation {name!r}: {n} queries against {n_kv} keys needs causal "
                             f"attention with the queries last (is_causal={causal})")
        return out, None

    return longnet_dilated_attention


def _mask_function(batch_size, q_length, kv_length, attention_mask=None, **kwargs):
    """Mask creation for the registered name: None without padding, else the 2D padding mask, which
    the attention function refuses (transformers would otherwise drop the mask silently)."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:]
    return None if attention_mask.shape[1] == kv_length and bool(attention_mask.all()) else attention_mask


def register(segment_lengths: Sequence[int], dilation_rates: Sequence[int], name: str = DEFAULT_NAME) -> str:
    """Register dilated attention with branches (segment_lengths[i], dilation_rates[i]) under `name`
    in transformers' AttentionInterface; returns the name to pass as `attn_implementation`.
    Registering a name again replaces its schedule."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    schedule = DilatedSchedule(segment_lengths, dilation_rates)
    if not isinstance(name, str) or not name or name in ("eager", "sdpa") or name.startswith(("flash", "flex", "paged")):
        raise ValueError(f"name must be a new attention implementation name, not one of transformers' own; got {name!r}")
    AttentionInterface.register(name, _attention_function(schedule, name))
    AttentionMaskInterface.register(name, _mask_function)
    return name
