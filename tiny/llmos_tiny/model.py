"""A small llama-architecture transformer in PyTorch, laid out so it exports to GGUF as is.

Contract: :class:`Tiny` is llama as llama.cpp computes it: RMSNorm before attention and
before the MLP, multi-head attention with rotary embeddings on adjacent pairs
(llama.cpp's ``NORM`` rope, base ``rope_theta``), SwiGLU, no biases, an untied output
matrix. Every ``nn.Linear`` weight is ``(out, in)``, the layout GGUF stores, so export
copies tensors without permuting them. The same seed gives the same initial weights.

Not covered: grouped-query attention, KV caching (training only; inference is
llama.cpp's job), dropout, mixed precision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab_size: int
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 6
    n_ff: int = 512
    n_ctx: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False  # output matrix = embedding matrix: copying a token from the context is easier

    def as_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(config: Config, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    head_dim = config.n_embd // config.n_head
    freqs = config.rope_theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of each head: x is (batch, heads, time, head_dim)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        d, self.n_head = config.n_embd, config.n_head
        self.attn_norm = RMSNorm(d, config.norm_eps)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.ffn_norm = RMSNorm(d, config.norm_eps)
        self.gate = nn.Linear(d, config.n_ff, bias=False)
        self.up = nn.Linear(d, config.n_ff, bias=False)
        self.down = nn.Linear(config.n_ff, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (w(h).view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(attended.transpose(1, 2).reshape(b, t, d))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Tiny(nn.Module):
    cos: torch.Tensor  # rotary tables, registered as buffers
    sin: torch.Tensor

    def __init__(self, config: Config, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.output = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:  # GGUF still gets both tensors (llama.cpp reads output.weight as usual)
            self.output.weight = self.embed.weight
        for name, param in self.named_parameters():
            if param.dim() == 2:
                # residual projections start small so a deep stack begins near the identity
                scale = 1 / math.sqrt(2 * config.n_layer) if name.endswith(("wo.weight", "down.weight")) else 1.0
                nn.init.normal_(param, std=0.02 * scale)
        cos, sin = rope_tables(config, config.n_ctx)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, time, vocab) for tokens (batch, time)."""
        return self.output(self.hidden(tokens))

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        return self.norm(x)

    def loss(self, tokens: torch.Tensor, mask: torch.Tensor, copy_weight: float = 1.0) -> torch.Tensor:
        """Mean next-token cross-entropy over positions whose *target* has ``mask`` set.

        Only those positions go through the output matrix: most of a tool-use
        transcript is context (pages, results) that is read but not predicted. With
        ``copy_weight`` > 1, targets that copy the context (see :func:`copies_context`)
        weigh that much more than the rest.
        """
        hidden = self.hidden(tokens[:, :-1])
        chosen = mask[:, 1:].bool()
        if not chosen.any():
            return hidden.sum() * 0.0
        logits = self.output(hidden[chosen])
        losses = F.cross_entropy(logits, tokens[:, 1:][chosen], reduction="none")
        if copy_weight == 1.0:
            return losses.mean()
        weights = 1.0 + (copy_weight - 1.0) * copies_context(tokens, mask)[chosen].float()
        return (losses * weights).sum() / weights.sum()

    @torch.no_grad()
    def greedy(self, tokens: list[int], n: int, stop: set[int] | frozenset[int] = frozenset()) -> list[int]:
        out = list(tokens)
        for _ in range(n):
            next_token = int(self(torch.tensor([out[-self.config.n_ctx :]]))[0, -1].argmax())
            out.append(next_token)
            if next_token in stop:
                break
        return out[len(tokens) :]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def copies_context(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, time - 1) booleans: position i's target continues a bigram of the context.

    True where ``(tokens[i], tokens[i + 1])`` also stands earlier at ``(j, j + 1)`` with
    ``j + 1`` outside ``mask`` (the user's words, a page, a result): the next token can
    be copied from what the model read, which is the skill small models learn last.
    """
    _, t = tokens.shape
    now, target = tokens[:, :-1], tokens[:, 1:]
    read = ~mask[:, 1:].bool()  # bigrams whose second token the model read, not wrote
    same = (now[:, :, None] == now[:, None, :]) & (target[:, :, None] == target[:, None, :])
    earlier = torch.ones(t - 1, t - 1, dtype=torch.bool, device=tokens.device).tril(-1)
    return (same & earlier & read[:, None, :]).any(-1)
