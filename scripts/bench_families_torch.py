"""Inference images/s of torchvision's resnet18, mobilenet_v2 and vgg16_bn made CIFAR-size (as
cnnsplitter's `resnet18`, `mobilenetv2`, `vgg16-bn`; see check_import_vs_pytorch.py) in PyTorch
eager and channels_last, batch 256, random weights and 3x32x32 images: one JSON line per network
and variant, comparable with `cnnsplitter bench infer --json`.

usage: python bench_families_torch.py [--threads 2] [--iters 3]
"""
import argparse
import json
import statistics
import time

import torch

from check_import_vs_pytorch import tv_mobilenet_v2, tv_resnet18, tv_vgg16_bn

ARCHS = {"resnet18": tv_resnet18, "mobilenetv2": tv_mobilenet_v2, "vgg16-bn": tv_vgg16_bn}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for arch, make in ARCHS.items():
        for variant in ["eager", "channels_last"]:
            net = make(10).eval()
            x = torch.randn(a.batch, 3, 32, 32)
            if variant == "channels_last":
                net = net.to(memory_format=torch.channels_last)
                x = x.to(memory_format=torch.channels_last)
            times = []
            with torch.inference_mode():
                net(x)  # warm-up
                for _ in range(a.iters):
                    t = time.perf_counter()
                    net(x)
                    times.append(time.perf_counter() - t)
            s = statistics.median(times)
            print(json.dumps({"tool": "pytorch", "variant": variant, "arch": arch, "threads": a.threads,
                              "batch": a.batch, "median_s": s, "images_per_s": a.batch / s}), flush=True)


if __name__ == "__main__":
    main()
