"""``rene-onnx inputs``: real inputs for a model from offline photos or sentences, and ``compress --calib`` on them."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from cli_inproc import cli
from onnx_cases import small_classifier as _cnn
from rene_onnx.data import text as text_sources
from rene_onnx.data.offline_inputs import choose_kind, graph_input_list

def test_photos_for_an_image_model_then_compress_holds_whole_photos_out(tmp_path):
    _cnn(tmp_path / "m.onnx")
    r = cli("inputs", "m.onnx", "-o", "calib.npz", "--per-photo", "3", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "crops of" in r.output and "x: float32" in r.output and "--calib calib.npz" in r.output
    with np.load(tmp_path / "calib.npz") as z:
        x, groups = z["x"], z["groups"]
    n_photos = len(np.unique(groups))
    assert n_photos >= 8 and x.shape == (3 * n_photos, 3, 32, 32) and x.dtype == np.float32
    assert np.all(np.bincount(groups) == 3)  # three crops of every photo
    assert abs(float(x.mean())) < 1.5 and 0.3 < float(x.std()) < 2.0  # ImageNet-normalized pixels, not 0..255

    r = cli("compress", "m.onnx", "--calib", "calib.npz", "--ranks", "0.5", "--epochs", "0", "--no-latency",
            "-o", "small.onnx", "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    calib = json.loads((tmp_path / "r.json").read_text())["numerics"]["calib"]
    assert calib["inputs"] == "calib-heldout" and calib["n"] % 3 == 0  # whole photos held out


def test_photo_options_size_normalization_and_refusals(tmp_path):
    _cnn(tmp_path / "dyn.onnx", hw=("H", "W"))
    r = cli("inputs", "dyn.onnx", "-o", "c.npz", cwd=tmp_path)
    assert r.exit_code == 2 and "--size" in r.output and not (tmp_path / "c.npz").exists()
    r = cli("inputs", "dyn.onnx", "-o", "c.npz", "--size", "24", "--per-photo", "1", "--mean", "0,0,0",
            "--std", "1,1,1", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "c.npz") as z:
        assert z["x"].shape[1:] == (3, 24, 24) and 0.0 <= z["x"].min() and z["x"].max() <= 1.0  # raw [0, 1]
    (tmp_path / "tok.json").write_text("{}")
    r = cli("inputs", "dyn.onnx", "-o", "d.npz", "--size", "24", "--tokenizer", "tok.json", cwd=tmp_path)
    assert r.exit_code == 2 and "--tokenizer" in r.output and "photos" in r.output
    r = cli("inputs", "dyn.onnx", "-o", "d.npz", "--kind", "sentences", cwd=tmp_path)
    assert r.exit_code == 2 and "take photos" in r.output
    assert not (tmp_path / "d.npz").exists()


def _word_tokenizer(folder, words):
    """A BERT-style tokenizer (lower-case words, [CLS] ... [SEP], [PAD] 0) over ``words``, saved as tokenizer.json."""
    tokenizers = pytest.importorskip("tokenizers", reason="the 'text' extra (tokenizers) is not installed")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    return len(vocab)


def _licenses(tmp_path, monkeypatch):
    lic = tmp_path / "licenses"
    lic.mkdir()
    (lic / "GPL").write_text("You may copy the program in any medium you like. The work is provided as is today. "
                             "Nobody may restrict your rights to copy the work.\n")
    (lic / "MIT").write_text("Permission is hereby granted to any person who gets a copy. The software is provided "
                             "as is without any warranty of any kind.\n")
    monkeypatch.setattr(text_sources, "LICENSES_DIR", lic)


WORDS = ("you may copy the program in any medium like . work is provided as today nobody restrict your rights to "
         "permission hereby granted person who gets a software without warranty of kind").split()


def test_sentences_for_a_text_model_by_its_own_tokenizer_grouped_by_document(tmp_path, monkeypatch):
    from tiny_bert import TinyBert, export_tiny_bert

    vocab = _word_tokenizer(tmp_path / "tok", WORDS)
    onnx.save(export_tiny_bert(TinyBert(vocab=vocab).eval()), str(tmp_path / "bert.onnx"))
    _licenses(tmp_path, monkeypatch)
    (tmp_path / "test.txt").write_text("The work is provided as is today.\n")
    r = cli("inputs", "bert.onnx", "-o", "calib.npz", "--tokenizer", "tok", "--sources", "licenses",
            "--max-length", "12", "--exclude", "test.txt", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "4 sentences from 2 documents (licenses), 12 tokens each" in r.output
    with np.load(tmp_path / "calib.npz") as z:
        ids, mask, groups = z["input_ids"], z["attention_mask"], z["groups"]
    assert ids.shape == mask.shape == (4, 12) and ids.dtype == np.int64
    assert np.all(ids[:, 0] == 2) and np.all(ids[mask == 0] == 0)  # [CLS] first, [PAD] where masked
    assert sorted(np.bincount(groups)) == [2, 2]  # two sentences of each license
    words = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    first = [words[w] for w in "[CLS] you may copy the program in any medium you like . [SEP]".split()][:12]
    assert first[:-1] in [row[:11].tolist() for row in ids]  # the first GPL sentence, truncated to 12 tokens
    assert int(mask.sum(1).max()) == 12

    small = _word_tokenizer(tmp_path / "small", WORDS[:10])  # another model's tokenizer: ids do not fit
    onnx.save(export_tiny_bert(TinyBert(vocab=small).eval()), str(tmp_path / "small.onnx"))
    r = cli("inputs", "small.onnx", "-o", "x.npz", "--tokenizer", "tok", "--sources", "licenses", cwd=tmp_path)
    assert r.exit_code == 2 and "not this model's tokenizer" in r.output and not (tmp_path / "x.npz").exists()
    r = cli("inputs", "bert.onnx", "-o", "x.npz", "--sources", "licenses", cwd=tmp_path)
    assert r.exit_code == 2 and "--tokenizer" in r.output


def test_the_kind_follows_the_graph_inputs():
    from tiny_bert import TinyBert, export_tiny_bert

    assert choose_kind(graph_input_list(_cnn_model())) == "photos"
    from rene_onnx.data.offline_inputs import GraphInput

    assert choose_kind([GraphInput("x", "float32", ["N", "C", "H", "W"])]) == "photos"  # symbolic channels
    with pytest.raises(ValueError, match="neither one image batch"):
        choose_kind([GraphInput("x", "float32", [1, 1, 28, 28])])  # grey images: no offline photos for them
    assert choose_kind(graph_input_list(export_tiny_bert(TinyBert().eval()))) == "sentences"


def _cnn_model():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return _cnn(Path(d) / "m.onnx")


def test_photos_from_a_folder_of_images(tmp_path):
    from PIL import Image

    _cnn(tmp_path / "m.onnx")
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / name)
    r = cli("inputs", "m.onnx", "-o", "c.npz", "--photos", "pics", "--per-photo", "2", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "6 crops of 3 photos" in r.output and "from pics" in r.output
    with np.load(tmp_path / "c.npz") as z:
        assert z["x"].shape == (6, 3, 32, 32) and z["groups"].tolist() == [0, 0, 1, 1, 2, 2]
    (folder / "notes.txt").write_text("not an image")
    r = cli("inputs", "m.onnx", "-o", "d.npz", "--photos", str(tmp_path / "none"), cwd=tmp_path)
    assert r.exit_code == 2 and not (tmp_path / "d.npz").exists()
