"""Shared by the run_rl tests (test_rl.py, test_rl_loop_policy_loss.py): a word-level tokenizer over 16
letters, the prompts and the learnable-target reward. Tests import the plain names with
`from tests.common.conftest import PROMPTS, target_reward`; `tokenizer` is a fixture (`word_tokenizer()`
outside pytest)."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORDS = [chr(ord("a") + i) for i in range(16)]
TARGET = "c"
PROMPTS = ["a b", "d e f", "g", "h i j k", "l m", "n", "o p a", "b b"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """The word-level tokenizer: <pad> <s> </s> <unk>, then WORDS (ids 4...)."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


def target_reward(tokenizer):
    """Token reward 1 on every response token equal to TARGET (a target a tiny policy can learn)."""
    target = tokenizer.convert_tokens_to_ids(TARGET)

    def reward_fn(ro):
        return (ro.input_ids == target).float() * ro.response_mask

    return reward_fn
