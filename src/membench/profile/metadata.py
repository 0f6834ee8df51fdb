"""The profile's description: where it came from, how healthy the capture was, whether the recording finished.

It lives in `_profile.json` beside the part files, and a copy is embedded in every part's Parquet schema metadata
so that a profile whose `_profile.json` was lost can still say where it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from membench import __version__
from membench.errors import MembenchError
from membench.profile.schema import FORMAT_NAME, INT64_MAX, INT64_MIN, SCHEMA_VERSION

# The leading underscore makes dataset readers (pyarrow, pandas, DuckDB, Spark) skip it, as they skip _SUCCESS.
METADATA_FILE = "_profile.json"
FORMER_METADATA_FILE = "profile.json"  # its name before membench 0.2: still read
PARQUET_METADATA_KEY = b"membench.profile"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ProfileMetadata:
    """Everything about a profile that is not a row. Counters are plain dicts so JSON stays the only format."""

    source: str  # e.g. "ebpf:any", "pcap:file.pcap", "interface:lo"
    ports: list[int] = field(default_factory=list)
    format: str = FORMAT_NAME
    schema_version: int = SCHEMA_VERSION
    membench_version: str = __version__
    start_ns: int | None = None  # earliest operation timestamp
    end_ns: int | None = None  # latest operation timestamp
    created: str = field(default_factory=_now_iso)  # wall clock when the recording started, ISO 8601 UTC
    salt_fingerprint: str | None = None
    salt_kdf: dict[str, Any] | None = None  # how a passphrase salt was stretched (anonymize.SaltKdf); None: random
    health: dict[str, dict[str, int]] = field(default_factory=dict)  # section -> counter -> value
    complete: bool = False  # set only by a clean close: False means the recorder died or is still running
    operations: int = 0
    parts: list[str] = field(default_factory=list)  # the part files that hold the rows, in row order
    extra: dict[str, Any] = field(default_factory=dict)
    # Keys written by a newer membench: kept so that rewriting the metadata does not drop them.
    unknown: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.unknown)
        for f in fields(self):
            if f.name != "unknown":
                out[f.name] = getattr(self, f.name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileMetadata:
        known = {f.name for f in fields(cls)} - {"unknown"}
        kwargs = {name: value for name, value in data.items() if name in known}
        if not isinstance(kwargs.get("source"), str):
            kwargs["source"] = "unknown"
        try:
            metadata = cls(**kwargs)
        except TypeError as exc:
            raise MembenchError(f"profile metadata is malformed: {exc}") from None
        metadata.unknown = {name: value for name, value in data.items() if name not in known}
        metadata._check_types()
        return metadata

    @classmethod
    def from_json(cls, text: str | bytes) -> ProfileMetadata:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MembenchError(f"profile metadata is not valid JSON ({exc})") from None
        except RecursionError:
            raise MembenchError("profile metadata is not valid JSON (nested too deep)") from None
        if not isinstance(data, dict):
            raise MembenchError("profile metadata is not a JSON object")
        return cls.from_dict(data)

    def _check_types(self) -> None:
        """Reject values of the wrong type here, so that later code can trust the fields."""
        expectations: dict[str, type | tuple[type, ...]] = {
            "format": str, "schema_version": int, "membench_version": str, "created": str, "complete": bool,
            "operations": int, "ports": list, "health": dict, "parts": list, "extra": dict,
            "start_ns": (int, type(None)), "end_ns": (int, type(None)), "salt_fingerprint": (str, type(None)),
            "salt_kdf": (dict, type(None)),
        }
        for name, expected in expectations.items():
            if not isinstance(getattr(self, name), expected):
                raise MembenchError(f"profile metadata field {name!r} has the wrong type")
        if not all(isinstance(part, str) for part in self.parts):
            raise MembenchError("profile metadata field 'parts' must list file names")
        self._check_values()

    def _check_values(self) -> None:
        """Numbers in the ranges the profile's columns and counters have, so that arithmetic on them is safe."""
        for name in ("schema_version", "operations", "start_ns", "end_ns"):
            value = getattr(self, name)
            if isinstance(value, bool) or (value is not None and not INT64_MIN <= value <= INT64_MAX):
                raise MembenchError(f"profile metadata field {name!r} is out of range")
        if self.operations < 0:
            raise MembenchError("profile metadata field 'operations' is out of range")
        if self.schema_version < 1:  # versions count from 1
            raise MembenchError("profile metadata field 'schema_version' is out of range")
        if not all(type(port) is int and 0 < port < 65536 for port in self.ports):
            raise MembenchError("profile metadata field 'ports' must list port numbers")
        for counters in self.health.values():
            if not isinstance(counters, dict) or not all(
                    type(value) is int and 0 <= value <= INT64_MAX for value in counters.values()):
                raise MembenchError("profile metadata field 'health' must hold counters")

    def write_atomic(self, directory: Path) -> None:
        """Replace `_profile.json` so that a reader (or a crash) sees either the old or the new file, whole."""
        target = directory / METADATA_FILE
        temporary = directory / f".{METADATA_FILE}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8", opener=private) as handle:
                handle.write(self.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError:
            # A full disk can refuse the metadata as well as a part: the old file stays, and no stray temporary.
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make renames inside `directory` durable (a rename is only on disk once its directory is)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# A profile describes other people's traffic: only its owner may read it, whatever the umask.
PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600


def private(path: str, flags: int) -> int:
    """An `opener` that creates files readable and writable by their owner only."""
    return os.open(path, flags, PRIVATE_FILE)


PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"


def part_name(index: int) -> str:
    return f"{PART_PREFIX}{index:06d}{PART_SUFFIX}"


def part_index(name: str) -> int | None:
    """The number of a part file name, or None if the name is not one a writer produces."""
    if not (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)):
        return None
    digits = name[len(PART_PREFIX):-len(PART_SUFFIX)]
    return int(digits) if digits.isdigit() else None


class ProfileWarning(UserWarning):
    """A profile is readable but not entirely as written (see `ProfileReader.problems`), or not compacted."""
