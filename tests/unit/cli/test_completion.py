"""The generated completion scripts: every command path is there, and bash, running the
script for real, completes subcommands, flags and a flag's choices."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conveyor.cli import completion
from conveyor.cli.main import build_parser


def test_every_command_path_and_flag_is_in_the_tree() -> None:
    nodes = {node.path: node for node in completion.tree(build_parser())}
    assert {"topic", "produce", "consume", "group", "profile", "completion"} <= set(
        nodes[()].commands
    )
    assert {"create", "alter-config", "add-partitions"} <= set(nodes[("topic",)].commands)
    assert "seek" in nodes[("group",)].commands
    consume = nodes[("consume",)]
    assert {"-p", "-o", "-e", "-c", "-f", "--output", "--profile", "--url"} <= set(consume.flags)
    assert consume.choices["--output"] == ["table", "json", "yaml"]


def complete(words: list[str]) -> list[str]:
    script = completion.bash(completion.tree(build_parser()))
    line = " ".join(words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _conveyor; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_flags_and_choices() -> None:
    assert set(complete(["conveyor", "to"])) == {"topic", "token"}
    assert complete(["conveyor", "topic", "alt"]) == ["alter-config"]
    assert set(complete(["conveyor", "consume", "orders", "--out"])) == {"--output"}
    assert complete(["conveyor", "consume", "orders", "--output", "y"]) == ["yaml"]
    assert "--compression" in complete(["conveyor", "produce", "t", "--comp"])


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts(shell: str) -> None:
    script = {"zsh": completion.zsh, "fish": completion.fish}[shell](
        completion.tree(build_parser())
    )
    if shell == "zsh":
        assert script.startswith("# conveyor completion for zsh") and "bashcompinit" in script
    else:
        assert "complete -c conveyor -n __fish_use_subcommand -a topic" in script
        assert "-l output -r -a 'table json yaml'" in script
    binary = shutil.which(shell)
    if binary is not None:  # syntax-check with the real shell when it is installed
        subprocess.run([binary, "-n"], input=script, text=True, check=True, timeout=30)
