"""``input_shape`` values: a plain shape (``1,3,32,32``) or one ``NAME:DIMS`` per input, and their size limit."""
from __future__ import annotations

from collections.abc import Sequence
import re

from rene_onnx.errors import LoadError

#: the largest single input (in elements) a shape may ask for; far above any real model input, and
#: small enough that building an example tensor of it cannot exhaust memory
MAX_INPUT_ELEMENTS = 1 << 28  # 1 GiB of float32


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(t) for t in re.split(r"[,x\s]+", text.strip()) if t)
    except ValueError:
        raise LoadError("must be integers like 1,3,32,32", option="input_shape") from None
    if not shape or any(d <= 0 for d in shape):
        raise LoadError(f"must be positive integers like 1,3,32,32, got {text!r}", option="input_shape")
    check_input_size(shape)
    return shape


def check_input_size(shape: Sequence[int], name: str | None = None) -> None:
    """Refuse a shape whose example tensor would not fit in memory (more than :data:`MAX_INPUT_ELEMENTS`)."""
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_INPUT_ELEMENTS:
        what = f"input {name!r}" if name else "the input"
        raise LoadError(f"{what} of shape {list(shape)} has {n:.3g} elements ({4 * n / 2**30:.3g} GiB as float32); "
                        f"the most one input may have is {MAX_INPUT_ELEMENTS:,}", option="input_shape")


def parse_input_shapes(texts: str | Sequence[str] | None) -> tuple[int, ...] | dict[str, tuple[int, ...]] | None:
    """``--input-shape`` values -> a shape (one plain ``1,3,32,32``) or ``{name: shape}`` (``name:1,32``, repeatable).

    A plain shape is for single-input models; a multi-input model takes one
    ``NAME:DIMS`` per input whose dims are dynamic. Mixing the two forms,
    several plain shapes, or the same name twice is a ``LoadError``.
    """
    if texts is None or isinstance(texts, str):
        texts = [] if texts is None else [texts]
    texts = list(texts)
    if not texts:
        return None
    named: dict[str, tuple[int, ...]] = {}
    plain = []
    for text in texts:
        name, sep, dims = str(text).rpartition(":")
        if not sep:
            plain.append(parse_shape(text))
            continue
        name = name.strip()
        if not name:
            raise LoadError(f"{text!r}: the input name before ':' is empty (use NAME:1,32)", option="input_shape")
        if name in named:
            raise LoadError(f"names {name!r} twice", option="input_shape")
        named[name] = parse_shape(dims)
    if plain and named:
        raise LoadError("give either one plain shape (single-input models) or NAME:DIMS for each "
                        "input, not both", option="input_shape")
    if len(plain) > 1:
        raise LoadError("several plain shapes; a multi-input model takes NAME:DIMS for each input", option="input_shape")
    return plain[0] if plain else named
