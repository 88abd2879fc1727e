"""Procedurally generated, verifiable arithmetic tasks with step-by-step reasoning traces.

The same generator and checker are implemented in C in cli/arith.c (held-out evaluation):
the random number generator is splitmix64 and every draw below is mirrored there, so the same
seed yields the same problems in both.  Keep the two in step when changing anything here.

Chat format of one training example (the model generates everything after <｜Assistant｜>):
  <｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\n{steps}</think>\n\n{answer}<｜end▁of▁sentence｜>
Each step is one line ending in "\n".  Traces work digit by digit from the least significant:
  add  "7+5+0=12"          digit + digit + carry = result (carry = result's tens digit)
  sub  "3=3" / "4<8"       compare from the most significant digit (padded with 0)
       "347<385"           summary, then "385-347" (larger on top), then per digit
       "5-7-0=-2+10=8"     digit - digit - borrow_in = signed difference; when negative, +10
                           gives the digit and the next line borrows (SUB_TRACE below)
  mul  "7*8+0=56"          digit * multiplier + carry = result
  cmp  the comparison lines of sub and the summary line
  word the expression line (e.g. "23+45"), then the trace of that operation
"""

from tokenizer import BOS, EOS, USER, ASSISTANT, THINK, THINK_END

MASK64 = (1 << 64) - 1


class Rng:
    """splitmix64; rand(n) = next() % n (the small modulo bias is mirrored in C)."""

    def __init__(self, seed):
        self.s = seed & MASK64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def rand(self, n):
        return self.next() % n

    def range(self, lo, hi):  # inclusive
        return lo + self.rand(hi - lo + 1)


def digits_lsb(x, n):
    return [(x // 10 ** i) % 10 for i in range(n)]


def trace_add(a, b):
    n = max(len(str(a)), len(str(b)))
    da, db = digits_lsb(a, n), digits_lsb(b, n)
    lines, c = [], 0
    for i in range(n):
        r = da[i] + db[i] + c
        lines.append(f"{da[i]}+{db[i]}+{c}={r}")
        c = r // 10
    return lines


def trace_cmp(a, b):
    n = max(len(str(a)), len(str(b)))
    da, db = digits_lsb(a, n), digits_lsb(b, n)
    lines = []
    for i in reversed(range(n)):
        if da[i] == db[i]:
            lines.append(f"{da[i]}={db[i]}")
        else:
            lines.append(f"{da[i]}{'<' if da[i] < db[i] else '>'}{db[i]}")
            break
    rel = "<" if a < b else (">" if a > b else "=")
    lines.append(f"{a}{rel}{b}")
    return lines


# How a subtraction's digit lines are written (sft.py --sub-trace):
#   "signed"        "7-8-0=-1+10=9": digit - digit - borrow = the signed difference, and when
#                   that is negative, +10 gives the digit and the next line borrows 1.  Every
#                   token follows from tokens already written.
#   "borrow-first"  "17-8-0=9": a leading 1 marks a borrow.  The model must decide on the
#                   borrow at the line's first token, before it has written either digit; most
#                   subtraction errors of the small CPU model were that decision.  The shipped
#                   GPU model was trained with this form.
SUB_TRACES = ("signed", "borrow-first")
SUB_TRACE = "signed"


def trace_sub(a, b):
    lines = trace_cmp(a, b)
    x, y = (a, b) if a >= b else (b, a)
    lines.append(f"{x}-{y}")
    n = len(str(x))
    dx, dy = digits_lsb(x, n), digits_lsb(y, n)
    br = 0
    for i in range(n):
        r = dx[i] - dy[i] - br
        if SUB_TRACE == "signed":
            lines.append(f"{dx[i]}-{dy[i]}-{br}={r}" + (f"+10={r + 10}" if r < 0 else ""))
        else:
            lines.append(f"{'1' if r < 0 else ''}{dx[i]}-{dy[i]}-{br}={r % 10}")
        br = 1 if r < 0 else 0
    return lines


def trace_mul(a, b):
    n = len(str(a))
    da = digits_lsb(a, n)
    lines, c = [], 0
    for i in range(n):
        r = da[i] * b + c
        lines.append(f"{da[i]}*{b}+{c}={r}")
        c = r // 10
    return lines


NAMES = ["Tom", "Anna", "Ben", "Mia", "Sam", "Lily"]
ITEMS = ["apples", "pens", "books", "coins", "cards", "stamps"]

TASK_TYPES = ["add", "sub", "mul", "cmp", "word"]


def rand_num(rng, max_digits):
    """A number with 1..max_digits digits, lengths equally likely."""
    nd = rng.range(1, max_digits)
    return rng.range(0 if nd == 1 else 10 ** (nd - 1), 10 ** nd - 1)


def make_problem(rng, kind, hard):
    """Returns (question, think_lines, answer string).  hard=True draws the held-out evaluation
    sizes (3-digit operands, multiplier 2..9); hard=False draws the training mix of 1-3 digits."""
    three = (lambda: rng.range(100, 999)) if hard else (lambda: rand_num(rng, 3))
    if kind in ("add", "sub", "mul"):
        a = three()
        b = (rng.range(2, 9) if hard else rng.range(0, 9)) if kind == "mul" else three()
        sp = " " if rng.rand(2) else ""  # "What is 12+34?" or "What is 12 + 34?"
        op = {"add": "+", "sub": "-", "mul": "*"}[kind]
        q = f"What is {a}{sp}{op}{sp}{b}?"
        if kind == "add":
            return q, trace_add(a, b), str(a + b)
        if kind == "sub":
            return q, trace_sub(a, b), str(a - b)
        return q, trace_mul(a, b), str(a * b)
    if kind == "cmp":
        a, b = three(), three()
        return f"Which is larger, {a} or {b}?", trace_cmp(a, b), str(max(a, b))
    if kind == "word":
        name, item = NAMES[rng.rand(len(NAMES))], ITEMS[rng.rand(len(ITEMS))]
        op = rng.rand(3)
        if op == 0:
            a, b = three(), three()
            q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
            return q, [f"{a}+{b}"] + trace_add(a, b), str(a + b)
        if op == 1:
            a, b = three(), three()
            if a < b:
                a, b = b, a
            q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
            return q, [f"{a}-{b}"] + trace_sub(a, b), str(a - b)
        a, b = three(), rng.range(2, 9)
        q = f"There are {b} boxes with {a} {item} in each box. How many {item} are there?"
        return q, [f"{a}*{b}"] + trace_mul(a, b), str(a * b)
    raise ValueError(kind)


def prompt_text(question):
    return f"{BOS}{USER}{question}{ASSISTANT}"


def completion_text(think_lines, answer):
    steps = "".join(line + "\n" for line in think_lines)
    return f"{THINK}\n{steps}{THINK_END}\n\n{answer}{EOS}"


def parse_answer(completion):
    """The final answer of a generated completion, or None when the format is broken.
    Format: "<think>\n" ... "</think>\n\n" then an optionally negative integer, then EOS
    (a completion cut off before EOS counts as broken)."""
    if not completion.startswith(THINK + "\n"):
        return None
    end = completion.find(THINK_END + "\n\n")
    if end < 0 or not completion.endswith(EOS):
        return None
    ans = completion[end + len(THINK_END) + 2:-len(EOS)]
    body = ans[1:] if ans.startswith("-") else ans
    if not body.isdigit() or len(body) > 12:
        return None
    return ans


def check(completion, answer):
    """(correct, well_formed)"""
    got = parse_answer(completion)
    if got is None:
        return False, False
    return int(got) == int(answer), True


if __name__ == "__main__":
    r = Rng(7)
    for k in TASK_TYPES:
        q, t, a = make_problem(r, k, True)
        print(prompt_text(q) + completion_text(t, a))
