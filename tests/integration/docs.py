"""Run the code blocks of the documentation as written: fenced blocks are extracted from
Markdown, shell blocks split into commands (comments dropped, ``\\`` continuations joined),
and each command is run with ``bash`` so a doc that stops working fails a test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class CodeBlock:
    lang: str
    text: str
    line: int  # where the block starts in its file, for failure messages


def code_blocks(path: Path) -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    lang: str | None = None
    start, lines = 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = _FENCE.match(line.strip())
        if fence is None:
            if lang is not None:
                lines.append(line)
            continue
        if lang is None:
            lang, start, lines = fence.group(1), number, []
        else:
            blocks.append(CodeBlock(lang, "\n".join(lines) + "\n", start))
            lang = None
    return blocks


def strip_comment(line: str) -> str:
    """``line`` without an unquoted ``#`` comment (one preceded by a blank or at the start)."""
    quote: str | None = None
    for i, char in enumerate(line):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(block: CodeBlock) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = strip_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command:
            commands.append(command)
    return commands


def shell_env(**extra: str) -> dict[str, str]:
    """The environment a reader has after ``source .venv/bin/activate``: this venv's
    ``conveyor`` and ``python`` first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def run_shell(
    command: str, env: dict[str, str], cwd: Path, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail\n{command}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout_s,
        check=False,
    )
