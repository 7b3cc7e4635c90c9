"""Compares the initial weights pf-train draws with PyTorch's: every parameter of an `.npz` of
initial weights against a `torch.nn` layer of the same shape (or, with --resnet18, the parameter
of the same name in torchvision's ResNet-18), by a two-sample Kolmogorov–Smirnov test on the
values (a constant tensor must equal PyTorch's constant).

    python check_init.py weights.npz [--resnet18 CLASSES] [--channels 3]

Layer kinds are read off the names: `*.weight` of 4 dimensions is a Conv2d (its `*.bias` shares
its fan-in), of 2 a Linear, of 1 beside a `running_mean` a BatchNorm2d. Prints one line per
tensor and `OK: N tensors`; exits 1 on the first mismatch.
"""

import argparse
import sys

import numpy as np
import torch
from scipy.stats import ks_2samp


def reference_layer(name, tensors):
    """The torch.nn tensor PyTorch would initialise for `name` (same shape)."""
    stem, leaf = name.rsplit(".", 1)
    weight = tensors.get(f"{stem}.weight")
    if f"{stem}.running_mean" in tensors:
        layer = torch.nn.BatchNorm2d(weight.shape[0])
    elif weight is not None and weight.ndim == 4:
        out_c, in_c, kh, kw = weight.shape
        layer = torch.nn.Conv2d(in_c, out_c, (kh, kw), bias=True)
    elif weight is not None and weight.ndim == 2:
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    else:
        return None
    return getattr(layer, leaf).detach().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--resnet18", type=int, metavar="CLASSES")
    parser.add_argument("--channels", type=int, default=3)
    p = parser.parse_args()
    torch.manual_seed(0)
    tensors = dict(np.load(p.weights))
    resnet = None
    if p.resnet18:
        import torchvision

        resnet = torchvision.models.resnet18(num_classes=p.resnet18)
        if p.channels != 3:
            resnet.conv1 = torch.nn.Conv2d(p.channels, 64, 7, 2, 3, bias=False)
            torch.nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        resnet = {k: v.detach().numpy() for k, v in resnet.state_dict().items()}
    checked = 0
    for name, ours in sorted(tensors.items()):
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        if resnet is not None:
            reference = resnet[name]
            draws = [reference]
        else:
            reference = reference_layer(name, tensors)
            if reference is None:
                print(f"{name}: no torch.nn layer of this kind", file=sys.stderr)
                sys.exit(1)
            # Several draws of a small tensor make a reference sample worth testing against.
            draws = [reference] + [reference_layer(name, tensors) for _ in range(max(0, 4096 // reference.size))]
        if reference.shape != ours.shape:
            print(f"{name}: shape {ours.shape}, torch {reference.shape}", file=sys.stderr)
            sys.exit(1)
        sample = np.concatenate([d.ravel() for d in draws])
        if np.all(sample == sample[0]):
            ok = bool(np.all(ours == sample[0]))
            detail = f"constant {sample[0]:g}, ours {np.unique(ours)[:3]}"
        else:
            statistic, p_value = ks_2samp(ours.ravel(), sample)
            ok = p_value > 1e-4
            detail = (
                f"KS p={p_value:.3g}; max|w| ours {np.abs(ours).max():.4g} torch {np.abs(sample).max():.4g}; "
                f"std ours {ours.std():.4g} torch {sample.std():.4g}"
            )
        print(f"{'ok ' if ok else 'BAD'} {name} {tuple(ours.shape)}: {detail}")
        if not ok:
            sys.exit(1)
        checked += 1
    print(f"OK: {checked} tensors")


if __name__ == "__main__":
    main()
