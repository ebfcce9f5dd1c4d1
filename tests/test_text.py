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


def test_offline_sentences_dedup_exclude_limit_and_seed(tmp_path, monkeypatch):
    lic = tmp_path / "licenses"
    lic.mkdir()
    (lic / "A").write_text("You may copy the program in any medium you like. The work is provided as is today.\n")
    (lic / "B").write_text("You may copy the program in any medium you like. Nobody may restrict your rights here.\n")
    monkeypatch.setattr(T, "LICENSES_DIR", lic)
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
