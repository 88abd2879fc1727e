"""Multi-token prediction for a trained model: one MTP ("next-n") module as DeepSeek-V3's
report describes it (§2.2, depth 1), trained on top of the frozen main model read from its
GGUF, measured, and exported as the GGUF's next-n block.

The module, at position i, from the main model's last hidden state h_i (the last layer's
output, before the final norm) and the embedding of the next token t_{i+1}:

    h'_i   = eh_proj([enorm(embed(t_{i+1})); hnorm(h_i)])      (embedding half first)
    o_i    = Block(h'_i)    one more MLA + MoE block, causal over the module's own positions
    logits = head(shared_head_norm(o_i))                         predicts t_{i+2}

embed and head are the main model's (shared, as in V3).  RoPE uses position i; attention
depends only on position differences, so any fixed offset gives the same result.  Training
loss: lambda * cross-entropy of the t_{i+2} predictions over the assistant tokens.

The one departure from the report: the main model is frozen (V3 trains both jointly, adding
lambda * L_MTP to the main loss).  Joint training would change the shipped main model, whose
weights the tests and the accuracy figures depend on.  With the main loss constant, lambda only
scales the module's gradient (which AdamW's normalisation nearly cancels); it is kept as the
report's 0.3 for the record.

GGUF layout (llama.cpp's names for next-n layers): block_count counts the extra block N,
deepseek2.nextn_predict_layers = 1; blk.N.* holds the ordinary attention and MoE tensors, plus
blk.N.nextn.{eh_proj, enorm, hnorm, shared_head_norm}; no nextn.embed_tokens or
nextn.shared_head_head, since embedding and head are shared (token_embd, output).  The main
model's tensors are copied byte for byte from the input GGUF, and checked after writing.

Usage:
  mtp.py train MODEL.gguf OUT.pt [--minutes M] ...   train the module; writes a checkpoint
  mtp.py export MODEL.gguf OUT.pt OUT.gguf           MODEL plus the module's next-n block
  mtp.py accept MODEL_WITH_MTP.gguf [--n N]          acceptance, from the exported weights
  mtp.py strip MODEL_WITH_MTP.gguf OUT.gguf          the main model alone (for llama.cpp)
  mtp.py ref MODEL_WITH_MTP.gguf OUT.txt             float64 reference logits of the module
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import tasks
from evaluate import EVAL_KINDS, eval_problems, generate
from export_gguf import VT_U32, _kv, block_tensors, tensor_bytes, write_gguf
from gguf_dump import Reader, read_gguf
from make_ref import gguf_config, load_block, load_gguf_model, pick_example, write_ref
from model import Block, MoE, RMSNorm, rope_tables
from sft import lr_at, update_bias

# The shipped model's training data (train/README.md): the earlier mix and share of 3-digit
# problems, subtraction in the borrow-first form.  The module learns to predict what that model
# writes, so it is trained on the same kind of text.
SHIPPED_MIX = ["add", "add", "sub", "sub", "sub", "mul", "mul", "cmp", "word"]
SHIPPED_HARD_FRAC = 0.5
SHIPPED_SUB_TRACE = "borrow-first"


class MTP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.enorm = RMSNorm(cfg.dim, cfg.eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.eps)
        self.eh_proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)
        self.block = Block(cfg, cfg.n_layers)  # the layer kind of a block past the dense ones
        self.head_norm = RMSNorm(cfg.dim, cfg.eps)

    def moe_layers(self):
        return [self.block.ffn] if isinstance(self.block.ffn, MoE) else []

    def init_from(self, main):
        """Start from the main model's last block and final norm; eh_proj passes hnorm(h)
        through (identity on the hidden half, small random weights on the embedding half)."""
        D = self.cfg.dim
        with torch.no_grad():
            self.block.load_state_dict(main.layers[-1].state_dict())
            self.head_norm.weight.copy_(main.norm.weight)
            nn.init.normal_(self.eh_proj.weight, std=0.02)
            self.eh_proj.weight[:, D:] = torch.eye(D)

    def forward(self, main, h, next_tokens):
        """h [B,T,dim]: main hidden states at positions 0..T-1; next_tokens [B,T]: the token
        after each -> logits [B,T,V] for the token after that."""
        T = h.shape[1]
        dt = h.dtype
        cos, sin = rope_tables(self.cfg, torch.arange(T, device=h.device), dt)
        mask = torch.full((T, T), float("-inf"), device=h.device).triu(1).to(dt)
        x = self.eh_proj(torch.cat([self.enorm(main.embed(next_tokens)), self.hnorm(h)], dim=-1))
        x = self.block(x, cos, sin, mask)
        return main.head(self.head_norm(x))


def load_main(path, dtype=torch.float32):
    model, tok, T = load_gguf_model(path, dtype, with_tensors=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok, T


def load_mtp(path, dtype=torch.float32):
    """(main model, tokenizer, MTP module) from a GGUF with one next-n block."""
    main, tok, T = load_main(path, dtype)
    meta = read_gguf(path)[0]
    if meta.get("deepseek2.nextn_predict_layers", 0) != 1:
        sys.exit(f"{path}: no next-n block (deepseek2.nextn_predict_layers)")
    cfg = main.cfg
    m = MTP(cfg).to(dtype)
    p = f"blk.{cfg.n_layers}."
    with torch.no_grad():
        load_block(m.block, T, p, cfg, cfg.n_layers < cfg.n_dense_layers)
        m.eh_proj.weight.copy_(T[p + "nextn.eh_proj.weight"])
        m.enorm.weight.copy_(T[p + "nextn.enorm.weight"])
        m.hnorm.weight.copy_(T[p + "nextn.hnorm.weight"])
        m.head_norm.weight.copy_(T[p + "nextn.shared_head_norm.weight"])
    m.eval()
    return main, tok, m


def use_shipped_data():
    data.MIX = SHIPPED_MIX
    data.HARD_FRAC = SHIPPED_HARD_FRAC
    tasks.SUB_TRACE = SHIPPED_SUB_TRACE


# ---------------------------------------------------------------------------------------------
# acceptance

@torch.no_grad()
def accept_counts(main, mtp, tok, seqs, starts, batch=64):
    """Teacher-forced over each sequence (prompt + completion ids; starts: index of the first
    completion token).  At every position i whose next token t_{i+1} is a completion token and
    where t_{i+2} exists, the draft is the module's top-1 and the truth the main model's greedy
    token for position i+2 (argmax of its logits at i+1) on the same sequence.
    Returns per sequence (hits, drafts, simulated decode: tokens, main forward passes)."""
    out = []
    for b in range(0, len(seqs), batch):
        chunk, st = seqs[b:b + batch], starts[b:b + batch]
        L = max(len(s) for s in chunk)
        x = torch.full((len(chunk), L), tok.pad, dtype=torch.long)
        for r, s in enumerate(chunk):
            x[r, :len(s)] = torch.tensor(s)
        h = main.hidden(x)
        greedy = main.head(main.norm(h)).argmax(-1)          # greedy[:, j]: main's token j+1
        draft = mtp(main, h[:, :-1], x[:, 1:]).argmax(-1)   # draft[:, i]: module's token i+2
        for r, s in enumerate(chunk):
            lo, hi = st[r] - 1, len(s) - 2                   # draft sources i in [lo, hi)
            ok = (draft[r, lo:hi] == greedy[r, lo + 1:hi + 1]).tolist()
            # speculative decoding at temperature 0 along this sequence: from source i the
            # main model's pass yields t_{i+1}, and t_{i+2} too when the draft matched
            i, toks, passes = lo, 0, 0
            while i < hi:
                passes += 1
                step = 2 if ok[i - lo] else 1
                toks += step
                i += step
            out.append((sum(ok), len(ok), toks, passes))
    return out


def summarise(kinds, counts):
    res = {}
    for k in EVAL_KINDS + ["all"]:
        sel = [c for kk, c in zip(kinds, counts) if k == "all" or kk == k]
        hits, n = sum(c[0] for c in sel), sum(c[1] for c in sel)
        toks, passes = sum(c[2] for c in sel), sum(c[3] for c in sel)
        res[k] = {"acceptance": round(hits / max(n, 1), 4), "drafts": n,
                  "tokens_per_pass": round(toks / max(passes, 1), 3)}
    return res


@torch.no_grad()
def acceptance(main, mtp, tok, seed=7777, n_per_kind=100):
    """On the held-out problems (evaluate.eval_problems): teacher-forced on the reference
    traces, and on the main model's own greedy completions."""
    mtp.eval()
    probs = eval_problems(seed, n_per_kind)
    kinds = [k for k, _ in probs]
    prompts = [tok.encode(tasks.prompt_text(q)) for _, (q, _, _) in probs]
    refs = [p + tok.encode(tasks.completion_text(t, a)) for p, (_, (_, t, a)) in zip(prompts, probs)]
    starts = [len(p) for p in prompts]
    res = {"reference": summarise(kinds, accept_counts(main, mtp, tok, refs, starts))}
    comps = []
    for b in range(0, len(prompts), 250):
        comps += generate(main, tok, prompts[b:b + 250], max_new=110)[0]
    own = [p + c for p, c in zip(prompts, comps)]
    res["greedy"] = summarise(kinds, accept_counts(main, mtp, tok, own, starts))
    mtp.train()
    return res


# ---------------------------------------------------------------------------------------------
# training

def train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    use_shipped_data()
    main, tok, _ = load_main(a.model)
    mtp = MTP(main.cfg)
    if a.init:  # continue from an earlier run's module (a fresh optimizer and schedule)
        mtp.load_state_dict(torch.load(a.init, map_location="cpu", weights_only=False)["state"])
    else:
        mtp.init_from(main)
    decay = [p for p in mtp.parameters() if p.dim() >= 2]
    nodecay = [p for p in mtp.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": nodecay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    # a stream of training problems of its own (seeds 3000+); evaluation uses 7777
    it = data.batches(tok, 3000 + a.seed, a.batch)
    log = {"args": vars(a), "steps": []}
    n_params = sum(p.numel() for p in mtp.parameters())
    print(f"MTP module: {n_params} parameters", flush=True)
    t0 = time.time()
    ema = None
    step = 0
    for step in range(a.steps):
        prog = step / a.steps
        if a.minutes:
            prog = max(prog, (time.time() - t0) / (a.minutes * 60))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, prog, a.lr)
        x, y, valid = next(it)
        with torch.no_grad():
            h = main.hidden(x)
        logits = mtp(main, h[:, :-1], x[:, 1:])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        (a.mtp_lambda * loss).backward()
        torch.nn.utils.clip_grad_norm_(mtp.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            ratios = update_bias(mtp, valid[:, 1:], a.gamma)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % a.log_every == 0 or step == 0:
            rec = {"step": step + 1, "mtp_loss": round(ema, 4), "max_over_mean": [round(r, 2) for r in ratios],
                   "seconds": round(time.time() - t0, 1)}
            log["steps"].append(rec)
            print(json.dumps(rec), flush=True)
        if a.minutes and time.time() - t0 > a.minutes * 60:
            print(f"time limit reached at step {step + 1}", flush=True)
            break
    log["train_seconds"] = round(time.time() - t0, 1)
    log["steps_done"] = step + 1
    log["examples"] = (step + 1) * a.batch
    if a.eval_n:
        t1 = time.time()
        log["acceptance"] = acceptance(main, mtp, tok, n_per_kind=a.eval_n)
        log["eval_seconds"] = round(time.time() - t1, 1)
        print("acceptance:", json.dumps(log["acceptance"]), flush=True)
    torch.save({"config": main.cfg.to_dict(), "state": mtp.state_dict(), "log": log}, a.out)
    print("wrote", a.out, flush=True)


# ---------------------------------------------------------------------------------------------
# export

GGML_SIZE = {0: 4, 1: 2}  # F32, F16: the only types export_gguf.py writes


def raw_kvs(buf):
    """The metadata of a GGUF as (key, serialised entry) in file order, and the reader left at
    the tensor directory."""
    r = Reader(buf)
    r.p = 4
    if r.take("<I") != 3:
        sys.exit("mtp.py: expected a GGUF v3 file")
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    kvs = []
    for _ in range(n_kv):
        start = r.p
        key = r.string()
        r.value(r.take("<I"))
        kvs.append((key, buf[start:r.p]))
    return kvs, n_t


def export(a):
    meta, infos, off, buf = read_gguf(a.model)
    A = "deepseek2."
    if meta.get(A + "nextn_predict_layers", 0):
        sys.exit(f"{a.model} already has a next-n block")
    ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    cfg = gguf_config(meta)
    mtp = MTP(cfg)
    mtp.load_state_dict(ck["state"])
    N = cfg.n_layers
    kvs = []
    for key, entry in raw_kvs(buf)[0]:
        if key == A + "block_count":
            kvs.append(_kv(key, VT_U32, N + 1))
            kvs.append(_kv(A + "nextn_predict_layers", VT_U32, 1))
        else:
            kvs.append(entry)
    tensors = []
    for name, ne, ty, o in infos:  # the main model, byte for byte
        n = GGML_SIZE[ty] * math.prod(ne)
        tensors.append((name, ne, ty, buf[off + o:off + o + n]))
    p = f"blk.{N}.nextn."
    extra = block_tensors(cfg, N, mtp.block) + [
        (p + "eh_proj.weight", mtp.eh_proj.weight, False),
        (p + "enorm.weight", mtp.enorm.weight, True),
        (p + "hnorm.weight", mtp.hnorm.weight, True),
        (p + "shared_head_norm.weight", mtp.head_norm.weight, True)]
    tensors += [(name, *tensor_bytes(t, keep32)) for name, t, keep32 in extra]
    write_gguf(a.out, kvs, tensors)
    # read back: every main tensor unchanged, and the metadata the same but for the two keys
    meta2, infos2, off2, buf2 = read_gguf(a.out)
    for (name, ne, ty, o), (name2, ne2, ty2, o2) in zip(infos, infos2):
        n = GGML_SIZE[ty] * math.prod(ne)
        assert (name, ne, ty) == (name2, ne2, ty2) and buf[off + o:off + o + n] == buf2[off2 + o2:off2 + o2 + n], name
    changed = {k for k in set(meta) | set(meta2) if meta.get(k) != meta2.get(k)}
    assert changed == {A + "block_count", A + "nextn_predict_layers"}, changed
    grow = os.path.getsize(a.out) - os.path.getsize(a.model)
    print(f"wrote {a.out}: {len(infos)} main tensors unchanged, {len(extra)} next-n tensors in blk.{N}, "
          f"+{grow} bytes ({os.path.getsize(a.model)} -> {os.path.getsize(a.out)})")


def strip(a):
    """The main model alone: the next-n blocks and their metadata removed.  Of a file that
    export() wrote, this gives back its input byte for byte."""
    meta, infos, off, buf = read_gguf(a.model)
    A = "deepseek2."
    n_main = gguf_config(meta).n_layers
    kvs = []
    for key, entry in raw_kvs(buf)[0]:
        if key == A + "block_count":
            kvs.append(_kv(key, VT_U32, n_main))
        elif key != A + "nextn_predict_layers":
            kvs.append(entry)
    tensors = []
    for name, ne, ty, o in infos:
        if name.startswith("blk.") and int(name.split(".")[1]) >= n_main:
            continue
        tensors.append((name, ne, ty, buf[off + o:off + o + GGML_SIZE[ty] * math.prod(ne)]))
    write_gguf(a.out, kvs, tensors)
    print(f"wrote {a.out}: {len(tensors)} tensors, {len(infos) - len(tensors)} next-n tensors left out")


@torch.no_grad()
def make_mtp_ref(a):
    """Reference MTP logits in float64 from the exported weights, for a runtime's test: one
    teacher-forced sequence (the example make_ref.py uses for the main model); at position i
    the module reads the main model's h_i and token i+1 and predicts token i+2."""
    use_shipped_data()
    main, tok, mtp = load_mtp(a.model, torch.float64)

    class Both(nn.Module):  # the main model and the module, for make_ref.routing_margin
        def moe_layers(self):
            return main.moe_layers() + mtp.moe_layers()

        def forward(self, x):
            h = main.hidden(x)
            return mtp(main, h[:, :-1], x[:, 1:])

    text, ids, x, margin = pick_example(Both(), tok, a.example_seed)
    logits = Both()(x)[0]
    pos = [int(p) % (len(ids) - 2) for p in a.positions.split(",")]
    write_ref(a.out, ["edgeseek default model: reference MTP (next-n) logits of train/mtp.py (float64) on",
                      "the exported GGUF's weights; row POS: drafted from position POS's hidden state and",
                      "token POS+1, predicting token POS+2.  Written by train/mtp.py ref",
                      f"text: {text!r}", f"smallest routing margin {margin:.3g} (main layers and the module)"],
              main.cfg.vocab_size, ids, pos, "mtp_logits", logits)
    top = logits.argmax(-1)
    agree = sum(int(top[i]) == ids[i + 2] for i in range(len(ids) - 2))
    print(f"wrote {a.out}: {len(ids)} tokens, positions {pos}; the module's top-1 equals token i+2 "
          f"at {agree} of {len(ids) - 2} positions")


def accept_main(a):
    torch.set_num_threads(a.threads)
    use_shipped_data()
    main, tok, mtp = load_mtp(a.model)
    res = acceptance(main, mtp, tok, seed=a.seed, n_per_kind=a.n)
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("model")
    t.add_argument("out")
    t.add_argument("--steps", type=int, default=100000)
    t.add_argument("--minutes", type=float, default=25)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--mtp-lambda", type=float, default=0.3, help="MTP loss weight (V3: 0.3, then 0.1)")
    t.add_argument("--gamma", type=float, default=0.003, help="bias update speed of the module's MoE")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--eval-n", type=int, default=100, help="held-out problems per type; 0 = none")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--init", help="start from this checkpoint's module instead of the main model's last block")
    e = sub.add_parser("export")
    e.add_argument("model")
    e.add_argument("ckpt")
    e.add_argument("out")
    s = sub.add_parser("strip")
    s.add_argument("model")
    s.add_argument("out")
    r = sub.add_parser("ref")
    r.add_argument("model")
    r.add_argument("out")
    r.add_argument("--positions", default="0,5,17,40,-1")
    r.add_argument("--example-seed", type=int, default=11)
    c = sub.add_parser("accept")
    c.add_argument("model")
    c.add_argument("--n", type=int, default=100, help="problems per type")
    c.add_argument("--seed", type=int, default=7777)
    c.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    {"train": train, "export": export, "strip": strip, "ref": make_mtp_ref, "accept": accept_main}[a.cmd](a)


if __name__ == "__main__":
    main()
