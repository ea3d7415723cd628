"""Integration check of `cnnsplitter import`: PyTorch models written the way the original
CNNSplitter code names them (SimCNN: conv_{i}, fc_13..fc_15; ResCNN: conv_{i} blocks as
nn.Sequential, classifier = Sequential(Flatten, Dropout, Linear)), a plain nn.Sequential, and
torchvision's resnet18, mobilenet_v2 and vgg16_bn made CIFAR-size (state_dict names as they are),
saved as safetensors state_dicts, imported, exported to ONNX and run in ONNX Runtime: the logits
must equal PyTorch's (relative error <= 1e-5).

Run with the virtual environment of ../shared/bench/setup-torch.sh (PyTorch + onnxruntime):
    scripts/check-import-vs-pytorch.sh
"""
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn


def width(c, w):
    return max(1, int(round(c * w)))


class SimCNN(nn.Module):
    OUT = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    POOL_AFTER = {1, 3, 6, 9, 12}

    def __init__(self, w, classes):
        super().__init__()
        cin = 3
        for i, c in enumerate(self.OUT):
            setattr(self, f"conv_{i}", nn.Conv2d(cin, width(c, w), 3, padding=1))
            cin = width(c, w)
        hidden = width(512, w)
        self.fc_13 = nn.Linear(cin, hidden)
        self.fc_14 = nn.Linear(hidden, hidden)
        self.fc_15 = nn.Linear(hidden, classes)

    def forward(self, x):
        for i in range(len(self.OUT)):
            x = torch.relu(getattr(self, f"conv_{i}")(x))
            if i in self.POOL_AFTER:
                x = nn.functional.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        return self.fc_15(torch.relu(self.fc_14(torch.relu(self.fc_13(x)))))


class ResCNN(nn.Module):
    BLOCKS = [(3, 64, False), (64, 128, True), (128, 128, False), (128, 128, False), (128, 256, True),
              (256, 512, True), (512, 512, False), (512, 512, False), (512, 512, True), (512, 512, True),
              (512, 512, False), (512, 512, False)]

    def __init__(self, w, classes):
        super().__init__()
        for i, (cin, cout, pool) in enumerate(self.BLOCKS):
            cin = cin if i == 0 else width(cin, w)
            layers = [nn.Conv2d(cin, width(cout, w), 3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            setattr(self, f"conv_{i}", nn.Sequential(*layers))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.4), nn.Linear(width(512, w), classes))

    def forward(self, x):
        out = {}
        for i in range(12):
            x = getattr(self, f"conv_{i}")(x)
            if i in (3, 7, 11):
                x = x + out[i - 2]
            out[i] = x
        return self.classifier(x)


def simple_sequential(w, classes):
    """simcnn-weak as a plain nn.Sequential (numbered names)."""
    layers, cin = [], 3
    for _ in range(4):
        layers += [nn.Conv2d(cin, width(64, w), 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        cin = width(64, w)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * 2 * 2, classes))


def tv_resnet18(classes):
    """torchvision's resnet18 made CIFAR-size as the peers do: a 3x3 stride-1 stem, no max-pool."""
    import torchvision
    m = torchvision.models.resnet18(num_classes=classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def tv_mobilenet_v2(classes):
    """torchvision's mobilenet_v2 with stride 1 in the stem and the first 24-channel stage."""
    import torchvision
    m = torchvision.models.mobilenet_v2(num_classes=classes)
    m.features[0][0].stride = (1, 1)
    m.features[2].conv[1][0].stride = (1, 1)
    return m


def tv_vgg16_bn(classes):
    """torchvision's vgg16_bn on 32x32: no adaptive pool, one linear classifier on the 512 features."""
    import torchvision
    m = torchvision.models.vgg16_bn(num_classes=classes)
    m.avgpool = nn.Identity()
    m.classifier = nn.Linear(512, classes)
    return m


def save_safetensors(path, state):
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        a = t.detach().contiguous().cpu().numpy()
        dtype = {"float32": "F32", "int64": "I64"}[str(a.dtype)]
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class TinyDenseNet(nn.Module):
    """A DenseNet-style network: pre-activation dense layers (BatchNorm, ReLU, conv) whose outputs
    are joined to their inputs by torch.cat, a transition (1x1 conv, average pooling), a second
    dense block and a BatchNorm-ReLU-average-pool head."""

    def __init__(self, classes, growth=8, per_block=3):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        c = 16
        self.block1, c = self.dense_block(c, growth, per_block)
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                        nn.AvgPool2d(2))
        c //= 2
        self.block2, c = self.dense_block(c, growth, per_block)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c, classes))

    @staticmethod
    def dense_block(c, growth, n):
        layers = nn.ModuleList()
        for _ in range(n):
            layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1, bias=False)))
            c += growth
        return layers, c

    def forward(self, x):
        x = self.stem(x)
        for layer in self.block1:
            x = torch.cat([x, layer(x)], 1)
        x = self.transition(x)
        for layer in self.block2:
            x = torch.cat([x, layer(x)], 1)
        return self.head(x)


def randomize(net, seed):
    """Non-zero biases and BatchNorm statistics away from (0, 1), so that every tensor matters;
    then eval mode."""
    torch.manual_seed(seed)
    for p in net.parameters():
        if p.dim() == 1:
            nn.init.uniform_(p, -0.1, 0.1)
    for name, b in net.named_buffers():
        if name.endswith("running_mean"):
            nn.init.uniform_(b, -0.1, 0.1)
        elif name.endswith("running_var"):
            nn.init.uniform_(b, 0.5, 1.5)
    net.eval()


def check(binary, arch, net, tmp):
    randomize(net, seed=0)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        want = net(x).numpy()
    st = tmp / f"{arch}.safetensors"
    save_safetensors(st, net.state_dict())
    folder, onnx = tmp / f"{arch}-model", tmp / f"{arch}.onnx"
    subprocess.run([binary, "import", "--arch", arch, "--weights", str(st), "--out", str(folder)], check=True)
    subprocess.run([binary, "export", str(folder), "--onnx", str(onnx)], check=True)
    got = ort.InferenceSession(str(onnx)).run(None, {"input": x.numpy()})[0]
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    print(f"{arch:<18} max relative error {err:.2e}")
    return err <= 1e-5


def check_onnx(binary, arch, net, tmp, dynamo):
    """Exports `net` with one of PyTorch's exporters, imports the file with `import --onnx` (which
    checks itself against the file in ONNX Runtime), exports the imported model again and compares
    its logits with PyTorch's."""
    import glob
    import os
    randomize(net, seed=1)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        want = net(x).numpy()
    kind = "dynamo" if dynamo else "legacy"
    path = tmp / f"{arch}-{kind}.onnx"
    torch.onnx.export(net, (x[:1],), str(path), dynamo=dynamo, input_names=["input"], output_names=["logits"])
    folder, again = tmp / f"{arch}-{kind}-model", tmp / f"{arch}-{kind}-again.onnx"
    env = dict(os.environ)
    lib = glob.glob(os.path.join(os.path.dirname(ort.__file__), "capi", "libonnxruntime.so*"))
    if lib:
        env["ORT_DYLIB_PATH"] = lib[0]
    run = subprocess.run([binary, "import", "--onnx", str(path), "--out", str(folder)], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        print(f"{arch:<12} {kind:<7} import FAILED: {run.stderr.strip()}")
        return False
    subprocess.run([binary, "export", str(folder), "--onnx", str(again)], check=True, capture_output=True)
    got = ort.InferenceSession(str(again)).run(None, {"input": x.numpy()})[0]
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    layers = len(json.loads((folder / "model.json").read_text())["layers"])
    print(f"{arch:<12} {kind:<7} ONNX import: {layers} layers, max relative error {err:.2e}")
    return err <= 1e-4


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/cnnsplitter"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ok = all([
            check(binary, "simcnn@0.25", SimCNN(0.25, 10), tmp),
            check(binary, "rescnn@0.25", ResCNN(0.25, 7), tmp),
            check(binary, "simcnn", SimCNN(1.0, 10), tmp),
            check(binary, "simcnn-weak@0.5", simple_sequential(0.5, 5), tmp),
            check(binary, "resnet18", tv_resnet18(10), tmp),
            check(binary, "mobilenetv2", tv_mobilenet_v2(10), tmp),
            check(binary, "vgg16-bn", tv_vgg16_bn(10), tmp),
        ])
        for dynamo in [False, True]:
            for arch, make in [("resnet18", tv_resnet18), ("mobilenetv2", tv_mobilenet_v2), ("vgg16-bn", tv_vgg16_bn),
                               ("tiny-densenet", TinyDenseNet)]:
                ok = check_onnx(binary, arch, make(10), tmp, dynamo) and ok
    print("all equal" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
