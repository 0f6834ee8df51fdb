"""`membench top`'s screen: a snapshot drawn as rich tables (no I/O: the caller puts it on the terminal)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text

from membench.top.window import ConnectionOrder, KeyOrder, TopSnapshot

KEY_TEXT_MAX = 48  # longer keys are cut on screen: the table stays readable


@dataclass(frozen=True, slots=True)
class ViewState:
    """What the user chose: table orders, whether real keys are shown, what is captured."""

    source: str
    key_order: KeyOrder = KeyOrder.OPERATIONS
    connection_order: ConnectionOrder = ConnectionOrder.OPERATIONS
    show_keys: bool = False


def render(snapshot: TopSnapshot, state: ViewState, keys: Mapping[int, bytes], dropped_events: int,
           connections_open: int) -> Group:
    """The whole screen for one interval; `keys` maps hashes to real keys (empty unless --show-keys)."""
    return Group(_header(snapshot, state, dropped_events, connections_open), _key_table(snapshot, state, keys),
                 _connection_table(snapshot, state),
                 Text("keys: k sort hot keys · c sort connections · q quit", style="dim"))


def _header(snapshot: TopSnapshot, state: ViewState, dropped_events: int, connections_open: int) -> Text:
    ratio = snapshot.hit_ratio
    latency = snapshot.latency
    lines = [
        f"membench top: {state.source}   {snapshot.operations_per_s:,.0f} ops/s   hit ratio "
        f"{'-' if ratio is None else f'{ratio:.1%}'}   {snapshot.value_bytes / max(snapshot.seconds, 1e-9) / 1e6:,.2f}"
        f" MB/s of values   {connections_open} connections open",
        "latency " + ("-" if latency is None else
                      f"p50 {latency.p50_us:,.0f} µs   p99 {latency.p99_us:,.0f} µs   p99.9 {latency.p999_us:,.0f} µs"),
        "mix " + ("-" if not snapshot.commands else "   ".join(
            f"{command} {count / snapshot.operations:.0%}" for command, count in snapshot.commands[:6])),
    ]
    if dropped_events:
        lines.append(f"capture dropped {dropped_events:,} events so far: figures undercount")
    return Text("\n".join(lines))


def _key_table(snapshot: TopSnapshot, state: ViewState, keys: Mapping[int, bytes]) -> Table:
    table = Table(title=f"hottest keys (per second, sorted by {state.key_order.value})", title_justify="left",
                  expand=False)
    table.add_column("key" if state.show_keys else "key hash")
    for name in ("ops/s", "hits/s", "misses/s", "value KB/s"):
        table.add_column(name, justify="right")
    per_second = 1 / max(snapshot.seconds, 1e-9)
    for line in snapshot.keys:
        table.add_row(_key_text(line.key_hash, keys, state.show_keys), f"{line.operations * per_second:,.0f}",
                      f"{line.hits * per_second:,.0f}", f"{line.misses * per_second:,.0f}",
                      f"{line.value_bytes * per_second / 1e3:,.1f}")
    return table


def _connection_table(snapshot: TopSnapshot, state: ViewState) -> Table:
    table = Table(title=f"busiest connections (sorted by {state.connection_order.value})", title_justify="left")
    for name in ("connection", "ops/s", "value KB/s", "p99 µs"):
        table.add_column(name, justify="right")
    per_second = 1 / max(snapshot.seconds, 1e-9)
    for line in snapshot.connections:
        p99 = "-" if line.latency_p99_us is None else f"{line.latency_p99_us:,.0f}"
        table.add_row(f"#{line.connection}", f"{line.operations * per_second:,.0f}",
                      f"{line.value_bytes * per_second / 1e3:,.1f}", p99)
    return table


def _key_text(key_hash: int, keys: Mapping[int, bytes], show_keys: bool) -> Text:
    if show_keys and key_hash in keys:
        shown = keys[key_hash].decode("ascii", "backslashreplace")
        return Text(shown if len(shown) <= KEY_TEXT_MAX else shown[:KEY_TEXT_MAX - 1] + "…")
    return Text(f"{key_hash:016x}", style="dim" if show_keys else "")


def next_key_order(order: KeyOrder) -> KeyOrder:
    members = list(KeyOrder)
    return members[(members.index(order) + 1) % len(members)]


def next_connection_order(order: ConnectionOrder) -> ConnectionOrder:
    members = list(ConnectionOrder)
    return members[(members.index(order) + 1) % len(members)]
