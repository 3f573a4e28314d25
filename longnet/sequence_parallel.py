"""LongNet's sequence-parallel dilated attention (paper section 3) over torch.distributed.

The sequence of N tokens is split evenly over the P ranks of a sequence-parallel process group;
rank p holds tokens [p*L, (p+1)*L), L = N / P, and passes its own (B, L, H, D) q, k, v.

Per branch (w, r), with w clipped to N:
- local: every segment lies inside one rank's chunk (P = 1 or w divides L). The branch runs on the
  local chunk exactly as the core runs it (`longnet.dilated_attention.dilated_plan`).
- spanning: a segment crosses a chunk boundary. The ranks whose chunks share segments form a
  "block" (consecutive ranks with no segment boundary between them; w = m*L gives blocks of m
  ranks). Each rank sparsifies its k, v (only the rows the branch selects, about L*H/r of the L*H),
  all-gathers those among its block (a process group of the block's ranks), and attends its own
  selected queries to the gathered keys of their segment. Causal: a query sees the gathered keys of
  earlier ranks (a full block) and the causal part of its own chunk (a causal block); no rank
  drops its own chunk, none attends zeros.
All of it is one `longnet.block_sparse` plan (the core's engine) over the local query rows and a
combined key space [local k | gathered k of each spanning branch], merged by log-sum-exp.
Backward is exact: each kernel call's backward runs with the MERGED output and lse (the identity of
docs/definitions.md, section 1); key/value gradients of gathered rows go back to their owners by a
reduce-scatter over the block. With r growing like w, the sparsified rows per rank (L*H/r) times
the block size (w/L) stay constant, so bytes per rank do not grow with N.

Composable with data parallelism: pass the sequence group (e.g. from `sequence_data_groups`);
blocks are sub-groups of it. Works on gloo (CPU) and NCCL (CUDA).

The benchmark and its CSV-writing command line are benchmarks/sequence_parallel.py.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .backends import default_scale, get_backend
from .block_sparse import Piece, Plan, block_sparse_backward, block_sparse_forward
from .dilated_attention import check_qkv, branch_blocks, dilated_plan
from .schedule import DilatedSchedule


@dataclass
class CommCounter:
    """Bytes this rank sent and received, summed over calls (reset() between measurements).

    An all-gather or reduce-scatter over m ranks of c bytes per rank counts (m - 1) * c sent and
    (m - 1) * c received: what any bandwidth-optimal algorithm (ring, NCCL, gloo) moves per rank.
    """
    bytes_sent: int = 0
    bytes_recv: int = 0
    collectives: int = 0

    def add(self, chunk_bytes: int, ranks: int) -> None:
        self.bytes_sent += (ranks - 1) * chunk_bytes
        self.bytes_recv += (ranks - 1) * chunk_bytes
        self.collectives += 1

    def reset(self) -> None:
        self.bytes_sent = self.bytes_recv = self.collectives = 0


COMM = CommCounter()  # the default counter


# ------------------------------------------------------------------------------------------------
# the plan: one block-sparse plan over a key space [local k | gathered k of each spanning branch]

@dataclass
class SpanningBranch:
    ranks: tuple[int, ...]  # the block's ranks in the sequence group
    send_rows: torch.Tensor  # local rows (position * H + head) this rank sends, sorted
    rows_per_rank: int  # M: the send buffer's length (the block's largest count; others padded)
    key_offset: int  # where its gathered (m * M) rows start in the combined key space


@dataclass
class SequencePlan:
    attention: Plan  # pieces over local query rows and combined key rows
    spanning: list[SpanningBranch]


def _block_ranks(rank: int, world: int, chunk: int, w: int) -> tuple[int, ...]:
    """Consecutive ranks around `rank` with no segment boundary between their chunks."""
    first = rank
    while first > 0 and (first * chunk) % w != 0:
        first -= 1
    last = rank
    while last + 1 < world and ((last + 1) * chunk) % w != 0:
        last += 1
    return tuple(range(first, last + 1))


@functools.lru_cache(maxsize=64)
def make_plan(chunk: int, world: int, rank: int, heads: int, schedule: DilatedSchedule, causal: bool,
              device: torch.device = torch.device("cpu")) -> SequencePlan:
    """Local branches as the core's own pieces; each spanning branch's blocks as pieces whose
    queries are this rank's selected rows and whose keys are rows of the gathered buffer."""
    n, rows_per_chunk = chunk * world, chunk * heads
    local, spanning, pieces = [], [], []
    key_offset = rows_per_chunk  # the combined key space starts with the local k
    for w, r in schedule.branches:
        w = min(w, n)
        if world == 1 or chunk % w == 0:
            local.append((w, r))
            continue
        ranks = _block_ranks(rank, world, chunk, w)
        me, span = rank - ranks[0], len(ranks) * chunk
        # the branch's blocks over the block's range, standalone: it starts on a segment boundary
        groups = branch_blocks(span, heads, w, r, device)
        selected = torch.cat([g.rows.view(-1) for g in groups]).sort().values
        owner = selected // rows_per_chunk
        counts = torch.bincount(owner, minlength=len(ranks))
        first_of = torch.cumsum(counts, 0) - counts  # where each rank's rows start in `selected`
        most = int(counts.max())
        lo, hi = me * rows_per_chunk, (me + 1) * rows_per_chunk
        for group in groups:
            rows = group.rows
            rank_of = rows // rows_per_chunk  # block-range row -> combined key row
            keys = key_offset + rank_of * most + torch.searchsorted(selected, rows) - first_of[rank_of]
            i0, i1 = (rows < lo).sum(1), (rows < hi).sum(1)  # this rank's queries: [i0, i1)
            mine = i1 > i0
            for a, b in torch.unique(torch.stack([i0[mine], i1[mine]], 1), dim=0).tolist():
                pick = mine & (i0 == a) & (i1 == b)
                queries = rows[pick, a:b] - lo
                if not causal:
                    pieces.append(Piece(queries, keys[pick], causal=False))
                    continue
                if a > 0:  # keys of earlier ranks: all visible
                    pieces.append(Piece(queries, keys[pick, :a], causal=False))
                pieces.append(Piece(queries, keys[pick, a:b], causal=True))  # its own chunk
        spanning.append(SpanningBranch(ranks, selected[owner == me] - lo, most, key_offset))
        key_offset += len(ranks) * most
    own = (dilated_plan(chunk, heads, DilatedSchedule(*zip(*local)), causal, device)
           if local else None)
    attention = Plan((own.pieces if own else []) + pieces, rows_per_chunk,
                     first_stage=own.first_stage if own else 0)
    return SequencePlan(attention, spanning)


# ------------------------------------------------------------------------------------------------
# communication

_BLOCK_GROUPS: dict[tuple[int, ...], dist.ProcessGroup] = {}


def _block_group(group, ranks: tuple[int, ...]):
    """The process group of a block of the sequence group's ranks (created once, by its members)."""
    if len(ranks) == dist.get_world_size(group):
        return group
    global_ranks = tuple(dist.get_global_rank(group or dist.group.WORLD, r) for r in ranks)
    if global_ranks not in _BLOCK_GROUPS:
        _BLOCK_GROUPS[global_ranks] = dist.new_group(list(global_ranks), use_local_synchronization=True)
    return _BLOCK_GROUPS[global_ranks]


# torch 2.13 renamed the flat-tensor collectives; older torch has only the old names
gather_flat = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
reduce_scatter_flat = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)


def _all_gather(send: torch.Tensor, group, ranks: int, counter: CommCounter) -> torch.Tensor:
    """(...) on each rank -> (ranks, ...) on every rank."""
    out = send.new_empty(ranks * send.numel())
    gather_flat(out, send.contiguous().view(-1), group=group)
    counter.add(send.numel() * send.element_size(), ranks)
    return out.view(ranks, *send.shape)


def _reduce_scatter(full: torch.Tensor, group, ranks: int, counter: CommCounter) -> torch.Tensor:
    """(ranks, ...) on each rank -> this rank's (...) summed over ranks."""
    out = full.new_empty(full[0].numel())
    reduce_scatter_flat(out, full.contiguous().view(-1), group=group)
    counter.add(out.numel() * out.element_size(), ranks)
    return out.view(full.shape[1:])


# ------------------------------------------------------------------------------------------------
# forward and backward

def _gather_kv(k_flat, v_flat, branch: SpanningBranch, group, counter):
    """Sparsify local k, v to the branch's rows and all-gather them over the block: 2 x (B, m*M, D)."""
    batch, _, dim = k_flat.shape
    m, most, count = len(branch.ranks), branch.rows_per_rank, len(branch.send_rows)
    send = k_flat.new_zeros(2, batch, most, dim)
    send[0, :, :count] = k_flat.index_select(1, branch.send_rows)
    send[1, :, :count] = v_flat.index_select(1, branch.send_rows)
    gathered = send[None] if m == 1 else _all_gather(send, _block_group(group, branch.ranks), m, counter)
    gathered = gathered.permute(1, 2, 0, 3, 4).reshape(2, batch, m * most, dim)  # (m, 2, B, M, D) ->
    return gathered[0], gathered[1]


class _SequenceParallelFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: SequencePlan, scale, backend, group, counter):
        batch, chunk, heads, dim = q.shape
        q_flat, k_flat, v_flat = (x.reshape(batch, chunk * heads, dim) for x in (q, k, v))
        keys, values = [k_flat], [v_flat]
        for branch in plan.spanning:
            k_all, v_all = _gather_kv(k_flat, v_flat, branch, group, counter)
            keys.append(k_all)
            values.append(v_all)
        keys, values = (torch.cat(x, 1) if len(x) > 1 else x[0] for x in (keys, values))
        out, lse, _ = block_sparse_forward(q_flat, keys, values, plan.attention, scale, backend)
        out = out.to(q.dtype)
        # the combined keys are kept: the backward needs no second all-gather
        ctx.save_for_backward(q_flat, keys, values, out, lse)
        ctx.config = (plan, scale, backend, group, counter)
        return out.view(q.shape)

    @staticmethod
    def backward(ctx, dout):
        q_flat, keys, values, out, lse = ctx.saved_tensors
        plan, scale, backend, group, counter = ctx.config
        batch, chunk, heads, dim = dout.shape
        dq, dkeys, dvalues = block_sparse_backward(dout.reshape(q_flat.shape), q_flat, keys, values,
                                                   out, lse, plan.attention, scale, backend)
        local = chunk * heads
        dk, dv = dkeys[:, :local], dvalues[:, :local]
        for branch in plan.spanning:
            m, most, count = len(branch.ranks), branch.rows_per_rank, len(branch.send_rows)
            rows = slice(branch.key_offset, branch.key_offset + m * most)
            # 2 x (B, m*M, D) -> (m, 2, B, M, D): the reduce-scatter hands each rank its own rows
            full = torch.stack([dkeys[:, rows], dvalues[:, rows]]).view(2, batch, m, most, dim)
            full = full.permute(2, 0, 1, 3, 4)
            mine = full[0] if m == 1 else _reduce_scatter(full, _block_group(group, branch.ranks), m, counter)
            dk.index_add_(1, branch.send_rows, mine[0, :, :count])
            dv.index_add_(1, branch.send_rows, mine[1, :, :count])
        return (*(g.reshape(dout.shape).to(dout.dtype) for g in (dq, dk, dv)),
                None, None, None, None, None)


def sequence_parallel_dilated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                        segment_lengths, dilation_rates, *, group=None,
                                        causal: bool = True, scale: float | None = None,
                                        backend: str = "auto",
                                        counter: CommCounter | None = None) -> torch.Tensor:
    """Dilated attention over a sequence split across the ranks of `group` (None: the world).

    q, k, v: this rank's chunk, (B, L, H, D), tokens [rank*L, (rank+1)*L) of a sequence of
    N = L * P; every rank passes the same L. Returns this rank's chunk of
    `longnet.dilated_attention(full q, k, v, ...)`, with exact gradients. Bytes communicated are
    added to `counter` (default: `longnet.sequence_parallel.COMM`).
    """
    schedule = DilatedSchedule(segment_lengths, dilation_rates)
    check_qkv(q, k, v)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    batch, chunk, heads, dim = q.shape
    plan = make_plan(chunk, world, rank, heads, schedule, causal, q.device)
    if world > 1 and (chunk, group) not in _CHECKED_CHUNKS:  # once per shape: one tiny collective
        _check_equal_chunks(chunk, group)
        _CHECKED_CHUNKS.add((chunk, group))
    kernel = get_backend(backend, q.device, q.dtype, dim)
    return _SequenceParallelFunction.apply(q, k, v, plan, default_scale(dim, scale), kernel, group,
                                           counter if counter is not None else COMM)


_CHECKED_CHUNKS: set = set()


def _check_equal_chunks(chunk: int, group) -> None:
    lengths = torch.zeros(dist.get_world_size(group), dtype=torch.int64)
    mine = torch.tensor([chunk], dtype=torch.int64)
    if dist.get_backend(group) == "nccl":
        lengths, mine = lengths.cuda(), mine.cuda()
    dist.all_gather_into_tensor(lengths, mine, group=group)
    if len(set(lengths.tolist())) != 1:
        raise ValueError(f"every rank must pass the same chunk length L = N / P; got {lengths.tolist()}")


# ------------------------------------------------------------------------------------------------
# helpers for users: split a sequence, make sequence x data groups

def shard_sequence(x: torch.Tensor, group=None, dim: int = 1) -> torch.Tensor:
    """This rank's chunk of a full-sequence tensor (N must be divisible by the group's size)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    n = x.shape[dim]
    if n % world != 0:
        raise ValueError(f"sequence length N={n} must be divisible by the number of sequence-parallel "
                         f"ranks P={world} (allowed: multiples of {world})")
    return x.narrow(dim, rank * (n // world), n // world)


def sequence_data_groups(sequence_size: int):
    """(sequence group, data group) of this rank, world = data x sequence, sequences on consecutive
    ranks. Every rank of the world must call this (it creates all groups)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if sequence_size < 1 or world % sequence_size != 0:
        raise ValueError(f"sequence_size={sequence_size} must divide the world size {world}")
    mine = {}
    for start in range(0, world, sequence_size):
        ranks = list(range(start, start + sequence_size))
        made = dist.new_group(ranks)
        if rank in ranks:
            mine["sequence"] = made
    for offset in range(sequence_size):
        ranks = list(range(offset, world, sequence_size))
        made = dist.new_group(ranks)
        if rank in ranks:
            mine["data"] = made
    return mine["sequence"], mine["data"]


def process_group_backend(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for CPU ones: the configured device decides, not CUDA's presence."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"
