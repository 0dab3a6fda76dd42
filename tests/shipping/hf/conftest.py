"""Real ``transformers`` models built from small configs with random weights (never downloaded)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

VOCAB = 64


@pytest.fixture(autouse=True)
def quiet_transformers() -> None:
    # transformers logs advice about attention masks and pad tokens for toy configs; the tests
    # pass masks where it matters, and its logger must not decide a test's outcome.
    from transformers.utils import logging

    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="transformers")


def _gpt2(**overrides: Any) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    settings: dict[str, Any] = dict(
        n_layer=2,
        n_embd=32,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    config = GPT2Config(**{**settings, **overrides})
    return GPT2LMHeadModel(config)


def _llama(**overrides: Any) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    settings: dict[str, Any] = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    config = LlamaConfig(**{**settings, **overrides})
    return LlamaForCausalLM(config)


@pytest.fixture
def gpt2() -> Callable[..., nn.Module]:
    """``gpt2(seed=0)``: a 2-layer, 32-wide GPT-2 LM with random weights drawn from ``seed``."""

    def build(seed: int = 0, **overrides: Any) -> nn.Module:
        torch.manual_seed(seed)
        return _gpt2(**overrides)

    return build


@pytest.fixture
def llama() -> Callable[..., nn.Module]:
    """``llama(seed=0)``: a 2-layer, 32-wide Llama LM (grouped-query attention) with random weights."""

    def build(seed: int = 0, **overrides: Any) -> nn.Module:
        torch.manual_seed(seed)
        return _llama(**overrides)

    return build


class Logits(nn.Module):
    """``input_ids -> logits`` without a cache: what is exported (a plain tensor in and out)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits
