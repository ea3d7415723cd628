"""PyTorch's side of `cnnsplitter bench modules`: the same decoded sub-networks (the folders that
`bench modules --save-modules DIR` writes), run by PyTorch through scripts/description_torch.py over
the same number of random 3x32x32 images in chunks of 256, timed by the same rule (median of
max(1, iters / 2) runs after one warm-up). One JSON line per variant (eager, channels_last).

With --check-onnx FILE (FILE: `cnnsplitter export DIR/module_000 --onnx FILE`), the first module's
logits from PyTorch are first compared with ONNX Runtime's on FILE; a relative error above 1e-4
stops the script, so the timed networks are the ones the tool runs.

usage: python bench_modules_torch.py DIR [--images 500] [--iters 4] [--threads 2] [--check-onnx FILE]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from description_torch import load_model_folder


def check(net, onnx_file, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
    x = torch.randn(16, 3, 32, 32)
    with torch.inference_mode():
        ours = net(x).numpy()
    theirs = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    scale = max(abs(theirs).max(), 1e-12)
    err = float(abs(ours - theirs).max() / scale)
    # How much the logits depend on the image: random weights can saturate a deep network (ReLU6
    # everywhere at 6), and then the check shows little.
    dependence = float(theirs.std(axis=0).max() / scale)
    print(json.dumps({"check": "pytorch interpreter vs onnxruntime on the exported module",
                      "max_relative_error": err, "input_dependence": dependence}), flush=True)
    if dependence < 1e-4:
        print(f"WARNING: the logits of {onnx_file} hardly depend on the input (std/max {dependence:.2g}): "
              "the check above says little about this network", file=sys.stderr, flush=True)
    if err > 1e-4:
        sys.exit(f"the PyTorch interpreter disagrees with ONNX Runtime on {onnx_file}: relative error {err:.3g}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check-onnx", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    folders = sorted(d for d in a.dir.iterdir() if (d / "model.json").is_file())
    if not folders:
        sys.exit(f"{a.dir}: no model folders (write them with `cnnsplitter bench modules --save-modules`)")
    loaded = [load_model_folder(f) for f in folders]
    arch = loaded[0][1]["name"]
    if a.check_onnx:
        check(loaded[0][0], a.check_onnx, a.threads)
    for variant in ["eager", "channels_last"]:
        x = torch.randn(a.images, 3, 32, 32)
        nets = [net for net, _ in loaded]
        if variant == "channels_last":
            nets = [net.to(memory_format=torch.channels_last) for net in nets]
            x = x.contiguous(memory_format=torch.channels_last)

        def run_all():
            with torch.inference_mode():
                for net in nets:
                    for chunk in x.split(256):
                        net(chunk)

        run_all()  # warm-up
        times = []
        for _ in range(max(1, a.iters // 2)):
            t = time.perf_counter()
            run_all()
            times.append(time.perf_counter() - t)
        m = statistics.median(times)
        print(json.dumps({"tool": "pytorch", "version": torch.__version__, "mode": "modules", "variant": variant,
                          "arch": arch, "threads": a.threads, "modules": len(nets), "images": a.images,
                          "median_s": m, "module_images_per_s": len(nets) * a.images / m}), flush=True)


if __name__ == "__main__":
    main()
