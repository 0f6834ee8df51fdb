"""Traffic for the demo: a Zipf-skewed cache workload from several real clients at once.

pymemcache speaks text (multi-gets, noreply sets, deletes, incr), pylibmc speaks binary through libmemcached, and
one raw socket speaks meta commands, so a single recording shows every protocol membench understands.
"""

from __future__ import annotations

import argparse
import random
import socket
import threading
import time

import pylibmc
from pymemcache.client.base import Client

KEYS = 5_000


def zipf_keys(rng: random.Random, count: int) -> list[str]:
    weights = [1 / (rank + 1) for rank in range(KEYS)]
    return [f"user:{k}:profile" for k in rng.choices(range(KEYS), weights=weights, k=count)]


def text_client(port: int, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    client = Client(("127.0.0.1", port))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        keys = zipf_keys(rng, 200)
        for i, key in enumerate(keys):
            if i % 10 == 0:
                client.set(key, b"v" * rng.choice((32, 100, 400, 3000)), noreply=rng.random() < 0.5)
            elif i % 25 == 1:
                client.get_many(keys[i:i + 8])
            elif i % 50 == 2:
                client.delete(key)
            elif i % 50 == 3:
                client.incr("counter:" + key, 1)
            else:
                client.get(key)
    client.close()


def binary_client(port: int, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    client = pylibmc.Client([f"127.0.0.1:{port}"], binary=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, key in enumerate(zipf_keys(rng, 200)):
            if i % 8 == 0:
                client.set(key, b"b" * rng.choice((64, 250, 1000)))
            else:
                client.get(key)
    client.disconnect_all()


def meta_client(port: int, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = sock.makefile("rb")
        while time.monotonic() < deadline:
            key = zipf_keys(rng, 1)[0]
            if rng.random() < 0.1:
                sock.sendall(f"ms {key} 5 T300\r\nhello\r\n".encode())
            else:
                sock.sendall(f"mg {key} v f t\r\n".encode())
            line = reader.readline()
            if line.startswith(b"VA "):
                reader.read(int(line.split()[1]) + 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=11211)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    workers = [threading.Thread(target=text_client, args=(args.port, args.seconds, seed)) for seed in range(3)]
    workers.append(threading.Thread(target=binary_client, args=(args.port, args.seconds, 10)))
    workers.append(threading.Thread(target=meta_client, args=(args.port, args.seconds, 20)))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
