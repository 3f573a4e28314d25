"""Pattern builders for the sparse variants: sliding bands, grouped blocks, FLOP counts.

Each pattern is a list of longnet.block_sparse Pieces (batches of dense blocks on gathered rows,
full or causal on a square, merged by log-sum-exp; see that module for the rules that make the
merge exact). A sliding window, for example, is a chunk's own causal block plus the previous
chunk with queries and keys reversed, so "key offset >= query offset" is an ordinary causal block.
"""
from __future__ import annotations

import torch

from longnet.block_sparse import PAD, Piece, Plan, block_sparse_attention


def flat_rows(positions: torch.Tensor, head: int, num_heads: int) -> torch.Tensor:
    """Flat row index of `positions` (any shape, PAD kept) for one head."""
    return torch.where(positions == PAD, PAD, positions * num_heads + head)


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

    def plan(self, n: int, heads: int, causal: bool, device: torch.device | str = "cpu") -> Plan:
        """The pieces for length n, built once on the CPU and kept per device."""
        cache = self.__dict__.setdefault("_plans", {})
        key = (n, heads, causal, torch.device(device))
        if key not in cache:
            cpu = (n, heads, causal, torch.device("cpu"))
            if cpu not in cache:  # built and checked on the CPU (no device waits), then moved
                cache[cpu] = Plan(self.build_pieces(n, causal), n * heads)
            cache[key] = cache[cpu].to(device)
        return cache[key]

    def forward(self, q, k, v, causal=True):
        self.check_inputs(q, k, v)
        return block_sparse_attention(q, k, v, self.plan(q.shape[1], q.shape[2], causal, q.device),
                                      backend=self.backend)
