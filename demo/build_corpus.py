"""Build the demo corpus and its known-item evaluation queries from stdlib docstrings.

The texts are the lead paragraphs of the docstrings of modules, classes and functions in a
fixed list of Python standard-library modules (the first paragraph, plus the next one when the
first is a short summary); the queries are built from them without any model. The output is
committed to the repository (``demo/corpus.jsonl`` and ``demo/eval_queries.jsonl``), so the
demo does not depend on the interpreter that runs it; rerun this script only to regenerate
them::

    python demo/build_corpus.py            # writes demo/corpus.jsonl and demo/eval_queries.jsonl
    python demo/build_corpus.py --check    # rebuilds in memory and compares with the files

Every step is deterministic: modules and members are visited in sorted order, duplicates keep
their first occurrence, and sampling ranks items by a SHA-256 hash of a stable key.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

DEMO_DIR = Path(__file__).resolve().parent
CORPUS_PATH = DEMO_DIR / "corpus.jsonl"
EVAL_PATH = DEMO_DIR / "eval_queries.jsonl"

TARGET_DOCS = 3000
TARGET_QUERIES = 200
# Words of the text added to the title words of a query. Two keep the set discriminative:
# with three, all-MiniLM-L6-v2 finds 98% of targets in its top 10 and BM25 92% at rank 1.
QUERY_TEXT_WORDS = 2
MIN_CHARS = 60
MAX_CHARS = 600
MIN_WORDS = 8
# No module may fill more than this share of the corpus (builtins and asyncio are large).
MAX_PER_MODULE = 150
SAMPLE_SALT = "qdrant-migration-demo-v1"

# Standard-library modules (and public submodules) that import cleanly under `python -W error`
# and do nothing when imported: no output, no browser, no GUI, no deprecation warning. Left out:
# test suites, idlelib/tkinter/turtle, antigravity/this, lib2to3/distutils and the modules that
# 3.11 deprecates, Windows-only modules, encodings.* codecs, and private (_-prefixed) modules.
_STDLIB_MODULE_NAMES = """
abc argparse array ast asyncio asyncio.base_events asyncio.base_futures
asyncio.base_subprocess asyncio.base_tasks asyncio.constants asyncio.coroutines
asyncio.events asyncio.exceptions asyncio.format_helpers asyncio.futures asyncio.locks
asyncio.log asyncio.mixins asyncio.proactor_events asyncio.protocols asyncio.queues
asyncio.runners asyncio.selector_events asyncio.sslproto asyncio.staggered asyncio.streams
asyncio.subprocess asyncio.taskgroups asyncio.tasks asyncio.threads asyncio.timeouts
asyncio.transports asyncio.trsock asyncio.unix_events atexit base64 bdb binascii bisect
builtins bz2 cProfile calendar cmath cmd code codecs codeop collections collections.abc
colorsys compileall concurrent concurrent.futures concurrent.futures.process
concurrent.futures.thread configparser contextlib contextvars copy copyreg csv dataclasses
datetime dbm dbm.dumb decimal difflib dis doctest email email.base64mime email.charset
email.contentmanager email.encoders email.errors email.feedparser email.generator
email.header email.headerregistry email.iterators email.message email.mime
email.mime.application email.mime.audio email.mime.base email.mime.image email.mime.message
email.mime.multipart email.mime.nonmultipart email.mime.text email.parser email.policy
email.quoprimime email.utils encodings enum errno faulthandler fcntl filecmp fileinput
fnmatch fractions ftplib functools gc getopt getpass gettext glob graphlib grp gzip hashlib
heapq hmac html html.entities html.parser http http.client http.cookiejar http.cookies
http.server imaplib importlib importlib.abc importlib.machinery importlib.metadata
importlib.readers importlib.resources importlib.resources.abc importlib.resources.readers
importlib.resources.simple importlib.simple importlib.util inspect io ipaddress itertools
json json.decoder json.encoder json.scanner keyword linecache locale logging logging.config
logging.handlers lzma mailbox marshal math mimetypes mmap modulefinder multiprocessing
multiprocessing.connection multiprocessing.context multiprocessing.dummy
multiprocessing.dummy.connection multiprocessing.forkserver multiprocessing.heap
multiprocessing.managers multiprocessing.pool multiprocessing.popen_fork
multiprocessing.popen_forkserver multiprocessing.popen_spawn_posix multiprocessing.process
multiprocessing.queues multiprocessing.reduction multiprocessing.resource_sharer
multiprocessing.resource_tracker multiprocessing.shared_memory multiprocessing.sharedctypes
multiprocessing.spawn multiprocessing.synchronize multiprocessing.util netrc numbers opcode
operator optparse os os.path pathlib pdb pickle pickletools pkgutil platform plistlib poplib
pprint profile pstats pwd py_compile pyclbr pydoc pyexpat queue quopri random re reprlib
resource rlcompleter runpy sched secrets select selectors shelve shlex shutil signal smtplib
socket socketserver sqlite3 sqlite3.dump ssl stat statistics string stringprep struct
subprocess symtable sys sysconfig syslog tabnanny tarfile tempfile termios textwrap
threading time timeit token tokenize tomllib trace traceback tracemalloc types typing
unicodedata unittest unittest.async_case unittest.case unittest.loader unittest.main
unittest.mock unittest.result unittest.runner unittest.signals unittest.suite unittest.util
urllib urllib.error urllib.parse urllib.request urllib.response urllib.robotparser uuid
warnings wave weakref wsgiref wsgiref.handlers wsgiref.headers wsgiref.simple_server
wsgiref.types wsgiref.util wsgiref.validate xml xml.dom xml.dom.NodeFilter xml.dom.domreg
xml.dom.expatbuilder xml.dom.minicompat xml.dom.minidom xml.dom.pulldom xml.dom.xmlbuilder
xml.etree xml.etree.ElementInclude xml.etree.ElementPath xml.etree.ElementTree xml.parsers
xml.parsers.expat xml.sax xml.sax.expatreader xml.sax.handler xml.sax.saxutils
xml.sax.xmlreader xmlrpc xmlrpc.client xmlrpc.server zipapp zipfile zipimport zlib zoneinfo
"""
STDLIB_MODULES: tuple[str, ...] = tuple(sorted(_STDLIB_MODULE_NAMES.split()))

# Words that carry no topic: left out of evaluation queries.
_STOPWORD_TEXT = """
a about above after again against all also an and any are as at be because been before
being below between both but by can could did do does doing done down during each either
else etc every few for from further given had has have having here how however if in into
is it its itself just less like made make many may might more most much must need new no
nor not now of off on once one only or other otherwise our out over own per same see
several shall should since so some such than that the their them then there these they
this those through thus to too true false none under until up upon use used uses using very
via was way we were what when where whether which while who whom why will with within
without would yet you your return returns returned object objects value values given
instance instances method methods function functions class classes module modules
argument arguments default specified called call calls set get gets sets type types
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# Objects that a module exposes but that are implemented under another name: os.listdir comes
# from posix, os.path.join from posixpath.
MODULE_ALIASES: dict[str, tuple[str, ...]] = {
    "os": ("posix",),
    "os.path": ("posixpath", "genericpath"),
}

# A paragraph after the summary that starts a field list, an example or a listing: stop there.
_NOT_PROSE_PREFIXES = (
    ">>>",
    ":",
    "Args",
    "Arguments",
    "Parameters",
    "Returns",
    "Raises",
    "Example",
    "Usage",
    "-",
    "*",
    "+",
    "|",
    "(",
)

# A leading line that is a call signature, as C functions' docstrings have:
# "dumps(obj, protocol=None) -> bytes", "deque([iterable[, maxlen]]) --> deque object".
_SIGNATURE_RE = re.compile(r"^(async\s+)?[\w.]+\(.*\)\s*(-+>.*)?$")
# Marks of grammar, signatures and examples rather than prose.
_NOT_PROSE_MARKS = ("-->", " -> ", "~~~", ">>>", "::=")
_WORD_RE = re.compile(r"[a-z][a-z0-9']*[a-z0-9]")
# Splits CamelCase but keeps digits with their word: JSONDecoder -> JSON Decoder, b32encode.
_CAMEL_RE = re.compile(r"[A-Z0-9]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")


@dataclass(frozen=True)
class Doc:
    """One corpus entry: the lead paragraph of one docstring."""

    id: int
    text: str
    title: str
    module: str
    kind: str


@dataclass(frozen=True)
class EvalQuery:
    """One known-item query: the single relevant document is the one it was made from."""

    query: str
    relevant_ids: list[int]


@dataclass(frozen=True)
class _Candidate:
    text: str
    title: str
    module: str
    kind: str


def _is_prose(paragraph: str) -> bool:
    text = paragraph.strip()
    return (
        bool(text)
        and not paragraph[:1].isspace()  # an indented block is code or a listing
        and not text.startswith(_NOT_PROSE_PREFIXES)
        and not text.endswith("::")
    )


def lead_paragraph(doc: str | None) -> str | None:
    """The first prose paragraph of a docstring, whitespace-normalized.

    Most docstrings open with a one-line summary shorter than ``MIN_CHARS``; when the following
    paragraph is prose too, it is appended, so the summary still comes with its context.
    """
    if not doc:
        return None
    lines = inspect.cleandoc(doc).splitlines()
    while lines and (not lines[0].strip() or _SIGNATURE_RE.match(lines[0].strip())):
        lines.pop(0)
    paragraphs = [p for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]
    if not paragraphs:
        return None
    parts = [" ".join(paragraphs[0].split())]
    for paragraph in paragraphs[1:]:
        if len(" ".join(parts)) >= MIN_CHARS or not _is_prose(paragraph):
            break
        parts.append(" ".join(paragraph.split()))
    return " ".join(parts)


def is_usable(text: str) -> bool:
    """Keep prose of a useful length; drop examples, dangling introductions and stubs."""
    return (
        MIN_CHARS <= len(text) <= MAX_CHARS
        and len(text.split()) >= MIN_WORDS
        and text[0].isupper()
        and not text.endswith(":")
        and not any(mark in text for mark in _NOT_PROSE_MARKS)
        and not text.lower().startswith(("deprecated", "alias for", "see "))
    )


def _import_quietly(name: str) -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except ImportError:
            return None


def _belongs_to(obj: object, module_name: str) -> bool:
    """True if ``obj`` is defined in the module's package (or its C accelerator, e.g. _json)."""
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    if owner == module_name or owner in MODULE_ALIASES.get(module_name, ()):
        return True
    return owner.lstrip("_").split(".")[0] == module_name.split(".")[0]


def _doc_of(obj: object) -> str:
    """The raw docstring, or "" for objects that warn when touched (typing.io, typing.re)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            doc = obj.__doc__
        except Warning:
            return ""
    return doc if isinstance(doc, str) else ""


def _public_names(module: ModuleType) -> list[str]:
    """``__all__`` plus any other public global (many modules leave documented names out)."""
    names = {str(n) for n in getattr(module, "__all__", ())}
    names.update(n for n in vars(module) if not n.startswith("_"))
    return sorted(names)


def _class_routines(cls: type) -> Iterator[tuple[str, Any]]:
    """Public routines defined on the class itself (not inherited), in name order."""
    for name in sorted(vars(cls)):
        if name.startswith("_"):
            continue
        member = vars(cls)[name]
        if isinstance(member, staticmethod | classmethod):
            member = member.__func__
        if inspect.isroutine(member):
            yield name, member


def iter_module_docs(module_name: str, seen: set[int]) -> Iterator[_Candidate]:
    """Yield the module's docstring, then each public class/function and each class's methods.

    ``seen`` holds the ids of objects already emitted, so a re-export (``json.JSONDecoder`` is
    ``json.decoder.JSONDecoder``) counts once, under the first module that exposes it.
    """
    module = _import_quietly(module_name)
    if module is None:
        return
    yield _Candidate(_doc_of(module), module_name, module_name, "module")
    for name in _public_names(module):
        obj = getattr(module, name, None)
        if obj is None or id(obj) in seen or not _belongs_to(obj, module_name):
            continue
        if inspect.isclass(obj):
            seen.add(id(obj))
            yield _Candidate(_doc_of(obj), f"{module_name}.{name}", module_name, "class")
            for method_name, method in _class_routines(obj):
                if id(method) not in seen:
                    seen.add(id(method))
                    title = f"{module_name}.{name}.{method_name}"
                    yield _Candidate(_doc_of(method), title, module_name, "function")
        elif inspect.isroutine(obj):
            seen.add(id(obj))
            yield _Candidate(_doc_of(obj), f"{module_name}.{name}", module_name, "function")


def collect_candidates(modules: Sequence[str] = STDLIB_MODULES) -> list[_Candidate]:
    """All usable, de-duplicated lead paragraphs, in module then member order."""
    seen_objects: set[int] = set()
    seen_texts: set[str] = set()
    out: list[_Candidate] = []
    for module_name in sorted(set(modules)):
        for raw in iter_module_docs(module_name, seen_objects):
            text = lead_paragraph(raw.text)
            if text is None or not is_usable(text) or text.lower() in seen_texts:
                continue
            seen_texts.add(text.lower())
            out.append(_Candidate(text, raw.title, raw.module, raw.kind))
    return out


def _rank(key: str) -> str:
    return hashlib.sha256(f"{SAMPLE_SALT}:{key}".encode()).hexdigest()


def select_docs(candidates: Sequence[_Candidate], target: int = TARGET_DOCS) -> list[Doc]:
    """Cap each module, sample ``target`` texts by hash rank, and number them in source order."""
    by_module: dict[str, list[_Candidate]] = {}
    for cand in candidates:
        by_module.setdefault(cand.module, []).append(cand)
    capped = [
        cand
        for group in by_module.values()
        for cand in sorted(group, key=lambda c: _rank(c.title))[:MAX_PER_MODULE]
    ]
    chosen = {c.title for c in sorted(capped, key=lambda c: _rank(c.title))[:target]}
    kept = [c for c in candidates if c.title in chosen]
    return [Doc(i, c.text, c.title, c.module, c.kind) for i, c in enumerate(kept, start=1)]


def tokenize(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def title_words(title: str) -> list[str]:
    """Split the last component of a qualified name: ``JSONDecoder.raw_decode`` -> raw decode."""
    last = title.rsplit(".", 1)[-1]
    return [w.lower() for part in last.split("_") for w in _CAMEL_RE.findall(part)]


def salient_words(doc: Doc, doc_freq: Counter[str], k: int = QUERY_TEXT_WORDS) -> list[str]:
    """The ``k`` rarest topical words of the text (highest IDF), in text order.

    Words found in this document only are skipped: a query should be answerable by meaning,
    not by one unique token copied from the target.
    """
    skip = STOPWORDS | set(title_words(doc.title))
    words: list[str] = []
    for word in tokenize(doc.text):
        if (
            len(word) >= 4
            and "'" not in word  # contractions: "doesn't", "object's"
            and word not in skip
            and doc_freq[word] >= 2
            and word not in words
        ):
            words.append(word)
    top = sorted(words, key=lambda w: (doc_freq[w], words.index(w)))[:k]
    return [w for w in words if w in top]


def build_eval_queries(docs: Sequence[Doc], n_queries: int = TARGET_QUERIES) -> list[EvalQuery]:
    """Known-item queries: the title's last component plus a few salient words of the text.

    Documents are sampled by hash rank of their title; a document with fewer than
    ``QUERY_TEXT_WORDS`` salient words, or whose query would repeat another, is passed over.
    """
    doc_freq: Counter[str] = Counter()
    for doc in docs:
        doc_freq.update(set(tokenize(doc.text)))
    queries: list[EvalQuery] = []
    seen: set[str] = set()
    for doc in sorted(docs, key=lambda d: _rank("query:" + d.title)):
        extra = salient_words(doc, doc_freq)
        if len(extra) < QUERY_TEXT_WORDS:
            continue
        query = " ".join([*title_words(doc.title), *extra])
        if query in seen:
            continue
        seen.add(query)
        queries.append(EvalQuery(query, [doc.id]))
        if len(queries) == n_queries:
            break
    return queries


def to_jsonl(rows: Sequence[Doc] | Sequence[EvalQuery]) -> str:
    return "".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows)


def build() -> tuple[str, str]:
    """Return the text of corpus.jsonl and eval_queries.jsonl."""
    docs = select_docs(collect_candidates())
    return to_jsonl(docs), to_jsonl(build_eval_queries(docs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk")
    args = parser.parse_args(argv)
    corpus, queries = build()
    if args.check:
        stale = [
            path.name
            for path, text in ((CORPUS_PATH, corpus), (EVAL_PATH, queries))
            if not path.exists() or path.read_text(encoding="utf-8") != text
        ]
        if stale:
            print(f"out of date (interpreter {sys.version.split()[0]}): {', '.join(stale)}")
            return 1
        print("up to date")
        return 0
    CORPUS_PATH.write_text(corpus, encoding="utf-8")
    EVAL_PATH.write_text(queries, encoding="utf-8")
    n_docs, n_queries = corpus.count("\n"), queries.count("\n")
    print(f"wrote {n_docs} documents to {CORPUS_PATH} and {n_queries} queries to {EVAL_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
