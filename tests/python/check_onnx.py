"""Checks exported ONNX models against the libtorch outputs pf-train recorded.

Runs `onnx.checker` (full check, with shape inference) on the encoder and the decoder, runs both
with ONNX Runtime (CPU) on the normalised cells in `reference_outputs.safetensors`, and prints the
largest absolute difference of every output from what libtorch computed. Exits 1 above --tolerance.

Usage: check_onnx.py ENCODER.onnx DECODER.onnx REFERENCE.safetensors [--tolerance 1e-4]
"""

import argparse
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    # The format is 8 bytes of header length, a JSON header, then the raw little-endian data.
    with open(path, "rb") as handle:
        data = handle.read()
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_length])
    body = data[8 + header_length:]
    dtypes = {"F32": np.float32, "I64": np.int64}
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arrays[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return arrays


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("encoder")
    parser.add_argument("decoder")
    parser.add_argument("reference")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    reference = read_safetensors(args.reference)
    worst = 0.0
    for path in (args.encoder, args.decoder):
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        metadata = {entry.key: entry.value for entry in model.metadata_props}
        card = json.loads(metadata["phenoflow.model_card"])
        print(f"{path}: onnx.checker OK, opset {model.opset_import[0].version}, model {card['model']}, role {metadata['phenoflow.role']}")
    encoder = ort.InferenceSession(args.encoder, providers=["CPUExecutionProvider"])
    outputs = [output.name for output in encoder.get_outputs()]
    results = dict(zip(outputs, encoder.run(outputs, {"cells": reference["input"]})))
    for name in outputs:
        difference = float(np.abs(results[name] - reference[name]).max())
        worst = max(worst, difference)
        print(f"encoder {name}: {results[name].shape}, max |onnxruntime - libtorch| = {difference:.3g}")
    decoder = ort.InferenceSession(args.decoder, providers=["CPUExecutionProvider"])
    (reconstruction,) = decoder.run(["reconstruction"], {"z": reference["profile"]})
    difference = float(np.abs(reconstruction - reference["reconstruction"]).max())
    worst = max(worst, difference)
    print(f"decoder reconstruction: {reconstruction.shape}, max |onnxruntime - libtorch| = {difference:.3g}")
    n_cells = len(reference["input"])
    if worst > args.tolerance:
        print(f"FAIL: {n_cells} cells, largest difference {worst:.3g} > {args.tolerance}")
        return 1
    print(f"OK: {n_cells} cells, largest difference {worst:.3g} <= {args.tolerance}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
