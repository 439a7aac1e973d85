"""Proxy-KD run configuration: one `ProxyKDConfig`, three presets (`get_config("toy"|"small"|"paper")`).

    make reproduce PAPER=proxykd                     # toy: the spec's Markov-chain check, CPU, ~2 min
    make reproduce PAPER=proxykd SCALE=small         # 1 GPU: Qwen2.5 proxy / student on GSM8K (hub models)
    accelerate launch -m common.reproduce proxykd --scale paper     # the published models (multi-GPU)
    python -m common.reproduce proxykd --set student.alpha=100 --set seeds=[0]   # any field, type-checked

Every default cites its source: "paper" (arXiv v2 prose, via the spec), "code" (homzer/llama-rlhf 19b87ef,
the probable authors' code), "3rd-party" (re-implementation / wiki note), "spec toy" (the spec's measured
toy check) or "ours". UNCONFIRMED = the paper's value is not readable in the stored copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TeacherConfig:
    model: str = "markov"
    """The black box: `markov` (the toy chain of `world.py`, sampled locally), an HF id / short name
    (common.generation), or an endpoint's model name. Paper: GPT-4 (outputs of existing datasets)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL (common.chat.ChatClient); None: a local generator."""
    temperature: float = 1.0
    """Sampling temperature of the teacher (ours; GPT-4's is unknown)."""
    max_tokens: int = 512
    """New tokens per answer (ours; the code's max_seq_len is 1024 for prompt + answer)."""
    chunk: int = 256
    """Prompts per appended chunk of the answer cache (the resume granularity)."""
    concurrency: int = 16
    """Endpoint requests in flight at once (ours)."""
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 0.5
    """The client's first wait before a retry, doubled per retry (common.chat; the openai client's 0.5 s)."""
    min_answered: float = 0.95
    """Fewer answered prompts than this share (after failed calls and empty answers) stops the run with
    one line; what was answered stays cached and a rerun retries only the rest (ours)."""


@dataclass(frozen=True)
class SplitConfig:
    warmup: float = 0.10
    proxy: float = 0.45
    student: float = 0.45
    """D_w / D_p / D_s shares of the teacher data (paper: 10 / 45 / 45 %, 100K / 450K / 450K)."""
    n_warmup: int | None = None
    n_proxy: int | None = None
    n_student: int | None = None
    """Absolute sizes instead of the shares (spec toy: 500 / 2,000 / 500); None: the shares."""


@dataclass(frozen=True)
class ProxyConfig:
    model: str = "markov-gru"
    """`markov-gru` (the spec toy's GRU LM: embedding 32, hidden 64), or an HF id (paper: Llama-2-70B)."""
    lora: bool = False
    """LoRA on the proxy (paper: LoRA for all models, rank UNCONFIRMED)."""
    lora_r: int = 16
    """UNCONFIRMED (the code takes the rank as a required CLI argument)."""
    lr: float = 1e-5
    """Adam, constant (paper and code: 1e-5)."""
    dpo_lr: float | None = None
    """Learning rate of the preference iterations; None: `lr` (paper: one lr for every stage)."""
    batch_size: int = 8
    """UNCONFIRMED (code: 1 per rank on 8 GPUs)."""
    warmup_epochs: float = 1.0
    """SFT epochs on D_w (paper: 1 epoch)."""
    nll_epochs: float = 0.0
    """NLL-only epochs on D_p before the preference iterations (paper: 0, the NLL is inside each
    iteration; spec toy: 10)."""
    iterations: int = 16
    """K preference iterations (paper value stripped; 3rd-party K = 16, UNCONFIRMED)."""
    chunked: bool = True
    """Iteration k trains on the k-th of K chunks of D_p (paper/code: a fresh chunk per round); False:
    every iteration on all of D_p (spec toy)."""
    epochs_per_iteration: float = 1.0
    beta: float = 1.0
    """DPO beta (paper UNCONFIRMED; code 1.0; spec toy 0.1)."""
    logp: str = "sum"
    """DPO sequence log-prob: `sum` (paper Eq. 4-5) | `mean` (code: per-token mean)."""
    reference: str = "previous"
    """`previous`: the proxy of the previous iteration (paper text) | `warmup`: a fixed checkpoint, the
    warmed-up proxy (code: a fixed `reference_ckpt_dir`)."""
    sample_temperature: float = 1.0
    sample_top_p: float = 0.8
    """The proxy's own (rejected) samples: temperature 1.0, top-p 0.8 (code)."""
    max_tokens: int = 512
    """New tokens per rejected sample (ours)."""


@dataclass(frozen=True)
class StudentConfig:
    model: str = "markov-gru"
    """`markov-gru` or an HF id (paper: Llama-1-7B / Llama-2-7B)."""
    lora: bool = False
    lora_r: int = 16
    lr: float = 1e-5
    """Adam, constant (paper and code: 1e-5)."""
    batch_size: int = 8
    epochs: float = 1.0
    """Epochs on D_s (paper: 1)."""
    alpha: float = 100.0
    """Eq. 11 KL weight (paper value stripped; 3rd-party 100, UNCONFIRMED; code default 1.0)."""
    top_k: int = 10
    """Proxy logits kept per position (paper App. A.1 and code: 10)."""
    weight_scale: float = 1.0
    """Eq. 9 divisor scale * std (paper: 1; code: 0.4)."""
    smoothing: float = 0.0
    """The 2024 code's +7e-5 on every vocabulary entry (spec); 0: the clean KL (ours, the default)."""
    eval_every: float = 0.0
    """Epochs between test evaluations for the learning curves (0: at the end only)."""


@dataclass(frozen=True)
class EvalConfig:
    sets: tuple[str, ...] = ("markov",)
    """`markov` (exact KL to the toy teacher) or the tests: agieval arc bbh csqa gsm8k (mirrored, the code's
    files) and mmlu (hub `cais/mmlu` or a mirror's mmlu/test.jsonl; prompt UNCONFIRMED)."""
    limit: int | None = None
    """Items per test set (None: all)."""
    max_new_tokens: int = 512
    """Greedy decoding length (code: max_seq_len)."""
    n_test: int = 1000
    """Toy: fresh teacher sequences of the test set (spec toy: 1,000)."""
    proxies: bool = True
    """Also evaluate the proxy after each alignment step (the alignment plot; ours)."""


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[str, ...] = ("markov",)
    """Tasks, run one after the other into one results folder: `markov` (the spec's toy chain), `arith`
    (common/synthetic's arithmetic world: toy teacher as the black box, mid model as proxy; the settings
    of `ARITH` on top) | `gsm8k` (GSM8K train questions answered by the teacher)."""
    n_prompts: int | None = None
    """Real data: training prompts asked of the teacher (None: all)."""
    vocab: int = 32
    length: int = 16
    logit_scale: float = 2.0
    """Toy chain: vocabulary (token 0 = BOS, never emitted), sequence length, W ~ N(0, 1) * scale (spec)."""


@dataclass(frozen=True)
class RunConfig:
    torch_threads: int = 1
    """Threads per process (ours: the shared 2-core machine)."""
    arms: tuple[str, ...] = (
        "sft",
        "proxykd",
        "unaligned",
        "takd",
        "no_pref",
        "plain_kl",
        "white_box",
        "sft_all",
    )
    """Student arms (stages.ARMS); `white_box` needs a teacher whose logits are known (the toy chain)."""


@dataclass(frozen=True)
class ProxyKDConfig:
    scale: str
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seeds: tuple[int, ...] = (0,)


TOY = ProxyKDConfig(
    scale="toy",
    teacher=TeacherConfig(model="markov", max_tokens=16, chunk=1000),
    split=SplitConfig(n_warmup=500, n_proxy=2000, n_student=500),  # spec toy
    # spec toy: P0 = 20 epochs SFT on D_w, 10 epochs NLL on D_p, K = 2 DPO iterations on all of D_p,
    # beta 0.1, summed log-probs, reference = the proxy at the start of the iteration, Adam 1e-3, batch 64,
    # rejected = one sample at temperature 1 (no top-p). SFT / NLL lr 3e-3 (ours, as the student's): at
    # 1e-3 the proxy ends at KL 0.91 to the teacher, at 3e-3 at 0.73-0.74, the spec's measured 0.749 / 0.743
    proxy=ProxyConfig(
        lr=3e-3,
        dpo_lr=1e-3,
        batch_size=64,
        warmup_epochs=20,
        nll_epochs=10,
        iterations=2,
        chunked=False,
        beta=0.1,
        sample_top_p=1.0,
        max_tokens=16,
    ),
    # spec toy: 30 epochs, Adam 3e-3, batch 64, alpha 1.0, top-10, w with the plain std
    student=StudentConfig(lr=3e-3, batch_size=64, epochs=30, alpha=1.0, eval_every=5),
    seeds=(0, 1, 2),  # spec toy: 3 seeds
)
SMALL = ProxyKDConfig(
    scale="small",
    teacher=TeacherConfig(model="Qwen/Qwen2.5-7B-Instruct", max_tokens=512),
    proxy=ProxyConfig(
        model="Qwen/Qwen2.5-1.5B-Instruct", lora=True, lr=1e-4, batch_size=8, iterations=4
    ),  # ours: 4 rounds fit one GPU-day
    student=StudentConfig(model="Qwen/Qwen2.5-0.5B-Instruct", lora=True, lr=1e-4, batch_size=8),
    eval=EvalConfig(sets=("gsm8k", "arc", "csqa", "bbh", "agieval", "mmlu")),
    data=DataConfig(sources=("gsm8k",)),
    run=RunConfig(arms=("sft", "proxykd", "unaligned", "takd", "no_pref", "plain_kl", "sft_all")),
)
PAPER = ProxyKDConfig(
    scale="paper",
    teacher=TeacherConfig(model="gpt-4", endpoint="https://api.openai.com/v1", max_tokens=1024),
    proxy=ProxyConfig(model="meta-llama/Llama-2-70b-hf", lora=True),
    student=StudentConfig(model="meta-llama/Llama-2-7b-hf", lora=True),
    eval=EvalConfig(sets=("gsm8k", "arc", "csqa", "bbh", "agieval", "mmlu")),
    data=DataConfig(sources=("gsm8k",)),
    run=RunConfig(arms=("sft", "proxykd", "unaligned", "takd", "no_pref", "plain_kl", "sft_all")),
)
PRESETS = {"toy": TOY, "small": SMALL, "paper": PAPER}

ARITH = (
    "split.n_warmup=100",
    "split.n_proxy=450",
    "split.n_student=450",
    "data.n_prompts=1000",  # of the world's 4,000 train problems
    "eval.n_test=300",
    "teacher.max_tokens=96",
    "proxy.lr=1e-4",
    "proxy.dpo_lr=1e-5",
    "proxy.batch_size=32",
    "proxy.warmup_epochs=3",
    "proxy.nll_epochs=3",
    "proxy.max_tokens=96",
    "student.lr=1e-4",
    "student.batch_size=32",
    "student.epochs=3",
    "run.arms=[start,sft,proxykd,unaligned,takd,no_pref,plain_kl,white_box,sft_all]",
)
"""`--set` assignments applied for the `arith` task only (ours): the models start from their SFT base
(common.synthetic.base_models), so a few epochs at lower rates; every other field is the preset's."""


SMOLLM2_CPU = (
    "teacher.model=gsm8k-reference",
    "proxy.model=smollm2-135m-instruct",
    "student.model=smollm2-135m-instruct",
    "proxy.lr=2e-4",
    "student.lr=2e-4",
    "proxy.batch_size=4",
    "student.batch_size=4",
    "proxy.iterations=1",
    "proxy.max_tokens=96",
    "data.n_prompts=100",
    "eval.sets=[gsm8k]",
    "eval.limit=30",
    "eval.max_new_tokens=160",
    "eval.proxies=false",
    "student.alpha=1.0",
    "run.arms=[sft,proxykd,plain_kl]",
)
"""`--set` assignments on the small preset for the real-model CPU run (ours): SmolLM2-135M-Instruct + LoRA as
proxy and student, GSM8K's reference solutions as the text-only teacher, 100 prompts (10 / 45 / 45), one
preference round, 30 GSM8K test questions, three arms (sized for the shared 2-core machine at load 7).
Numbers from it are a floor (a 135M model), not the paper's."""


def get_config(scale: str) -> ProxyKDConfig:
    """The preset of `scale` (common.reproduce applies `--set` overrides on top)."""
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[scale]
