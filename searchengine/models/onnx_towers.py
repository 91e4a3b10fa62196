"""The torch modules each ONNX graph is exported from: what the graphs compute.

``onnx_export.py`` exports them; ``scripts/bench_rclip.py`` exports the image and text
towers the same way in rclip's layout. The text tower of a causal CLIP (``is_causal``)
is exported as ``CausalTextTower``: the token lookup stays outside the graph and the
sequence may stop at the end token.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CausalTextTower", "ImageTower", "TextTower", "is_causal"]


def is_causal(model: Any) -> bool:
    """A CLIP text tower whose pooled token sees only the tokens before it."""
    mask = getattr(model, "attn_mask", None)
    if type(model).__name__ != "CLIP" or mask is None or not hasattr(model, "token_embedding"):
        return False
    if getattr(model, "text_pool_type", None) not in ("argmax", "eos"):
        return False
    upper = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
    return bool(torch.equal(torch.isinf(mask), upper))


class ImageTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class TextTower(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


class CausalTextTower(torch.nn.Module):
    """``CLIP.encode_text`` on (token embeddings, tokens) of any length up to the context.

    The token lookup stays outside the graph (a memory-mapped table: 100 MB less to
    load per query) and the sequence may stop at the end token; verification
    compares with ``encode_text`` on the full, padded context.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        m = self.model
        length = tokens.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = embedded.to(cast) + m.positional_embedding[:length].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        eos = getattr(m, "text_eos_id", None)
        x = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=eos)
        projection = m.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
