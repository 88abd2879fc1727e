#!/bin/sh
# compare_llama.sh — edgeseek against llama.cpp on the same GGUF file(s):
# prompt processing (ppN) and generation (tgN, also after a prefilled
# context with -d) side by side with the ratio, then each tool's peak RSS
# and warm load time.
#
# usage: LLAMA_CPP_DIR=DIR bench/compare_llama.sh [-t THREADS] [-p LIST] [-n LIST]
#                                               [-d LIST] [-r REPS] MODEL.gguf...
#   LLAMA_CPP_DIR  a llama.cpp build directory: llama-bench and llama-completion
#                  in it or in its bin/ (built separately, never in this tree)
#   EDGESEEK       the edgeseek binary (default: build/edgeseek of this checkout)
#   LLAMA_FA       llama.cpp flash attention (default on)
# Defaults: -t 2 -p 64 -n 32 -d 0,512 -r 3.  llama.cpp runs with its own
# defaults otherwise (repacking included).  Needs python3 and /usr/bin/time.
#
# Peak RSS: llama-bench's from /usr/bin/time -v; edgeseek's is the VmHWM it
# reports itself, because its bandwidth probe runs in a child process whose
# buffer /usr/bin/time would add.  Warm load: the file is read before each
# tool runs, so the page cache holds it; llama.cpp's figure is its own "load time"
# (from llama-completion, which counts up to the first evaluation of a
# one-token prompt), edgeseek's is load + session set-up from its bench.
set -eu

threads=2 pp=64 tg=32 depth=0,512 reps=3
while [ $# -gt 0 ]; do
    case "$1" in
    -t) threads=$2; shift 2 ;;
    -p) pp=$2; shift 2 ;;
    -n) tg=$2; shift 2 ;;
    -d) depth=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "compare_llama.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "compare_llama.sh: no model given (see --help)" >&2; exit 2; }
[ -n "${LLAMA_CPP_DIR:-}" ] || { echo "compare_llama.sh: set LLAMA_CPP_DIR to a llama.cpp build directory" >&2; exit 2; }

find_bin() {
    for d in "$LLAMA_CPP_DIR/bin" "$LLAMA_CPP_DIR"; do
        [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    echo "compare_llama.sh: no $1 under $LLAMA_CPP_DIR" >&2
    exit 2
}
LB=$(find_bin llama-bench)
LC=$(find_bin llama-completion)
here=$(cd "$(dirname "$0")/.." && pwd)
ES=${EDGESEEK:-$here/build/edgeseek}
[ -x "$ES" ] || { echo "compare_llama.sh: $ES is not built (make)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "compare_llama.sh: needs /usr/bin/time (Debian package time)" >&2; exit 2; }
FA=${LLAMA_FA:-on}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
for model in "$@"; do
    [ -r "$model" ] || { echo "compare_llama.sh: cannot read $model" >&2; exit 1; }
    echo
    echo "== $model ($(du -h "$model" | cut -f1)), $threads threads"
    # each tool starts with the file in the page cache: llama.cpp's repacked
    # copy can push the file's pages out while it runs
    cat "$model" > /dev/null
    /usr/bin/time -v -o "$tmp/lb.time" "$LB" -m "$model" -t "$threads" -p "$pp" -n "$tg" -d "$depth" \
        -r "$reps" -fa "$FA" -o json > "$tmp/lb.json" 2> "$tmp/lb.err" ||
        { echo "llama-bench failed:"; tail -20 "$tmp/lb.err"; exit 1; }
    cat "$model" > /dev/null
    "$LC" -m "$model" -t "$threads" -p "hi" -n 1 -no-cnv --no-warmup -c 256 -fa "$FA" \
        < /dev/null > /dev/null 2> "$tmp/lc.err" || true
    cat "$model" > /dev/null
    "$ES" bench -m "$model" -t "$threads" -p "$pp" -n "$tg" -d "$depth" -r "$reps" --json \
        > "$tmp/es.json" 2> "$tmp/es.err" ||
        { echo "edgeseek bench failed:"; tail -20 "$tmp/es.err"; exit 1; }

    python3 - "$tmp" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, re, sys
tmp, load = sys.argv[1], sys.argv[2]
lb = json.load(open(tmp + "/lb.json"))
es = json.load(open(tmp + "/es.json"))
def name(p, g, d):
    s = "pp%d" % p if p else "tg%d" % g
    return s + (" @ d%d" % d if d else "")
L = {(r["n_prompt"], r["n_gen"], r["n_depth"]): r for r in lb}
E = {(r["n_prompt"], r["n_gen"], r["n_depth"]): r for r in es["results"]}
commit = lb[0].get("build_commit", "?") if lb else "?"
print("llama.cpp %s (build %s), %s; edgeseek %s kernels, %s" % (
    commit, lb[0].get("build_number", "?") if lb else "?", lb[0].get("cpu_info", "") if lb else "",
    es["simd"], es["numa"]))
print("| test | llama.cpp t/s | edgeseek t/s | edgeseek / llama.cpp | edgeseek % of read BW |")
print("| ---: | ---: | ---: | ---: | ---: |")
for k in sorted(set(L) | set(E), key=lambda k: (k[2], k[1] > 0, k[0], k[1])):
    l, e = L.get(k), E.get(k)
    ls = "%.2f ± %.2f" % (l["avg_ts"], l["stddev_ts"]) if l else "-"
    esr = "%.2f ± %.2f" % (e["avg_ts"], e["stddev_ts"]) if e else "-"
    ratio = "%.2fx" % (e["avg_ts"] / l["avg_ts"]) if l and e and l["avg_ts"] > 0 else "-"
    bw = "%.0f%%" % (100 * e["bandwidth_fraction"]) if e and e.get("bandwidth_fraction") else "-"
    print("| %s | %s | %s | %s | %s |" % (name(*k), ls, esr, ratio, bw))
t = open(tmp + "/lb.time").read()
m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)
lrss = int(m.group(1)) * 1024 if m else 0
m = re.search(r"load time =\s*([\d.]+) ms", open(tmp + "/lc.err", errors="replace").read())
lload = float(m.group(1)) / 1000 if m else float("nan")
fb = es["file_bytes"]
print("peak RSS: llama.cpp %.2f GiB (%.2fx the file), edgeseek %.2f GiB (%.2fx the file)" % (
    lrss / 2**30, lrss / fb if fb else 0, es["peak_rss_bytes"] / 2**30, es["peak_rss_bytes"] / fb if fb else 0))
print("warm load: llama.cpp %.2f s, edgeseek %.2f s" % (lload, es["load_s"]))
tr = es["decode_traffic"]
print("edgeseek decode reads %.3f GB of weights per token; read bandwidth %.1f GB/s (%d threads)" % (
    tr["weights"] / 1e9, max([r["bandwidth_bytes_per_s"] for r in es["results"]] + [0]) / 1e9,
    es["results"][0]["threads"] if es["results"] else 0))
print("load average after: %s" % load)
EOF
done
