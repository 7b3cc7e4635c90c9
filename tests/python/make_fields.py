"""Writes a small screen of 16-bit fields in the published BBBC021 layout (image table, MoA table,
`Week<n>/<plate>/<well>_s<site>_w<k><id>.tif` files), with blob-shaped nuclei (some touching),
a cytoplasm and a tubulin channel, background gradient and noise. Deterministic for a seed.

It feeds the end-to-end tests and `make bench-preprocess`; the biologically meaningful synthetic
screen is `pf-synth`'s job.

    python make_fields.py --out DIR --n-fields 40 --height 1024 --width 1280 --seed 1
"""

import argparse
import csv
import os

import numpy as np
import tifffile

HEADER = [
    "TableNumber", "ImageNumber", "Image_FileName_DAPI", "Image_PathName_DAPI", "Image_FileName_Tubulin",
    "Image_PathName_Tubulin", "Image_FileName_Actin", "Image_PathName_Actin", "Image_Metadata_Plate_DAPI",
    "Image_Metadata_Well_DAPI", "Replicate", "Image_Metadata_Compound", "Image_Metadata_Concentration",
]
TREATMENTS = [("DMSO", 0.0, "DMSO"), ("taxol", 0.3, "Microtubule stabilizers"), ("AZ138", 1.0, "Eg5 inhibitors")]


def draw_field(rng, height, width, n_nuclei):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dna = np.zeros((height, width), np.float32)
    actin = np.zeros_like(dna)
    tubulin = np.zeros_like(dna)
    centres = rng.uniform([40, 40], [height - 40, width - 40], size=(n_nuclei, 2))
    # A few deliberately touching pairs.
    for i in range(0, n_nuclei // 4, 2):
        centres[i + 1] = centres[i] + rng.uniform(17, 21) * np.array([np.cos(i), np.sin(i)])
    for cy, cx in centres:
        radius = rng.uniform(8, 13)
        box = (slice(max(int(cy - 40), 0), int(cy + 40)), slice(max(int(cx - 40), 0), int(cx + 40)))
        d2 = (yy[box] - cy) ** 2 + (xx[box] - cx) ** 2
        dna[box] = np.maximum(dna[box], rng.uniform(2500, 6000) * np.exp(-((d2 / radius**2) ** 2)))
        actin[box] += rng.uniform(800, 2000) * np.exp(-d2 / (2 * (2.2 * radius) ** 2))
        tubulin[box] += rng.uniform(600, 1500) * np.exp(-d2 / (2 * (2.8 * radius) ** 2))
    gradient = 300 + 200 * (xx / width)
    out = []
    for channel in (dna, tubulin, actin):
        noisy = rng.poisson(np.maximum(channel + gradient, 0) / 4) * 4
        out.append(np.clip(noisy, 0, 65535).astype(np.uint16))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-fields", type=int, default=8)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--nuclei", type=int, default=0, help="nuclei per field (default: by area)")
    parser.add_argument("--seed", type=int, default=1)
    p = parser.parse_args()
    rng = np.random.default_rng(p.seed)
    n_nuclei = p.nuclei or max(3, p.height * p.width // 9000)
    plate, folder = "Week1_00001", "Week1/Week1_00001"
    os.makedirs(os.path.join(p.out, folder), exist_ok=True)
    rows = []
    for index in range(p.n_fields):
        well = f"{'BCDEFG'[index // 40 % 6]}{index // 4 % 10 + 2:02d}"
        site = index % 4 + 1
        compound, concentration, _ = TREATMENTS[index // 4 % len(TREATMENTS)]
        names = []
        for wavelength, image in zip((1, 2, 4), draw_field(rng, p.height, p.width, n_nuclei)):
            name = f"{well}_s{site}_w{wavelength}{index:08X}-SYN.tif"
            tifffile.imwrite(os.path.join(p.out, folder, name), image)
            names.append(name)
        rows.append([1, index + 1, names[0], folder, names[1], folder, names[2], folder, plate, well, 1,
                     compound, f"{concentration:.6f}"])
    with open(os.path.join(p.out, "BBBC021_v1_image.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    with open(os.path.join(p.out, "BBBC021_v1_moa.csv"), "w", newline="") as handle:
        handle.write("compound,concentration,moa\r" + "\r".join(f"{c},{k:g},{m}" for c, k, m in TREATMENTS))


if __name__ == "__main__":
    main()
