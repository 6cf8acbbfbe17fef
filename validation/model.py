"""A small GPT-2-style decoder (nanoGPT layout) and its FLOPs-per-token estimate.

Built for throughput on the GPU path: the vocabulary is padded to a multiple of 128 (50,257 -> 50,304 for
GPT-2, so the classifier matmul hits tensor-core friendly shapes), the token embedding is tied to the
classifier, and attention goes through ``F.scaled_dot_product_attention`` so CUDA picks its flash kernel.
The same code runs the tiny CPU configuration of the tests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

VOCAB_PAD_MULTIPLE = 128


def padded_vocab_size(vocab_size: int, multiple: int = VOCAB_PAD_MULTIPLE) -> int:
    """Round up to a multiple of ``multiple``: 50,257 -> 50,304 (llm.c's Vp), 128,256 stays."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


@dataclass(frozen=True)
class GPTConfig:
    """Shape of the model. ``vocab_size`` is the tokenizer's; the embedding uses :attr:`padded_vocab`."""

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def padded_vocab(self) -> int:
        return padded_vocab_size(self.vocab_size)

    def to_dict(self) -> dict:
        return {**asdict(self), "padded_vocab": self.padded_vocab}


def count_params(config: GPTConfig) -> int:
    """Parameters of :class:`GPT` for ``config`` (tied embedding counted once), without building it.

    GPT-2 124M with the padded vocabulary: 124,475,904, the figure llm.c prints.
    """
    c, v, t, layers = config.n_embd, config.padded_vocab, config.block_size, config.n_layer
    b = 1 if config.bias else 0
    per_layer = (
        2 * (c + b * c)  # two LayerNorms
        + 3 * c * c
        + b * 3 * c  # qkv
        + c * c
        + b * c  # attention projection
        + 4 * c * c
        + b * 4 * c  # MLP up
        + 4 * c * c
        + b * c  # MLP down
    )
    return v * c + t * c + layers * per_layer + (c + b * c)


def flops_per_token(config: GPTConfig, seq_len: int | None = None) -> int:
    """Training FLOPs (forward + backward) per token, llm.c's ``gpt2_estimate_mfu`` formula.

    ``6 N`` for the weight matmuls (N = all parameters: the tied embedding is the classifier's weight) plus
    ``6 L C T`` for the attention score and value matmuls over a causal ``T``-token context (half of the
    dense ``12 L C T`` nanoGPT counts, since a causal flash kernel skips the masked half). GPT-2 124M at
    T = 1024: 6 x 124,475,904 + 6 x 12 x 768 x 1024 = 803,478,528.
    """
    t = config.block_size if seq_len is None else seq_len
    return 6 * count_params(config) + 6 * config.n_layer * config.n_embd * t


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_scaled = True  # type: ignore[attr-defined]
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        # flash attention on CUDA (bf16/fp16), memory-efficient or math kernel elsewhere
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_scaled = True  # type: ignore[attr-defined]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2: learned positions, pre-LayerNorm blocks, GELU MLP, tied token embedding / classifier."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab, config.n_embd),
                "wpe": nn.Embedding(config.block_size, config.n_embd),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                "ln_f": nn.LayerNorm(config.n_embd, bias=config.bias),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 L) so the stream stays O(1)."""
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_scaled", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, padded_vocab)`` and, with targets, the mean cross-entropy in nats.

        The padded logit columns are never targets; like nanoGPT, training pushes them down with every
        other unused id rather than masking them (a mask would cost one more pass over the logits).
        """
        _, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss
