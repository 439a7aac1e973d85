"""Proxy-KD's evaluation sets, declared as data (files of the paper's repository, mirror only; SOURCE.md
of `../shared/data/proxykd`). Read with `common.data.load_rows(DATASETS[name], "test", data_dir)`."""

from __future__ import annotations

from common.data import instruction_rows, mirror_only

DATASETS = {
    spec.name: spec
    for spec in (
        mirror_only("proxykd-agieval", instruction_rows("letter"), test="proxykd/AGIEval/test.json"),
        mirror_only("proxykd-arc", instruction_rows("letter"), test="proxykd/ARC/test.json"),
        mirror_only("proxykd-bbh", instruction_rows("text"), test="proxykd/BBH/test.json"),
        mirror_only("proxykd-csqa", instruction_rows("letter"), test="proxykd/CSQA/test.json"),
        mirror_only("proxykd-gsm8k", instruction_rows("number"), test="proxykd/GSM8K/test.json"),
    )
}
