"""Trackers through accelerate: the SFT loop and the RL loop write TensorBoard scalars by default,
nothing with report_to="none"; the event files are read back with TensorBoard's EventAccumulator."""

from pathlib import Path

import pytest
import torch

from common.rl_loop import RLConfig, run_rl
from common.synthetic import base_models
from common.synthetic.world import make_splits
from common.tracking import hparams, start_tracker
from common.train import TrainConfig, causal_lm_loss, pad_collate, train


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_sft_on_the_toy_world_logs_the_loss_to_tensorboard(toy_tokenizer, tiny_lm, tmp_path):
    rows = base_models.sft_examples(toy_tokenizer, make_splits()["train"][:16], per_problem=1, seed=0)
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, batch_size=4, log_every=2, progress=False)
    result = train(tiny_lm, rows, causal_lm_loss, cfg, collate_fn=pad_collate(toy_tokenizer))
    logged = scalars(tmp_path / "tensorboard")["train/loss"]
    assert [step for step, _ in logged] == [2, 4]
    assert [v for _, v in logged] == pytest.approx([result.losses[1], result.losses[3]])


def test_sft_with_report_to_none_writes_no_events(toy_tokenizer, tiny_lm, tmp_path):
    rows = base_models.sft_examples(toy_tokenizer, make_splits()["train"][:8], per_problem=1, seed=0)
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=1, batch_size=4, progress=False, report_to="none")
    train(tiny_lm, rows, causal_lm_loss, cfg, collate_fn=pad_collate(toy_tokenizer))
    assert (tmp_path / "final").is_dir() and not (tmp_path / "tensorboard").exists()


def _eos_reward(tokenizer):
    def reward(ro):  # 1 at the last response token when the response ends with EOS
        r = torch.zeros(ro.input_ids.shape)
        last = ro.response_mask.long().cumsum(1).argmax(1)
        ended = ro.input_ids.gather(1, last[:, None])[:, 0] == tokenizer.eos_token_id
        r[torch.arange(len(r)), last] = ended.float()
        ro.metrics["reward_raw"] = float(ended.float().mean()) + 10.0  # recognisably not the training signal
        return r - r.mean()  # a baseline: the training signal averages 0

    return reward


def test_rl_loop_logs_loss_and_rewards_per_chunk(toy_tokenizer, tiny_lm, tmp_path):
    prompts = [p.prompt() for p in make_splits()["train"][:4]]
    cfg = RLConfig(
        output_dir=str(tmp_path),
        chunks=2,
        prompts_per_chunk=2,
        minibatch_size=2,
        max_tokens=4,
        lr=1e-3,
        progress=False,
    )
    evaluate = lambda model: {"score": 0.5}  # noqa: E731
    curve = run_rl(tiny_lm, toy_tokenizer, prompts, _eos_reward(toy_tokenizer), cfg, evaluate=evaluate)
    logged = scalars(tmp_path / "tensorboard")
    assert {"rl/loss", "rl/token_reward", "rl/seq_reward", "rl/score", "rl/chunk"} <= set(logged)
    # the reward_fn's raw measurement (before its baseline) is logged beside the training signal
    assert [step for step, _ in logged["rl/reward_raw"]] == [1, 2]
    assert all(10.0 <= v <= 11.0 for _, v in logged["rl/reward_raw"])
    assert 10.0 <= curve[2]["reward_raw"] <= 11.0
    assert logged["rl/loss"] == [(1, pytest.approx(curve[1]["loss"])), (2, pytest.approx(curve[2]["loss"]))]
    assert logged["rl/score"][0] == (0, 0.5)  # the evaluation before training, at step 0


def test_rl_report_to_is_checked_and_none_writes_nothing(toy_tokenizer, tiny_lm, tmp_path):
    with pytest.raises(ValueError, match=r"^RLConfig.report_to: 'mlflow'; valid: tensorboard, wandb, none$"):
        RLConfig(output_dir="x", chunks=1, prompts_per_chunk=1, report_to="mlflow")
    cfg = RLConfig(
        output_dir=str(tmp_path),
        chunks=1,
        prompts_per_chunk=2,
        max_tokens=2,
        progress=False,
        report_to="none",
    )
    run_rl(tiny_lm, toy_tokenizer, ["Question: 1\nAnswer:"], _eos_reward(toy_tokenizer), cfg)
    assert (tmp_path / "rl_state.pt").exists() and not (tmp_path / "tensorboard").exists()


def test_start_tracker_and_hparams(tmp_path):
    tracker = start_tracker("tensorboard", tmp_path / "tb", run_name="x", config={"a": None, "b": 2})
    tracker.log({"m": 1.5}, step=3)
    tracker.finish()
    assert scalars(tmp_path / "tb")["m"] == [(3, 1.5)]
    assert hparams({"a": None, "b": 2, "c": [1], "d": "s"}) == {"a": "null", "b": 2, "c": "[1]", "d": "s"}
    assert not start_tracker("none", tmp_path / "none", run_name="x").active
    assert not (tmp_path / "none").exists()
