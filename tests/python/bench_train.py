"""bench-train: images/s of `pf-train` against a PyTorch (Python) loop of the same architecture,
loss, optimiser, batch size and data, in the same run and on the same device.

The data are the 259 real BBBC021 cells of the shared fixture, repeated with random flips,
rotations and a ±10 % gain to N cells, written in the DTU layout and turned into a cells table by
`pf-preprocess singlecell`. Both sides train for two epochs; the second (warm) epoch is compared.
The reference is what a competent PyTorch user writes: nn.Sequential modules, the whole data set
as one float32 tensor on the device (faster to index than our int16 copy), torch.optim.Adam with
weight decay, clip_grad_norm_, and torch's default thread count (all cores).
"""

import argparse
import csv
import pathlib
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn


def make_cells(fixture: pathlib.Path, n_cells: int, workdir: pathlib.Path, preprocess: str) -> pathlib.Path:
    cells = workdir / "cells.parquet"
    if cells.exists():
        return cells
    rows = list(csv.DictReader(open(fixture / "metadata.csv")))
    images = fixture / "singh_cp_pipeline_singlecell_images"
    originals = [np.load(images / r["Multi_Cell_Image_Name"] / f"{r['Multi_Cell_Image_Name']}_{r['Single_Cell_Image_Id']}.npy") for r in rows]
    rng = np.random.default_rng(0)
    layout = workdir / "layout"
    out_rows = []
    for i in range(n_cells):
        cell = np.rot90(originals[i % len(originals)], k=int(rng.integers(4)))
        if rng.random() < 0.5:
            cell = cell[:, ::-1]
        cell = np.clip(cell.astype(np.float64) * rng.uniform(0.9, 1.1), 0, 65535).astype("<u2")
        name = f"B{i // 64:05d}_s1_w1BENCH"
        folder = layout / "singh_cp_pipeline_singlecell_images" / name
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{name}_{i % 64}.npy", np.ascontiguousarray(cell))
        row = dict(rows[i % len(rows)])
        row.update(Multi_Cell_Image_Id=str(i // 64), Multi_Cell_Image_Name=name, Single_Cell_Image_Id=str(i % 64))
        out_rows.append(row)
    with open(layout / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(out_rows)
    subprocess.run([preprocess, "singlecell", "--root", str(layout), "--output", str(cells), "--no-progress"], check=True)
    return cells


def load_pixels(cells: pathlib.Path) -> torch.Tensor:
    column = pq.read_table(cells, columns=["Pixels"]).column("Pixels").combine_chunks()
    values = column.storage.flatten().to_numpy() if hasattr(column, "storage") else column.flatten().to_numpy()
    n = len(column)
    return torch.from_numpy(values.astype(np.float32).reshape(n, 3, 68, 68))


class Vae(nn.Module):
    """The DTU CytoVAE: conv k5 → pool → LReLU → BN blocks, 2L-channel head, mirrored decoder."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.latent = latent
        block = lambda i, o: [nn.Conv2d(i, o, 5), nn.MaxPool2d(2), nn.LeakyReLU(0.01), nn.BatchNorm2d(o)]
        self.encoder = nn.Sequential(*block(3, 32), *block(32, 32), *block(32, 32), nn.Conv2d(32, 2 * latent, 5), nn.BatchNorm2d(2 * latent), nn.Flatten())
        up = lambda i, size: [nn.Conv2d(i, 32, 5, padding=4), nn.BatchNorm2d(32), nn.LeakyReLU(0.01)] + ([nn.UpsamplingNearest2d(size=size)] if size else [])
        self.decoder = nn.Sequential(nn.Unflatten(1, (latent, 1, 1)), *up(latent, 10), *up(32, 28), *up(32, 64), *up(32, None), nn.Conv2d(32, 3, 1), nn.LeakyReLU(0.01))

    def forward(self, x):
        mu, log_sigma = self.encoder(x).chunk(2, dim=1)
        z = mu + log_sigma.exp() * torch.randn_like(mu)
        return self.decoder(z), mu, log_sigma


def reference_epochs(pixels: torch.Tensor, device: str, batch: int, epochs: int, latent: int) -> list[float]:
    torch.manual_seed(0)
    model = Vae(latent).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    data = pixels.to(device)
    n_train = int(round(len(data) * 0.9))
    rates = []
    for _ in range(epochs):
        order = torch.randperm(n_train, device=device)
        n_batches = n_train // batch
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(n_batches):
            x = data[order[b * batch:(b + 1) * batch]]
            x = x / x.amax(dim=(2, 3), keepdim=True).clamp_min(1.0)
            reconstruction, mu, log_sigma = model(x)
            image_loss = (reconstruction - x).square().sum(dim=(1, 2, 3))
            kl = -0.5 * (1 + 2 * log_sigma - mu.square() - (2 * log_sigma).exp()).sum(dim=1)
            loss = (image_loss + kl).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10_000.0)
            optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        else:
            loss.item()
        rates.append(n_batches * batch / (time.perf_counter() - start))
    return rates


def ours_epochs(binary: str, cells: pathlib.Path, out: pathlib.Path, device: str, batch: int, epochs: int, latent: int) -> list[float]:
    subprocess.run(
        [binary, "generative", "--cells", str(cells), "--output", str(out), "--model", "cytovae", "--epochs", str(epochs),
         "--batch-size", str(batch), "--latent-dim", str(latent), "--device", device, "--no-progress", "--n-reconstructions", "1"],
        check=True,
    )
    log = pq.read_table(out / "training_log.parquet").to_pandas()
    rates = log[(log.Split == "train") & (log.Term == "images_per_second")].sort_values("Epoch").Value
    return list(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--fixture", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--n-cells", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--latent-dim", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cells = make_cells(args.fixture, args.n_cells, args.workdir, f"{args.bin_dir}/pf-preprocess")
    epochs = 2
    ours = ours_epochs(f"{args.bin_dir}/pf-train", cells, args.workdir / "ours", args.device, args.batch_size, epochs, args.latent_dim)
    reference = reference_epochs(load_pixels(cells), args.device, args.batch_size, epochs, args.latent_dim)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"bench-train: cytovae, {args.n_cells} cells 3x68x68, batch {args.batch_size}, latent {args.latent_dim}, on {name}")
    print(f"  pf-train          epoch 2: {ours[-1]:9.1f} images/s (epoch 1: {ours[0]:.1f})")
    print(f"  PyTorch (python)  epoch 2: {reference[-1]:9.1f} images/s (epoch 1: {reference[0]:.1f})")
    print(f"  ratio (pf-train / PyTorch): {ours[-1] / reference[-1]:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
