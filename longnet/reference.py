"""Naive dilated attention written straight from the definition (longnet.dilated_attention's
docstring): per branch (w, r), segments of w tokens, head h keeping rows offset h mod r, r apart;
dense softmax among the kept rows; branches mixed by their softmax denominators.

Loops over branches, heads and segments, explicit exponentials and denominators, autograd for
gradients. Slow on purpose: it is the thing the fast implementation (and other projects'
implementations, benchmarks/peers.py) is checked against, in float64.
"""
import torch


def reference_dilated_attention(q, k, v, segment_lengths, dilation_rates, causal=True, scale=None,
                                detach_weights=False):
    batch, n, heads, dim = q.shape
    scale = dim ** -0.5 if scale is None else scale
    branch_outputs = []   # per branch: (out (B, N, H, D), denominator (B, N, H)), zero where unselected
    for w, r in zip(segment_lengths, dilation_rates):
        w = min(w, n)
        out = q.new_zeros(batch, n, heads, dim)
        denominator = q.new_zeros(batch, n, heads)
        for h in range(heads):
            offset = h % r
            for start in range(0, n, w):
                rows = list(range(start + offset, min(start + w, n), r))
                if not rows:
                    continue
                qs, ks, vs = q[:, rows, h], k[:, rows, h], v[:, rows, h]
                scores = torch.einsum("bid,bjd->bij", qs, ks) * scale
                weights = torch.exp(scores)
                if causal:
                    weights = weights * torch.ones(len(rows), len(rows), dtype=q.dtype).tril()
                total = weights.sum(-1)
                out[:, rows, h] = torch.einsum("bij,bjd->bid", weights, vs) / total[..., None]
                denominator[:, rows, h] = total
        branch_outputs.append((out, denominator))
    all_denominators = sum(d for _, d in branch_outputs)
    result = q.new_zeros(batch, n, heads, dim)
    for out, denominator in branch_outputs:
        mix = denominator / torch.where(all_denominators > 0, all_denominators, torch.ones_like(all_denominators))
        if detach_weights:
            mix = mix.detach()
        result = result + mix[..., None] * out
    return result
