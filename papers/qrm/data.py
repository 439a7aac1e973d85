"""Q-RM's own datasets, declared as data (files of the official repository, mirror only; SOURCE.md of
`../shared/data/qrm`): the GSM8K / MATH test prompts, the MATH RL prompt stream and the held-out
preference pairs. Read with `common.data.load_rows(DATASETS[name], split, data_dir)`."""

from __future__ import annotations

from common.data import instruction_rows, mirror_only, pairwise_rows

DATASETS = {
    spec.name: spec
    for spec in (
        mirror_only("qrm-gsm8k", instruction_rows("number"), test="qrm/gsm8k/test/test.jsonl"),
        mirror_only(
            "qrm-math",
            instruction_rows("text"),
            test="qrm/math/test/test.jsonl",
            train="qrm/math/train/ppo/results.jsonl",
        ),
        mirror_only("qrm-gsm8k-pairwise", pairwise_rows(False), test="qrm/gsm8k/test/pairwise/results.jsonl"),
        mirror_only("qrm-math-pairwise", pairwise_rows(True), test="qrm/math/test/pairwise/results.jsonl"),
    )
}
