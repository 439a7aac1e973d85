"""Q-RM at `small` / `paper` scale: pairs -> Q-RM, ORM, DPO-RM -> REINFORCE / PPO -> Pass@1, Pass@k.

    make reproduce PAPER=qrm SCALE=small      # 1 GPU
    accelerate launch --config_file papers/qrm/configs/zero3.yaml -m common.reproduce qrm --scale paper

Per task (GSM8K, MATH; spec "Setup" and "Step-by-step algorithm"):
1. Preference pairs from the policy's own samples, chosen = correct, rejected = wrong (`prefs.py`; the
   paper's pairs were never mirrored, their construction is UNCONFIRMED).
2. Q-RM (`qrm_loss`), ORM (BT on the last token) and DPO-RM (`train_dpo_reward_model`) on the RM
   backbone with LoRA (`cfg.rm`); pairwise accuracy of each on the repo's held-out pairs (GSM8K 787,
   MATH 2,291): Q-RM by mean token score, ORM by last score, DPO-RM by its summed log-ratio.
3. RL (`common.rl_loop.run_rl`) for each method of `cfg.methods` (Q-RM, ORM, DPO-RM arms; Implicit-PRM
   arms on request: `train_implicit_prm`, the DPO-RM's token rewards) and seed, with
   the toy pipeline's RL configs (`pipeline.rl_config`) and reward functions (`toy_rewards`);
   DPO-RM token rewards 0.1 (log pi_dpo - log pi_ref) go through the Q-RM arm's normalisation
   (REINFORCE: Z / std + EOS overwrite; PPO: Z / std - KL, with GAE as the code's non-Q-RM PPO runs).
   Greedy Pass@1 on the task's test set every `cfg.eval.eval_every` chunks (the curves; nothing is
   chosen on them). PPO critics start from the arm's RM (the DPO-RM arm: from the ORM) with a fresh head.
4. Greedy Pass@1 and unbiased Pass@k (`cfg.eval.pass_k` samples at `pass_k_temperature`) on the test
   sets, for the policy before RL (row "SFT") and after each run; rows named as in published.csv.
Every stage is cached under `runs/qrm/<scale>/` by a hash of its settings; pair building resumes by
chunk, RL by chunk (`run_rl`), so a killed run picks up where it stopped. Generation: one vLLM engine
on CUDA (`VLLMPolicyEngine`, weights synced in place), the HF generator elsewhere.
Several processes (`accelerate launch`): every stage except RM training runs on the main process while
the others wait; RM training goes through `common.train` (accelerate) on every process; only the main
process writes. UNTESTED on several GPUs (README "What is missing").
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from common.models import load_causal_lm, load_tokenizer
from common.results import ROOT, write_results
from common.synthetic.tokenizer import runs_dir
from common.tables import plot_curves
from papers.qrm.config import QRMConfig
from papers.qrm.pairwise import load_pairs
from papers.qrm.pipeline import SLUG
from papers.qrm.prefs import build_pairs, data_root, grader, load_questions, read_pairs
from papers.qrm.scaled_stages import (
    ALL_METHODS,
    LOG_RATIO_KINDS,
    SCALED,
    VERSION,
    LazyGenerator,
    Pairs,
    Sampler,
    ScaledConfig,
    cached_json,
    check_tokenizers,
    default_device,
    main_process,
    rl_stage,
    rm_stage,
    score_test_set,
    stage_hash,
)

TABLE = "math_main (table number UNCONFIRMED; source: paper notes)"  # published.csv's table name
BENCHMARKS = {"gsm8k": "GSM8K", "math": "MATH", "math500": "MATH500"}
__all__ = ["SCALED", "ScaledConfig", "reproduce_scaled", "result_rows"]


def _short(name: str) -> str:
    return str(name).rstrip("/").split("/")[-1]


def result_rows(cfg: QRMConfig, sc: ScaledConfig, sft: dict, runs: list[dict], rms: list[dict]) -> list[dict]:
    """Rows shaped like published.csv (Pass@1 / Pass@k in percent, GSM8K+MATH average) + RM accuracy."""
    lora = f"LoRA{cfg.rm.lora_rank}" if cfg.rm.lora_rank else "full FT"
    setting = f"RL on GSM8K/MATH train prompts; RMs {_short(cfg.rm.backbone)} {lora}"
    base = {"table": TABLE, "setting": setting, "model": _short(cfg.policy)}
    rows, pass1 = [], {}
    entries = [("SFT", None, t, f) for t, f in sft.items()] + [
        (r["method"], r["seed"], r["task"], r["final"]) for r in runs
    ]
    for method, seed, task, final in entries:
        bench = BENCHMARKS[task if task == "gsm8k" else sc.math_test]
        for metric, value in final.items():
            rows.append(
                base | {"method": method, "benchmark": bench, "metric": metric, "value": round(value, 2)}
            )
        pass1.setdefault((method, seed), {})[task] = final["Pass@1"]
    for (method, _), by_task in pass1.items():
        if set(by_task) == {"gsm8k", "math"}:
            avg = (by_task["gsm8k"] + by_task["math"]) / 2
            rows.append(
                base
                | {
                    "method": method,
                    "benchmark": "GSM8K+MATH average",
                    "metric": "Pass@1",
                    "value": round(avg, 2),
                }
            )
    names = {"qrm": "Q-RM", "orm": "ORM", "dpo": "DPO-RM", "implicit": "Implicit-PRM"}
    for info in rms:
        rows.append(
            {
                "table": "rm_pairwise",
                "setting": f"repo held-out pairs ({info['heldout_pairs']})",
                "model": _short(cfg.rm.backbone),
                "method": names[info["kind"]],
                "benchmark": f"{BENCHMARKS[info['task']]} pairs",
                "metric": "pairwise accuracy",
                "value": round(100 * info["heldout_pairwise_accuracy"], 2),
            }
        )
    return rows


def reproduce_scaled(
    cfg: QRMConfig,
    force: bool = False,
    data_dir: str | None = None,
    sc: ScaledConfig | None = None,
    root: Path | None = None,
) -> Path:
    """Every stage of a small/paper run (module doc); writes papers/qrm/results/<scale>/ and returns it."""
    sc = sc or SCALED.get(cfg.scale)
    if sc is None:
        raise ValueError(f"qrm: no scaled stage settings for scale {cfg.scale!r}; valid: {', '.join(SCALED)}")
    bad = [t for t in sc.tasks if t not in ("gsm8k", "math")] + [
        m for m in [sc.math_test] if m not in ("math", "math500")
    ]
    if bad or not sc.tasks:
        raise ValueError(
            f"qrm: unknown dataset {bad[0] if bad else '(none)'!r}; "
            "tasks: gsm8k, math; MATH test: math, math500"
        )
    methods = list(dict.fromkeys(cfg.methods))
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"qrm: unknown method {unknown[0]!r}; valid: {', '.join(ALL_METHODS)}")
    main, barrier = main_process()
    start = time.perf_counter()
    work = runs_dir() / "qrm" / cfg.scale
    work.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(cfg.policy)
    check_tokenizers(tok, load_tokenizer(cfg.rm.backbone), cfg.policy, cfg.rm.backbone)
    sampler = Sampler(cfg, sc, tok, work)
    sft, runs, rms, prefs = {}, [], [], {}
    ppo_log_ratio = any(ALL_METHODS[m] in (("ppo", k) for k in LOG_RATIO_KINDS) for m in methods)
    kinds = sorted({ALL_METHODS[m][1] for m in methods} | ({"orm"} if ppo_log_ratio else set()))
    for task in sc.tasks:
        test_name = task if task == "gsm8k" else sc.math_test
        data = {
            "train": load_questions(task, "train", data_dir),
            "test": load_questions(test_name, "test", data_dir)[: sc.test_problems],
            "grade": grader(test_name, sc.prefs.gsm8k_mode),
        }
        pkey = stage_hash(
            {
                "task": task,
                "policy": cfg.policy,
                "prefs": asdict(sc.prefs),
                "n": len(data["train"]),
                "v": VERSION,
            }
        )
        pdir = work / f"prefs-{task}-{pkey}"
        if main:
            if force and (pdir / "progress.json").exists():
                (pdir / "progress.json").unlink()
            prefs[task] = build_pairs(LazyGenerator(cfg, sampler), tok, data["train"], task, sc.prefs, pdir)
        barrier()
        pairs = read_pairs(pdir)
        random.Random(0).shuffle(pairs)
        pairs = Pairs(pairs[: sc.rm_pairs], pkey)
        heldout = load_pairs(task, data_root(data_dir), sc.rm_eval_pairs)
        models, dirs = {}, {}
        for kind in kinds:
            models[kind], info, dirs[kind] = rm_stage(task, kind, cfg, sc, tok, pairs, heldout, work, force)
            rms.append(info)
        if main:
            skey = stage_hash(
                {"policy": cfg.policy, "eval": asdict(cfg.eval), "sc": asdict(sc), "task": task, "v": VERSION}
            )

            def sft_scores(data: dict = data) -> dict:
                policy = load_causal_lm(cfg.policy, dtype=torch.float32, device=str(default_device()))
                return score_test_set(policy, tok, sampler, data["test"], data["grade"], cfg, cfg.eval.pass_k)

            sft[task] = cached_json(work / f"sft-{task}-{skey}.json", force, sft_scores, write=main)
            for seed in cfg.seeds:
                for method in methods:
                    kind = ALL_METHODS[method][1]
                    critic_from = dirs["orm" if kind in LOG_RATIO_KINDS else kind]
                    models[kind].to(default_device())  # one RM on the GPU at a time
                    runs.append(
                        rl_stage(
                            task,
                            method,
                            seed,
                            cfg,
                            sc,
                            tok,
                            models[kind],
                            critic_from,
                            data,
                            sampler,
                            work,
                            force,
                        )
                    )
                    models[kind].cpu()
        del models
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        barrier()
    out_dir = (root or ROOT) / "papers" / SLUG / "results" / cfg.scale
    if not main:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for task in sc.tasks:
        series = {
            f"{r['method']} s{r['seed']}": [(p["step"], p["test_Pass@1"]) for p in r["curve"]]
            for r in runs
            if r["task"] == task
        }
        name = BENCHMARKS[task if task == "gsm8k" else sc.math_test]
        plots.append(
            plot_curves(
                series,
                out_dir / f"curves_{task}.png",
                f"{name}: RL from {_short(cfg.policy)}",
                "policy updates",
                "test Pass@1 (greedy, %)",
            )
        )
    (out_dir / "curves.json").write_text(json.dumps({"runs": runs}, indent=1))
    k = cfg.eval.pass_k
    return write_results(
        SLUG,
        cfg.scale,
        result_rows(cfg, sc, sft, runs, rms),
        seeds=list(cfg.seeds),
        config={"qrm": cfg.as_dict(), "scaled": asdict(sc)},
        wall_time_s=time.perf_counter() - start,
        grader=f"GSM8K: common.scoring.gsm8k_is_correct ({sc.prefs.gsm8k_mode}); "
        "MATH: common.scoring.math_is_correct (math-verify)",
        sampling={
            "eval": f"greedy Pass@1; Pass@{k} from {k} samples at T={cfg.eval.pass_k_temperature}; "
            f"max_tokens {cfg.eval.max_tokens}",
            "rollouts": "temperature 1.0, top-p 1.0",
            "generator": "vLLM (weights synced each chunk)" if sampler.engine else "HF",
        },
        extra={"rm": rms, "prefs": prefs, "plots": [p.name for p in plots], "tasks": list(sc.tasks)},
        root=root,
    )


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from common.data import DataError
    from common.models import ModelNotFoundError
    from papers.qrm.config import get_config

    parser = argparse.ArgumentParser(
        prog="python -m papers.qrm.scaled",
        description="Q-RM at small/paper scale: pairs -> Q-RM/ORM/DPO-RM -> REINFORCE/PPO -> Pass@1/Pass@16 "
        "(the same run as `python -m common.reproduce qrm --scale small|paper`).",
    )
    parser.add_argument("--scale", choices=tuple(SCALED), default="small", help="preset (default small)")
    parser.add_argument("--force", action="store_true", help="rerun every stage instead of reusing runs/qrm/")
    parser.add_argument("--data-dir", help="mirror root (default $REPRO_DATA_DIR, else ../shared/data)")
    args = parser.parse_args(argv)
    try:
        out = reproduce_scaled(get_config(args.scale), args.force, args.data_dir)
    except (DataError, ModelNotFoundError, ValueError) as err:
        print(f"qrm --scale {args.scale}: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
