"""``policy-accel COMMAND --help``, generated from the command's config so it never drifts.

Each option is listed with its default (as composed, paths resolved) and the comment written
beside it in ``configs/<name>.yaml``; config groups (``env``, ``sampler``) list their choices.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from policy_accel.paths import config_dir

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")


def _comments(path: Path) -> dict[str, str]:
    """Dotted key -> its inline comment (or the comment lines right above it)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if not match or stripped.startswith("-"):
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([name for _, name in stack] + [match["key"]])
        comment = match["comment"] or (" ".join(pending) if indent else "")
        if comment and not line.startswith("defaults"):
            out[dotted] = comment.strip()
        if not match["value"].strip():
            stack.append((indent, match["key"]))
        pending = []
    return out


def _groups(directory: Path, cfg_path: Path) -> list[tuple[str, str, list[str]]]:
    """(group, default choice, all choices) of the config's ``defaults`` list."""
    raw = OmegaConf.load(cfg_path)
    out = []
    for entry in raw.get("defaults", []) or []:
        if isinstance(entry, str) or not OmegaConf.is_dict(entry):
            continue
        for group, choice in entry.items_ex(resolve=False):
            if str(group).startswith("optional "):  # per-env defaults follow the env choice; not a choice of their own
                continue
            group = str(group).lstrip("/")
            folder = directory / group
            if folder.is_dir():
                choices = sorted(p.stem for p in folder.glob("*.yaml"))
                out.append((group, str(choice), choices))
    return out


def _header(cfg_path: Path) -> list[str]:
    lines = []
    for line in cfg_path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").rstrip()[1:] if line.startswith("# ") else line.lstrip("#"))
    return lines


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings -> (dotted key, leaf value); lists stay leaves."""
    if isinstance(value, dict) and value:
        items: list[tuple[str, Any]] = []
        for key, sub in value.items():
            items += _flat(sub, f"{prefix}{key}.")
        return items
    return [(prefix.rstrip("."), value)]


def config_help(command: str, config_name: str, summary: str) -> str:
    """The help text of a hydra-configured command."""
    from policy_accel.cli.hydra_config import load_config

    directory = config_dir()
    cfg_path = directory / f"{config_name}.yaml"
    cfg = OmegaConf.to_container(load_config(config_name, []), resolve=True)
    comments = _comments(cfg_path)
    groups = _groups(directory, cfg_path)
    group_names = {g for g, _, _ in groups}
    lines = [f"usage: policy-accel {command} [key=value ...]", "", summary, ""]
    lines += [line for line in _header(cfg_path) if line.strip()]
    if groups:
        lines += ["", "config groups (choose one with group=choice):"]
        for group, default, choices in groups:
            lines.append(f"  {group}={default:<24} choices: {', '.join(choices)}")
    lines += ["", "options (key=value; default shown):"]
    rows = []
    for key, value in cfg.items():
        if key in group_names:
            continue
        for dotted, leaf in _flat({key: value}):
            shown = leaf if isinstance(leaf, str) else json.dumps(leaf)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            rows.append((dotted, shown, comments.get(dotted, "")))
    width = max((len(k) for k, _, _ in rows), default=0)
    for key, shown, comment in rows:
        lines.append(f"  {key:<{width}}  {shown}" + (f"\n  {'':<{width}}    {comment}" if comment else ""))
    lines += ["", f"Unknown keys are errors. Config file: {cfg_path}"]
    return "\n".join(lines)
