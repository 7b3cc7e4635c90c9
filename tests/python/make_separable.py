"""Writes a small, separable screen of whole fields: 16-bit single-channel TIFFs and a
pycytominer-style image table. Three treatments with three unmistakable patterns (DMSO: a
central blob; compound A: bars; compound B: a grid of spots), each drawn with random
brightness, offset and noise; 30 fields per treatment over two plates. Used by the end-to-end
tests of the supervised classifiers (every one must learn it well above chance).

Usage: make_separable.py FOLDER
"""

import sys
from pathlib import Path

import numpy as np
import tifffile


def field(kind: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "DMSO":
        cy, cx = size / 2 + rng.normal(0, 2, 2)
        signal = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 6.0**2))
    elif kind == "A":
        # Bars, horizontal or vertical: the classes do not depend on orientation, as fields'
        # biology does not (pf-train's default augmentation flips and turns them).
        along = y if rng.random() < 0.5 else x
        signal = 0.5 + 0.5 * np.sin(2 * np.pi * along / 8 + phase)
    else:
        # A grid of spots.
        signal = ((0.5 + 0.5 * np.sin(2 * np.pi * y / 8 + phase)) * (0.5 + 0.5 * np.sin(2 * np.pi * x / 8 + phase))) ** 2
    image = 300 + rng.uniform(1500, 3000) * signal + rng.normal(0, 120, (size, size))
    return np.clip(image, 0, 65535).astype(np.uint16)


def main() -> None:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = ["Metadata_Plate,Metadata_Well,Metadata_Site,Metadata_Compound,Metadata_Concentration,"
            "Image_FileName_DNA,Image_PathName_DNA"]
    for plate in ("P1", "P2"):
        (folder / plate).mkdir(exist_ok=True)
        for index, kind in enumerate(["DMSO", "A", "B"] * 5):
            well = f"{'ABC'[index % 3]}{index // 3 + 1:02d}"
            concentration = 0 if kind == "DMSO" else 1
            for site in (1, 2, 3):
                name = f"{well}_s{site}.tif"
                tifffile.imwrite(folder / plate / name, field(kind, rng))
                rows.append(f"{plate},{well},{site},{kind},{concentration},{name},{plate}")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
