"""common.models: tiny presets, the two packaged real models, LoRA, and the not-found errors."""

import pytest
import torch

from common import models


@pytest.mark.parametrize("family", models.FAMILIES)
@pytest.mark.parametrize("preset", sorted(models.TINY_PRESETS))
def test_tiny_presets_have_head_size_32_and_run(preset, family):
    config = models.tiny_config(preset, vocab_size=97, family=family)
    assert config.hidden_size // config.num_attention_heads == 32
    assert config.model_type == family
    model = models.build_tiny_causal_lm(preset, vocab_size=97, seed=0, family=family)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 97)
    assert torch.isfinite(logits).all()


def test_tiny_sizes_grow_student_mid_teacher():
    sizes = [
        models.count_parameters(models.build_tiny_causal_lm(p, vocab_size=512))
        for p in ("tiny-student", "tiny-mid", "tiny-teacher")
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_same_seed_same_weights_other_seed_differs():
    a = models.build_tiny_causal_lm("tiny-student", vocab_size=64, seed=3)
    b = models.build_tiny_causal_lm("tiny-student", vocab_size=64, seed=3)
    c = models.build_tiny_causal_lm("tiny-student", vocab_size=64, seed=4)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_build_does_not_disturb_global_rng():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    models.build_tiny_causal_lm("tiny-student", vocab_size=32, seed=99)
    assert torch.equal(torch.rand(3), expected)


def test_bad_preset_and_family_name_the_valid_ones():
    with pytest.raises(ValueError, match="tiny-student"):
        models.tiny_config("tiny-huge", vocab_size=10)
    with pytest.raises(ValueError, match="qwen2"):
        models.tiny_config("tiny-student", vocab_size=10, family="gpt5")


def test_missing_local_dir_is_one_clear_line(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="no such directory"):
        models.load_causal_lm(tmp_path / "absent")


def test_unreachable_hub_id_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotFoundError) as err:
        models.load_tokenizer("nobody-here/no-such-model-xyz")
    assert "\n" not in str(err.value) and "no-such-model-xyz" in str(err.value)


def test_save_and_reload_tiny_roundtrip(tmp_path):
    model = models.build_tiny_causal_lm("tiny-student", vocab_size=50, seed=1)
    model.save_pretrained(tmp_path)
    again = models.load_causal_lm(tmp_path, dtype=torch.float32)
    ids = torch.tensor([[4, 5, 6, 7]])
    model.eval()
    assert torch.allclose(model(ids).logits, again(ids).logits)


def test_lora_trains_only_adapters():
    model = models.build_tiny_causal_lm("tiny-student", vocab_size=40, seed=0)
    lora = models.add_lora(model, r=4, alpha=8)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([[1, 2, 3, 4]])
    loss = lora(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for n, p in lora.named_parameters() if p.requires_grad)


def test_minilm_encoder_gives_real_embeddings():
    tok = models.load_tokenizer("minilm-l6")
    enc = models.load_encoder("minilm-l6")
    batch = tok(
        ["a cat sat on the mat", "a kitten sat on a rug", "stock prices fell sharply"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = enc(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sim = emb @ emb.T
    assert enc.config.hidden_size == 384
    # A trained encoder puts the paraphrase closer than the unrelated sentence; random weights would not.
    assert sim[0, 1] > sim[0, 2] + 0.2


@pytest.mark.slow
def test_smollm2_converts_once_and_answers():
    path = models.smollm2_dir()
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    tok = models.load_tokenizer("smollm2-135m-instruct")
    lm = models.load_causal_lm("smollm2-135m-instruct", dtype=torch.float32)
    assert models.count_parameters(lm) > 100_000_000
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = lm.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1] :])
    assert models.smollm2_dir() == path  # cached: the second call does not convert again


def test_lora_on_the_head_as_the_release_unless_it_is_tied(caplog):
    untied = models.build_tiny_causal_lm("tiny-student", vocab_size=40, seed=0, tie_word_embeddings=False)
    lora = models.add_lora(untied, r=4, alpha=4, target_modules="all-linear+head")
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert any("lm_head.lora_A" in n for n in names) and any("q_proj.lora_A" in n for n in names)
    plain = models.add_lora(
        models.build_tiny_causal_lm("tiny-student", vocab_size=40, seed=0, tie_word_embeddings=False), r=4
    )
    assert not any("lm_head" in n for n, p in plain.named_parameters() if p.requires_grad)  # all-linear
    tied = models.build_tiny_causal_lm("tiny-student", vocab_size=40, seed=0)  # tie_word_embeddings=True
    with caplog.at_level("INFO", logger="common.models"):
        lora = models.add_lora(tied, r=4, alpha=4, target_modules="all-linear+head")
    assert not any("lm_head" in n for n, p in lora.named_parameters() if p.requires_grad)
    assert "tied to the input embeddings" in caplog.text
