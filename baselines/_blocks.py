"""Sparse attention as a few batched dense kernel calls merged by log-sum-exp.

A sparse pattern is split into `Piece`s. A piece is a batch of dense blocks: block b's queries
are the rows q_rows[b] and its keys the rows k_rows[b] of the flat (N*H) row space of a
(B, N, H, D) tensor (row = position * H + head, so one block may mix heads or positions freely).
A block is either full (every query sees every key) or causal on a square block (query t sees
keys 0..t, the alignment every kernel agrees on). Rules that make the merge exact:
- keys are always real rows; a query row may be PAD (discarded padding that lets a ragged block
  join a batch: PAD is an all-zero query row, its output is dropped and its gradient is zero);
- within a piece a real query row appears at most once; across pieces the keys a query sees are
  disjoint, so merging the pieces by log-sum-exp is one softmax over the union of their keys.

Each piece is one call of a `longnet.backends` kernel (CPU flash, flash-attn, xformers, ...), so
nothing of size N x N is ever built. Gradients use the identity from LONGNET_NOTES.md: every
piece's ordinary backward run with the MERGED output and lse is its share of the exact gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from longnet.backends import default_scale, get_backend, merge_attention

PAD = -1  # a query row that is padding; mapped to an extra all-zero row


@dataclass(frozen=True)
class Piece:
    q_rows: torch.Tensor  # (blocks, Lq) int64 flat rows, PAD allowed
    k_rows: torch.Tensor  # (blocks, Lk) int64 flat rows, all real
    causal: bool          # needs Lq == Lk

    def __post_init__(self):
        assert not self.causal or self.q_rows.shape[1] == self.k_rows.shape[1], "causal needs square blocks"


def flat_rows(positions: torch.Tensor, head: int, num_heads: int) -> torch.Tensor:
    """Flat row index of `positions` (any shape, PAD kept) for one head."""
    return torch.where(positions == PAD, PAD, positions * num_heads + head)


def _gather(x_flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, R, ...) rows -> kernel layout (B*blocks, 1, L, ...)."""
    blocks, length = rows.shape
    gathered = x_flat.index_select(1, rows.reshape(-1))
    return gathered.view(x_flat.shape[0] * blocks, 1, length, *x_flat.shape[2:])


def _scatter_rows(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Kernel layout (B*blocks, 1, L, ...) -> (B, blocks*L, ...)."""
    return x.reshape(batch, -1, *x.shape[3:])


def _flat(x: torch.Tensor, pad: bool = False) -> torch.Tensor:
    """(B, N, H, D) -> (B, N*H, D), with pad an extra last row of zeros (the row PAD points to)."""
    batch, n, heads, dim = x.shape
    flat = x.reshape(batch, n * heads, dim)
    return torch.cat([flat, x.new_zeros(batch, 1, dim)], dim=1) if pad else flat


def _pad_index(rows: torch.Tensor, pad_row: int) -> torch.Tensor:
    return torch.where(rows == PAD, pad_row, rows)


def _forward(q, k, v, pieces, scale, backend):
    batch, n, heads, dim = q.shape
    pad_row = n * heads
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    q_flat, k_flat, v_flat = _flat(q, pad=True), _flat(k), _flat(v)
    out = torch.zeros(batch, pad_row + 1, dim, dtype=acc, device=q.device)
    lse = torch.full((batch, pad_row + 1), float("-inf"), dtype=acc, device=q.device)
    for number, piece in enumerate(pieces):
        q_rows = _pad_index(piece.q_rows, pad_row)
        o, l = backend.forward(_gather(q_flat, q_rows), _gather(k_flat, piece.k_rows),
                               _gather(v_flat, piece.k_rows), piece.causal, scale)
        rows, o, l = q_rows.reshape(-1), _scatter_rows(o, batch), _scatter_rows(l, batch)
        if number:
            o, l = merge_attention(out.index_select(1, rows), lse.index_select(1, rows), o, l)
        # (the first piece has nothing to merge with: its real rows are distinct)
        out.index_copy_(1, rows, o.to(acc))
        lse.index_copy_(1, rows, l.to(acc))
    return out, lse


class _SparseAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pieces, scale, backend):
        out, lse = _forward(q, k, v, pieces, scale, backend)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.config = (pieces, scale, backend)
        return out[:, :-1].reshape(q.shape)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        pieces, scale, backend = ctx.config
        batch, n, heads, dim = q.shape
        pad_row = n * heads
        acc = lse.dtype
        q_flat, k_flat, v_flat, dout_flat = _flat(q, True), _flat(k), _flat(v), _flat(dout, True)
        # dq has the PAD row too (discarded); keys are never PAD
        grads = [torch.zeros(batch, rows, dim, dtype=acc, device=q.device)
                 for rows in (pad_row + 1, pad_row, pad_row)]
        for piece in pieces:
            q_rows = _pad_index(piece.q_rows, pad_row)
            dq, dk, dv = backend.backward(
                _gather(dout_flat, q_rows), _gather(q_flat, q_rows), _gather(k_flat, piece.k_rows),
                _gather(v_flat, piece.k_rows), _gather(out, q_rows), _gather(lse, q_rows),
                piece.causal, scale)
            grads[0].index_add_(1, q_rows.reshape(-1), _scatter_rows(dq, batch).to(acc))
            grads[1].index_add_(1, piece.k_rows.reshape(-1), _scatter_rows(dk, batch).to(acc))
            grads[2].index_add_(1, piece.k_rows.reshape(-1), _scatter_rows(dv, batch).to(acc))
        dq, dk, dv = (g[:, :pad_row].reshape(q.shape).to(q.dtype) for g in grads)
        return dq, dk, dv, None, None, None


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pieces: list[Piece],
                     scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Softmax attention of (B, N, H, D) q, k, v over the union of `pieces`' key sets (pieces'
    index tensors on q's device)."""
    kernel = get_backend(backend, q.device, q.dtype, q.shape[-1])
    return _SparseAttentionFunction.apply(q, k, v, pieces, default_scale(q.shape[-1], scale), kernel)


def band_pieces(sequences: torch.Tensor, window: int, causal: bool) -> list[Piece]:
    """Pieces for a sliding window along each row of `sequences` (S, L) of flat rows: the query at
    index a sees the keys at indices a - window .. a (and .. a + window unless causal).

    Chunks of C = window indices: a query sees its own chunk (causal or full), the previous chunk's
    indices >= its own offset (causal after reversing both: no mask needed), and, non-causal, the
    next chunk's indices <= its offset. Cost O(L * window) per sequence.
    """
    count, length = sequences.shape
    if length == 0 or count == 0:
        return []
    chunk = max(1, min(window, length))
    full, tail = divmod(length, chunk)
    n_chunks = full + (1 if tail else 0)
    pieces = []
    if full:
        chunks = sequences[:, :full * chunk].reshape(count * full, chunk)
        pieces.append(Piece(chunks, chunks, causal))
    last = sequences[:, full * chunk:]
    if tail:
        pieces.append(Piece(last, last, causal))
    if window == 0 or n_chunks == 1:
        return pieces
    # previous chunk, both reversed so "key offset >= query offset" is causal; a ragged last
    # chunk pads its queries (keys are always whole earlier chunks)
    padding = torch.full((count, n_chunks * chunk - length), PAD, dtype=sequences.dtype)
    queries = torch.cat([sequences[:, chunk:], padding], dim=1).reshape(-1, chunk)
    keys = sequences[:, :(n_chunks - 1) * chunk].reshape(-1, chunk)
    pieces.append(Piece(queries.flip(1), keys.flip(1), True))
    if not causal:
        # next chunk: key offset <= query offset (causal); when the next chunk is the ragged last
        # one, offsets < tail are a causal square and the rest see all of it
        if full > 1:
            queries = sequences[:, :(full - 1) * chunk].reshape(-1, chunk)
            keys = sequences[:, chunk:full * chunk].reshape(-1, chunk)
            pieces.append(Piece(queries, keys, True))
        if tail:
            before_last = sequences[:, (full - 1) * chunk:full * chunk]
            pieces.append(Piece(before_last[:, :tail], last, True))
            pieces.append(Piece(before_last[:, tail:], last, False))
    return pieces


def group_blocks(blocks: list[tuple[torch.Tensor, torch.Tensor]], causal: bool) -> list[Piece]:
    """Batch (q_rows, k_rows) 1-D blocks of equal shape into pieces (one kernel call each)."""
    by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for q_rows, k_rows in blocks:
        if len(q_rows) and len(k_rows):
            by_shape.setdefault((len(q_rows), len(k_rows)), []).append((q_rows, k_rows))
    return [Piece(torch.stack([b[0] for b in group]), torch.stack([b[1] for b in group]), causal)
            for _, group in sorted(by_shape.items())]


def band_pairs(length: int, window: int, causal: bool) -> int:
    """Query-key pairs of a sliding window of `window` keys each side over `length` rows."""
    head = min(length, window + 1)  # the first rows see fewer than window + 1 keys
    pairs = head * (head + 1) // 2 + (length - head) * (window + 1)
    return pairs if causal else 2 * pairs - length


def query_key_grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions (n, 1) and key positions (1, n), for writing masks as formulas."""
    positions = torch.arange(n)
    return positions[:, None], positions[None, :]


class BlockSparseVariant:
    """Mixin for variants that are one masked softmax run as pieces: subclasses define
    build_pieces(n, causal) (and mask/flops); forward and the per-length cache live here."""

    backend = "auto"

    def pieces(self, n: int, causal: bool, device: torch.device | str = "cpu") -> list[Piece]:
        """The pieces for length n, built once on the CPU and kept per device."""
        cache = self.__dict__.setdefault("_pieces", {})
        key = (n, causal, torch.device(device))
        if key not in cache:
            cache[key] = [Piece(p.q_rows.to(device), p.k_rows.to(device), p.causal)
                          for p in self.build_pieces(n, causal)]
        return cache[key]

    def forward(self, q, k, v, causal=True):
        self.check_inputs(q, k, v)
        return sparse_attention(q, k, v, self.pieces(q.shape[1], causal, q.device),
                                backend=self.backend)
