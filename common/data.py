"""Named datasets as lists of plain dict rows, read from the Hugging Face hub or a local mirror.

`load_rows("gsm8k", "test")` reads from the directory given by `data_dir` (the `--data-dir` flag) or
the `REPRO_DATA_DIR` environment variable when either is set, and otherwise from the hub with
`datasets.load_dataset(hub_id, config, split=...)`. A mirror has the layout of `../shared/data`
(`gsm8k/test.jsonl`, `math500/test.jsonl`, ...; each folder's SOURCE.md says where its files come from).
Some datasets exist only as files from the papers' repositories; those need a mirror.

Every math dataset becomes rows with at least {"id": str, "question": str, "answer": str}, where
`answer` is the final answer (numbers normalised as in `common.scoring.normalize_number`: "1,000" ->
"1000"; MATH answers are LaTeX), plus "rationale"/"solution" where the source has one. `question` is the
source text unchanged (for instruction files, the full prompt the paper fed to the model).

A bad row stops the load with one line naming the file, the row and the field (`DataError`); an unknown
dataset or split lists the valid ones; an unreachable hub with no mirror says to pass a mirror.
"""

from __future__ import annotations

import csv
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.scoring import gsm8k_extract_strict, normalize_number

DATA_DIR_ENV = "REPRO_DATA_DIR"
_MIRROR_HINT = f"pass --data-dir DIR or set {DATA_DIR_ENV} to a local mirror (same layout as ../shared/data)"


class DataError(ValueError):
    """A dataset that cannot be read: unknown name or split, missing file, or a bad row (file, row, field)."""


class DataUnavailableError(DataError):
    """The hub cannot be reached (or has no copy of the split) and no local mirror was given."""


class FieldError(Exception):
    def __init__(self, name: str, problem: str):
        super().__init__(f"field {name!r} {problem}")


def get_field(record: dict, path: str, kind: type | tuple[type, ...] = str, optional: bool = False):
    """The value at a dotted path ("reward_model.ground_truth"), checked against `kind`."""
    value = record
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            if optional:
                return None
            raise FieldError(path, "missing")
        value = value[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise FieldError(path, f"should be {names}, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def number_field(record: dict, path: str) -> str:
    """A numeric answer (a number, or a string such as "1,000") as its normalised string."""
    value = get_field(record, path, (str, int, float))
    answer = normalize_number(str(value))
    if answer is None:
        raise FieldError(path, f"is not a number: {str(value)[:40]!r}")
    return answer


def str_list_field(record: dict, path: str) -> list[str]:
    items = get_field(record, path, list)
    if not all(isinstance(item, str) for item in items):
        raise FieldError(path, "should be a list of strings")
    return items


def read_records(path: Path) -> list[tuple[int, object]]:
    """(row number, record) pairs of a .jsonl (row = line number), .json list, .tsv (header) or ASDiv .xml."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (a mirror needs the layout of ../shared/data)")
    suffix = path.suffix
    if suffix == ".jsonl":
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    records.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} row {number}: not valid JSON ({e.msg})") from None
        return records
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return list(enumerate(data, start=1))
    if suffix == ".tsv":
        with path.open(encoding="utf-8", newline="") as f:
            return list(enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1))
    if suffix == ".xml":
        # ASDiv: <Problem ID=..> holding <Body>, <Question>, <Solution-Type>, <Answer>, <Formula>.
        try:
            problems = ET.parse(path).getroot().iter("Problem")
        except ET.ParseError as e:
            raise DataError(f"{path}: not valid XML ({e})") from None
        return [
            (number, {"id": p.get("ID"), **{c.tag.lower().replace("-", "_"): c.text or "" for c in p}})
            for number, p in enumerate(problems, start=1)
        ]
    raise DataError(f"{path}: unsupported file type {suffix!r} (expected .jsonl, .json, .tsv or .xml)")


# --- record -> row converters, one per source layout ------------------------------------------------


def _gsm8k(r: dict) -> dict:
    solution = get_field(r, "answer")
    answer = gsm8k_extract_strict(solution)
    if answer is None:
        raise FieldError("answer", "has no final '#### <number>'")
    rationale = solution.rpartition("####")[0].strip()
    return {"question": get_field(r, "question"), "answer": answer, "rationale": rationale}


def _math500(r: dict) -> dict:
    return {
        "id": get_field(r, "unique_id"),
        "question": get_field(r, "problem"),
        "answer": get_field(r, "answer"),
        "solution": get_field(r, "solution"),
        "subject": get_field(r, "subject"),
        "level": get_field(r, "level", int),
    }


def _svamp(r: dict) -> dict:
    question = f"{get_field(r, 'Body').strip()} {get_field(r, 'Question').strip()}"
    return {
        "id": get_field(r, "ID"),
        "question": question,
        "answer": number_field(r, "Answer"),
        "equation": get_field(r, "Equation"),
        "type": get_field(r, "Type"),
    }


def _asdiv_answer(answer: str) -> str:
    """ASDiv answers carry units: "9 (apples)" -> "9", "5 (cm); 6 (cm)" -> "5; 6"; numbers normalised."""
    parts = [re.sub(r"\s*\([^()]*\)", "", part).strip() for part in answer.split(";")]
    return "; ".join(normalize_number(p) or p for p in parts)


def _asdiv(r: dict) -> dict:
    row = {
        "question": f"{get_field(r, 'body').strip()} {get_field(r, 'question').strip()}",
        "answer": _asdiv_answer(get_field(r, "answer")),
        "answer_with_unit": get_field(r, "answer"),
        "solution_type": get_field(r, "solution_type"),
        "formula": get_field(r, "formula"),
    }
    ident = get_field(r, "id", optional=True) or get_field(r, "idx", int, optional=True)
    return row if ident is None else {"id": str(ident), **row}


def _sst2(r: dict) -> dict:
    label = get_field(r, "label", (str, int))
    if str(label) not in ("0", "1"):
        raise FieldError("label", f"should be 0 or 1, got {label!r}")
    row = {"sentence": get_field(r, "sentence").strip(), "label": int(label)}
    return row if "idx" not in r else {"id": str(get_field(r, "idx", int)), **row}


def instruction_rows(answer: str = "number") -> Callable[[dict], dict]:
    """Converter for the papers' {instruction, label[, output][, category][, id]} files.

    `answer`: "number" (normalised), "letter" (A-E) or "text" (as is). A string `output` becomes
    "rationale" (when not empty), a list of strings "rationales".
    """

    def convert(r: dict) -> dict:
        row = {"question": get_field(r, "instruction")}
        if answer == "number":
            row["answer"] = number_field(r, "label")
        else:
            row["answer"] = get_field(r, "label")
            if answer == "letter" and not re.fullmatch(r"[A-E]", row["answer"]):
                raise FieldError("label", f"should be one letter A-E, got {row['answer'][:20]!r}")
        output = get_field(r, "output", (str, list), optional=True)
        if isinstance(output, list):
            row["rationales"] = str_list_field(r, "output")
        elif output:
            row["rationale"] = output
        if "category" in r:
            row["category"] = get_field(r, "category")
        if "id" in r:
            row["id"] = str(get_field(r, "id", (int, str)))
        return row

    return convert


def pairwise_rows(with_label: bool) -> Callable[[dict], dict]:
    def convert(r: dict) -> dict:
        row = {
            "question": get_field(r, "instruction"),
            "chosen": get_field(r, "chosen"),
            "rejected": get_field(r, "rejected"),
        }
        return {**row, "answer": get_field(r, "label")} if with_label else row

    return convert


def _processbench(r: dict) -> dict:
    return {
        "id": get_field(r, "id"),
        "question": get_field(r, "problem"),
        "steps": str_list_field(r, "steps"),
        "label": get_field(r, "label", int),  # index of the first wrong step, -1 when all are right
        "final_answer_correct": get_field(r, "final_answer_correct", bool),
        "generator": get_field(r, "generator"),
    }


# --- the registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset declared as data: `splits` maps our split name to (file in the mirror, hub split or None).

    The hub copies named here have the same fields as the mirror files, so one converter serves both.
    A paper declares its own sets in `papers/<slug>/data.py` (`DATASETS`) and passes the spec to
    `load_rows`; the ones here serve several papers.
    """

    name: str
    to_row: Callable[[dict], dict]
    splits: dict[str, tuple[str, str | None]]
    hub_id: str | None = None
    hub_config: str | None = None


def mirror_only(name: str, to_row: Callable[[dict], dict], **splits: str) -> DatasetSpec:
    """A dataset that exists only as files from a paper's repository (no hub copy): read from a mirror."""
    return DatasetSpec(name, to_row, {split: (path, None) for split, path in splits.items()})


PROCESSBENCH_SPLITS = ("gsm8k", "math", "olympiadbench", "omnimath")
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "gsm8k",
            _gsm8k,
            {"train": ("gsm8k/train.jsonl", "train"), "test": ("gsm8k/test.jsonl", "test")},
            "openai/gsm8k",
            "main",
        ),
        DatasetSpec("math500", _math500, {"test": ("math500/test.jsonl", "test")}, "HuggingFaceH4/MATH-500"),
        # All 1,000 SVAMP problems; the hub copy splits them 700/300, so "test" reads both.
        DatasetSpec("svamp", _svamp, {"test": ("svamp/SVAMP.json", "train+test")}, "ChilleD/SVAMP"),
        # "test": the 2,215-problem version of common math-eval harnesses (mirror only); "full": all 2,305.
        DatasetSpec(
            "asdiv",
            _asdiv,
            {"test": ("asdiv/test_2215.jsonl", None), "full": ("asdiv/ASDiv.xml", "validation")},
            "EleutherAI/asdiv",
        ),
        DatasetSpec("sst2", _sst2, {"validation": ("sst2/dev.tsv", "validation")}, "stanfordnlp/sst2"),
        DatasetSpec(
            "processbench",
            _processbench,
            {s: (f"ipvrm/processbench/{s}.json", s) for s in PROCESSBENCH_SPLITS},
            "Qwen/ProcessBench",
        ),
    )
}


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def split_names(dataset: str | DatasetSpec) -> list[str]:
    return sorted(_spec(dataset).splits)


def _spec(dataset: str | DatasetSpec) -> DatasetSpec:
    if isinstance(dataset, DatasetSpec):
        return dataset
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; valid: {', '.join(dataset_names())}")
    return DATASETS[dataset]


def shared_mirror() -> Path | None:
    """`../shared/data` beside the checkout when it exists (where the mirror-only files live here)."""
    from common.stages import repo_root

    path = repo_root().parent / "shared" / "data"
    return path if path.is_dir() else None


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The mirror root: `data_dir` if given, else $REPRO_DATA_DIR if set, else None (read from the hub)."""
    raw = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if raw is None:
        return None
    root = Path(raw).expanduser()
    if not root.is_dir():
        origin = "--data-dir" if data_dir is not None else DATA_DIR_ENV
        raise DataError(f"data dir {root} (from {origin}) is not a directory")
    return root


def _hub_records(spec: DatasetSpec, split: str) -> tuple[str, list[tuple[int, object]]]:
    hub_split = spec.splits[split][1]
    if spec.hub_id is None or hub_split is None:
        raise DataUnavailableError(
            f"dataset {spec.name!r} split {split!r} has no Hugging Face hub copy; {_MIRROR_HINT} "
            f"holding {spec.splits[split][0]}"
        )
    import datasets

    source = f"hf://{spec.hub_id}" + (f"[{spec.hub_config}]" if spec.hub_config else "") + f":{hub_split}"
    try:
        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=hub_split)
    except Exception as e:  # offline, DNS, missing repo: all end the same way for the user
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise DataUnavailableError(
            f"could not load {source} from the Hugging Face hub ({reason}); {_MIRROR_HINT}"
        ) from e
    return source, list(enumerate(ds, start=1))


def load_rows(dataset: str | DatasetSpec, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """Rows of one split of a dataset (a name here, or a paper's `DatasetSpec`), from the mirror
    (`data_dir` / $REPRO_DATA_DIR) or the hub. A split with no hub copy and no mirror given is read
    from `../shared/data` beside the checkout when that exists."""
    spec = _spec(dataset)
    if split not in spec.splits:
        raise DataError(
            f"unknown split {split!r} for dataset {spec.name!r}; valid: {', '.join(split_names(spec))}"
        )
    root = resolve_data_dir(data_dir)
    if root is None and spec.splits[split][1] is None:
        root = shared_mirror()
    if root is not None:
        path = root / spec.splits[split][0]
        source, records = str(path), read_records(path)
    else:
        source, records = _hub_records(spec, split)
    rows = []
    for index, (number, record) in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{source} row {number}: expected an object, got {type(record).__name__}")
        try:
            row = spec.to_row(record)
        except FieldError as e:
            raise DataError(f"{source} row {number}: {e}") from None
        rows.append({"id": row.pop("id", f"{spec.name}-{split}-{index}"), **row})
    return rows
