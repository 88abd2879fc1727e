#!/bin/sh
# compare_llama.sh — edgeseek against llama.cpp (and, optionally,
# ik_llama.cpp) on the same GGUF file(s): prompt processing (ppN) and
# generation (tgN), also after a prefilled context (-d), the engines
# interleaved round by round because these machines are noisy.
#
# usage: LLAMA_CPP_DIR=DIR [IK_LLAMA_CPP_DIR=DIR] bench/compare_llama.sh
#            [-t THREADS] [-p LIST] [-n LIST] [-d LIST] [-r ROUNDS] [-k TYPE] MODEL.gguf...
#   -k TYPE           the KV cache type of every engine: edgeseek --kv-type TYPE, llama-bench
#                     -ctk TYPE (f32, f16, bf16, q8_0; default: each engine's own, f16 for both)
#   LLAMA_CPP_DIR     a llama.cpp build directory with llama-bench in it or in
#                     its bin/ (built separately, never in this tree)
#   IK_LLAMA_CPP_DIR  an ik_llama.cpp build, run with its recommended
#                     DeepSeek flags (IK_FLAGS, default "-mla 3 -fa 1 -fmoe 1")
#   EDGESEEK          the edgeseek binary (default: build/edgeseek of this checkout)
#   LLAMA_FA          llama.cpp's flash attention (default 1)
#   EDGESEEK_SIMD     as for edgeseek itself: forces a kernel path (avx2, ...)
#   LLAMA_COMMIT, IK_COMMIT  the commit to print when a build does not know its own
#                     (built from an archive rather than a git checkout)
# Defaults: -t 2 -p 64 -n 32 -d 0,512 -r 5.
#
# Each round runs every engine once over all the tests (one repetition
# each), in an order that rotates from round to round, with the model read
# into the page cache before each engine starts.  The table gives each
# engine's median over the rounds and edgeseek's ratio to the others:
# the ratio of the medians and, in brackets, the range of the per-round
# ratios.  The header records the CPU model, edgeseek's kernel path, the
# llama.cpp commit(s) and the load average before and after.  Needs python3.
set -eu

threads=2 pp=64 tg=32 depth=0,512 rounds=5 ctk=
while [ $# -gt 0 ]; do
    case "$1" in
    -t) threads=$2; shift 2 ;;
    -p) pp=$2; shift 2 ;;
    -n) tg=$2; shift 2 ;;
    -d) depth=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -k) ctk=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    -*) echo "compare_llama.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "compare_llama.sh: no model given (see --help)" >&2; exit 2; }
[ -n "${LLAMA_CPP_DIR:-}" ] || { echo "compare_llama.sh: set LLAMA_CPP_DIR to a llama.cpp build directory" >&2; exit 2; }
case "$rounds" in ''|*[!0-9]*|0) echo "compare_llama.sh: -r wants a positive count" >&2; exit 2 ;; esac

find_bin() { # DIR NAME
    for d in "$1/bin" "$1"; do
        [ -x "$d/$2" ] && { echo "$d/$2"; return 0; }
    done
    echo "compare_llama.sh: no $2 under $1" >&2
    exit 2
}
LB=$(find_bin "$LLAMA_CPP_DIR" llama-bench)
IK=""
[ -n "${IK_LLAMA_CPP_DIR:-}" ] && IK=$(find_bin "$IK_LLAMA_CPP_DIR" llama-bench)
IK_FLAGS=${IK_FLAGS:--mla 3 -fa 1 -fmoe 1}
here=$(cd "$(dirname "$0")/.." && pwd)
ES=${EDGESEEK:-$here/build/edgeseek}
[ -x "$ES" ] || { echo "compare_llama.sh: $ES is not built (make)" >&2; exit 2; }
command -v python3 > /dev/null || { echo "compare_llama.sh: needs python3" >&2; exit 2; }
FA=${LLAMA_FA:-1}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "machine: $cpu, $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
engines="llama edgeseek"
[ -n "$IK" ] && engines="llama ik edgeseek"
n_eng=$(echo $engines | wc -w)

# the cache type, as each engine spells it
es_kv="" ll_kv=""
[ -n "$ctk" ] && es_kv="--kv-type $ctk" ll_kv="-ctk $ctk"

run_engine() { # ENGINE MODEL OUT [--no-bw]
    cat "$2" > /dev/null
    # shellcheck disable=SC2086 # es_kv, ll_kv: an option and its value, or nothing
    case "$1" in
    llama) "$LB" -m "$2" -t "$threads" -p "$pp" -n "$tg" -d "$depth" -r 1 -fa "$FA" $ll_kv -o json > "$3" 2> "$3.err" ;;
    # shellcheck disable=SC2086 # IK_FLAGS is a list of flags
    # its llama-bench has no -d: ik_llama.cpp runs the depth-0 tests only
    ik) "$IK" -m "$2" -t "$threads" -p "$pp" -n "$tg" -r 1 $IK_FLAGS $ll_kv -o json > "$3" 2> "$3.err" ;;
    # the bandwidth probe once, in the first round
    edgeseek) "$ES" bench -m "$2" -t "$threads" -p "$pp" -n "$tg" -d "$depth" -r 1 $es_kv --json ${4:-} > "$3" 2> "$3.err" ;;
    esac || { echo "$1 failed on $2:"; tail -20 "$3.err"; exit 1; }
}

for model in "$@"; do
    [ -r "$model" ] || { echo "compare_llama.sh: cannot read $model" >&2; exit 1; }
    echo
    echo "== $model ($(du -h "$model" | cut -f1)), $threads threads, $rounds rounds, KV cache ${ctk:-each engine's default}"
    r=0
    while [ "$r" -lt "$rounds" ]; do
        # rotate the order: round r starts with engine r mod n
        k=$((r % n_eng))
        i=0
        order=""
        for e in $engines; do
            [ "$i" -ge "$k" ] && order="$order $e"
            i=$((i + 1))
        done
        i=0
        for e in $engines; do
            [ "$i" -lt "$k" ] && order="$order $e"
            i=$((i + 1))
        done
        bw=--no-bw
        [ "$r" -eq 0 ] && bw=""
        for e in $order; do run_engine "$e" "$model" "$tmp/$e.$r.json" $bw; done
        r=$((r + 1))
    done
    python3 - "$tmp" "$rounds" "$engines" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, os, statistics, sys
tmp, rounds, engines, load = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4]
def key(r): return (r["n_prompt"], r["n_gen"], r.get("n_depth", 0))
def name(k):
    p, g, d = k
    return ("pp%d" % p if p else "tg%d" % g) + (" @ d%d" % d if d else "")
runs = {e: [] for e in engines}   # engine -> per round {test: t/s}
meta = {}
for e in engines:
    for r in range(rounds):
        js = json.load(open("%s/%s.%d.json" % (tmp, e, r)))
        rows = js["results"] if e == "edgeseek" else js
        runs[e].append({key(x): x["avg_ts"] for x in rows})
        if e != "edgeseek" and rows:
            c = rows[0].get("build_commit", "unknown")
            if c in ("unknown", "") and os.environ.get({"llama": "LLAMA_COMMIT", "ik": "IK_COMMIT"}[e]):
                c = os.environ[{"llama": "LLAMA_COMMIT", "ik": "IK_COMMIT"}[e]]
            meta[e] = "%s commit %s" % ({"llama": "llama.cpp", "ik": "ik_llama.cpp"}[e], c)
        elif e == "edgeseek":
            meta[e] = "edgeseek %s kernels, %s" % (js["simd"], js["numa"])
print("; ".join(meta[e] for e in engines))
others = [e for e in engines if e != "edgeseek"]
label = {"llama": "llama.cpp", "ik": "ik_llama.cpp", "edgeseek": "edgeseek"}
head = "| test | " + " | ".join(label[e] + " t/s" for e in engines) + " | " + \
       " | ".join("edgeseek / " + label[e] for e in others) + " |"
print(head)
print("|" + " ---: |" * (1 + len(engines) + len(others)))
tests = sorted(set().union(*[set(x) for e in engines for x in runs[e]]), key=lambda k: (k[2], k[1] > 0, k[0], k[1]))
for k in tests:
    cells, med = [], {}
    for e in engines:
        v = [x[k] for x in runs[e] if k in x]
        med[e] = statistics.median(v) if v else None
        cells.append("%.2f" % med[e] if v else "-")
    for o in others:
        per = [runs["edgeseek"][r][k] / runs[o][r][k] for r in range(rounds)
               if k in runs["edgeseek"][r] and k in runs[o][r] and runs[o][r][k] > 0]
        if med[o] and med["edgeseek"]:
            cells.append("%.2fx (%.2f-%.2f)" % (med["edgeseek"] / med[o], min(per), max(per)))
        else:
            cells.append("-")
    print("| %s | %s |" % (name(k), " | ".join(cells)))
es = json.load(open("%s/edgeseek.0.json" % tmp))
tr = es.get("decode_traffic", {})
bw = max([r.get("bandwidth_bytes_per_s", 0) for r in es["results"]] + [0])
if tr:
    print("edgeseek decode reads %.3f GB of weights per token; its read-bandwidth probe: %.1f GB/s" % (tr["weights"] / 1e9, bw / 1e9))
print("load average after: %s" % load)
EOF
done
