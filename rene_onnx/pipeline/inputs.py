"""Stage 1 of the pipeline: the model and the real inputs it is compressed and measured with.

:func:`load_model` turns a zoo name, a ``package.module:callable`` (+ weights) or an ``.onnx`` file into a
:class:`~rene_onnx.load.ModelHandle`; :func:`load_data` reads a labeled dataset (train / calib / test
splits that never overlap) and checks it fits the model; :func:`calib_inputs` reads unlabeled ``calib``
inputs, one tensor per graph input in graph order.
"""
from __future__ import annotations

import numpy as np
import torch

from rene_onnx.config import CompressConfig
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.errors import LoadError, UserError
from rene_onnx.load import ModelHandle, load_torch


def load_model(cfg: CompressConfig) -> ModelHandle:
    """A zoo name or ``package.module:callable`` (+ weights), or an ``.onnx`` file -> ModelHandle."""
    if str(cfg.model).endswith(".onnx"):
        from rene_onnx.load import TorchImportError, load_onnx, load_onnx_graph

        if cfg.weights is not None:
            raise LoadError("does not apply to an ONNX model (its weights are in the file)", option="weights")
        try:
            return load_onnx(cfg.model, cfg.input_shape)
        except TorchImportError as e:
            needs = needs_torch(cfg)
            if needs:
                raise LoadError(f"{e.message}; {needs} needs the torch import. Without it compress works data-free "
                                f"on the graph's weights: {{data_free}} with {{ranks}} or {{target_params}} / "
                                f"{{target_macs}}, {{epochs}}, no {{calib}} / {{data}}",
                                refs={"data_free": True, "ranks": "FRACTION", "target_params": "F",
                                      "target_macs": "F", "epochs": 0, "calib": None, "data": None}) from None
            return load_onnx_graph(cfg.model, e, cfg.input_shape)
    return load_torch(cfg.model, cfg.weights, cfg.input_shape)


def needs_torch(cfg: CompressConfig) -> str | None:
    """What in ``cfg`` needs the ONNX graph's torch import (None: a data-free run on the graph's weights will do)."""
    if cfg.data is not None:
        return "training / measuring on a dataset (data)"
    if cfg.calib is not None:
        return "calib inputs"
    if cfg.target_latency is not None:
        return "target_latency"
    if cfg.rewrite.ranks is None:
        budgeted = cfg.search is not None and (cfg.search.target_params is not None
                                               or cfg.search.target_macs is not None)
        if not (cfg.data_free and budgeted):
            return "the RENE rank search"
    return None


def calib_inputs(cfg: CompressConfig, handle: ModelHandle) -> tuple[torch.Tensor, ...] | None:
    """The ``calib`` inputs, one tensor per graph input in graph order (None without ``calib``)."""
    if cfg.calib is None:
        return None
    from rene_onnx.data import unlabeled_input_arrays

    return unlabeled_input_arrays(cfg.calib, handle.specs)


def layer_shapes(handle: ModelHandle) -> dict[str, LayerShape]:
    from rene_onnx.engine.profile import layer_shapes as _shapes

    shapes = _shapes(handle.torch_model, handle.example_input())
    return {n: s for n, s in shapes.items() if n in handle.layer_map}


def load_data(cfg: CompressConfig, handle: ModelHandle):
    """The labeled dataset for search / fine-tuning / accuracy, checked against the model; None if there is none."""
    from rene_onnx import models as zoo
    from rene_onnx.data import load_dataset

    name = cfg.data
    if name is None and cfg.model in zoo.list_models() and cfg.weights is None:
        name = zoo.default_dataset(cfg.model)
    if name is None:
        return None
    if handle.multi_input or handle.specs[0].dtype != "float32":
        raise UserError(f"{name}: labeled datasets are float images; this model takes "
                        f"{', '.join(f'{k} ({v})' for k, v in handle.input_dtypes.items())}: give unlabeled inputs "
                        f"with {{calib}} (an .npz with one array per input name)", option="data",
                        refs={"calib": "FILE.npz"})
    splits = load_dataset(name)
    if min(len(splits.train), len(splits.test)) == 0:
        raise UserError(f"dataset {name} is empty: {splits.sizes()}", option="data")
    want = tuple(handle.input_shape[1:])
    if tuple(splits.input_shape) != want:
        raise UserError(f"dataset {name} has inputs {tuple(splits.input_shape)} but the model expects {want}", option="data")
    with torch.no_grad():
        classes = handle.torch_model(handle.example_input()).shape[-1]
    if classes != splits.num_classes:
        raise UserError(f"dataset {name} has {splits.num_classes} classes but the model outputs {classes}", option="data")
    return splits


def test_split_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test split of dataset ``name`` as numpy arrays (inputs, labels)."""
    from rene_onnx.data import load_dataset

    return test_arrays(load_dataset(name))


def test_arrays(splits) -> tuple[np.ndarray, np.ndarray] | None:
    """The test split of labeled ``splits`` as numpy arrays (inputs float32, labels int64); None without data."""
    if splits is None:
        return None
    x, y = splits.test.tensors()
    return x.numpy().astype(np.float32), y.numpy().astype(np.int64)


def static_batch(handle: ModelHandle) -> int | None:
    """The batch size an ONNX graph was exported with when it is fixed (None: dynamic)."""
    vi = next(i for i in handle.onnx_model.graph.input if i.name == handle.input_name)
    dims = vi.type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None


def calib_loader(calib: tuple[torch.Tensor, ...], max_samples: int, batch_size: int) -> torch.utils.data.DataLoader:
    """The first ``max_samples`` ``calib`` samples in order, as unlabeled batches."""
    from rene_onnx.data import unlabeled_dataset

    return torch.utils.data.DataLoader(unlabeled_dataset([t[:max_samples] for t in calib]), batch_size=batch_size)
