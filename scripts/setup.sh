#!/usr/bin/env bash
# Install everything membench and its tests need on a fresh Debian machine: system packages, then the package.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# What each is for: memcached (the server every test talks to); libbpf1 (loads the BPF object); clang, llvm and
# libbpf-dev (rebuild.sh and the test that the committed object is the reproducible build of its source: the
# compiler, llvm-strip and the bpf/*.h headers); bpftool (the layout test reads the object's BTF); tcpdump and
# tshark (peers in tests and benchmarks); libmemcached-tools (memcaslap load); libpcap0.8 (live capture);
# libmemcached-dev and zlib1g-dev (build pylibmc, a real client in the tests); util-linux (setpriv, unshare in the
# privilege tests); gcc (pip compiles membench's Cython twins with it, against the running Python's headers); tmux
# (the terminal `membench top` is tested in); chromium (renders `analyze --html` pages headless in the tests).
packages=(memcached libbpf1 libbpf-dev clang llvm bpftool tcpdump tshark libmemcached-tools libpcap0.8
          libmemcached-dev zlib1g-dev util-linux gcc tmux chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | "${sudo_cmd[@]}" debconf-set-selections
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
