"""common.rl's GRPO mode against a peer: trl's GRPOTrainer (`pip install -e .[bench]` brings trl).

1. The first update's gradient on one fixed batch of samples (same prompts, same completions, same oracle
   rewards): trl's `_compute_loss` with each of its loss types vs `common.rl` with `group_advantages` and
   the matching `aggregate` norm (grpo -> "sequence", bnpo -> "token", dr_grpo -> "constant").
2. Both trainers, same student, same oracle reward, same budget, improve the training reward.
"""

from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl", reason="trl is not installed (pip install -e .[bench])")

from common.generation import HFGenerator, SamplingParams  # noqa: E402
from common.models import build_tiny_causal_lm  # noqa: E402
from common.rl import group_advantages, reinforce_loss, rollout, sequence_logprobs  # noqa: E402
from common.scoring import gsm8k_is_correct  # noqa: E402
from common.synthetic.world import make_splits  # noqa: E402

NORMS = {"grpo": "sequence", "bnpo": "token", "dr_grpo": "constant"}
G, MAX_TOKENS = 4, 12


def _trainer(model, tok, tmp_path, loss_type: str, **extra):
    from datasets import Dataset

    problems = make_splits()["train"][:16]
    data = Dataset.from_list([{"prompt": p.prompt(), "answer": str(p.answer)} for p in problems])

    def oracle(completions, answer, **_):
        return [float(gsm8k_is_correct(c, a)) for c, a in zip(completions, answer)]

    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=8,
        num_generations=G,
        max_completion_length=MAX_TOKENS,
        loss_type=loss_type,
        beta=0.0,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        bf16=False,  # trl defaults to bf16 autocast where it can: the comparison is in float32
        logging_steps=1,
        save_strategy="no",
        seed=0,
        **extra,
    )
    return trl.GRPOTrainer(
        model=model, reward_funcs=oracle, args=args, train_dataset=data, processing_class=tok
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", sorted(NORMS))
def test_first_update_gradient_equals_trls(toy_tokenizer, tmp_path, loss_type):
    tok = toy_tokenizer
    model = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    prompts = [p.prompt() for p in make_splits()["train"][:2]]  # of different lengths: trl left-pads them
    params = SamplingParams(n=G, temperature=1.0, max_tokens=MAX_TOKENS, seed=3)
    ro = rollout(HFGenerator(model, tok), tok, prompts, params)
    scores = torch.tensor([float(len(t) % 3 == 0) for t in ro.texts])  # any per-sample score works here
    if scores.std() == 0:
        scores[0] = 1.0 - scores[0]
    adv = group_advantages(scores, ro.prompt_index, "dr_grpo" if loss_type == "dr_grpo" else "grpo")

    model.zero_grad()
    logp = sequence_logprobs(model, ro.input_ids, ro.attention_mask)
    mask = ro.response_mask
    reinforce_loss(logp, adv[:, None] * mask, mask, norm=NORMS[loss_type], max_tokens=MAX_TOKENS).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # trl's inputs: left-padded prompts, right-padded completions, the same tokens
    plen = [len(ro.prompt_ids[i]) for i in range(len(ro))]
    width = max(plen)
    prompt_ids = torch.full((len(ro), width), tok.pad_token_id)
    prompt_mask = torch.zeros_like(prompt_ids)
    comp = [ro.input_ids[i][mask[i]] for i in range(len(ro))]
    cwidth = max(len(c) for c in comp)
    completion_ids = torch.full((len(ro), cwidth), tok.pad_token_id)
    completion_mask = torch.zeros_like(completion_ids)
    for i in range(len(ro)):
        prompt_ids[i, width - plen[i] :] = torch.tensor(ro.prompt_ids[i])
        prompt_mask[i, width - plen[i] :] = 1
        completion_ids[i, : len(comp[i])] = comp[i]
        completion_mask[i, : len(comp[i])] = 1
    trainer = _trainer(model, tok, tmp_path, loss_type)
    trainer.current_gradient_accumulation_steps = 1  # set by trl's training step; one step here
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": adv.float(),
        "num_items_in_batch": completion_mask.sum(),
    }
    model.zero_grad()
    model.train()
    trainer._compute_loss(model, inputs).backward()
    theirs = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-7), name


@pytest.mark.slow
def test_both_trainers_improve_the_oracle_reward_on_the_same_prompts(tmp_path):
    """Same student (the RL testbed's rl-student), same 8 training prompts, same oracle reward, same
    budget (12 updates of 8 prompts x 8 samples at T = 1, lr 2e-4, GRPO's loss): the sampled accuracy on
    those prompts rises under trl's GRPOTrainer and under common.rl_loop alike."""
    from common.models import load_causal_lm, load_tokenizer
    from common.rl_loop import RLConfig, evaluate_pass_at_k, run_rl
    from common.synthetic.base_models import get_base_model
    from common.synthetic.rl_gate import oracle_reward

    path = get_base_model("rl-student")
    tok = load_tokenizer(path)
    problems = make_splits()["train"][:8]
    prompts = [p.prompt() for p in problems]
    grade = lambda i, text: gsm8k_is_correct(text, str(problems[i].answer))  # noqa: E731

    def accuracy(model):
        return evaluate_pass_at_k(model, tok, prompts, grade, n=16, temperature=1.0, max_tokens=80, seed=7)[
            "pass@1"
        ]

    start = accuracy(load_causal_lm(path, dtype=torch.float32))
    ours = load_causal_lm(path, dtype=torch.float32)
    cfg = RLConfig(
        output_dir=str(tmp_path / "ours"),
        chunks=12,
        prompts_per_chunk=8,
        samples_per_prompt=8,
        minibatch_size=64,
        lr=2e-4,
        temperature=1.0,
        max_tokens=80,
        loss_norm="sequence",
        progress=False,
        report_to="none",
    )
    run_rl(ours, tok, prompts, oracle_reward(tok, problems, "grpo"), cfg)
    theirs = load_causal_lm(path, dtype=torch.float32)
    from datasets import Dataset

    data = Dataset.from_list([{"prompt": p.prompt(), "answer": str(p.answer)} for p in problems] * 12)

    def oracle(completions, answer, **_):
        return [float(gsm8k_is_correct(c, a)) for c, a in zip(completions, answer)]

    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=64,
        num_generations=8,
        max_completion_length=80,
        temperature=1.0,
        loss_type="grpo",
        beta=0.0,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        max_steps=12,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        seed=0,
    )
    trl.GRPOTrainer(
        model=theirs, reward_funcs=oracle, args=args, train_dataset=data, processing_class=tok
    ).train()
    gains = {"ours": accuracy(ours) - start, "trl": accuracy(theirs) - start}
    assert gains["ours"] > 0.1 and gains["trl"] > 0.1, (start, gains)
