#!/usr/bin/env bash
# Rebuild capture.bpf.o from capture.bpf.c, reproducibly: same source and Debian clang 14 -> identical bytes.
# Usage: rebuild.sh [OUTPUT]   (default: capture.bpf.o next to this script, the committed object)
# Paths are made relative (-fdebug-prefix-map) and DWARF is stripped; .BTF and .BTF.ext stay, libbpf needs
# them for CO-RE relocations and the tests read the event layout from them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
output="$(realpath -m "${1:-$here/capture.bpf.o}")"
clang_bin="${CLANG:-clang-14}"
strip_bin="${LLVM_STRIP:-llvm-strip-14}"
command -v "$clang_bin" >/dev/null || { echo "rebuild.sh: $clang_bin not found (apt-get install clang-14 llvm-14)" >&2; exit 1; }
command -v "$strip_bin" >/dev/null || { echo "rebuild.sh: $strip_bin not found (apt-get install llvm-14)" >&2; exit 1; }

cd "$here"
tmp="$(mktemp "${output}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
"$clang_bin" -target bpf -mcpu=v3 -O2 -g -D__TARGET_ARCH_x86 -I. \
    -fdebug-prefix-map="$here"=. -fno-ident \
    -c capture.bpf.c -o "$tmp"
"$strip_bin" -g "$tmp"
mv "$tmp" "$output"
trap - EXIT
