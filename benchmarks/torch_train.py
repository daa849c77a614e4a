"""PyTorch peer of minisd's reference run: ResNet-20 (or any 6n+2) with stochastic depth on CIFAR.

    python benchmarks/torch_train.py --epochs 30 --p-last 0.5 --seed 0 \
        --data-dir ../shared/data/cifar-10-batches-py --out runs/torch-p05

The recipe is the paper's (Huang et al. 2016, and its Torch7 code):
  * data: the training images, no validation split; per-pixel mean and one scalar
    std (of all raw training pixel values) from the training images only;
  * augmentation, after normalisation: a random translation by -4..4 px in each
    direction with zero fill, then a horizontal flip with probability 1/2;
  * SGD, lr 0.1, Nesterov momentum 0.9, weight decay 1e-4, batch 128 (the last
    partial batch of an epoch is dropped, as minisd does); lr / 10 from 50% and
    again from 75% of the epochs;
  * one gate per block per mini-batch, open with p_l = 1 - (l / L)(1 - p_L);
    at test time every block runs with its branch scaled by p_l.
  * ``--dropped paper`` (default): a dropped block's weights get a zero gradient, so
    weight decay and momentum still move them, as Torch7's optim.sgd on the flat
    parameter vector does; ``--dropped skip``: they are left untouched for that step.

The network is ``benchmarks/torch_resnet.py``'s TorchResNet, loaded by path.
This script needs only PyTorch and NumPy; it does not import minisd.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _load_sibling(name):
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"minisd_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_resnet = _load_sibling("torch_resnet")


# ---------------------------------------------------------------------------
# data: the "python version" CIFAR pickles
# ---------------------------------------------------------------------------


def _read_batch(path, label_key):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d[label_key], dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def load_cifar(data_dir):
    """(x_train uint8 N x 3 x 32 x 32, y_train, x_test, y_test, num_classes) from a CIFAR folder."""
    d = Path(data_dir)
    if (d / "data_batch_1").exists():
        parts = [_read_batch(d / f"data_batch_{i}", b"labels") for i in range(1, 6)]
        x_train = np.concatenate([p[0] for p in parts])
        y_train = np.concatenate([p[1] for p in parts])
        x_test, y_test = _read_batch(d / "test_batch", b"labels")
        return x_train, y_train, x_test, y_test, 10
    if (d / "train").exists():
        x_train, y_train = _read_batch(d / "train", b"fine_labels")
        x_test, y_test = _read_batch(d / "test", b"fine_labels")
        return x_train, y_train, x_test, y_test, 100
    raise FileNotFoundError(f"{d}: neither cifar-10-batches-py (data_batch_1..5, test_batch) "
                            "nor cifar-100-python (train, test)")


def fit_normalisation(x_uint8):
    """Per-pixel mean (3, 32, 32) and one scalar std of the raw pixel values (the paper's code)."""
    x = x_uint8.astype(np.float64)
    return x.mean(axis=0).astype(np.float32), float(x.std())


def augment(x, gen):
    """Random translation by -4..4 px (zero fill) and a horizontal flip with probability 1/2.

    x: normalised (N, C, H, W) tensor. Each image gets its own offsets and flip.
    """
    n, c, h, w = x.shape
    pad = 4
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (oy[:, None] + torch.arange(h)[None, :]).to(x.device)              # (n, h)
    cols = torch.arange(w)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)                    # flip after the shift
    cols = (ox[:, None] + cols).to(x.device)                                 # (n, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def lr_at(epoch, epochs, base_lr, milestones=None):
    """base_lr, / 10 from epoch 50% and again from 75% of the run (0-based epochs)."""
    marks = milestones if milestones is not None else [0.5 * epochs, 0.75 * epochs]
    return base_lr * 0.1 ** sum(epoch >= m for m in marks)


@torch.no_grad()
def evaluate(net, x, y, batch_size=500):
    net.eval()
    wrong, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = net(x[i:i + batch_size])
        loss += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        wrong += int((logits.argmax(1) != y[i:i + batch_size]).sum())
    net.train()
    return wrong / max(len(y), 1), loss / max(len(y), 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--p-last", type=float, default=0.5, help="survival probability of the last block")
    ap.add_argument("--rule", default="linear", choices=["linear", "uniform"])
    ap.add_argument("--scale", default="test", choices=["test", "train"])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="../shared/data/cifar-10-batches-py")
    ap.add_argument("--out", default="", help="folder for config.json, metrics.csv, summary.json")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training images (0: all)")
    ap.add_argument("--limit-test", type=int, default=0, help="use only the first N test images (0: all)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--milestones", type=float, nargs="*", default=None,
                    help="epochs (0-based) from which lr is divided by 10; default 50%% and 75%%")
    ap.add_argument("--dropped", default="paper", choices=["paper", "skip"],
                    help="paper: dropped blocks get zero gradients (decay, momentum apply); skip: untouched")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)  # shuffles, gates, augmentation (on the CPU)

    x_train, y_train, x_test, y_test, num_classes = load_cifar(args.data_dir)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    if args.limit_test:
        x_test, y_test = x_test[:args.limit_test], y_test[:args.limit_test]
    if len(y_train) < args.batch_size:
        raise SystemExit(f"only {len(y_train)} training images for a batch of {args.batch_size}")
    mean, std = fit_normalisation(x_train)
    norm = lambda a: torch.from_numpy((a.astype(np.float32) - mean) / np.float32(std)).to(device)
    xtr, ytr = norm(x_train), torch.from_numpy(y_train).to(device)
    xte, yte = norm(x_test), torch.from_numpy(y_test).to(device)
    print(f"data: {len(ytr)} train / {len(yte)} test, {num_classes} classes, std {std:.3f}; device {device}")

    net = torch_resnet.TorchResNet(args.depth, num_classes, args.p_last, args.rule, args.scale,
                                   channels_last=args.channels_last).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, nesterov=True)
    print(f"TorchResNet-{args.depth}: {sum(p.numel() for p in net.parameters()):,} parameters, "
          f"{len(net.blocks)} blocks, expected {sum(net.survival_probs):.2f} per step")

    rows = []
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(dict(vars(args), framework=f"torch {torch.__version__}", device=str(device)), f, indent=2)
    steps = len(ytr) // args.batch_size
    print("epoch  lr      train_loss  train_err  test_err  blocks  seconds")
    for epoch in range(args.epochs):
        lr = lr_at(epoch, args.epochs, args.lr, args.milestones)
        for g in opt.param_groups:
            g["lr"] = lr
        net.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(len(ytr), generator=gen).to(device)
        loss_sum, wrong, seen, blocks = 0.0, 0, 0, 0
        for s in range(steps):
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            xb, yb = xtr[idx], ytr[idx]
            if not args.no_augment:
                xb = augment(xb, gen)
            gates = net.sample_gates(gen)
            blocks += sum(gates)
            opt.zero_grad(set_to_none=True)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            if args.dropped == "paper":
                for p in net.parameters():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
            opt.step()
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val):
                raise SystemExit(f"loss became {loss_val} at epoch {epoch + 1}, step {s + 1}")
            loss_sum += loss_val * len(yb)
            wrong += int((logits.argmax(1) != yb).sum())
            seen += len(yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        test_error, test_loss = evaluate(net, xte, yte)
        row = dict(epoch=epoch, lr=lr, train_loss=loss_sum / seen, train_error=wrong / seen,
                   test_error=test_error, test_loss=test_loss, epoch_seconds=seconds,
                   mean_blocks=blocks / steps)
        rows.append(row)
        print(f"{epoch + 1:5d}  {lr:<6.4g}  {row['train_loss']:10.4f}  {row['train_error']:9.4f}  "
              f"{test_error:8.4f}  {row['mean_blocks']:6.2f}  {seconds:7.1f}", flush=True)
        if args.out:
            with open(os.path.join(args.out, "metrics.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                w.writeheader()
                w.writerows(rows)
    summary = dict(epochs_run=len(rows), final_test_error=rows[-1]["test_error"] if rows else math.nan,
                   final_train_error=rows[-1]["train_error"] if rows else math.nan,
                   mean_epoch_seconds=float(np.mean([r["epoch_seconds"] for r in rows])) if rows else math.nan)
    if args.out:
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
