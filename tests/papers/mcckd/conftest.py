"""Fixtures of the MCC-KD tests."""

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration


@pytest.fixture
def tiny_t5():
    """A builder of a randomly initialised one-layer T5 (a FlanT5-style student) for a tokenizer, seeded 0."""

    def build(tok) -> T5ForConditionalGeneration:
        config = T5Config(
            vocab_size=len(tok),
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=tok.pad_token_id,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        torch.manual_seed(0)
        return T5ForConditionalGeneration(config)

    return build
