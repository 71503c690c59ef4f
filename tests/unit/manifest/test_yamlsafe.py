"""yamlsafe builds plain data from the parser's events (no node graph): what it accepts is what
PyYAML's safe loader accepts, with positions, and its refusals name where."""

from __future__ import annotations

import pytest
import yaml

from reconciler import yamlsafe

SAMPLE = """\
a: 1
b: [x, 'y', 2.5, true, null, 2024-01-02]
c:
  - k: v
    n: &anchor {deep: [1, 2]}
  - *anchor
  - plain
d: ~
"""


def test_data_is_what_the_safe_loader_builds() -> None:
    (doc,) = yamlsafe.load_documents(SAMPLE)
    expected = yaml.safe_load(SAMPLE)
    expected["b"][5] = "2024-01-02"  # timestamps stay the text the manifest holds
    assert doc.data == expected


def test_positions_of_keys_items_and_aliases() -> None:
    (doc,) = yamlsafe.load_documents(SAMPLE)
    assert doc.line == 1
    assert doc.position(()) == (1, 1)
    assert doc.position(("b",)) == (2, 1)  # a mapping value is placed at its key
    assert doc.position(("b", 1)) == (2, 8)  # a sequence item at its own start
    assert doc.position(("c", 0, "n", "deep")) == (5, 17)
    assert doc.position(("c", 1)) == (6, 5)  # the alias, where it is used
    assert doc.position(("c", 1, "deep")) == (6, 5)  # inside an alias: the alias
    assert doc.position(("c", 2)) == (7, 5)
    assert doc.position(("c", 9)) == (3, 1)  # no such item: the nearest ancestor
    assert doc.position(("nope", "x")) == (1, 1)


def test_every_document_of_a_stream_and_its_first_line() -> None:
    docs = yamlsafe.load_documents("---\na: 1\n---\n\n\nb: [1]\n...\n")
    assert [d.data for d in docs] == [{"a": 1}, {"b": [1]}]
    assert [d.line for d in docs] == [2, 6]
    assert docs[1].position(("b", 0)) == (6, 5)


def test_a_long_sequence_keeps_its_positions_in_one_array() -> None:
    text = "p:\n" + "".join(f"  - Patient/{i}\n" for i in range(1000))
    (doc,) = yamlsafe.load_documents(text)
    assert list(doc.positions) == [(), ("p",)]
    assert len(doc.items[("p",)]) == 2000
    assert doc.position(("p", 999)) == (1001, 5)


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("a: *nope\n", "invalid YAML: found undefined alias 'nope'", 1, 4),
        ("a: &x 1\nb: &x 2\n", "invalid YAML: the anchor &x is defined twice", 2, 4),
        ("a: &x [1, *x]\n", f"nesting is deeper than {yamlsafe.MAX_DEPTH} levels", 1, 11),
        ("? [k]\n: v\n", "mapping keys must be plain strings", 1, 3),
        ("a: &x [1]\n*x : v\n", "mapping keys must be plain strings", 2, 1),
        ("a: 1\na: 2\n", "duplicate key 'a'", 2, 1),
        ("<<: {a: 1}\n", "YAML merge keys (<<) are not supported", 1, 1),
        ("a: !!python/name:os.system x\n", "unsupported YAML tag 'tag:yaml.org,2002:python/name:os.system'", 1, 4),
        ("a: !!set {x}\n", "unsupported YAML tag 'tag:yaml.org,2002:set'", 1, 4),
        ("a: !!seq {x: 1}\n", "unsupported YAML tag 'tag:yaml.org,2002:seq'", 1, 4),
        ("a: " + "[" * 70 + "]" * 70 + "\n", f"nesting is deeper than {yamlsafe.MAX_DEPTH} levels", 1, 68),
    ],
)  # fmt: skip
def test_refusals_name_where(text: str, message: str, line: int, column: int) -> None:
    with pytest.raises(yamlsafe.YamlProblem) as info:
        yamlsafe.load_documents(text)
    assert info.value.message.startswith(message)
    assert (info.value.line, info.value.column) == (line, column)


def test_an_anchored_scalar_may_be_a_key() -> None:
    (doc,) = yamlsafe.load_documents("a: &k name\n*k : 2\n")
    assert doc.data == {"a": "name", "name": 2}


def test_aliases_count_what_they_repeat() -> None:
    # 10 x 10 x 10 items through aliases: 1,111 + 11 + 3 nodes, each alias the nodes it repeats.
    text = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    text += "c: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    builder = yamlsafe._Builder(max_nodes=10**6)
    events = yaml.parse(text, Loader=yamlsafe._LOADER)
    next(events), next(events)  # stream and document start
    builder.document(events)
    assert builder.nodes == 1 + 11 + (1 + 10 * 11) + (1 + 10 * (1 + 10 * 11))
