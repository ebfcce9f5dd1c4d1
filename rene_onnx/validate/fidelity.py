"""Output comparisons that name their inputs, and the one figure a fidelity floor is checked against.

Every entry of a report's ``numerics`` carries ``inputs`` (``"random"``, ``"calib-heldout"``, ``"calib"``,
``"data-test"``) and ``n`` (how many samples). Random inputs say nothing about accuracy, so their entries
carry no top-1 agreement or top-5 overlap. The fidelity of an entry on real inputs (:func:`fidelity`) is
the top-1 agreement with the original for class-score outputs, the mean per-sample cosine otherwise.
"""
from __future__ import annotations

from typing import Any, Mapping

#: the entries that read as accuracy: never reported for random inputs
ACCURACY_KEYS = ("top1_agreement", "top5_overlap")
#: what to tell a user who gave no real inputs
UNKNOWN_ACCURACY = ("accuracy unknown: outputs were compared on random inputs only; measure it on real inputs "
                    "with --calib FILE.npz (a share is held out) or --data; no data at hand: "
                    "rene-onnx inputs MODEL.onnx -o FILE.npz writes real photos / sentences for --calib")


def labelled(numerics: Any, inputs: str, n: int) -> dict[str, Any]:
    """``numerics`` (a :class:`~rene_onnx.validate.numerics.Numerics` or its dict) with ``inputs`` and ``n``."""
    d = dict(numerics if isinstance(numerics, Mapping) else vars(numerics))
    if inputs == "random":
        for k in ACCURACY_KEYS:
            d.pop(k, None)
    return {**d, "inputs": inputs, "n": int(n)}


def fidelity(entry: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """``(metric, value)`` of a real-input entry: top-1 agreement (classifier) or mean per-sample cosine."""
    if not entry or entry.get("inputs") == "random":
        return None
    if entry.get("top1_agreement") is not None:
        return "top1_agreement", float(entry["top1_agreement"])
    if entry.get("mean_sample_cosine") is not None:
        return "mean_sample_cosine", float(entry["mean_sample_cosine"])
    return None


def real_entries(numerics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The entries of a report's ``numerics`` measured on real inputs."""
    return {k: v for k, v in numerics.items() if isinstance(v, Mapping) and v.get("inputs") not in (None, "random")}
