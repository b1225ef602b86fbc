"""A DINOv2-architecture ViT inside an ONNX graph (HF ``Dinov2Model`` export) -> timm ViT state dict.

The export keeps HF names for biases, norms and LayerScale, but its q/k/v/proj/fc weights are unnamed
``onnx::MatMul_*`` initializers (stored k, v, q): each is mapped by the node that consumes it (its MatMul's
output goes to an ``Add`` with a named bias). The position embedding is two unnamed initializers found by
shape and consumer: the class token's ``1 x 1 x D`` (Concat) and the patch grid's ``1 x N x D`` (Reshape).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "backbone."
_LAYER = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
# HF Dinov2 layer parameter -> timm VisionTransformer block parameter.
_NAMED = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.bias": "mlp.fc1.bias", "mlp.fc2.bias": "mlp.fc2.bias",
}
_WEIGHT_OF_BIAS = {  # a MatMul weight takes the role of the bias its output is added to
    "attention.attention.query.bias": "q", "attention.attention.key.bias": "k",
    "attention.attention.value.bias": "v", "attention.output.dense.bias": "attn.proj.weight",
    "mlp.fc1.bias": "mlp.fc1.weight", "mlp.fc2.bias": "mlp.fc2.weight",
}
_WEIGHTS = ("W:q", "W:k", "W:v", "W:attn.proj.weight", "W:mlp.fc1.weight", "W:mlp.fc2.weight")
_TOP = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}


def load_graph(path: str | Path) -> Any:
    import onnx  # only the weights step and its tests need onnx

    return onnx.load(str(path))


def _initializers(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _matmul_roles(model: Any, inits: dict[str, np.ndarray]) -> dict[str, str]:
    """``{MatMul weight initializer: HF bias name it feeds}`` by following MatMul -> Add."""
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    roles = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        biases = [i for add in consumers[node.output[0]] if add.op_type == "Add" for i in add.input
                  if i.startswith(PREFIX) and i in inits]
        if len(biases) == 1:
            roles[node.input[1]] = biases[0]
    return roles


def _pos_embed(model: Any, inits: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """``1 x (1 + N) x D``: the unnamed class-token (Concat) and patch-grid (Reshape) position embeddings."""
    ops = defaultdict(set)
    for node in model.graph.node:
        for name in node.input:
            ops[name].add(node.op_type)
    cls, grid = [], []
    for name, a in inits.items():
        if name.startswith(PREFIX) or a.ndim != 3 or a.shape[0] != 1 or a.shape[2] != dim:
            continue
        n = a.shape[1]
        if n == 1 and "Concat" in ops[name]:
            cls.append(a)
        elif n > 1 and round(n**0.5) ** 2 == n and "Reshape" in ops[name]:
            grid.append(a)
    if len(cls) != 1 or len(grid) != 1:
        raise ValueError(f"ONNX graph: expected one class and one grid position embedding, found {len(cls)} / {len(grid)}")
    return np.concatenate([cls[0], grid[0]], axis=1)


def onnx_dinov2_to_timm(model: Any) -> dict[str, torch.Tensor]:
    """timm ``vit_*_patch14_dinov2`` state dict (``num_classes=0``) from the ONNX graph's backbone tensors.

    qkv: ``attn.qkv.weight`` ``3D x D`` = [Wq; Wk; Wv] (MatMul weights are ``D_in x D_out``, transposed).
    """
    inits = _initializers(model)
    out = {timm: torch.from_numpy(inits[hf].copy()) for hf, timm in _TOP.items()}
    dim = out["cls_token"].shape[-1]
    out["pos_embed"] = torch.from_numpy(_pos_embed(model, inits, dim))
    layers: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    for name, a in inits.items():
        m = _LAYER.match(name)
        if m:
            layers[int(m[1])][m[2]] = a
    for weight, bias in _matmul_roles(model, inits).items():
        m = _LAYER.match(bias)
        if m and m[2] in _WEIGHT_OF_BIAS:
            layers[int(m[1])]["W:" + _WEIGHT_OF_BIAS[m[2]]] = inits[weight].T
    for i in sorted(layers):
        p, b = layers[i], f"blocks.{i}."
        missing = [k for k in _WEIGHTS if k not in p]
        if missing:
            raise ValueError(f"ONNX graph: layer {i}: no MatMul weight found for {missing}")
        for hf, timm in _NAMED.items():
            out[b + timm] = torch.from_numpy(p[hf].copy())
        for k in ("attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"):
            out[b + k] = torch.from_numpy(np.ascontiguousarray(p["W:" + k]))
        out[b + "attn.qkv.weight"] = torch.from_numpy(np.concatenate([p["W:q"], p["W:k"], p["W:v"]], axis=0))
        out[b + "attn.qkv.bias"] = torch.from_numpy(np.concatenate(
            [p[f"attention.attention.{r}.bias"] for r in ("query", "key", "value")]))
    return out


def backbone_output_name(model: Any) -> str:
    """Name of the backbone's last tensor: the final LayerNorm's bias ``Add`` (``B x (1 + N) x D`` tokens)."""
    for node in model.graph.node:
        if node.op_type == "Add" and "backbone.layernorm.bias" in node.input:
            return node.output[0]
    raise ValueError("ONNX graph: no backbone.layernorm output found")


def onnx_backbone_tokens(model: Any, images: np.ndarray) -> np.ndarray:
    """onnxruntime on the graph, reading its backbone output: ``B x 3 x S x S`` float32 -> ``B x (1+N) x D``."""
    import onnx
    import onnxruntime as ort

    name = backbone_output_name(model)
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2  # shared CI cores
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([name], {sess.get_inputs()[0].name: images.astype(np.float32)})[0]
