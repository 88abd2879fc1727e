"""Batched sampling with the latent KV cache, greedy held-out evaluation, and expert load
statistics.  Used by sft.py, grpo.py and run_all.sh."""
import argparse
import json
import time

import torch

import tasks
from data import encode_example, make_batch, sample_problem


@torch.no_grad()
def generate(model, tok, prompts, max_new=100, temperature=0.0, gen=None):
    """prompts: list of id lists.  Every row starts at position 0 and advances one position per
    step, so all rows share the position; a row feeds its own prompt tokens until they run out,
    then its samples.  The common prefix length is prefilled in one call.
    Returns (completions: list of id lists ending at EOS or cut at max_new,
             logps: list of per-token log-probabilities of the sampled tokens)."""
    dev = next(model.parameters()).device
    B = len(prompts)
    lens = torch.tensor([len(p) for p in prompts])
    L = int(lens.max()) + max_new
    seq = torch.full((B, L), tok.pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        seq[i, :len(p)] = torch.tensor(p)
    seq, lens = seq.to(dev), lens.to(dev)
    lp = torch.zeros(B, L, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    end = lens + max_new
    cache = model.new_cache()
    m = int(lens.min())
    logits = model.step(seq[:, :m], 0, cache)[:, -1]
    pos = m
    while pos < L:
        logits = logits.float()
        if temperature <= 0:
            nxt = logits.argmax(-1)
            lpn = torch.zeros(B, device=dev)
        else:
            logprobs = torch.log_softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(logprobs.exp(), 1, generator=gen).squeeze(1)
            lpn = logprobs.gather(1, nxt[:, None]).squeeze(1)
        gen_row = (pos >= lens) & ~done & (pos < end)
        seq[:, pos] = torch.where(gen_row, nxt, seq[:, pos])
        lp[:, pos] = torch.where(gen_row, lpn, lp[:, pos])
        done |= gen_row & (nxt == tok.eos)
        if bool((done | (pos + 1 >= end)).all()):
            break
        logits = model.step(seq[:, pos:pos + 1], pos, cache)[:, -1]
        pos += 1
    seq, lp, lens, end = seq.cpu(), lp.cpu(), lens.cpu(), end.cpu()
    comps, logps = [], []
    for i in range(B):
        c = seq[i, lens[i]:min(pos + 1, int(end[i]))].tolist()
        if tok.eos in c:
            c = c[:c.index(tok.eos) + 1]
        comps.append(c)
        logps.append(lp[i, lens[i]:lens[i] + len(c)])
    return comps, logps


EVAL_KINDS = ["add", "sub", "mul", "cmp", "word"]


def eval_problems(seed, n_per_kind):
    """The held-out set: each kind at the evaluation size (3-digit operands), drawn in the same
    order as cli/arith.c (kind after kind, n each, one generator seeded with `seed`)."""
    rng = tasks.Rng(seed)
    return [(k, tasks.make_problem(rng, k, hard=True)) for k in EVAL_KINDS for _ in range(n_per_kind)]


@torch.no_grad()
def evaluate(model, tok, seed=7777, n_per_kind=100, batch=250, show=0):
    model.eval()
    probs = eval_problems(seed, n_per_kind)
    res = {k: [0, 0] for k in EVAL_KINDS}
    for i in range(0, len(probs), batch):
        chunk = probs[i:i + batch]
        prompts = [tok.encode(tasks.prompt_text(q)) for _, (q, _, _) in chunk]
        comps, _ = generate(model, tok, prompts, max_new=110)
        for (k, (q, _, a)), c in zip(chunk, comps):
            ok, _ = tasks.check(tok.decode(c), a)
            res[k][0] += int(ok)
            res[k][1] += 1
            if show and not ok:
                show -= 1
                print("WRONG:", q, "->", repr(tok.decode(c)), "expected", a)
    model.train()
    return {k: v[0] / max(v[1], 1) for k, v in res.items()}


@torch.no_grad()
def load_balance(model, tok, seed=4242, n=256):
    """max load / mean load of each MoE layer over the tokens of n teacher-forced examples."""
    model.eval()
    rng = tasks.Rng(seed)
    ex = []
    for _ in range(n):
        _, (q, t, a) = sample_problem(rng)
        ex.append(encode_example(tok, q, t, a))
    x, _, valid = make_batch(tok, ex)
    dev = next(model.parameters()).device
    model(x.to(dev))
    valid = valid.to(dev)
    out = []
    for moe in model.moe_layers():
        cnt = torch.bincount(moe.last_idx[valid.flatten()].flatten(), minlength=model.cfg.n_routed_experts).float()
        out.append(round(float(cnt.max() / cnt.mean()), 3))
    model.train()
    return out


def time_up(minutes, t0, step):
    if minutes and time.time() - t0 > minutes * 60:
        print(f"time limit reached at step {step + 1}", flush=True)
        return True
    return False


def finish_run(model, tok, log, seconds, steps_done, eval_n, out):
    """End of a training stage: timings, load balance, held-out accuracy; saves the checkpoint."""
    import checkpoint
    log["train_seconds"] = round(seconds, 1)
    log["steps_done"] = steps_done
    log["load_balance"] = load_balance(model, tok)
    print("load balance (max/mean per MoE layer):", log["load_balance"], flush=True)
    if eval_n:
        t1 = time.time()
        log["accuracy"] = evaluate(model, tok, n_per_kind=eval_n, show=3)
        log["eval_seconds"] = round(time.time() - t1, 1)
        print("accuracy:", json.dumps(log["accuracy"]), flush=True)
    checkpoint.save(out, model.cpu(), tok, log)


def main():
    import checkpoint
    ap = argparse.ArgumentParser(description="greedy held-out evaluation of a checkpoint")
    ap.add_argument("ckpt")
    ap.add_argument("--n", type=int, default=100, help="problems per task type")
    ap.add_argument("--seed", type=int, default=7777)
    ap.add_argument("--show", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, tok, _ = checkpoint.load(a.ckpt)
    t = time.time()
    acc = evaluate(model, tok, a.seed, a.n, show=a.show)
    print(json.dumps({"accuracy": acc, "load_balance": load_balance(model, tok),
                      "seconds": round(time.time() - t, 1)}))


if __name__ == "__main__":
    main()
