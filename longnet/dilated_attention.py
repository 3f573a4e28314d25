"""Dilated attention (LongNet, Ding et al. 2023), paper-exact, on any attention kernel.

Definition (docs/definitions.md, section 1; the rule is written once, in longnet.schedule). q, k, v
are (B, N, H, D). Each branch (w, r):
- w is clipped to N; segments [i*w, min((i+1)*w, N)), the last one possibly shorter;
- head h uses offset s = h mod r and selects rows a+s, a+s+r, ... of the segment starting at a;
- dense softmax attention among the selected rows (causal: a selected key at or before the query),
  giving the branch output o_i and log-sum-exp lse_i at each selected row.
Rows are mixed by out = sum_i a_i o_i, a_i = exp(lse_i) / sum_j exp(lse_j) over the branches that
selected the row; a row no branch selects (only possible without an r = 1 branch) is 0.

How it runs. A branch is a set of independent "blocks" (one per segment and head), each a dense
attention over the block's selected rows. The blocks are strided views of the (N*H, D) view of q,
k and v (a few lattices per branch), so each lattice is one piece of longnet.block_sparse: one
strided copy into contiguous blocks, batched kernel calls, and an in-place log-sum-exp merge into
a running (output, lse) accumulator through the same view. No padding, no masks, no index
tensors on the hot path, no N x N tensor, memory linear in N.

Gradients. The mixture equals one softmax over the multiset union of the branches' key sets, so
the exact gradient (through the mixing weights too) is each block's ordinary attention backward run
with the MERGED output and MERGED lse, added back at the original rows. `exact_grad=False`
reproduces the official torchscale code instead, whose mixing weights are computed under no_grad.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .backends import default_scale, get_backend, merge_attention
from .block_sparse import Lattice, Piece, Plan, accumulation_dtype, block_sparse_attention
from .schedule import Branch, DilatedSchedule


def validate_options(causal=True, scale=None, exact_grad=True, backend="auto") -> None:
    """The keyword options of dilated attention, or a ValueError naming the bad one."""
    from .backends import BACKENDS

    for name, value in (("causal", causal), ("exact_grad", exact_grad)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is invalid; allowed: True or False")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not 0 < scale < float("inf")):
        raise ValueError(f"scale={scale!r} is invalid; allowed: a finite number > 0, or None for "
                         "1/sqrt(head_dim)")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {backend!r}")


@dataclass(frozen=True)
class BlockGroup:
    """Blocks of one branch that share a length: rows[b, t] is the flat index (position * H + head)
    of the t-th selected row of block b, so q.view(B, N*H, D).index_select(1, rows.flatten())
    gathers all of them at once. The same blocks as strided views: `lattices`, in block order."""

    lattices: tuple[Lattice, ...]
    rows: torch.Tensor  # (n_blocks, length), int64

    @property
    def n_blocks(self) -> int:
        return self.rows.shape[0]

    @property
    def length(self) -> int:
        return self.rows.shape[1]


@functools.lru_cache(maxsize=256)
def branch_blocks(n: int, heads: int, segment_length: int, dilation_rate: int,
                  device: torch.device = torch.device("cpu")) -> tuple[BlockGroup, ...]:
    """The blocks of branch (w, r) over n tokens and `heads` heads, grouped by block length.

    Full segments give at most two lengths (when w mod r != 0, offsets s < w mod r get one more
    row); the last, shorter segment at most two more. Offsets that select no row, and heads whose
    offset selects nothing in a segment (r larger than the segment), make no block.

    Row (a + s + t*r) * H + s + g*r (segment start a, offset s, head s + g*r, step t) is affine in
    (segment, s, g, t), so consecutive offsets with equal block length and head count form one
    lattice of sizes (segments, offsets, heads per offset, length).
    """
    branch = Branch(segment_length, dilation_rate)
    w, r = min(segment_length, n), dilation_rate
    by_length: dict[int, list[Lattice]] = defaultdict(list)
    for first_start, seg_len, count in branch.segments(n):
        runs: list[list[int]] = []  # [first offset, offsets, length, heads]
        for offset in branch.offsets(min(heads, seg_len)):  # an offset no head has, or past the segment, selects nothing
            shape = [len(branch.rows(seg_len, offset)), len(branch.heads_with(offset, heads))]
            if runs and runs[-1][2:] == shape:
                runs[-1][1] += 1
            else:
                runs.append([offset, 1, *shape])
        for offset, n_offsets, length, n_heads in runs:
            by_length[length].append(Lattice((first_start + offset) * heads + offset,
                                             (count, n_offsets, n_heads, length),
                                             (w * heads, heads + 1, r, r * heads)))
    return tuple(BlockGroup(tuple(lattices), torch.cat([lattice.rows(device) for lattice in lattices]))
                 for _, lattices in sorted(by_length.items()))


@functools.lru_cache(maxsize=64)
def dilated_plan(n: int, heads: int, schedule: DilatedSchedule, causal: bool,
                 device: torch.device = torch.device("cpu")) -> Plan:
    """The block-sparse plan of dilated attention: one self-attention piece per lattice of every
    branch, an r = 1 branch first when there is one. It selects every row exactly once, so it
    fills the accumulators by plain copies (no zero fill, no merge); mixing is a sum, so the
    order changes nothing but rounding."""
    ordered = sorted(schedule.branches, key=lambda branch: branch.dilation_rate != 1)
    per_branch = [[Piece.from_lattice(lattice, causal, device)
                   for group in branch_blocks(n, heads, w, r, device) for lattice in group.lattices]
                  for w, r in ordered]
    return Plan([piece for pieces in per_branch for piece in pieces], n * heads, first_stage=len(per_branch[0]))


def check_qkv(q, k, v) -> None:
    """q, k, v of one (B, N, H, D) shape and floating dtype, with H >= 1 and D >= 1, or a
    ValueError saying what is wrong."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must all have shape (B, N, H, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype and q.dtype.is_floating_point):
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[2] == 0 or q.shape[3] == 0:
        raise ValueError(f"q, k, v (B, N, H, D) need H >= 1 heads and D >= 1 per head; got "
                         f"{tuple(q.shape)}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")


def dilated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment_lengths: Sequence[int],
                      dilation_rates: Sequence[int], *, causal: bool = True, scale: float | None = None,
                      backend: str = "auto", exact_grad: bool = True) -> torch.Tensor:
    """LongNet dilated attention. q, k, v: (B, N, H, D) -> (B, N, H, D).

    segment_lengths / dilation_rates: the branches (w_i, r_i), e.g. the paper's (2048, 4096, 8192,
    16384, 32768) and (1, 2, 4, 6, 12). Any N >= 1 is allowed (N smaller than w, N not a multiple
    of w, w not a multiple of r, H not a multiple of r, r larger than the segment).
    backend: "auto" or a name from longnet.backends.BACKENDS. exact_grad=False detaches the
    mixing weights as the official code does (for comparison only).
    """
    schedule = DilatedSchedule(segment_lengths, dilation_rates)
    validate_options(causal, scale, exact_grad, backend)
    check_qkv(q, k, v)
    if q.shape[0] == 0 or q.shape[1] == 0:  # nothing to attend: an empty output that backpropagates
        return (q + k + v) * 0
    plan = dilated_plan(q.shape[1], q.shape[2], schedule, causal, q.device)
    return block_sparse_attention(q, k, v, plan, scale=scale, backend=backend, exact_grad=exact_grad)


def dilated_attention_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                             segment_lengths: Sequence[int], dilation_rates: Sequence[int], *,
                             scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Causal output for one new token, equal to the full causal forward at its position.

    q: (B, 1, H, D), the query at position t; k_cache, v_cache: (B, t + 1, H, D), every key and
    value up to and including t. For branch (w, r) the token sits in the segment starting at
    a = (t // w) * w (clipping w to the full length changes nothing for causal outputs); only the
    heads whose offset selects t, i.e. h = (t - a) mod r (mod r), see it, and they all attend the
    same rows a + s, a + s + r, ..., t. This takes the dense cache (memory grows with t);
    longnet.kv_cache.DilatedKVCache keeps only those rows (memory bounded by the schedule).
    """
    schedule = DilatedSchedule(segment_lengths, dilation_rates)
    batch, one, heads, dim = q.shape
    if one != 1 or k_cache.shape != v_cache.shape or k_cache.shape[0] != batch or k_cache.shape[2:] != q.shape[2:]:
        raise ValueError(f"decode needs q (B, 1, H, D) and caches (B, t+1, H, D); got {tuple(q.shape)}, "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    validate_options(scale=scale, backend=backend)
    if k_cache.shape[1] == 0:
        raise ValueError("decode needs a cache holding at least the new token's key and value "
                         "(k_cache, v_cache of length t + 1 >= 1); got an empty cache")
    if heads == 0 or dim == 0:
        raise ValueError(f"decode needs H >= 1 heads and D >= 1 per head; got {tuple(q.shape)}")
    kernel = get_backend(backend, q.device, q.dtype, dim)
    scale = default_scale(dim, scale)
    t = k_cache.shape[1] - 1
    acc = accumulation_dtype(q.dtype)
    out = torch.zeros(batch, heads, 1, dim, dtype=acc, device=q.device)
    lse = torch.full((batch, heads, 1), float("-inf"), dtype=acc, device=q.device)
    for branch in schedule.branches:
        start, offset = branch.locate(t)
        if offset not in branch.offsets(heads):  # no head has this offset: the branch does not see t
            continue
        head_ids = torch.tensor(branch.heads_with(offset, heads), device=q.device)
        positions = torch.tensor(branch.rows(t + 1 - start, offset), device=q.device) + start
        q_h = q[:, :, head_ids].transpose(1, 2)
        k_h = k_cache[:, positions][:, :, head_ids].transpose(1, 2)
        v_h = v_cache[:, positions][:, :, head_ids].transpose(1, 2)
        o, l = kernel.forward(q_h.contiguous(), k_h.contiguous(), v_h.contiguous(), False, scale)
        merged_o, merged_l = merge_attention(out[:, head_ids], lse[:, head_ids], o, l)
        out[:, head_ids], lse[:, head_ids] = merged_o, merged_l
    return out.transpose(1, 2).to(q.dtype)
