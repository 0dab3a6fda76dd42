"""Causal sequence seed blueprints for Esper (topology ``transformer``, tensors ``(B, T, D)``).

The pack registers itself through the ``esper.blueprints`` entry point; users reach the
blueprints through the core registry (``esper_core.create_blueprint("transformer", "mlp", 384)``).
The module classes and count functions are exported for direct use and for tests.

Names resolve lazily (PEP 562): registering the pack must not import FlexAttention, which
pulls in ``torch._dynamo`` and would roughly double the cold start of every process that
merely lists blueprints. The FlexAttention machinery loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "BLUEPRINTS": "esper_blueprints_transformer.catalog",
    "TOPOLOGY": "esper_blueprints_transformer.catalog",
    "CausalSelfAttentionSeed": "esper_blueprints_transformer.attention",
    "build_attention": "esper_blueprints_transformer.attention",
    "merge_heads": "esper_blueprints_transformer.attention",
    "split_heads": "esper_blueprints_transformer.attention",
    "FlexAttentionSeed": "esper_blueprints_transformer.flex",
    "build_flex_attention": "esper_blueprints_transformer.flex",
    "uses_flex_attention": "esper_blueprints_transformer.flex",
    "LoRASeed": "esper_blueprints_transformer.lora",
    "DEFAULT_MASK_CACHE_SIZE": "esper_blueprints_transformer.mask_cache",
    "BlockMaskCache": "esper_blueprints_transformer.mask_cache",
    "build_causal_block_mask": "esper_blueprints_transformer.mask_cache",
    "causal_mask_mod": "esper_blueprints_transformer.mask_cache",
    "MLPSeed": "esper_blueprints_transformer.mlp",
    "build_mlp": "esper_blueprints_transformer.mlp",
    "NormSeed": "esper_blueprints_transformer.norm",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'esper_blueprints_transformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
