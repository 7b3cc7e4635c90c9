"""The GPU check: every figure of docs/gpu.md in one command (`tests/gpu/run.sh`).

Run on a machine that has PyTorch (and, ideally, a CUDA GPU) but no Rust: the stripped stage
binaries come in the bundle (`make gpu-bundle`). Everything this machine's Python knows is found
through it: torch's `lib` folder (libtorch for pf-train), the CUDA libraries of its `nvidia-*`
wheels, and ONNX Runtime's shared library (for pf-embed). Nothing is hard-coded.

Steps, in order of importance (a step that would outrun --deadline is skipped and says so):
  environment  nvidia-smi, the libraries found, `ldd pf-train`, what libtorch sees
  data         pf-synth -> pf-preprocess: ~100k cells (3x68x68) on all cores
  vae-b64      pf-train CytoVAE vs the PyTorch loop (tests/python/bench_train.py), batch 64
  vae-b256     the same at batch 256
  agreement    pf-train from one seed on the CPU and on CUDA: loss per epoch within a tolerance
  embed        pf-export -> pf-embed (ONNX Runtime) vs PyTorch eager on the same weights
  resnet18     pf-train classifier --model resnet18 vs torchvision's resnet18, 128x128 grey fields
  vae-b256-tf32, vae-b256-cudnn-benchmark   the same two loops with TF32 / cuDNN autotuning

Writes into --out: gpu_check.json (every figure and the exact commands), gpu_check.txt (the
summary) and gpu_check.log (every command's output), rewritten after every step so that a kill
leaves what was measured. Big intermediate files go to --work, not --out.

--cpu is the dry run `make test` does on every CI run: the same steps on tiny data on the CPU
(agreement compares one and all CPU threads), so the bundle, the library discovery and every step
are exercised where there is no GPU.
"""

import argparse
import glob
import json
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
# Extrapolation target: one epoch over the full BBBC021 screen's cells.
FULL_SCREEN_CELLS = 488_000
AGREEMENT_TOLERANCE = 0.05
# The scratch folder holds this file, so that a rerun may empty it (and nothing else).
WORK_MARKER = ".phenoflow-gpu-check"


class DeadlineReached(Exception):
    """A command was stopped by the check's deadline, not by its own failure."""


def library_paths() -> tuple[dict, dict]:
    """(environment for the stages, what was found), through this Python's torch and onnxruntime."""
    import torch

    torch_lib = pathlib.Path(torch.__file__).resolve().parent / "lib"
    site = torch_lib.parent.parent
    nvidia = sorted(str(pathlib.Path(p)) for p in glob.glob(str(site / "nvidia" / "*" / "lib")))
    found = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_lib": str(torch_lib),
        "nvidia_libs": nvidia,
    }
    if not (torch_lib / "libtorch_cpu.so").exists():
        raise SystemExit(f"gpu-check: {torch_lib} holds no libtorch_cpu.so: is this PyTorch a wheel with its C++ libraries?")
    env = dict(os.environ)
    paths = [str(torch_lib), *nvidia]
    if env.get("LD_LIBRARY_PATH"):
        paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    try:
        import onnxruntime

        capi = pathlib.Path(onnxruntime.__file__).resolve().parent / "capi"
        libraries = sorted(glob.glob(str(capi / "libonnxruntime.so*")))
        found["onnxruntime"] = onnxruntime.__version__
        found["onnxruntime_providers"] = onnxruntime.get_available_providers()
        if libraries:
            env["ORT_DYLIB_PATH"] = libraries[0]
            found["ort_dylib"] = libraries[0]
            env["LD_LIBRARY_PATH"] = f"{capi}:{env['LD_LIBRARY_PATH']}"
    except ImportError:
        found["onnxruntime"] = None
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env, found


class GpuMemory:
    """Peak GPU memory in use (MiB, over the whole GPU, less what was in use at the start) while a
    block runs, sampled from nvidia-smi every 0.2 s; None without nvidia-smi."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak_mib = None
        self.baseline = None
        self.peak = None

    @staticmethod
    def used() -> float | None:
        try:
            text = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10).stdout
            return float(text.split()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def __enter__(self):
        if self.enabled:
            self.baseline = self.used()
            self.stop = threading.Event()

            def sample():
                while not self.stop.wait(0.2):
                    value = self.used()
                    if value is not None:
                        self.peak = value if self.peak is None else max(self.peak, value)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *_):
        if self.enabled:
            self.stop.set()
            self.thread.join()
            # None when nvidia-smi gave no number (MIG, say), never a made-up 0.
            if self.baseline is not None and self.peak is not None:
                self.peak_mib = max(self.peak - self.baseline, 0.0)


class Check:
    def __init__(self, args) -> None:
        self.args = args
        self.cpu = args.cpu
        self.device = "cpu" if args.cpu else "cuda"
        # The two batch sizes compared (the dry run's tiny screen has a few hundred cells).
        self.batches = (16, 32) if args.cpu else (64, 256)
        self.bin = args.bin_dir.resolve()
        self.out = args.out.resolve()
        self.work = args.work.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        # A fresh scratch folder: nothing of an earlier run (an old model, say) can stand in.
        if self.work.exists() and any(self.work.iterdir()):
            if not (self.work / WORK_MARKER).exists():
                raise SystemExit(f"gpu-check: {self.work} is not empty and not a GPU-check folder; give another --work")
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / WORK_MARKER).write_text("scratch of tests/gpu/gpu_check.py; emptied by every run\n")
        self.log_path = self.out / "gpu_check.log"
        self.log_path.write_text("")
        self.started = time.monotonic()
        self.env, found = library_paths()
        self.report = {
            "mode": "cpu dry run" if self.cpu else "gpu",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "libraries": found,
            "steps": {},
            "commands": [],
        }
        self.reference = str(HERE / "reference.py")

    # ---- running things -------------------------------------------------------------------

    def remaining(self) -> float:
        return self.args.deadline - (time.monotonic() - self.started)

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")

    def run(self, argv: list[str], timeout: float, memory: bool = False) -> dict:
        """Runs a command (timeout capped by the deadline); its output goes to the log."""
        argv = [str(a) for a in argv]
        command = shlex.join(argv)
        self.report["commands"].append(command)
        if self.remaining() < 2:
            raise DeadlineReached(f"the deadline came before `{command}`")
        limit = min(timeout, self.remaining())
        self.log(f"\n$ {command}")
        print(f"gpu-check: $ {command}", flush=True)
        start = time.perf_counter()
        with GpuMemory(memory and not self.cpu) as gpu:
            try:
                done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=limit)
                code, stdout, stderr = done.returncode, done.stdout, done.stderr
            except subprocess.TimeoutExpired as expired:
                code = "timeout"
                stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        seconds = time.perf_counter() - start
        self.log(stdout + stderr + f"[exit {code}, {seconds:.1f} s]")
        if code == "timeout" and limit < timeout:
            raise DeadlineReached(f"the deadline stopped `{command}` after {seconds:.0f} s")
        if code != 0:
            tail = (stderr or stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"`{command}` {'timed out' if code == 'timeout' else f'exited {code}'} after {seconds:.0f} s: "
                               + " | ".join(tail))
        return {"seconds": seconds, "stdout": stdout, "stderr": stderr, "gpu_memory_mib": gpu.peak_mib}

    def stage(self, name: str) -> str:
        return str(self.bin / name)

    def step(self, name: str, needs_seconds: float, function) -> None:
        """Runs one step, records its result or why it failed or was skipped, saves the report."""
        if self.remaining() < needs_seconds:
            self.report["steps"][name] = {"status": "skipped", "why": f"{self.remaining():.0f} s left of the deadline, "
                                          f"the step needs about {needs_seconds:.0f} s"}
        else:
            start = time.perf_counter()
            try:
                result = function()
                self.report["steps"][name] = {"status": "ok", **result}
            except DeadlineReached as reached:
                self.report["steps"][name] = {"status": "cut short", "why": str(reached)}
            except Exception as error:  # noqa: BLE001 - every failure is recorded, the next step runs
                self.report["steps"][name] = {"status": "failed", "why": str(error)}
            self.report["steps"][name]["step_seconds"] = round(time.perf_counter() - start, 1)
        print(f"gpu-check: {name}: {self.report['steps'][name]['status']}", flush=True)
        self.save()

    def save(self) -> None:
        self.report["elapsed_seconds"] = round(time.monotonic() - self.started, 1)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.report, indent=2))
        tmp.replace(self.out / "gpu_check.json")
        (self.out / "gpu_check.txt").write_text(summary(self.report))

    @staticmethod
    def last_json(stdout: str) -> dict:
        return json.loads(stdout.strip().splitlines()[-1])

    # ---- the steps ---------------------------------------------------------------------------

    def environment(self) -> dict:
        result = {}
        result["gpu"] = None
        if shutil.which("nvidia-smi"):
            try:
                smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
                self.log("$ nvidia-smi\n" + smi.stdout + smi.stderr)
                query = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                        "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
                result["gpu"] = query.stdout.strip()
                # Kept in the report even if a later check of this step fails.
                self.report["gpu"] = result["gpu"]
            except subprocess.TimeoutExpired:
                self.log("nvidia-smi did not answer within 30 s")
        result["missing_libraries"] = []
        if shutil.which("ldd"):
            ldd = subprocess.run(["ldd", self.stage("pf-train")], capture_output=True, text=True, env=self.env)
            self.log(f"$ ldd {self.stage('pf-train')}\n{ldd.stdout}{ldd.stderr}")
            result["missing_libraries"] = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
        else:
            self.log("no ldd on this machine: the libraries are checked by running pf-train")
        if result["missing_libraries"]:
            raise RuntimeError(f"pf-train cannot find {', '.join(result['missing_libraries'])} (see gpu_check.log)")
        result["libtorch"] = self.run([self.stage("pf-train"), "--list-devices"], 60)["stdout"].strip()
        if not self.cpu and "CUDA available: yes" not in result["libtorch"]:
            raise RuntimeError(f"libtorch sees no CUDA: {result['libtorch']}")
        return result

    def data(self) -> dict:
        screen = self.work / "screen"
        if self.cpu:
            synth = ["--preset", "tiny"]
        else:
            synth = ["--preset", "demo", "--sites", "4", "--field-size", "512x512", "--cells-per-field", "34"]
        made = self.run([self.stage("pf-synth"), *synth, "--seed", "1", "--output", screen, "--force", "--no-progress"], 600)
        tables = ["--image-csv", screen / "BBBC021_v1_image.csv", "--moa-csv", screen / "BBBC021_v1_moa.csv"]
        cells = self.work / "cells.parquet"
        crop = self.run([self.stage("pf-preprocess"), "bbbc021", *tables, "--output", cells, "--no-progress"], 600)
        agree = self.work / "agree.parquet"
        if self.cpu:
            shutil.copyfile(cells, agree)
        else:
            self.run([self.stage("pf-preprocess"), "bbbc021", *tables, "--shard", "0/8", "--output", agree, "--no-progress"], 300)
        import pyarrow.parquet as pq

        n_cells = pq.ParquetFile(cells).metadata.num_rows
        n_fields = sum(1 for _ in open(screen / "BBBC021_v1_image.csv")) - 1
        return {"n_fields": n_fields, "n_cells": n_cells, "n_agreement_cells": pq.ParquetFile(agree).metadata.num_rows,
                "synth_seconds": round(made["seconds"], 1), "preprocess_seconds": round(crop["seconds"], 1),
                "preprocess_fields_per_second": round(n_fields / crop["seconds"], 1)}

    def train_log(self, folder: pathlib.Path):
        import pyarrow.parquet as pq

        return pq.read_table(folder / "training_log.parquet").to_pandas()

    def rates(self, folder: pathlib.Path) -> list[float]:
        log = self.train_log(folder)
        rows = log[(log.Split == "train") & (log.Term == "images_per_second")].sort_values("Epoch")
        return [round(v, 1) for v in rows.Value]

    def vae(self, batch: int, tf32: bool = False, benchmark: bool = False) -> dict:
        epochs = 2
        flags = (["--tf32"] if tf32 else []) + (["--cudnn-benchmark"] if benchmark else [])
        name = f"vae-b{batch}" + ("-tf32" if tf32 else "") + ("-cudnn-benchmark" if benchmark else "")
        folder = self.work / name
        ours = self.run([self.stage("pf-train"), "generative", "--cells", self.work / "cells.parquet", "--output", folder, "--model", "cytovae",
                         "--epochs", epochs, "--batch-size", batch, "--latent-dim", 256, "--device", self.device, "--no-progress",
                         "--n-reconstructions", 1, *flags], 900, memory=True)
        ours_rates = self.rates(folder)
        theirs = self.run([sys.executable, self.reference, "vae", "--cells", self.work / "cells.parquet", "--device", self.device,
                           "--batch-size", batch, "--epochs", epochs, *flags], 900, memory=True)
        reference = self.last_json(theirs["stdout"])
        ours_rate, their_rate = ours_rates[-1], reference["images_per_second"][-1]
        return {
            "batch_size": batch, "tf32": tf32, "cudnn_benchmark": benchmark,
            "pf_train_images_per_second": ours_rates,
            "pytorch_images_per_second": [round(v, 1) for v in reference["images_per_second"]],
            "ratio": round(ours_rate / their_rate, 3),
            "pf_train_gpu_memory_mib": ours["gpu_memory_mib"],
            "pytorch_gpu_memory_mib": theirs["gpu_memory_mib"],
            "pytorch_max_memory_reserved_mib": reference.get("max_memory_reserved_mib"),
            "pf_train_seconds_per_full_screen_epoch": round(FULL_SCREEN_CELLS / ours_rate, 1),
            "pytorch_seconds_per_full_screen_epoch": round(FULL_SCREEN_CELLS / their_rate, 1),
            "pf_train_wall_seconds": round(ours["seconds"], 1),
            "pytorch_wall_seconds": round(theirs["seconds"], 1),
            "device": reference["device"],
        }

    def agreement(self) -> dict:
        agree = self.work / "agree.parquet"
        common = ["generative", "--cells", agree, "--model", "cytovae", "--epochs", 2, "--batch-size", self.batches[0], "--latent-dim", 256, "--seed", 0,
                  "--no-progress", "--n-reconstructions", 1]
        if self.cpu:
            sides = {"cpu, 1 thread": ["--device", "cpu", "--threads", 1], "cpu, all threads": ["--device", "cpu"]}
        else:
            sides = {"cpu": ["--device", "cpu"], "cuda": ["--device", "cuda"]}
        logs = {}
        for index, (side, flags) in enumerate(sides.items()):
            folder = self.work / f"agree-{index}"
            self.run([self.stage("pf-train"), *common, "--output", folder, *flags], 900)
            log = self.train_log(folder)
            logs[side] = log[log.Term.isin(["loss", "reconstruction", "kl"])]
        (a_name, a), (b_name, b) = logs.items()
        merged = a.merge(b, on=["Epoch", "Split", "Term"], suffixes=("_a", "_b"))
        merged["relative_difference"] = (merged.Value_a - merged.Value_b).abs() / merged.Value_b.abs().clip(lower=1e-12)
        import pyarrow.parquet as pq

        n = pq.ParquetFile(agree).metadata.num_rows
        steps = 2 * (int(round(n * 0.9)) // self.batches[0])
        worst = float(merged.relative_difference.max())
        rows = [{"epoch": int(r.Epoch), "split": r.Split, "term": r.Term, a_name: round(r.Value_a, 4), b_name: round(r.Value_b, 4),
                 "relative_difference": round(r.relative_difference, 5)} for r in merged.itertuples()]
        if worst > AGREEMENT_TOLERANCE:
            raise RuntimeError(f"{a_name} and {b_name} differ by {worst:.1%} (tolerance {AGREEMENT_TOLERANCE:.0%}): {rows}")
        return {"sides": [a_name, b_name], "steps": steps, "tolerance": AGREEMENT_TOLERANCE,
                "max_relative_difference": round(worst, 5), "rows": rows}

    def embed(self) -> dict:
        model = self.work / f"vae-b{self.batches[0]}"
        if not (model / "model_card.json").exists():
            raise RuntimeError(f"no {model.name} model to export (that step failed or was skipped)")
        encoder, decoder = self.work / "encoder.onnx", self.work / "decoder.onnx"
        self.run([self.stage("pf-export"), "--model-card", model / "model_card.json", "--encoder", encoder, "--decoder", decoder], 300)
        cells, ours_out, their_out = self.work / "cells.parquet", self.work / "embed-ours.parquet", self.work / "embed-ref.parquet"
        ours = self.run([self.stage("pf-embed"), "--cells", cells, "--encoder", encoder, "--output", ours_out, "--no-progress"], 900)
        provider = "CUDA" if ", CUDA)" in ours["stderr"] else "CPU"
        theirs = self.run([sys.executable, self.reference, "embed", "--cells", cells, "--checkpoint", model / "checkpoint.safetensors",
                           "--output", their_out, "--device", self.device], 900, memory=True)
        reference = self.last_json(theirs["stdout"])
        # Like for like too: ONNX Runtime here may have only its CPU provider, so PyTorch eager on
        # the same CPU cores is measured beside PyTorch on CUDA.
        cpu_reference = reference
        if self.device != "cpu":
            cpu_run = self.run([sys.executable, self.reference, "embed", "--cells", cells, "--checkpoint",
                                model / "checkpoint.safetensors", "--output", self.work / "embed-ref-cpu.parquet",
                                "--device", "cpu"], 900)
            cpu_reference = self.last_json(cpu_run["stdout"])
        import numpy as np
        import pyarrow.parquet as pq

        def features(path):
            table = pq.read_table(path)
            names = [n for n in table.column_names if n.startswith("Cells_")]
            return np.stack([table.column(n).to_numpy() for n in names], axis=1)

        difference = float(np.abs(features(ours_out) - features(their_out)).max())
        n = reference["n_cells"]
        return {
            "n_cells": n, "pf_embed_provider": provider, "pf_embed_seconds": round(ours["seconds"], 2),
            "pf_embed_cells_per_second": round(n / ours["seconds"]),
            "pytorch_seconds": round(reference["seconds"], 2), "pytorch_cells_per_second": round(reference["cells_per_second"]),
            "pytorch_device": reference["device"], "ratio": round(reference["seconds"] / ours["seconds"], 3),
            "pytorch_cpu_cells_per_second": round(cpu_reference["cells_per_second"]),
            "pytorch_cpu_device": cpu_reference["device"],
            "ratio_same_cpu": round(cpu_reference["seconds"] / ours["seconds"], 3),
            "max_abs_difference": difference,
        }

    def resnet(self) -> dict:
        screen, whole = self.work / "cpjump1", self.work / "whole.parquet"
        plates, size, batch = ("1", 64, 16) if self.cpu else ("64", 128, 64)
        self.run([self.stage("pf-synth"), "--preset", "cpjump1", "--plates", plates, "--field-size", "128x128", "--seed", 1,
                  "--output", screen, "--force", "--no-progress"], 600)
        self.run([self.stage("pf-preprocess"), "whole", "--image-csv", screen / "cpjump1_images.csv", "--moa-csv",
                  screen / "cpjump1_moa.csv", "--channels", "DNA,RNA,ER,AGP,Mito", "--size", size, "--grey", "--output", whole,
                  "--no-progress"], 600)
        epochs = 2 if self.cpu else 4
        folder = self.work / "resnet18"
        ours = self.run([self.stage("pf-train"), "classifier", "--cells", whole, "--output", folder, "--model", "resnet18", "--label", "treatment",
                         "--epochs", epochs, "--batch-size", batch, "--augment", "none", "--device", self.device, "--no-progress"],
                        900, memory=True)
        ours_rates = self.rates(folder)
        theirs = self.run([sys.executable, self.reference, "resnet", "--cells", whole, "--device", self.device,
                           "--batch-size", batch, "--epochs", epochs], 900, memory=True)
        reference = self.last_json(theirs["stdout"])
        return {
            "n_images": reference["n_images"], "shape": reference["shape"], "n_classes": reference["n_classes"], "batch_size": batch,
            "pf_train_images_per_second": ours_rates,
            "pytorch_images_per_second": [round(v, 1) for v in reference["images_per_second"]],
            "ratio": round(ours_rates[-1] / reference["images_per_second"][-1], 3),
            "pf_train_gpu_memory_mib": ours["gpu_memory_mib"], "pytorch_gpu_memory_mib": theirs["gpu_memory_mib"],
        }

    def everything(self) -> None:
        big = not self.cpu
        self.step("environment", 5, self.environment)
        if self.report["steps"]["environment"]["status"] != "ok":
            return
        self.step("data", 60 if big else 5, self.data)
        if self.report["steps"]["data"]["status"] != "ok":
            return
        small, large = self.batches
        self.step(f"vae-b{small}", 60 if big else 5, lambda: self.vae(small))
        self.step(f"vae-b{large}", 45 if big else 5, lambda: self.vae(large))
        self.step("agreement", 60 if big else 5, self.agreement)
        self.step("embed", 45 if big else 5, self.embed)
        self.step("resnet18", 60 if big else 5, self.resnet)
        self.step(f"vae-b{large}-tf32", 45 if big else 5, lambda: self.vae(large, tf32=True))
        self.step(f"vae-b{large}-cudnn-benchmark", 45 if big else 5, lambda: self.vae(large, benchmark=True))


def summary(report: dict) -> str:
    """The human-readable page of the report."""
    steps = report["steps"]
    lines = [f"phenoflow GPU check ({report['mode']}), started {report['started']}, "
             f"{report.get('elapsed_seconds', 0):.0f} s", ""]
    libraries = report["libraries"]
    lines.append(f"python {libraries['python_version']} ({libraries['python']}), torch {libraries['torch']} "
                 f"(CUDA {libraries['torch_cuda']}), onnxruntime {libraries.get('onnxruntime')} "
                 f"{libraries.get('onnxruntime_providers', '')}")
    env = steps.get("environment", {})
    lines.append(f"GPU: {env.get('gpu', report.get('gpu'))}")
    lines.append(f"{env.get('libtorch', '')}")
    lines.append("")
    for name, step in steps.items():
        status = step["status"]
        if status != "ok":
            lines.append(f"{name}: {status.upper()}: {step.get('why')}")
            continue
        if name == "data":
            lines.append(f"data: {step['n_fields']} fields -> {step['n_cells']} cells (synth {step['synth_seconds']} s, "
                         f"preprocess {step['preprocess_seconds']} s = {step['preprocess_fields_per_second']} fields/s); "
                         f"agreement subset {step['n_agreement_cells']} cells")
        elif name.startswith("vae"):
            lines.append(f"{name}: pf-train {step['pf_train_images_per_second'][-1]:.0f} img/s vs PyTorch "
                         f"{step['pytorch_images_per_second'][-1]:.0f} img/s = {step['ratio']:.2f}x "
                         f"(target >= 1.5x on a GPU); GPU memory {step['pf_train_gpu_memory_mib']} vs "
                         f"{step['pytorch_gpu_memory_mib']} MiB; a 488k-cell epoch {step['pf_train_seconds_per_full_screen_epoch']} s "
                         f"vs {step['pytorch_seconds_per_full_screen_epoch']} s (target < 20 s)")
        elif name == "agreement":
            lines.append(f"agreement: {step['sides'][0]} vs {step['sides'][1]}, {step['steps']} steps: largest relative "
                         f"difference of loss / reconstruction / KL per epoch {step['max_relative_difference']:.2%} "
                         f"(tolerance {step['tolerance']:.0%})")
        elif name == "embed":
            lines.append(f"embed: pf-embed ({step['pf_embed_provider']} EP) {step['pf_embed_cells_per_second']} cells/s vs "
                         f"PyTorch eager ({step['pytorch_device']}) {step['pytorch_cells_per_second']} cells/s = "
                         f"{step['ratio']:.2f}x (target >= 1.5x); PyTorch eager on the same CPU "
                         f"({step['pytorch_cpu_device']}) {step['pytorch_cpu_cells_per_second']} cells/s = "
                         f"{step['ratio_same_cpu']:.2f}x; max |difference| {step['max_abs_difference']:.2g}")
        elif name == "resnet18":
            lines.append(f"resnet18: {step['n_images']} images {step['shape']}, {step['n_classes']} classes: pf-train "
                         f"{step['pf_train_images_per_second'][-1]:.0f} img/s vs torchvision "
                         f"{step['pytorch_images_per_second'][-1]:.0f} img/s = {step['ratio']:.2f}x")
        else:
            lines.append(f"{name}: ok")
    lines.append("")
    lines.append("commands:")
    lines.extend(f"  {command}" for command in report["commands"])
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True, type=pathlib.Path, help="the stage binaries (the bundle's bin/)")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="where the JSON, summary and log go")
    parser.add_argument("--work", required=True, type=pathlib.Path, help="where the big intermediate files go")
    parser.add_argument("--cpu", action="store_true", help="the dry run: tiny data, CPU only")
    parser.add_argument("--deadline", type=float, default=450.0, help="seconds; steps that would outrun it are skipped")
    args = parser.parse_args()
    check = Check(args)
    check.everything()
    check.save()
    sys.stdout.write(summary(check.report))
    failed = [name for name, step in check.report["steps"].items() if step["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
