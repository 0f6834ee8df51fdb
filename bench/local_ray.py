"""A Ray cluster of several nodes on this machine (`ray start --head` plus `ray start --address` per extra node,
each with its own CPUs), for the --cluster benchmark and tests/replay/test_cluster.py."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

_READY_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _active_nodes(gcs: str) -> int:
    status = subprocess.run(_ray("status", f"--address={gcs}"), capture_output=True, text=True, timeout=30)
    return status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0].count("node_")


def _wait_for(gcs: str, nodes: int, deadline: float) -> None:
    while _active_nodes(gcs) < nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local Ray cluster did not reach {nodes} nodes in {_READY_S} s")
        time.sleep(1)


@contextlib.contextmanager
def ray_nodes(nodes: int = 2, cpus: int = 1) -> Iterator[tuple[str, list[int], str]]:
    """`nodes` Ray nodes of `cpus` CPUs on loopback; yields the head's Ray Client address (ray://...), the pids of
    the `ray start` processes (the Ray processes of each node descend from them) and the head's GCS address
    (HOST:PORT, what `ray start --head` records for `auto`)."""
    gcs_port, client_port = _free_port(), _free_port()
    gcs = f"127.0.0.1:{gcs_port}"
    common = [f"--num-cpus={cpus}", "--object-store-memory=80000000", "--disable-usage-stats", "--block"]
    processes: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + _READY_S
    try:
        for node in range(nodes):
            ports = [f"--min-worker-port={21000 + 100 * node}", f"--max-worker-port={21099 + 100 * node}"]
            if node == 0:
                role = ["--head", f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
                        "--include-dashboard=false"]
            else:
                role = [f"--address={gcs}"]
            processes.append(subprocess.Popen(_ray("start", *role, *ports, *common), stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            _wait_for(gcs, node + 1, deadline)
        yield f"ray://127.0.0.1:{client_port}", [process.pid for process in processes], gcs
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
