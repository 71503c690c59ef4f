"""Safe YAML loading that remembers where every node came from.

PyYAML's composer gives us nodes with marks; we build plain Python data from them ourselves so
that (a) every value's `file:line:column` is known for error messages, (b) only the core YAML tags
are accepted (no Python object tags), and (c) alias expansion is metered, so a "billion laughs"
document is rejected instead of eating memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# 64 MiB: a million-patient tenant is ~55 MB of `- Patient/<uuid>` lines; the limit is there so
# /dev/zero or a pipe cannot grow without end, not to cap a real manifest.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Nodes a document may build: at least this many, and never more than its text has characters.
# Without aliases every node takes a character or more, so only alias expansion (a "billion
# laughs" bomb) can pass the text's length; a long plain patient list never does.
MAX_NODES_PER_DOCUMENT = 100_000
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = {
    _STR,
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class YamlProblem(Exception):
    def __init__(self, message: str, line: int = 1, column: int = 1, excerpt: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.excerpt = excerpt  # the offending line and a caret under the column, or ""


def _source_line(text: str, line: int) -> str | None:
    """Line `line` (1-based) of `text`, splitting no further than it (a manifest can be 55 MB)."""
    if line < 1:
        return None
    parts = text.split("\n", line)
    if len(parts) < line or (len(parts) == line and parts[-1] == ""):
        return None  # past the end (the empty rest after a final newline is no line)
    return parts[line - 1].rstrip("\r")


def excerpt(text: str, line: int, column: int) -> str:
    """`   11 |     - Patient/x` and a caret under `column`, for a syntax error."""
    found = _source_line(text, line)
    if found is None:
        return ""
    source = found.replace("\t", " ")  # a tab would shift the caret
    gutter = f"{line:>5} | "
    return f"{gutter}{source}\n{' ' * (len(gutter) - 2)}| {' ' * (column - 1)}^"


def in_words(problem: str, context: str, text: str, line: int) -> str:
    """PyYAML's parser message said as what is wrong at that line."""
    here = _source_line(text, line) or ""
    if "'\\t'" in problem or "'\t'" in problem or "\t" in here[: len(here) - len(here.lstrip())]:
        return "a tab in the indentation: YAML indents with spaces only"
    if problem.startswith("expected <block end>") or problem.startswith(
        "expected <block mapping start>"
    ):
        if here.lstrip().startswith("- "):
            return (
                "a list item `- …` is indented differently from the items above it "
                "(items of one list start in the same column)"
            )
        return "this line is indented differently from the lines above it at the same level"
    if problem == "mapping values are not allowed here":
        return (
            "a second ': ' on this line — quote a value that contains ': ', or put a nested "
            "key on a line of its own"
        )
    if problem.startswith("could not find expected ':'"):
        return "a line inside a mapping that is not `key: value` (a missing ':'?)"
    if "found unexpected end of stream" in problem and "quoted" in context:
        return "a quote opened and never closed"
    if problem.startswith("expected ',' or ']'"):
        return "a `[` list that is never closed with `]`"
    if problem.startswith("expected ',' or '}'"):
        return "a `{` mapping that is never closed with `}`"
    return problem


@dataclass
class Document:
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    line: int = 1

    def position(self, path: PathKey) -> tuple[int, int]:
        """The closest known position: the node itself, else its nearest ancestor."""
        probe = tuple(path)
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), (self.line, 1))


def read_text(path: Path) -> tuple[bytes, str]:
    """The file's bytes and text. The size limit holds for what is read, not for what the
    file says it is: a FIFO, a device (/dev/zero) or stdin reports 0 and never ends."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlProblem(f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        size = path.stat().st_size if path.is_file() else 0
        said = f"file is {size:,} bytes, over" if size > MAX_FILE_BYTES else "file is over"
        raise YamlProblem(f"{said} the {MAX_FILE_BYTES:,}-byte limit for a manifest")
    if b"\x00" in raw:
        raise YamlProblem("file is binary (contains NUL bytes), not YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblem(
            f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})", line
        ) from None
    return raw, text.removeprefix("\ufeff")


# libyaml's parser where PyYAML was built with it (the wheels are): the same nodes and marks,
# about 5x faster, which is most of loading a manifest of 100,000 patients.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(text: str) -> list[Document]:
    try:
        return _load_documents(text, _LOADER)
    except YamlProblem:
        if _LOADER is yaml.SafeLoader:
            raise
        # The pure-Python parser words its errors better ("character '\t' that cannot start
        # any token"); the rare failing file is parsed again to say what is wrong in its words.
        return _load_documents(text, yaml.SafeLoader)


def _load_documents(text: str, loader: Any) -> list[Document]:
    documents: list[Document] = []
    try:
        for node in yaml.compose_all(text, Loader=loader):
            if node is None:
                continue
            doc = Document(data=None, line=node.start_mark.line + 1)
            builder = _Builder(doc, max(MAX_NODES_PER_DOCUMENT, len(text)))
            doc.data = builder.build(node, (), 0)
            documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        worded = in_words(reason, exc.context or "", text, line)
        if worded == "a quote opened and never closed" and exc.context_mark is not None:
            line, column = exc.context_mark.line + 1, exc.context_mark.column + 1  # the quote
        said = worded if worded == reason else f"{worded} ({reason})"
        raise YamlProblem(
            f"invalid YAML: {said}", line, column, excerpt(text, line, column)
        ) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlProblem(f"nesting is deeper than {MAX_DEPTH} levels") from None
    return documents


class _Builder:
    def __init__(self, doc: Document, max_nodes: int) -> None:
        self.doc = doc
        self.nodes = 0
        self.max_nodes = max_nodes
        self.constructor = yaml.SafeLoader("")

    def _fail(self, node: yaml.Node, message: str) -> YamlProblem:
        return YamlProblem(message, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise self._fail(
                node,
                f"document expands to more than {self.max_nodes:,} nodes (alias expansion bomb?)",
            )
        if depth > MAX_DEPTH:
            raise self._fail(node, f"nesting is deeper than {MAX_DEPTH} levels")
        self.doc.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self._fail(node, f"unsupported YAML tag {node.tag!r}")
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self._fail(key_node, "YAML merge keys (<<) are not supported")
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self._fail(key_node, "mapping keys must be plain strings")
                key = str(key_node.value)
                if key in result:
                    raise self._fail(key_node, f"duplicate key {key!r}")
                self.doc.positions[(*path, key)] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
                result[key] = self.build(value_node, (*path, key), depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise self._fail(node, f"unsupported YAML tag {node.tag!r}")
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise self._fail(node, f"unsupported YAML tag {node.tag!r}")
            if node.tag in (_STR, "tag:yaml.org,2002:timestamp"):
                return str(node.value)
            return self.constructor.construct_object(node, deep=True)
        raise self._fail(node, "unsupported YAML node")
