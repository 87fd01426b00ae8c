"""``conveyor completion bash|zsh|fish``: a shell completion script for ``conveyor``.

Generated from the command's own argparse tree (so it can never list a command or flag
that does not exist), static: pressing TAB runs no Python. Each command path (``topic
create``) completes its subcommands, its flags, and the choices of flags that have them
(``--output`` -> table json yaml). zsh uses the bash script through ``bashcompinit``.

    source <(conveyor completion bash)                      # ~/.bashrc
    source <(conveyor completion zsh)                       # ~/.zshrc
    conveyor completion fish > ~/.config/fish/completions/conveyor.fish
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.cli.common import EXIT_OK

if TYPE_CHECKING:
    from conveyor.cli.common import Subparsers

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Node:
    """One command path: its subcommands, flags, and the choices some flags take."""

    path: tuple[str, ...]
    commands: dict[str, str] = field(default_factory=dict)  # name -> help
    flags: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)


def tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Node]:
    node = Node(path)
    nodes = [node]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.commands[name] = helps.get(name, "")
                nodes += tree(sub, (*path, name))
        elif action.option_strings and action.help is not argparse.SUPPRESS:
            node.flags += action.option_strings
            if action.choices:
                for flag in action.option_strings:
                    node.choices[flag] = [str(c) for c in action.choices]
    return nodes


def bash(nodes: list[Node]) -> str:
    cases = []
    for node in nodes:
        key = " ".join(node.path)
        words = " ".join([*node.commands, *node.flags])
        choices = "".join(
            f"            {shlex.quote(flag)}) COMPREPLY=($(compgen -W "
            f'{shlex.quote(" ".join(values))} -- "$cur")); return;;\n'
            for flag, values in node.choices.items()
        )
        cases.append(
            f"        {shlex.quote(key)})\n"
            f'          case "$prev" in\n{choices}          esac\n'
            f'          COMPREPLY=($(compgen -W {shlex.quote(words)} -- "$cur"));;'
        )
    commands = " ".join(sorted({name for n in nodes for name in n.commands}))
    return f"""# conveyor completion for bash (and zsh, through bashcompinit)
_conveyor() {{
    local cur prev path word i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    path=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case " {commands} " in
            *" $word "*) path="${{path:+$path }}$word";;
        esac
    done
    case "$path" in
{chr(10).join(cases)}
    esac
}}
complete -F _conveyor conveyor
"""


def zsh(nodes: list[Node]) -> str:
    return (
        "# conveyor completion for zsh: conveyor completion zsh\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash(nodes)
    )


def fish(nodes: list[Node]) -> str:
    lines = ["# conveyor completion for fish: conveyor completion fish", "complete -c conveyor -f"]
    for node in nodes:
        if node.path:
            seen = " && ".join(f"__fish_seen_subcommand_from {w}" for w in node.path)
            others = " ".join(sorted(node.commands))
            condition = seen + (f" && not __fish_seen_subcommand_from {others}" if others else "")
        else:
            condition = "__fish_use_subcommand"
        for name, text in node.commands.items():
            description = f" -d {shlex.quote(text)}" if text else ""
            lines.append(f"complete -c conveyor -n {shlex.quote(condition)} -a {name}{description}")
        for flag in node.flags:
            if not flag.startswith("--"):
                continue
            choices = node.choices.get(flag)
            argument = f" -r -a {shlex.quote(' '.join(choices))}" if choices else ""
            lines.append(
                f"complete -c conveyor -n {shlex.quote(condition)} -l {flag[2:]}{argument}"
            )
    return "\n".join(lines) + "\n"


def register(subparsers: Subparsers) -> None:
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script for SHELL. bash: source <(conveyor completion "
        "bash); zsh: source <(conveyor completion zsh); fish: conveyor completion fish > "
        "~/.config/fish/completions/conveyor.fish",
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=_completion)


def _completion(args: argparse.Namespace) -> int:
    from conveyor.cli.main import build_parser

    nodes = tree(build_parser())
    script = {"bash": bash, "zsh": zsh, "fish": fish}[args.shell](nodes)
    sys.stdout.write(script)
    return EXIT_OK
