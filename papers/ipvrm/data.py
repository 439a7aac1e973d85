"""IPVRM's own datasets, declared as data: the policy-evaluation prompts of the official repository
(mirror only; SOURCE.md of `../shared/data/ipvrm`). ProcessBench is `common.data`'s "processbench"."""

from __future__ import annotations

from common.data import FieldError, get_field, mirror_only


def _policy_eval(r: dict) -> dict:
    prompt = get_field(r, "prompt", list)
    if not prompt or not isinstance(prompt[0], dict) or not isinstance(prompt[0].get("content"), str):
        raise FieldError("prompt", "should be a chat list whose first message has a string 'content'")
    # No id: extra_info.index repeats within a source (e.g. aimo-amc), so rows keep their position.
    return {
        "question": prompt[0]["content"],
        "answer": get_field(r, "reward_model.ground_truth"),
        "data_source": get_field(r, "data_source"),
    }


DATASETS = {
    spec.name: spec
    for spec in (mirror_only("ipvrm-policy-eval", _policy_eval, validation="ipvrm/policy_eval/val.jsonl"),)
}
