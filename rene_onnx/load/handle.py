"""The ModelHandle: the torch module, the original ONNX graph, and the layer map between them.

Inputs: a handle holds one :class:`InputSpec` per graph input, in graph order (name, static shape with
batch, dtype, and for an integer input that indexes an embedding table the table's size). The torch
model takes them positionally (``model(*x)``); ``example_input()`` is the tensor itself for a single input
and a tuple in graph order otherwise. Example values follow one rule (see
``rene_onnx.graph.example_array``): floats standard normal, an integer input that reaches a ``Gather``
of a constant table through value-preserving ops (``rene_onnx.graph.index_ranges``) uniform in
``[0, rows)``, any other integer input ones (a full attention mask), bool inputs True.
"""
from __future__ import annotations

from collections.abc import Sequence
import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn

from rene_onnx.engine.fold import fold_batchnorm_


@dataclass
class OnnxRef:
    """Where a torch layer lives in the ONNX graph."""

    node: str
    op_type: str
    weight: str
    bias: str | None = None
    transposed: bool = False  # ONNX weight is the torch weight transposed (MatMul x @ W^T)


#: graph input dtypes a handle supports (numpy names); integer inputs are token ids / masks / indices
INPUT_DTYPES = ("float32", "int64", "int32", "bool")


@dataclass(frozen=True)
class InputSpec:
    """One graph input as the torch model takes it (positionally, in graph order)."""

    name: str
    shape: tuple[int, ...]  # static, batch included
    dtype: str = "float32"  # numpy dtype name, one of INPUT_DTYPES
    high: int | None = None  # an integer input indexing a table of this many rows: example values in [0, high)
    dynamic: tuple[int, ...] = ()  # axes that are symbolic in the graph (data may differ there)

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_DTYPES:
            raise ValueError(f"input {self.name!r}: dtype {self.dtype} is not supported (supported: "
                             f"{', '.join(INPUT_DTYPES)})")
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise ValueError(f"input {self.name!r}: shape must be positive integers, got {list(self.shape)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, self.dtype)).dtype


def example_tensors(specs: Sequence[InputSpec], seed: int = 0) -> dict[str, torch.Tensor]:
    """Example inputs, name -> tensor (the rule is in the module docstring).

    Float inputs come from ``torch.randn`` with a generator seeded ``seed``
    (drawn in graph order), the others from ``_graph.example_array``.
    """
    from rene_onnx.graph import example_array

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        if s.dtype == "float32":
            out[s.name] = torch.randn(s.shape, generator=g)
        else:
            out[s.name] = torch.from_numpy(example_array(np.dtype(s.dtype), s.shape, rng, s.high))
    return out


@dataclass
class ModelHandle:
    #: the original, eval mode (BatchNorm kept: search and fine-tuning use it); None: onnx2torch could not import
    #: the graph (``import_error`` says why) and only the graph's weights are at hand
    torch_model: nn.Module | None
    onnx_model: onnx.ModelProto  # the original graph: rewritten and shipped
    layer_map: dict[str, OnnxRef]  # torch module name -> ONNX node
    param_map: dict[str, str]  # torch parameter name -> ONNX initializer name
    input_shape: tuple[int, ...]
    source: str
    notes: list[str] = field(default_factory=list)
    unmapped: dict[str, str] = field(default_factory=dict)  # torch layer -> why it is not in the ONNX graph
    external_data: bool = False  # the ONNX input came with external data: save the output that way too
    fold_bn: bool = False  # the ONNX graph has BatchNorm folded into the convs: fold before writing back
    #: the graph inputs in graph order; empty: one float32 input, the graph's first, of shape ``input_shape``
    inputs: list[InputSpec] = field(default_factory=list)
    #: torch parameters the ONNX graph cannot take back (their tensor is shared, or unmatched): not fine-tuned
    frozen: list[str] = field(default_factory=list)
    #: the only batch size the torch model runs (a fixed-batch graph whose import could not be made
    #: batch-dynamic: search and fine-tuning use it); None: any batch
    torch_batch: int | None = None
    #: why the ONNX graph has no torch model (None: it has one)
    import_error: str | None = None

    def deployable(self, model: nn.Module) -> nn.Module:
        """An eval-mode copy of ``model`` (the original or a student) in the ONNX graph's form (BN folded)."""
        out = copy.deepcopy(model).eval()
        if self.fold_bn:
            fold_batchnorm_(out)
        return out

    @property
    def specs(self) -> list[InputSpec]:
        """The graph inputs the torch model takes, in order (a single float input when ``inputs`` is empty)."""
        if self.inputs:
            return list(self.inputs)
        init = {i.name for i in self.onnx_model.graph.initializer}
        first = next(i.name for i in self.onnx_model.graph.input if i.name not in init)
        return [InputSpec(first, tuple(self.input_shape))]

    @property
    def input_name(self) -> str:
        """The first graph input's name (the only one of a single-input model)."""
        return self.specs[0].name

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Graph input name -> static shape (batch included), in graph order."""
        return {s.name: tuple(s.shape) for s in self.specs}

    @property
    def input_dtypes(self) -> dict[str, str]:
        """Graph input name -> numpy dtype name (float32, int64, int32, bool)."""
        return {s.name: s.dtype for s in self.specs}

    @property
    def multi_input(self) -> bool:
        return len(self.specs) > 1

    def example_inputs(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """Example inputs, graph input name -> tensor (the module docstring has the rule)."""
        return example_tensors(self.specs, seed)

    def example_input(self, seed: int = 0) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """What the torch model is called with: the tensor (one input) or a tuple in graph order (``model(*x)``)."""
        x = tuple(self.example_inputs(seed).values())
        return x[0] if len(x) == 1 else x

    def feeds(self, x: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        """onnxruntime feeds for torch inputs ``x`` (a tensor, or a tuple in graph order)."""
        xs = (x,) if isinstance(x, torch.Tensor) else tuple(x)
        if len(xs) != len(self.specs):
            raise ValueError(f"the model takes {len(self.specs)} input(s) ({', '.join(self.input_names)}), "
                             f"got {len(xs)}")
        return {s.name: t.detach().cpu().numpy().astype(s.dtype, copy=False) for s, t in zip(self.specs, xs)}
