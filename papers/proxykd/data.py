"""Proxy-KD's datasets and the task a run works on: `markov_task(cfg, seed)` or `real_task(cfg, data_dir)`.

    task = markov_task(cfg, seed=0)     # the spec's toy: a black-box Markov chain, GRU proxy and student
    task = real_task(cfg, data_dir)     # GSM8K train questions, an HF / endpoint teacher, HF proxy + student
    task.ask(prompts, indices)          # the teacher, text only: [(answer | None, error | None)]
    task.encode(prompt, answer)         # {input_ids, labels}: labels on the answer (+ EOS) only
    task.new_model("proxy" | "student", seed); task.sample(model, prompts, seed, proxy_cfg)
    task.evaluate(model)                # {benchmark: {metric: value}}, values in the published units

The evaluation sets are the paper's repository files (mirror only; SOURCE.md of `../shared/data/proxykd`),
read with `common.data.load_rows(DATASETS[name], "test", data_dir)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from common.data import (
    DataError,
    DatasetSpec,
    FieldError,
    get_field,
    instruction_rows,
    load_rows,
    mirror_only,
)
from common.generation import SamplingParams, sample_next
from papers.proxykd.config import ProxyKDConfig
from papers.proxykd.grading import score
from papers.proxykd.teacher import Asker
from papers.proxykd.world import BOS, GRULM, MarkovChain, WordTokenizer

MMLU_PROMPT = "The following is a multiple choice question about {subject}.\n\n{question}\n{options}\nAnswer:"
r"""Zero-shot MMLU prompt (ours, Hendrycks et al.'s wording; the paper's MMLU prompt and subset are
UNCONFIRMED, spec "Evaluation", and its file is not mirrored). The grader is the code's `([ABCD])\.`."""


def mmlu_rows(r: dict) -> dict:
    """`cais/mmlu` records {question, subject, choices: [4 strings], answer: 0-3} (hub, or the same fields
    as `mmlu/test.jsonl` in a mirror) -> {question: the prompt, answer: letter, category: subject}."""
    choices = get_field(r, "choices", list)
    if len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        raise FieldError("choices", f"should be a list of 4 strings, got {str(choices)[:40]!r}")
    answer = get_field(r, "answer", int)
    if not 0 <= answer < 4:
        raise FieldError("answer", f"should be an index 0-3, got {answer!r}")
    subject = get_field(r, "subject")
    options = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", choices))
    question = MMLU_PROMPT.format(
        subject=subject.replace("_", " "), question=get_field(r, "question"), options=options
    )
    return {"question": question, "answer": "ABCD"[answer], "category": subject}


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("proxykd-mmlu", mmlu_rows, {"test": ("mmlu/test.jsonl", "test")}, "cais/mmlu", "all"),
        mirror_only("proxykd-agieval", instruction_rows("letter"), test="proxykd/AGIEval/test.json"),
        mirror_only("proxykd-arc", instruction_rows("letter"), test="proxykd/ARC/test.json"),
        mirror_only("proxykd-bbh", instruction_rows("text"), test="proxykd/BBH/test.json"),
        mirror_only("proxykd-csqa", instruction_rows("letter"), test="proxykd/CSQA/test.json"),
        mirror_only("proxykd-gsm8k", instruction_rows("number"), test="proxykd/GSM8K/test.json"),
    )
}
EVAL_SETS = {
    "agieval": ("AGIEval", "letter"),
    "arc": ("ARC", "letter"),
    "bbh": ("BBH", "text"),
    "csqa": ("CSQA", "letter"),
    "gsm8k": ("GSM8K", "number"),
    "mmlu": ("MMLU", "mmlu"),
}
"""Short name -> (benchmark name, answer kind of papers/proxykd/grading.py). MMLU is read from the hub
(`cais/mmlu`, all 57 subjects, test) or from a mirror's `mmlu/test.jsonl`; the others are mirror-only."""
IGNORE = -100


@dataclass
class Task:
    """What the stages work on; built by `markov_task` or `real_task`, never by a scale."""

    name: str
    setting: str  # results `setting` before ` seed N`
    model_label: str  # results `model`
    ids: list[str]  # one per teacher prompt (D, before the split)
    prompts: list[str]  # what the proxy and the student see (raw instruction, no template)
    teacher_prompts: list[str]  # what the teacher is asked
    ask: Asker
    encode: Callable[[str, str], dict]
    new_model: Callable[[str, int], torch.nn.Module]
    sample: Callable[..., list[str]]
    evaluate: Callable[[torch.nn.Module], dict[str, dict[str, float]]]
    vocab: int
    pad_id: int
    white_box: Callable[[torch.Tensor], torch.Tensor] | None = None  # the teacher's logits, if known
    key: dict = field(default_factory=dict)  # what the cache keys of its stages depend on


# --- the toy: a black-box Markov chain -----------------------------------------------------------------


def _gru_sample(model, length: int, prompts: list[str], seed: int, proxy) -> list[str]:
    """`len(prompts)` sequences of `length` tokens from BOS (toy prompts are empty), the proxy's own."""
    params = SamplingParams(temperature=proxy.sample_temperature, top_p=proxy.sample_top_p, max_tokens=length)
    torch.manual_seed(seed)
    ids = torch.full((len(prompts), 1), BOS, dtype=torch.long)
    with torch.no_grad():
        for _ in range(length):
            logp = torch.log_softmax(model(input_ids=ids).logits[:, -1].float(), dim=-1)
            logp[:, BOS] = float("-inf")
            ids = torch.cat([ids, sample_next(logp, params)[:, None]], dim=1)
    return [WordTokenizer.decode(row.tolist()) for row in ids]


def markov_task(cfg: ProxyKDConfig, seed: int) -> Task:
    """The spec's toy world for one seed: the chain (W drawn from `seed`), D = D_w + D_p + D_s prompts
    (all empty: a sequence starts at BOS), a fresh test set of teacher sequences, GRU models."""
    d, sp = cfg.data, cfg.split
    if None in (sp.n_warmup, sp.n_proxy, sp.n_student):
        raise ValueError("the markov toy needs split.n_warmup, split.n_proxy and split.n_student")
    chain = MarkovChain(d.vocab, d.length, d.logit_scale, seed=seed)
    tok = WordTokenizer(d.vocab)
    n = sp.n_warmup + sp.n_proxy + sp.n_student
    test = chain.sample_ids(cfg.eval.n_test, seed=10_000 + seed)

    def ask(prompts, indices):
        texts = chain.sample_texts(
            len(prompts), seed=1_000 * (seed + 1) + indices[0], temperature=cfg.teacher.temperature
        )
        return [(t, None) for t in texts]

    def encode(prompt: str, answer: str) -> dict:
        ids = tok.encode(prompt + " " + answer if prompt else answer)
        return {"input_ids": ids, "labels": [IGNORE, *ids[1:]]}

    def evaluate(model) -> dict:
        res = chain.kl_to(model, test)
        return {"toy-markov": {"KL to teacher": res["kl"], "top-1 agreement": 100 * res["top1_agreement"]}}

    def white_box(ids: torch.Tensor) -> torch.Tensor:
        return chain.next_logits(ids.cpu()).clamp(min=-1e4).float().to(ids.device)  # BOS: -inf -> -1e4

    return Task(
        name="markov",
        setting="markov",
        model_label="gru-64",
        ids=[f"markov{seed}-{i}" for i in range(n)],
        prompts=[""] * n,
        teacher_prompts=[""] * n,
        ask=ask,
        encode=encode,
        new_model=lambda role, s: GRULM(d.vocab, seed=s),
        sample=lambda model, prompts, s, proxy: _gru_sample(model, d.length, prompts, s, proxy),
        evaluate=evaluate,
        vocab=d.vocab,
        pad_id=BOS,
        white_box=white_box,
        key={"data": asdict(d), "seed": seed, "n": n, "n_test": cfg.eval.n_test},
    )


# --- the toy arithmetic world: the toy teacher as a black box, the mid model as proxy -------------------


def arith_task(cfg: ProxyKDConfig) -> Task:
    """common/synthetic's arithmetic world: the toy teacher (0.97M parameters) answers the train prompts
    by sampling (text only, temperature `teacher.temperature`); the mid model (0.47M) is the proxy, the
    student base model (0.17M) the student; greedy accuracy (GSM8K strict grader on `####`) on the test
    split. The three base models are trained on first use (common.synthetic.base_models, ~5 min)."""
    from common.generation import HFGenerator
    from common.models import load_causal_lm, load_tokenizer
    from common.scoring import gsm8k_is_correct
    from common.synthetic.base_models import get_base_model
    from common.synthetic.world import DEFAULT_WORLD, make_splits
    from papers.proxykd.teacher import local_asker

    paths = {size: get_base_model(size) for size in ("teacher", "mid", "student")}
    tok = load_tokenizer(paths["student"])
    splits = make_splits(DEFAULT_WORLD)
    train = splits["train"][: cfg.data.n_prompts]
    test = splits["test"][: cfg.eval.n_test]
    teacher = load_causal_lm(paths["teacher"], dtype=torch.float32).eval()

    def new_model(role: str, s: int):
        return load_causal_lm(paths["mid" if role == "proxy" else "student"], dtype=torch.float32)

    def encode(prompt: str, answer: str) -> dict:
        # the world's format (base_models.sft_examples): prompt, then " <rationale>" and EOS as the target
        p = tok(prompt)["input_ids"]
        a = tok(answer if answer.startswith(" ") else " " + answer, add_special_tokens=False)["input_ids"]
        return {"input_ids": p + a + [tok.eos_token_id], "labels": [IGNORE] * len(p) + a + [tok.eos_token_id]}

    def sample(model, prompts, s, proxy, temperature=None) -> list[str]:
        t = proxy.sample_temperature if temperature is None else temperature
        params = SamplingParams(
            temperature=t, top_p=proxy.sample_top_p if t else 1.0, max_tokens=proxy.max_tokens, seed=s
        )
        return [
            c.text
            for c in HFGenerator(model, tok, batch_size=256, progress=False).generate(list(prompts), params)
        ]

    def evaluate(model) -> dict:
        texts = sample(model, [p.prompt() for p in test], 0, cfg.proxy, temperature=0.0)
        acc = sum(gsm8k_is_correct(t, str(p.answer)) for t, p in zip(texts, test)) / len(test)
        return {"toy-arith": {"accuracy": 100 * acc}}

    @torch.no_grad()
    def white_box(ids: torch.Tensor) -> torch.Tensor:
        return teacher.to(ids.device)(input_ids=ids).logits.float()

    gen = HFGenerator(teacher, tok, batch_size=256, progress=False)
    return Task(
        name="arith",
        setting="arith",
        model_label="tiny-student",
        ids=[p.uid for p in train],
        prompts=[p.prompt() for p in train],
        teacher_prompts=[p.prompt() for p in train],
        ask=local_asker(gen, cfg.teacher),
        encode=encode,
        new_model=new_model,
        sample=sample,
        evaluate=evaluate,
        vocab=len(tok),
        pad_id=tok.pad_token_id,
        white_box=white_box,
        key={
            "bases": {k: v.parent.name for k, v in paths.items()},
            "n": len(train),
            "n_test": len(test),
        },
    )


# --- real models: GSM8K train questions, HF proxy and student -------------------------------------------

TEACHER_SUFFIX = '\nAnswer step by step and end with the sentence "Therefore, the answer is X."'
"""Appended to the question for the teacher (ours: the paper's GPT-4 data come from existing datasets)."""
REFERENCE_TEACHER = "gsm8k-reference"
"""`teacher.model` whose answers are GSM8K's own reference solutions (calculator marks removed, closed by
"Therefore, the answer is N."): a text-only teacher that needs no model, as the paper's GPT-4 answers
were taken from existing datasets."""


def reference_asker(rows: list[dict]) -> Asker:
    """The GSM8K train rows' reference solutions, looked up by the teacher prompt."""
    by_prompt = {
        r["question"] + TEACHER_SUFFIX: re.sub(r"<<[^>]*>>", "", r.get("rationale", "")).strip()
        + f"\nTherefore, the answer is {r['answer']}."
        for r in rows
    }

    def ask(prompts, indices):
        return [
            (by_prompt[p], None) if p in by_prompt else (None, "not a GSM8K train question") for p in prompts
        ]

    return ask


def _hf_parts(cfg: ProxyKDConfig, max_len: int = 1024):
    from common.generation import HFGenerator
    from common.models import add_lora, load_causal_lm, load_tokenizer

    tok = load_tokenizer(cfg.student.model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token

    def new_model(role: str, seed: int):
        mc = cfg.proxy if role == "proxy" else cfg.student
        torch.manual_seed(seed)
        model = load_causal_lm(mc.model, dtype=torch.float32)
        return add_lora(model, r=mc.lora_r, alpha=2 * mc.lora_r) if mc.lora else model

    def encode(prompt: str, answer: str) -> dict:
        # code: BOS + prompt + output + EOS, no chat template; the answer is cut to fit max_len
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        p = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"][: max(max_len - len(p) - 1, 1)] + [
            tok.eos_token_id
        ]
        return {"input_ids": p + a, "labels": [IGNORE] * len(p) + a}

    def sample(model, prompts, seed, proxy, temperature=None, max_tokens=None) -> list[str]:
        t = proxy.sample_temperature if temperature is None else temperature
        params = SamplingParams(
            temperature=t,
            top_p=proxy.sample_top_p if t else 1.0,
            max_tokens=max_tokens or proxy.max_tokens,
            seed=seed,
        )
        return [c.text for c in HFGenerator(model, tok, batch_size=16).generate(list(prompts), params)]

    return tok, new_model, encode, sample


def real_task(cfg: ProxyKDConfig, data_dir: str | None, asker: Asker | None = None) -> Task:
    """GSM8K train questions (the only training prompts on disk; paper: OpenOrca + Nectar + synthetic,
    ~1M GPT-4 answers) for the teacher; the mirrored test sets of `eval.sets`, greedy, the code's graders."""
    from papers.proxykd.teacher import endpoint_asker, local_asker

    rows = load_rows("gsm8k", "train", data_dir)[: cfg.data.n_prompts]
    tests = {}
    for name in cfg.eval.sets:
        if name not in EVAL_SETS:
            raise ValueError(f"unknown eval set {name!r}; valid: {', '.join(EVAL_SETS)}")
        try:
            tests[name] = load_rows(DATASETS[f"proxykd-{name}"], "test", data_dir)[: cfg.eval.limit]
        except DataError as e:
            rest = [s for s in cfg.eval.sets if s != name]
            raise DataError(
                f"{e} (eval set {name!r}; leave it out with --set eval.sets=[{','.join(rest)}])"
            ) from None
    tok, new_model, encode, sample = _hf_parts(
        cfg
    )  # after the data: a missing file fails before any model load
    if asker is None and cfg.teacher.model == REFERENCE_TEACHER:
        asker = reference_asker(rows)
    elif asker is None and cfg.teacher.endpoint:
        asker = endpoint_asker(cfg.teacher)
    elif asker is None:
        from common.generation import make_generator

        asker = local_asker(make_generator(cfg.teacher.model), cfg.teacher)

    def evaluate(model) -> dict:
        out = {}
        for name, items in tests.items():
            bench, kind = EVAL_SETS[name]
            greedy = sample(model, [r["question"] for r in items], 0, cfg.proxy, 0.0, cfg.eval.max_new_tokens)
            res = score(greedy, [r["answer"] for r in items], kind)
            out[bench] = {
                "accuracy": 100 * res["accuracy"],
                "accuracy (answered)": 100 * res["accuracy (answered)"],
            }
        return out

    return Task(
        name="gsm8k",
        setting="train GSM8K",
        model_label=cfg.student.model,
        ids=[str(r.get("id", i)) for i, r in enumerate(rows)],
        prompts=[r["question"] for r in rows],
        teacher_prompts=[r["question"] + TEACHER_SUFFIX for r in rows],
        ask=asker,
        encode=encode,
        new_model=new_model,
        sample=sample,
        evaluate=evaluate,
        vocab=len(tok),
        pad_id=tok.pad_token_id,
        key={"teacher": cfg.teacher.model, "n": len(rows), "eval": asdict(cfg.eval)},
    )
