"""Sparse attention as a few batched dense kernel calls, merged by log-sum-exp: the one engine
behind dilated attention, the sparse baselines and the sequence-parallel path.

A pattern is a list of `Piece`s. A piece is a batch of dense blocks: block b's queries are rows
q_rows[b] of the query row space and its keys rows k_rows[b] of the key row space, where a
(B, N, H, D) tensor's row space is its (B, N*H, D) view (row = position * H + head, so a block
may mix heads and positions freely). k_rows=None means the block attends among its own query rows.
A block is full (every query sees every key) or causal on a square (query t sees keys 0..t, the
alignment every kernel agrees on). Query rows may be PAD: discarded padding that lets a ragged
block join a batch (keys are always real rows).

Merging pieces by log-sum-exp is one softmax over the multiset union of the key sets each query
sees: exactly a masked softmax when those sets are disjoint (the sparse baselines), and exactly
LongNet's mixture of branches when a key is seen by several branches (it then counts once per
branch, which is what eq. 10 of the paper computes). The gradient of that union is each piece's
ordinary kernel backward run with the MERGED output and lse (LONGNET_NOTES.md, section 1).

Performance (CPU measurements in benchmarks/): rows are gathered with index_select into contiguous
blocks (the CPU flash kernel runs about 2x slower on strided views than a gather costs); pieces
run in chunks of whole blocks, so workspace is bounded whatever N is; gather buffers are reused,
and on CPU the 16 MB chunks stay under glibc's mmap threshold, so kernel outputs reuse freed heap
instead of page-faulting fresh memory on every call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .backends import Backend, default_scale, get_backend

PAD = -1  # a query row that is padding
CHUNK_ROWS = {"cpu": 1 << 16, "cuda": 1 << 22}  # rows (times batch) per kernel call


@dataclass(frozen=True)
class Piece:
    q_rows: torch.Tensor              # (blocks, Lq) int64, PAD allowed
    k_rows: torch.Tensor | None = None  # (blocks, Lk) int64 real rows; None: the same as q_rows
    causal: bool = False              # causal on a square block

    def __post_init__(self):
        if self.causal and self.k_rows is not None and self.q_rows.shape[1] != self.k_rows.shape[1]:
            raise ValueError("a causal piece needs square blocks")
        if self.k_rows is None and bool((self.q_rows == PAD).any()):
            raise ValueError("a piece with padded query rows needs explicit k_rows")


@dataclass(frozen=True)
class _PreparedPiece:
    gather_rows: torch.Tensor        # q_rows with PAD -> row 0 (any real row: its output is dropped)
    scatter_rows: torch.Tensor       # q_rows with PAD -> the accumulator's extra row
    k_rows: torch.Tensor             # key rows (q_rows' gather rows for self blocks)
    pad: torch.Tensor | None         # (blocks, Lq) bool where q_rows is PAD, None when there is none
    causal: bool

    def chunk(self, start: int, stop: int) -> "_PreparedPiece":
        return _PreparedPiece(self.gather_rows[start:stop], self.scatter_rows[start:stop], self.k_rows[start:stop],
                              None if self.pad is None else self.pad[start:stop], self.causal)


@dataclass(frozen=True)
class Plan:
    """Pieces ready to run over a query row space of `rows_q` rows.

    first_stage: the first this-many pieces have pairwise distinct real query rows, so they are
    copied into the accumulator instead of merged. When they also select every query row with
    self blocks (LongNet's r = 1 branch), the accumulators and gradients need no zero fill.
    """

    pieces: list[Piece]
    rows_q: int
    first_stage: int = 1
    prepared: list[_PreparedPiece] = field(init=False, repr=False)
    has_pad: bool = field(init=False)
    partition_first: bool = field(init=False)

    def __post_init__(self):
        prepared = []
        for piece in self.pieces:
            pad = piece.q_rows == PAD
            has_pad = bool(pad.any())
            gather = torch.where(pad, 0, piece.q_rows) if has_pad else piece.q_rows
            scatter = torch.where(pad, self.rows_q, piece.q_rows) if has_pad else piece.q_rows
            keys = gather if piece.k_rows is None else piece.k_rows.contiguous()
            # contiguous once here, so every chunk's rows are flat views
            prepared.append(_PreparedPiece(gather.contiguous(), scatter.contiguous(), keys,
                                           pad if has_pad else None, piece.causal))
        object.__setattr__(self, "prepared", prepared)
        object.__setattr__(self, "has_pad", any(p.pad is not None for p in prepared))
        first = self.pieces[:self.first_stage]
        object.__setattr__(self, "partition_first", bool(first) and all(
            p.k_rows is None for p in first) and sum(p.q_rows.numel() for p in first) == self.rows_q)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(plan: Plan, batch: int, device: torch.device):
    """(index, prepared chunk) pairs: each piece cut into chunks of whole blocks."""
    limit = CHUNK_ROWS.get(device.type, 1 << 20) // batch
    for number, piece in enumerate(plan.prepared):
        blocks, length = piece.gather_rows.shape
        step = max(1, limit // max(length, piece.k_rows.shape[1]))
        for start in range(0, blocks, step):
            yield number, piece.chunk(start, start + step)


class _Gatherer:
    """Gathers rows into kernel layout (B*blocks, 1, L, ...), one reused buffer per slot."""

    def __init__(self, batch: int):
        self.batch = batch
        self.buffers: dict[int, torch.Tensor] = {}

    def __call__(self, slot: int, x_flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        tail = x_flat.shape[2:]
        size = self.batch * rows.numel() * x_flat[0, 0].numel()
        buffer = self.buffers.get(slot)
        if buffer is None or buffer.dtype != x_flat.dtype or buffer.numel() < size:
            buffer = self.buffers[slot] = torch.empty(size, dtype=x_flat.dtype, device=x_flat.device)
        gathered = buffer[:size].view(self.batch, rows.numel(), *tail)
        torch.index_select(x_flat, 1, rows.view(-1), out=gathered)
        return gathered.view(self.batch * rows.shape[0], 1, rows.shape[1], *tail)


def _rows_of(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Kernel layout (B*blocks, 1, L, ...) -> (B, blocks*L, ...)."""
    return x.reshape(batch, -1, *x.shape[3:])


def block_sparse_forward(q_flat, k_flat, v_flat, plan: Plan, scale: float, backend: Backend,
                         keep_partials: bool = False):
    """Merged (out, lse) over the query row space: out (B, rows_q (+1 with PAD), D) and lse, in
    float32 (float64 for float64 input); rows no piece selects are (0, -inf). With keep_partials,
    also every chunk's own (o, lse) (the detached-weights backward needs them)."""
    batch, rows_q, dim = q_flat.shape
    acc = _accumulation_dtype(q_flat.dtype)
    total = rows_q + int(plan.has_pad)
    if plan.partition_first:
        out = torch.empty(batch, total, dim, dtype=acc, device=q_flat.device)
        lse = torch.empty(batch, total, dtype=acc, device=q_flat.device)
    else:
        out = torch.zeros(batch, total, dim, dtype=acc, device=q_flat.device)
        lse = torch.full((batch, total), float("-inf"), dtype=acc, device=q_flat.device)
    gather = _Gatherer(batch)
    partials = []
    for number, piece in _chunks(plan, batch, q_flat.device):
        o, l = backend.forward(gather(0, q_flat, piece.gather_rows), gather(1, k_flat, piece.k_rows),
                               gather(2, v_flat, piece.k_rows), piece.causal, scale)
        o, l = _rows_of(o, batch), _rows_of(l, batch).to(acc)
        if keep_partials:
            partials.append((o, l))
        rows = piece.scatter_rows.view(-1)
        if number < plan.first_stage:  # nothing to merge with yet
            out.index_copy_(1, rows, o.to(acc))
            lse.index_copy_(1, rows, l)
            continue
        # running log-sum-exp merge, in place on the gathered accumulator rows; a real query row
        # always sees a key, so l is finite and the merged lse is too
        out_rows = _rows_of(gather(3, out, piece.scatter_rows), batch)
        lse_rows = lse.index_select(1, rows)
        merged_lse = torch.logaddexp(lse_rows, l)
        o = o.to(acc, copy=keep_partials)
        out_rows.mul_(torch.exp(lse_rows - merged_lse)[..., None]).add_(o.mul_(torch.exp(l - merged_lse)[..., None]))
        out.index_copy_(1, rows, out_rows)
        lse.index_copy_(1, rows, merged_lse)
    return out, lse, partials


def block_sparse_backward(dout_flat, q_flat, k_flat, v_flat, out, lse, plan: Plan, scale: float,
                          backend: Backend, partials=None):
    """(dq, dk, dv) in float32 (float64 for float64 input) over the query and key row spaces.

    out, lse: the merged forward results (out in q's dtype). partials: the forward's own (o, lse)
    per chunk for the detached-weights gradient (out = sum_i stopgrad(a_i) o_i); None for exact.
    """
    batch, rows_q, dim = q_flat.shape
    acc = _accumulation_dtype(q_flat.dtype)
    partition = plan.partition_first and k_flat.shape[1] == rows_q
    make = torch.empty if partition else torch.zeros
    dq = make(batch, rows_q, dim, dtype=acc, device=q_flat.device)
    dk, dv = (make(batch, k_flat.shape[1], dim, dtype=acc, device=q_flat.device) for _ in range(2))
    gather = _Gatherer(batch)
    partial_iter = iter(partials or ())
    for number, piece in _chunks(plan, batch, q_flat.device):
        q_b, k_b, v_b = (gather(0, q_flat, piece.gather_rows), gather(1, k_flat, piece.k_rows),
                         gather(2, v_flat, piece.k_rows))
        if partials is None:  # the identity: this piece's backward with the merged output and lse
            block_out, block_lse = gather(3, out, piece.gather_rows), gather(4, lse, piece.gather_rows)
            block_dout = gather(5, dout_flat, piece.gather_rows)
        else:  # o_i receives a_i * dout, a_i = exp(lse_i - lse) held constant
            own_out, own_lse = next(partial_iter)
            weight = torch.exp(own_lse - lse.index_select(1, piece.gather_rows.view(-1)))
            block_dout = gather(5, dout_flat, piece.gather_rows)
            block_dout.copy_((block_dout.to(acc) * weight.view(q_b.shape[:-1])[..., None]).to(block_dout.dtype))
            block_out, block_lse = own_out.reshape(q_b.shape), own_lse.reshape(q_b.shape[:-1])
        if piece.pad is not None:  # padded queries: zero dout and P = 0 (lse = inf) give zero gradients
            pad = piece.pad.view(1, -1).expand(batch, -1).reshape(block_lse.shape)
            block_dout = block_dout.masked_fill(pad[..., None], 0)
            block_lse = block_lse.masked_fill(pad, float("inf"))
        dq_b, dk_b, dv_b = backend.backward(block_dout, q_b, k_b, v_b, block_out, block_lse, piece.causal, scale)
        add = "index_copy_" if partition and number < plan.first_stage else "index_add_"
        getattr(dq, add)(1, piece.gather_rows.view(-1), _rows_of(dq_b, batch).to(acc))
        getattr(dk, add)(1, piece.k_rows.reshape(-1), _rows_of(dk_b, batch).to(acc))
        getattr(dv, add)(1, piece.k_rows.reshape(-1), _rows_of(dv_b, batch).to(acc))
    return dq, dk, dv


class _BlockSparseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan, scale, backend, exact_grad):
        batch, n, heads, dim = q.shape
        flats = [x.reshape(batch, n * heads, dim) for x in (q, k, v)]
        out, lse, partials = block_sparse_forward(*flats, plan, scale, backend, keep_partials=not exact_grad)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.partials = None if exact_grad else partials  # kept, so retain_graph backward works
        ctx.config = (plan, scale, backend)
        return out[:, :n * heads].reshape(q.shape)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        plan, scale, backend = ctx.config
        batch, n, heads, dim = q.shape
        dout_flat = dout.reshape(batch, n * heads, dim)
        flats = [x.reshape(batch, n * heads, dim) for x in (q, k, v)]
        grads = block_sparse_backward(dout_flat, *flats, out, lse, plan, scale, backend, ctx.partials)
        return (*(g.view(q.shape).to(q.dtype) for g in grads), None, None, None, None)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Plan, *,
                           scale: float | None = None, backend: str | Backend = "auto",
                           exact_grad: bool = True) -> torch.Tensor:
    """Attention of (B, N, H, D) q, k, v over the union of a plan's pieces (built for N*H rows,
    index tensors on q's device). exact_grad=False holds the pieces' mixing weights constant."""
    if plan.rows_q != q.shape[1] * q.shape[2]:
        raise ValueError(f"the plan is for {plan.rows_q} rows, the input has {q.shape[1] * q.shape[2]}")
    kernel = backend if isinstance(backend, Backend) else get_backend(backend, q.device, q.dtype, q.shape[-1])
    return _BlockSparseFunction.apply(q, k, v, plan, default_scale(q.shape[-1], scale), kernel, exact_grad)
