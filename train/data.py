"""Training data: the tokenizer built from a sample of the task corpus, and batches of
tokenised chat examples with a loss mask over the assistant's part."""
import torch

import tasks
from tokenizer import Tokenizer

# Mixture of task types in supervised training (and in RL prompts): weighted towards the
# three evaluated operations; subtraction carries the longest traces, so it gets the largest
# share.  Comparison and word problems stay in, with less weight.
MIX = ["add"] * 3 + ["sub"] * 4 + ["mul"] * 3 + ["cmp", "word"]
# The mix the tokenizer's corpus is drawn from: fixed, so that the BPE merges (and the token
# ids) do not change when the training mix is tuned.
TOKENIZER_MIX = ["add", "add", "sub", "sub", "sub", "mul", "mul", "cmp", "word"]
# Share of training problems drawn at the evaluation size (3-digit operands); the rest come
# from the 1-3 digit mix, so short cases are seen too.
HARD_FRAC = 0.75


def build_tokenizer(seed=1, n=4000):
    rng = tasks.Rng(seed)
    texts = []
    for _ in range(n):
        kind = TOKENIZER_MIX[rng.rand(len(TOKENIZER_MIX))]
        q, t, a = tasks.make_problem(rng, kind, hard=False)
        texts.append(tasks.prompt_text(q) + tasks.completion_text(t, a))
    return Tokenizer.build(texts)


def sample_problem(rng, hard_frac=None):
    """One training problem: a share hard_frac (HARD_FRAC unless given) drawn at the held-out
    evaluation size (3-digit operands), the rest from the 1-3 digit mix."""
    if hard_frac is None:
        hard_frac = HARD_FRAC
    kind = MIX[rng.rand(len(MIX))]
    hard = rng.rand(1000) < int(hard_frac * 1000)
    return kind, tasks.make_problem(rng, kind, hard)


def encode_example(tok, question, think_lines, answer):
    p = tok.encode(tasks.prompt_text(question))
    c = tok.encode(tasks.completion_text(think_lines, answer))
    return p, c


def make_batch(tok, examples):
    """examples: list of (prompt ids, completion ids) -> tokens [B,T], targets [B,T] (-100 where
    no loss: prompt, padding), valid [B,T] (non-padding inputs)."""
    T = max(len(p) + len(c) for p, c in examples) - 1
    B = len(examples)
    x = torch.full((B, T), tok.pad, dtype=torch.long)
    y = torch.full((B, T), -100, dtype=torch.long)
    valid = torch.zeros((B, T), dtype=torch.bool)
    for i, (p, c) in enumerate(examples):
        seq = p + c
        n = len(seq) - 1
        x[i, :n] = torch.tensor(seq[:-1])
        tgt = torch.tensor(seq[1:])
        tgt[:len(p) - 1] = -100
        y[i, :n] = tgt
        valid[i, :n] = True
    return x, y, valid


def pool_batches(tok, rng, batch_size, pool_factor=8):
    """One pool of examples, sorted by length (to cut padding) and cut into shuffled batches."""
    pool = []
    for _ in range(batch_size * pool_factor):
        _, (q, t, a) = sample_problem(rng)
        pool.append(encode_example(tok, q, t, a))
    pool.sort(key=lambda e: len(e[0]) + len(e[1]))
    groups = [pool[i:i + batch_size] for i in range(0, len(pool), batch_size)]
    order = [rng.rand(1 << 30) for _ in groups]
    return [make_batch(tok, groups[g]) for _, g in sorted(zip(order, range(len(groups))))]


_worker = {}


def _init_worker(batch_size, seed):
    torch.set_num_threads(1)
    _worker.update(tok=build_tokenizer(), batch_size=batch_size, seed=seed)


def _work(i):
    rng = tasks.Rng(_worker["seed"] * 1000003 + i)
    return [tuple(t.numpy() for t in b) for b in pool_batches(_worker["tok"], rng, _worker["batch_size"])]


def batches(tok, seed, batch_size, workers=0):
    """Endless batches of training problems.  With workers > 0 (a GPU run, where Python data
    generation would be the bottleneck) pools are made in worker processes."""
    if workers <= 0:
        rng = tasks.Rng(seed)
        while True:
            yield from pool_batches(tok, rng, batch_size)
    import itertools
    import multiprocessing as mp
    with mp.get_context("fork").Pool(workers, _init_worker, (batch_size, seed)) as pool:
        for bs in pool.imap(_work, itertools.count(), chunksize=1):
            for b in bs:
                yield tuple(torch.from_numpy(t) for t in b)
