"""The README is executable: every shell block marked `<!-- runnable -->` (an HTML comment, so
GitHub shows nothing) runs, in order, in a copy of the repository against the embedded sandbox;
a `<!-- runnable file=PATH -->` block is written to PATH first; a `<!-- output -->` block must
match what the command before it printed (ids, times and ports may vary). Every other shell
block says why it is not run (`<!-- not runnable: … -->`). Each line's exit code is 0 unless it
ends with `# exit N`. stdin is a terminal that answers `yes` (apply's prompt)."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = re.compile(r"^<!-- (runnable|output|not runnable: .+?)(?: (file=\S+))? -->$")
SHELL_FENCES = ("```", "```sh", "```bash", "```console")
EXIT = re.compile(r"#\s*exit (\d+)\b")


@dataclass
class Block:
    kind: str  # runnable | output | not runnable: why
    fence: str
    text: str
    line: int
    file: str | None = None


def blocks(readme: str) -> list[Block]:
    """Every fenced block, with the marker on the line before it (a block inside a list item
    is indented: the indent is taken off its lines)."""
    found: list[Block] = []
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            fence, start = lines[i].strip(), i
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            mark = MARK.match(lines[i - 1].strip()) if i else None
            kind = mark[1] if mark else ""
            file = mark[2].removeprefix("file=") if mark and mark[2] else None
            body = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            found.append(Block(kind, fence, body, start + 1, file))
            i = end + 1
            continue
        i += 1
    return found


def commands(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def normalise(text: str) -> list[str]:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"0f1e\d{4}-…-\d{12}", "<id>", text)  # the README's shortened demo ids
    text = re.sub(r"\b\d+(\.\d+)? (s|ms|min)\b", "<t>", text)
    text = re.sub(r"127\.0\.0\.1:\d+", "<host>", text)
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    master, slave = pty.openpty()  # stdin is a terminal: apply asks, and gets `yes`
    os.write(master, b"yes\n")
    try:
        done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdin=slave,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        os.close(slave)
        os.close(master)
    logs = re.compile(r"^\{.*\}$")  # structured log lines (stderr is not a terminal: JSON)
    err = "\n".join(line for line in done.stderr.splitlines() if not logs.match(line))
    return done.returncode, done.stdout, err


def test_every_shell_block_is_marked() -> None:
    unmarked = [b.line for b in blocks((ROOT / "README.md").read_text())
                if b.fence in SHELL_FENCES and not b.kind]  # fmt: skip
    assert unmarked == [], f"README.md blocks at lines {unmarked} say neither runnable nor why not"


def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source, target = ROOT / name, copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MEDPLUM_", "RECONCILER_")) and k not in ("CI", "NO_COLOR")}  # fmt: skip
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path / "home")  # the plan-signing key lands here, not in ~
    ran = 0
    last: tuple[str, str, str] | None = None  # command, stdout, stderr
    for block in blocks((copy / "README.md").read_text()):
        where = f"README.md:{block.line}"
        if block.kind == "runnable" and block.file:
            path = copy / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
        elif block.kind == "runnable":
            for command in commands(block.text):
                wanted = EXIT.search(command)
                code, out, err = run(command, copy, env)
                expected = int(wanted[1]) if wanted else 0
                assert code == expected, f"{where}: `{command}` exited {code}\n{out}\n{err}"
                last, ran = (command, out, err), ran + 1
        elif block.kind == "output":
            assert last is not None, f"{where}: an output block before any command"
            command, out, err = last
            assert normalise(block.text) == normalise(out + "\n" + err), (
                f"{where}: `{command}` printed\n{out}{err}"
            )
    assert ran >= 20  # the README's examples, not a handful
