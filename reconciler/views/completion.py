"""Shell completion scripts generated from the argument parser (`reconciler completion SHELL`):
commands and subcommands, every command's flags, the choices a flag or word takes, and tenant
names for `--target` read from `tenants/*.yaml` by the shell itself (no Python on each TAB).
bash and zsh share one script (zsh through bashcompinit); fish gets its own `complete` lines."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

ROOT = "_"  # the key of the top level (zsh refuses an empty key)
# The tenants of ./tenants/: each manifest's `metadata.name`, the only key at two spaces named so.
TENANTS_SH = "awk '/^  name:/ {print $2}' tenants/*.yaml tenants/*.yml 2>/dev/null"


@dataclass
class Node:
    words: list[str] = field(default_factory=list)  # subcommands, or a positional's choices
    flags: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)  # flag -> its values


def model(parser: argparse.ArgumentParser) -> dict[str, Node]:
    """Each command path ("plan", "sandbox serve") and what can follow it."""
    found: dict[str, Node] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        node = found.setdefault(path, Node())
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    node.words.append(name)
                    walk(sub, name if path == ROOT else f"{path} {name}")
            elif action.option_strings:
                if action.help == argparse.SUPPRESS:
                    continue
                longs = [o for o in action.option_strings if o.startswith("--")]
                node.flags += longs
                if action.choices:
                    for flag in action.option_strings:
                        node.choices[flag] = [str(c) for c in action.choices]
            elif action.choices:
                node.words += [str(c) for c in action.choices]

    walk(parser, ROOT)
    return found


def bash(parser: argparse.ArgumentParser) -> str:
    nodes = model(parser)

    def table(name: str, items: dict[str, str]) -> str:
        rows = "".join(f"  [{shlex.quote(k)}]={shlex.quote(v)}\n" for k, v in items.items())
        return f"declare -gA {name}=(\n{rows})\n"

    words = {path: " ".join(n.words) for path, n in nodes.items() if n.words}
    flags = {path: " ".join(n.flags) for path, n in nodes.items()}
    choices = {f"{path} {flag}": " ".join(values)
               for path, n in nodes.items() for flag, values in n.choices.items()}  # fmt: skip
    return (
        "# reconciler completion for bash (and zsh, through bashcompinit). Install:\n"
        "#   bash: reconciler completion bash > ~/.local/share/bash-completion/completions/"
        "reconciler\n"
        "#   zsh:  reconciler completion zsh > ~/.zfunc/reconciler.zsh; source it from ~/.zshrc\n"
        + table("_reconciler_words", words)
        + table("_reconciler_flags", flags)
        + table("_reconciler_choices", choices)
        + f"""_reconciler() {{
  # zsh (bashcompinit) hands over 1-based arrays with a 0-based COMP_CWORD: index as bash does.
  # (And no variable named `path` here: zsh ties it to $PATH.)
  [[ -n "${{ZSH_VERSION-}}" ]] && setopt local_options KSH_ARRAYS NULL_GLOB
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  local at="{ROOT}" w i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    [[ "$w" == -* ]] && continue
    local next="$w"
    [[ "$at" != "{ROOT}" ]] && next="$at $w"
    local known="${{_reconciler_words[$at]}}"
    if [[ " $known " == *" $w "* && -n "${{_reconciler_flags[$next]+x}}" ]]; then
      at="$next"
    fi
  done
  if [[ "$prev" == "--target" || "$prev" == "-target" ]]; then
    COMPREPLY=($(compgen -W "$({TENANTS_SH})" -- "$cur")); return
  fi
  local values="${{_reconciler_choices[$at $prev]}}"
  if [[ -n "$values" ]]; then COMPREPLY=($(compgen -W "$values" -- "$cur")); return; fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "${{_reconciler_flags[$at]}}" -- "$cur")); return
  fi
  COMPREPLY=($(compgen -W "${{_reconciler_words[$at]}}" -- "$cur"))
  [[ "$at" != "{ROOT}" ]] && COMPREPLY+=($(compgen -f -- "$cur"))
  return 0
}}
complete -o filenames -F _reconciler reconciler
"""
    )


def zsh(parser: argparse.ArgumentParser) -> str:
    return (
        "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n"
        + bash(parser)
    )


def fish(parser: argparse.ArgumentParser) -> str:
    nodes = model(parser)
    lines = [
        "# reconciler completion for fish. Install:",
        "#   reconciler completion fish > ~/.config/fish/completions/reconciler.fish",
        "complete -c reconciler -f",
        # fish refuses a glob that matches nothing in a command's arguments, but not in `set`.
        "function __reconciler_tenants; set -l files tenants/*.yaml tenants/*.yml; "
        "test (count $files) -gt 0; and awk '/^  name:/ {print $2}' $files; end",
    ]
    for path, node in nodes.items():
        parts = [] if path == ROOT else path.split()
        if path == ROOT:
            condition = "__fish_use_subcommand"
        else:
            condition = " ; and ".join(f"__fish_seen_subcommand_from {p}" for p in parts)
            if node.words:
                condition += f" ; and not __fish_seen_subcommand_from {' '.join(node.words)}"
        if node.words:
            lines.append(f"complete -c reconciler -n {shlex.quote(condition)} -a "
                         f"{shlex.quote(' '.join(node.words))}")  # fmt: skip
        if path == ROOT:
            continue
        lines.append(f"complete -c reconciler -n {shlex.quote(condition)} -F")  # PATH, FILE
        for flag in node.flags:
            name = flag.removeprefix("--")
            values = node.choices.get(flag)
            if name == "target":
                extra = " -x -a '(__reconciler_tenants)'"
            elif values:
                extra = f" -x -a {shlex.quote(' '.join(values))}"
            else:
                extra = ""
            lines.append(f"complete -c reconciler -n {shlex.quote(condition)} -l {name}{extra}")
    return "\n".join(lines) + "\n"


SHELLS = {"bash": bash, "zsh": zsh, "fish": fish}
