"""The RL testbed's gate: can RL with the *oracle* reward beat the SFT policy at all?

Before any reward model is compared (qrm, lco, ipvrm), the calibration arm must win: REINFORCE with the
oracle reward (1 if the final answer is right, else 0) and GRPO group advantages, sampling at the loss's
temperature (T = 1), must beat the SFT policy on the **validation** split in every seed by at least
`GATE_GREEDY` points of greedy Pass@1 and `GATE_SAMPLED` points of sampled Pass@1 (issue 15).

    python -m common.synthetic.rl_gate                       # rl-student, 3 seeds, the default regime
    python -m common.synthetic.rl_gate --policy student      # the habit-free student, for comparison
    python -m common.synthetic.rl_gate --seeds 0 --set lr=1e-4 --set chunks=20

Prints one JSON line per seed and a last one with the gate's verdict; `--out DIR` also writes gate.json
and gate.md (the per-seed table; common/synthetic/results/ holds the committed run).
The regime (`GateConfig`) was chosen on validation only; the test split is never read here.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from common.config import apply_overrides
from common.models import load_causal_lm, load_tokenizer
from common.rl import Rollout, group_advantages
from common.rl_loop import RLConfig, evaluate_pass_at_k, run_rl
from common.scoring import gsm8k_is_correct
from common.stages import atomic_write_json, atomic_write_text, runs_dir, stage_hash
from common.synthetic.base_models import get_base_model
from common.synthetic.world import make_splits

log = logging.getLogger(__name__)
GATE_GREEDY, GATE_SAMPLED = 5.0, 10.0  # points, every seed (issue 15)


@dataclass(frozen=True)
class GateConfig:
    policy: str = "rl-student"  # a base model size of common.synthetic.base_models
    chunks: int = 12  # policy updates (one per chunk); chosen on validation (README "RL testbed")
    prompts_per_chunk: int = 16
    samples_per_prompt: int = 8  # the GRPO group
    algorithm: str = "reinforce"  # common.rl_loop: reinforce (one on-policy update) | grpo (clipped ratio)
    minibatches: int = 1  # updates per chunk (grpo: the chunk's samples reused with the ratio clipped)
    lr: float = 3e-4
    warm_chunks: int = 4  # lr x 0.1 for the first chunks
    advantage: str = "grpo"  # common.rl.group_advantages
    loss_norm: str = "token"  # common.rl.aggregate
    temperature: float = 1.0  # rollouts sample at the loss's temperature
    max_tokens: int = 80
    val_problems: int = 200
    sampled_n: int = 8  # samples per validation problem at T = 1: sampled Pass@1, Pass@4, Pass@8
    eval_every: int = 4


def oracle_reward(tokenizer, problems, kind: str):
    """reward_fn: 1 / 0 correctness of each rollout row against its training problem, as GRPO advantages
    broadcast to the response tokens; the fraction correct is logged before the advantage."""
    answers = {tuple(tokenizer(p.prompt())["input_ids"]): str(p.answer) for p in problems}

    def reward(ro: Rollout) -> torch.Tensor:
        ok = torch.tensor(
            [float(gsm8k_is_correct(t, answers[tuple(p)])) for t, p in zip(ro.texts, ro.prompt_ids)]
        )
        ro.metrics["correct"] = float(ok.mean())
        adv = group_advantages(ok, ro.prompt_index, kind)
        return adv[:, None] * ro.response_mask.float()

    return reward


def scores(model, tok, problems, cfg: GateConfig) -> dict[str, float]:
    """Greedy Pass@1 and, from `sampled_n` samples at T = 1 (seed 1), the sampled Pass@1 and Pass@4 / Pass@8
    (the headroom an outcome reward can find), in points."""
    prompts = [p.prompt() for p in problems]
    grade = lambda i, text: gsm8k_is_correct(text, str(problems[i].answer))  # noqa: E731
    greedy = evaluate_pass_at_k(model, tok, prompts, grade, max_tokens=cfg.max_tokens)["pass@1"]
    ks = tuple(k for k in (1, 4, 8) if k <= cfg.sampled_n)
    sampled = evaluate_pass_at_k(
        model, tok, prompts, grade, n=cfg.sampled_n, ks=ks, temperature=1.0, max_tokens=cfg.max_tokens, seed=1
    )
    out = {"greedy": round(100 * greedy, 2), "sampled": round(100 * sampled["pass@1"], 2)}
    return out | {f"pass@{k}": round(100 * sampled[f"pass@{k}"], 2) for k in ks if k > 1}


def run_seed(cfg: GateConfig, seed: int, work: Path) -> dict:
    """SFT scores, one oracle RL run, its scores and the deltas, all on validation[:val_problems]."""
    path = get_base_model(cfg.policy)
    tok = load_tokenizer(path)
    splits = make_splits()
    val = splits["validation"][: cfg.val_problems]
    policy = load_causal_lm(path, dtype=torch.float32)
    before = scores(policy, tok, val, cfg)  # before any update (run_rl trains this model in place)
    start = time.perf_counter()
    rl = RLConfig(
        output_dir=str(work / f"gate-{stage_hash(asdict(cfg))}-s{seed}"),
        chunks=cfg.chunks,
        prompts_per_chunk=cfg.prompts_per_chunk,
        samples_per_prompt=cfg.samples_per_prompt,
        algorithm=cfg.algorithm,
        minibatch_size=cfg.prompts_per_chunk * cfg.samples_per_prompt // cfg.minibatches,
        lr=cfg.lr,
        warm_lr_factor=0.1,
        warm_chunks=cfg.warm_chunks,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        loss_norm=cfg.loss_norm,
        eval_every=cfg.eval_every,
        generation_batch_size=128,
        seed=seed,
        progress=False,
        report_to="none",
    )
    grade = lambda i, text: gsm8k_is_correct(text, str(val[i].answer))  # noqa: E731
    prompts = [p.prompt() for p in val]

    def evaluate(model):
        return {
            "val_greedy": evaluate_pass_at_k(model, tok, prompts, grade, max_tokens=cfg.max_tokens)["pass@1"]
        }

    reward = oracle_reward(tok, splits["train"], cfg.advantage)
    curve = run_rl(policy, tok, [p.prompt() for p in splits["train"]], reward, rl, evaluate=evaluate)
    after = scores(policy, tok, val, cfg)
    return {
        "seed": seed,
        "sft": before,
        "rl": after,
        "delta": {k: round(after[k] - before[k], 2) for k in after},
        "curve": [{k: round(v, 4) for k, v in row.items()} for row in curve],
        "rl_wall_s": round(time.perf_counter() - start, 1),
    }


def gate(results: list[dict]) -> dict:
    """Passes when every seed clears both thresholds."""
    passed = all(
        r["delta"]["greedy"] >= GATE_GREEDY and r["delta"]["sampled"] >= GATE_SAMPLED for r in results
    )
    return {
        "gate": "passes" if passed else "fails",
        "thresholds": {"greedy": GATE_GREEDY, "sampled": GATE_SAMPLED},
        "deltas": [r["delta"] for r in results],
    }


def gate_table(verdict: dict, runs: list[dict]) -> str:
    """Markdown: one row per seed (SFT and RL scores, deltas), then the verdict; written beside gate.json."""
    head = "| seed | SFT greedy | SFT sampled | SFT Pass@4 | SFT Pass@8 | RL greedy | RL sampled | delta greedy | delta sampled |"
    rows = [head, "|" + "---|" * 9]
    for r in runs:
        sft, rl, d = r["sft"], r["rl"], r["delta"]
        cells = [
            sft["greedy"],
            sft["sampled"],
            sft.get("pass@4"),
            sft.get("pass@8"),
            rl["greedy"],
            rl["sampled"],
        ]
        cells += [f"{d['greedy']:+.2f}", f"{d['sampled']:+.2f}"]
        rows.append(f"| {r['seed']} | " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    t = verdict["thresholds"]
    rows.append(
        f"\nGate ({verdict['split']}, Pass@1 in points, every seed: greedy >= +{t['greedy']:g}, sampled >= "
        f"+{t['sampled']:g}): **{verdict['gate']}**. Config: `{json.dumps(verdict['config'])}`."
    )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.synthetic.rl_gate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policy", default=None, help="base model size (default rl-student)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="a GateConfig field, e.g. lr=1e-4")
    parser.add_argument("--out", default=None, help="also write <out>/gate.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    torch.set_num_threads(1)
    cfg = apply_overrides(GateConfig(), args.set)
    if args.policy:
        cfg = replace(cfg, policy=args.policy)
    work = runs_dir() / "rl_gate"
    results = []
    for seed in args.seeds:
        results.append(run_seed(cfg, seed, work))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "curve"}), flush=True)
    verdict = gate(results) | {"config": asdict(cfg), "seeds": args.seeds, "split": "validation"}
    print(json.dumps(verdict), flush=True)
    if args.out:
        atomic_write_json(Path(args.out) / "gate.json", verdict | {"runs": results})
        atomic_write_text(Path(args.out) / "gate.md", gate_table(verdict, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
