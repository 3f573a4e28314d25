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
    """Every tensor it creates takes q's device and dtype. Scores a causal query may not see are
    set to -inf before a max-shifted exponential, so a NaN or Inf in a future key never reaches
    an earlier query and no score overflows; each branch keeps its log-sum-exp (log of its
    softmax denominator), and branches are mixed by exp(lse_i - logsumexp_j lse_j)."""
    batch, n, heads, dim = q.shape
    scale = dim ** -0.5 if scale is None else scale
    branch_outputs = []   # per branch: (out (B, N, H, D), lse (B, N, H)); 0 and -inf where unselected
    for w, r in zip(segment_lengths, dilation_rates):
        w = min(w, n)
        out = q.new_zeros(batch, n, heads, dim)
        lse = q.new_full((batch, n, heads), float("-inf"))
        for h in range(heads):
            offset = h % r
            for start in range(0, n, w):
                rows = list(range(start + offset, min(start + w, n), r))
                if not rows:
                    continue
                qs, ks, vs = q[:, rows, h], k[:, rows, h], v[:, rows, h]
                scores = torch.einsum("bid,bjd->bij", qs, ks) * scale
                if causal:
                    seen = torch.ones(len(rows), len(rows), dtype=torch.bool, device=q.device).tril()
                    scores = scores.masked_fill(~seen, float("-inf"))
                top = scores.amax(-1, keepdim=True)  # the diagonal is always seen: finite or NaN
                weights = torch.exp(scores - top)
                total = weights.sum(-1)
                out[:, rows, h] = torch.einsum("bij,bjd->bid", weights, vs) / total[..., None]
                lse[:, rows, h] = top[..., 0] + torch.log(total)
        branch_outputs.append((out, lse))
    merged = torch.logsumexp(torch.stack([lse for _, lse in branch_outputs]), dim=0)
    merged = torch.where(torch.isinf(merged) & (merged < 0), torch.zeros_like(merged), merged)
    result = q.new_zeros(batch, n, heads, dim)
    for out, lse in branch_outputs:
        mix = torch.exp(lse - merged)  # 0 where the branch did not select the row
        if detach_weights:
            mix = mix.detach()
        result = result + mix[..., None] * out
    return result
