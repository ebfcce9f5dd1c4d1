"""Revert factorized chains of a rewritten graph to the original dense nodes, on the graphs alone.

:func:`revert_layers` is the graph-only form of planning a layer dense and rewriting again: it needs
no factors and no torch, so it works on a weight-stripped pack (:mod:`rene_onnx.pack`) as well as on a
full model. No torch here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from rene_onnx.errors import UserError


def revert_layers(original: onnx.ModelProto, compressed: onnx.ModelProto,
                  layer_nodes: Mapping[str, tuple[str, Sequence[str]]], layers: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``compressed`` with the chains of ``layers`` replaced by their original dense nodes (and weights).

    ``layer_nodes``: ``{layer: (dense node name in original, [chain node names in compressed])}``, as the
    rewrite records them. Timing-equivalent to rewriting again with those layers planned dense (what the
    latency-aware rewrite does, with the weights the factors represent). A chain ends in its dense node's
    output tensor, so the dense node slots in where the chain's first node was. Initializers no node uses
    any more (the chain's factors) are dropped; ``compressed`` is not changed.
    """
    m = onnx.ModelProto()
    m.CopyFrom(compressed)
    g = m.graph
    dense = {n.name: n for n in original.graph.node}
    orig_inits = {t.name: t for t in original.graph.initializer}
    for layer in layers:
        if layer not in layer_nodes:
            raise UserError(f"revert_layers: no chain recorded for layer {layer!r}")
        node_name, chain = layer_nodes[layer]
        chain = set(chain)
        at = next((i for i, n in enumerate(g.node) if n.name in chain), None)
        if at is None or node_name not in dense:
            raise UserError(f"revert_layers: layer {layer!r}: chain {sorted(chain)} or dense node {node_name!r} "
                            "not in the graphs")
        kept = [n for n in g.node if n.name not in chain]
        del g.node[:]
        g.node.extend(kept[:at] + [dense[node_name]] + kept[at:])
        have = {t.name for t in g.initializer}
        g.initializer.extend(orig_inits[i] for i in dense[node_name].input if i in orig_inits and i not in have)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m


__all__ = ["revert_layers"]
