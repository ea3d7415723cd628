"""A cnnsplitter model folder (model.json + model.safetensors) as a PyTorch module: one general
interpreter of the model description, as the tool's own engines have, so PyTorch runs exactly the
networks the tool runs (decoded modules included), whatever their architecture.

    from description_torch import load_model_folder
    net, description = load_model_folder("runs/x/modules/class_00")   # net: eval mode
"""
import json
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32}


def read_safetensors(path):
    """The tensors of a safetensors file (F32 only, as the tool writes), by name."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}; only F32 is read")
        begin, end = info["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors


class DescriptionNet(torch.nn.Module):
    """Runs the layers of a model description in order, as the tool does: each layer takes the
    previous layer's output (or the earlier layer its `input` names); `add` and `concat` read the
    earlier layers they name."""

    def __init__(self, description, tensors):
        super().__init__()
        self.layers = description["layers"]
        self.params = torch.nn.ParameterDict(
            {name.replace(".", "__"): torch.nn.Parameter(t, requires_grad=False) for name, t in tensors.items()})

    def p(self, layer, what):
        key = f"{layer['name']}.{what}".replace(".", "__")
        return self.params[key] if key in self.params else None

    def forward(self, x):
        outputs = {}
        previous = x
        for layer in self.layers:
            kind = layer["type"]
            h = outputs[layer["input"]] if layer.get("input") else previous
            if kind == "conv2d":
                h = F.conv2d(h, self.p(layer, "weight"), self.p(layer, "bias"), tuple(layer["stride"]),
                             tuple(layer["padding"]), 1, layer.get("groups", 1))
            elif kind == "batch_norm2d":
                h = F.batch_norm(h, self.p(layer, "running_mean"), self.p(layer, "running_var"),
                                 self.p(layer, "weight"), self.p(layer, "bias"), False, 0.0, layer["eps"])
            elif kind == "relu":
                h = F.relu(h)
            elif kind == "relu6":
                h = F.relu6(h)
            elif kind == "max_pool2d":
                h = F.max_pool2d(h, tuple(layer["kernel"]), tuple(layer["stride"]), tuple(layer.get("padding", [0, 0])))
            elif kind == "avg_pool2d":
                h = F.avg_pool2d(h, tuple(layer["kernel"]), tuple(layer["stride"]), tuple(layer.get("padding", [0, 0])))
            elif kind == "global_avg_pool":
                h = h.mean(dim=(2, 3), keepdim=True)
            elif kind == "flatten":
                h = torch.flatten(h, 1)
            elif kind == "linear":
                h = F.linear(h, self.p(layer, "weight"), self.p(layer, "bias"))
            elif kind == "dropout":
                pass
            elif kind == "add":
                h = h + outputs[layer["from"]]
            elif kind == "concat":
                h = torch.cat([h] + [outputs[f] for f in layer["from"]], dim=1)
            else:
                raise ValueError(f"layer {layer['name']}: unknown type {kind}")
            outputs[layer["name"]] = h
            previous = h
        return torch.flatten(previous, 1)


def load_model_folder(folder):
    """The model in `folder` (model.json, model.safetensors) as a DescriptionNet in eval mode, and
    its description."""
    folder = Path(folder)
    description = json.loads((folder / "model.json").read_text())
    return DescriptionNet(description, read_safetensors(folder / "model.safetensors")).eval(), description
