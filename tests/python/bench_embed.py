"""bench-embed: cells/s of `pf-embed` (ONNX Runtime) against PyTorch eager inference with the same
weights, loaded from the pf-train checkpoint, on the same cells, in one run.

Both sides do the whole job end to end: read the cells table, normalise each cell's channels by
their maxima, run the encoder in batches of 256, write an embeddings Parquet table (metadata + 256
float32 features). PyTorch runs in inference mode with torch's default threads (all cores), as ONNX
Runtime does. On a GPU machine the reference runs on CUDA; the ONNX Runtime there is a CPU build,
so say which is which when reporting.
"""

import argparse
import pathlib
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from bench_train import make_cells
from check_onnx import read_safetensors


class Encoder(nn.Module):
    """pf-train's encoder (DTU reading), with pf-train's parameter names."""

    def __init__(self, heads: int, latent: int) -> None:
        super().__init__()
        for i, in_channels in enumerate((3, 32, 32)):
            setattr(self, f"conv{i}", nn.Conv2d(in_channels, 32, 5))
            setattr(self, f"norm{i}", nn.BatchNorm2d(32))
        self.head = nn.Conv2d(32, heads * latent, 5)
        self.head_norm = nn.BatchNorm2d(heads * latent)
        self.latent = latent

    def forward(self, x):
        for i in range(3):
            x = getattr(self, f"norm{i}")(nn.functional.leaky_relu(nn.functional.max_pool2d(getattr(self, f"conv{i}")(x), 2), 0.01))
        return self.head_norm(self.head(x)).flatten(1)[:, : self.latent]


def reference(cells: pathlib.Path, checkpoint: pathlib.Path, output: pathlib.Path, device: str, latent: int) -> float:
    start = time.perf_counter()
    weights = {k[len("encoder."):]: torch.from_numpy(v.copy()) for k, v in read_safetensors(str(checkpoint)).items() if k.startswith("encoder.")}
    model = Encoder(2, latent)
    missing = model.load_state_dict(weights, strict=False).missing_keys
    assert all(key.endswith("num_batches_tracked") for key in missing), missing
    model = model.to(device).eval()
    table = pq.read_table(cells)
    column = table.column("Pixels").combine_chunks()
    pixels = (column.storage if hasattr(column, "storage") else column).flatten().to_numpy().reshape(len(table), 3, 68, 68)
    features = []
    with torch.inference_mode():
        for begin in range(0, len(table), 256):
            x = torch.from_numpy(pixels[begin:begin + 256].astype(np.float32)).to(device)
            x = x / x.amax(dim=(2, 3), keepdim=True).clamp_min(1.0)
            features.append(model(x).cpu().numpy())
    features = np.concatenate(features)
    metadata = table.drop_columns(["Pixels"])
    columns = {f"Cells_CytoVAE_z{i:03d}": pa.array(features[:, i]) for i in range(latent)}
    out = pa.table({**{name: metadata.column(name) for name in metadata.column_names}, **columns})
    pq.write_table(out, output, compression="zstd")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--fixture", required=True, type=pathlib.Path)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--n-cells", type=int, default=20480)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cells = make_cells(args.fixture, args.n_cells, args.workdir, f"{args.bin_dir}/pf-preprocess")
    model = args.workdir / "model"
    if not (model / "encoder.onnx").exists():
        subprocess.run([f"{args.bin_dir}/pf-train", "generative", "--cells", str(cells), "--output", str(model), "--model", "cytovae",
                        "--epochs", "1", "--no-progress", "--device", "cpu"], check=True)
        subprocess.run([f"{args.bin_dir}/pf-export", "--model-card", str(model / "model_card.json"), "--encoder",
                        str(model / "encoder.onnx"), "--decoder", str(model / "decoder.onnx")], check=True)
    start = time.perf_counter()
    subprocess.run([f"{args.bin_dir}/pf-embed", "--cells", str(cells), "--encoder", str(model / "encoder.onnx"),
                    "--output", str(args.workdir / "ours.parquet"), "--no-progress"], check=True)
    ours = time.perf_counter() - start
    device = "cuda" if torch.cuda.is_available() else "cpu"
    theirs = reference(cells, model / "checkpoint.safetensors", args.workdir / "reference.parquet", device, 256)
    ours_features = pq.read_table(args.workdir / "ours.parquet").to_pandas().filter(like="Cells_").to_numpy()
    their_features = pq.read_table(args.workdir / "reference.parquet").to_pandas().filter(like="Cells_").to_numpy()
    where = f"CUDA ({torch.cuda.get_device_name(0)})" if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"bench-embed: {args.n_cells} cells 3x68x68, cytovae encoder, batch 256")
    print(f"  pf-embed (ONNX Runtime, CPU): {ours:6.2f} s  {args.n_cells / ours:8.0f} cells/s")
    print(f"  PyTorch eager ({where}): {theirs:6.2f} s  {args.n_cells / theirs:8.0f} cells/s")
    print(f"  max |difference| of the profiles: {np.abs(ours_features - their_features).max():.2g}")
    print(f"  ratio (pf-embed / PyTorch): {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
