"""The committed capture.bpf.o: built from the committed source, and laid out as events.py expects."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from enum import IntEnum, IntFlag
from pathlib import Path

import pytest

from membench.capture.ebpf import events

pytestmark = pytest.mark.ebpf

EBPF_DIR = Path(events.__file__).parent
OBJECT = EBPF_DIR / "capture.bpf.o"


def tool_or_skip(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("MEMBENCH_REQUIRE_EBPF") == "1":
            pytest.fail(f"{name} is required here: run scripts/setup.sh")
        pytest.skip(f"{name} is not installed")
    return path


def btf_structs() -> dict[str, tuple[int, list[tuple[str, int, int]]]]:
    """Struct name -> (size, [(member, byte offset, byte size)]) from the object's BTF."""
    dump = subprocess.run([tool_or_skip("bpftool"), "-j", "btf", "dump", "file", str(OBJECT)],
                          check=True, capture_output=True, text=True).stdout
    types = {entry["id"]: entry for entry in json.loads(dump)["types"]}

    def size_of(type_id: int) -> int:
        entry = types[type_id]
        if entry["kind"] in ("TYPEDEF", "CONST", "VOLATILE"):
            return size_of(entry["type_id"])
        if entry["kind"] == "ARRAY":
            return entry["nr_elems"] * size_of(entry["type_id"])
        return entry["size"]

    out = {}
    for entry in types.values():
        if entry["kind"] == "STRUCT" and entry.get("name", "").startswith("mb_"):
            members = [(m["name"], m["bits_offset"] // 8, size_of(m["type_id"])) for m in entry["members"]]
            out[entry["name"]] = (entry["size"], members)
    return out


@pytest.mark.parametrize(("c_name", "layout", "packed"), [
    ("mb_event", events.EVENT_LAYOUT, events.EVENT),
    ("mb_open_info", events.OPEN_INFO_LAYOUT, events.OPEN_INFO),
    ("mb_config", events.CONFIG_LAYOUT, events.CONFIG),
    ("mb_switch", events.SWITCH_LAYOUT, events.SWITCH),
])
def test_python_layouts_match_the_btf_of_the_object(c_name: str, layout: events.Layout,
                                                    packed: struct.Struct) -> None:
    size, members = btf_structs()[c_name]
    expected = []
    offset = 0
    for name, code in layout:
        width = struct.calcsize("<" + code)
        expected.append((name, offset, width))
        offset += width
    assert members == expected
    assert size == packed.size == offset


def header_constants() -> dict[str, int]:
    text = (EBPF_DIR / "events.h").read_text()
    constants = {name: int(value) for name, value in re.findall(r"#define (MB_\w+) (\d+)", text)}
    constants.update({name: int(value) for name, value in re.findall(r"\b(MB_\w+) = (\d+),", text)})
    return constants


@pytest.mark.parametrize(("prefix", "mirror"), [
    ("MB_EVENT_", events.EventType),
    ("MB_DIR_", events.SocketDirection),
    ("MB_FLAG_", events.EventFlag),
    ("MB_SIDE_", events.Side),
    ("MB_COUNTER_", events.Counter),
])
def test_python_enums_match_events_h(prefix: str, mirror: type[IntEnum] | type[IntFlag]) -> None:
    in_header = {name[len(prefix):]: value for name, value in header_constants().items()
                 if name.startswith(prefix) and name != "MB_COUNTER_COUNT"}
    assert in_header == {member.name: member.value for member in mirror}


def test_python_limits_match_events_h() -> None:
    constants = header_constants()
    assert constants["MB_COPY_MAX"] == events.COPY_MAX
    assert constants["MB_MAX_PORTS"] == events.MAX_PORTS
    assert constants["MB_MAX_PIDS"] == events.MAX_PIDS
    assert constants["MB_COUNTER_COUNT"] == events.COUNTER_COUNT


def test_committed_object_is_the_reproducible_build_of_the_source(tmp_path: Path) -> None:
    tool_or_skip("clang-14")
    tool_or_skip("llvm-strip-14")
    rebuilt = tmp_path / "capture.bpf.o"
    subprocess.run(["bash", str(EBPF_DIR / "rebuild.sh"), str(rebuilt)], check=True, capture_output=True)
    assert rebuilt.read_bytes() == OBJECT.read_bytes(), (
        "capture.bpf.o is stale: run src/membench/capture/ebpf/rebuild.sh and commit the object")
    assert str(EBPF_DIR).encode() not in rebuilt.read_bytes()
