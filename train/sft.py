"""Stage 1: supervised training on the reasoning traces, with DeepSeek-V3's auxiliary-loss-free
load balancing: after every step each MoE layer's selection bias moves by
    b_i += gamma * sign(mean_load - load_i)
where load_i counts the (non-padding) tokens routed to expert i in that step's batch.
No auxiliary loss term is used.  gamma = 0 turns the balancing off (the ablation).
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

import tasks

from data import batches, build_tokenizer
from evaluate import finish_run, load_balance, time_up
from model import Config, Transformer, count_params


def update_bias(model, valid, gamma):
    """The load-balancing rule, applied once per step; returns max/mean load per layer."""
    ratios = []
    for moe in model.moe_layers():
        idx = moe.last_idx[valid.flatten()].flatten()
        load = torch.bincount(idx, minlength=moe.cfg.n_routed_experts).float()
        if gamma > 0:
            moe.bias += gamma * torch.sign(load.mean() - load)
        ratios.append(float(load.max() / load.mean()))
    return ratios


def lr_at(step, progress, lr, warmup=50):
    """Linear warm-up, then cosine decay to 10% over progress 0..1 (the larger of the step
    fraction and the time fraction, so a --minutes limit still ends at the low rate)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, progress)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--gamma", type=float, default=0.003, help="bias update speed; 0 = off")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=100, help="problems per type in the final eval; 0 = none")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=0, help="stop early after this many minutes (0 = no limit)")
    ap.add_argument("--balance-at", type=int, default=0, help="also measure the load balance at this step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="data generation processes (GPU runs)")
    ap.add_argument("--sub-trace", choices=tasks.SUB_TRACES, default=tasks.SUB_TRACE,
                    help="how subtraction's digit lines are written (tasks.py)")
    for f in Config.__dataclass_fields__:
        if f not in ("vocab_size",):
            ap.add_argument("--" + f.replace("_", "-"), type=type(getattr(Config, f)), default=None)
    a = ap.parse_args()
    tasks.SUB_TRACE = a.sub_trace  # before any data is made (worker processes fork after this)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    tok = build_tokenizer()
    kw = {f: getattr(a, f) for f in Config.__dataclass_fields__ if getattr(a, f, None) is not None}
    cfg = Config(vocab_size=len(tok.tokens), **kw)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model = Transformer(cfg).to(dev)
    total, active = count_params(model)
    print(f"params {total} total, {active} active per token; vocab {cfg.vocab_size}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": nodecay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    # training problems come from seeds 1000+ (and worker seeds derived from them); the
    # evaluation seeds (7777 here, the C eval's default) are never used for training
    it = batches(tok, 1000 + a.seed, a.batch, a.workers)
    log = {"config": cfg.to_dict(), "args": vars(a), "steps": []}
    t0 = time.time()
    ema, ratios_ema = None, None
    step = 0
    for step in range(a.steps):
        for g in opt.param_groups:
            prog = step / a.steps
            if a.minutes:
                prog = max(prog, (time.time() - t0) / (a.minutes * 60))
            g["lr"] = lr_at(step, prog, a.lr)
        x, y, valid = (t.to(dev) for t in next(it))
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            ratios = update_bias(model, valid, a.gamma)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        ratios_ema = ratios if ratios_ema is None else [0.9 * r + 0.1 * n for r, n in zip(ratios_ema, ratios)]
        if (step + 1) % a.log_every == 0 or step == 0:
            rec = {"step": step + 1, "loss": round(ema, 4), "batch_max_over_mean": [round(r, 2) for r in ratios_ema],
                   "seconds": round(time.time() - t0, 1)}
            log["steps"].append(rec)
            print(json.dumps(rec), flush=True)
        if step + 1 == a.balance_at:
            log["load_balance_at"] = {"step": step + 1, "max_over_mean": load_balance(model, tok)}
            print("load balance at step", step + 1, log["load_balance_at"], flush=True)
        if time_up(a.minutes, t0, step):
            break
    finish_run(model, tok, log, time.time() - t0, step + 1, a.eval_n, a.out)


if __name__ == "__main__":
    main()
