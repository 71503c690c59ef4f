"""Safe YAML loading that remembers where every node came from.

PyYAML's composer gives us nodes with marks; we build plain Python data from them ourselves so
that (a) every value's `file:line:column` is known for error messages, (b) only the core YAML tags
are accepted (no Python object tags), and (c) alias expansion is metered, so a "billion laughs"
document is rejected instead of eating memory.
"""

from __future__ import annotations

from array import array
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
    # Where each mapping key (and the document itself) starts: (line, column), 1-based.
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    # Where each item of a sequence starts, by the sequence's path: line, column, line, …
    # in one array of 4-byte numbers — a million-patient list costs 8 bytes an item, not a
    # dict entry.
    items: dict[PathKey, array[int]] = field(default_factory=dict)
    line: int = 1

    def position(self, path: PathKey) -> tuple[int, int]:
        """The closest known position: the node itself, else its nearest ancestor."""
        probe = tuple(path)
        while probe:
            found = self.positions.get(probe)
            if found is not None:
                return found
            index = probe[-1]
            if isinstance(index, int):
                marks = self.items.get(probe[:-1])
                if marks is not None and 0 <= index < len(marks) // 2:
                    return marks[2 * index], marks[2 * index + 1]
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
        events = yaml.parse(text, Loader=loader)
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                builder = _Builder(max(MAX_NODES_PER_DOCUMENT, len(text)))
                documents.append(builder.document(events))
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
    return documents


_NO_KEY = object()
_BUILDING = object()  # an anchor whose node is not finished: an alias to it is a cycle


@dataclass(slots=True)
class _Open:
    """A mapping or sequence being built."""

    value: dict[str, Any] | list[Any]
    path: PathKey
    anchor: str | None
    nodes_before: int
    key: Any = _NO_KEY  # a mapping's key waiting for its value


@dataclass(slots=True)
class _Anchored:
    value: Any
    nodes: int  # what the anchored node counts each time an alias repeats it
    scalar: str | None  # the raw text of an anchored scalar (an alias may be used as a key)


class _Builder:
    """Plain data from the parser's events, with every node's position — no node graph: the
    composer's nodes and marks cost ~1.5 KB a list item, a third of a gigabyte at a million."""

    def __init__(self, max_nodes: int) -> None:
        self.doc = Document(data=None)
        self.nodes = 0
        self.max_nodes = max_nodes
        self.anchors: dict[str, _Anchored | object] = {}
        self.loader = yaml.SafeLoader("")  # resolves implicit tags, constructs int/bool/…
        self.stack: list[_Open] = []

    def _fail(self, mark: Any, message: str) -> YamlProblem:
        return YamlProblem(message, mark.line + 1, mark.column + 1)

    def _tag(self, event: Any, kind: type[yaml.Node], value: str | None) -> str:
        """The event's tag, or the one YAML implies for it (as the composer resolves it)."""
        if event.tag is not None and event.tag != "!":
            return str(event.tag)
        return str(self.loader.resolve(kind, value, event.implicit))  # type: ignore[no-untyped-call]

    def document(self, events: Any) -> Document:
        root: Any = _NO_KEY
        for event in events:
            if isinstance(event, yaml.DocumentEndEvent):
                break
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                done = self.stack.pop()
                self._anchor(done.anchor, done.value, self.nodes - done.nodes_before, None)
                value: Any = done.value
            elif self.stack and self._wants_key(event):
                continue
            else:
                value = self._node(event)
                if value is _BUILDING:
                    continue  # a mapping or sequence opened: its items come next
            if self.stack:
                self._place(value)
            else:
                root = value
        self.doc.data = None if root is _NO_KEY else root
        return self.doc

    def _wants_key(self, event: Any) -> bool:
        """A key of the innermost mapping, if that is what comes: read it and say so."""
        top = self.stack[-1]
        if not isinstance(top.value, dict) or top.key is not _NO_KEY:
            return False
        if isinstance(event, yaml.AliasEvent):
            anchored = self.anchors.get(event.anchor or "")
            if not isinstance(anchored, _Anchored) or anchored.scalar is None:
                raise self._fail(event.start_mark, "mapping keys must be plain strings")
            raw = anchored.scalar
        elif isinstance(event, yaml.ScalarEvent):
            if self._tag(event, yaml.ScalarNode, event.value) == "tag:yaml.org,2002:merge":
                raise self._fail(event.start_mark, "YAML merge keys (<<) are not supported")
            raw = event.value
            self._anchor(event.anchor, raw, 0, raw)
        else:
            raise self._fail(event.start_mark, "mapping keys must be plain strings")
        key = str(raw)
        if key in top.value:
            raise self._fail(event.start_mark, f"duplicate key {key!r}")
        self.doc.positions[(*top.path, key)] = (
            event.start_mark.line + 1,
            event.start_mark.column + 1,
        )
        top.key = key
        return True

    def _path(self) -> PathKey:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, dict):
            return (*top.path, top.key)
        return (*top.path, len(top.value))

    def _node(self, event: Any) -> Any:
        """A node starts at `event`: a scalar or alias (its value), or a mapping or sequence
        (opened on the stack; _BUILDING)."""
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            anchored = self.anchors.get(event.anchor or "")
            if anchored is None:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", mark
                )
            if not isinstance(anchored, _Anchored):  # an alias inside its own anchor
                raise self._fail(mark, f"nesting is deeper than {MAX_DEPTH} levels")
            self._count(mark, anchored.nodes)
            self._mark(mark)
            return anchored.value
        self._count(mark, 1)
        if len(self.stack) > MAX_DEPTH:
            raise self._fail(mark, f"nesting is deeper than {MAX_DEPTH} levels")
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise self._fail(mark, f"invalid YAML: the anchor &{anchor} is defined twice")
        if not self.stack:
            self.doc.line = mark.line + 1
        self._mark(mark)
        if isinstance(event, yaml.ScalarEvent):
            value = self._scalar(event)
            self._anchor(anchor, value, 1, event.value)
            return value
        kind: type[yaml.Node]
        container: dict[str, Any] | list[Any]
        if isinstance(event, yaml.MappingStartEvent):
            kind, container = yaml.MappingNode, {}
        elif isinstance(event, yaml.SequenceStartEvent):
            kind, container = yaml.SequenceNode, []
        else:
            raise self._fail(mark, "unsupported YAML node")
        tag = self._tag(event, kind, None)
        if tag != (_MAP if kind is yaml.MappingNode else _SEQ):
            raise self._fail(mark, f"unsupported YAML tag {tag!r}")
        if anchor is not None:
            self.anchors[anchor] = _BUILDING
        self.stack.append(_Open(container, self._path(), anchor, self.nodes - 1))
        return _BUILDING

    def _scalar(self, event: Any) -> Any:
        tag = self._tag(event, yaml.ScalarNode, event.value)
        if tag not in _SCALAR_TAGS:
            raise self._fail(event.start_mark, f"unsupported YAML tag {tag!r}")
        if tag in (_STR, "tag:yaml.org,2002:timestamp"):
            return str(event.value)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        # The tag's own constructor, not construct_object: that one keeps every node it built.
        return self.loader.yaml_constructors[tag](self.loader, node)

    def _count(self, mark: Any, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            raise self._fail(
                mark,
                f"document expands to more than {self.max_nodes:,} nodes (alias expansion bomb?)",
            )

    def _mark(self, mark: Any) -> None:
        """Where the node starting now is: a sequence item's in its sequence's array, the
        document's own; a mapping value's is its key's, recorded with the key."""
        line, column = mark.line + 1, mark.column + 1
        if not self.stack:
            self.doc.positions.setdefault((), (line, column))
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            marks = self.doc.items.get(top.path)
            if marks is None:
                marks = self.doc.items[top.path] = array("I")
            marks.append(line)
            marks.append(column)

    def _anchor(self, name: str | None, value: Any, nodes: int, scalar: str | None) -> None:
        if name is not None:
            self.anchors[name] = _Anchored(value, nodes, scalar)

    def _place(self, value: Any) -> None:
        top = self.stack[-1]
        if isinstance(top.value, dict):
            top.value[top.key] = value
            top.key = _NO_KEY
        else:
            top.value.append(value)
