"""alpha-UMi data: the ToolBench files of the official repo (mirror only) and the static test steps.

    root = toolbench_root(data_dir)                       # <mirror>/umi/toolbench (SOURCE.md there)
    trajs = load_trajectories(root / OOD_TEST)            # [{tools, instruction, conversations}]
    steps = static_steps(trajs, str(root / OOD_TEST))       # 1,547 teacher-forced steps of the OOD set
    samples = role_datasets(trajs, where)                 # {role: [{tools, history, input, target}]}

The mirror is `--data-dir` / $REPRO_DATA_DIR, else `../shared/data` beside the checkout
(`common.data.shared_mirror`); the files are not on the hub. A bad file stops with one line naming the
file, the record index and the problem (`DataError`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from common.data import DataError, resolve_data_dir, shared_mirror
from papers.umi.formats import (
    EOS_TEXT,
    NEXT_CALLER,
    NEXT_CONCLUSION,
    NEXT_GIVE_UP,
    TEMPLATES,
    FormatError,
    tool_names,
)
from papers.umi.preprocess import TrajectoryError, trajectory_samples

OOD_TEST = "test/out_of_domain.json"
TRAIN_EXAMPLE = "train-example/raw_data/raw_data_stage_2.json"


def toolbench_root(data_dir: str | Path | None = None) -> Path:
    """<mirror>/umi/toolbench, or `DataError` saying where it was looked for."""
    mirror = resolve_data_dir(data_dir) or shared_mirror()
    if mirror is None or not (mirror / "umi" / "toolbench").is_dir():
        raise DataError(
            "umi: ToolBench files not found (umi/toolbench under --data-dir, $REPRO_DATA_DIR or ../shared/data)"
        )
    return mirror / "umi" / "toolbench"


def load_trajectories(path: str | Path) -> list[dict]:
    """A JSON list of {tools, conversations, ...} records, each checked: a bad one raises `DataError`
    naming the file and the index."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of trajectories, got {type(records).__name__}")
    for i, rec in enumerate(records):
        where = f"{path} record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: not an object")
        for key in ("tools", "conversations"):
            if not isinstance(rec.get(key), list):
                raise DataError(f"{where}: missing or non-list {key!r}")
        for j, tool in enumerate(rec["tools"]):
            if not isinstance(tool, dict) or not isinstance(tool.get("Name"), str):
                raise DataError(f"{where} tool {j}: malformed tool JSON (needs a string 'Name')")
    return records


def role_datasets(
    trajectories: Sequence[dict], where: str, stale_giveup_input: bool = False, templates: dict = TEMPLATES
) -> dict[str, list[dict]]:
    """Every trajectory's per-role samples, concatenated per role (rule D)."""
    out: dict[str, list[dict]] = {}
    for i, rec in enumerate(trajectories):
        try:
            samples = trajectory_samples(rec, stale_giveup_input, f"{where} record {i}", templates)
        except (TrajectoryError, FormatError) as err:
            raise DataError(str(err)) from None
        for role, rows in samples.items():
            out.setdefault(role, []).extend(rows)
    return out


def _marker(value: str) -> str | None:
    for plan, marker in (("give up", NEXT_GIVE_UP), ("finish", NEXT_CONCLUSION), ("call", NEXT_CALLER)):
        if marker in value:
            return plan
    return None


def static_steps(trajectories: Sequence[dict], where: str) -> list[dict]:
    """The static test set: one teacher-forced step per assistant turn with a Next-marker.

    A step is {id, tools, tool_names, history (gold turns before it), plan, planner (gold planner text),
    gold (caller text or answer), reference (the official reference string)}. References: call
    "assistant: <planner></s>caller: <caller></s>", finish "assistant: <planner></s>conclusion: <answer></s>",
    give-up the planner text alone."""
    steps = []
    for i, rec in enumerate(trajectories):
        conv = rec["conversations"]
        if not any(t.get("from") == "assistant" for t in conv if isinstance(t, dict)):
            raise DataError(f"{where} record {i}: no assistant turn")
        for j, turn in enumerate(conv):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise DataError(f"{where} record {i} turn {j}: needs string 'from' and 'value'")
            plan = _marker(turn["value"]) if turn.get("from") == "assistant" else None
            if plan is None:
                continue
            nxt = conv[j + 1] if j + 1 < len(conv) else {}
            planner, gold = turn["value"], ""
            if plan == "give up":
                reference = planner
            else:
                want = "caller" if plan == "call" else "conclusion"
                if nxt.get("from") != want:
                    raise DataError(f"{where} record {i} turn {j}: {plan} step not followed by a {want} turn")
                gold = nxt["value"]
                reference = f"assistant: {planner}{EOS_TEXT}{want}: {gold}{EOS_TEXT}"
            steps.append(
                {
                    "id": f"{i}-{j}",
                    "tools": rec["tools"],
                    "tool_names": [t["Name"] for t in rec["tools"]],
                    "tool_list": tool_names(rec["tools"]),
                    "history": conv[:j],
                    "plan": plan,
                    "planner": planner,
                    "gold": gold,
                    "reference": reference,
                }
            )
    return steps


def subsample_steps(steps: Sequence[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """`limit` steps stratified by plan (proportional, at least one per plan), in file order; None: all."""
    if limit is None or limit >= len(steps):
        return list(steps)
    rng = random.Random(seed)
    by_plan: dict[str, list[int]] = {}
    for k, s in enumerate(steps):
        by_plan.setdefault(s["plan"], []).append(k)
    chosen = []
    for plan in sorted(by_plan):
        idx = by_plan[plan]
        take = max(1, round(limit * len(idx) / len(steps)))
        chosen += rng.sample(idx, min(take, len(idx)))
    return [steps[k] for k in sorted(chosen)]
