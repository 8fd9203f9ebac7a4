"""The schema registry: which schema checks a path, each compiled once by its engine.

A schema's dialect is its own `$schema` (draft-04, -06, -07, 2019-09, 2020-12; none means the
`default_dialect` setting). One engine compiles a whole directory, so a `$ref` between two of
its files never compiles under two engines: fastjsonschema unless `schema_engine` says
jsonschema-rs or a schema in the directory is 2019-09 or 2020-12, which only jsonschema-rs runs.

`$ref` resolves only to files inside the schemas directory. Every reference is checked before
compiling, and each engine's loader (fastjsonschema's handlers, jsonschema-rs's retriever)
refuses anything else, so no network connection is ever attempted. A schema that fails to load
or compile, or that an engine could not enforce as written, is a configuration error.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import importlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import jsonschema_rs
import orjson

from assetmgr.pipeline import dialects, engines
from assetmgr.printable import shown

SUFFIX = ".schema.json"
DEFAULT = "_default"

# A logic validator gets the asset's path and parsed document; it returns None when the
# document is fine, or a one-line reason when it is not.
LogicValidator = Callable[[str, Any], str | None]

_DRAFTS = {
    "draft-04": jsonschema_rs.Draft4,
    "draft-06": jsonschema_rs.Draft6,
    "draft-07": jsonschema_rs.Draft7,
    "2019-09": jsonschema_rs.Draft201909,
    "2020-12": jsonschema_rs.Draft202012,
}


class SchemaError(Exception):
    """A schema or validator that cannot be loaded: refuse to start, keep the old set on reload."""


@dataclass(frozen=True)
class Options:
    """How a schema directory is compiled: the settings default_dialect, schema_engine and
    format_assertion (2019-09 and 2020-12 assert `format` only with it or its vocabulary)."""

    default_dialect: str = dialects.DEFAULT
    engine: str = engines.FAST
    format_assertion: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> Options:
        """The options the resolved settings ask for (`cfg`: an `assetmgr.config.Config`)."""
        return cls(cfg.default_dialect, cfg.schema_engine, cfg.format_assertion)


@dataclass(frozen=True)
class Schema:
    name: str  # file name, e.g. "weights.schema.json"
    id: str  # the schema's $id, or its file name
    check: Callable[[Any], Any]  # raises rejections.Violation for an invalid document
    digest: str = ""  # of the document as loaded, to tell which kinds a reload changed
    refs: frozenset[str] = frozenset()  # file names of the documents its $refs point into
    dialect: str = dialects.DEFAULT
    engine: str = engines.FAST


@dataclass
class Registry:
    """Compiled schemas of one directory plus the path → schema mapping rules."""

    directory: Path
    schemas: dict[str, Schema]
    rules: Sequence[tuple[str, str]] = ()
    validators: Mapping[str, Sequence[LogicValidator]] = field(default_factory=dict)
    documents_digest: str = ""
    engine: str = engines.FAST
    options: Options = Options()

    def schema_for(self, path: str) -> Schema | None:
        """First matching glob rule, else the kind (first component), else `_default`."""
        for pattern, name in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                return self.schemas.get(name.removesuffix(SUFFIX))
        kind, sep, _ = path.partition("/")
        if sep and kind in self.schemas:
            return self.schemas[kind]
        return self.schemas.get(DEFAULT)

    def fingerprint(self) -> str:
        """The schema documents as loaded, the rules, the validator names, the engine and its
        version and the options, hashed: what a schema verdict depends on."""
        digest = hashlib.sha256(self.documents_digest.encode())
        digest.update(repr(list(self.rules)).encode())
        for kind in sorted(self.validators):
            digest.update(kind.encode() + repr([_name(v) for v in self.validators[kind]]).encode())
        digest.update(f"{engines.version(self.engine)}:{self.options}".encode())
        return digest.hexdigest()

    def logic_for(self, path: str) -> Sequence[LogicValidator]:
        kind, sep, _ = path.partition("/")
        return self.validators.get(kind if sep else "", ())

    def kinds_differing(self, other: Registry) -> set[str]:
        """Kinds whose schema text changed between two registries (for revalidation)."""
        names = set(self.schemas) | set(other.schemas)
        changed = {n for n in names if _digest(self, n) != _digest(other, n)}
        files = {n + SUFFIX for n in changed}
        return changed | {n for n, s in other.schemas.items() if s.refs & files}


def _digest(registry: Registry, name: str) -> str | None:
    schema = registry.schemas.get(name)
    return schema.digest if schema else None


def _name(function: Callable[..., Any]) -> str:
    """A validator's name and the digest of its module's source: editing its code changes the
    fingerprint, so unchanged files are validated again by the new code."""
    name = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', function)}"
    try:
        source = inspect.getsourcefile(function)
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else ""
    except (OSError, TypeError):
        digest = ""
    return f"{name}@{digest}"


def load(
    directory: str | os.PathLike[str],
    rules: Sequence[tuple[str, str]] = (),
    validators: Mapping[str, Sequence[str]] | None = None,
    options: Options | None = None,
) -> Registry:
    """Load and compile every `*.schema.json`; raise SchemaError with a one-line reason."""
    options = options or Options()
    root = Path(directory).resolve()
    if not root.is_dir():
        raise SchemaError(f"schemas directory {directory} does not exist")
    docs = {p.name: _read(p) for p in sorted(root.glob("*" + SUFFIX)) if p.is_file()}
    if not docs:
        raise SchemaError(f"schemas directory {directory} holds no *{SUFFIX} file")
    found = _Directory(root, docs, options)
    schemas = {name.removesuffix(SUFFIX): found.compile(name) for name in docs}
    for _, target in rules:
        if target.removesuffix(SUFFIX) not in schemas:
            raise SchemaError(f"schema rule names {target!r}, which is not in {directory}")
    digest = hashlib.sha256(orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)).hexdigest()
    loaded = _load_validators(validators or {})
    return Registry(root, schemas, tuple(rules), loaded, digest, found.engine, options)


class _Directory:
    """The documents of one schemas directory, their dialects and the engine that compiles them.

    A `$ref` resolves as the specification says, against the `$id` of its resource (the file's
    own URI where there is none), and then only to a document of the directory: by its file
    URI, by its `$id`, as a resource embedded in one, or as the file of that name in the
    directory when a document's canonical `$id` (`https://example.com/s/weights.schema.json`)
    makes it a sibling (`https://example.com/s/common.schema.json`). Anything else is refused.
    """

    def __init__(self, root: Path, docs: dict[str, Any], options: Options) -> None:
        self.root = root
        self.docs = docs
        self.options = options
        self.by_uri = {self.file_uri(n): n for n in docs}
        self.by_uri.update((urljoin(self.file_uri(n), i), n) for n, i in self._own_ids("$id"))
        self.dialects = {name: self._dialect(name, doc) for name, doc in docs.items()}
        modern = any(d in dialects.MODERN for d in self.dialects.values())
        self.engine = engines.RUST if options.engine == engines.RUST or modern else engines.FAST
        self.bases = {n: self._base(n) for n in docs}
        self.by_uri.update((urldefrag(b).url, n) for n, b in self.bases.items())
        self.siblings = {b.rsplit("/", 1)[0] + "/" for b in self.bases.values()}
        self.known = set(self.by_uri) | {
            urldefrag(i).url for n in docs for i in _ids(docs[n], self.bases[n], self.dialects[n])
        }
        self._registry: jsonschema_rs.Registry | None = None

    def file_uri(self, name: str) -> str:
        return (self.root / name).as_uri()

    def _own_ids(self, key: str) -> Iterator[tuple[str, str]]:
        for name, doc in self.docs.items():
            if isinstance(doc, dict) and isinstance(doc.get(key), str):
                yield name, doc[key]

    def _base(self, name: str) -> str:
        doc, key = self.docs[name], "id" if self.dialects[name] == "draft-04" else "$id"
        own = doc.get(key) if isinstance(doc, dict) else None
        return urldefrag(urljoin(self.file_uri(name), own if isinstance(own, str) else "")).url

    def compile(self, name: str) -> Schema:
        """Check the document's keywords and `$ref`s, then compile it. A malformed schema can
        make a compiler fail in any way (TypeError on `"required": null`, RecursionError on a
        cycle): each is this file's configuration error, in one line."""
        doc, dialect = self.docs[name], self.dialects[name]
        refs = _refs(doc, self.bases[name], dialect)
        try:
            foreign = next(dialects.foreign_keywords(doc, dialect), None)
            if foreign:
                raise SchemaError(_foreign(foreign[0] or "(root)", foreign[1], dialect))
            targets = {self.target(r) for r in refs}
            if self.engine == engines.FAST:
                check = self._fast(name, refs)
                engines.meta_validate(doc, dialect)  # jsonschema-rs does it as it compiles
            else:
                check = self._rust(name)
        except Exception as e:  # also the compiler's own errors on a document it does not expect
            raise SchemaError(f"schema {name}: {_one_line(e)}") from None
        files = frozenset(p.name for p in targets if p is not None) - {name}
        sid = doc["$id"] if isinstance(doc, dict) and isinstance(doc.get("$id"), str) else name
        digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return Schema(name, sid, check, digest, files, dialect, self.engine)

    def target(self, uri: str) -> Path | None:
        """The file a reference leads to (None: a resource embedded in a document); raises
        SchemaError for a place outside the directory."""
        document = urldefrag(uri).url
        if document in self.by_uri:
            return self.root / self.by_uri[document]
        if document in self.known:
            return None
        if dialects.bundled(document) and self.engine == engines.RUST:
            return None  # jsonschema-rs has it built in: a custom metaschema's vocabularies
        if urlsplit(document).scheme == "file":
            return _inside(document, self.root)
        for sibling in self.siblings:
            if document.startswith(sibling) and not sibling.startswith("file:"):
                return _inside((self.root / unquote(document[len(sibling) :])).as_uri(), self.root)
        raise SchemaError(f"$ref {uri!r} is outside the schemas directory")

    def _dialect(self, name: str, doc: Any) -> str:
        """The dialect `$schema` names: a standard URI, or a 2019-09/2020-12 metaschema (with
        its own vocabularies) among the directory's files; none: the configured default."""
        value = doc.get("$schema") if isinstance(doc, dict) else None
        if value is None:
            return self.options.default_dialect
        if isinstance(value, str):
            named = dialects.named_by(value)
            if named:
                return named
            meta = self.by_uri.get(urldefrag(urljoin(self.file_uri(name), value)).url)
            inner = self.docs[meta].get("$schema") if meta else None
            if isinstance(inner, str) and dialects.named_by(inner) in dialects.MODERN:
                return str(dialects.named_by(inner))
        raise SchemaError(
            f"schema {name}: unknown $schema {shown(str(value))!r}: use one of "
            f"{', '.join(dialects.CANONICAL.values())} or a 2019-09/2020-12 metaschema "
            "in the schemas directory"
        )

    def _fast(self, name: str, refs: list[str]) -> engines.Check:
        """fastjsonschema inlines a `$ref`'d document into the referrer's code, read in the
        referrer's dialect: a reference across dialects is refused."""
        doc, dialect = self.docs[name], self.dialects[name]
        for pointer, node in dialects.subschemas(doc):
            nested = node.get("$schema") if pointer else None
            if nested is not None and dialects.named_by(str(nested)) != dialect:
                raise SchemaError(f"{pointer}: a $schema of another dialect; {engines.WAY_OUT}")
        for ref in refs:
            path = self.target(ref)
            other = self.dialects.get(path.name) if path is not None else None
            if other is not None and other != dialect:
                raise SchemaError(
                    f"$ref {shown(ref)!r} is a {other} schema, which fastjsonschema would "
                    f"read as {dialect}; {engines.WAY_OUT}"
                )
        handlers = dict.fromkeys(_SCHEMES, self.load)
        return engines.compile_fast(copy.deepcopy(doc), dialect, self.bases[name], handlers)

    def _rust(self, name: str) -> engines.Check:
        dialect = self.dialects[name]
        asserting = dialect not in dialects.MODERN or self.options.format_assertion
        return engines.compile_rust(
            self.docs[name],
            dialect,
            base_uri=self.file_uri(name),
            registry=self.registry(),
            retriever=self.load,
            assert_formats=True if asserting else None,
        )

    def registry(self) -> jsonschema_rs.Registry:
        """Every document of the directory under its file URI, for jsonschema-rs to resolve
        references to them without asking the retriever."""
        if self._registry is None:
            resources = [(self.file_uri(n), d) for n, d in self.docs.items()]
            draft = _DRAFTS[self.options.default_dialect]
            self._registry = jsonschema_rs.Registry(resources, draft=draft, retriever=self.load)
        return self._registry

    def load(self, uri: str) -> Any:
        """What a reference the engine could not resolve by itself leads to: fastjsonschema's
        handler for every URI scheme, jsonschema-rs's retriever. A file of the directory or
        nothing: a remote URI is refused, never fetched."""
        path = self.target(uri)
        if path is None:
            raise SchemaError(f"$ref {uri!r}: no such resource in the schemas directory")
        return _read(path)


# Every scheme Python's urllib can fetch, and then some: fastjsonschema calls urlopen for a
# scheme without a handler.
_SCHEMES = ("", "file", "http", "https", "ftp", "ftps", "data", "urn", "jar", "tag")


def _foreign(pointer: str, keyword: str, dialect: str) -> str:
    owners = [d for d in dialects.NAMES if keyword in dialects.KEYWORDS[d]]
    wanted = dialects.CANONICAL[owners[-1]]
    return (
        f"{pointer}: {keyword} is not a {dialect} keyword and would be ignored; "
        f'declare "$schema": "{wanted}" to enforce it'
    )


def _read(path: Path) -> Any:
    """A schema document: a JSON object, or a boolean schema (`true`, `false`)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as e:
        raise SchemaError(f"schema {path.name}: {e.strerror}") from None
    except orjson.JSONDecodeError as e:
        raise SchemaError(f"schema {path.name}: not JSON: {e}") from None
    if not isinstance(doc, dict | bool):
        raise SchemaError(f"schema {path.name}: not a JSON object")
    return doc


def _walk(node: Any, base: str, dialect: str) -> Iterator[tuple[str, str]]:
    """("ref" | "id", absolute URI) of every `$ref`, `$dynamicRef`, `$recursiveRef` and
    resource `$id` in a schema document (those in data values too: over-counting is safe)."""
    id_key = "id" if dialect == "draft-04" else "$id"
    stack = [(node, base)]
    while stack:
        item, here = stack.pop()
        if isinstance(item, dict):
            sid = item.get(id_key)
            if isinstance(sid, str) and item is not node:
                here = urljoin(here, sid)
                yield "id", here
            for key in ("$ref", "$dynamicRef", "$recursiveRef"):
                if isinstance(item.get(key), str):
                    yield "ref", urljoin(here, item[key])
            stack.extend((v, here) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, here) for v in item)


def _refs(doc: Any, base: str, dialect: str) -> list[str]:
    return [uri for what, uri in _walk(doc, base, dialect) if what == "ref"]


def _ids(doc: Any, base: str, dialect: str) -> list[str]:
    return [uri for what, uri in _walk(doc, base, dialect) if what == "id"]


def _inside(uri: str, root: Path) -> Path:
    """The file a `file:` URI names, if it is inside `root`; SchemaError for anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise SchemaError(f"$ref {uri!r} is outside the schemas directory")
    target = Path(unquote(parts.path)).resolve()
    if target.parent != root and root not in target.parents:
        raise SchemaError(f"$ref {uri!r} is outside the schemas directory")
    return target


def _load_validators(spec: Mapping[str, Sequence[str]]) -> dict[str, list[LogicValidator]]:
    loaded: dict[str, list[LogicValidator]] = {}
    for kind, names in spec.items():
        loaded[kind] = [_import(name) for name in names]
    return loaded


def _import(name: str) -> LogicValidator:
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise SchemaError(f"validator {name!r}: expected module:callable")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SchemaError(f"validator {name!r}: {_one_line(e)}") from None
    if not callable(target):
        raise SchemaError(f"validator {name!r} is not callable")
    return target


def _one_line(error: BaseException) -> str:
    """One printable line: a file name or `$ref` with a control character is escaped."""
    return shown(" ".join(str(error).split())) or type(error).__name__
