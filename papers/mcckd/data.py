"""MCC-KD's datasets and the task a run works on: `toy_task(cfg)` or `real_task(cfg, data_dir, name)`.

    task = toy_task(cfg)                       # common/synthetic arithmetic world, the toy teacher
    task = real_task(cfg, data_dir, "svamp")   # SVAMP's released rationales / GSM8K train + a teacher
    task.train[0]        # {id, question, answer[, rationales]}; no rationales: the teacher samples them
    task.dev, task.tests # eval rows {id, question, answer}; tests: ID first, then the OOD sets
    task.grade(texts, labels)                  # {strict, flexible} accuracy (release / HEAD extractors)

Where the training questions come from (spec "Setup", SOURCE.md of ../shared/data/mcckd):
- toy: the world's train split; the rationales are SAMPLED from the toy teacher (T = 1.3), so they are
  noisy and diverse; ID test = the world's test split, OOD = problems with one more arithmetic line.
- GSM8K: the 7,473-question `openai/gsm8k` main train split; the official GSM8K train rationales were
  not released in a readable form, so the teacher samples them.
- SVAMP: the 700 released questions with 10 raw teacher rationales each (mcckd/SVAMP/train.json); with
  `data.released_svamp=false` the teacher samples for the same questions instead.
- ASDiv, CSQA: the official train files are absent from the snapshot and not mirrored. A user who has them
  puts a JSON list of {instruction, label[, output: [rationales]]} at <data-dir>/mcckd/<ASDiv|CSQA>/train.json;
  asking for either without that file stops with one line (`MissingTrainData`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from common.data import (
    DataError,
    instruction_rows,
    load_rows,
    mirror_only,
    read_records,
    resolve_data_dir,
    shared_mirror,
)
from common.models import load_tokenizer
from common.scoring import normalize_number
from common.stages import stage_hash, worker_pool
from common.synthetic.base_models import get_base_model
from common.synthetic.world import DEFAULT_WORLD, WorldConfig, make_splits, valid_rationales
from papers.mcckd.config import McckdConfig
from papers.mcckd.rationales import encode_example, normalise_rationale, score

# The paper's files (official repository; SOURCE.md of ../shared/data/mcckd): mirror only.
DATASETS = {
    spec.name: spec
    for spec in (
        mirror_only(
            "mcckd-gsm8k",
            instruction_rows("number"),
            dev="mcckd/GSM8K/dev.json",
            test="mcckd/GSM8K/test.json",
        ),
        mirror_only(
            "mcckd-svamp",
            instruction_rows("number"),
            train="mcckd/SVAMP/train.json",
            dev="mcckd/SVAMP/dev.json",
            test="mcckd/SVAMP/test.json",
        ),
        mirror_only(
            "mcckd-asdiv",
            instruction_rows("number"),
            dev="mcckd/ASDiv/dev.json",
            test="mcckd/ASDiv/test.json",
        ),
        mirror_only(
            "mcckd-csqa", instruction_rows("letter"), dev="mcckd/CSQA/dev.json", test="mcckd/CSQA/test.json"
        ),
    )
}
SETS = {
    "gsm8k": ("GSM8K", "number"),
    "asdiv": ("ASDiv", "number"),
    "svamp": ("SVAMP", "number"),
    "csqa": ("CSQA", "letter"),
}
"""Short name -> (folder under mcckd/ and benchmark name, answer kind)."""


class MissingTrainData(RuntimeError):
    """A training set whose questions are not on disk (ASDiv/CSQA train are not released or mirrored)."""


@dataclass(frozen=True)
class EvalSet:
    name: str  # file names and metrics keys (e.g. `svamp`, `toy-arith`)
    benchmark: str  # the results row's benchmark (e.g. `SVAMP`)
    table: str  # the results row's table: `toy`, `ID` or `OOD`
    kind: str  # `number` | `letter`
    rows: list[dict]  # {id, question, answer}


@dataclass
class Task:
    """What the stages work on; built by `toy_task` or `real_task`, never by a scale."""

    name: str
    kind: str
    setting: str  # results `setting` before ` seed N`
    model_label: str  # results `model`
    train: list[dict]
    dev: list[dict]
    tests: list[EvalSet]
    prompt_fn: Callable[[str], str]  # the student's prompt for a question
    tokenizer: object  # the student's
    teacher_model: str  # a folder or model name (common.generation) or the endpoint's model name
    teacher_prompts: list[str]  # one per train row
    student_model: str
    target_prefix: str = ""
    teacher_sentence: bool = False  # sampled texts close with "Therefore, the answer is X." (real prompt)
    heldout: list[dict] = field(default_factory=list)  # {a, b} encoded pairs: the answer-KL diagnostic
    audit: Callable[[list[dict]], float] | None = None  # share of noisy kept rationales (toy)
    key: dict = field(default_factory=dict)  # what the cache keys of its stages depend on

    def grade(self, texts: Sequence[str], labels: Sequence[str], kind: str | None = None) -> dict:
        return score(texts, labels, kind or self.kind)


def toy_prompt(question: str) -> str:
    """The world's plain prompt format (`Problem.prompt`)."""
    return f"Question: {question}\nAnswer:"


def svamp_prompt(question: str) -> str:
    """Release data format: the instruction is the question text + "\\n", no template around it."""
    return question if question.endswith("\n") else question + "\n"


def teacher_prompt(question: str, kind: str, template: str) -> str:
    return template.format(question=question.rstrip("\n"), kind=kind)


def _problem_row(p) -> dict:
    return {"id": p.uid, "question": p.question, "answer": str(p.answer)}


def _warm_base_model(name: str) -> str:
    return str(get_base_model(name))


def toy_task(cfg: McckdConfig) -> Task:
    """The toy world: train questions for the toy teacher, validation, ID test and OOD splits, and
    held-out rationale pairs (two valid rationales per test question, equal span lengths)."""
    d, fil = cfg.data, cfg.filters
    with worker_pool(min(cfg.run.workers, 2), cfg.run.torch_threads) as pool:  # both base models at once
        teacher_dir, student_dir = map(Path, pool.map(_warm_base_model, ["teacher", "student"]))
    tok = load_tokenizer(teacher_dir)
    splits = make_splits(DEFAULT_WORLD)
    train = splits["train"][: d.n_train]
    test = splits["test"][: d.n_test]
    ood = WorldConfig(min_ops=d.ood_ops, max_ops=d.ood_ops, n_train=0, n_validation=0, n_test=d.n_ood)
    problems = {p.uid: p for p in train}
    return Task(
        name="toy-arith",
        kind="number",
        setting="arith",
        model_label="tiny-student",
        train=[_problem_row(p) for p in train],
        dev=[_problem_row(p) for p in splits["validation"][: d.n_validation]],
        tests=[
            EvalSet("toy-arith", "toy-arith", "toy", "number", [_problem_row(p) for p in test]),
            EvalSet(
                "toy-arith-ood",
                "toy-arith-ood",
                "toy",
                "number",
                list(map(_problem_row, make_splits(ood)["test"])),
            ),
        ],
        prompt_fn=toy_prompt,
        tokenizer=tok,
        teacher_model=str(teacher_dir),
        teacher_prompts=[p.prompt() for p in train],
        student_model=str(student_dir) if cfg.student.model == "toy-student" else cfg.student.model,
        target_prefix=" ",  # the world's target format: ` <rationale>` after `Answer:`
        heldout=heldout_pairs(test, tok, fil.answer_span, fil.answer_template),
        audit=partial(noisy_fraction, problems=problems),
        key={"teacher": teacher_dir.parent.name, "student": student_dir.parent.name, "data": asdict(d)},
    )


def heldout_pairs(problems, tok, mode: str, template: str) -> list[dict]:
    """The answer-KL diagnostic's items: two valid rationales per problem (seed 1) as encoded {a, b},
    kept when their answer spans have one length (the KL is position-aligned)."""
    out = []
    for p in problems:
        texts = valid_rationales(p, 2, seed=1)
        if len(texts) < 2:
            continue
        a, b = (
            encode_example(
                tok, p.prompt(), " " + normalise_rationale(t, str(p.answer)), str(p.answer), mode, template
            )
            for t in texts
        )
        if a["span"][1] - a["span"][0] == b["span"][1] - b["span"][0]:
            out.append({"a": a, "b": b})
    return out


def noisy_fraction(records: list[dict], problems: dict) -> float:
    """Share of kept rationales that no valid rationale of the problem matches line for line (arithmetic)."""
    noisy = total = 0
    for r in records:
        p = problems[r["id"]]
        good = {s.arithmetic() for order in p.orders() for g in (False, True) for s in p.steps(order, g)}
        for text in r["output"]:
            lines = re.findall(r"(-?\d+ [-+*/] -?\d+ = -?\d+)", text)
            total += 1
            noisy += any(line not in good for line in lines)
    return round(noisy / max(total, 1), 4)


def set_name(name: str) -> str:
    """`mcckd-gsm8k` / `GSM8K` / `gsm8k` -> `gsm8k`; an unknown name stops with the valid ones."""
    short = name.lower().removeprefix("mcckd-")
    if short not in SETS:
        raise DataError(f"unknown MCC-KD dataset {name!r}; valid: {', '.join(SETS)}")
    return short


def _local_train(name: str, root: Path | None) -> list[dict]:
    folder, kind = SETS[name]
    root = root or shared_mirror()
    path = (root or Path("<data-dir>")) / "mcckd" / folder / "train.json"
    if root is None or not path.is_file():
        raise MissingTrainData(
            f"mcckd: no {folder} training questions: {path} is absent (the official train file was not "
            f"released/mirrored); put a JSON list of {{instruction, label}} there or drop {name} from data.train_sets"
        )
    rows = []
    for number, rec in read_records(path):
        if not isinstance(rec, dict) or "instruction" not in rec or "label" not in rec:
            raise MissingTrainData(f"{path} row {number}: needs the fields 'instruction' and 'label'")
        label = str(rec["label"]).strip()
        answer = label if kind == "letter" else normalize_number(label)
        if answer is None:
            raise MissingTrainData(f"{path} row {number}: label {label[:30]!r} is not a number")
        row = {"id": f"{name}-train-{number}", "question": rec["instruction"], "answer": answer}
        if isinstance(rec.get("output"), list):
            row["rationales"] = [str(t) for t in rec["output"]]
        rows.append(row)
    return rows


def train_questions(
    name: str, data_dir: str | Path | None, released: bool = True, limit: int | None = None
) -> list[dict]:
    """Training questions of one set (module docstring); `rationales` kept only where `released`."""
    if name == "gsm8k":
        rows = [
            {k: r[k] for k in ("id", "question", "answer")} for r in load_rows("gsm8k", "train", data_dir)
        ]
    elif name == "svamp":
        rows = load_rows(DATASETS["mcckd-svamp"], "train", data_dir)
    else:
        rows = _local_train(name, resolve_data_dir(data_dir))
    if not released:
        rows = [{k: v for k, v in r.items() if k != "rationales"} for r in rows]
    return rows[:limit]


def eval_rows(name: str, split: str, data_dir: str | Path | None, limit: int | None = None) -> list[dict]:
    """The released dev/test split of one set (GSM8K 660/659, ASDiv 313/314, SVAMP 150/150, CSQA 1,221/1,221)."""
    return load_rows(DATASETS[f"mcckd-{name}"], split, data_dir)[:limit]


def real_task(cfg: McckdConfig, data_dir: str | Path | None, name: str) -> Task:
    """One released set as a task: its train questions (SVAMP: with the released rationales), its dev
    split, and the test splits of every same-kind set of `data.eval_sets` (this set first: ID)."""
    d, name = cfg.data, set_name(name)
    folder, kind = SETS[name]
    released = name == "svamp" and d.released_svamp
    train = train_questions(name, data_dir, released, d.limit_train)
    same_kind = [s for s in map(set_name, d.eval_sets) if SETS[s][1] == kind and s != name]
    tests = [
        EvalSet(
            s, SETS[s][0], "ID" if s == name else "OOD", kind, eval_rows(s, "test", data_dir, d.limit_test)
        )
        for s in [name, *same_kind]
    ]
    source = {"released": True} if released else {"teacher": asdict(cfg.teacher)}
    return Task(
        name=name,
        kind=kind,
        setting=f"train {folder}",
        model_label=cfg.student.model,
        train=train,
        dev=eval_rows(name, "dev", data_dir, d.limit_dev),
        tests=tests,
        prompt_fn=svamp_prompt,
        tokenizer=load_tokenizer(cfg.student.model),
        teacher_model=cfg.teacher.model,
        teacher_prompts=[teacher_prompt(q["question"], kind, cfg.teacher.prompt) for q in train],
        student_model=cfg.student.model,
        teacher_sentence=True,
        key={
            "teacher": cfg.teacher.model,
            "source": source,
            "n": len(train),
            "limits": (d.limit_dev, d.limit_test),
        },
    )


def task_hash(task: Task) -> str:
    return stage_hash({"name": task.name, **task.key})
