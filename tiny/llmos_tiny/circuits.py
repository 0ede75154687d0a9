"""Plant a working induction circuit in a fresh :class:`~llmos_tiny.model.Tiny` before training.

Contract: :func:`plant_induction` overwrites part of a freshly initialised model so that,
at step 0, it copies: wherever the two tokens before position ``i`` occurred earlier in
the context, the model predicts the token that followed them there. The circuit is the
textbook one (Olsson et al., 2022), written into the weights instead of waiting for it:

- the embedding keeps each token's identity in ``CONTENT`` (32 dims), a constant in
  ``BIAS`` and zeros in ``PREV1``/``PREV2``;
- layer 0, heads 0 and 1 are previous-token heads: a content-free query and key on the
  ``BIAS`` dim, phased on the high-frequency rotary pairs so that the score peaks one
  (head 0) or two (head 1) positions back; they copy that token's ``CONTENT`` into
  ``PREV1`` / ``PREV2``;
- layer 1, every head matches ``(CONTENT, PREV1)`` at the query against
  ``(PREV1, PREV2)`` at the key, on the low-frequency rotary pairs (which barely rotate
  over a context, so the match does not depend on distance), each head through its own
  random projection, and adds the ``CONTENT`` of the matched position (the token that
  followed) to the residual, where the tied output matrix reads it as the next token.

Everything else keeps its random initialisation, and training is free to change all of
it. Why: measured on this model size (docs/llmos-tiny.md), gradient descent does not find
induction from a random start within the CPU budget (a random-offset copy task stays at
chance for 1,500 steps, in this model and in a plain GPT), while every copy in a
transcript needs it.

Needs: tied embeddings, ``n_embd`` 128, head width 32, at least 2 layers and a large
``rope_theta`` (:data:`ROPE_THETA`) so that enough rotary pairs stay put over 3,000 tokens.
Not covered: other sizes (it raises), grouped-query attention.
"""

from __future__ import annotations

import math

import torch

from llmos_tiny.model import Tiny

ROPE_THETA = 1e12  # pairs 5..15 rotate less than 0.6 rad over 3,000 tokens
CONTENT = slice(0, 32)
BIAS = 32
PREV1 = slice(64, 96)
PREV2 = slice(96, 128)
HEAD = 32
POSITIONAL_PAIRS = 5  # pairs 0..4 place the previous-token heads; 5..15 carry the match
CONTENT_SCALE = 0.2  # std of an embedding's CONTENT entries
POSITIONAL_GAIN = 2.0  # sharpness of the previous-token heads (per-pair amplitude)
PREV_GAIN = 0.15
MATCH_GAIN = 3.0  # sharpness of the matching heads
COPY_GAIN = 3.0  # how loud the copied token is against the current one


def plant_induction(model: Tiny, seed: int = 0) -> Tiny:
    """Write the circuit into ``model`` (in place) and return it."""
    c = model.config
    if not (c.tie_embeddings and c.n_embd == 128 and c.n_embd // c.n_head == HEAD and c.n_layer >= 2):
        raise ValueError("plant_induction needs tied embeddings, n_embd 128, 32-wide heads and 2+ layers")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _embedding(model, generator)
        first, second = model.blocks[0], model.blocks[1]
        for head, back in ((0, 1), (1, 2)):
            _previous_token_head(first, head, back, PREV1 if back == 1 else PREV2, c.rope_theta)
        for head in range(c.n_head):
            _matching_head(second, head, c.n_head, generator)
    return model


def _embedding(model: Tiny, generator: torch.Generator) -> None:
    weight = model.embed.weight
    content = torch.randn(weight.shape[0], 32, generator=generator)
    # every row the same norm: the previous-token heads' scores scale with it, and a
    # spread of norms would outvote the small positional margin
    weight[:, CONTENT] = content / content.norm(dim=1, keepdim=True) * CONTENT_SCALE * math.sqrt(32)
    weight[:, BIAS] = 1.0
    weight[:, 64:] = 0.0


def _rows(head: int) -> slice:
    return slice(head * HEAD, (head + 1) * HEAD)


def _frequencies(theta: float) -> torch.Tensor:
    return theta ** (-torch.arange(0, HEAD, 2, dtype=torch.float64) / HEAD)


def _previous_token_head(block, head: int, back: int, into: slice, theta: float) -> None:
    """Query and key read only BIAS; on each positional pair the query leads the key by
    ``back`` steps of that pair's rotation, so the score peaks ``back`` positions back."""
    rows = _rows(head)
    for w in (block.wq, block.wk, block.wv):
        w.weight[rows] = 0.0
    angles = _frequencies(theta)[:POSITIONAL_PAIRS] * back
    for pair, angle in enumerate(angles.tolist()):
        even = rows.start + 2 * pair
        # rotary turns a pair by position * frequency: a query leading the key by
        # back * frequency meets it at angle 0 exactly ``back`` positions later
        block.wq.weight[even, BIAS] = POSITIONAL_GAIN * math.cos(angle)
        block.wq.weight[even + 1, BIAS] = -POSITIONAL_GAIN * math.sin(angle)
        block.wk.weight[even, BIAS] = POSITIONAL_GAIN
    block.wv.weight[rows, CONTENT] = torch.eye(HEAD)
    block.wo.weight[:, rows] = 0.0
    # h's CONTENT is the embedding over its RMS (~0.13): this puts PREV on the embedding's scale
    block.wo.weight[into, rows] = torch.eye(HEAD) * PREV_GAIN


def _matching_head(block, head: int, n_head: int, generator: torch.Generator) -> None:
    rows = _rows(head)
    for w in (block.wq, block.wk, block.wv):
        w.weight[rows] = 0.0
    width = (HEAD - 2 * POSITIONAL_PAIRS) // 2  # 11 dims match the current token, 11 the one before
    now = slice(rows.start + 2 * POSITIONAL_PAIRS, rows.start + 2 * POSITIONAL_PAIRS + width)
    before = slice(now.stop, rows.stop)
    project = torch.linalg.qr(torch.randn(32, 32, generator=generator))[0][:width] * MATCH_GAIN
    project2 = torch.linalg.qr(torch.randn(32, 32, generator=generator))[0][: before.stop - before.start] * MATCH_GAIN
    block.wq.weight[now, CONTENT] = project
    block.wk.weight[now, PREV1] = project
    block.wq.weight[before, PREV1] = project2
    block.wk.weight[before, PREV2] = project2
    block.wv.weight[rows, CONTENT] = torch.eye(HEAD)
    block.wo.weight[:, rows] = 0.0
    block.wo.weight[CONTENT, rows] = torch.eye(HEAD) * COPY_GAIN / n_head
