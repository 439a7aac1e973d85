"""RL rollout throughput: `common.rl_loop.run_rl` (GRPO mode) against trl's `GRPOTrainer`, one run.

Both train the same toy student (the arithmetic world's tokenizer, `tiny-student` weights from one seed,
copied for each) on the same prompts with the same oracle reward: group size G, `--prompts` prompts per
update, one update per generation, `--max-tokens` new tokens at T = 1, GRPO's sequence-normalised loss,
no KL term (trl's beta 0), lr 2e-4, float32 on the CPU. Each trainer gets one warm-up update first
(imports, first-call allocations), then `--updates` timed ones. Samples/s = updates x prompts x G / wall.
Ours is split into generation, reward and the rest (log-prob forward + backward + step); trl's split is
not exposed, so only its total is given. Needs trl (`pip install -e .[bench]`).

    python -m benchmarks.rl_throughput [--updates 4] [--prompts 8] [--group 8] [--max-tokens 80]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass, field

import torch

from common.generation import HFGenerator
from common.models import build_tiny_causal_lm, load_causal_lm
from common.rl_loop import RLConfig, run_rl
from common.scoring import gsm8k_is_correct
from common.synthetic.rl_gate import oracle_reward
from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import make_splits

LR = 2e-4


@dataclass
class Clock:
    """Seconds spent inside the wrapped generator and reward function."""

    seconds: dict[str, float] = field(default_factory=lambda: {"generation": 0.0, "reward": 0.0})

    def timed(self, name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper


def ours(model, tok, problems, args, updates: int, folder: str) -> tuple[float, dict[str, float]]:
    clock = Clock()

    def generator(policy):
        gen = HFGenerator(policy, tok)
        gen.generate = clock.timed("generation", gen.generate)
        return gen

    cfg = RLConfig(
        output_dir=folder,
        chunks=updates,
        prompts_per_chunk=args.prompts,
        samples_per_prompt=args.group,
        minibatch_size=args.prompts * args.group,
        lr=LR,
        temperature=1.0,
        max_tokens=args.max_tokens,
        loss_norm="sequence",
        progress=False,
        report_to="none",
    )
    reward = clock.timed("reward", oracle_reward(tok, problems, "grpo"))
    prompts = [p.prompt() for p in problems]
    start = time.perf_counter()
    run_rl(model, tok, prompts, reward, cfg, generator_factory=generator)
    return time.perf_counter() - start, clock.seconds


def theirs(model, tok, problems, args, updates: int, folder: str) -> float:
    import trl
    from datasets import Dataset

    rows = [{"prompt": p.prompt(), "answer": str(p.answer)} for p in problems]
    data = Dataset.from_list(rows * updates)

    def oracle(completions, answer, **_):
        return [float(gsm8k_is_correct(c, a)) for c, a in zip(completions, answer)]

    config = trl.GRPOConfig(
        output_dir=folder,
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        max_completion_length=args.max_tokens,
        temperature=1.0,
        loss_type="grpo",
        beta=0.0,
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_steps=updates,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=10**9,
        disable_tqdm=True,
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=oracle, args=config, train_dataset=data, processing_class=tok
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=4, help="timed updates per trainer")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per update")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt (G)")
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument(
        "--model",
        help="a saved causal LM on the world tokenizer (e.g. runs/base/rl-student, whose answers end early); "
        "default: tiny-student with random weights (most samples run to --max-tokens)",
    )
    args = parser.parse_args(argv)
    try:
        import trl  # noqa: F401
    except ImportError:
        print("rl_throughput: trl is not installed (pip install -e .[bench]); skipped")
        return 0
    tok = world_tokenizer()
    problems = make_splits()["train"][: args.prompts]
    if args.model:
        base = load_causal_lm(args.model, dtype=torch.float32)
    else:
        base = build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok)
    samples = args.updates * args.prompts * args.group
    with tempfile.TemporaryDirectory() as folder:
        ours(copy.deepcopy(base), tok, problems, args, 1, f"{folder}/warm-ours")
        theirs(copy.deepcopy(base), tok, problems, args, 1, f"{folder}/warm-trl")
        torch.manual_seed(0)
        our_wall, split = ours(copy.deepcopy(base), tok, problems, args, args.updates, f"{folder}/ours")
        trl_wall = theirs(copy.deepcopy(base), tok, problems, args, args.updates, f"{folder}/trl")
    rest = our_wall - split["generation"] - split["reward"]
    print(
        f"{args.updates} updates x {args.prompts} prompts x G {args.group}, {args.max_tokens} new tokens, "
        f"{args.model or 'tiny-student (random)'}, {torch.get_num_threads()} threads\n"
    )
    print("| trainer | wall s | samples/s | generation s | reward s | log-probs + update s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| common.rl_loop.run_rl | {our_wall:.1f} | {samples / our_wall:.1f} | {split['generation']:.1f} "
        f"| {split['reward']:.2f} | {rest:.1f} |"
    )
    print(f"| trl {trl.__version__} GRPOTrainer | {trl_wall:.1f} | {samples / trl_wall:.1f} | - | - | - |")
    print(f"\nours / trl samples/s: {trl_wall / our_wall:.2f}x (goal >= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
