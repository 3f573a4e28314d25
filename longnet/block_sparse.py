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
ordinary kernel backward run with the MERGED output and lse (docs/definitions.md, section 1).

A piece may also say that its blocks form a `Lattice`: a strided view of the row space (LongNet's
branches do). Its rows are then gathered by one strided copy and merged, scattered and accumulated
in place through the same view, with no index_select/index_copy round trip.

Performance (CPU measurements in benchmarks/): rows are gathered into contiguous blocks (the CPU
flash kernel runs 15-35% slower on strided views than on gathered blocks); pieces run in chunks of
whole blocks, so workspace is bounded whatever N is; gather buffers are reused, and on CPU the
16 MB chunks stay under glibc's mmap threshold, so kernel outputs reuse freed heap instead of
page-faulting fresh memory on every call. Merging is one in-place lerp per piece: the two weights
of a log-sum-exp merge sum to one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .backends import Backend, default_scale, get_backend

PAD = -1  # a query row that is padding
CHUNK_ROWS = {"cpu": 1 << 16, "cuda": 1 << 22}  # rows (times batch) per kernel call
# a materialising kernel's (the math backend's) score matrices per call, at most
WORKSPACE_BYTES = {"cpu": 1 << 30, "cuda": 1 << 30}


@dataclass(frozen=True)
class Lattice:
    """Blocks whose rows are offset + sum_i index_i * strides[i], index_i < sizes[i]: sizes[-1] is
    the block length, the leading sizes enumerate the blocks (last index fastest). An injective
    lattice is a strided view of the row space, so gathers and scatters need no index tensor."""

    offset: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]

    def rows(self, device: torch.device | None = None) -> torch.Tensor:
        """(blocks, length) int64 row indices, in block order."""
        rows = torch.full((), self.offset, dtype=torch.int64, device=device)  # factory: works on any device
        for size, stride in zip(self.sizes, self.strides):
            rows = rows.unsqueeze(-1) + torch.arange(size, device=device) * stride
        return rows.reshape(-1, self.sizes[-1])

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """(B, rows, *tail) -> (B, *sizes, *tail), a view sharing x's memory."""
        row = x.stride(1)
        return x.as_strided((x.shape[0], *self.sizes, *x.shape[2:]),
                            (x.stride(0), *(s * row for s in self.strides), *x.stride()[2:]),
                            x.storage_offset() + self.offset * row)

    def split(self, max_blocks: int):
        """(first block, sub-lattice) pairs of at most max_blocks blocks each (at least one), in
        block order, so each sub-lattice's rows are a contiguous slice of rows()."""
        inner = math.prod(self.sizes[1:-1])
        if inner <= max_blocks:
            step = max(1, max_blocks // inner)
            for i in range(0, self.sizes[0], step):
                yield i * inner, Lattice(self.offset + i * self.strides[0],
                                         (min(step, self.sizes[0] - i), *self.sizes[1:]), self.strides)
            return
        for i in range(self.sizes[0]):
            sub = Lattice(self.offset + i * self.strides[0], self.sizes[1:], self.strides[1:])
            for start, part in sub.split(max_blocks):
                yield i * inner + start, part


@dataclass(frozen=True)
class Piece:
    q_rows: torch.Tensor              # (blocks, Lq) int64, PAD allowed
    k_rows: torch.Tensor | None = None  # (blocks, Lk) int64 real rows; None: the same as q_rows
    causal: bool = False              # causal on a square block
    lattice: Lattice | None = None    # q_rows as a lattice (self blocks only), for strided gathers
    # q_rows were made by lattice.rows() (from_lattice): nothing to check, and no check reads
    # index values, so building a lattice plan never waits on the device
    from_rows_of_lattice: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self):
        if self.causal and self.k_rows is not None and self.q_rows.shape[1] != self.k_rows.shape[1]:
            raise ValueError("a causal piece needs square blocks")
        if self.from_rows_of_lattice:
            return
        if self.k_rows is None and bool((self.q_rows == PAD).any()):
            raise ValueError("a piece with padded query rows needs explicit k_rows")
        if self.lattice is not None and (self.k_rows is not None or len(self.lattice.sizes) < 2
                                         or not torch.equal(self.q_rows, self.lattice.rows(self.q_rows.device))):
            raise ValueError("a lattice piece needs self blocks whose rows are exactly the lattice's")

    @classmethod
    def from_lattice(cls, lattice: Lattice, causal: bool, device: torch.device | None = None) -> "Piece":
        if len(lattice.sizes) < 2:
            raise ValueError("a lattice piece needs block sizes and a block length")
        return cls(lattice.rows(device), None, causal, lattice, from_rows_of_lattice=True)


@dataclass(frozen=True)
class _PreparedPiece:
    gather_rows: torch.Tensor        # q_rows with PAD -> row 0 (any real row: its output is dropped)
    scatter_rows: torch.Tensor       # q_rows with PAD -> the accumulator's extra row
    k_rows: torch.Tensor             # key rows (q_rows' gather rows for self blocks)
    pad: torch.Tensor | None         # (blocks, Lq) bool where q_rows is PAD, None when there is none
    causal: bool
    lattice: Lattice | None

    def chunks(self, max_blocks: int):
        """The piece cut into runs of whole blocks, at most max_blocks each (at least one)."""
        if self.lattice is None:
            parts = ((start, None) for start in range(0, self.gather_rows.shape[0], max_blocks))
        else:
            parts = self.lattice.split(max_blocks)
        for start, lattice in parts:
            count = min(max_blocks, self.gather_rows.shape[0] - start) if lattice is None \
                else math.prod(lattice.sizes[:-1])
            rows = [None if x is None else x.narrow(0, start, count)  # narrow: a view on any device
                    for x in (self.gather_rows, self.scatter_rows, self.k_rows, self.pad)]
            yield _PreparedPiece(*rows, self.causal, lattice)

    def gather(self, gatherer: "Gatherer", slot: int, x_flat: torch.Tensor, keys: bool = False) -> torch.Tensor:
        return gatherer(slot, x_flat, self.k_rows if keys else self.gather_rows, self.lattice)

    def rows_of(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """Kernel layout (B*blocks, 1, L, ...) -> the layout of this piece's scatter target:
        (B, *lattice sizes, ...) for a lattice, (B, blocks*L, ...) otherwise."""
        if self.lattice is None:
            return x.reshape(batch, -1, *x.shape[3:])
        return x.reshape(batch, *self.lattice.sizes, *x.shape[3:])

    def read(self, x: torch.Tensor, gatherer: "Gatherer", slot: int) -> torch.Tensor:
        """This piece's query rows of an accumulator: a view for a lattice, a gathered copy else."""
        if self.lattice is not None:
            return self.lattice.view(x)
        if x.dim() == 2:
            return x.index_select(1, self.scatter_rows.view(-1))
        return gatherer(slot, x, self.scatter_rows).reshape(x.shape[0], -1, *x.shape[2:])

    def write(self, x: torch.Tensor, rows: torch.Tensor, values: torch.Tensor, add: bool = False) -> None:
        """x[rows] = values (or += values); values in rows_of layout. rows: scatter_rows or k_rows
        (the same rows as the lattice's: lattice pieces are self blocks)."""
        if self.lattice is None:
            (x.index_add_ if add else x.index_copy_)(1, rows.reshape(-1), values)
        elif add:
            self.lattice.view(x).add_(values)
        else:
            self.lattice.view(x).copy_(values)


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
            pad = None if piece.from_rows_of_lattice else piece.q_rows == PAD  # a lattice has no PAD
            has_pad = pad is not None and bool(pad.any())
            gather = torch.where(pad, 0, piece.q_rows) if has_pad else piece.q_rows
            scatter = torch.where(pad, self.rows_q, piece.q_rows) if has_pad else piece.q_rows
            keys = gather if piece.k_rows is None else piece.k_rows.contiguous()
            # contiguous once here, so every chunk's rows are flat views
            prepared.append(_PreparedPiece(gather.contiguous(), scatter.contiguous(), keys,
                                           pad if has_pad else None, piece.causal, piece.lattice))
        object.__setattr__(self, "prepared", prepared)
        object.__setattr__(self, "has_pad", any(p.pad is not None for p in prepared))
        first = self.pieces[:self.first_stage]
        object.__setattr__(self, "partition_first", bool(first) and all(
            p.k_rows is None for p in first) and sum(p.q_rows.numel() for p in first) == self.rows_q)


    def to(self, device: torch.device | str) -> "Plan":
        """The same plan with its index tensors on `device`. Build a plan whose checks read index
        values (PAD, the partition) on the CPU and move it: on a GPU those checks would wait on
        the device, and on meta tensors they cannot run at all."""
        def move(x):
            return None if x is None else x.to(device)
        moved = object.__new__(Plan)
        object.__setattr__(moved, "pieces", [
            Piece(move(p.q_rows), move(p.k_rows), p.causal, p.lattice, from_rows_of_lattice=True)
            for p in self.pieces])  # checked when first built
        for name in ("rows_q", "first_stage", "has_pad", "partition_first"):
            object.__setattr__(moved, name, getattr(self, name))
        object.__setattr__(moved, "prepared", [
            _PreparedPiece(move(p.gather_rows), move(p.scatter_rows), move(p.k_rows), move(p.pad),
                           p.causal, p.lattice) for p in self.prepared])
        return moved


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype outputs and log-sum-exps are accumulated in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def plan_chunks(plan: Plan, batch: int, device: torch.device, max_batch: int | None = None,
                bytes_per_pair: int = 0):
    """(index, prepared chunk) pairs: each piece cut into chunks of whole blocks, each chunk at
    most CHUNK_ROWS rows, when the kernel has a grid limit at most max_batch // batch blocks (the
    kernel's batch is B * blocks), and when it materialises its scores (bytes_per_pair, the
    backend's) at most WORKSPACE_BYTES of them (the math fallback at L = 2048 would otherwise
    build 4M x 2048 scores, 34 GB, on CUDA)."""
    if max_batch is not None and batch > max_batch:
        raise ValueError(f"batch size {batch} exceeds the kernel's largest batch {max_batch} "
                         "(CUDA grid limit); split the batch")
    limit = CHUNK_ROWS.get(device.type, 1 << 20) // batch
    workspace = WORKSPACE_BYTES.get(device.type, 1 << 30)
    for number, piece in enumerate(plan.prepared):
        length = max(piece.gather_rows.shape[1], piece.k_rows.shape[1])
        blocks = max(1, limit // length)
        if max_batch is not None:
            blocks = min(blocks, max_batch // batch)
        if bytes_per_pair:
            pairs = batch * piece.gather_rows.shape[1] * piece.k_rows.shape[1]
            blocks = min(blocks, max(1, workspace // (pairs * bytes_per_pair)))
        for chunk in piece.chunks(blocks):
            yield number, chunk


class Gatherer:
    """Gathers rows into kernel layout (B*blocks, 1, L, ...), one reused buffer per slot; by one
    strided copy when the rows form `lattice`."""

    def __init__(self, batch: int):
        self.batch = batch
        self.buffers: dict[int, torch.Tensor] = {}

    def __call__(self, slot: int, x_flat: torch.Tensor, rows: torch.Tensor, lattice: Lattice | None = None):
        tail = x_flat.shape[2:]
        size = self.batch * rows.numel() * math.prod(tail)
        buffer = self.buffers.get(slot)
        if buffer is None or buffer.dtype != x_flat.dtype or buffer.numel() < size:
            buffer = self.buffers[slot] = torch.empty(size, dtype=x_flat.dtype, device=x_flat.device)
        if lattice is None:
            torch.index_select(x_flat, 1, rows.view(-1), out=buffer.narrow(0, 0, size).view(self.batch, rows.numel(), *tail))
        else:
            buffer.narrow(0, 0, size).view(self.batch, *lattice.sizes, *tail).copy_(lattice.view(x_flat))
        return buffer.narrow(0, 0, size).view(self.batch * rows.shape[0], 1, rows.shape[1], *tail)


def block_sparse_forward(q_flat, k_flat, v_flat, plan: Plan, scale: float, backend: Backend,
                         keep_partials: bool = False):
    """Merged (out, lse) over the query row space: out (B, rows_q (+1 with PAD), D) and lse, in
    float32 (float64 for float64 input); rows no piece selects are (0, -inf). With keep_partials,
    also every chunk's own (o, lse) (the detached-weights backward needs them)."""
    batch, rows_q, dim = q_flat.shape
    acc = accumulation_dtype(q_flat.dtype)
    total = rows_q + int(plan.has_pad)
    if plan.partition_first:
        out = torch.empty(batch, total, dim, dtype=acc, device=q_flat.device)
        lse = torch.empty(batch, total, dtype=acc, device=q_flat.device)
    else:
        out = torch.zeros(batch, total, dim, dtype=acc, device=q_flat.device)
        lse = torch.full((batch, total), float("-inf"), dtype=acc, device=q_flat.device)
    gather = Gatherer(batch)
    partials = []
    for number, piece in plan_chunks(plan, batch, q_flat.device, backend.max_batch,
                                     backend.bytes_per_pair * (2 if acc == torch.float64 else 1)):
        o, l = backend.forward(piece.gather(gather, 0, q_flat), piece.gather(gather, 1, k_flat, keys=True),
                               piece.gather(gather, 2, v_flat, keys=True), piece.causal, scale)
        o, l = piece.rows_of(o, batch), piece.rows_of(l, batch).to(acc)
        if keep_partials:
            partials.append((o, l))
        if number < plan.first_stage:  # nothing to merge with yet
            piece.write(out, piece.scatter_rows, o.to(acc))
            piece.write(lse, piece.scatter_rows, l)
            continue
        # running log-sum-exp merge. The two weights, exp(lse_rows - merged) and exp(l - merged) =
        # sigmoid(l - lse_rows), sum to one, so the output update is one in-place lerp. A real
        # query row always sees a key, so l is finite and the merged lse is too.
        out_rows, lse_rows = piece.read(out, gather, 3), piece.read(lse, gather, 4)
        out_rows.lerp_(o.to(acc), torch.sigmoid(l - lse_rows).unsqueeze(-1))
        merged = torch.logaddexp(lse_rows, l)
        if piece.lattice is None:  # read() gathered copies: scatter them back
            piece.write(out, piece.scatter_rows, out_rows)
            piece.write(lse, piece.scatter_rows, merged)
        else:  # read() gave views: out is already updated
            lse_rows.copy_(merged)
    return out, lse, partials


def block_sparse_backward(dout_flat, q_flat, k_flat, v_flat, out, lse, plan: Plan, scale: float,
                          backend: Backend, partials=None):
    """(dq, dk, dv) in float32 (float64 for float64 input) over the query and key row spaces.

    out, lse: the merged forward results (out in q's dtype). partials: the forward's own (o, lse)
    per chunk for the detached-weights gradient (out = sum_i stopgrad(a_i) o_i); None for exact.
    """
    batch, rows_q, dim = q_flat.shape
    acc = accumulation_dtype(q_flat.dtype)
    partition = plan.partition_first and k_flat.shape[1] == rows_q
    make = torch.empty if partition else torch.zeros
    dq = make(batch, rows_q, dim, dtype=acc, device=q_flat.device)
    dk, dv = (make(batch, k_flat.shape[1], dim, dtype=acc, device=q_flat.device) for _ in range(2))
    gather = Gatherer(batch)
    partial_iter = iter(partials or ())
    for number, piece in plan_chunks(plan, batch, q_flat.device, backend.max_batch,
                                     backend.bytes_per_pair * (2 if acc == torch.float64 else 1)):
        q_b, k_b, v_b = (piece.gather(gather, 0, q_flat), piece.gather(gather, 1, k_flat, keys=True),
                         piece.gather(gather, 2, v_flat, keys=True))
        if partials is None:  # the identity: this piece's backward with the merged output and lse
            block_out, block_lse = piece.gather(gather, 3, out), piece.gather(gather, 4, lse)
            block_dout = piece.gather(gather, 5, dout_flat)
        else:  # o_i receives a_i * dout, a_i = exp(lse_i - lse) held constant
            own_out, own_lse = next(partial_iter)
            weight = torch.exp(own_lse - piece.read(lse, gather, 4))
            block_dout = piece.gather(gather, 5, dout_flat)
            block_dout.copy_((block_dout.to(acc) * weight.reshape(q_b.shape[:-1]).unsqueeze(-1)).to(block_dout.dtype))
            block_out, block_lse = own_out.reshape(q_b.shape), own_lse.reshape(q_b.shape[:-1])
        if piece.pad is not None:  # padded queries: zero dout and P = 0 (lse = inf) give zero gradients
            pad = piece.pad.view(1, -1).expand(batch, -1).reshape(block_lse.shape)
            block_dout = block_dout.masked_fill(pad.unsqueeze(-1), 0)
            block_lse = block_lse.masked_fill(pad, float("inf"))
        dq_b, dk_b, dv_b = backend.backward(block_dout, q_b, k_b, v_b, block_out, block_lse, piece.causal, scale)
        add = not (partition and number < plan.first_stage)
        piece.write(dq, piece.gather_rows, piece.rows_of(dq_b, batch).to(acc), add)
        piece.write(dk, piece.k_rows, piece.rows_of(dk_b, batch).to(acc), add)
        piece.write(dv, piece.k_rows, piece.rows_of(dv_b, batch).to(acc), add)
    return dq, dk, dv


class _BlockSparseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan, scale, backend, exact_grad):
        batch, n, heads, dim = q.shape
        flats = [x.reshape(batch, n * heads, dim) for x in (q, k, v)]
        out, lse, partials = block_sparse_forward(*flats, plan, scale, backend, keep_partials=not exact_grad)
        out = out.to(q.dtype)
        # a query row holding a NaN gives NaN, as the definition does, whatever the kernel (torch's
        # CPU flash kernel returns 0.0 there): one pass over q, no host sync
        out.narrow(1, 0, n * heads).masked_fill_(torch.isnan(flats[0].sum(-1, keepdim=True)),
                                                 float("nan"))  # per row: D x smaller than q
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.partials = None if exact_grad else partials  # kept, so retain_graph backward works
        ctx.config = (plan, scale, backend)
        return out.narrow(1, 0, n * heads).reshape(q.shape)

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
