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
    sample_inverse_cdf,
    sample_next,
    save_for_vllm,
)
from common.generation_vllm import prompt_seeds
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
    assert len({tuple(ids) for ids in a[:4]}) > 1  # the n samples of one prompt are not copies


def test_greedy_is_deterministic_and_top_logprobs_are_sorted(hf):
    outs = hf.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=6, logprobs=4))
    assert outs[0].token_ids == outs[1].token_ids
    for o in outs:
        for tok, lp, top in zip(o.token_ids, o.logprobs, o.top_logprobs):
            assert len(top) == 4 and tok in top  # greedy: the argmax is among the top 4
            assert top[tok] == pytest.approx(lp) and lp == pytest.approx(max(top.values()))
            assert list(top.values()) == sorted(top.values(), reverse=True) and next(iter(top)) == tok


def test_sampled_token_outside_the_top_k_is_added_to_top_logprobs(hf):
    outs = hf.generate(PROMPTS, SamplingParams(n=4, temperature=2.0, max_tokens=8, logprobs=1, seed=0))
    sizes = {len(top) for o in outs for top in o.top_logprobs}
    assert sizes == {1, 2}  # k=1 plus the sampled token when it is not the argmax (T=2 makes that common)
    for o in outs:
        for tok, lp, top in zip(o.token_ids, o.logprobs, o.top_logprobs):
            assert top[tok] == lp and list(top.values()) == sorted(top.values(), reverse=True)


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


def test_eos_stops_and_is_kept_in_token_ids_not_text(model, tokenizer):
    free = HFGenerator(model, tokenizer).generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=8))[0]
    eos_model = copy.deepcopy(model)
    eos_model.generation_config.eos_token_id = free.token_ids[2]  # make the third greedy token the EOS
    out = HFGenerator(eos_model, tokenizer).generate(
        PROMPTS[:1], SamplingParams(temperature=0, max_tokens=8)
    )[0]
    first = free.token_ids.index(free.token_ids[2])
    assert out.finish_reason == "stop" and out.token_ids == free.token_ids[: first + 1]
    assert out.logprobs == pytest.approx(free.logprobs[: first + 1], abs=1e-6)
    assert out.text == tokenizer.decode(free.token_ids[:first], skip_special_tokens=True)


def test_max_tokens_ends_with_length(hf):
    outs = hf.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=3))
    assert all(len(o.token_ids) == 3 and o.finish_reason == "length" for o in outs)


def test_static_cache_matches_dynamic_cache(model, tokenizer):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=4, logprobs=2)
    dynamic = HFGenerator(model, tokenizer, cache="dynamic").generate(PROMPTS, params)
    static = HFGenerator(model, tokenizer, cache="static").generate(PROMPTS, params)
    assert [o.token_ids for o in dynamic] == [o.token_ids for o in static]
    for a, b in zip(dynamic, static):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5) and a.finish_reason == b.finish_reason


@pytest.mark.slow
def test_compiled_static_decode_matches_eager(model, tokenizer):
    params = SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=4)
    eager = HFGenerator(model, tokenizer, cache="dynamic").generate(PROMPTS, params)
    compiled = HFGenerator(model, tokenizer, cache="static", compile=True).generate(PROMPTS, params)
    assert [o.token_ids for o in eager] == [o.token_ids for o in compiled]
    for a, b in zip(eager, compiled):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_cpu_never_compiles_unless_asked(model, tokenizer):
    auto = HFGenerator(model, tokenizer)
    assert not auto.static and auto._decode_step(10**12) is model
    static = HFGenerator(model, tokenizer, cache="static")
    assert static._decode_step(10**12) is model  # compile=None: CUDA only
    forced = HFGenerator(model, tokenizer, cache="static", compile=True)
    assert forced._decode_step(1) is not model and forced._decode_step(1) is forced._decode_step(2)


def test_train_mode_is_restored(model, tokenizer):
    gen = HFGenerator(model, tokenizer)
    model.train()
    try:
        gen.generate(PROMPTS[:1], SamplingParams(max_tokens=2, seed=0))
        assert model.training
    finally:
        model.eval()
    gen.generate(PROMPTS[:1], SamplingParams(max_tokens=2, seed=0))
    assert not model.training


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
    "params",
    [
        SamplingParams(n=4, temperature=1.0, max_tokens=30, seed=3),
        SamplingParams(n=2, temperature=0.8, top_p=0.9, max_tokens=30, seed=4, logprobs=3),
        SamplingParams(n=2, temperature=1.0, max_tokens=30, seed=5, stop=["7"]),
    ],
)
def test_dropping_ended_rows_keeps_every_rows_tokens(model, tokenizer, monkeypatch, params):
    """Rows that have ended leave the decoded batch (`COMPACT_AT`): the same tokens, texts, finish
    reasons and (to float noise) log-probs as decoding the whole batch to the end."""
    from transformers import DynamicCache

    import common.generation as generation

    def run(compact_at):
        monkeypatch.setattr(generation, "COMPACT_AT", compact_at)
        gen = HFGenerator(model, tokenizer, batch_size=16)
        gen.eos_ids = set(range(10, 22))  # frequent ends: rows stop at very different steps
        return gen.generate(PROMPTS * 2, params)

    selects = []
    original = DynamicCache.batch_select_indices
    monkeypatch.setattr(
        DynamicCache, "batch_select_indices", lambda self, i: (selects.append(len(i)), original(self, i))
    )
    plain = run(0.0)
    assert not selects
    compacted = run(0.75)
    assert selects, "no row ever left the batch: the test shows nothing"
    lengths = [len(o.token_ids) for o in plain]
    assert min(lengths) < max(lengths)
    for a, b in zip(plain, compacted):
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
        if params.logprobs:
            for ta, tb in zip(a.top_logprobs, b.top_logprobs):
                assert list(ta) == list(tb)
                assert list(ta.values()) == pytest.approx(list(tb.values()), abs=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"temperature": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -2},
        {"max_tokens": 0},
        {"stop": "\n"},
        {"stop": [""]},
        {"logprobs": -2},
    ],
)
def test_bad_sampling_params_name_the_field(kwargs):
    with pytest.raises(ValueError, match=f"SamplingParams.{next(iter(kwargs))}"):
        SamplingParams(**kwargs)


def test_auto_backend_follows_the_measured_rule(model, tokenizer, tmp_path, monkeypatch):
    from common import generation
    from common.generation import resolve_backend, saved_parameters

    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert saved_parameters(folder) == sum(p.numel() for p in model.parameters())  # from the headers
    assert saved_parameters(model) is None and saved_parameters(tmp_path / "nothing") is None
    monkeypatch.setattr(generation, "vllm_available", lambda: True)
    monkeypatch.setattr(generation.torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto", folder) == "hf"  # tiny: the HF loop on the CPU
    assert resolve_backend("auto", model) == resolve_backend("auto") == "hf"
    monkeypatch.setattr(generation, "CPU_VLLM_MIN_PARAMS", saved_parameters(folder))
    assert resolve_backend("auto", folder) == "vllm"  # at the threshold: vLLM
    assert resolve_backend("hf", folder) == "hf"  # an explicit backend is kept
    monkeypatch.setattr(generation.torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto", folder) == resolve_backend("auto") == "vllm"  # CUDA: vLLM, any size
    assert resolve_backend("auto", model) == "hf"  # but an in-memory model has no folder for vLLM
    monkeypatch.setattr(generation, "vllm_available", lambda: False)
    assert resolve_backend("auto", folder) == "hf"


def test_bad_backend_and_in_memory_model_for_vllm(model, tokenizer):
    with pytest.raises(ValueError, match="valid: auto, hf, vllm"):
        make_generator(model, tokenizer, backend="tgi")
    with pytest.raises(ValueError, match="save_for_vllm"):
        make_generator(model, tokenizer, backend="vllm")
    assert isinstance(make_generator(model, tokenizer, backend="auto"), HFGenerator)  # no CUDA here
    with pytest.raises(ValueError, match="needs a tokenizer"):
        make_generator(model, backend="hf")
    with pytest.raises(ValueError, match="unknown cache 'paged'"):
        HFGenerator(model, tokenizer, cache="paged")
    with pytest.raises(ValueError, match="compile=True needs cache='static'"):
        HFGenerator(model, tokenizer, cache="dynamic", compile=True)


def test_bad_prompts_are_refused_naming_the_prompt(hf, model):
    with pytest.raises(ValueError, match="HFGenerator: prompt 1 is empty"):
        hf.generate([[5, 6], []], SamplingParams(max_tokens=2))
    with pytest.raises(TypeError, match="prompts must be a list"):
        hf.generate("Tom has 3 apples", SamplingParams(max_tokens=2))
    with pytest.raises(TypeError, match="mix strings and token-id lists"):
        hf.generate(["Tom", [5, 6]], SamplingParams(max_tokens=2))
    too_long = [5] * model.config.max_position_embeddings
    with pytest.raises(ValueError, match="prompt 0 has 512 tokens; the model takes 512"):
        hf.generate([too_long], SamplingParams(max_tokens=2))
    assert hf.generate([], SamplingParams(max_tokens=2)) == []


def test_inverse_cdf_sampling_matches_the_distribution(monkeypatch):
    torch.manual_seed(0)
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0]]).repeat(100_000, 1)
    freq = torch.bincount(sample_inverse_cdf(probs), minlength=5) / 100_000
    assert freq[1] == 0 and freq[4] == 0 and torch.allclose(freq, probs[0], atol=5e-3)
    # the largest uniform torch.rand can give still lands on a token with mass, not the trailing zeros
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, 1 - 2**-24, **kw))
    assert sample_inverse_cdf(torch.tensor([[0.5, 0.5, 0.0, 0.0]])).tolist() == [1]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), [0.5, 0.3, 0.15, 0.05]),
        (SamplingParams(top_k=2), [0.625, 0.375, 0, 0]),
        (SamplingParams(top_p=0.75), [0.625, 0.375, 0, 0]),  # mass before token 2 is 0.8 >= 0.75
        (SamplingParams(temperature=2.0), [0.5**0.5, 0.3**0.5, 0.15**0.5, 0.05**0.5]),
        (SamplingParams(temperature=0.5, top_k=3), [0.25, 0.09, 0.0225, 0]),
    ],
)
def test_sample_next_follows_temperature_top_k_top_p(params, expected):
    torch.manual_seed(0)
    raw = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(50_000, 1)
    freq = torch.bincount(sample_next(raw, params), minlength=4) / 50_000
    target = torch.tensor(expected) / sum(expected)
    assert torch.allclose(freq, target, atol=8e-3) and bool((freq[target == 0] == 0).all())


def test_prompt_seeds_are_distinct_and_deterministic():
    seeds = prompt_seeds(7, 100)
    assert seeds == prompt_seeds(7, 100) and len(set(seeds)) == 100
    assert all(0 <= s < 2**31 for s in seeds) and set(seeds).isdisjoint(prompt_seeds(8, 100))
    assert prompt_seeds(None, 3) == [None, None, None]


@pytest.fixture(scope="module")
def vllm_gen(model, tokenizer, tmp_path_factory):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    path = save_for_vllm(model, tokenizer, tmp_path_factory.mktemp("tiny"))
    return make_generator(path, backend="vllm", seed=0)


@pytest.mark.slow
@pytest.mark.vllm
def test_hf_and_vllm_agree_on_greedy_tokens_and_logprobs(hf, vllm_gen):
    params = SamplingParams(temperature=0, max_tokens=16, logprobs=3)
    a, b = hf.generate(PROMPTS, params), vllm_gen.generate(PROMPTS, params)
    assert [o.prompt_index for o in a] == [o.prompt_index for o in b]
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
        assert x.finish_reason == y.finish_reason and x.text == y.text
        for tx, ty in zip(x.top_logprobs, y.top_logprobs):
            assert list(tx) == list(ty)  # same tokens in the same order (highest first)
            assert list(tx.values()) == pytest.approx(list(ty.values()), abs=1e-4)
    free = a[0]
    stop = free.text[len(free.text) // 2 :][:3]  # this tokenizer's text has no spaces
    cut = [
        g.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=16, stop=[stop]))[0]
        for g in (hf, vllm_gen)
    ]
    assert cut[0].text == cut[1].text and cut[0].token_ids == cut[1].token_ids
    assert cut[0].finish_reason == cut[1].finish_reason == "stop" and len(cut[0].token_ids) < 16


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_sampling_contract_and_seed(vllm_gen):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=7)
    a = vllm_gen.generate(PROMPTS, params)
    b = vllm_gen.generate([p for p in PROMPTS], params)
    assert len(a) == 9 and [o.prompt_index for o in a] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert all(len(o.logprobs) == len(o.token_ids) and all(lp <= 0 for lp in o.logprobs) for o in a)
    assert len({tuple(o.token_ids) for o in a[:3]}) == 3  # the n samples of one prompt differ
    c = vllm_gen.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=8))
    assert [o.token_ids for o in a] != [o.token_ids for o in c]
    same = vllm_gen.generate([PROMPTS[0]] * 2, SamplingParams(temperature=1.0, max_tokens=8, seed=7))
    assert same[0].token_ids != same[1].token_ids  # identical prompts still get their own samples
    # more prompt tokens than one prefill step takes (4096): seeded requests must survive the split
    big = vllm_gen.generate([[5 + i % 50] * 120 for i in range(40)], SamplingParams(max_tokens=2, seed=0))
    assert len(big) == 40 and all(1 <= len(o.token_ids) <= 2 for o in big)
    short = vllm_gen.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=2))
    assert all(len(o.token_ids) == 2 and o.finish_reason == "length" for o in short)
    assert vllm_gen.llm.llm_engine.model_config.max_model_len == 512  # the tiny model's context (< 4096)
    with pytest.raises(ValueError, match="VLLMGenerator: prompt 0 is empty"):
        vllm_gen.generate([[]], params)


@pytest.mark.slow
@pytest.mark.vllm
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
