"""The bad-input corpus (issue 14, item 1): every entry point against every kind of bad input.

Entry points: `python -m common.reproduce` (every paper), `python -m papers.socialbench.evaluate`,
`python -m common.tables`, `python -m papers.umi.report`, and the library functions under them that read
files (the papers' dataset loaders, the trainers' checkpoints, the RL loop's state). Bad inputs: unknown
paper / scale / `--set` key, a value of the wrong type or out of range, a missing or empty `--data-dir`, a
dataset file with a bad row (wrong type, missing field, invalid JSON, truncated last line), a model path
that does not exist, a corrupt checkpoint or stage output, an endpoint that refuses connections.

Each case asserts: a non-zero exit (or the named exception class for a library call); one error line, no
traceback, naming the file / row / field / key and, where there is a fixed set, the valid values; and that
every file already under `papers/*/results/` and under `$REPRO_RUNS` is byte for byte unchanged. The CLI
cases run in-process (`main(argv)`, stderr captured) so the file stays fast; two run as real processes.
The bad mirrors are a few rows copied from ../shared/data into tmp_path (nothing is committed).
91 cases; 26 of them failed the rule before the fixes that came with this file (issue 14's closing note).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common import reproduce
from common.data import DataError, load_rows
from common.models import ModelNotFoundError
from common.stages import StageError, repo_root

REPO = repo_root()
SHARED = REPO.parent / "shared" / "data"
PAPERS = ("qrm", "lco", "mcckd", "proxykd", "adkd", "socialbench", "umi")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (the shared data mirror) is absent")


# --- the invariants every case checks ----------------------------------------------------------------


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def results_checksums() -> dict[str, str]:
    return {
        f"{slug}/{k}": v for slug in PAPERS for k, v in checksums(REPO / "papers" / slug / "results").items()
    }


@pytest.fixture(autouse=True)
def nothing_written_is_touched(tmp_path, monkeypatch):
    """A tmp $REPRO_RUNS holding a finished-looking stage of every paper; after the case, it and every
    committed results file are as they were."""
    runs = tmp_path / "runs"
    for slug in PAPERS:
        stage = runs / slug / "toy" / "stage-0123456789ab"
        stage.mkdir(parents=True)
        (stage / "metrics.json").write_text(json.dumps({"slug": slug, "loss": 0.5}) + "\n")
        (stage / "outputs.jsonl").write_text('{"id": 0}\n{"id": 1}\n')
    monkeypatch.setenv("REPRO_RUNS", str(runs))
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))  # no cached download stands in for a mirror
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    before_runs, before_results = checksums(runs), results_checksums()
    yield
    after = checksums(runs)
    assert {k: after.get(k) for k in before_runs} == before_runs, "a file already under $REPRO_RUNS changed"
    assert results_checksums() == before_results, "a file under papers/*/results changed"


ERROR_LINE = re.compile(r"^(error: |papers/\w+: |\w+ (toy|small|paper): )")


def one_error_line(err: str) -> str:
    """The one line that reports the error: no traceback, exactly one error line, and it is the last."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def run_cli(main: Callable[[list[str]], int], argv: list[str], capsys) -> tuple[int, str]:
    """`main(argv)` in-process: (exit status, stderr). A `SystemExit("one line")` raised under it exits
    the way the interpreter would: the line on stderr, status 1."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            code = 1
    return code, capsys.readouterr().err


@dataclass(frozen=True)
class Cli:
    """One CLI case: argv (with {mirror}, {tmp}, {port} filled in), the expected exit status (None: any
    non-zero) and the substrings the error line must hold."""

    id: str
    argv: tuple[str, ...]
    says: tuple[str, ...]
    code: int | None = 2
    mirror: str | None = None  # the bad mirror (`MIRRORS`) that {mirror} names
    marks: tuple = field(default=())


def cases(*items: Cli):
    return [pytest.param(c, id=c.id, marks=list(c.marks)) for c in items]


# --- bad mirrors: a few real rows copied from ../shared/data, then broken -----------------------------


def _records(rel: str, n: int = 3) -> list[dict]:
    path = SHARED / rel
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return json.loads(path.read_text(encoding="utf-8"))[:n]


def _write(root: Path, rel: str, records: list, how: str = "ok") -> None:
    """`records` as the file type of `rel`; `how`: ok | invalid-json (row 2) | truncated (last line / file
    cut in half)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        lines = [json.dumps(r) for r in records]
        if how == "invalid-json":
            lines[1] = "{not json"
        if how == "truncated":
            lines[-1] = lines[-1][: len(lines[-1]) // 2]
        text = "\n".join(lines) + ("" if how == "truncated" else "\n")
    else:
        text = json.dumps(records)
        if how in ("invalid-json", "truncated"):
            text = text[: len(text) // 2]
    path.write_text(text, encoding="utf-8")


def _with(records: list[dict], index: int, **changes) -> list[dict]:
    """A copy of `records` with fields of one record changed (value `...`: the field removed)."""
    out = [dict(r) for r in records]
    for key, value in changes.items():
        if value is ...:
            del out[index][key]
        else:
            out[index][key] = value
    return out


UMI_OOD = "umi/toolbench/test/out_of_domain.json"
SVAMP_TRAIN = "mcckd/SVAMP/train.json"
GSM8K_TRAIN = "gsm8k/train.jsonl"
SST2 = ("sst2/train.tsv", "sst2/dev.tsv")


def _tsv(root: Path, rel: str, rows: list[str]) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def build_mirrors(root: Path) -> dict[str, Path]:
    """name -> a mirror root holding one broken file (and good copies of what is read before it)."""
    made = {}

    def mirror(name: str) -> Path:
        made[name] = root / name
        made[name].mkdir(parents=True)
        return made[name]

    mirror("empty")
    ood = _records(UMI_OOD)
    _write(mirror("umi-missing-field"), UMI_OOD, _with(ood, 1, conversations=...))
    _write(mirror("umi-wrong-type"), UMI_OOD, _with(ood, 2, tools="calculator"))
    _write(mirror("umi-invalid-json"), UMI_OOD, ood, "invalid-json")
    svamp = _records(SVAMP_TRAIN)
    _write(mirror("mcckd-wrong-type"), SVAMP_TRAIN, _with(svamp, 1, label=[1, 2]))
    _write(mirror("mcckd-missing-field"), SVAMP_TRAIN, _with(svamp, 2, instruction=...))
    gsm8k = _records(GSM8K_TRAIN)
    _write(mirror("proxykd-truncated"), GSM8K_TRAIN, gsm8k, "truncated")
    _write(mirror("proxykd-invalid-json"), GSM8K_TRAIN, gsm8k, "invalid-json")
    _write(mirror("proxykd-wrong-type"), GSM8K_TRAIN, _with(gsm8k, 0, question=7))
    train, dev = ((SHARED / rel).read_text(encoding="utf-8").splitlines()[:4] for rel in SST2)  # label first
    bad = mirror("adkd-missing-field")
    _tsv(bad, SST2[0], [train[0], train[1], train[2].split("\t")[0]])
    _tsv(bad, SST2[1], dev)
    bad = mirror("adkd-wrong-type")
    _tsv(bad, SST2[0], [train[0], train[1], "positive\t" + train[2].split("\t")[1]])
    _tsv(bad, SST2[1], dev)
    edited = mirror("socialbench-edited") / "socialbench" / "emotional_perception.json"
    edited.parent.mkdir(parents=True)
    edited.write_text(json.dumps(_records("socialbench/emotional_perception.json", 5)), encoding="utf-8")
    return made


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (the shared data mirror) is absent")
    return build_mirrors(tmp_path_factory.mktemp("mirrors"))


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(case: Cli, mirrors: dict[str, Path] | None, tmp_path: Path, port: int) -> list[str]:
    values = {"tmp": str(tmp_path), "port": str(port), "shared": str(SHARED)}
    if case.mirror is not None:
        values["mirror"] = str(mirrors[case.mirror])
    return [arg.format(**values) for arg in case.argv]


def check_cli(main, case: Cli, request, tmp_path, capsys, port: int = 0) -> str:
    mirrors = request.getfixturevalue("mirrors") if case.mirror is not None else None
    code, err = run_cli(main, fill(case, mirrors, tmp_path, port), capsys)
    assert code != 0, err
    if case.code is not None:
        assert code == case.code, err
    line = one_error_line(err)
    for part in case.says:
        assert part.format(mirror=mirrors[case.mirror] if mirrors else "") in line, line
    return line


# --- python -m common.reproduce ----------------------------------------------------------------------

VALID_PAPERS = "valid: qrm, lco, ipvrm, mcckd, proxykd, adkd, socialbench, umi"
WRONG_TYPE = {
    "qrm": ("rm.lr=fast", "'fast' is not a number"),
    "lco": ("rl.seeds=[zero]", "'zero' is not an int"),
    "mcckd": ("seeds=abc", "'abc' is not an int"),
    "proxykd": ("student.top_k=1.5", "1.5 is not an int"),
    "adkd": ("glue.enabled=maybe", "'maybe' is not true/false"),
    "socialbench": ("zero_shot.max_tokens=abc", "'abc' is not an int"),
    "umi": ("model.lora=[1]", "[1] is not true/false"),
}
USAGE = cases(
    Cli("ipvrm-set-unknown-key", ("ipvrm", "--set", "nosuch=1"), ("unknown key 'nosuch'", "valid: scale")),
    Cli("ipvrm-set-wrong-type", ("ipvrm", "--set", "rl.lr=fast"), ("'fast' is not a number",)),
    Cli(
        "ipvrm-processbench-sample-of-1",
        ("ipvrm", "--set", "processbench.per_subset=1"),
        ("processbench.per_subset must be >= 2",),
    ),
    Cli(
        "ipvrm-unknown-rm-kind",
        ("ipvrm", "--set", "rm.kinds=[PRM9]"),
        ("unknown rm.kinds entry 'PRM9'", "valid: "),
    ),
    Cli(
        "ipvrm-bon-n-above-samples",
        ("ipvrm", "--set", "bon.ns=[4, 128]"),
        ("bon.ns has N = 128, more than the bon.samples = 64 candidates",),
    ),
    Cli("unknown-paper", ("gpt5",), ("unknown paper 'gpt5'", VALID_PAPERS)),
    Cli("unknown-scale", ("umi", "--scale", "huge"), ("unknown scale 'huge'", "valid: toy, small, paper")),
    Cli("set-without-value", ("qrm", "--set", "rm.lr"), ("'rm.lr'", "expected key.path=value")),
    Cli("set-a-group", ("lco", "--set", "rl=1"), ("--set rl: is a group", "enabled, task")),
    Cli("unknown-nested-key", ("qrm", "--set", "rm.lrr=1"), ("unknown key 'lrr' in rm", "valid: backbone")),
    Cli("wrong-type-in-a-list", ("mcckd", "--set", "seeds=[0, x]"), ("'x' is not an int",)),
    *(
        Cli(f"{p}-set-unknown-key", (p, "--set", "nosuch=1"), ("unknown key 'nosuch'", "valid: scale"))
        for p in PAPERS
    ),
    *(Cli(f"{p}-set-wrong-type", (p, "--set", WRONG_TYPE[p][0]), (WRONG_TYPE[p][1],)) for p in PAPERS),
    *(
        Cli(
            f"{p}-missing-data-dir",
            (p, "--data-dir", "{tmp}/no-such-dir"),
            ("no-such-dir", "not a directory"),
        )
        for p in PAPERS
    ),
)
OUT_OF_RANGE = cases(
    Cli("qrm-share-above-1", ("qrm", "--set", "data.pair_habit_share=2"), ("pair_habit_share", "[0, 1]")),
    Cli(
        "qrm-unknown-method",
        ("qrm", "--set", "methods=[XYZ]"),
        ("unknown method 'XYZ'", "valid: REINFORCE+Q-RM"),
    ),
    Cli("qrm-empty-tasks", ("qrm", "--set", "data.tasks=[]"), ("data.tasks and methods must not be empty",)),
    Cli("lco-negative-beta", ("lco", "--set", "loss.beta=-1"), ("beta must be > 0",)),
    Cli("lco-zero-updates", ("lco", "--set", "rl.updates_per_chunk=0"), ("updates_per_chunk must be >= 1",)),
    Cli("lco-unknown-task", ("lco", "--set", "rl.task=svamp"), ("unknown task 'svamp'", "valid: ")),
    Cli(
        "mcckd-unknown-train-set",
        ("mcckd", "--scale", "small", "--set", "data.train_sets=[xyz]"),
        ("unknown MCC-KD dataset 'xyz'", "valid: gsm8k, asdiv, svamp, csqa"),
        code=1,
    ),
    Cli(
        "proxykd-unknown-source",
        ("proxykd", "--set", "data.sources=[bogus]"),
        ("'bogus' is not a task", "valid: markov, arith, gsm8k"),
        code=1,
    ),
    Cli(
        "adkd-top-k-above-d",
        ("adkd", "--set", "synthetic.student.top_k=100000", "--set", "glue.enabled=false"),
        ("top-K K = 100000", "hidden size d = "),
        code=1,
    ),
    Cli(
        "socialbench-sample-above-1",
        ("socialbench", "--set", "zero_shot.sample=2"),
        ("sample must be in (0, 1]",),
    ),
    Cli(
        "socialbench-unknown-column",
        ("socialbench", "--set", "zero_shot.categories=[XYZ]"),
        ("unknown column 'XYZ'", "valid: SA Style, SA Know"),
    ),
    Cli("umi-limit-below-1", ("umi", "--set", "real.limit=0"), ("real.limit must be >= 1",)),
    Cli(
        "umi-unknown-backend",
        ("umi", "--set", "real.backend=tgi"),
        ("real.backend must be one of auto, hf, vllm", "'tgi'"),
    ),
)
UMI_REAL = ("umi", "--set", "toy=false")  # the ToolBench static eval only: it reads the mirror first
MCCKD_SVAMP = ("mcckd", "--scale", "small", "--set", "data.train_sets=[svamp]")
PROXYKD_REAL = ("proxykd", "--scale", "small")
ADKD_SST2 = ("adkd", "--set", "synthetic.enabled=false")
DATA = cases(
    Cli("socialbench-empty-data-dir", ("socialbench", "--data-dir", "{mirror}"), ("emotional_perception.json", "--data-dir"), mirror="empty"),
    Cli("socialbench-edited-file", ("socialbench", "--data-dir", "{mirror}"), ("{mirror}/socialbench/emotional_perception.json",), mirror="socialbench-edited"),
    Cli("umi-empty-data-dir", (*UMI_REAL, "--data-dir", "{mirror}"), ("umi/toolbench under --data-dir",), code=1, mirror="empty"),
    Cli("umi-missing-field", (*UMI_REAL, "--data-dir", "{mirror}"), ("out_of_domain.json record 1", "'conversations'"), code=1, mirror="umi-missing-field"),
    Cli("umi-wrong-type", (*UMI_REAL, "--data-dir", "{mirror}"), ("out_of_domain.json record 2", "'tools'"), code=1, mirror="umi-wrong-type"),
    Cli("umi-invalid-json", (*UMI_REAL, "--data-dir", "{mirror}"), ("out_of_domain.json: not JSON",), code=1, mirror="umi-invalid-json"),
    Cli("mcckd-empty-data-dir", (*MCCKD_SVAMP, "--data-dir", "{mirror}"), ("{mirror}/mcckd/SVAMP/train.json: file not found",), code=1, mirror="empty"),
    Cli("mcckd-wrong-type", (*MCCKD_SVAMP, "--data-dir", "{mirror}"), ("SVAMP/train.json row 2", "field 'label'", "should be str/int/float"), code=1, mirror="mcckd-wrong-type"),
    Cli("mcckd-missing-field", (*MCCKD_SVAMP, "--data-dir", "{mirror}"), ("SVAMP/train.json row 3", "field 'instruction' missing"), code=1, mirror="mcckd-missing-field"),
    Cli("proxykd-empty-data-dir", (*PROXYKD_REAL, "--data-dir", "{mirror}"), ("{mirror}/gsm8k/train.jsonl: file not found",), code=1, mirror="empty"),
    Cli("proxykd-truncated-last-line", (*PROXYKD_REAL, "--data-dir", "{mirror}"), ("gsm8k/train.jsonl row 3: not valid JSON",), code=1, mirror="proxykd-truncated"),
    Cli("proxykd-invalid-json", (*PROXYKD_REAL, "--data-dir", "{mirror}"), ("gsm8k/train.jsonl row 2: not valid JSON",), code=1, mirror="proxykd-invalid-json"),
    Cli("proxykd-wrong-type", (*PROXYKD_REAL, "--data-dir", "{mirror}"), ("gsm8k/train.jsonl row 1", "field 'question' should be str, got int"), code=1, mirror="proxykd-wrong-type"),
    Cli("adkd-empty-data-dir", (*ADKD_SST2, "--data-dir", "{mirror}"), ("{mirror}/sst2/train.tsv: file not found",), code=1, mirror="empty"),
    Cli("adkd-missing-field", (*ADKD_SST2, "--data-dir", "{mirror}"), ("sst2/train.tsv row 2", "field 'sentence' missing"), code=1, mirror="adkd-missing-field"),
    Cli("adkd-wrong-type", (*ADKD_SST2, "--data-dir", "{mirror}"), ("sst2/train.tsv row 2", "field 'label' is not a number: 'positive'"), code=1, mirror="adkd-wrong-type"),
)  # fmt: skip
MODELS = cases(
    Cli("qrm-policy-path", ("qrm", "--set", "policy=/no/such/model"), ("model '/no/such/model': no such directory",)),
    Cli("qrm-rm-path", ("qrm", "--set", "rm.backbone=./no/such/rm"), ("'./no/such/rm': no such directory",)),
    Cli("umi-model-path", (*UMI_REAL, "--set", "real.model=/no/such/model"), ("'/no/such/model': no such directory",), code=1),
    Cli("mcckd-student-path", (*MCCKD_SVAMP, "--set", "student.model=/no/such/model"), ("'/no/such/model': no such directory",), code=1),
    Cli("proxykd-student-path", (*PROXYKD_REAL, "--data-dir", "{shared}", "--set", "eval.sets=[gsm8k]", "--set", "student.model=/no/such/model"), ("'/no/such/model': no such directory",), code=1),
    Cli("lco-policy-path", ("lco", "--set", "rl.policy=/no/such/model"), ("lco: rl.policy '/no/such/model': no such directory",)),
    Cli("lco-hub-model-offline", ("lco", "--scale", "small", "--set", "rl.policy=nobody/no-such-model"), ("'nobody/no-such-model' could not be loaded", "HF_HUB_OFFLINE=1")),
    Cli("adkd-model-path", (*ADKD_SST2, "--set", "glue.teacher.net.model=/no/such/model"), ("'/no/such/model': no such directory",), code=1),
)  # fmt: skip


READS_SHARED = [pytest.param(*p.values, id=p.id, marks=[*p.marks, needs_shared]) for p in [*DATA, *MODELS]]


@pytest.mark.parametrize("case", [*USAGE, *OUT_OF_RANGE, *READS_SHARED])
def test_reproduce(case, request, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        reproduce, "write_tables", lambda *a, **k: pytest.fail("a bad input got to the tables")
    )
    check_cli(reproduce.main, case, request, tmp_path, capsys)


def test_reproduce_as_a_real_process_exits_non_zero_with_one_line(tmp_path):
    """The interpreter's own exit (status and stderr) for a pipeline's `SystemExit("one line")`
    (tests/common/test_reproduce.py runs the usage errors as processes)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.reproduce",
            "mcckd",
            "--scale",
            "small",
            "--set",
            "data.train_sets=[xyz]",
        ],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "REPRO_RUNS": str(tmp_path / "runs")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    assert one_error_line(out.stderr) == (
        "mcckd small: unknown MCC-KD dataset 'xyz'; valid: gsm8k, asdiv, svamp, csqa"
    )


# --- python -m papers.socialbench.evaluate, common.tables, papers.umi.report -------------------------

EVALUATE = cases(
    Cli("refused-endpoint", ("--model", "http://127.0.0.1:{port}/v1", "--retries", "0", "--timeout", "5", "--limit", "1", "--categories", "ep-situ", "--no-progress", "--out", "{tmp}/run"), ("1 items failed after every retry against http://127.0.0.1:", "rerun to retry them"), code=1),
    Cli("model-path", ("--model", "/no/such/model", "--categories", "ep-situ", "--limit", "1", "--out", "{tmp}/run"), ("'/no/such/model'", "no such directory")),
    Cli("unknown-model-spec", ("--model", "ftp://host/v1", "--categories", "ep-situ", "--out", "{tmp}/run"), ("'ftp://host/v1'",)),
    Cli("empty-data-dir", ("--model", "policy:oracle", "--data-dir", "{mirror}", "--out", "{tmp}/run"), ("is in neither", "pass --data-dir DIR"), mirror="empty"),
    Cli("missing-data-dir", ("--model", "policy:oracle", "--data-dir", "{tmp}/no-such-dir", "--out", "{tmp}/run"), ("no-such-dir", "not a directory")),
    Cli("edited-data-file", ("--model", "policy:oracle", "--categories", "ep", "--data-dir", "{mirror}", "--out", "{tmp}/run"), ("{mirror}/socialbench/emotional_perception.json", "truncated or edited"), mirror="socialbench-edited"),
)  # fmt: skip


@pytest.mark.parametrize("case", EVALUATE)
def test_socialbench_evaluate(case, request, tmp_path, capsys, closed_port):
    from papers.socialbench import evaluate

    check_cli(evaluate.main, case, request, tmp_path, capsys, closed_port)


def test_socialbench_regrade_of_a_corrupt_run_names_file_and_line(tmp_path, capsys):
    from papers.socialbench import evaluate

    run = tmp_path / "run"
    run.mkdir()
    (run / "outputs.jsonl").write_text('{"id": "x", "outp\n{"id": "y"}\n')
    before = checksums(run)
    code, err = run_cli(evaluate.main, ["--regrade", str(run)], capsys)
    assert code == 2
    assert f"{run / 'outputs.jsonl'}: line 1 is not JSON" in one_error_line(err)
    assert checksums(run) == before


TABLES = cases(
    Cli("tables-unknown-paper", ("tables", "--paper", "gpt5"), ("unknown paper 'gpt5'", VALID_PAPERS)),
    Cli(
        "tables-unknown-scale",
        ("tables", "--scale", "huge"),
        ("unknown scale 'huge'", "valid: toy, small, paper"),
    ),
    Cli("diff-unknown-paper", ("diff", "gpt5"), ("unknown paper 'gpt5'", VALID_PAPERS)),
    Cli("diff-unknown-scale", ("diff", "qrm", "--scale", "huge"), ("unknown scale 'huge'",)),
)


@pytest.mark.parametrize("case", TABLES)
def test_tables_cli(case, request, tmp_path, capsys):
    from common import tables

    check_cli(tables.main, case, request, tmp_path, capsys)


def test_umi_report_unknown_scale(tmp_path, capsys):
    from papers.umi import report

    code, err = run_cli(report.main, ["huge"], capsys)
    assert code == 1
    assert "unknown scale 'huge'; valid: toy, small, paper" in one_error_line(err)


# --- library entry points: the papers' loaders, checkpoints, RL state -------------------------------


def _paper_loader(paper: str, name: str, split: str):
    def load(root):
        module = __import__(f"papers.{paper}.data", fromlist=["DATASETS"])
        return load_rows(module.DATASETS[name], split, root)

    return load


LOADERS = [  # (id, loader(mirror root), file in the mirror, rows written, how, substrings of the message)
    ("qrm-gsm8k-missing-label", _paper_loader("qrm", "qrm-gsm8k", "test"), "qrm/gsm8k/test/test.jsonl", ("label", ...), "ok", ("row 2", "field 'label' missing")),
    ("qrm-math-truncated", _paper_loader("qrm", "qrm-math", "test"), "qrm/math/test/test.jsonl", None, "truncated", ("row 3: not valid JSON",)),
    ("qrm-pairs-wrong-type", _paper_loader("qrm", "qrm-gsm8k-pairwise", "test"), "qrm/gsm8k/test/pairwise/results.jsonl", ("chosen", 3), "ok", ("row 2", "field 'chosen' should be str, got int")),
    ("qrm-pairs-invalid-json", _paper_loader("qrm", "qrm-math-pairwise", "test"), "qrm/math/test/pairwise/results.jsonl", None, "invalid-json", ("row 2: not valid JSON",)),
    ("mcckd-csqa-bad-letter", _paper_loader("mcckd", "mcckd-csqa", "dev"), "mcckd/CSQA/dev.json", ("label", "Z"), "ok", ("row 2", "field 'label' should be one letter A-E")),
    ("mcckd-gsm8k-not-a-number", _paper_loader("mcckd", "mcckd-gsm8k", "test"), "mcckd/GSM8K/test.json", ("label", "many"), "ok", ("row 2", "field 'label' is not a number")),
    ("mcckd-asdiv-invalid-json", _paper_loader("mcckd", "mcckd-asdiv", "dev"), "mcckd/ASDiv/dev.json", None, "invalid-json", ("ASDiv/dev.json: not valid JSON",)),
    ("proxykd-arc-missing-instruction", _paper_loader("proxykd", "proxykd-arc", "test"), "proxykd/ARC/test.json", ("instruction", ...), "ok", ("row 2", "field 'instruction' missing")),
    ("proxykd-bbh-truncated", _paper_loader("proxykd", "proxykd-bbh", "test"), "proxykd/BBH/test.json", None, "truncated", ("BBH/test.json: not valid JSON",)),
]  # fmt: skip


@needs_shared
@pytest.mark.parametrize("name,load,rel,change,how,says", LOADERS, ids=[c[0] for c in LOADERS])
def test_paper_loader_names_file_row_and_field(name, load, rel, change, how, says, tmp_path):
    records = _records(rel)
    if change is not None:
        records = _with(records, 1, **{change[0]: change[1]})
    _write(tmp_path, rel, records, how)
    with pytest.raises(DataError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / rel) in message
    assert all(s in message for s in says), message


def test_umi_and_socialbench_loaders_name_the_file(tmp_path):
    from papers.socialbench.data import load_file
    from papers.umi.data import load_trajectories

    (tmp_path / "items.json").write_text(
        json.dumps([{"meta": {"category": "Individual-EP-Humor"}, "label": "A"}])
    )
    with pytest.raises(DataError, match=r"items\.json item 0: ") as err:
        load_file(tmp_path / "items.json")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"no-such\.json: no such file"):
        load_trajectories(tmp_path / "no-such.json")


def test_unknown_model_in_the_library_is_one_line():
    from common.models import load_causal_lm

    with pytest.raises(ModelNotFoundError, match=r"^model '/no/such/model': no such directory$"):
        load_causal_lm("/no/such/model")


def _train_once(out: Path):
    import torch

    from common.models import build_tiny_causal_lm
    from common.train import TrainConfig, causal_lm_loss, train

    rows = [{"input_ids": torch.arange(1, 9).tolist(), "labels": torch.arange(1, 9).tolist()}] * 4
    cfg = TrainConfig(output_dir=str(out), max_steps=1, batch_size=4, lr=1e-3, progress=False)
    return lambda: train(build_tiny_causal_lm("tiny-student", 16), rows, causal_lm_loss, cfg)


@pytest.mark.parametrize("broken", ["trainer_state.json", "model.safetensors"])
def test_corrupt_training_checkpoint_is_one_line_naming_it(broken, tmp_path):
    run = _train_once(tmp_path / "sft")
    run()
    checkpoint = tmp_path / "sft" / "checkpoints" / "step_1"
    path = checkpoint / broken
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    before = checksums(tmp_path / "sft")
    with pytest.raises(StageError) as err:
        run()
    message = str(err.value)
    assert "\n" not in message and str(checkpoint) in message
    assert before == {k: v for k, v in checksums(tmp_path / "sft").items() if k in before}


def test_corrupt_rl_state_is_one_line_naming_it(tmp_path, toy_tokenizer, tiny_lm):
    from common.rl_loop import STATE_FILE, RLConfig, run_rl

    (tmp_path / STATE_FILE).write_bytes(b"PK\x03\x04 half a torch.save")
    cfg = RLConfig(output_dir=str(tmp_path), chunks=1, prompts_per_chunk=1, max_tokens=2, progress=False)
    with pytest.raises(StageError) as err:
        run_rl(tiny_lm, toy_tokenizer, ["1 + 1 ="], lambda ro: ro.response_mask.float(), cfg)
    assert "\n" not in str(err.value) and str(tmp_path / STATE_FILE) in str(err.value)
