"""IPVRM's toy stages, each cached under `runs/ipvrm/<scale>/` by a hash of its settings (`--force` reruns):

- `sft_stage`: pi_SFT trained on training-format trajectories; its validation probes (teacher-forced step
  accuracy on clean chains, greedy and T = 1 verifier accuracy on validation prompts) and test accuracy;
- `rm_stage`: one reward model (IPVRM / Implicit PRM / DPO-RM, one seed) as a copy of pi_SFT, then Part A:
  ProcessBench-style F1 on the evaluation set with the threshold chosen on the validation set, and the
  prefix AUC of the outcome after k steps;
- `bon_samples_stage`: one Best-of-N candidate pool from pi_SFT on the test prompts, graded by math-verify;
  `bon_stage`: one RM's solution scores on it and its best-of-N accuracy (`bon.py`);
- `rl_stage`: one Part B run (method, seed) through `common.rl_loop.run_rl` with `distrl.DistRLPolicyLoss`
  and the frozen IPVRM of `rl.rm_seed`: per chunk the rollouts' verifier accuracy and mean per-token RM
  score (Eq. 19), then greedy and T = 1 accuracy on the test prompts.

Data seeds (fixed, disjoint roles): SFT data 1, RM data 100 + seed, evaluation set 2 (test), threshold
validation set 3, RL training prompts 4, test prompts 5 (also the Best-of-N problems), SFT validation
prompts 6; Best-of-N sampling seed `bon.seed_base` + the RM seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from common.generation import HFGenerator, SamplingParams
from common.models import build_tiny_causal_lm, count_parameters, load_causal_lm
from common.rl import Rollout, sequence_logprobs
from common.rl_loop import RLConfig, run_rl
from common.scoring import math_is_correct
from common.stages import atomic_dir, atomic_write_json, cached_json, read_json, stage_hash
from papers.ipvrm.bon import SCORE_RULES, bon_accuracy, oracle_accuracy, random_pick_accuracy, solution_score
from papers.ipvrm.config import RL_METHODS, IPVRMConfig
from papers.ipvrm.distrl import DistRLPolicyLoss, distrl_reward_fn
from papers.ipvrm.ipvrm import step_scores
from papers.ipvrm.processbench import evaluate_subsets
from papers.ipvrm.training import (
    RMTrain,
    encode,
    log_ratios,
    max_tokens,
    policy_accuracy,
    rm_train,
    sft_train,
    step_accuracy,
)
from papers.ipvrm.world import (
    WorldSpec,
    eval_set,
    is_correct,
    parse_steps,
    prompt_text,
    prompts,
    training_set,
    world_tokenizer,
)

VERSION = 1
SFT_DATA, EVAL_SET, VAL_SET, RL_PROMPTS, TEST_PROMPTS, SFT_VAL_PROMPTS = 1, 2, 3, 4, 5, 6
RM_DATA_BASE = 100
TEST_PROMPTS_N = 500


def _load(path: str | Path):
    model = load_causal_lm(str(path), dtype=torch.float32, device="cpu")
    model.eval()
    return model


def sft_stage(cfg: IPVRMConfig, work: Path, force: bool) -> dict:
    """{"path": pi_SFT's folder, "params", "loss_last", "step_accuracy" (clean validation chains),
    "val_greedy", "val_sampled" (T = 1, 4 samples), "test_greedy", "test_sampled"} (fractions)."""
    s, spec = cfg.sft, cfg.world
    key = stage_hash({"sft": asdict(s), "world": asdict(spec), "v": VERSION})
    folder = work / f"sft-{key}"

    def compute() -> dict:
        tok = world_tokenizer()
        model = build_tiny_causal_lm(s.preset, len(tok), seed=s.seed, tokenizer=tok)
        data = training_set(SFT_DATA, s.steps * s.batch, spec)
        losses = sft_train(model, tok, data, spec, s.steps, s.batch, s.lr, s.seed, s.warmup)
        with atomic_dir(folder / "model") as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        clean = [r for r in eval_set(VAL_SET, 400, spec) if r.first_error < 0]
        val, test = prompts(SFT_VAL_PROMPTS, s.val_prompts, spec), prompts(TEST_PROMPTS, TEST_PROMPTS_N, spec)
        return {
            "path": str(folder / "model"),
            "params": count_parameters(model),
            "loss_last": sum(losses[-20:]) / len(losses[-20:]),
            "step_accuracy": step_accuracy(model, tok, clean, spec),
            "val_greedy": policy_accuracy(model, tok, val, spec),
            "val_sampled": policy_accuracy(model, tok, val, spec, n=4, seed=1),
            "test_greedy": policy_accuracy(model, tok, test, spec),
            "test_sampled": policy_accuracy(model, tok, test, spec, n=4, seed=1),
        }

    return cached_json(folder / "result.json", force, compute)


def auc(scores: list[float], labels: list[int]) -> float:
    """ROC AUC of `scores` for labels in {0, 1} (Mann-Whitney, ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        raise ValueError("auc: needs both labels")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def step_score_lists(rm, ref, tok, rows, spec: WorldSpec, beta: float, protocol: str) -> list[list[float]]:
    """Per evaluation row, the pre-sigmoid step scores (`ipvrm.step_scores` over beta l_t; a step is
    its [STEP_k, d_k] token pair, so its last token is response position 2k + 1)."""
    ids, att, resp = encode(tok, rows, spec, eos=False)
    ratios = log_ratios(rm, ref, ids, att, resp)
    ends = list(range(1, len(rows[0].response), 2))  # the evaluation format has no RETRY steps
    out = []
    for i in range(len(rows)):
        rewards = beta * ratios[i][resp[i]]
        out.append([float(x) for x in step_scores(rewards, ends, protocol)])
    return out


def part_a(rm, ref, tok, kind: str, cfg: IPVRMConfig) -> dict:
    """ProcessBench-style F1 (x 100, threshold tuned on the validation set, both step protocols) and the
    prefix AUC of the outcome (clean chain) from V after k steps on the evaluation set."""
    spec, rmc = cfg.world, cfg.rm
    beta = {"IPVRM": rmc.beta_ipvrm, "Implicit PRM": rmc.beta_implicit, "DPO-RM": rmc.beta_dpo}[kind]
    test, val = eval_set(EVAL_SET, rmc.eval_rows, spec), eval_set(VAL_SET, rmc.val_rows, spec)
    out = {}
    for protocol in ("process", "prefix"):
        subsets = {
            "validation": (
                step_score_lists(rm, ref, tok, val, spec, beta, protocol),
                [r.first_error for r in val],
            ),
            "test": (
                step_score_lists(rm, ref, tok, test, spec, beta, protocol),
                [r.first_error for r in test],
            ),
        }
        res = evaluate_subsets(subsets, "calibrated", calibrate_on="validation")
        out[protocol] = {k: res["test"][k] for k in ("f1", "acc_erroneous", "acc_correct", "threshold")}
    prefix = step_score_lists(rm, ref, tok, test, spec, beta, "prefix")  # V at the end of each step
    # every evaluation response has 2 tokens a step, so v̄ = V / 2k ranks the rows as V does: one AUC
    out["prefix_auc"] = {k: auc([p[k - 1] for p in prefix], [r.label for r in test]) for k in rmc.auc_steps}
    return out


def rm_stage(kind: str, seed: int, cfg: IPVRMConfig, work: Path, force: bool, sft_path: str) -> dict:
    """One reward model trained from pi_SFT and its Part A scores: {"kind", "seed", "path", "loss_first",
    "loss_last", "process": {...}, "prefix": {...}, "prefix_auc": {k: auc}}."""
    rmc = cfg.rm
    # which other kinds and seeds are trained does not change this one (turning DPO-RM on keeps the cache)
    settings = {k: v for k, v in asdict(rmc).items() if k not in ("kinds", "seeds")}
    key = stage_hash({"rm": settings, "kind": kind, "seed": seed, "sft": sft_path, "v": VERSION})
    folder = work / f"rm-{kind.replace(' ', '_')}-s{seed}-{key}"

    def compute() -> dict:
        tok, ref, rm = world_tokenizer(), _load(sft_path), _load(sft_path)
        torch.manual_seed(seed)
        data = training_set(RM_DATA_BASE + seed, rmc.train_rows, cfg.world)
        beta = {"IPVRM": rmc.beta_ipvrm, "Implicit PRM": rmc.beta_implicit, "DPO-RM": rmc.beta_dpo}[kind]
        train = RMTrain(rmc.steps, rmc.batch, rmc.lr, seed, beta, rmc.margin)
        losses = rm_train(rm, ref, tok, data, cfg.world, kind, train)
        with atomic_dir(folder / "model") as tmp:
            rm.save_pretrained(tmp)
        scores = part_a(rm, ref, tok, kind, cfg)
        k = max(len(losses) // 20, 1)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        head = {
            "kind": kind,
            "seed": seed,
            "path": str(folder / "model"),
            "loss_first": first,
            "loss_last": last,
        }
        return head | scores

    return cached_json(folder / "result.json", force, compute)


def _operands(tok, prompt_ids: list[int]) -> tuple[int, ...]:
    return tuple(int(t) for t in tok.convert_ids_to_tokens(prompt_ids) if t.isdigit())


def toy_reward_fn(loss: DistRLPolicyLoss, tok, spec: WorldSpec, ref, gae_coef: float, mixed_only: bool):
    """run_rl's reward_fn: `distrl.distrl_reward_fn` (Eq. 13) on the verifier's outcomes, with the groups
    whose outcomes are all equal switched off (advantage 0, no candidates: the spec's "keep only prompts
    with mixed outcomes"), and the rollouts' mean per-token RM score (Eq. 19, l = log pi_phi - log pi_SFT)
    logged as `rm_score`."""

    def verify(ro: Rollout) -> torch.Tensor:
        ops = [_operands(tok, p) for p in ro.prompt_ids]
        return torch.tensor([float(is_correct(o, t, spec)) for o, t in zip(ops, ro.texts)])

    inner = distrl_reward_fn(loss, verify, "code", gae_coef)

    def reward(ro: Rollout) -> torch.Tensor:
        adv = inner(ro)
        labels, groups = verify(ro), torch.tensor(ro.prompt_index)
        mixed = torch.zeros(len(ro), dtype=torch.bool)
        for g in groups.unique():
            rows = groups == g
            mixed[rows] = labels[rows].min() != labels[rows].max()
        if mixed_only:
            adv[~mixed] = 0.0
            loss.state["candidates"][~mixed] = False
        mask = ro.response_mask
        ratio = sequence_logprobs(loss.reward_model, ro.input_ids, ro.attention_mask)
        ratio = (ratio - sequence_logprobs(ref, ro.input_ids, ro.attention_mask)) * mask
        ro.metrics["rm_score"] = float((ratio.sum(1) / mask.sum(1)).mean())
        ro.metrics["mixed_groups"] = float(mixed.float().mean())
        return adv

    return reward


def rl_stage(method: str, seed: int, cfg: IPVRMConfig, work: Path, force: bool, sft_path: str, rm_path: str):
    """One Part B run: {"method", "seed", "curve" (per chunk: correct, rm_score, mixed_groups, loss),
    "last_correct", "last_rm_score" (means over the last `rl.last_fraction` of the chunks), "test_greedy",
    "test_sampled"} (fractions)."""
    rl, spec = cfg.rl, cfg.world
    top_k, alpha, gae_coef = RL_METHODS[method]
    alpha = rl.alpha if alpha is None else alpha
    gae_coef = rl.gae_coef if gae_coef is None else gae_coef
    settings = {"rl": asdict(rl), "method": method, "seed": seed, "rm": rm_path, "sft": sft_path}
    key = stage_hash({**settings, "beta": cfg.rm.beta_ipvrm, "v": VERSION})
    out = work / f"rl-{method.replace(' ', '_').replace('/', '')}-s{seed}-{key}"

    def compute() -> dict:
        tok, policy, ref, rm = world_tokenizer(), _load(sft_path), _load(sft_path), _load(rm_path)
        for p in (*ref.parameters(), *rm.parameters()):
            p.requires_grad_(False)
        k = top_k if top_k == 1 else rl.top_k
        loss = DistRLPolicyLoss(rm, beta=cfg.rm.beta_ipvrm, top_k=k, p_min=rl.p_min, alpha=alpha)
        rows = rl.prompts_per_chunk * rl.samples_per_prompt
        run = RLConfig(
            output_dir=str(out),
            chunks=rl.chunks,
            prompts_per_chunk=rl.prompts_per_chunk,
            algorithm="grpo",
            samples_per_prompt=rl.samples_per_prompt,
            minibatch_size=rows,  # spec: one PPO epoch per batch, one update
            lr=rl.lr,
            temperature=rl.temperature,
            max_tokens=max_tokens(spec),
            max_grad_norm=rl.max_grad_norm,
            eval_every=1,  # every chunk's rollout metrics go to the curve (the evaluation itself is empty)
            generation_batch_size=rows,
            seed=seed,
            progress=False,
            report_to="none",
        )
        train = [prompt_text(o, spec) for o in prompts(RL_PROMPTS, rl.train_prompts, spec)]
        reward = toy_reward_fn(loss, tok, spec, ref, gae_coef, rl.mixed_only)
        curve = run_rl(
            policy, tok, train, reward, run, evaluate=lambda m: {}, initial_eval={}, policy_loss=loss
        )
        steps = [c for c in curve if c["chunk"] > 0]
        last = steps[-max(1, math.ceil(len(steps) * rl.last_fraction)) :]
        test = prompts(TEST_PROMPTS, rl.eval_prompts, spec)
        keep = ("chunk", "correct", "rm_score", "mixed_groups", "loss")
        return {
            "method": method,
            "seed": seed,
            "curve": [{k: c[k] for k in keep if k in c} for c in steps],
            "last_correct": sum(c["correct"] for c in last) / len(last),
            "last_rm_score": sum(c["rm_score"] for c in last) / len(last),
            "test_greedy": policy_accuracy(policy, tok, test, spec),
            "test_sampled": policy_accuracy(policy, tok, test, spec, n=4, seed=1),
        }

    return cached_json(out / "result.json", force, compute)


def final_answer_text(response: str, spec: WorldSpec) -> str | None:
    """The response's final answer as math-verify reads it (`\\boxed{d}`, d = the last step's digit), or
    None when its steps do not parse (no answer)."""
    steps = parse_steps(response, spec)
    return None if steps is None else f"\\boxed{{{steps[-1]}}}"


def bon_samples_stage(seed: int, cfg: IPVRMConfig, work: Path, force: bool, sft_path: str) -> dict:
    """One Best-of-N candidate pool: `bon.samples` completions per problem from pi_SFT at `bon.temperature`
    (seed `bon.seed_base` + seed) on the first `bon.problems` test prompts, each graded by math-verify on
    its final answer. {"seed", "path" (candidates.json: per problem the operands, token ids, grades),
    "mean_accuracy", "grader_agreement" (with `world.is_correct`), "random": {N: acc}, "oracle": {N: acc}}."""
    b, spec = cfg.bon, cfg.world
    settings = {k: v for k, v in asdict(b).items() if k != "enabled"}
    key = stage_hash({"bon": settings, "seed": seed, "sft": sft_path, "world": asdict(spec), "v": VERSION})
    folder = work / f"bon-samples-s{seed}-{key}"

    def compute() -> dict:
        tok, policy = world_tokenizer(), _load(sft_path)
        ops = prompts(TEST_PROMPTS, b.problems, spec)
        params = SamplingParams(
            n=b.samples, temperature=b.temperature, max_tokens=max_tokens(spec), seed=b.seed_base + seed
        )
        outs = HFGenerator(policy, tok, batch_size=2048, progress=False).generate(
            [prompt_text(o, spec) for o in ops], params
        )
        verdicts: dict[tuple[str, int], bool] = {}  # the toy has 10 x 10 (answer, gold) pairs
        grades, agree = [[] for _ in ops], 0
        for o in outs:
            operands, answer = ops[o.prompt_index], final_answer_text(o.text, spec)
            gold = sum(operands) % 10
            if answer is not None and (answer, gold) not in verdicts:
                verdicts[(answer, gold)] = math_is_correct(answer, str(gold))
            grade = int(answer is not None and verdicts[(answer, gold)])
            grades[o.prompt_index].append(grade)
            agree += grade == is_correct(operands, o.text, spec)
        k = b.samples  # outputs are prompt-major: problem i's candidates are outs[i k : (i + 1) k]
        tokens = [[c.token_ids for c in outs[i * k : (i + 1) * k]] for i in range(len(ops))]
        rows = [{"operands": list(o), "token_ids": t, "grades": g} for o, t, g in zip(ops, tokens, grades)]
        atomic_write_json(folder / "candidates.json", rows, indent=None)
        return {
            "seed": seed,
            "path": str(folder / "candidates.json"),
            "mean_accuracy": sum(map(sum, grades)) / len(outs),
            "grader_agreement": agree / len(outs),
            "random": {str(n): random_pick_accuracy(grades, n) for n in b.ns},
            "oracle": {str(n): oracle_accuracy(grades, n) for n in b.ns},
        }

    return cached_json(folder / "result.json", force, compute)


def candidate_scores(rm, ref, tok, rows: list[dict], spec: WorldSpec, beta: float, rule: str):
    """Per problem, each candidate's solution score (`bon.solution_score` of beta * l_t over its response
    tokens, the EOS included as in RM training)."""
    seqs, starts = [], []
    for r in rows:
        p = tok(prompt_text(tuple(r["operands"]), spec))["input_ids"]
        for ids in r["token_ids"]:
            seqs.append(p + ids)
            starts.append(len(p))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    att, resp = torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)], att[i, : len(s)], resp[i, start : len(s)] = torch.tensor(s), 1, True
    ratios = log_ratios(rm, ref, ids, att, resp)
    flat = [solution_score((beta * ratios[i][resp[i]]).tolist(), rule) for i in range(len(seqs))]
    k = len(rows[0]["token_ids"])
    return [flat[i * k : (i + 1) * k] for i in range(len(rows))]


def bon_stage(kind: str, seed: int, cfg: IPVRMConfig, work: Path, force: bool, sft_path: str, rm: dict, pool):
    """Best-of-N of one RM (kind, seed) on its seed's candidate pool: {"kind", "seed", "rule",
    "accuracy": {N: acc}} (fractions); the scores go to scores.json beside it."""
    b = cfg.bon
    beta = {"IPVRM": cfg.rm.beta_ipvrm, "Implicit PRM": cfg.rm.beta_implicit, "DPO-RM": cfg.rm.beta_dpo}[kind]
    rule = SCORE_RULES[kind]
    key = stage_hash({"ns": b.ns, "rm": rm["path"], "pool": pool["path"], "rule": rule, "v": VERSION})
    folder = work / f"bon-{kind.replace(' ', '_')}-s{seed}-{key}"

    def compute() -> dict:
        tok, ref, model = world_tokenizer(), _load(sft_path), _load(rm["path"])
        rows = read_json(pool["path"])
        scores = candidate_scores(model, ref, tok, rows, cfg.world, beta, rule)
        atomic_write_json(folder / "scores.json", scores, indent=None)
        grades = [r["grades"] for r in rows]
        acc = {str(n): bon_accuracy(scores, grades, n) for n in b.ns}
        return {"kind": kind, "seed": seed, "rule": rule, "accuracy": acc}

    return cached_json(folder / "result.json", force, compute)
