"""What a new user meets in the first hour (issue 30): `init`, `sandbox load`, completion,
"did you mean", errors that name the embedded sandbox, help text on every option."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory with no server configured: the embedded sandbox, seeded."""
    for var in ("MEDPLUM_BASE_URL", "MEDPLUM_CLIENT_ID", "MEDPLUM_CLIENT_SECRET", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["sandbox", "seed", "--patients", "20"]) == 0
    return tmp_path


def test_init_then_validate_then_plan(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["init"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "Wrote tenants/example-clinic.yaml", "Wrote schemas/tenant.schema.json",
        "Wrote .pre-commit-config.yaml", "Wrote .github/workflows/tenancy.yml",
    ]  # fmt: skip
    assert "Next: reconciler validate" in err
    manifest = (fresh / "tenants/example-clinic.yaml").read_text()
    assert manifest.startswith("# yaml-language-server: $schema=../schemas/tenant.schema.json\n")
    assert json.loads((fresh / "schemas/tenant.schema.json").read_text())["title"]
    assert (fresh / ".github/workflows/tenancy.yml").read_text() == (
        ROOT / "examples/ci/github-actions.yml"
    ).read_text()
    assert "id: reconciler-validate" in (fresh / ".pre-commit-config.yaml").read_text()
    assert main(["validate"]) == 0
    assert capsys.readouterr().out == "1 tenant in 1 file is valid.\n"
    assert main(["plan", "--detailed-exitcode"]) == 2  # the starter's demo patients to add
    out = capsys.readouterr().out
    assert "Plan: 2 patients and 2 other resources to update, 4 accounts to add, 0 accounts " in out
    assert "Access: 1 grant to add, 0 grants to revoke, on 1 membership." in out
    # Nothing is overwritten: a second init refuses, names every file, writes nothing.
    before = manifest
    (fresh / "tenants/example-clinic.yaml").write_text(before + "# mine\n")
    assert main(["init"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: init would overwrite tenants/example-clinic.yaml, schemas/")
    assert (fresh / "tenants/example-clinic.yaml").read_text() == before + "# mine\n"


def test_sandbox_load_puts_your_resources_in(
    fresh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Location", "id": "my-loc", "name": "Mine"}},
        {"resource": {"resourceType": "Practitioner", "name": [{"family": "New"}]}},
    ]}  # fmt: skip
    (fresh / "mine.json").write_text(json.dumps(bundle))
    capsys.readouterr()
    assert main(["sandbox", "load", "mine.json"]) == 0
    assert capsys.readouterr().out == (
        "Loaded 2 resources into .reconciler/sandbox.sqlite (1 Location, 1 Practitioner; "
        "2 new, 0 replaced).\n"
    )
    assert main(["accounts", "Location/my-loc"]) == 0  # there, with no accounts yet
    assert capsys.readouterr().out == ""
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO('{"resourceType": "Location", '
                        '"id": "my-loc", "name": "Renamed"}'))  # fmt: skip
    assert main(["sandbox", "load", "-"]) == 0
    assert "(1 Location; 0 new, 1 replaced)" in capsys.readouterr().out
    (fresh / "bad.json").write_text('{"resourceType": "Location",\n "id": }')
    assert main(["sandbox", "load", "bad.json"]) == 1
    assert capsys.readouterr().err == "Error: bad.json:2:8: invalid JSON: Expecting value\n"
    (fresh / "bad.json").write_text('[{"name": "x"}]')
    assert main(["sandbox", "load", "bad.json"]) == 1
    assert (
        capsys.readouterr().err == "Error: bad.json: [0]: not a FHIR resource (no resourceType)\n"
    )


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["pln"], "; did you mean 'plan'?"),
        (["sandbox", "sed"], "; did you mean 'seed'?"),
        (["apply", "--auto-aprove"], "; did you mean '--auto-approve'?"),
        (["sandbox", "seed", "--patiens", "3"], "; did you mean '--patients'?"),
        (["apply", "--propagate-with", "asnc"], "; did you mean 'async'?"),
        (["plan", "examples/tenants", "--target", "northsde"], "; did you mean 'northside'?"),
    ],
)  # fmt: skip
def test_a_typo_gets_the_nearest_name(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert hint in err.splitlines()[0], err
    assert "Traceback" not in err


def test_errors_name_the_embedded_sandbox_not_its_port(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["accounts", "Patient/nope"]) == 1
    assert capsys.readouterr().err == (
        "Error: Patient/nope does not exist on embedded sandbox (.reconciler/sandbox.sqlite)\n"
    )
    assert main(["force-unlock", "12345"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "Error: No lock with id 12345; nothing was changed"
    )


def _options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{path} {name}")
        elif action.option_strings and action.help != argparse.SUPPRESS:
            found.append((f"{path} {action.option_strings[0]}", action))
    return found


def test_every_option_of_every_command_says_what_it_does_and_its_default() -> None:
    missing, no_default = [], []
    for where, action in _options(build_parser(), "reconciler"):
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if not action.help:
            missing.append(where)
        elif (action.default not in (None, False, [], argparse.SUPPRESS)
              and "default" not in action.help):  # fmt: skip
            no_default.append(where)
    assert missing == [] and no_default == []
    data = {w.split()[-1] for w, a in _options(build_parser(), "") if a.dest in ("data",)}
    assert data == {"--sandbox-data"}  # one spelling in every command


def test_bash_completion_completes_commands_flags_choices_and_tenants(tmp_path: Path) -> None:
    script = tmp_path / "reconciler.bash"
    assert subprocess.run([sys.executable, "-m", "reconciler", "completion", "bash"], cwd=ROOT,
                          stdout=script.open("w"), check=False).returncode == 0  # fmt: skip
    probe = tmp_path / "probe.sh"
    probe.write_text(
        f"source {script}\n"
        't() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); '
        '_reconciler; echo "${COMPREPLY[*]}"; }\n'
        "t reconciler pl\nt reconciler plan --det\nt reconciler plan --format ''\n"
        "t reconciler sandbox s\nt reconciler plan --target ''\nt reconciler init --he\n"
    )
    out = subprocess.run(["bash", str(probe)], cwd=ROOT / "examples", capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    assert out == ["plan", "--detailed-exitcode", "text json markdown", "serve seed",
                   "northside research-registry southside", "--help"]  # fmt: skip


ZSH_PROBE = """source {script}
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMPREPLY=(); _reconciler
      print -r -- "${{COMPREPLY[*]}}"; }}
t reconciler plan --det; t reconciler plan --format ''; t reconciler plan --target ''
t reconciler sandbox serve --lat
"""
FISH_PROBE = """source {script}
for line in 'reconciler pl' 'reconciler plan --det' 'reconciler plan --format ' \
    'reconciler plan --target ' 'reconciler sandbox s'
    echo (complete -C $line | sort)
end
"""


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_complete_commands_flags_choices_and_tenants(
    shell: str, tmp_path: Path
) -> None:
    import shutil

    binary = shutil.which(shell)
    if binary is None:
        if os.environ.get("RECONCILER_REQUIRE_SHELLS") == "1":
            pytest.fail(f"{shell} is missing though .ci/run installed it")
        pytest.skip(f"{shell} is not installed here (.ci/run installs it)")
    script = tmp_path / f"reconciler.{shell}"
    script.write_text(subprocess.run([sys.executable, "-m", "reconciler", "completion", shell],
                                     cwd=ROOT, capture_output=True, text=True, check=True).stdout)  # fmt: skip
    probe = tmp_path / f"probe.{shell}"
    probe.write_text((ZSH_PROBE if shell == "zsh" else FISH_PROBE).format(script=script))
    done = subprocess.run([binary, str(probe)], cwd=ROOT / "examples", capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tenants = "northside research-registry southside"
    if shell == "zsh":  # zsh filters the candidates itself: all of a place's are offered
        assert "--detailed-exitcode" in lines[0].split() and "--out" in lines[0].split()
        assert [sorted(line.split()) for line in lines[1:3]] == [
            ["json", "markdown", "text"], tenants.split()
        ]  # fmt: skip
        assert "--latency-ms" in lines[3].split() and "--detailed-exitcode" not in lines[3]
    else:
        assert lines == ["plan", "--detailed-exitcode", "json markdown text", tenants,
                         "seed serve"]  # fmt: skip
