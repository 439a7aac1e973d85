"""MCC-KD run configuration: one `McckdConfig`, three presets (`get_config("toy"|"small"|"paper")`).

    make reproduce PAPER=mcckd                      # toy: CPU, 4-11 min on the shared 2-core machine (README)
    make reproduce PAPER=mcckd SCALE=small          # 1 GPU: Qwen2.5-0.5B-Instruct on GSM8K + SVAMP
    accelerate launch --config_file papers/mcckd/configs/zero3.yaml -m common.reproduce mcckd --scale paper
    python -m common.reproduce mcckd --scale small --set data.limit_train=30   # any field, type-checked

The real-model CPU run (SmolLM2-135M + LoRA on the released SVAMP rationales) is the small preset with
`SVAMP_CPU` applied (README "How to run"). Every default cites its source: "spec"
(../shared/papers/mcckd.md), "release" (official code b7b780d), "HEAD" (86d263e), "3rd-party"
(2hojae/mentor-kd) or "ours". UNCONFIRMED = the paper's value is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from papers.mcckd.rationales import ANSWER_SENTENCE

TEACHER_PROMPT = (
    "{question}\nAnswer the question. Think step by step, and end with the sentence "
    '"Therefore, the answer is X." where X is the final {kind}.'
)
"""Teacher instruction (ours: the paper's teacher prompt is UNCONFIRMED); {kind}: number or letter."""


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "toy-teacher"
    """`toy-teacher` (common.synthetic base model), an HF id / short name, or an endpoint model name.
    The paper's teacher is UNCONFIRMED (project description: gpt-3.5-turbo)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL (common.chat.ChatClient); None: a local model through common.generation."""
    samples: int = 10
    """Rationales sampled per question (spec: the released SVAMP file holds 10; paper UNCONFIRMED)."""
    temperature: float = 1.0
    """Teacher sampling temperature (ours; paper UNCONFIRMED)."""
    max_tokens: int = 512
    """New tokens per rationale (release max_seq_len 512)."""
    prompt: str = TEACHER_PROMPT
    """Real sets only (the toy teacher reads the world's own `Question: ...\\nAnswer:` prompt)."""
    chunk: int = 256
    """Questions per appended chunk of the teacher cache (the resume granularity; seeds the chunk)."""
    batch_size: int = 64
    """HF generator batch (common.generation default); vLLM schedules its own."""
    dtype: str = "auto"
    """`auto` (bf16 on CUDA, fp32 on CPU) | `float32`: the local teacher's weights."""
    concurrency: int = 16
    """Endpoint requests in flight at once (ours)."""
    timeout_s: float = 120.0
    """Per-request timeout of the endpoint (ours)."""
    max_retries: int = 5
    """Endpoint retries per request: the openai client's own (backoff with jitter, `Retry-After`)."""


@dataclass(frozen=True)
class FilterConfig:
    k: int = 3
    """Rationales kept per question after the filters (UNCONFIRMED; 3rd-party K = 3)."""
    jaccard_threshold: float = 0.8
    """Release `deduplicate_texts` threshold (UNCONFIRMED whether the paper used it)."""
    dedup: bool = True
    answer_span: str = "answer_tokens"
    """`answer_tokens` (the number) | `answer_sentence` (UNCONFIRMED; 3rd-party spans are 2 tokens)."""
    answer_template: str = ANSWER_SENTENCE
    """Normalised answer sentence (spec: released eval rationales end with it)."""


@dataclass(frozen=True)
class StudentConfig:
    model: str = "toy-student"
    """`toy-student` (common.synthetic SFT base), `toy-student-scratch`, an HF id / short name or folder
    (decoder-only, or encoder-decoder such as FlanT5)."""
    lora: bool = False
    lora_r: int = 64
    """Release scripts: LoRA rank 64 (HEAD README 128)."""
    lora_alpha: int = 64
    """Release LoRA has no scaling: effective scale 1, i.e. peft lora_alpha = r."""
    lora_head: bool = True
    """Release: adapters on every projection and on the output (LM-head) projection. A head tied to the
    input embeddings (SmolLM2, T5) gets none (merging would change the embeddings): logged. False: peft's
    all-linear (no head)."""
    lr: float = 1e-5
    """Release: Adam, lr 1e-5, constant, no warmup, no weight decay (AdamW with decay 0 = Adam)."""
    steps: int = 1000
    questions_per_step: int = 2
    """MCC-KD questions per step (release MCC: batch 2 x accumulation 2 = 4 sequences per step); the
    CoT-KD arm takes twice as many questions with one rationale each."""
    alpha: float = 0.01
    """KL weight (release scripts/train_mcc.sh 0.01; HEAD/3rd-party 0.1; paper UNCONFIRMED)."""
    temperature: float = 1.3
    """KL temperature (release scripts 1.3; HEAD 1.0; paper UNCONFIRMED)."""
    max_seq_len: int = 512
    """Release max_seq_len; sequences are cut there and a span past it is excluded from the KL."""
    eval_every: int = 100
    """Steps between dev evaluations (release: each epoch)."""
    max_new_tokens: int = 512
    """Greedy decoding length at evaluation (release max_gen_len = max_seq_len)."""
    replicas: int = 12
    """Up-front draws of the question set (epochs: release 12)."""
    max_epochs: float | None = 12.0
    """Caps `steps` at this many passes over the questions (release: 12 epochs), so that SVAMP's 642
    questions are not seen 75 times under the small preset's 3,000 x 8; None: no cap."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "real"
    """`toy` (common.synthetic arithmetic world, `data.toy_task`) | `real` (`data.real_task`)."""
    train_sets: tuple[str, ...] = ("gsm8k", "svamp")
    """Real sets students are trained on, one student pair each (ours: the two sets whose training
    questions are on disk; spec: GSM8K, ASDiv, SVAMP, CSQA)."""
    eval_sets: tuple[str, ...] = ("gsm8k", "asdiv", "svamp", "csqa")
    """The spec's four ID sets; each student is tested on the same-kind ones (ID + OOD)."""
    released_svamp: bool = True
    """SVAMP: the 10 released teacher rationales (spec) instead of sampling the preset's teacher."""
    limit_train: int | None = None
    limit_dev: int | None = None
    limit_test: int | None = None
    """None: whole splits (a smaller number is a quicker, non-comparable run)."""
    n_train: int = 400
    """Toy: training questions (the first of the world's train split)."""
    n_validation: int = 150
    n_test: int = 300
    n_ood: int = 300
    ood_ops: int = 4
    """Toy OOD: problems with exactly this many arithmetic lines (training world: 2-3)."""


@dataclass(frozen=True)
class SweepConfig:
    alpha: tuple[float, ...] = ()
    temperature: tuple[float, ...] = ()
    """alpha x T grid of MCC-KD scored on the dev split (first seed); the best runs on every seed.
    Empty: the student's own alpha / temperature only (no sweep)."""


@dataclass(frozen=True)
class RunConfig:
    workers: int = 1
    """Processes that train the arms (and the two toy base models) at once (common.stages.worker_pool)."""
    torch_threads: int = 1
    """Threads per process (ours). Measured on the shared 2-core machine: 1 thread 0.25 s/step, 2 threads
    2.0 s/step (oversubscribed)."""
    backend: str = "auto"
    """Teacher sampling and test decoding: auto (vLLM on CUDA, HF elsewhere) | hf | vllm."""
    vllm_memory: float = 0.4
    """vLLM gpu_memory_utilization for test decoding (ours: leaves room for the student in memory)."""
    stop_after: str = "all"
    """`teacher`: stop after the teacher samples (one process, before a multi-GPU launch) | `all`."""


@dataclass(frozen=True)
class McckdConfig:
    scale: str
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seeds: tuple[int, ...] = (0,)


TOY = McckdConfig(
    scale="toy",
    # ours: CPU budget; T 1.3 for noise; chunk 50 and fp32 weights as the published toy run sampled them
    teacher=TeacherConfig(
        samples=6, temperature=1.3, max_tokens=96, chunk=50, batch_size=256, dtype="float32"
    ),
    filters=FilterConfig(k=4),
    student=StudentConfig(
        lr=1e-3,  # ours: a 0.17M-parameter student moves nowhere at 1e-5 in 300 steps
        steps=200,
        questions_per_step=16,
        alpha=0.1,
        eval_every=100,
        max_new_tokens=112,
        replicas=12,
        max_epochs=None,  # the toy numbers were made uncapped (252 questions: 12 passes would be 189 steps)
    ),
    data=DataConfig(source="toy"),
    sweep=SweepConfig(alpha=(0.1, 1.0), temperature=(1.3,)),
    run=RunConfig(workers=2, torch_threads=1, backend="hf"),  # ours: 2 x 1 thread on 2 cores
    seeds=(0, 1, 2, 3, 4),  # spec toy check: 5 seeds
)
SMALL = McckdConfig(
    scale="small",
    teacher=TeacherConfig(model="Qwen/Qwen2.5-7B-Instruct", samples=10, max_tokens=512),
    student=StudentConfig(
        model="Qwen/Qwen2.5-0.5B-Instruct",
        lora=True,
        lr=1e-4,
        steps=3000,
        questions_per_step=8,
        eval_every=500,  # ours: 7 dev checkpoints; each holds the whole model (~1 GB), kept until selection
    ),
)
PAPER = McckdConfig(
    scale="paper",
    teacher=TeacherConfig(model="gpt-3.5-turbo", endpoint="https://api.openai.com/v1", samples=10),
    student=StudentConfig(
        model="huggyllama/llama-7b",
        lora=True,
        steps=12 * 1868,
        questions_per_step=2,
        eval_every=1868,  # release: dev accuracy after each of the 12 epochs
    ),
)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}

SVAMP_CPU = (
    "student.model=smollm2-135m-instruct",
    "student.lr=2e-4",  # ours (release 1e-5 for 7B over 12 epochs)
    "student.steps=300",
    "student.questions_per_step=4",
    "student.alpha=0.1",  # HEAD 0.1 (release script 0.01)
    "student.eval_every=100",
    "student.max_new_tokens=256",
    "student.replicas=4",
    "data.train_sets=[svamp]",
    "data.eval_sets=[svamp]",
    "run.backend=hf",
)
"""`--set` assignments on the small preset for the real-model CPU run: SmolLM2-135M-Instruct + LoRA
r = alpha = 64 on the 700 released SVAMP questions (10 teacher rationales each, K = 3 after the filters),
best checkpoint by SVAMP dev accuracy, then SVAMP test."""


def get_config(scale: str) -> McckdConfig:
    """The preset of `scale` (common.reproduce applies `--set` overrides on top)."""
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[scale]
