"""Checks pf-report's t-SNE map against scikit-learn's on the same points.

    check_tsne.py MAP.csv PERPLEXITY

MAP.csv holds one row per point: `label,x,y,f0,f1,...` (x, y our 2-D map; f* the profile, already
L2-normalised as pf-report feeds t-SNE). scikit-learn's exact TSNE (init="pca", the same
perplexity) embeds the same profiles; both maps are scored by trustworthiness (5 neighbours,
scikit-learn's) and by how often a point's nearest neighbour in the map has its label. Ours must
be within 0.03 trustworthiness and 0.10 label agreement of scikit-learn's, and clearly better than
a random map. Prints `OK: ...` and exits 0, or prints the mismatch and exits 1.
"""

import sys

import numpy as np
import pandas as pd
from sklearn.manifold import TSNE, trustworthiness
from sklearn.neighbors import NearestNeighbors


def label_agreement(points, labels):
    neighbours = NearestNeighbors(n_neighbors=2).fit(points).kneighbors(points, return_distance=False)[:, 1]
    return float(np.mean(labels[neighbours] == labels))


def main():
    table = pd.read_csv(sys.argv[1])
    perplexity = float(sys.argv[2])
    labels = table["label"].to_numpy()
    ours = table[["x", "y"]].to_numpy(float)
    profiles = table[[c for c in table.columns if c.startswith("f")]].to_numpy(float)
    theirs = TSNE(n_components=2, perplexity=perplexity, init="pca", method="exact", random_state=0).fit_transform(profiles)
    random = np.random.default_rng(0).normal(size=ours.shape)
    scores = {}
    for name, points in [("ours", ours), ("scikit-learn", theirs), ("random", random)]:
        scores[name] = (trustworthiness(profiles, points, n_neighbors=5), label_agreement(points, labels))
    line = ", ".join(f"{name}: trustworthiness {t:.3f}, 1-NN label agreement {a:.3f}" for name, (t, a) in scores.items())
    (t_ours, a_ours), (t_sk, a_sk), (t_random, _) = scores["ours"], scores["scikit-learn"], scores["random"]
    if t_ours < t_sk - 0.03 or a_ours < a_sk - 0.10 or t_ours < t_random + 0.1:
        print(f"FAIL: {line}")
        sys.exit(1)
    print(f"OK: {len(table)} points; {line}")


if __name__ == "__main__":
    main()
