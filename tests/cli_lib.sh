# cli_lib.sh — what the command-line tests (tests/test_cli_*.sh) share; sourced.
# From the repository root: $E the edgeseek binary (ES_BUILD, default build), $M the
# default model, $T a scratch directory removed at exit.  Every command runs under
# `timeout 20`.  The script's last line is "N passed, N failed, N skipped".
cd "$(dirname "$0")/.." || exit 1
B=${ES_BUILD:-build}
E=$B/edgeseek
M=models/edgeseek-default.gguf
T=$(mktemp -d "${TMPDIR:-/tmp}/edgeseek-cli.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
n_pass=0 n_fail=0 n_skip=0

pass() { n_pass=$((n_pass + 1)); }
fail() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }
skip() { n_skip=$((n_skip + 1)); echo "SKIP $*"; }
# check DESCRIPTION COMMAND...: passes when the command succeeds
check() {
    d=$1; shift
    if "$@"; then pass; else fail "$d"; fi
}
# expect RC TEXT 'SHELL COMMAND': runs the command (stdout to $T/out unless the command
# redirects it, stderr to $T/err); passes when it exits with RC and stderr holds TEXT
# (any stderr when TEXT is empty)
expect() {
    want_rc=$1 want_text=$2 cmd=$3
    eval "timeout 20 $cmd" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq "$want_rc" ] && { [ -z "$want_text" ] || grep -qF -- "$want_text" "$T/err"; }; then
        pass
    else
        fail "$cmd: exit $rc (want $want_rc), stderr: $(head -c 300 "$T/err")"
    fi
}
summary() {
    echo "$n_pass passed, $n_fail failed, $n_skip skipped"
    [ "$n_fail" -eq 0 ]
}
