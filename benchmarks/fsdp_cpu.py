"""FSDP on CPU, two ways (benchmarks/RESULTS.md, "Distributed on CPU"):

    ACCELERATE_USE_CPU=1 accelerate launch --use_fsdp --fsdp_version 2 --fsdp_sync_module_states false \
        --num_processes 2 benchmarks/fsdp_cpu.py accelerate
    python -m torch.distributed.run --nproc_per_node 2 benchmarks/fsdp_cpu.py torch

Three AdamW steps of the tiny student on 4 x 12 random tokens, each process taking half the rows.
`accelerate`: what accelerate made of the launch (distributed type, the module `prepare` returned).
`torch`: torch's own FSDP2 (`fully_shard` per decoder layer and the whole model) over gloo, against a
one-process model on the whole batch (equal-length rows, so the mean losses match). Each process prints
one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.distributed as dist

from common.models import build_tiny_causal_lm

STEPS, ROWS = 3, 4


def batches() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(1, 48, (ROWS, 12), generator=gen) for _ in range(STEPS)]


def with_accelerate() -> dict:
    from accelerate import Accelerator

    acc = Accelerator()
    info = {"rank": acc.process_index, "processes": acc.num_processes}
    info["distributed_type"] = str(acc.state.distributed_type)
    model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
    model, opt = acc.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    info["prepared_module"] = type(model).__name__
    rows = slice(
        acc.process_index * ROWS // acc.num_processes, (acc.process_index + 1) * ROWS // acc.num_processes
    )
    losses = []
    for ids in batches():
        loss = model(input_ids=ids[rows], labels=ids[rows]).loss
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(acc.reduce(loss.detach(), "mean").item())
    return info | {"losses": losses}


def with_torch_fsdp2() -> dict:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, n = dist.get_rank(), dist.get_world_size()
    model = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
    ref = build_tiny_causal_lm("tiny-student", vocab_size=48, seed=0)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    opt, ref_opt = (torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, ref))
    rows = slice(rank * ROWS // n, (rank + 1) * ROWS // n)
    losses, ref_losses = [], []
    for ids in batches():
        loss = model(input_ids=ids[rows], labels=ids[rows]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / n)
        ref_loss = ref(input_ids=ids, labels=ids).loss
        ref_loss.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        ref_losses.append(ref_loss.item())
    full = {k: v.full_tensor() for k, v in model.state_dict().items()}
    diff = max((full[k] - v).abs().max().item() for k, v in ref.state_dict().items() if k in full)
    shard = sum(p.to_local().numel() for p in model.parameters())
    dist.destroy_process_group()
    return {
        "rank": rank,
        "processes": n,
        "losses": losses,
        "one_process_losses": ref_losses,
        "max_param_diff": diff,
        "local_params": shard,
        "all_params": sum(p.numel() for p in ref.parameters()),
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    start = time.perf_counter()
    summary = with_accelerate() if sys.argv[1] == "accelerate" else with_torch_fsdp2()
    print(json.dumps(summary | {"seconds": round(time.perf_counter() - start, 1)}), flush=True)
