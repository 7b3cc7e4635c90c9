"""The PyTorch side of the GPU check (`tests/gpu/run.sh`), one measurement per process so that
each one's GPU memory is its own. Prints one JSON object on its last line of output.

  reference.py vae    --cells CELLS --device cuda --batch-size 64 --epochs 2 [--tf32] [--cudnn-benchmark]
  reference.py resnet --cells CELLS --device cuda --batch-size 64 --epochs 3 [--tf32] [--cudnn-benchmark]
  reference.py embed  --cells CELLS --checkpoint CKPT --output OUT.parquet --device cuda

vae: the CytoVAE loop of `tests/python/bench_train.py` (what a competent PyTorch user writes: the
whole data set as float32 on the device, nn.Sequential, torch.optim.Adam, clip_grad_norm_).
resnet: torchvision's resnet18 with a one-channel first convolution and one output per treatment,
cross-entropy, Adam (lr 1e-3, no weight decay, as pf-train's supervised default), the train split
(80 %) of the images as float32 on the device, each image's channels divided by their maxima.
embed: `tests/python/bench_embed.py`'s reference: the pf-train checkpoint's encoder in PyTorch
eager, end to end from the cells table to an embeddings Parquet table.
"""

import argparse
import json
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# In the repository the bench scripts sit in tests/python; in the bundle, beside this file.
for candidate in (HERE, HERE.parent / "python"):
    if (candidate / "bench_train.py").exists():
        sys.path.insert(0, str(candidate))
        break

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def backend(args) -> None:
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, as libtorch's
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)


def memory(device: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    return {
        "max_memory_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
        "max_memory_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
    }


def pixels_of(cells: pathlib.Path) -> np.ndarray:
    """The Pixels column as an (n, C, H, W) uint16 array (the `arrow.fixed_shape_tensor` type's
    shape; pyarrow recognises the extension type)."""
    column = pq.read_table(cells, columns=["Pixels"]).column("Pixels").combine_chunks()
    storage = column.storage if hasattr(column, "storage") else column
    shape = list(column.type.shape)
    return storage.flatten().to_numpy().reshape(len(column), *shape)


def vae(args) -> dict:
    from bench_train import reference_epochs

    backend(args)
    pixels = torch.from_numpy(pixels_of(args.cells).astype(np.float32))
    rates = reference_epochs(pixels, args.device, args.batch_size, args.epochs, args.latent_dim)
    return {"images_per_second": rates, "n_cells": len(pixels), **memory(args.device)}


def treatments(cells: pathlib.Path) -> np.ndarray:
    table = pq.read_table(cells, columns=["Metadata_Compound", "Metadata_Concentration"]).to_pandas()
    keys = table.Metadata_Compound.astype(str) + "@" + table.Metadata_Concentration.astype(str)
    return np.unique(keys.to_numpy(), return_inverse=True)[1]


def resnet(args) -> dict:
    import torchvision

    backend(args)
    torch.manual_seed(0)
    pixels = pixels_of(args.cells)
    labels = treatments(args.cells)
    n_classes = int(labels.max()) + 1
    order = np.random.default_rng(0).permutation(len(pixels))
    train = order[: int(round(len(order) * 0.8))]
    data = torch.from_numpy(pixels[train].astype(np.float32)).to(args.device)
    data = data / data.amax(dim=(2, 3), keepdim=True).clamp_min(1.0)
    targets = torch.from_numpy(labels[train]).to(args.device)
    model = torchvision.models.resnet18(num_classes=n_classes)
    model.conv1 = nn.Conv2d(data.shape[1], 64, kernel_size=7, stride=2, padding=3, bias=False)
    model = model.to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    n_batches = len(train) // args.batch_size
    for _ in range(args.epochs):
        model.train()
        permutation = torch.randperm(len(train), device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(n_batches):
            index = permutation[b * args.batch_size:(b + 1) * args.batch_size]
            loss = loss_fn(model(data[index]), targets[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        else:
            loss.item()
        rates.append(n_batches * args.batch_size / (time.perf_counter() - start))
    return {"images_per_second": rates, "n_images": len(pixels), "n_classes": n_classes,
            "shape": list(pixels.shape[1:]), **memory(args.device)}


def embed(args) -> dict:
    from bench_embed import reference

    seconds = reference(args.cells, args.checkpoint, args.output, args.device, args.latent_dim)
    n = pq.ParquetFile(args.cells).metadata.num_rows
    return {"seconds": seconds, "n_cells": n, "cells_per_second": n / seconds, **memory(args.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["vae", "resnet", "embed"])
    parser.add_argument("--cells", required=True, type=pathlib.Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--latent-dim", type=int, default=256)
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--cudnn-benchmark", action="store_true")
    parser.add_argument("--checkpoint", type=pathlib.Path)
    parser.add_argument("--output", type=pathlib.Path)
    args = parser.parse_args()
    result = {"vae": vae, "resnet": resnet, "embed": embed}[args.what](args)
    result["device"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
