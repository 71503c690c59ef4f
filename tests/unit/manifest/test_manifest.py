"""Manifest loading: every schema rule, cross-file rule, location reporting and YAML limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import yamlsafe
from reconciler.cli import main
from reconciler.errors import ManifestError
from reconciler.manifest import load_manifests
from reconciler.model import Membership, SelectorKind

DATA = Path(__file__).resolve().parents[2] / "data"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "tenants"

# file -> the exact one-line error `reconciler validate FILE` prints (golden, reviewed by hand)
BAD_CASES = {
    "01_yaml_syntax.yaml": (
        "8:1",
        "invalid YAML: a `[` list that is never closed with `]` (expected ',' or ']', but got "
        "'<stream end>')",
    ),
    "02_unknown_top_key.yaml": (
        "8:1",
        "extra: unknown key 'extra' (allowed: apiVersion, kind, metadata, spec)",
    ),
    "03_unknown_spec_key.yaml": (
        "8:3",
        "spec.propogate: unknown key 'propogate'; did you mean 'propagate'? (allowed: access, account, membership, patients, propagate, resources)",
    ),
    "04_wrong_api_version.yaml": (
        "1:1",
        "apiVersion: expected 'reconciler/v1', got 'reconciler/v2'; did you mean 'reconciler/v1'?",
    ),
    "05_wrong_kind.yaml": ("2:1", "kind: expected 'Tenant', got 'Tenants'; did you mean 'Tenant'?"),
    "06_missing_metadata.yaml": ("1:1", "(document): missing required key 'metadata'"),
    "07_missing_name.yaml": ("3:1", "metadata: missing required key 'name'"),
    "08_bad_name_upper.yaml": (
        "4:3",
        "metadata.name: 'North' is not a valid tenant name (lowercase letters, digits and '-', at most 63, not starting or ending with '-')",
    ),
    "09_bad_name_type.yaml": ("4:3", "metadata.name: expected a string, got integer"),
    "10_missing_account.yaml": ("5:1", "spec: missing required key 'account'"),
    "11_bad_account_ref.yaml": (
        "6:3",
        "spec.account: 'organization-o1' is not a reference of the form 'Type/id'",
    ),
    "12_account_identifier_no_type.yaml": ("6:3", "spec.account: missing required key 'type'"),
    "13_account_identifier_bad.yaml": (
        "7:5",
        "spec.account.identifier: 'no-pipe' is not an identifier of the form 'system|value'",
    ),
    "14_bad_membership.yaml": (
        "7:3",
        "spec.membership: expected one of: authoritative, additive; got 'exclusive'",
    ),
    "15_propagate_string.yaml": ("7:3", "spec.propagate: expected a boolean, got string"),
    "16_no_patients_no_access.yaml": (
        "5:1",
        "spec: a tenant needs at least one of 'patients', 'resources' or 'access'",
    ),
    "17_patients_not_list.yaml": ("7:3", "spec.patients: expected a list, got string"),
    "18_selector_wrong_type.yaml": (
        "8:7",
        "spec.patients[0]: 'Observation/o1' is not a reference of the form 'Patient/<id>'",
    ),
    "19_selector_unknown_key.yaml": (
        "8:7",
        "spec.patients[0].mrn: unknown key 'mrn' (allowed: identifier)",
    ),
    "20_selector_identifier_bad.yaml": (
        "8:7",
        "spec.patients[0].identifier: 'A-1001' is not an identifier of the form 'system|value'",
    ),
    "21_search_count.yaml": (
        "8:7",
        "spec.patients[0].search: result-control parameter '_count' is not allowed in a search selector",
    ),
    "22_search_sort.yaml": (
        "8:7",
        "spec.patients[0].search: result-control parameter '_sort' is not allowed in a search selector",
    ),
    "23_search_empty.yaml": ("8:7", "spec.patients[0].search: must not be empty"),
    "24_selector_number.yaml": (
        "8:7",
        "spec.patients[0]: expected 'Patient/<id>', {identifier: 'system|value'} or {search: '<query>'}, got integer",
    ),
    "25_python_tag.yaml": (
        "8:7",
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    "26_duplicate_key.yaml": ("7:3", "duplicate key 'account'"),
    "27_alias_bomb.yaml": (  # the alias that takes the document past the limit
        "5:29",
        "document expands to more than 100,000 nodes (alias expansion bomb?)",
    ),
    "28_latin1.yaml": ("4:1", "file is not valid UTF-8 (byte 0xe9 at offset 60)"),
    "29_not_a_mapping.yaml": ("1:1", "(document): expected a mapping, got list"),
    "30_scalar_doc.yaml": ("1:1", "(document): expected a mapping, got string"),
    "31_tab_indent.yaml": (
        "4:1",
        "invalid YAML: a tab in the indentation: YAML indents with spaces only (found "
        "character '\\t' that cannot start any token)",
    ),
    "32_merge_key.yaml": ("5:3", "YAML merge keys (<<) are not supported"),
    "33_name_trailing_dash.yaml": (
        "4:3",
        "metadata.name: 'north-' is not a valid tenant name (lowercase letters, digits and '-', at most 63, not starting or ending with '-')",
    ),
    "34_second_doc_bad.yaml": (
        "15:15",
        "spec.patients[0].identifier: 'x' is not an identifier of the form 'system|value'",
    ),
    "35_binary.yaml": ("1:1", "file is binary (contains NUL bytes), not YAML"),
    "36_empty.yaml": ("1:1", "file holds no YAML documents"),
    "37_access_policy_not_a_policy.yaml": (
        "8:7",
        "spec.access[0].policy: 'Organization/o1' is not a reference of the form 'AccessPolicy/<id>'",
    ),
    "38_access_member_wrong_ref.yaml": (
        "10:11",
        "spec.access[0].members[0]: 'Practitioner/x' is not a reference of the form 'ProjectMembership/<id>'",
    ),
    "39_access_member_search_count.yaml": (
        "10:11",
        "spec.access[0].members[0].search: result-control parameter '_count' is not allowed in a search selector",
    ),
    "40_access_member_twice.yaml": (
        "11:11",
        "spec.access[0].members[1]: member 'profile Practitioner/x' is listed twice under AccessPolicy/p1 in tenant 't1' (first at line 10)",
    ),
    "41_access_bad_parameter.yaml": (
        "9:7",
        "spec.access[0].parameter: '%org' is not a policy parameter name like 'organization'",
    ),
    "42_access_no_policy.yaml": ("8:7", "spec.access[0]: missing required key 'policy'"),
    "43_resources_patient.yaml": (
        "8:7",
        "spec.resources[0]: Patient belongs under spec.patients, not spec.resources",
    ),
    "44_resources_compartment_type.yaml": (
        "8:7",
        "spec.resources[0]: Observation is in the Patient compartment: it follows its patient's accounts (list the patient under spec.patients)",
    ),
    "45_resources_identifier_no_value.yaml": (
        "8:7",
        "spec.resources[0]: missing required key 'identifier'",
    ),
    "47_search_encoded_offset.yaml": (
        "8:7",
        "spec.patients[0].search: result-control parameter '_offset' is not allowed in a search selector (written percent-encoded)",
    ),
    "46_resources_search_count.yaml": (
        "8:7",
        "spec.resources[0].search: result-control parameter '_count' is not allowed in a search selector",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_manifest_gives_exact_one_line_error(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = DATA / "bad" / name
    position, message = BAD_CASES[name]
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == f"{path.as_posix()}:{position}: error: {message}"
    assert lines[-1] == "Error: 1 problem found in the manifests."
    assert out == ""
    assert "Traceback" not in err


def test_every_bad_file_is_covered() -> None:
    assert sorted(p.name for p in (DATA / "bad").iterdir()) == sorted(BAD_CASES)
    assert len(BAD_CASES) >= 25


def test_examples_load_into_typed_tenants() -> None:
    manifests = load_manifests([str(EXAMPLES)])
    assert [t.name for t in manifests.tenants] == ["northside", "research-registry", "southside"]
    north, research, south = manifests.tenants
    assert north.account.reference == "Organization/0f1e0001-0000-4000-8000-000000000001"
    (grant,) = north.access
    assert (grant.policy, grant.parameter) == (
        "AccessPolicy/0f1e0004-0000-4000-8000-000000000001",
        "organization",
    )
    assert [(m.kind.value, m.value) for m in grant.members] == [
        ("id", "ProjectMembership/0f1e0006-0000-4000-8000-000000000001"),
        ("identifier", "https://example.org/staff|n-0002"),
    ]
    assert [m.kind.value for m in south.access[0].members] == ["profile", "search"]
    assert north.membership is Membership.AUTHORITATIVE and north.propagate is True
    assert [s.kind for s in north.patients] == [
        SelectorKind.ID,
        SelectorKind.ID,
        SelectorKind.IDENTIFIER,
        SelectorKind.SEARCH,
    ]
    assert north.patients[2].value == "http://hospital.example/mrn|A-1003"
    assert north.patients[2].location.line == 16
    assert research.membership is Membership.ADDITIVE and research.propagate is False
    assert south.account.reference is None
    assert (south.account.identifier, south.account.type) == (
        "https://example.org/orgs|south",
        "Organization",
    )
    assert manifests.files == tuple(
        (EXAMPLES / n).as_posix() for n in ("northside.yaml", "research.yaml", "southside.yaml")
    )
    assert manifests.digest.startswith("sha256:") and len(manifests.digest) == 71


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _tenant(name: str, account: str, patients: str = "[Patient/p1]") -> str:
    return (
        f"apiVersion: reconciler/v1\nkind: Tenant\nmetadata:\n  name: {name}\n"
        f"spec:\n  account: {account}\n  patients: {patients}\n"
    )


def test_cross_file_rules_report_every_problem(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", _tenant("north", "Organization/o1"))
    _write(tmp_path, "b.yaml", _tenant("north", "Organization/o2"))
    _write(tmp_path, "c.yml", _tenant("south", "Organization/o1", "[Patient/p1, Patient/p1]"))
    with pytest.raises(ManifestError) as info:
        load_manifests([str(tmp_path)])
    a, b, c = (f"{tmp_path.as_posix()}/{n}" for n in ("a.yaml", "b.yaml", "c.yml"))
    assert info.value.problems == [
        f"{b}:4:3: error: metadata.name: duplicate tenant name 'north' (first defined at {a}:4)",
        f"{c}:6:3: error: spec.account: account Organization/o1 is already declared by tenant "
        f"'north' ({a}:6)",
        f"{c}:7:26: error: spec.patients[1]: selector 'Patient/p1' is listed twice in tenant "
        "'south' (first at line 7)",
    ]


def test_identifier_accounts_count_as_duplicates(tmp_path: Path) -> None:
    acct = '{identifier: "https://example.org/orgs|x", type: Organization}'
    _write(tmp_path, "a.yaml", _tenant("a", acct))
    _write(tmp_path, "b.yaml", _tenant("b", acct))
    with pytest.raises(ManifestError) as info:
        load_manifests([str(tmp_path)])
    assert len(info.value.problems) == 1
    assert (
        "account Organization?identifier=https://example.org/orgs|x is already declared"
        in (info.value.problems[0])
    )


def test_multi_document_file_and_defaults(tmp_path: Path) -> None:
    text = _tenant("a", "Organization/o1") + "---\n" + _tenant("b", "Organization/o2")
    _write(tmp_path, "multi.yaml", text)
    manifests = load_manifests([str(tmp_path / "multi.yaml")])
    assert [t.name for t in manifests.tenants] == ["a", "b"]
    assert manifests.tenants[1].location.line == 12
    assert all(t.membership is Membership.AUTHORITATIVE and t.propagate for t in manifests.tenants)


def test_every_problem_in_every_file_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, "a.yaml", _tenant("A", "Organization/o1"))
    _write(tmp_path, "b.yaml", _tenant("b", "bad", "oops"))
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    assert err[0].startswith(f"{tmp_path.as_posix()}/a.yaml:4:3: error: metadata.name:")
    assert err[1].startswith(f"{tmp_path.as_posix()}/b.yaml:6:3: error: spec.account:")
    assert err[2].startswith(f"{tmp_path.as_posix()}/b.yaml:7:3: error: spec.patients:")
    assert err[3] == "Error: 3 problems found in the manifests."


def test_file_over_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsafe, "MAX_FILE_BYTES", 100)
    path = _write(tmp_path, "big.yaml", "# " + "x" * 200 + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([str(path)])
    assert info.value.problems == [
        f"{path.as_posix()}:1:1: error: file is 203 bytes, over the 100-byte limit for a manifest"
    ]


def test_deep_nesting_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "deep.yaml", "a: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ManifestError) as info:
        load_manifests([str(path)])
    assert "nesting is deeper than 64 levels" in info.value.problems[0]


def test_missing_path_and_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "nope"), str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{tmp_path / 'nope'}: error: no such file or directory",
        f"{tmp_path / 'empty'}: error: no manifest files (*.yaml, *.yml) in directory",
        "Error: 2 problems found in the manifests.",
    ]


def test_validate_success_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out == "3 tenants in 3 files are valid.\n"


def test_usage_errors_exit_1_never_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--no-such-flag"]) == 1
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert main([]) == 1
    assert main(["frobnicate"]) == 1


def test_unexpected_errors_become_one_line_and_a_details_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import stat

    from reconciler.commands import validate

    def boom(options: object) -> int:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(validate, "run", boom)
    assert main(["validate", str(EXAMPLES)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: unexpected RuntimeError; details written to ")
    details = err.rsplit(" ", 1)[1]
    assert "something nobody expected" in Path(details).read_text()
    assert stat.S_IMODE(os.stat(details).st_mode) == 0o600
    Path(details).unlink()


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.commands import validate

    def interrupted(options: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(validate, "run", interrupted)
    assert main(["validate", str(EXAMPLES)]) == 130
    assert capsys.readouterr().err == "Interrupted.\n"


def test_every_unknown_key_of_a_block_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "t.yaml",
        "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: t}\nspec:\n"
        "  account: Organization/o1\n  membrship: additive\n  propogate: false\n  patients: []\n",
    )
    with pytest.raises(ManifestError) as info:
        load_manifests([str(path)])
    allowed = "(allowed: access, account, membership, patients, propagate, resources)"
    assert info.value.problems == [
        f"{path.as_posix()}:6:3: error: spec.membrship: unknown key 'membrship'; did you mean "
        f"'membership'? {allowed}",
        f"{path.as_posix()}:7:3: error: spec.propogate: unknown key 'propogate'; did you mean "
        f"'propagate'? {allowed}",
    ]


def test_a_link_out_of_the_manifests_tree_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "secret.yaml"
    outside.write_text("root:$6$not-a-real-hash:19000:0:99999:7:::\n")
    tree = tmp_path / "tenants"
    tree.mkdir()
    (tree / "evil.yaml").symlink_to(outside)
    with pytest.raises(ManifestError) as info:
        load_manifests([str(tree)])
    assert info.value.problems == [
        f"{(tree / 'evil.yaml').as_posix()}: error: a link to a file outside {tree}; not read"
    ]
    assert "not-a-real-hash" not in str(info.value.problems)


def test_a_saved_plan_never_replaces_a_link_or_device(tmp_path: Path) -> None:
    from reconciler.errors import PlanFileError
    from reconciler.model import Plan
    from reconciler.plan.planfile import save_plan

    target = tmp_path / "real.json"
    target.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(PlanFileError, match="not a regular file"):
        save_plan(Plan(changes=(), server="sandbox:x"), str(link))
    assert link.is_symlink() and target.read_text() == "keep me"
    with pytest.raises(PlanFileError, match="not a regular file"):
        save_plan(Plan(changes=(), server="sandbox:x"), "/dev/null")


def test_the_size_limit_holds_for_what_is_read_not_what_a_file_reports(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/zero reports 0 bytes and never ends (it grew validate to 9 GB): the cap is on the
    bytes read."""
    from reconciler.cli import main

    monkeypatch.setattr(yamlsafe, "MAX_FILE_BYTES", 1000)
    assert main(["validate", "/dev/zero"]) == 1
    err = capsys.readouterr().err
    assert (
        err.splitlines()[0]
        == "/dev/zero:1:1: error: file is over the 1,000-byte limit for a manifest"
    )


def test_errors_in_a_long_patient_list_name_their_own_lines(tmp_path: Path) -> None:
    # Past 100 entries plain `Patient/<id>` strings skip jsonschema (manifest/schema_errors.py);
    # the others are still checked and their errors keep their places in the file.
    entries = [f"    - Patient/p{i}\n" for i in range(300)]
    entries[7] = "    - Patient/has space\n"
    entries[150] = "    - {identifier: 'urn:mrn|1', extra: 1}\n"
    entries[299] = "    - Practitioner/x\n"
    path = _write(
        tmp_path, "t.yaml",
        "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: t}\nspec:\n"
        "  account: Organization/o1\n  patients:\n" + "".join(entries),
    )  # fmt: skip
    with pytest.raises(ManifestError) as info:
        load_manifests([str(path)])
    lines = [
        p.split(": error: ")[0].removeprefix(path.as_posix() + ":") for p in info.value.problems
    ]
    assert lines == ["14:7", "157:33", "306:7"]  # entry k is on line 7 + k; its key `extra`
    assert [p.split(": error: ")[1].split(":")[0] for p in info.value.problems] == [
        "spec.patients[7]", "spec.patients[150].extra", "spec.patients[299]"
    ]  # fmt: skip


def test_a_long_plain_list_is_not_an_alias_bomb(tmp_path: Path) -> None:
    # 150,000 patients in one document: more nodes than 100,000, fewer than its characters.
    entries = "".join(f"    - Patient/p{i}\n" for i in range(150_000))
    path = _write(
        tmp_path, "t.yaml",
        "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: t}\nspec:\n"
        "  account: Organization/o1\n  patients:\n" + entries,
    )  # fmt: skip
    (tenant,) = load_manifests([str(path)]).tenants
    assert len(tenant.patients) == 150_000


@pytest.mark.parametrize(
    ("text", "position", "words", "caret"),
    [
        ("  patients:\n    - Patient/a\n  - Patient/b\n", "9:3",
         "a list item `- …` is indented differently from the items above it", "      |   ^"),
        ("  patients:\n  - Patient/a\n propagate: true\n", "9:2",
         "this line is indented differently from the lines above it", "      |  ^"),
        ("  patients: [Patient/a]\n  membership: additive: yes\n", "8:23",
         "a second ': ' on this line", "      |                       ^"),
    ],
)  # fmt: skip
def test_yaml_syntax_errors_say_what_is_wrong_and_show_the_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    position: str,
    words: str,
    caret: str,
) -> None:
    head = "apiVersion: reconciler/v1\nkind: Tenant\nmetadata:\n  name: t\nspec:\n"
    whole = head + "  account: Organization/o1\n" + text
    path = _write(tmp_path, "t.yaml", whole)
    assert main(["validate", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{path.as_posix()}:{position}: error: invalid YAML: {words}")
    line = int(position.split(":")[0])
    assert lines[1] == f"{line:>5} | {whole.splitlines()[line - 1]}"
    assert lines[2] == caret
    assert lines[-1] == "Error: 1 problem found in the manifests."
