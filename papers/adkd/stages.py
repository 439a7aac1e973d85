"""AD-KD's stages, each taking a task (`data.synthetic_task` / `data.glue_task`), never a scale.

    teacher = teacher_stage(task, teacher_cfg, root, force)            # fine-tune, keep the best epoch
    arm = run_arm(ArmJob(...))                                          # one student: KD | AD-KD | PKD
    rows = result_rows(task, model_label, arms)                        # points, one row per seed

Cached under runs/adkd/<scale>/<task>/ by the hash of their settings (common.stages): the teacher
writes `best.safetensors` then `metrics.json`; an arm writes `metrics.json` last, so a killed run
resumes at the first arm without one (common.train resumes a half-trained arm from its checkpoint).

The teacher is frozen and in eval mode (no dropout), so its logits, its [CLS] states and its attribution
maps of the student's training examples are computed once per arm (`teacher_targets`) instead of once
per batch as in the code: the same numbers, since a map is normalised per example and the code's batch
mean only rescales each example's gradient.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers.utils import logging as transformers_logging

from common.checkpoints import STATE_FILE, complete_checkpoints
from common.reproduce import configure_logging
from common.stages import atomic_write_json, read_json, stage_hash
from common.train import TrainConfig, train
from papers.adkd.adkd import (
    annealed_temperature,
    attribution_loss,
    integrated_gradients,
    pkd_loss,
    soft_cross_entropy_kd,
    token_attribution_scores,
    total_loss,
    view_targets,
)
from papers.adkd.config import ModelConfig, StudentConfig, TeacherConfig
from papers.adkd.data import VOCAB_SIZE, Task, check_labels, collate
from papers.adkd.models import ToyEncoder, ToyModelConfig, cross_entropy, load_bert_classifier

log = logging.getLogger(__name__)
EVAL_BATCH = 64


def quiet_libraries() -> None:
    """accelerate logs a line per checkpoint file; transformers a load report per truncated student."""
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def build_model(net: ModelConfig, num_labels: int, max_len: int = 13) -> torch.nn.Module:
    """A fresh toy encoder or a pretrained HF BERT (first `num_layers` layers) with a new head."""
    if net.model == "toy":
        cfg = ToyModelConfig(
            VOCAB_SIZE, max_len, net.d_model, net.n_heads, net.num_layers or 1, 4, num_labels
        )
        return ToyEncoder(cfg)
    model = load_bert_classifier(net.model, num_labels, net.num_layers)
    if net.freeze_word_embeddings:
        model.hf.bert.embeddings.word_embeddings.requires_grad_(False)
    return model


def batches(examples: list[dict], pad_id: int, size: int = EVAL_BATCH):
    """Batches in length order (little padding); evaluation only."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    run = collate(pad_id)
    for start in range(0, len(order), size):
        yield run([examples[i] for i in order[start : start + size]])


def evaluate(model: torch.nn.Module, examples: list[dict], pad_id: int, task_name: str) -> dict[str, float]:
    """Accuracy in points, plus the GLUE task's own metric where it has another (CoLA MCC, MRPC/QQP F1,
    STS-B Spearman), all x100."""
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for batch in batches(examples, pad_id):
            logits.append(model(batch).float())
            labels.append(batch["labels"])
    z, y = torch.cat(logits), torch.cat(labels)
    if z.shape[-1] == 1:
        return {"spearman": 100 * _spearman(z.squeeze(-1).numpy(), y.numpy())}
    pred = z.argmax(-1)
    out = {"accuracy": 100.0 * float((pred == y).float().mean())}
    tp, fp, fn = (int(((pred == a) & (y == b)).sum()) for a, b in ((1, 1), (1, 0), (0, 1)))
    if task_name in ("mrpc", "qqp"):
        out["f1"] = 100.0 * 2 * tp / max(2 * tp + fp + fn, 1)
    if task_name == "cola":
        tn = int(((pred == 0) & (y == 0)).sum())
        denom = float(np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))) or 1.0
        out["mcc"] = 100.0 * (tp * tn - fp * fn) / denom
    return out


def main_metric(scores: dict[str, float]) -> float:
    """The model-selection metric (code `glue_compute_metrics`): MCC, F1, Spearman, else accuracy."""
    for name in ("mcc", "f1", "spearman"):
        if name in scores:
            return scores[name]
    return scores["accuracy"]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho as the Pearson correlation of ranks (ties broken by order, not averaged)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _train_config(
    out: Path, n: int, cfg: TeacherConfig | StudentConfig, seed: int, every_epoch: bool = True
) -> TrainConfig:
    """common.train settings of the code's loop; `every_epoch`: keep each epoch's checkpoint (selection)."""
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{n} training examples are fewer than one batch of {cfg.batch_size}")
    return TrainConfig(
        output_dir=str(out),
        max_steps=steps_per_epoch * cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_schedule=cfg.optim.lr_schedule,
        weight_decay=cfg.optim.weight_decay,
        max_grad_norm=cfg.optim.max_grad_norm,
        seed=seed,
        save_every=steps_per_epoch if every_epoch else 0,  # the epochs' models are selected from
        keep_checkpoints=cfg.epochs if every_epoch else 1,
        report_to="none",
        progress=False,
    )


def _epoch_models(out: Path):
    """(epoch, state dict) of each epoch's checkpoint that common.train kept."""
    for epoch, ckpt in enumerate(complete_checkpoints(out), start=1):
        yield epoch, load_file(str(ckpt / "model.safetensors"))


def _select(
    model, out: Path, examples: list[dict], pad_id: int, task_name: str
) -> tuple[int, list[float], dict]:
    """The epoch whose checkpoint scores best on `examples` (first metric; ties: the earlier epoch)."""
    scores, best = [], (None, -float("inf"), None)
    for epoch, state in _epoch_models(out):
        model.load_state_dict(state)
        score = main_metric(evaluate(model, examples, pad_id, task_name))
        scores.append(score)
        if score > best[1]:
            best = (epoch, score, {k: v.clone() for k, v in state.items()})
    return best[0], scores, best[2]


# --- 1. teacher -------------------------------------------------------------------------------------


def teacher_stage(task: Task, cfg: TeacherConfig, root: Path, force: bool) -> dict:
    """Fine-tune the teacher on `task.teacher_train`; keep the epoch best on `task.teacher_val`
    (spec: "keep the best dev checkpoint"; ours: a held-out part of the training set); test it."""
    check_labels(task.teacher_train, task.num_labels, f"{task.name} teacher training set")
    key = stage_hash({"stage": "teacher", "task": task.key, "cfg": asdict(cfg), "v": 1})
    out = root / task.name / f"teacher-{key}"
    if (out / "metrics.json").exists() and not force:
        return read_json(out / "metrics.json")
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.net, task.num_labels)
    tc = _train_config(out / "train", len(task.teacher_train), cfg, cfg.seed)
    if force:
        shutil.rmtree(out / "train", ignore_errors=True)
    train(model, task.teacher_train, lambda m, b: _ce_loss(m, b), tc, collate_fn=collate(task.pad_id))
    epoch, val_scores, state = _select(model, out / "train", task.teacher_val, task.pad_id, task.name)
    model.load_state_dict(state)
    save_file(state, str(out / "best.safetensors"))
    metrics = {
        "best_epoch": epoch,
        "val_scores": val_scores,
        "test": evaluate(model, task.test, task.pad_id, task.name),
        "weights": str(out / "best.safetensors"),
        "wall_s": time.perf_counter() - start,
    }
    atomic_write_json(out / "metrics.json", metrics)
    # only now: a run killed before metrics.json resumes from them (optimizer states: not needed again)
    shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)
    log.info("%s teacher: best epoch %s (val %s), test %s", task.name, epoch, val_scores, metrics["test"])
    return metrics


def _ce_loss(model, batch) -> tuple[torch.Tensor, dict]:
    loss = cross_entropy(model(batch), batch["labels"])
    return loss, {"ce": loss.item()}


def load_teacher(net: ModelConfig, num_labels: int, weights: str) -> torch.nn.Module:
    model = build_model(net, num_labels)
    model.load_state_dict(load_file(weights))
    return model.eval().requires_grad_(False)


# --- 2. students ------------------------------------------------------------------------------------


def pkd_layers(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """PKD-skip pairs (student layer j, teacher layer j * n_t / n_s) for j = 1..n_s - 1 (1-based; the last
    layer is left to the logit KD)."""
    return [(j, round(j * n_teacher / n_student)) for j in range(1, n_student)]


def teacher_targets(
    teacher, examples: list[dict], pad_id: int, cfg: StudentConfig, num_labels: int, cls_layers: list[int]
) -> list[dict]:
    """Each example with the teacher's logits `t_logits` [C], attribution scores `t_maps` [views, L]
    (top-K, unnormalised: the loss normalises) and [CLS] states `t_cls` [len(cls_layers), d]."""
    run, out = collate(pad_id), []
    for start in range(0, len(examples), EVAL_BATCH):
        chunk = examples[start : start + EVAL_BATCH]
        batch = run(chunk)
        e = teacher.embed(batch).detach().requires_grad_(True)
        with torch.enable_grad():
            logits, cls = teacher.head(e, batch, return_cls=True)
            targets = view_targets(batch["labels"], num_labels, cfg.multi_view)
            igs = integrated_gradients(
                lambda x, z=logits, b=batch, e0=e: z if x is e0 else teacher.head(x, b),
                e,
                targets,
                cfg.ig_steps,
            )
        maps = torch.stack([token_attribution_scores(ig.detach(), cfg.top_k) for ig in igs], 1)
        for i, ex in enumerate(chunk):
            n = len(ex["input_ids"])
            t_cls = torch.stack([cls[layer - 1][i] for layer in cls_layers]) if cls_layers else torch.zeros(0)
            out.append(
                {**ex, "t_logits": logits[i].detach(), "t_maps": maps[i, :, :n], "t_cls": t_cls.detach()}
            )
    return out


def student_loss_fn(cfg: StudentConfig, method: str, num_labels: int, steps_per_epoch: int, start_step: int):
    """`LossFn` of one arm: (1 - alpha) CE + alpha KD (+ beta L_attr for AD-KD, + pkd_beta L_PKD for PKD)."""
    calls = {"n": start_step}

    def loss_fn(model, batch):
        epoch = calls["n"] // steps_per_epoch
        calls["n"] += 1
        tau = annealed_temperature(cfg.temperature, epoch, cfg.epochs) if cfg.anneal else cfg.temperature
        e = model.embed(batch)
        logits, cls = model.head(e, batch, return_cls=True)
        ce = cross_entropy(logits, batch["labels"])
        kd = soft_cross_entropy_kd(logits, batch["t_logits"], tau)
        extra, metrics = logits.new_zeros(()), {"ce": ce.item(), "kd": kd.item(), "tau": tau}
        if method == "AD-KD":
            targets = view_targets(batch["labels"], num_labels, cfg.multi_view)
            igs = integrated_gradients(
                lambda x: logits if x is e else model.head(x, batch),
                e,
                targets,
                cfg.ig_steps,
                create_graph=True,
            )
            attr = sum(
                attribution_loss(batch["t_maps"][:, v], token_attribution_scores(ig))
                for v, ig in enumerate(igs)
            )
            extra, metrics["attr"] = cfg.beta * attr, attr.item()
        elif method == "PKD":  # t_cls[:, j] is the teacher partner of student layer j + 1 (pkd_layers)
            n = batch["t_cls"].shape[1]
            feat = pkd_loss([cls[j] for j in range(n)], [batch["t_cls"][:, j] for j in range(n)])
            extra, metrics["pkd"] = cfg.pkd_beta * feat, feat.item()
        loss = total_loss(ce, kd, 0.0, cfg.alpha, 0.0) + extra
        return loss, metrics

    return loss_fn


@dataclass
class ArmJob:
    """Everything one student arm needs, picklable (it may run in a worker process)."""

    task_name: str
    num_labels: int
    pad_id: int
    train: list[dict]
    test: list[dict]
    teacher_net: ModelConfig
    teacher_weights: str
    cfg: StudentConfig
    method: str
    seed: int
    out: str
    force: bool = False
    threads: int = 1


def run_arm(job: ArmJob) -> dict:
    """Train one student arm (cached: `metrics.json` written last) and evaluate it on the test set."""
    out = Path(job.out)
    if (out / "metrics.json").exists() and not job.force:
        return read_json(out / "metrics.json")
    torch.set_num_threads(job.threads)
    if not logging.getLogger().handlers:  # a spawned worker: the driver's log format and level
        configure_logging()
    quiet_libraries()
    start, cfg = time.perf_counter(), job.cfg
    teacher = load_teacher(job.teacher_net, job.num_labels, job.teacher_weights)
    torch.manual_seed(job.seed)
    student = build_model(cfg.net, job.num_labels)
    pairs = pkd_layers(student.num_layers, teacher.num_layers) if job.method == "PKD" else []
    examples = teacher_targets(teacher, job.train, job.pad_id, cfg, job.num_labels, [t for _, t in pairs])
    del teacher
    select_best = cfg.select == "best-dev"
    tc = _train_config(out / "train", len(examples), cfg, job.seed, select_best)
    if job.force:
        shutil.rmtree(out / "train", ignore_errors=True)
    done = complete_checkpoints(out / "train")
    start_step = read_json(done[-1] / STATE_FILE)["step"] if done else 0
    loss_fn = student_loss_fn(cfg, job.method, job.num_labels, tc.max_steps // cfg.epochs, start_step)
    result = train(student, examples, loss_fn, tc, collate_fn=collate(job.pad_id))
    per_epoch = [{"epoch": cfg.epochs, **evaluate(student, job.test, job.pad_id, job.task_name)}]
    if select_best:  # the code's protocol: the best epoch on the dev set, which is also the reported set
        per_epoch = []
        for epoch, state in _epoch_models(out / "train"):
            student.load_state_dict(state)
            per_epoch.append({"epoch": epoch, **evaluate(student, job.test, job.pad_id, job.task_name)})
    chosen = max(per_epoch, key=main_metric) if select_best else per_epoch[-1]
    metrics = {
        "method": job.method,
        "seed": job.seed,
        "test": {k: v for k, v in chosen.items() if k != "epoch"},
        "chosen_epoch": chosen["epoch"],
        "per_epoch": per_epoch,
        "n_train": len(examples),
        "final_loss": result.final_loss,
        "wall_s": time.perf_counter() - start,
    }
    atomic_write_json(out / "metrics.json", metrics)
    shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)  # after metrics.json, as the teacher's
    log.info(
        "%s %s seed %d: %s (%.0f s)", job.task_name, job.method, job.seed, metrics["test"], metrics["wall_s"]
    )
    return metrics
