#!/usr/bin/env python3
"""Per-task seconds of a planned experiment from measured throughputs (a cost model), for
`cnnsplitter experiment estimate --times` when the experiment is too large to run here.

usage: scripts/task-times.py DIR/plan.json RATES.json > times.json

RATES.json (measured with `cnnsplitter bench`, see README "Running on a cluster"):
  {
    "train_img_s":  {"simcnn": 32, ...},    # bench train --arch A (burn, batch 128)
    "infer_img_s":  {"simcnn": 1202, ...},  # bench infer --arch A --engine ort --batch 256
    "module_img_s": {"simcnn": 4000, ...},  # bench modules --arch A --engine ort --keep 0.5
    "strong": {"train": 40000, "val": 10000, "test": 10000},   # images of the strong split
    "weak":   {"train": 4000, "val": 1000, "test": 1000},      # images of one weak split
    "epochs": {"strong": 200, "simple": 100, "poor_fit": 100},
    "search": {"generations": 200, "population": 100, "elites": 0.2, "classes": 10,
               "images": 10000, "sensitivity_module_images": 2000000},
    "arch":   {"SimCNN": {"strong": "simcnn", "weak": "simcnn-weak"}, ...}
  }

The model: a training run is epochs x (train images / training rate + validation images /
inference rate), plus one test pass; a search is its sensitivity table plus generations x new
modules (the population less the elites, per class; all of it in the first) x images / the
module rate; a patch runs the weak model, the strong model and the module over the weak
validation and test images; a pick and the reports take a few seconds.
"""

import json
import sys


def main():
    plan = json.load(open(sys.argv[1]))
    r = json.load(open(sys.argv[2]))
    train, infer, module = r["train_img_s"], r["infer_img_s"], r["module_img_s"]
    strong, weak, epochs, search = r["strong"], r["weak"], r["epochs"], r["search"]

    def training(arch, split, n_epochs):
        per_epoch = split["train"] / train[arch] + split["val"] / infer[arch]
        return n_epochs * per_epoch + split["test"] / infer[arch]

    def searching(arch, generations):
        per_class = search["population"] * (1 - search["elites"])
        new = generations * per_class * search["classes"] + search["population"] * search["elites"] * search["classes"]
        return (new * search["images"] + search["sensitivity_module_images"]) / module[arch]

    times = {}
    for t in plan["tasks"]:
        s = t["stage"]
        kind = s["kind"]
        archs = r["arch"].get(s.get("model"), {})
        if kind == "train_strong":
            sec = training(archs["strong"], strong, epochs["strong"])
        elif kind == "modularize":
            sec = searching(archs["strong"], search["generations"])
        elif kind == "ablation":
            sec = searching(archs["strong"], r.get("rq3_generations", search["generations"]))
        elif kind == "train_simple":
            sec = training(archs["weak"], weak, epochs["simple"])
        elif kind == "train_poor_fit":
            sec = training(archs["strong"], weak, epochs["poor_fit"])
        elif kind == "patch":
            images = weak["val"] + weak["test"]
            sec = images * (1 / infer[archs["weak"]] + 2 / infer[archs["strong"]]) + 2
        else:  # pick, reports
            sec = 5
        times[t["id"]] = round(sec, 1)
    json.dump(times, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
