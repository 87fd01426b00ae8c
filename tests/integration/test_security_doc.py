"""docs/security.md's quick start, run as written: ``conveyor dev --tls --auth``, the
administrator's commands with the exports it printed, then alice's, where a command
commented ``# refused: CODE`` must fail with that code and every other must succeed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.integration.cluster import conveyor_dev, free_port, wait_for
from tests.integration.docs import ROOT, code_blocks, shell_commands, shell_env

DOC = ROOT / "docs" / "security.md"
EXPORTS = ("CONVEYOR_URL", "CONVEYOR_CA", "CONVEYOR_TOKEN")


def quick_start() -> list[list[str]]:
    """The raw lines of the shell blocks of the "Quick start" section."""
    text = DOC.read_text()
    section = text[text.index("## Quick start") :]
    section = section[: section.index("\n## ", 1)]
    blocks = [b for b in code_blocks(DOC) if b.text in section and b.lang == "sh"]
    assert len(blocks) == 3, "the walkthrough's blocks: dev, administrator, alice"
    return [b.text.splitlines() for b in blocks]


def as_script(lines: list[str], printed: dict[str, str]) -> str:
    """One bash script: the doc's exports replaced by what conveyor dev printed; each
    command checked (refused ones for their code)."""
    out = ["set -uo pipefail"]
    for number, raw in enumerate(lines):
        export = re.match(r"export (CONVEYOR_\w+)=([^$\s]\S*)", raw)  # not $VARIABLE
        if export and export.group(1) in printed:
            name, written = export.group(1), export.group(2)
            assert _same_kind(name, written, printed[name]), (raw, printed[name])
            out.append(f"export {export.group(1)}={printed[export.group(1)]}")
            continue
        (command,) = shell_commands_of(raw) or [None]
        if command is None:
            continue
        refused = re.search(r"# refused: (\w+)", raw)
        err = f"$TMPDIR/err-{number}"
        if refused:
            out.append(
                f"if {command} 2>{err}; then echo 'not refused: {number}' >&2; exit 1; fi\n"
                f"grep -q {refused.group(1)} {err} || {{ cat {err} >&2; exit 1; }}"
            )
        else:
            out.append(f"{command} || {{ echo 'failed: line {number}' >&2; exit 1; }}")
    return "\n".join(out) + "\n"


def _same_kind(name: str, written: str, printed: str) -> bool:
    """The doc shows what conveyor dev prints, up to the port, paths and secret."""
    if name == "CONVEYOR_URL":
        return written.split(":")[:2] == printed.split(":")[:2]  # https://127.0.0.1
    if name == "CONVEYOR_CA":
        return printed.endswith(written.removeprefix("data/dev"))  # .../certs/ca.pem
    return written.split("_", maxsplit=1)[0] == printed.split("_", maxsplit=1)[0]  # cvt_


def shell_commands_of(raw: str) -> list[str]:
    from tests.integration.docs import CodeBlock

    return shell_commands(CodeBlock("sh", raw + "\n", 0))


def test_the_security_walkthrough_runs_as_written(tmp_path: Path) -> None:
    dev_block, admin_block, alice_block = quick_start()
    (dev_command,) = [c for raw in dev_block for c in shell_commands_of(raw)]
    assert dev_command == "conveyor dev --tls --auth"
    with conveyor_dev(tmp_path, *dev_command.split()[2:], "--kafka-port", str(free_port())) as dev:
        wait_for(lambda: "CONVEYOR_TOKEN=" in dev.log(), 90, "conveyor dev ready")
        printed = dict(re.findall(r"export (CONVEYOR_\w+)=(\S+)", dev.log()))
        assert set(printed) == set(EXPORTS)
        script = tmp_path / "walkthrough.sh"
        script.write_text(as_script(admin_block + alice_block, printed))
        env = shell_env(CONVEYOR_NEW_PASSWORD="alice-long-password", TMPDIR=str(tmp_path))
        for name in EXPORTS:
            env.pop(name, None)
        done = subprocess.run(
            ["bash", str(script)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{script.read_text()}"
        assert "order 1" not in done.stderr
        assert done.stdout.count("event 1") == 2  # alice read it, without and with a group
    assert os.path.exists(dev.data / "cluster-secret")
