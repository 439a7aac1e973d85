"""MCC-KD's one driver: the stages on a small toy-world task (pinned first losses), result rows and
summary, presets and `--set` overrides, one-line errors, and the endpoint teacher on a local server."""

import contextlib
import http.server
import json
import threading
import time
from dataclasses import replace

import pytest

from common.config import ConfigError, apply_overrides
from common.results import RESULT_COLUMNS
from papers.mcckd import pipeline
from papers.mcckd.config import PRESETS, SVAMP_CPU, get_config
from papers.mcckd.data import MissingTrainData, Task
from papers.mcckd.stages import result_rows, run_arms, summary, teacher_samples, teacher_stage, train_data

TINY = [
    "student.steps=4",
    "student.eval_every=2",
    "student.questions_per_step=2",
    "student.max_new_tokens=8",
    "student.replicas=2",
    "student.model=toy-student-scratch",
    "seeds=[0, 1]",
    "sweep.alpha=[0.1, 1.0]",
    "run.workers=1",
]


def test_stages_on_a_world_task_pin_the_first_losses(world_task, tmp_path):
    cfg = apply_overrides(get_config("toy"), TINY)
    data = train_data(world_task, cfg, tmp_path)
    assert data["stats"]["records"] == data["stats"]["encoded_questions"] == 12
    out = run_arms(world_task, cfg, data, tmp_path)
    assert [(m["method"], m["seed"]) for m in out["arms"]] == [
        ("CoT-KD", 0),
        ("MCC-KD", 0),
        ("CoT-KD", 1),
        ("MCC-KD", 1),
    ]
    assert len(out["sweep"]) == 2 and out["arms"][1] == max(out["sweep"], key=lambda m: m["validation"])
    assert all(a["alpha"] == out["chosen"]["alpha"] for a in out["arms"] if a["method"] == "MCC-KD")
    for m in out["arms"]:
        assert [s for s, _ in m["dev_curve"]] == [2, 4] and set(m["tests"]) == {"toy-arith", "toy-arith-ood"}
        assert m["answer_kl"] >= 0
    runs = sorted((tmp_path / "world").iterdir())
    losses = {
        d.name.split("-s")[0] + f" s{d.name.split('-s')[1][0]}": json.loads(
            (d / "train" / "metrics.json").read_text()
        )["losses"]
        for d in runs
    }
    # torchtune-style pin: a change in the data, items, loss or optimizer moves these
    assert losses["CoT-KD-a0.0-T1.0 s0"] == pytest.approx(PINNED_COT, rel=1e-4)
    assert losses["MCC-KD-a0.1-T1.3 s0"] == pytest.approx(PINNED_MCC, rel=1e-4)
    again = run_arms(world_task, cfg, data, tmp_path)  # every arm cached: same metrics, nothing retrained
    assert again["arms"] == json.loads(json.dumps(out["arms"]))


PINNED_COT = [6.412210941314697, 6.15176248550415, 6.011148452758789, 5.9349493980407715]
PINNED_MCC = [6.396961688995361, 6.16834831237793, 6.041811466217041, 5.8738603591918945]


def _arm(method, seed, acc, ood, kl):
    tests = {
        "toy-arith": {"strict": acc, "flexible": acc},
        "toy-arith-ood": {"strict": ood, "flexible": ood + 0.01},
    }
    return {"method": method, "seed": seed, "tests": tests, "answer_kl": kl}


def test_rows_and_summary(world_task):
    arms = [
        _arm("CoT-KD", 0, 0.5, 0.2, 0.3),
        _arm("MCC-KD", 0, 0.6, 0.1, 0.1),
        _arm("CoT-KD", 1, 0.4, 0.2, 0.2),
        _arm("MCC-KD", 1, 0.5, 0.3, 0.1),
    ]
    rows = result_rows(world_task, arms)
    assert all(set(r) == set(RESULT_COLUMNS) for r in rows) and len(rows) == 4 * 5
    acc = [r["value"] for r in rows if r["metric"] == "accuracy" and r["benchmark"] == "toy-arith"]
    assert acc == [50.0, 60.0, 40.0, 50.0]  # points, as published.csv
    assert {r["setting"] for r in rows} == {"arith seed 0", "arith seed 1"}
    kl = [r for r in rows if r["metric"] == "answer KL across rationales"]
    assert [r["value"] for r in kl] == [0.3, 0.1, 0.2, 0.1] and {r["benchmark"] for r in kl} == {"toy-arith"}
    s = summary(world_task, arms)
    assert s["MCC-KD toy-arith"] == [55.0, 5.0] and s["MCC-KD wins toy-arith"] == 2
    assert s["MCC-KD wins toy-arith-ood"] == 1 and s["CoT-KD answer KL"] == [0.25, 0.05]


def test_presets_carry_the_spec_defaults():
    paper = get_config("paper")
    assert (paper.student.alpha, paper.student.temperature, paper.student.lr) == (0.01, 1.3, 1e-5)
    assert paper.filters.jaccard_threshold == 0.8 and paper.filters.answer_span == "answer_tokens"
    assert set(PRESETS) == {"toy", "small", "paper"} and get_config("toy").data.source == "toy"
    with pytest.raises(ValueError, match="unknown scale"):
        get_config("huge")


def test_overrides_reach_every_field_and_the_svamp_cpu_run_is_a_set():
    cfg = apply_overrides(get_config("small"), ["data.limit_train=30", "teacher.endpoint=http://h/v1"])
    assert (cfg.data.limit_train, cfg.teacher.endpoint, cfg.scale) == (30, "http://h/v1", "small")
    svamp = apply_overrides(get_config("small"), list(SVAMP_CPU))
    assert (svamp.student.model, svamp.data.train_sets, svamp.student.steps) == (
        "smollm2-135m-instruct",
        ("svamp",),
        300,
    )
    assert svamp.student.lora and svamp.filters.k == 3
    with pytest.raises(ConfigError, match="unknown key 'limit'"):
        apply_overrides(cfg, ["data.limit=3"])


def test_driver_errors_are_one_line(monkeypatch):
    def fake(cfg, data_dir, name):
        raise MissingTrainData("ASDiv train questions are not mirrored\nsecond line")

    monkeypatch.setattr(pipeline, "real_task", fake)
    with pytest.raises(SystemExit, match=r"^mcckd small: ASDiv train questions are not mirrored$"):
        pipeline.reproduce(get_config("small"))


class FakeOpenAI(http.server.BaseHTTPRequestHandler):
    """/v1/models and /v1/chat/completions; a prompt holding FAIL gets a 500. Counts requests in flight."""

    lock, in_flight, peak, posts = threading.Lock(), 0, 0, 0

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def do_GET(self):
        self._send(
            200,
            {"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "t"}]},
        )

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        with cls.lock:
            cls.in_flight, cls.posts = cls.in_flight + 1, cls.posts + 1
            cls.peak = max(cls.peak, cls.in_flight)
        time.sleep(0.05)
        with cls.lock:
            cls.in_flight -= 1
        prompt = payload["messages"][-1]["content"]
        if "FAIL" in prompt:
            return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
        text = "2 + 3 = 5 apples.\nTherefore, the answer is 5."
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        self._send(
            200,
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": payload["model"],
                "choices": [choice],
            },
        )


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_endpoint_teacher_is_concurrent_and_records_failures(server, world_task, tmp_path):
    questions = [{"id": f"q{i}", "question": f"Q{i}", "answer": "5"} for i in range(4)]
    prompts = ["Q0", "Q1 FAIL", "Q2", "Q3"]
    task = replace(
        world_task, train=questions, teacher_prompts=prompts, teacher_model="fake", teacher_sentence=True
    )
    sets = ["teacher.samples=3", "teacher.chunk=2", "teacher.concurrency=4", "teacher.max_retries=0"]
    cfg = apply_overrides(get_config("small"), [f"teacher.endpoint={server}", *sets])
    path = tmp_path / "t.jsonl"
    samples = teacher_samples(task, cfg, path)
    assert [len(samples[q["id"]]) for q in questions] == [3, 0, 3, 3]  # the failed calls give no rationale
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["key"] for r in records] == ["q0", "q1", "q2", "q3"]
    assert len(records[1]["errors"]) == 3 and all("InternalServerError" in e for e in records[1]["errors"])
    assert FakeOpenAI.posts == 12 and 1 < FakeOpenAI.peak <= 4  # K x questions, at most `concurrency` at once
    # a rerun asks again only the question whose calls failed (its K calls), the rest are cached
    assert teacher_samples(task, cfg, path) == samples and FakeOpenAI.posts == 15
    rows = teacher_stage(task, cfg, tmp_path / "root")
    assert (
        rows[0]["rationales"][0] == "2 + 3 = 5 apples.\n#### 5"
    )  # the closing sentence marked for the filter


def test_teacher_cache_resumes_chunk_by_chunk(world_task, tmp_path, monkeypatch):
    from papers.mcckd import stages

    calls = []

    def sampler(task, cfg):
        def sample(indices):
            calls.append(list(indices))
            return [{"rationales": [f"r{i}"]} for i in indices]

        return sample

    monkeypatch.setattr(stages, "_local_sampler", sampler)
    questions = [{"id": f"k{i}", "question": "q", "answer": "1"} for i in range(5)]
    cfg = apply_overrides(get_config("small"), ["teacher.chunk=2"])
    path = tmp_path / "s.jsonl"
    teacher_samples(replace(world_task, train=questions[:3]), cfg, path)
    path.write_text(path.read_text() + '{"key": "k3", "ration')  # a kill mid-line
    got = teacher_samples(replace(world_task, train=questions), cfg, path)
    assert got == {f"k{i}": [f"r{i}"] for i in range(5)}
    assert calls == [[0, 1], [2], [3, 4]]
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [f"k{i}" for i in range(5)]


def test_task_is_one_small_object(world_task):
    assert isinstance(world_task, Task) and world_task.grade(["x\nTherefore, the answer is 5 ."], ["5"]) == {
        "strict": 1.0,
        "flexible": 1.0,
    }
