"""A BPE tokenizer trained on the toy world, saved as a Hugging Face fast tokenizer.

Digits are split one per token (`Digits(individual_digits=True)`) so arithmetic is learnable by tiny
models; words are BPE pieces. Special tokens: `<pad>` (0), `<s>` (1), `</s>` (2, end of answer),
`<unk>` (3). Every code path then uses the normal `AutoTokenizer` API:

    tok = world_tokenizer(WorldConfig(seed=0))     # trained once, cached under runs/tokenizers/<hash>/
    ids = tok(problem.prompt() + " " + rationale + tok.eos_token)["input_ids"]

A chat template is included for pipelines that format prompts as messages: a user message becomes
`Question: <content>\nAnswer:` and an assistant message ` <content></s>` (the plain prompt format).
"""

from __future__ import annotations

from dataclasses import asdict

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from common import stages
from common.synthetic.world import DEFAULT_WORLD, WorldConfig, make_splits, valid_rationales

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\nAnswer:"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}</s>{% endif %}{% endfor %}"
)
TOKENIZER_VERSION = 2


def corpus(cfg: WorldConfig) -> list[str]:
    texts = []
    for problem in make_splits(cfg)["train"]:
        texts.append(problem.prompt())
        texts.extend(valid_rationales(problem, 2))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = 600) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # byte-level pieces keep the whitespace inside tokens, so decode() restores the text exactly (and
    # transformers keeps a ByteLevel decoder as it is when it reloads the tokenizer)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tokenizer_key(cfg: WorldConfig, vocab_size: int) -> str:
    """The cache key of the world's tokenizer (`common.stages.stage_hash` of its settings)."""
    return stages.stage_hash({"world": asdict(cfg), "vocab": vocab_size, "v": TOKENIZER_VERSION})


def world_tokenizer(cfg: WorldConfig = DEFAULT_WORLD, vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """The world's tokenizer, trained on first use and cached (atomic write) by config hash."""
    out = stages.runs_dir() / "tokenizers" / tokenizer_key(cfg, vocab_size)
    if not (out / "tokenizer.json").exists():
        with stages.atomic_dir(out, replace=False) as tmp:  # two runs may race here: same content either way
            train_tokenizer(corpus(cfg), vocab_size).save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(out)
