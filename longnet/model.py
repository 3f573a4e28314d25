"""A decoder-only language model whose attention is any registered variant (`longnet.variants`).

The paper's layout (torchscale's Decoder with MAGNETO, https://arxiv.org/abs/2210.06423):
    x = x + out_proj(subLN(attention(xpos(q), xpos(k), v)))   with q, k, v from LN(x)
        (the attention layer is longnet.multihead.MultiheadAttention around a registered variant)
    x = x + fc2(subLN(gelu(fc1(LN(x)))))
a final LayerNorm, and the output head tied to the token embedding. MAGNETO scales the initial
weights of v_proj, out_proj, fc1 and fc2 by sqrt(log(2 * n_layer)). Positions are XPos (the
paper's) or rotary, from `longnet.positions`, applied to q and k at absolute positions; no absolute
position embedding, so a model runs at any length its attention and positions allow.

    cfg = ModelConfig.from_size("tiny", attention="longnet", attention_params={...})
    model = LanguageModel(cfg)
    logits = model(tokens)                       # (B, N) int -> (B, N, vocab) float
    out = model.generate(prompt, 200, temperature=0.8, top_k=40)  # (B, P) -> (B, P + 200)

Generation: a prefill runs the normal forward over the prompt and fills one cache per layer (the
variant's `new_cache`, longnet.kv_cache: LongNet keeps sum_i ceil(w_i / r_i) rows per head), then
each new token is one cached step at its absolute position.
"""

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from longnet import variants
from longnet.flops import training_step_flops
from longnet.multihead import MultiheadAttention

POSITIONS = ("xpos", "rotary", "none")

# Named sizes. "base" is the paper's (12 layers, 768 wide, 12 heads, FFN 3072: ~85M non-embedding
# parameters). "tiny" trains in minutes on 2 CPU cores; "small" is a step up for a GPU or patience.
# Every size has 12 heads or more, the paper's count for its largest dilation rate (12): head h
# uses offset h mod r, so with fewer heads than r a branch's rows at offsets >= heads are never
# attended. tiny keeps the paper's 12 heads at head_dim 8 (96 wide) to stay within a 2-core budget.
SIZES = {
    "tiny": dict(n_layer=4, d_model=96, n_head=12, d_ff=384),
    "small": dict(n_layer=6, d_model=384, n_head=12, d_ff=1536),
    "base": dict(n_layer=12, d_model=768, n_head=12, d_ff=3072),
}


def mixed_precision(device):
    """The LM's precision on a device: bf16 autocast on CUDA (the paper trains in mixed
    precision; training, evaluation and recall all run under it), full fp32 on the CPU."""
    cuda = torch.device(device).type == "cuda"
    return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda)


@dataclass
class ModelConfig:
    vocab_size: int = 256
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    d_ff: int = 512
    attention: str = "vanilla"  # a name from longnet.variants.available()
    attention_params: dict = field(default_factory=dict)
    positions: str = "xpos"  # "xpos" (paper), "rotary" or "none"
    max_seq_len: int = 8192  # longest length the model will see; XPos is centred on its half
    sub_ln: bool = True  # MAGNETO sub-LayerNorm + init scaling; False gives a plain pre-LN block
    dropout: float = 0.0  # the paper trains with dropout 0
    bias: bool = True  # torchscale's projections have biases

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model {name}={value!r} is invalid; allowed: an int >= 1")
        if self.d_model % self.n_head:
            raise ValueError(f"model d_model={self.d_model} must be a multiple of "
                             f"n_head={self.n_head}")
        if self.positions not in POSITIONS:
            raise ValueError(f"model positions={self.positions!r} is invalid; allowed: "
                             f"{', '.join(POSITIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model dropout={self.dropout!r} is invalid; allowed: 0 <= p < 1")
        if self.attention not in variants.available():
            raise ValueError(f"model attention={self.attention!r} is not a registered variant; "
                             f"available: {', '.join(variants.available())}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def from_size(cls, size: str = "tiny", **overrides) -> "ModelConfig":
        """A named size from SIZES with any field overridden."""
        if size not in SIZES:
            raise ValueError(f"model size={size!r} is not known; allowed: {', '.join(SIZES)}")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(f"unknown model field(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(allowed))}")
        return cls(**{**SIZES[size], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, vocab) logits -> (B, 1) next tokens: argmax at temperature 0, else a sample."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.inner_ln = nn.LayerNorm(cfg.d_ff) if cfg.sub_ln else nn.Identity()
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.inner_ln(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_ln = nn.LayerNorm(cfg.d_model)
        # the core's layer: fused qkv, positions, sub-LN, out_proj around a swappable pattern
        # (evaluate.py swaps in blockwise causal attention for vanilla beyond its train length)
        attend = variants.build(cfg.attention, num_heads=cfg.n_head, **cfg.attention_params)
        self.attn = MultiheadAttention(cfg.d_model, cfg.n_head, attend, positions=cfg.positions,
                                       sub_ln=cfg.sub_ln, bias=cfg.bias, max_len=cfg.max_seq_len)
        self.ffn_ln = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache=None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_ln(x), positions, cache))
        return x + self.ffn(self.ffn_ln(x))


def _summed_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    return F.cross_entropy(F.linear(x, weight).float(), targets, reduction="sum")


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_ln = nn.LayerNorm(cfg.d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchscale's initialisation, with MAGNETO's scaling when sub_ln is on."""
        nn.init.normal_(self.embed.weight, std=self.cfg.d_model ** -0.5)
        gain = math.sqrt(math.log(2 * self.cfg.n_layer)) if self.cfg.sub_ln else 1.0
        C = self.cfg.d_model
        for block in self.blocks:
            qkv = block.attn.qkv_proj.weight
            # q, k, v were separate (C, C) projections initialised with gain 1/sqrt(2)
            for i in range(3):
                nn.init.xavier_uniform_(qkv.data[i * C:(i + 1) * C], gain=2 ** -0.5)
            qkv.data[2 * C:] *= gain  # v_proj
            nn.init.xavier_uniform_(block.attn.out_proj.weight, gain=gain)
            nn.init.xavier_uniform_(block.ffn.fc1.weight, gain=gain)
            nn.init.xavier_uniform_(block.ffn.fc2.weight, gain=gain)
            for linear in (block.attn.qkv_proj, block.attn.out_proj, block.ffn.fc1, block.ffn.fc2):
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                caches: list | None = None, targets: torch.Tensor | None = None,
                loss_chunk_tokens: int | None = None) -> torch.Tensor:
        """Logits (B, N, vocab) for tokens (B, N); positions default to 0..N-1, or with caches
        (from new_caches) to the N positions after what the caches hold.

        With targets (B, N): the mean cross-entropy instead (a scalar, computed in float32).
        loss_chunk_tokens: compute it over that many positions at a time, each chunk's logits
        recomputed in the backward (torch.utils.checkpoint), so at most one chunk's float logits
        ever exist: (chunk x vocab) instead of (B N x vocab), which at the paper's 100,277-token
        vocabulary is most of a GPU's memory. The same loss up to float summation order; None:
        all at once."""
        if positions is None:
            start = 0 if caches is None else caches[0].length
            positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if caches is None else caches[i])
        x = self.final_ln(x)
        if targets is None:
            return F.linear(x, self.embed.weight)  # tied output head
        x, targets = x.flatten(0, 1), targets.flatten()
        if loss_chunk_tokens is None or loss_chunk_tokens >= len(targets):
            return F.cross_entropy(F.linear(x, self.embed.weight).float(), targets)
        total = x.new_zeros((), dtype=torch.float32)
        for start in range(0, len(targets), loss_chunk_tokens):
            part = slice(start, start + loss_chunk_tokens)
            total = total + torch.utils.checkpoint.checkpoint(
                _summed_cross_entropy, x[part], self.embed.weight, targets[part],
                use_reentrant=False)
        return total / len(targets)

    def new_caches(self, batch: int, max_len: int | None = None) -> list:
        """One empty decoding cache per layer (ValueError if the attention cannot decode);
        max_len: the longest sequence they will hold (LongNet's schedule covers it)."""
        return [block.attn.new_cache(batch, max_len) for block in self.blocks]

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """tokens (B, P), P >= 1, followed by max_new_tokens sampled ones: (B, P + max_new_tokens).

        temperature 0 is greedy (argmax); otherwise softmax(logits / temperature), restricted to
        the top_k most likely tokens when top_k is given. The prompt is one normal forward that
        fills the caches (prefill); each new token is one cached decoding step. Dropout stays as
        the module's mode has it (the paper trains with 0; call eval() otherwise).
        """
        if tokens.dim() != 2 or tokens.shape[1] < 1:
            raise ValueError(f"generate: tokens must be (B, P) with P >= 1, got shape {tuple(tokens.shape)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"generate: max_new_tokens={max_new_tokens!r} is invalid; allowed: an int >= 0")
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ValueError(f"generate: temperature={temperature!r} is invalid; allowed: a number >= 0 "
                             "(0 = greedy)")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"generate: top_k={top_k!r} is invalid; allowed: None or an int >= 1")
        caches = self.new_caches(tokens.shape[0], tokens.shape[1] + max_new_tokens)
        out = [tokens]
        logits = self(tokens, caches=caches)[:, -1]  # prefill
        for i in range(max_new_tokens):
            out.append(sample_next(logits, temperature, top_k, generator))
            if i + 1 < max_new_tokens:
                logits = self(out[-1], caches=caches)[:, -1]
        return torch.cat(out, 1)

    def set_attention(self, attend: nn.Module) -> None:
        """Use `attend` (called as attend(q, k, v, causal=True) on (B, N, H, D)) in every layer."""
        for block in self.blocks:
            block.attn.attend = attend

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def training_flops_per_token(self, seq_len: int) -> float:
        """Matmul FLOPs of one training token (forward + backward) at sequence length seq_len.

        Weights: 6 FLOPs per weight-matrix parameter per token (2 forward, 4 backward), the output
        head included. Attention: the variant's own forward count at seq_len, times
        longnet.flops.training_step_flops' forward+backward factor, per token.
        """
        cfg = self.cfg
        matmul_params = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        matmul_params += self.embed.weight.numel()  # the tied output head is a matmul
        attend = self.blocks[0].attn.attend
        attention = training_step_flops(attend.flops(seq_len, cfg.head_dim, causal=True))
        return 6.0 * matmul_params + cfg.n_layer * attention / seq_len
