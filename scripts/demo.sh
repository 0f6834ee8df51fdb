#!/usr/bin/env bash
# The main job, end to end, on this machine: start a local memcached, generate traffic with real clients, record
# it (socket-level eBPF; live packet capture on lo where eBPF is unavailable), analyze the profile, and replay it
# against a second, fresh memcached. Everything lands in ./demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

out=demo-output
record_port=${MEMBENCH_DEMO_PORT:-21211}
replay_port=$((record_port + 1))
mkdir -p "$out"
rm -rf "$out/traffic.profile"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
memcached -u root -l 127.0.0.1 -p "$record_port" -U 0 -m 256 -t 2 & pids+=($!)
memcached -u root -l 127.0.0.1 -p "$replay_port" -U 0 -m 256 -t 2 & pids+=($!)
sleep 0.5

source_spec=ebpf:any
if [ "$(id -u)" -ne 0 ] || [ ! -e /sys/kernel/btf/vmlinux ] \
    || ! grep -qa btf_trace_sock_send_length /sys/kernel/btf/vmlinux; then
    echo "eBPF capture needs root and a kernel with BTF and socket tracepoints (6.3+): falling back to live packet capture on lo" >&2
    source_spec=lo
fi
echo "== recording with $source_spec on port $record_port"
membench record "$source_spec" "$out/traffic.profile" --port "$record_port" --quiet &
recorder=$!
sleep 2  # `record` attaches its probes before it prints its first line; this leaves margin for that
python3 scripts/demo_traffic.py --port "$record_port" --seconds "${MEMBENCH_DEMO_SECONDS:-10}"
kill -INT "$recorder"
wait "$recorder"

echo "== analyzing"
membench analyze "$out/traffic.profile" --json "$out/analysis.json" --html "$out/report.html"

echo "== replaying against a fresh memcached on port $replay_port"
membench replay "$out/traffic.profile" --target "127.0.0.1:$replay_port" --json "$out/replay.json"
echo "== done: $out/traffic.profile, $out/analysis.json, $out/report.html (charts), $out/replay.json"
