"""Byte-level BPE tokenizer for the default model, laid out as llama.cpp's "gpt2" model with
the "deepseek-v3" pre-tokenizer, so that edgeseek (and llama.cpp) produce the same ids from the
GGUF metadata alone.

Vocabulary: the 256 byte tokens (GPT-2 byte->unicode mapping), then merged tokens, then the
special tokens.  Merges are learned only inside chunks made of letters (optionally with one
leading space), never across digits, punctuation or newlines.  That keeps the BPE trivially
consistent between this Python implementation and the C runtime: digits always stay single
tokens (the pre-tokenizer splits digit runs into groups of up to 3 and no merge joins digits).

The pre-tokenizer below is the deepseek-v3 regex restricted to ASCII (all training text is
ASCII); `assert_ascii` guards that assumption.
"""
import json
import re

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
THINK_END = "</think>"
# (text, GGUF token type): 3 = control, 4 = user-defined (matches DeepSeek-V3 / R1's vocab)
SPECIALS = [(BOS, 3), (EOS, 3), (PAD, 3), (USER, 4), (ASSISTANT, 4), (THINK, 4), (THINK_END, 4)]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character mapping."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {v: k for k, v in BYTE_ENC.items()}

# deepseek-v3 pre-tokenizer, ASCII form.  Stage 1 isolates digit runs of 1-3 (\p{N}{1,3});
# stage 2 (CJK) never matches ASCII; stage 3 is the GPT-4-like split:
#   [punct][A-Za-z]+ | [^\r\n letters punct]?letters+ | ' '?punct+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
_P = r"""!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~"""
_RE_DIGITS = re.compile(r"[0-9]{1,3}")
_RE_MAIN = re.compile(
    r"[" + _P + r"][A-Za-z]+"
    r"|[^\r\nA-Za-z" + _P + r"]?[A-Za-z]+"
    r"| ?[" + _P + r"]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+")


def _split_keep(regex, text):
    """Split into matches and the text between them (llama.cpp's unicode_regex_split)."""
    out, pos = [], 0
    for m in regex.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        out.append(m.group())
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def pretokenize(text):
    assert_ascii(text)
    chunks = []
    for piece in _split_keep(_RE_DIGITS, text):
        chunks.extend(_split_keep(_RE_MAIN, piece))
    return chunks


def assert_ascii(text):
    if any(ord(c) > 127 for c in text):
        raise ValueError("the training tokenizer handles ASCII text only: %r" % text)


def _is_word_chunk(chunk):
    return re.fullmatch(r" ?[A-Za-z]+", chunk) is not None


class Tokenizer:
    def __init__(self, tokens, merges, types):
        self.tokens = tokens
        self.merges = merges
        self.types = types
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.special = {t: self.ids[t] for t, _ in SPECIALS}
        self.bos, self.eos, self.pad = self.ids[BOS], self.ids[EOS], self.ids[PAD]
        self._cache = {}
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t, _ in SPECIALS) + ")")

    @staticmethod
    def build(corpus_texts, n_merges=160):
        """Learns up to n_merges merges on the word chunks of the corpus."""
        counts = {}
        for text in corpus_texts:
            for part in re.split(r"<[^>]*>", text):  # specials never take part in merges
                for ch in pretokenize(part):
                    if _is_word_chunk(ch):
                        w = tuple(BYTE_ENC[b] for b in ch.encode())
                        counts[w] = counts.get(w, 0) + 1
        merges = []
        words = dict(counts)
        for _ in range(n_merges):
            pairs = {}
            for w, c in words.items():
                for a, b in zip(w, w[1:]):
                    pairs[(a, b)] = pairs.get((a, b), 0) + c
            if not pairs:
                break
            best = max(sorted(pairs), key=lambda p: pairs[p])  # deterministic tie-break
            if pairs[best] < 2:
                break
            merges.append(best)
            nw = {}
            for w, c in words.items():
                out, i = [], 0
                while i < len(w):
                    if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                        out.append(w[i] + w[i + 1])
                        i += 2
                    else:
                        out.append(w[i])
                        i += 1
                nw[tuple(out)] = nw.get(tuple(out), 0) + c
            words = nw
        tokens = [BYTE_ENC[b] for b in range(256)]
        types = [1] * 256
        for a, b in merges:
            if a + b not in tokens:
                tokens.append(a + b)
                types.append(1)
        for t, ty in SPECIALS:
            tokens.append(t)
            types.append(ty)
        return Tokenizer(tokens, [a + " " + b for a, b in merges], types)

    def _bpe(self, chunk):
        if chunk in self._cache:
            return self._cache[chunk]
        parts = [BYTE_ENC[b] for b in chunk.encode()]
        while len(parts) > 1:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        ids = [self.ids[p] for p in parts]
        self._cache[chunk] = ids
        return ids

    def encode(self, text, add_bos=False):
        """Special tokens are matched whole (parse_special); the rest goes through BPE."""
        ids = [self.bos] if add_bos else []
        for part in self._special_re.split(text):
            if not part:
                continue
            if part in self.special:
                ids.append(self.special[part])
            else:
                for ch in pretokenize(part):
                    ids.extend(self._bpe(ch))
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.tokens[i]
            if self.types[i] != 1:
                out += t.encode()
            else:
                out += bytes(BYTE_DEC[c] for c in t)
        return out.decode("utf-8", errors="replace")

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"tokens": self.tokens, "merges": self.merges, "types": self.types}, f,
                      ensure_ascii=False)

    @staticmethod
    def load(path):
        with open(path) as f:
            d = json.load(f)
        return Tokenizer(d["tokens"], d["merges"], d["types"])
