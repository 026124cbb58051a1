"""Sliding-window self-attention without a dense T x T mask.

diffusers' ACE-Step DiT enforces the sliding window (|i - j| <= w, docs/design.md §3.2, §8 Q3) with a dense
additive [T, T] mask, which also keeps SDPA off its fused no-mask kernels. Here:
- with flash-attn installed on CUDA, diffusers' own "flash" backend takes the window natively;
- otherwise `BandedAttnProcessor` computes the same attention exactly, block by block: queries
  in blocks of w, each block attending to its 3w neighbouring keys with a small [w, 3w] mask.
  Memory and work grow with T * 3w instead of T^2 (sequences up to 4.5 w use one masked call). Full and cross attention keep diffusers'
  processor, which calls SDPA with no mask (fused kernels).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import AttentionBackendName
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.ace_step_transformer import AceStepAttnProcessor2_0


def sliding_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """Exact bidirectional sliding-window attention, q [B, L, H, D]; k, v [B, L, KV, D] -> [B, L, H, D].

    Short sequences need no band: when every pair is within the window there is no mask at all,
    and up to 4.5 w one dense masked call is faster than the blocks: they copy each key and value
    three times and pad the last block, which costs more than the masked-out work until about
    4.5 w (fused CPU kernel, one thread: equal at 4.3-5 w, banded 0.75x the time at 5.9 w and 0.39x
    at 11.7 w; bench/train_step.py shows the whole step)."""
    L = q.shape[1]
    if L - 1 <= window or L <= 4.5 * window:
        groups = q.shape[2] // k.shape[2]
        i = torch.arange(L, device=q.device)
        keep = None if L - 1 <= window else (i[:, None] - i[None, :]).abs() <= window
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(groups, 1),
                                             v.transpose(1, 2).repeat_interleave(groups, 1), attn_mask=keep,
                                             scale=scale)
        return out.transpose(1, 2)
    return banded_attention(q, k, v, window, scale)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """Sliding-window attention in blocks of `window` queries x 3 `window` keys (memory ~ L * 3w).

    The blocks go to SDPA as a 4-D batch [B * blocks, H, w, D] with a [w, 3w] mask per block: SDPA's
    fused kernels take only 4-D inputs, and a 5-D call falls back to the unfused math path (an explicit
    softmax over every block), which made this path slower than the dense mask it replaces."""
    B, L, H, D = q.shape
    groups = H // k.shape[2]
    block = window
    nb = -(-L // block)
    pad_q = nb * block - L
    span = block + 2 * window
    q = F.pad(q, (0, 0, 0, 0, 0, pad_q))                                    # [B, nb*w, H, D]
    # keys padded by `window` on the left and enough on the right for every block's 3w span
    k = F.pad(k, (0, 0, 0, 0, window, pad_q + window))
    v = F.pad(v, (0, 0, 0, 0, window, pad_q + window))
    q_blocks = q.unflatten(1, (nb, block)).permute(0, 1, 3, 2, 4).flatten(0, 1)   # [B*nb, H, w, D]
    # GQA: KV head j serves query heads j*groups ... (repeat-interleave, docs/design.md §3.2)
    k_blocks = k.unfold(1, span, block).permute(0, 1, 2, 4, 3).repeat_interleave(groups, 2).flatten(0, 1)
    v_blocks = v.unfold(1, span, block).permute(0, 1, 2, 4, 3).repeat_interleave(groups, 2).flatten(0, 1)
    q_pos = torch.arange(nb * block, device=q.device).view(nb, block, 1)
    k_pos = (torch.arange(nb, device=q.device) * block).view(nb, 1, 1) - window + torch.arange(span, device=q.device)
    keep = ((q_pos - k_pos).abs() <= window) & (k_pos >= 0) & (k_pos < L)  # [nb, w, 3w]
    keep = keep[:, None].repeat(B, 1, 1, 1)                                 # [B*nb, 1, w, 3w]
    out = F.scaled_dot_product_attention(q_blocks, k_blocks, v_blocks, attn_mask=keep, scale=scale)
    return out.unflatten(0, (B, nb)).permute(0, 1, 3, 2, 4).flatten(1, 2)[:, :L]   # [B, L, H, D]


class BandedAttnProcessor(AceStepAttnProcessor2_0):
    """diffusers' ACE-Step processor, with `banded_attention` for sliding self-attention layers."""

    # Declared as a flash-style backend so the DiT skips building its dense sliding mask (it only
    # builds one for non-flash processors); this processor never dispatches through that backend.
    _attention_backend = AttentionBackendName.FLASH

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (attn.heads, attn.head_dim)))
        key = attn.norm_k(attn.to_k(hidden_states).unflatten(-1, (attn.kv_heads, attn.head_dim)))
        value = attn.to_v(hidden_states).unflatten(-1, (attn.kv_heads, attn.head_dim))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
        out = sliding_attention(query, key, value, attn.sliding_window, attn.scaling)
        out = attn.to_out[0](out.flatten(2, 3).to(query.dtype))
        return attn.to_out[1](out)


def flash_attn_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None


def use_fast_attention(decoder: torch.nn.Module, device: torch.device) -> str:
    """Install the fastest exact attention for `device`; returns which one ("flash" or "banded")."""
    if flash_attn_available(device):
        decoder.set_attention_backend("flash")
        return "flash"
    for layer, kind in zip(decoder.layers, decoder.layer_types):
        if kind == "sliding_attention":
            layer.self_attn.set_processor(BandedAttnProcessor())
    return "banded"
