"""MCC-KD run configurations: a dataclass per stage, three presets (`get_config("toy"|"small"|"paper")`).

Exact commands (README "How to run" has runtimes and expected results):
    make reproduce PAPER=mcckd                      # toy: CPU, 4-11 min on the shared 2-core machine (README)
    python -m papers.mcckd.real_svamp               # optional real-model CPU run (SmolLM2-135M + LoRA, SVAMP)
    make reproduce PAPER=mcckd SCALE=small          # 1 GPU: Qwen2.5-0.5B-Instruct on GSM8K (configured, not run)
    accelerate launch --config_file papers/mcckd/configs/zero3.yaml -m common.reproduce mcckd --scale paper

Every default cites its source: "spec" (../shared/papers/mcckd.md), "release" (official code b7b780d),
"HEAD" (86d263e), "3rd-party" (2hojae/mentor-kd) or "ours". UNCONFIRMED = the paper's value is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from papers.mcckd.rationales import ANSWER_SENTENCE


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "toy-teacher"
    """`toy-teacher` (common.synthetic base model), an HF id / short name, or an endpoint model name.
    The paper's teacher is UNCONFIRMED (project description: gpt-3.5-turbo)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL; None: a local model through common.generation."""
    samples: int = 10
    """Rationales sampled per question (spec: the released SVAMP file holds 10; paper UNCONFIRMED)."""
    temperature: float = 1.0
    """Teacher sampling temperature (ours; paper UNCONFIRMED)."""
    max_tokens: int = 512
    """New tokens per rationale (release max_seq_len 512)."""


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
    """`toy-student` (common.synthetic SFT base), `toy-student-scratch`, an HF id / short name, or `tiny-t5`."""
    lora: bool = False
    lora_r: int = 64
    """Release scripts: LoRA rank 64 (HEAD README 128)."""
    lora_alpha: int = 64
    """Release LoRA has no scaling: effective scale 1, i.e. peft lora_alpha = r."""
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
    """Release max_seq_len; items whose span ends beyond it are excluded from the KL."""
    eval_every: int = 100
    """Steps between dev evaluations (release: each epoch)."""
    max_new_tokens: int = 512
    """Greedy decoding length at evaluation (release max_gen_len = max_seq_len)."""
    replicas: int = 12
    """Up-front draws of the question set (epochs: release 12)."""


@dataclass(frozen=True)
class ToyConfig:
    n_train: int = 400
    """Training questions (the first of the world's train split)."""
    n_validation: int = 150
    n_test: int = 300
    n_ood: int = 300
    ood_ops: int = 4
    """OOD: problems with exactly this many arithmetic lines (training world: 2-3)."""
    sweep_alpha: tuple[float, ...] = (0.1, 1.0)
    sweep_temperature: tuple[float, ...] = (1.3,)
    """alpha x T grid scored on the validation split (seed 0); the best is run on every seed."""
    torch_threads: int = 1
    """Threads per process (ours). Measured on the shared 2-core machine: 1 thread 0.25 s/step, 2 threads
    2.0 s/step (oversubscribed)."""
    workers: int = 2
    """Processes that train the arms (and the two base models) at once (ours: 2 x 1 thread on 2 cores)."""


@dataclass(frozen=True)
class McckdConfig:
    scale: str
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    toy: ToyConfig | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    train_dataset: str = "mcckd-gsm8k"
    eval_datasets: tuple[str, ...] = ("mcckd-gsm8k", "mcckd-asdiv", "mcckd-svamp")


TOY = McckdConfig(
    scale="toy",
    teacher=TeacherConfig(samples=6, temperature=1.3, max_tokens=96),  # ours: CPU budget; T 1.3 for noise
    filters=FilterConfig(k=4),
    student=StudentConfig(
        lr=1e-3,  # ours: a 0.17M-parameter student moves nowhere at 1e-5 in 300 steps
        steps=200,
        questions_per_step=16,
        alpha=0.1,
        eval_every=100,
        max_new_tokens=112,
        replicas=12,
    ),
    toy=ToyConfig(),
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
    seeds=(0,),
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
    seeds=(0,),
)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}


def get_config(scale: str, **student_overrides) -> McckdConfig:
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    cfg = PRESETS[scale]
    return replace(cfg, student=replace(cfg.student, **student_overrides)) if student_overrides else cfg
