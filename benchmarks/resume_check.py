"""Kill -9 anywhere: a reproduction SIGKILLed at random times and rerun gives the uninterrupted results.

    python benchmarks/resume_check.py qrm                      # the reduced toy config, 3 kills, seed 0
    python benchmarks/resume_check.py all --markdown           # every built paper, then the RESULTS.md table
    python benchmarks/resume_check.py ipvrm --config full --kills 5 --seed 1
    python benchmarks/resume_check.py --table out1.jsonl out2.jsonl   # the table of earlier runs' JSON lines

For each paper: a reference run (`python -m common.reproduce <slug> --scale toy --set ...`) to
completion in fresh `REPRO_RUNS` / `REPRO_RESULTS` folders (the committed papers/<slug>/results/ and the
READMEs are never touched), then the same command in another pair of fresh folders, started in its own
session and killed with SIGKILL on the whole process group (pool workers too), rerun and killed again,
..., then rerun to completion. The kill points t_1 < t_2 < ... are drawn (seeded by `--seed`) uniformly
from 10-90 % of the reference run's wall time, a point on the reference's timeline: attempt 1 is killed
t_1 seconds after its start, attempt i > 1 after s + t_i - t_(i-1), s being the reference's time to its
first write (the imports and loads every rerun pays again); a rerun skips the finished stages, so each kill
lands further on.
A run that finishes before its kill time is noted.

At each kill the script records where the run was: the newest file written under the runs folder (the
stage folder, its hash dropped, and the file) and the last log line. At the end `reproduced.csv` is compared
byte for byte with the reference's, and every other results file too (provenance.json without wall times,
CPU seconds, timestamps, the load average and the code state, which differ between any two runs; the same
keys are dropped from the other JSON files, e.g. qrm's curves.json carries each RL run's wall time, and
each run's own folder is read as `<run>` in them, e.g. adkd's provenance names the teacher's weights file).

`--config reduced` (default) runs `REDUCED[paper]`: one seed, fewer steps and examples, every stage type
of the paper kept, ~1-3 CPU-minutes each on the 2-core machine. `--config full` runs the plain toy preset.
The toy world's base models (common.synthetic.base_models, trained once into `--base-models`) are linked
into both runs: they are a shared cache the paper's stages start from, not one of its stages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.resume_configs import BASE_MODELS, REDUCED  # noqa: E402
from common.results import PAPERS  # noqa: E402

# provenance.json keys that differ between any two runs of the same config
VOLATILE = {
    "wall_time_s",
    "wall_s",
    "cpu_s",
    "timestamp_utc",
    "load_avg_15min",
    "commit",
    "dirty",
    "dirty_paths",
    "diff_sha256",
    "code_changed_during_run",
    "command",
}
HASH_SUFFIX = re.compile(r"-[0-9a-f]{12}(?=\.\w+$|$)")


def say(msg: str) -> None:
    print(f"[resume_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def command(slug: str, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "common.reproduce", slug, "--scale", "toy"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def warm_base_models(slug: str, warm: Path) -> None:
    """Train the paper's toy base models into `warm`/base once (a no-op when they are there)."""
    sizes = BASE_MODELS.get(slug, ())
    if not sizes:
        return
    say(f"{slug}: base models {', '.join(sizes)} (trained once into {warm})")
    code = "import sys\nfrom common.synthetic.base_models import get_base_model\n"
    code += "for s in sys.argv[1:]: get_base_model(s, progress=False)"
    env = os.environ | {"REPRO_RUNS": str(warm), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, *sizes], cwd=REPO, env=env, check=True)


def fresh_dirs(root: Path, name: str, slug: str, warm: Path) -> dict[str, Path]:
    dirs = {"runs": root / name / "runs", "results": root / name / "results", "log": root / name / "log"}
    for d in dirs.values():
        d.mkdir(parents=True)
    if BASE_MODELS.get(slug):
        (dirs["runs"] / "base").symlink_to(warm / "base", target_is_directory=True)
    return dirs


def child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start(cmd: list[str], dirs: dict[str, Path], attempt: int) -> tuple[subprocess.Popen, Path]:
    env = os.environ | {
        "REPRO_RUNS": str(dirs["runs"]),
        "REPRO_RESULTS": str(dirs["results"]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    env.pop("REPRO_HOLD_AFTER", None)
    log = dirs["log"] / f"attempt{attempt}.log"
    with open(log, "w") as f:  # the child holds its own descriptor
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, log


def finish(proc: subprocess.Popen, log: Path) -> None:
    if proc.wait() != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"error: {' '.join(proc.args[3:5])} exited {proc.returncode}: {' | '.join(tail)}")


def newest_write(runs: Path, since: float) -> str:
    """The newest file under `runs` (not the linked base models) written after `since` (epoch s):
    `<stage folder, hash dropped>/<file>`."""
    best, best_t = None, -1.0
    for dirpath, dirnames, filenames in os.walk(runs):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == runs and d == "base")]
        for name in filenames:
            try:
                t = os.stat(os.path.join(dirpath, name)).st_mtime
            except FileNotFoundError:  # renamed away meanwhile
                continue
            if t > best_t:
                best, best_t = Path(dirpath, name), t
    if best is None or best_t < since:
        return "no write yet in this attempt"
    parts = best.relative_to(runs).parts[2:]  # drop <slug>/<scale>
    return "/".join(HASH_SUFFIX.sub("", p) for p in parts) or best.name


def last_log_line(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    if not lines:
        return ""
    line = re.sub(r"^\d\d:\d\d:\d\d \w ", "", lines[-1].strip())
    return line[:70]


def normalise(value):
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def compare(ref: Path, got: Path) -> tuple[bool, list[str]]:
    """(reproduced.csv identical, the other results files that differ)."""
    ref_files = {p.relative_to(ref) for p in ref.rglob("*") if p.is_file()}
    got_files = {p.relative_to(got) for p in got.rglob("*") if p.is_file()}
    csv_same = (
        all((d / "reproduced.csv").exists() for d in (ref, got))
        and (ref / "reproduced.csv").read_bytes() == (got / "reproduced.csv").read_bytes()
    )
    differ = sorted(str(p) + " (missing)" for p in ref_files ^ got_files)
    for rel in sorted(ref_files & got_files):
        if rel.name == "reproduced.csv":
            continue
        a, b = (ref / rel).read_bytes(), (got / rel).read_bytes()
        if rel.suffix == ".json":  # provenance, curves: their wall times differ, and their runs folders
            a, b = (
                json.dumps(normalise(json.loads(x)), sort_keys=True).replace(str(run.parents[2]), "<run>")
                for x, run in ((a, ref), (b, got))
            )
        if a != b:
            differ.append(str(rel))
    return csv_same, differ


def check(slug: str, sets: list[str], kills: int, seed: int, work: Path, warm: Path) -> dict:
    warm_base_models(slug, warm)
    root = Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=work))
    cmd = command(slug, sets)
    say(f"{slug}: reference run ({len(sets)} --set overrides) in {root}/reference")
    ref = fresh_dirs(root, "reference", slug, warm)
    t0, c0 = time.monotonic(), child_cpu_s()
    proc, log = start(cmd, ref, 0)
    startup = None  # seconds to the first write: what every rerun pays again (imports, model loads)
    while proc.poll() is None:
        if startup is None and newest_write(ref["runs"], 0) != "no write yet in this attempt":
            startup = time.monotonic() - t0
        time.sleep(0.5)
    finish(proc, log)
    ref_wall, ref_cpu = time.monotonic() - t0, child_cpu_s() - c0
    startup = min(startup or 0.0, ref_wall)
    say(
        f"{slug}: reference done in {ref_wall:.0f} s wall ({startup:.0f} s to its first write), {ref_cpu:.0f} CPU-s"
    )
    rng = random.Random(f"{slug}-{seed}")
    points = sorted(round(rng.uniform(0.1, 0.9) * ref_wall, 1) for _ in range(kills))
    run = fresh_dirs(root, "interrupted", slug, warm)
    killed = []
    for i, t in enumerate(points, 1):
        began = time.time()
        proc, log = start(cmd, run, i)
        try:
            proc.wait(timeout=round(t - points[i - 2] + startup if i > 1 else t, 1))
            say(f"{slug}: attempt {i} finished before its kill at {t:.0f} s")
            finish(proc, log)
            killed.append({"t": t, "where": "finished before the kill", "log": ""})
            continue
        except subprocess.TimeoutExpired:
            pass
        where = newest_write(run["runs"], began)
        with contextlib.suppress(ProcessLookupError):  # it ended in between: the kill finds no group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed.append({"t": t, "where": where, "log": last_log_line(log)})
        say(f"{slug}: killed attempt {i} at {t:.0f} s of the reference's timeline, newest write {where}")
    proc, log = start(cmd, run, kills + 1)
    finish(proc, log)
    csv_same, differ = compare(ref["results"] / slug / "toy", run["results"] / slug / "toy")
    say(
        f"{slug}: reproduced.csv {'identical' if csv_same else 'DIFFERS'}; other files differing: {differ or 'none'}"
    )
    return {
        "paper": slug,
        "sets": sets,
        "ref_wall_s": round(ref_wall),
        "startup_s": round(startup),
        "ref_cpu_s": round(ref_cpu),
        "kills": killed,
        "csv_identical": csv_same,
        "other_differ": differ,
        "dir": str(root),
    }


def markdown(results: list[dict], config: str) -> str:
    head = "| paper | config (`--set`) | reference wall / CPU-s | kills: point on the reference's timeline - newest write of that attempt (last log line) | "
    head += "reproduced.csv | other results files |\n|---|---|---|---|---|---|\n"
    rows = []
    for r in results:
        sets = "plain toy" if config == "full" else "<br>".join(f"`{s}`" for s in r["sets"])
        if "error" in r:
            rows.append(f"| {r['paper']} | {sets} | - | - | **run failed**: {r['error'][:120]} | - |")
            continue
        kills = "<br>".join(
            f"{k['t']:.0f} s - `{re.sub(r'-[0-9a-f]{12}(?=[./]|$)', '', k['where'])}`"
            + (f" ({k['log']})" if k["log"] else "")
            for k in r["kills"]
        )
        kills = re.sub(r"events\.out\.tfevents\.[\w.]+", "(tensorboard events)", kills).replace("|", "\\|")
        other = "identical" if not r["other_differ"] else "differ: " + ", ".join(r["other_differ"])
        csv = "identical" if r["csv_identical"] else "**NOT identical**"
        rows.append(
            f"| {r['paper']} | {sets} | {r['ref_wall_s']} / {r['ref_cpu_s']} | {kills} | {csv} | {other} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/resume_check.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "papers", nargs="*", metavar="PAPER", help=f"one or more of {', '.join(REDUCED)}, or all"
    )
    parser.add_argument(
        "--config",
        choices=("reduced", "full"),
        default="reduced",
        help="reduced (default): REDUCED[paper]; full: the plain toy preset",
    )
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs before the final rerun (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times (default 0)")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default a new temp dir)")
    parser.add_argument(
        "--base-models",
        type=Path,
        default=None,
        help="the toy base models' cache, trained once (default $REPRO_RUNS/resume_check_base, else runs/resume_check_base)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the RESULTS.md table on stdout at the end"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run folders (default: removed when identical)"
    )
    parser.add_argument(
        "--table",
        nargs="+",
        type=Path,
        metavar="JSONL",
        help="print the markdown table of the result lines (stdout) of earlier runs and stop",
    )
    args = parser.parse_args(argv)
    if args.table:
        lines = [json.loads(x) for f in args.table for x in f.read_text().splitlines() if x.startswith("{")]
        for r in lines:  # folders kept (something differed): compare again with this version's rules
            if r.get("dir") and Path(r["dir"]).is_dir():
                slug = r["paper"]
                ref, got = (
                    Path(r["dir"]) / name / "results" / slug / "toy" for name in ("reference", "interrupted")
                )
                r["csv_identical"], r["other_differ"] = compare(ref, got)
        print(markdown(lines, args.config))
        return 0
    if not args.papers:
        parser.error("name at least one PAPER (or all)")
    papers = list(REDUCED) if args.papers == ["all"] else args.papers
    unknown = [p for p in papers if p not in REDUCED]
    if unknown:
        print(f"error: unknown paper {unknown[0]!r}; valid: {', '.join(PAPERS)} or all", file=sys.stderr)
        return 2
    if args.kills < 0:
        print("error: --kills must be >= 0", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="resume_check-"))
    work.mkdir(parents=True, exist_ok=True)
    warm = args.base_models or Path(os.environ.get("REPRO_RUNS") or REPO / "runs") / "resume_check_base"
    results = []
    for slug in papers:
        sets = [] if args.config == "full" else REDUCED[slug]
        try:
            r = check(slug, sets, args.kills, args.seed, work, warm.resolve())
        except (SystemExit, subprocess.CalledProcessError) as err:  # a run that fails: say so, go on
            say(f"{slug}: {err}")
            r = {"paper": slug, "sets": sets, "error": str(err), "dir": ""}
        results.append(r)
        print(json.dumps(r), flush=True)
        if r.get("csv_identical") and not r["other_differ"] and not args.keep:
            shutil.rmtree(r["dir"])
    if args.markdown:
        print(markdown(results, args.config))
    return 0 if all(r.get("csv_identical") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
