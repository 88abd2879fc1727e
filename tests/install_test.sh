#!/bin/sh
# `make install` into a temporary DESTDIR with PREFIX=/usr: exactly the
# expected files; examples/generate.c built against the installed library
# through pkg-config, linked statically and against the shared library, and
# run; the soname; only the functions of edgeseek.h exported; the man page
# renders; `make uninstall` leaves no file behind.
# The last line is "N passed, N failed", as tests/run_tests.sh expects.
BUILD=${ES_BUILD:-build}
CC=${CC:-cc}
MAKE=${MAKE:-make}
MODEL=models/edgeseek-default.gguf
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit $?; }

# The install check is about packaging; a sanitizer build would need the
# sanitizer's flags in every link here, and the example runs under the
# sanitizers in example_test.sh already.
case "${CFLAGS-} ${LDFLAGS-}" in
*-fsanitize*) echo "SKIP install_test: a sanitizer build (the installed files are checked by make test)"; finish ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/edgeseek-install.XXXXXX") || { bad "mktemp"; finish; }
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root

if $MAKE -s BUILD="$BUILD" install DESTDIR="$dest" PREFIX=/usr >"$tmp/make.log" 2>&1; then ok; else
    bad "make install DESTDIR=... PREFIX=/usr failed:"; tail -n 20 "$tmp/make.log"; finish
fi

# exactly these files, the libraries' names taken from the build
real=$(cd "$BUILD" && ls libedgeseek.so.*.*.* 2>/dev/null)
soname=$(readelf -d "$BUILD/$real" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
expected=$(printf '%s\n' usr/bin/edgeseek usr/include/edgeseek.h usr/lib/libedgeseek.a \
    usr/lib/libedgeseek.so "usr/lib/$soname" "usr/lib/$real" usr/lib/pkgconfig/edgeseek.pc \
    usr/share/man/man1/edgeseek.1 | LC_ALL=C sort)
found=$(cd "$dest" && find . ! -type d | sed 's|^\./||' | LC_ALL=C sort)
if [ "$found" = "$expected" ]; then ok; else bad "installed files:"; printf '%s\n' "$found"; echo "expected:"; printf '%s\n' "$expected"; fi

# the soname, and the links that lead to the library
case "$soname" in
libedgeseek.so.[0-9]*) ok ;;
*) bad "soname of $real is '$soname'" ;;
esac
if [ "$(readlink "$dest/usr/lib/libedgeseek.so")" = "$soname" ] &&
   [ "$(readlink "$dest/usr/lib/$soname")" = "$real" ]; then ok; else
    bad "links: libedgeseek.so -> $(readlink "$dest/usr/lib/libedgeseek.so"), $soname -> $(readlink "$dest/usr/lib/$soname")"
fi

# exported: exactly the functions that edgeseek.h declares
exported=$(nm -D --defined-only "$dest/usr/lib/$real" | awk '{ print $NF }' | LC_ALL=C sort)
declared=$($CC -E -P -x c include/edgeseek.h | grep -oE '\<es_[A-Za-z0-9_]+ *\(' | sed 's/ *($//' | LC_ALL=C sort -u)
if [ -n "$declared" ] && [ "$exported" = "$declared" ]; then ok; else
    bad "exported symbols differ from edgeseek.h's functions:"
    printf '%s\n' "$exported" >"$tmp/exported"; printf '%s\n' "$declared" >"$tmp/declared"
    diff "$tmp/declared" "$tmp/exported" | head -n 20
fi
echo "install_test: $(printf '%s\n' "$exported" | grep -c .) symbols exported, all declared in edgeseek.h"

# the installed CLI runs
if "$dest/usr/bin/edgeseek" --help >/dev/null 2>&1; then ok; else bad "installed edgeseek --help"; fi

# the example against the installed files, as a user builds it
if command -v pkg-config >/dev/null 2>&1; then
    pc() { PKG_CONFIG_LIBDIR="$dest/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" pkg-config "$@"; }
    cflags=$(pc --cflags edgeseek) && libs=$(pc --libs edgeseek) && slibs=$(pc --static --libs edgeseek)
    if [ $? -eq 0 ] && [ "$(pc --modversion edgeseek)" = "${real#libedgeseek.so.}" ]; then ok; else
        bad "pkg-config edgeseek: '$cflags' '$libs' version '$(pc --modversion edgeseek)'"; fi
    # --define-prefix finds the files from the .pc file's own place
    dp=$(PKG_CONFIG_LIBDIR="$dest/usr/lib/pkgconfig" pkg-config --define-prefix --cflags edgeseek)
    case "$dp" in *"$dest/usr/include"*) ok ;; *) bad "pkg-config --define-prefix --cflags: '$dp'" ;; esac
else
    echo "SKIP pkg-config is not installed (Debian: pkg-config); the flags are written out instead"
    cflags="-I$dest/usr/include"; libs="-L$dest/usr/lib -ledgeseek"; slibs="$libs -lm -lpthread"
fi
slibs=$(printf '%s\n' "$slibs" | sed 's/-ledgeseek/-Wl,-Bstatic -ledgeseek -Wl,-Bdynamic/')

# shellcheck disable=SC2086
if $CC -std=c99 -Wall -Wextra -Werror $cflags examples/generate.c $libs -o "$tmp/gen_shared" 2>"$tmp/cc.log" &&
   $CC -std=c99 -Wall -Wextra -Werror $cflags examples/generate.c $slibs -o "$tmp/gen_static" 2>>"$tmp/cc.log"; then ok; else
    bad "building examples/generate.c against the installed library:"; cat "$tmp/cc.log"; finish
fi
if readelf -d "$tmp/gen_shared" | grep -q "NEEDED.*\[$soname\]"; then ok; else bad "gen_shared does not need $soname"; fi
if readelf -d "$tmp/gen_static" | grep -q 'NEEDED.*libedgeseek'; then bad "gen_static needs libedgeseek.so"; else ok; fi
answer() { sed -n '/<\/think>/,$p' | sed '1d' | grep -m1 -v '^[[:space:]]*$' | tr -d '[:space:]'; }
a=$(LD_LIBRARY_PATH="$dest/usr/lib" "$tmp/gen_shared" "$MODEL" "What is 487 + 356?" 2>&1 | answer)
if [ "$a" = 843 ]; then ok; else bad "the shared build answered '$a', not 843"; fi
a=$("$tmp/gen_static" "$MODEL" "What is 487 + 356?" 2>&1 | answer)
if [ "$a" = 843 ]; then ok; else bad "the static build answered '$a', not 843"; fi

# the man page renders without warnings
page=$dest/usr/share/man/man1/edgeseek.1
if command -v groff >/dev/null 2>&1; then
    groff -man -Tascii -ww "$page" >"$tmp/man.txt" 2>"$tmp/man.err"
    if [ -s "$tmp/man.err" ]; then bad "groff warns:"; cat "$tmp/man.err"; fi
    text=$(sed 's/.\x08//g' "$tmp/man.txt")
    missing=
    for w in NAME SYNOPSIS COMMANDS ENVIRONMENT "EXIT STATUS" FILES EXAMPLES EDGESEEK_SIMD \
             "edgeseek run" "edgeseek logits" "edgeseek tokenize" "edgeseek info" "edgeseek bench" \
             "edgeseek eval" "edgeseek quantize"; do
        printf '%s\n' "$text" | grep -q "$w" || missing="$missing [$w]"
    done
    if [ -z "$missing" ]; then ok; else bad "the rendered man page lacks$missing"; fi
    if grep -q '@VERSION@' "$page"; then bad "@VERSION@ left in the installed man page"; else ok; fi
elif command -v man >/dev/null 2>&1; then
    if man -l "$page" >/dev/null 2>&1; then ok; else bad "man -l $page"; fi
else
    echo "SKIP neither groff nor man: the man page is only checked to exist"
    if [ -s "$page" ]; then ok; else bad "$page is empty"; fi
fi

# uninstall leaves no file
if $MAKE -s BUILD="$BUILD" uninstall DESTDIR="$dest" PREFIX=/usr >"$tmp/make.log" 2>&1; then ok; else
    bad "make uninstall failed:"; tail -n 20 "$tmp/make.log"
fi
left=$(cd "$dest" && find . ! -type d)
if [ -z "$left" ]; then ok; else bad "left after make uninstall:"; printf '%s\n' "$left"; fi

finish
