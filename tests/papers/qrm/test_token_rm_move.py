"""qrm's reward models after the move to `common.token_rm` behave exactly as before it.

The pre-move `papers/qrm/{qrm,reward_models}.py` are read from git (commit `PRE_MOVE`, the last one before
the move) and run side by side with today's on a tiny model in float64: the same pairs, seeds and steps
must give bit-identical loss curves, weights, margins and token rewards for every objective qrm trains
(Q-RM, ORM, PGTG, DPO-RM, implicit PRM). Skipped outside a git checkout that has the commit.
"""

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from common.models import build_tiny_causal_lm
from common.synthetic.flaws import preference_pairs
from common.synthetic.tokenizer import world_tokenizer
from common.synthetic.world import make_splits
from papers.qrm import qrm as new_qrm
from papers.qrm import reward_models as new_rm

PRE_MOVE = "18061ec"
ROOT = Path(__file__).resolve().parents[3]


def _old_source(path: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{PRE_MOVE}:{path}"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


@pytest.fixture(scope="module")
def old():
    sources = {name: _old_source(f"papers/qrm/{name}.py") for name in ("qrm", "reward_models")}
    if None in sources.values():
        pytest.skip(f"commit {PRE_MOVE} is not in this checkout")
    modules = {}
    for name in ("qrm", "reward_models"):
        module = types.ModuleType(f"_pre_move_qrm_{name}")
        sys.modules[module.__name__] = module
        exec(
            sources[name].replace("from papers.qrm.qrm import", "from _pre_move_qrm_qrm import"),
            module.__dict__,
        )
        modules[name] = module
    yield types.SimpleNamespace(**modules)
    for name in ("qrm", "reward_models"):
        sys.modules.pop(f"_pre_move_qrm_{name}", None)


@pytest.fixture(scope="module")
def setup():
    tok = world_tokenizer()
    splits = make_splits()
    pairs = new_rm.world_preference_pairs(preference_pairs(splits["train"][:16], seed=0))[:8]
    return tok, pairs


def _lm(tok):
    return build_tiny_causal_lm("tiny-student", vocab_size=len(tok), seed=0, tokenizer=tok).double()


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _cfg(module, **kw):
    return module.RMTrainConfig(
        lr=1e-3, batch_size=4, max_steps=2, max_len=96, seed=0, mixed_precision="no", **kw
    )


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["qrm", "orm", "pgtg"])
def test_token_scorer_training_is_bit_identical(old, setup, objective):
    tok, pairs = setup
    runs = []
    for m in (old.reward_models, new_rm):
        scorer = m.TokenScorer.from_model(_lm(tok), seed=0).double()
        losses = m.train_reward_model(scorer, tok, pairs, objective, _cfg(m), progress=False)
        margins = m.pairwise_margins(
            scorer, tok, pairs, "mean" if objective != "orm" else "last", 8, max_len=96
        )
        runs.append((scorer, losses, margins))
    (a, la, ma), (b, lb, mb) = runs
    assert la == lb and ma == mb
    _same_state(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpo", "implicit"])
def test_dpo_and_implicit_prm_training_is_bit_identical(old, setup, kind):
    tok, pairs = setup
    runs = []
    for m in (old.reward_models, new_rm):
        model = m.DPORewardModel(_lm(tok))
        train = m.train_dpo_reward_model if kind == "dpo" else m.train_implicit_prm
        losses = train(model, tok, pairs, _cfg(m), progress=False)
        margins = m.log_ratio_margins(model, tok, pairs, 8, max_len=96)
        batch = m.pair_collate(tok.pad_token_id)(m.encode_pairs(tok, pairs[:4], 96))
        rewards = [
            model.token_rewards(
                batch["input_ids"], batch["attention_mask"], batch["response_mask"], 0.1, shift
            )
            for shift in (False, True)
        ]
        runs.append((model, losses, margins, rewards))
    (a, la, ma, ra), (b, lb, mb, rb) = runs
    assert la == lb and ma == mb
    assert all(torch.equal(x, y) for x, y in zip(ra, rb))
    _same_state(a, b)


def test_pure_functions_are_identical(old):
    g = torch.Generator().manual_seed(0)
    zw, zl = (
        torch.randn(5, 7, generator=g, dtype=torch.float64),
        torch.randn(5, 7, generator=g, dtype=torch.float64),
    )
    mw, ml = torch.rand(5, 7, generator=g) > 0.3, torch.rand(5, 7, generator=g) > 0.3
    mw[:, 0], ml[:, 0] = True, True
    logits, ids = (
        torch.randn(2, 6, 9, generator=g, dtype=torch.float64),
        torch.randint(0, 9, (2, 6), generator=g),
    )
    for a, b in [
        (old.qrm.qrm_loss(zw, mw, zl, ml), new_qrm.qrm_loss(zw, mw, zl, ml)),
        (old.qrm.masked_mean(zw, mw), new_qrm.masked_mean(zw, mw)),
        (old.qrm.masked_sum(zw, mw), new_qrm.masked_sum(zw, mw)),
        (old.qrm.normalize_token_rewards(zw, mw, True), new_qrm.normalize_token_rewards(zw, mw, True)),
        (
            old.qrm.aligned_token_logprobs(logits, ids, True),
            new_qrm.aligned_token_logprobs(logits, ids, True),
        ),
        (old.qrm.dpo_token_rewards(zw, zl, mw), new_qrm.dpo_token_rewards(zw, zl, mw)),
        (
            old.qrm.dpo_loss(zw[:, 0], zw[:, 1], zl[:, 0], zl[:, 1]),
            new_qrm.dpo_loss(zw[:, 0], zw[:, 1], zl[:, 0], zl[:, 1]),
        ),
    ]:
        assert torch.equal(a, b)
