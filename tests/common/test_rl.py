"""common.rl / common.rl_loop: spec invariants 9-12 vs float64 and autograd, Pass@k vs enumeration,
rollout packing, a REINFORCE run that learns, resume equivalence, bad inputs."""

import itertools
import math

import pytest
import torch

from common.generation import HFGenerator, SamplingParams
from common.models import build_tiny_causal_lm
from common.rl import (
    concat_rollouts,
    gae,
    kl_abs,
    loo_group_baseline,
    pass_at_k,
    ppo_clip_loss,
    reinforce_loss,
    reward_is_q_advantages,
    rollout,
    sequence_logprobs,
    value_loss,
)
from common.rl_loop import RLConfig, chunk_prompts, evaluate_pass_at_k, run_rl
from tests.common.conftest import PROMPTS, TARGET, target_reward


def tiny_policy(tokenizer, seed=0):
    return build_tiny_causal_lm("tiny-student", vocab_size=len(tokenizer), seed=seed, tokenizer=tokenizer)


class TinyCritic(torch.nn.Module):
    """(input_ids, attention_mask) -> [batch, seq] values, as a TokenScorer would give."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, 1, bias=False)

    def forward(self, input_ids, attention_mask):
        return self.head(self.emb(input_ids)).squeeze(-1) * attention_mask


# --- invariant 9: REINFORCE gradient wrt the logits -------------------------------------------------


def test_reinforce_gradient_wrt_logits_is_r_over_n_times_pi_minus_onehot():
    torch.manual_seed(0)
    batch, seq, vocab = 2, 5, 7
    logits = torch.randn(batch, seq, vocab, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, vocab, (batch, seq))
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    rewards = torch.randn(batch, seq, dtype=torch.float64)
    logp = logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0]
    reinforce_loss(logp, rewards, mask).backward()
    n = int(mask.sum())
    pi = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(actions, vocab).double()
    expected = (rewards / n)[..., None] * (pi - onehot) * mask[..., None]
    assert torch.allclose(logits.grad, expected, atol=1e-12, rtol=0)


# --- invariant 10: reward-is-Q advantages ------------------------------------------------------------


def test_reward_is_q_advantage_and_returns():
    torch.manual_seed(1)
    r, v = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    mask = torch.rand(3, 6) > 0.3
    mask[:, 2] = True
    adv, ret = reward_is_q_advantages(r, v, mask)
    assert torch.equal(adv, torch.where(mask, r - 0.01 * v, 0.0))
    assert torch.equal(ret, torch.where(mask, r, 0.0))
    adv0, _ = reward_is_q_advantages(r, torch.zeros_like(v), mask)
    assert torch.equal(adv0, torch.where(mask, r, 0.0))


# --- invariant 11 + GAE vs an independent float64 recursion ------------------------------------------


def test_gae_last_token_reward_with_zero_values_is_geometric():
    T = 7
    mask = torch.zeros(2, T + 3, dtype=torch.bool)
    mask[0, 2 : 2 + T] = True
    mask[1, 3 : 3 + T] = True
    r_last = torch.tensor([1.5, -0.7], dtype=torch.float64)
    rewards = torch.zeros(2, T + 3, dtype=torch.float64)
    rewards[0, 1 + T], rewards[1, 2 + T] = r_last
    adv, ret = gae(rewards, torch.zeros_like(rewards), mask, gamma=0.9, lam=0.8)
    for b, start in enumerate((2, 3)):
        for t in range(T):
            assert adv[b, start + t].item() == pytest.approx(
                0.72 ** (T - 1 - t) * r_last[b].item(), abs=1e-12
            )
    assert torch.equal(ret, adv)
    assert torch.all(adv[~mask] == 0)


def test_gae_matches_float64_recursion_with_values():
    torch.manual_seed(2)
    r, v = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True, True]])
    adv, ret = gae(r, v, mask, gamma=0.9, lam=0.8)
    rs, vs = r[0, 1:].tolist(), v[0, 1:].tolist()
    expected, running = [], 0.0
    for t in reversed(range(4)):
        nv = vs[t + 1] if t + 1 < 4 else 0.0
        running = rs[t] + 0.9 * nv - vs[t] + 0.72 * running
        expected.insert(0, running)
    assert adv[0, 1:].tolist() == pytest.approx(expected, abs=1e-12)
    assert ret[0, 1:].tolist() == pytest.approx([a + b for a, b in zip(expected, vs)], abs=1e-12)


# --- invariant 12: PPO clip --------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ppo_clip_gradient_zero_outside_band_on_favoured_side(sign):
    # rho = exp(logp - logp_old); positions: 1.5 (above), 0.5 (below), 1.1 (inside)
    rho = torch.tensor([[1.5, 0.5, 1.1]], dtype=torch.float64)
    logp_old = torch.zeros(1, 3, dtype=torch.float64)
    logp = rho.log().clone().requires_grad_(True)
    adv = torch.full((1, 3), sign, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ppo_clip_loss(logp, logp_old, adv, mask, clip=0.2).backward()
    g = logp.grad[0]
    favoured = 0 if sign > 0 else 1  # A > 0 is clipped above 1.2, A < 0 below 0.8
    other = 1 - favoured
    assert g[favoured].item() == 0.0
    # unclipped side: d/dlogp of -(rho A)/n = -rho A / n
    assert g[other].item() == pytest.approx(-rho[0, other].item() * sign / 3, abs=1e-12)
    assert g[2].item() == pytest.approx(-1.1 * sign / 3, abs=1e-12)


def test_value_loss_and_kl():
    v = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    ret = torch.tensor([[5.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True]])
    assert value_loss(v, ret, mask).item() == pytest.approx((1 + 4) / 2)
    assert torch.equal(
        kl_abs(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])), torch.tensor([1.0, 2.0])
    )
    with pytest.raises(ValueError, match="kl_abs: shapes"):
        kl_abs(torch.zeros(2), torch.zeros(3))


def test_loo_group_baseline_matches_float64_reference():
    torch.manual_seed(0)
    r = torch.randn(5, 7)
    mask = torch.zeros(5, 7, dtype=torch.bool)
    for i, (a, b) in enumerate([(1, 5), (2, 7), (0, 3), (3, 6), (1, 2)]):
        mask[i, a:b] = True
    groups = [0, 0, 0, 1, 2]  # a group of 3, one of 1, one of 1
    out = loo_group_baseline(r, mask, groups)
    rd = r.double()
    seq = [rd[i][mask[i]].mean().item() for i in range(5)]
    for i in range(5):
        others = [seq[j] for j in range(5) if groups[j] == groups[i] and j != i]
        base = sum(others) / len(others) if others else 0.0
        expect = torch.where(mask[i], rd[i] - base, torch.zeros(7, dtype=torch.float64))
        assert torch.allclose(out[i].double(), expect, atol=1e-6)
    # token-level differences inside a sequence are kept
    assert torch.allclose((out[0] - r[0])[mask[0]], (out[0] - r[0])[mask[0]][0].expand(4))
    # sequence-level rewards (one token each): r_i - mean of the others, e.g. [1, 0] -> [1, -1]
    one = torch.ones(4, 1, dtype=torch.bool)
    seq_out = loo_group_baseline(torch.tensor([[1.0], [0.0], [0.5], [3.0]]), one, [7, 7, 9, 9])
    assert seq_out.flatten().tolist() == pytest.approx([1.0, -1.0, -2.5, 2.5])
    with pytest.raises(ValueError, match="group ids"):
        loo_group_baseline(r, mask, [0, 1])


# --- Pass@k ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,c", [(5, 0), (5, 2), (6, 3), (4, 4), (7, 1)])
def test_pass_at_k_equals_enumeration_over_subsets(n, c):
    samples = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


# --- rollouts and log-probs --------------------------------------------------------------------------


def test_rollout_packs_responses_and_logprobs_match_the_training_model(tokenizer):
    model = tiny_policy(tokenizer)
    gen = HFGenerator(model, tokenizer, batch_size=4)
    ro = rollout(gen, tokenizer, PROMPTS[:3], SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=3))
    assert len(ro) == 6 and ro.prompt_index == [0, 0, 1, 1, 2, 2]
    for i in range(len(ro)):
        plen = len(ro.prompt_ids[i])
        assert not ro.response_mask[i, :plen].any() and ro.response_mask[i, plen]
        assert ro.input_ids[i, :plen].tolist() == ro.prompt_ids[i]
    with torch.no_grad():
        logp = sequence_logprobs(model, ro.input_ids, ro.attention_mask)
        logits = model(ro.input_ids[:1]).logits[0].double().log_softmax(-1)
    assert torch.allclose(logp[ro.response_mask], ro.logp_old[ro.response_mask], atol=1e-4)
    length = int(ro.attention_mask[0].sum())
    manual = [logits[t - 1, ro.input_ids[0, t]].item() for t in range(1, length)]
    assert logp[0, 1:length].tolist() == pytest.approx(manual, abs=1e-5)
    assert logp[:, 0].eq(0).all()


def test_rollouts_of_consecutive_prompt_slices_concatenate_to_the_whole_rollout(tokenizer):
    """`concat_rollouts` (how run_rl joins the processes' shares): greedy completions do not depend on the
    batch, so the joined slices equal one rollout of every prompt, padding and prompt indices included."""
    gen, params = HFGenerator(tiny_policy(tokenizer), tokenizer), SamplingParams(temperature=0, max_tokens=4)
    whole = rollout(gen, tokenizer, PROMPTS, params)
    parts = [rollout(gen, tokenizer, PROMPTS[a:b], params) for a, b in ((0, 3), (3, 4), (4, 8))]
    joined = concat_rollouts(parts, [0, 3, 4], tokenizer.pad_token_id)
    assert [p.input_ids.shape[1] for p in parts] != [whole.input_ids.shape[1]] * 3  # padding does differ
    for name in ("input_ids", "attention_mask", "response_mask", "logp_old"):
        torch.testing.assert_close(getattr(joined, name), getattr(whole, name), atol=1e-5, rtol=0, msg=name)
    assert (joined.prompt_index, joined.prompt_ids, joined.texts) == (
        whole.prompt_index,
        whole.prompt_ids,
        whole.texts,
    )
    with pytest.raises(ValueError, match="2 parts for 1 offsets"):
        concat_rollouts(parts[:2], [0], 0)


def test_length_sorted_forwards_equal_one_pass_in_values_and_gradients(tokenizer):
    """`by_length` (the default of `sequence_logprobs`): rows sorted by length, a few at a time, each group
    cut at its longest row, give one pass's log-probs and gradients (float64), in the original row order,
    and 0 after each row's end; left-padded rows are refused."""
    model = tiny_policy(tokenizer).double()
    gen = HFGenerator(model, tokenizer, batch_size=8)
    ro = rollout(gen, tokenizer, PROMPTS[:4], SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=5))
    lengths = ro.attention_mask.sum(1)
    assert len(set(lengths.tolist())) > 2  # rows of several lengths: the groups are cut differently
    weights = torch.randn(ro.input_ids.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads, values = [], []
    for rows in (None, 3):
        model.zero_grad()
        logp = sequence_logprobs(model, ro.input_ids, ro.attention_mask, rows=rows)
        (logp * weights * ro.attention_mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        values.append(logp.detach())
    real = ro.attention_mask.bool()
    assert torch.allclose(values[0][real], values[1][real], atol=1e-12)
    assert values[1][~real].eq(0).all()
    assert torch.allclose(grads[0], grads[1], atol=1e-10)
    left = torch.flip(ro.attention_mask, dims=[1])
    with pytest.raises(ValueError, match="right-padded"):
        sequence_logprobs(model, ro.input_ids, left, rows=3)


def test_chunk_prompts_cycles_through_every_prompt():
    seen = [p for k in range(4) for p in chunk_prompts(list(range(8)), k, 4, seed=1)]
    assert sorted(seen[:8]) == list(range(8)) and sorted(seen[8:]) == list(range(8))


# --- the loop: does it learn, resume equivalence ------------------------------------------------------


def test_reinforce_raises_the_reward_of_a_learnable_target(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny_policy(tokenizer)
    target = tokenizer.convert_tokens_to_ids(TARGET)

    def evaluate(m):
        out = HFGenerator(m, tokenizer).generate(PROMPTS, SamplingParams(n=4, max_tokens=6, seed=99))
        ids = [t for o in out for t in o.token_ids]
        return {"target_rate": sum(t == target for t in ids) / len(ids)}

    cfg = RLConfig(
        output_dir=str(tmp_path),
        chunks=12,
        prompts_per_chunk=8,
        samples_per_prompt=2,
        lr=1e-2,
        max_tokens=6,
        progress=False,
    )
    curve = run_rl(model, tokenizer, PROMPTS, target_reward(tokenizer), cfg, evaluate=evaluate)
    assert curve[0]["target_rate"] < 0.2
    assert curve[-1]["target_rate"] > 0.6
    assert (tmp_path / "curve.csv").exists()


def _ppo_run(tokenizer, out, crash_at=None):
    policy, critic = tiny_policy(tokenizer, seed=1), TinyCritic(len(tokenizer))
    ref = tiny_policy(tokenizer, seed=1)
    calls = {"n": 0}
    base = target_reward(tokenizer)

    def reward_fn(ro):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return base(ro) - 0.01 * kl_abs(ro.logp_old, ro.logp_ref) * ro.response_mask

    cfg = RLConfig(
        output_dir=str(out),
        chunks=4,
        prompts_per_chunk=4,
        minibatch_size=2,
        algorithm="ppo",
        advantage="reward_is_q",  # the Q-RM code's PPO (A = r - 0.01 V on V / std_chunk(V))
        value_coef=0.01,
        normalize_values=True,
        lr=3e-3,
        critic_lr=1e-2,
        max_tokens=5,
        progress=False,
        inner_epochs=2,
    )
    run_rl(policy, tokenizer, PROMPTS, reward_fn, cfg, critic=critic, ref_model=ref)
    return policy, critic


def test_killed_and_resumed_run_equals_uninterrupted_run(tokenizer, tmp_path):
    full_policy, full_critic = _ppo_run(tokenizer, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _ppo_run(tokenizer, tmp_path / "cut", crash_at=3)  # dies during chunk 3, after 2 saved chunks
    policy, critic = _ppo_run(tokenizer, tmp_path / "cut")
    for a, b in [(full_policy, policy), (full_critic, critic)]:
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    assert not torch.equal(
        full_policy.state_dict()["lm_head.weight"], tiny_policy(tokenizer, 1).state_dict()["lm_head.weight"]
    )


def test_grpo_one_on_policy_update_equals_reinforce_and_later_ones_reuse_the_chunk(tokenizer, tmp_path):
    """ "grpo" = the clipped ratio on the reward_fn's advantages, no critic: with one minibatch per chunk the
    ratio is 1 at the update, so its gradient (hence the weights) equals REINFORCE's; with several
    minibatches the chunk's samples serve several updates and the run still learns."""

    def run(algorithm, minibatch, out):
        policy = tiny_policy(tokenizer, seed=1)
        cfg = RLConfig(
            output_dir=str(out),
            chunks=2,
            prompts_per_chunk=4,
            samples_per_prompt=2,
            minibatch_size=minibatch,
            algorithm=algorithm,
            lr=3e-3,
            max_tokens=5,
            progress=False,
            report_to="none",
        )
        run_rl(policy, tokenizer, PROMPTS, target_reward(tokenizer), cfg)
        return policy.state_dict()

    ours, theirs = run("grpo", 8, tmp_path / "g"), run("reinforce", 8, tmp_path / "r")
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=1e-6), name
    reused = run("grpo", 2, tmp_path / "g4")  # 4 updates per chunk: different weights, same loop
    assert not torch.allclose(reused["lm_head.weight"], ours["lm_head.weight"])


def test_evaluate_pass_at_k_greedy_and_sampled(tokenizer):
    model = tiny_policy(tokenizer)
    always = evaluate_pass_at_k(model, tokenizer, PROMPTS, lambda i, t: True, max_tokens=3)
    assert always == {"pass@1": 1.0}
    half = evaluate_pass_at_k(
        model, tokenizer, PROMPTS, lambda i, t: i % 2 == 0, n=4, ks=(1, 4), temperature=1.0, max_tokens=3
    )
    assert half == {"pass@1": 0.5, "pass@4": 0.5}


# --- bad inputs --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_under_a_launch_run_rl_runs_alone_unless_data_parallel(tokenizer, tmp_path, monkeypatch):
    """The papers' drivers call run_rl on the main process only: without `data_parallel` it must not wait
    for the other processes (no collective), and it writes its run as in a plain process."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = RLConfig(
        output_dir=str(tmp_path),
        chunks=1,
        prompts_per_chunk=2,
        max_tokens=3,
        progress=False,
        report_to="none",
    )
    run_rl(tiny_policy(tokenizer), tokenizer, PROMPTS, target_reward(tokenizer), cfg)
    assert (tmp_path / "rl_state.pt").exists() and (tmp_path / "curve.csv").exists()
    assert not torch.distributed.is_initialized()


def test_bad_inputs_raise_one_clear_error(tokenizer, tmp_path):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="mask shape"):
        reinforce_loss(x, x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no response token"):
        gae(x, x, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes differ"):
        reward_is_q_advantages(x, torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="clip must be > 0"):
        ppo_clip_loss(x, x, x, torch.ones(2, 3, dtype=torch.bool), clip=0)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)
    with pytest.raises(ValueError, match="algorithm"):
        RLConfig(output_dir="x", chunks=1, prompts_per_chunk=1, algorithm="a2c")
    with pytest.raises(ValueError, match="chunks"):
        RLConfig(output_dir="x", chunks=0, prompts_per_chunk=1)
    cfg = RLConfig(output_dir=str(tmp_path), chunks=1, prompts_per_chunk=2, algorithm="ppo", progress=False)
    with pytest.raises(ValueError, match="needs a critic"):
        run_rl(tiny_policy(tokenizer), tokenizer, PROMPTS, target_reward(tokenizer), cfg)
    bad = RLConfig(
        output_dir=str(tmp_path / "b"), chunks=1, prompts_per_chunk=2, max_tokens=2, progress=False
    )
    with pytest.raises(ValueError, match="reward_fn returned shape"):
        run_rl(tiny_policy(tokenizer), tokenizer, PROMPTS, lambda ro: torch.zeros(1), bad)
    assert math.isfinite(pass_at_k(10, 3, 2))


def test_saved_state_loads_with_weights_only(tokenizer, tmp_path):
    """issue 21: the resumable state holds tensors and plain values only (torch.load weights_only=True),
    even when the evaluator returns numpy floats."""
    import numpy as np

    from common.rl_loop import STATE_FILE

    policy = build_tiny_causal_lm("tiny-student", vocab_size=len(tokenizer), seed=0, tokenizer=tokenizer)
    cfg = RLConfig(
        output_dir=str(tmp_path),
        chunks=1,
        prompts_per_chunk=2,
        minibatch_size=2,
        max_tokens=3,
        progress=False,
    )
    run_rl(
        policy,
        tokenizer,
        PROMPTS,
        lambda ro: torch.ones(ro.input_ids.shape),
        cfg,
        evaluate=lambda m: {"acc": np.float64(0.25)},
    )
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["curve"][0]["acc"] == 0.25 and type(state["curve"][0]["acc"]) is float
    again = run_rl(
        policy, tokenizer, PROMPTS, lambda ro: torch.ones(ro.input_ids.shape), cfg
    )  # resumes: done
    assert again == state["curve"]


# --- group advantages and loss aggregation (GRPO / RLOO / Dr. GRPO) ------------------------------------


def test_group_advantages_match_hand_computations():
    from common.rl import group_advantages

    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.7])
    groups = [0, 0, 0, 0, 1, 1, 2]  # group 2 has one sample: no baseline can be estimated
    g0, g1 = [1.0, 0.0, 0.0, 1.0], [1.0, 0.5]
    m0, m1 = sum(g0) / 4, sum(g1) / 2
    sd0 = math.sqrt(sum((x - m0) ** 2 for x in g0) / 3)  # unbiased, as trl
    sd1 = math.sqrt(sum((x - m1) ** 2 for x in g1) / 1)
    grpo = group_advantages(r, groups, "grpo").tolist()
    want = [(x - m0) / (sd0 + 1e-4) for x in g0] + [(x - m1) / (sd1 + 1e-4) for x in g1] + [0.0]
    assert grpo == pytest.approx(want, rel=1e-6)
    rloo = group_advantages(r, groups, "rloo").tolist()
    want = [x - (sum(g0) - x) / 3 for x in g0] + [x - (sum(g1) - x) / 1 for x in g1] + [0.0]
    assert rloo == pytest.approx(want, rel=1e-6)
    dr = group_advantages(r, groups, "dr_grpo").tolist()
    assert dr == pytest.approx([x - m0 for x in g0] + [x - m1 for x in g1] + [0.0], rel=1e-6)
    assert group_advantages(torch.ones(4), [0, 0, 0, 0]).abs().max() == 0  # all alike: no signal
    with pytest.raises(ValueError, match="valid: grpo, rloo, dr_grpo"):
        group_advantages(r, groups, "ppo")
    with pytest.raises(ValueError, match="6 group ids"):
        group_advantages(r, groups[:6])


def test_loss_aggregations_token_sequence_constant():
    from common.rl import aggregate

    x = torch.tensor([[0.0, 1.0, 2.0, 9.0], [0.0, 4.0, 9.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    assert float(aggregate(x, mask, "token")) == pytest.approx((1 + 2 + 4) / 3)
    assert float(aggregate(x, mask, "sequence")) == pytest.approx(((1 + 2) / 2 + 4) / 2)
    assert float(aggregate(x, mask, "constant", max_tokens=5)) == pytest.approx(7 / (2 * 5))
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate(x, mask, "constant")
    with pytest.raises(ValueError, match="valid: token, sequence, constant"):
        aggregate(x, mask, "mean")
    logp = torch.log(torch.full((2, 4), 0.5, dtype=torch.float64)).requires_grad_(True)
    reinforce_loss(logp, x, mask, norm="sequence").backward()
    # d/d logp of -(mean_seq mean_tok r logp): row 0 tokens -r/2/2, row 1 token -r/1/2
    assert logp.grad[0, 1:3].tolist() == pytest.approx([-1 / 4, -2 / 4]) and logp.grad[1, 1] == pytest.approx(
        -2.0
    )
    with pytest.raises(ValueError, match="loss_norm"):
        RLConfig(output_dir="x", chunks=1, prompts_per_chunk=1, loss_norm="mean")


def test_a_known_initial_evaluation_replaces_the_first_call_and_changes_nothing_else(tokenizer, tmp_path):
    """`initial_eval` is the chunk-0 row (no evaluation of the untrained policy); the training and the
    later rows are those of a run that evaluates it."""
    calls = []

    def evaluate(m):
        calls.append(1)
        out = HFGenerator(m, tokenizer).generate(PROMPTS, SamplingParams(n=2, max_tokens=6, seed=7))
        return {"len": sum(len(o.token_ids) for o in out) / len(out)}

    def run(out, initial=None):
        torch.manual_seed(0)
        model = tiny_policy(tokenizer)
        cfg = RLConfig(
            output_dir=str(out),
            chunks=2,
            prompts_per_chunk=4,
            samples_per_prompt=2,
            lr=1e-2,
            max_tokens=6,
            eval_every=1,
            progress=False,
        )
        curve = run_rl(
            model, tokenizer, PROMPTS, target_reward(tokenizer), cfg, evaluate=evaluate, initial_eval=initial
        )
        return curve, model

    plain, plain_model = run(tmp_path / "a")
    assert len(calls) == 3
    known, known_model = run(tmp_path / "b", {"len": plain[0]["len"]})
    assert len(calls) == 5  # chunks 1 and 2 only
    assert known == plain
    for p, q in zip(plain_model.parameters(), known_model.parameters()):
        assert torch.equal(p, q)
