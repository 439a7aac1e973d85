"""AD-KD's tasks, toy and real, as one `Task` the stages take (they never look at the scale).

    task = synthetic_task(cfg.synthetic)                  # the spec's signed-sum world (seeded)
    task = glue_task("sst2", cfg.glue, data_dir)          # GLUE through `datasets` or a local mirror

Encoded examples are dicts `{"input_ids": [int], "token_type_ids": [int], "label": int}`; `collate`
right-pads them. The student's training set is drawn per seed (`task.student_train(seed)`).

GLUE (spec: "Setup"): hub `nyu-mll/glue` (SST-2: `stanfordnlp/sst2`), or a mirror with the layout
`sst2/train.tsv` (label<TAB>sentence, ../shared/data/sst2), `sst2/dev.tsv` (sentence<TAB>label) and, for
the other tasks, `glue/<task>/{train,validation}.jsonl` holding the hub's rows. A row with a missing
column or a label outside the task's classes stops the load with one line naming the file and row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from common.data import DataError, DatasetSpec, FieldError, get_field, load_rows

log = logging.getLogger(__name__)

# --- the synthetic signed-sum world (spec: "Toy-scale check", 1.) ----------------------------------------

PAD, CLS = 0, 1
SIGNAL_TOKENS = tuple(range(2, 10))
SIGNAL_WEIGHTS = (1.0, 2.0, 1.5, 0.5, -1.0, -2.0, -1.5, -0.5)
DISTRACTORS = tuple(range(10, 40))
VOCAB_SIZE = 40


def signal_sum_examples(n: int, seed: int, length: int = 12, p_signal: float = 0.25, margin: float = 0.25):
    """`n` examples of [CLS] + `length` tokens: each a distractor (10..39) or, with probability
    `p_signal`, a signal token (2..9) of weight w; label 1 iff sum w > 0; |sum| <= `margin` dropped."""
    rng, weights, out = np.random.default_rng(seed), dict(zip(SIGNAL_TOKENS, SIGNAL_WEIGHTS)), []
    while len(out) < n:
        signal = rng.random(length) < p_signal
        tokens = np.where(signal, rng.choice(SIGNAL_TOKENS, length), rng.choice(DISTRACTORS, length))
        total = sum(weights.get(int(t), 0.0) for t in tokens)
        if abs(total) > margin:
            out.append({"input_ids": [CLS, *map(int, tokens)], "label": int(total > 0)})
    return out


# --- GLUE ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlueTask:
    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    dev_split: str = "validation"


GLUE_TASKS = {
    t.name: t
    for t in (
        GlueTask("sst2", ("sentence",), 2),
        GlueTask("cola", ("sentence",), 2),
        GlueTask("mrpc", ("sentence1", "sentence2"), 2),
        GlueTask("rte", ("sentence1", "sentence2"), 2),
        GlueTask("qnli", ("question", "sentence"), 2),
        GlueTask("qqp", ("question1", "question2"), 2),
        GlueTask("mnli", ("premise", "hypothesis"), 3, "validation_matched"),
        GlueTask("stsb", ("sentence1", "sentence2"), 1),
    )
}
BENCHMARK_NAMES = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "rte": "RTE", "qnli": "QNLI"}
BENCHMARK_NAMES |= {"qqp": "QQP", "mnli": "MNLI-m", "stsb": "STS-B"}


def _text(record: dict, name: str) -> str:
    value = record.get(name)
    if value is None:  # csv.DictReader fills a short row's missing columns with None
        raise FieldError(name, "missing (the row has fewer columns than the header)")
    return get_field(record, name).strip()


def glue_row_converter(task: GlueTask) -> Callable[[dict], dict]:
    """Hub / mirror record -> {"texts": [...], "label": int | float}, checking the label's range."""

    def convert(record: dict) -> dict:
        texts = [_text(record, name) for name in task.text_fields]
        raw = record.get("label")
        if raw is None:
            raise FieldError("label", "missing (the row has fewer columns than the header)")
        try:
            label = float(raw) if task.num_labels == 1 else int(str(raw).strip())
        except ValueError:
            raise FieldError("label", f"is not a number: {str(raw)[:20]!r}") from None
        if task.num_labels > 1 and not 0 <= label < task.num_labels:
            raise FieldError("label", f"{label} is outside the task's classes 0..{task.num_labels - 1}")
        return {"texts": texts, "label": label}

    return convert


def glue_spec(name: str) -> DatasetSpec:
    """The hub id and mirror layout of one GLUE task (see the module docstring)."""
    if name not in GLUE_TASKS:
        raise DataError(f"unknown GLUE task {name!r}; valid: {', '.join(GLUE_TASKS)}")
    task = GLUE_TASKS[name]
    if name == "sst2":
        splits = {"train": ("sst2/train.tsv", "train"), "validation": ("sst2/dev.tsv", "validation")}
        return DatasetSpec("sst2", glue_row_converter(task), splits, "stanfordnlp/sst2")
    splits = {s: (f"glue/{name}/{s}.jsonl", s) for s in ("train", task.dev_split)}
    return DatasetSpec(f"glue-{name}", glue_row_converter(task), splits, "nyu-mll/glue", name)


def check_labels(examples: list[dict], num_labels: int, where: str) -> None:
    """One line for an example whose label is outside the task's classes."""
    for i, ex in enumerate(examples):
        if num_labels > 1 and not (isinstance(ex["label"], int) and 0 <= ex["label"] < num_labels):
            raise DataError(
                f"{where} example {i}: label {ex['label']!r} is outside the task's classes 0..{num_labels - 1}"
            )


# --- the task the stages take ---------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    benchmark: str
    """The result rows' benchmark (`toy-signal-sum`, `SST-2 dev`, ...)."""
    num_labels: int
    teacher_train: list[dict]
    teacher_val: list[dict]
    test: list[dict]
    student_train: Callable[[int], list[dict]]
    pad_id: int = PAD
    key: dict = field(default_factory=dict)
    """What identifies the data (hashed into every stage's cache key)."""


def synthetic_task(data) -> Task:
    """The spec's toy task; `data`: the experiment's DataConfig (sizes, data seed)."""
    seed = data.data_seed
    return Task(
        name="toy-signal-sum",
        benchmark="toy-signal-sum",
        num_labels=2,
        teacher_train=signal_sum_examples(data.n_teacher_train, seed),
        teacher_val=signal_sum_examples(data.n_teacher_val, seed + 1),
        test=signal_sum_examples(data.n_test, seed + 2),
        student_train=lambda s: signal_sum_examples(data.n_student_train, 1000 + s),
        key={"world": "signal-sum", "data": repr(data)},
    )


def encode(tokenizer, rows: list[dict], max_len: int) -> list[dict]:
    """GLUE rows -> encoded examples ([CLS] a [SEP] (b [SEP]), cut at `max_len`)."""
    texts = [r["texts"] for r in rows]
    columns = list(zip(*texts))
    enc = tokenizer(*columns, truncation=True, max_length=max_len)
    types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
    return [
        {"input_ids": ids, "token_type_ids": tt, "label": r["label"]}
        for ids, tt, r in zip(enc["input_ids"], types, rows)
    ]


def glue_task(name: str, data, tokenizer, data_dir: str | None) -> Task:
    """A GLUE task: the teacher trains on `n_teacher_train` seeded training rows (0: all), keeps
    `n_teacher_val` other training rows for its checkpoint selection, and the student draws
    `n_student_train` of the teacher's rows per seed (0: all of them); test = the dev set."""
    spec, task = glue_spec(name), GLUE_TASKS[name]
    train_rows = load_rows(spec, "train", data_dir)
    dev_rows = load_rows(spec, task.dev_split, data_dir)
    order = np.random.default_rng(data.data_seed).permutation(len(train_rows))
    n_t = data.n_teacher_train or len(train_rows) - data.n_teacher_val
    if n_t <= 0 or n_t + data.n_teacher_val > len(train_rows):
        raise DataError(
            f"{name}: {n_t} + {data.n_teacher_val} teacher rows asked, the training set has {len(train_rows)}"
        )
    teacher = encode(tokenizer, [train_rows[i] for i in order[:n_t]], data.max_len)
    val = encode(tokenizer, [train_rows[i] for i in order[n_t : n_t + data.n_teacher_val]], data.max_len)
    test = encode(tokenizer, dev_rows[: data.n_test or None], data.max_len)
    n_s = data.n_student_train

    def student_train(seed: int) -> list[dict]:
        if not n_s or n_s >= len(teacher):
            return teacher
        picks = np.random.default_rng([data.data_seed, seed]).choice(len(teacher), n_s, replace=False)
        return [teacher[int(i)] for i in sorted(picks)]

    log.info(
        "%s: teacher %d, teacher-val %d, student %s per seed, test %d",
        name,
        len(teacher),
        len(val),
        n_s or "all",
        len(test),
    )
    return Task(
        name=name,
        benchmark=f"{BENCHMARK_NAMES[name]} dev",
        num_labels=task.num_labels,
        teacher_train=teacher,
        teacher_val=val,
        test=test,
        student_train=student_train,
        pad_id=tokenizer.pad_token_id,
        key={"glue": name, "data": repr(data), "n_train_rows": len(train_rows), "n_dev_rows": len(dev_rows)},
    )


def collate(pad_id: int) -> Callable[[list[dict]], dict]:
    """Right-pad encoded examples: input_ids (pad id), token_type_ids (0), attention_mask, labels; any
    per-example extra list field (the cached teacher map `t_map`) is padded with zeros."""

    def run(examples: list[dict]) -> dict:
        width = max(len(ex["input_ids"]) for ex in examples)
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            ids[i, :n] = torch.tensor(ex["input_ids"])
            mask[i, :n] = 1
            if "token_type_ids" in ex:
                types[i, :n] = torch.tensor(ex["token_type_ids"])
        labels = [ex["label"] for ex in examples]
        batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batch["labels"] = torch.tensor(
            labels, dtype=torch.float if isinstance(labels[0], float) else torch.long
        )
        for key in ("t_logits", "t_maps", "t_cls"):
            if key in examples[0]:
                batch[key] = _pad_stack([ex[key] for ex in examples], width if key == "t_maps" else None)
        return batch

    return run


def _pad_stack(values: list, width: int | None) -> torch.Tensor:
    """Stack per-example tensors; `width`: pad the last dim with zeros to it (maps: [views, L])."""
    tensors = [v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float) for v in values]
    if width is not None:
        tensors = [torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in tensors]
    return torch.stack(tensors)
