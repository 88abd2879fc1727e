"""Stage 2: reinforcement learning with a rule-based reward, GRPO-style (DeepSeekMath / R1):
for each prompt a group of G completions is sampled from the current policy; the reward is
1 for a correct answer (checked by tasks.check) plus 0.1 for a well-formed completion
(<think>...</think> then an integer and EOS); advantages are the rewards normalised within the
group; the loss is the clipped surrogate (ratio to the sampling policy, clip eps) plus
beta * KL(policy || reference), the reference being the supervised model, with the unbiased
k3 estimator per token.  Each batch of rollouts is used in two minibatch updates, so the
second update is off-policy and the clipping is active.
"""
import argparse
import copy
import json
import time

import torch

import checkpoint
import tasks
from data import HARD_FRAC, MIX
from evaluate import finish_run, generate, time_up


def seq_logps(model, prompts, comps, pad):
    """Per-token log-probs of each completion under model -> [B, Tc] and mask [B, Tc]."""
    dev = next(model.parameters()).device
    B = len(prompts)
    T = max(len(p) + len(c) for p, c in zip(prompts, comps))
    Tc = max(len(c) for c in comps)
    x = torch.full((B, T), pad, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        x[i, :len(p) + len(c)] = torch.tensor(p + c)
    x = x.to(dev)
    logits = model(x[:, :-1]).float()
    # completion token j of row i sits at input position len(p)+j, predicted at len(p)+j-1
    start = torch.tensor([len(p) - 1 for p in prompts], device=dev)
    pos = (start[:, None] + torch.arange(Tc, device=dev)[None, :]).clamp(max=T - 2)
    tgt = x.gather(1, (pos + 1).clamp(max=T - 1))
    lps = torch.log_softmax(logits.gather(1, pos[:, :, None].expand(-1, -1, logits.shape[-1])), dim=-1)
    out = lps.gather(2, tgt[:, :, None]).squeeze(2)
    mask = (torch.arange(Tc, device=dev)[None, :] < torch.tensor([len(c) for c in comps], device=dev)[:, None]).float()
    return out * mask, mask


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True, help="the supervised checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="samples per prompt")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--beta", type=float, default=0.04, help="KL penalty weight")
    ap.add_argument("--clip", type=float, default=0.2)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    model, tok, sft_log = checkpoint.load(a.init)
    model.to(dev)
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    # the selection biases stay as supervised training left them (no bias updates in RL)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = tasks.Rng(5000 + a.seed)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    log = {"sft": sft_log, "args": vars(a), "steps": []}
    t0 = time.time()
    step = 0
    for step in range(a.steps):
        probs = []
        for _ in range(a.prompts):
            kind = MIX[rng.rand(len(MIX))]
            probs.append(tasks.make_problem(rng, kind, hard=rng.rand(1000) < int(HARD_FRAC * 1000)))
        prompts = [tok.encode(tasks.prompt_text(q)) for q, _, _ in probs for _ in range(a.group)]
        answers = [ans for _, _, ans in probs for _ in range(a.group)]
        model.eval()
        comps, old_lp = generate(model, tok, prompts, max_new=110, temperature=a.temperature, gen=gen)
        model.train()
        rewards = []
        for c, ans in zip(comps, answers):
            ok, fmt = tasks.check(tok.decode(c), ans)
            rewards.append(float(ok) + 0.1 * float(fmt))
        r = torch.tensor(rewards, device=dev).view(a.prompts, a.group)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()
        old = torch.nn.utils.rnn.pad_sequence(old_lp, batch_first=True).to(dev)
        with torch.no_grad():
            ref_lp, _ = seq_logps(ref, prompts, comps, tok.pad)
        B = len(prompts)
        perm = torch.randperm(B, generator=gen, device=dev)
        stats = []
        for half in (perm[:B // 2], perm[B // 2:]):
            hi = half.tolist()
            lp, mask = seq_logps(model, [prompts[i] for i in hi], [comps[i] for i in hi], tok.pad)
            Tc = lp.shape[1]
            o = old[half, :Tc]
            rl = ref_lp[half, :Tc]
            ratio = torch.exp(lp - o)
            A = adv[half][:, None]
            surr = torch.min(ratio * A, torch.clamp(ratio, 1 - a.clip, 1 + a.clip) * A)
            kl = torch.exp(rl - lp) - (rl - lp) - 1
            per_tok = -(surr - a.beta * kl)
            loss = ((per_tok * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            stats.append((float((kl.detach() * mask).sum() / mask.sum()),
                          float(((ratio - 1).abs() > a.clip).float().mul(mask).sum() / mask.sum())))
        acc = float((r >= 1).float().mean())
        rec = {"step": step + 1, "reward": round(float(r.mean()), 3), "correct": round(acc, 3),
               "kl": round(stats[-1][0], 4), "clipped": round(stats[-1][1], 4),
               "seconds": round(time.time() - t0, 1)}
        log["steps"].append(rec)
        print(json.dumps(rec), flush=True)
        if time_up(a.minutes, t0, step):
            break
    finish_run(model, tok, log, time.time() - t0, step + 1, a.eval_n, a.out)


if __name__ == "__main__":
    main()
