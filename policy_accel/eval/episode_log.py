"""``output_dir/episodes.jsonl``: every finished episode, appended and flushed as it completes.

A sweep of thousands of episodes must survive Ctrl-C, a crash or a lost scheduler: each record is written
(and fsync'ed) the moment its episode returns, so a resumed run (``resume=true``) reads the file, keeps what
is there and runs only the missing episodes. The first line is a header holding the run's configuration and
its fingerprint; resuming with another configuration (checkpoint contents, sampler specs, env, steps,
execution mode, delay, device, compile) is refused, because mixing episodes of two configurations would
make a report that describes neither. Seeds are not part of the fingerprint: a resumed run may ask for more
seeds (100 -> 500) and runs only the new ones; records outside the requested set are kept but not reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

LOG_NAME = "episodes.jsonl"
FORMAT_VERSION = 1
RecordKey = tuple[str, str | None, int]  # (job label, task, seed)


class ResumeError(RuntimeError):
    """``episodes.jsonl`` cannot be continued: another configuration made it, or it is damaged."""


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a run's configuration (what an episode's result depends on)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a checkpoint's bytes (a folder: of its files' names and bytes), so a retrained file under
    the same name is another configuration."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def record_key(record: Mapping[str, Any]) -> RecordKey:
    """What makes two records the same episode: the job (sampler entry) label, the task and the seed."""
    episode = record["episode"]
    return str(record["label"]), episode.get("task"), int(episode["seed"])


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configurations (for the refusal message)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the file, {b!r} now")
    return out


class EpisodeLog:
    """Append-only JSON lines of finished episodes, with a configuration header; one writer at a time."""

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any], resume: bool) -> None:
        """Open ``path``: with ``resume`` continue it (checked against ``config``), else start it afresh."""
        self.path = Path(path)
        self.config = json.loads(json.dumps(config, default=str))
        self.fingerprint = fingerprint(self.config)
        self.records: dict[RecordKey, dict[str, Any]] = {}
        self.resumed = 0
        if resume and self.path.exists():
            self._read()
            self.resumed = len(self.records)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = {"kind": "header", "version": FORMAT_VERSION, "fingerprint": self.fingerprint}
            self.path.write_text(json.dumps({**header, "config": self.config}) + "\n", encoding="utf-8")
        self._handle = self.path.open("a", encoding="utf-8")

    def _read(self) -> None:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # a crash mid-write: drop the partial last line
            raw = raw[: raw.rfind(b"\n") + 1]
            with self.path.open("r+b") as handle:
                handle.truncate(len(raw))
        lines = raw.decode("utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("kind") != "header":
            raise ResumeError(f"{self.path} has no episodes.jsonl header; delete it or run without resume=true")
        if header.get("fingerprint") != self.fingerprint:
            changes = _differences(header.get("config") or {}, self.config) or ["(format version)"]
            raise ResumeError(
                f"resume=true: {self.path} was made with another configuration, so its episodes cannot be pooled "
                f"with this run's: {'; '.join(changes)}. Use another output_dir, or resume=false to start afresh"
            )
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ResumeError(f"{self.path}:{number} is not a JSON record ({exc}); the file is damaged") from None
            self.records.setdefault(record_key(record), record)  # exactly once, the first one wins

    def append(self, record: Mapping[str, Any]) -> bool:
        """Write one finished episode and flush it to disk; False (nothing written) if it is already there."""
        key = record_key(record)
        if key in self.records:
            return False
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records[key] = dict(record)
        return True

    def missing(self, keys: Iterable[RecordKey]) -> list[RecordKey]:
        """The keys (in the given order) that have no record yet."""
        return [key for key in keys if key not in self.records]

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> EpisodeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
