"""Dump a GGUF file's metadata and tensor directory (debugging aid for the export).

Usage: python3 train/gguf_dump.py FILE [--all]   (--all prints whole arrays)
"""
import struct
import sys

TYPE_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
GGML_TYPES = {0: "F32", 1: "F16", 8: "Q8_0", 30: "BF16"}


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.p:self.p + n]
        self.p += n
        return s.decode("utf-8", errors="replace")

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et = self.take("<I")
            n = self.take("<Q")
            return [self.value(et) for _ in range(n)]
        return self.take(TYPE_FMT[t])


def read_gguf(path):
    """Returns (metadata dict, tensor list of (name, shape ne[], type, offset), data_offset, bytes)."""
    data = open(path, "rb").read()
    r = Reader(data)
    assert data[:4] == b"GGUF", "not a GGUF file"
    r.p = 4
    version = r.take("<I")
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    meta = {"__version__": version}
    for _ in range(n_kv):
        k = r.string()
        meta[k] = r.value(r.take("<I"))
    tensors = []
    for _ in range(n_t):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        tensors.append((name, ne, r.take("<I"), r.take("<Q")))
    align = meta.get("general.alignment", 32)
    off = (r.p + align - 1) // align * align
    return meta, tensors, off, data


def main():
    meta, tensors, off, _ = read_gguf(sys.argv[1])
    full = "--all" in sys.argv
    for k, v in meta.items():
        if isinstance(v, list) and not full and len(v) > 8:
            v = f"[{len(v)} items] {v[:8]} ..."
        print(f"{k} = {v}")
    print(f"data offset {off}, {len(tensors)} tensors")
    for name, ne, t, o in tensors:
        print(f"  {name:32s} ne={ne} {GGML_TYPES.get(t, t)} off={o}")


if __name__ == "__main__":
    main()
