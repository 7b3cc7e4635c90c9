//! The GPU check's CPU dry run (`tests/gpu/run.sh --cpu`, see docs/gpu.md): the bundle is made
//! from the release binaries exactly as `make gpu-bundle` makes it, then every step of the check
//! runs from inside the bundle on tiny data with the project's Python, so that the bundle, the
//! library discovery and each measurement keep working between the rare GPU loans.

use std::path::Path;
use std::process::Command;

use phenoflow_e2e::{python, root, run, stage, Outcome};

fn bundle(dest: &Path, limit_mib: &str) -> Outcome {
    let bin_dir = stage("pf-train").parent().unwrap().to_path_buf();
    run(
        &root().join("tests/gpu/bundle.sh"),
        &[bin_dir.as_os_str(), dest.as_os_str(), limit_mib.as_ref()],
    )
}

fn run_check(bundle: &Path, out: &Path, work: &Path) -> Outcome {
    Command::new(bundle.join("run.sh"))
        .args(["--cpu", "--deadline", "900", "--out"])
        .arg(out)
        .arg("--work")
        .arg(work)
        .env("PHENOFLOW_GPU_PYTHON", python())
        .env_remove("PHENOFLOW_GPU_BIN")
        .output()
        .expect("run.sh runs")
        .into()
}

#[test]
fn the_gpu_check_runs_every_step_from_the_bundle_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("gpu-bundle");
    let made = bundle(&dest, "60");
    made.assert_success();
    assert!(
        made.stdout.contains("MiB (limit 60 MiB)"),
        "{}",
        made.stdout
    );
    for name in [
        "bin/pf-synth",
        "bin/pf-preprocess",
        "bin/pf-train",
        "bin/pf-export",
        "bin/pf-embed",
        "run.sh",
        "gpu_check.py",
        "reference.py",
        "bench_train.py",
        "bench_embed.py",
        "check_onnx.py",
        "README.md",
        "MANIFEST",
    ] {
        assert!(dest.join(name).exists(), "the bundle lacks {name}");
    }
    // Stripped: no symbol table left in the binaries.
    let symbols = Command::new("nm")
        .arg(dest.join("bin/pf-export"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&symbols.stderr).contains("no symbols"),
        "pf-export in the bundle is not stripped"
    );

    let out = dir.path().join("out");
    let checked = run_check(&dest, &out, &dir.path().join("work"));
    checked.assert_success();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gpu_check.json")).unwrap())
            .unwrap();
    let steps = report["steps"].as_object().unwrap();
    let expected = [
        "environment",
        "data",
        "vae-b16",
        "vae-b32",
        "agreement",
        "embed",
        "resnet18",
        "vae-b32-tf32",
        "vae-b32-cudnn-benchmark",
    ];
    let mut sorted = expected.to_vec();
    sorted.sort_unstable();
    assert_eq!(steps.keys().map(String::as_str).collect::<Vec<_>>(), sorted);
    for (name, step) in steps {
        assert_eq!(step["status"], "ok", "{name}: {step}");
    }
    // The libraries were found through the Python, not from this machine's environment.
    let libraries = &report["libraries"];
    assert!(libraries["torch_lib"]
        .as_str()
        .unwrap()
        .ends_with("torch/lib"));
    assert!(libraries["ort_dylib"]
        .as_str()
        .unwrap()
        .contains("libonnxruntime.so"));
    assert!(steps["environment"]["libtorch"]
        .as_str()
        .unwrap()
        .contains("CUDA available: no"));
    for name in ["vae-b16", "vae-b32", "resnet18"] {
        let ratio = steps[name]["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{name}: ratio {ratio}");
    }
    // One thread against all: the same weights, batches and noise, so only the order of the
    // floating-point sums differs (measured: up to 0.9 % after 24 steps, the early steps being
    // chaotic); the GPU check holds CPU against CUDA to the same 5 %.
    let agreement = &steps["agreement"];
    assert!(agreement["steps"].as_u64().unwrap() >= 10, "{agreement}");
    assert!(
        agreement["max_relative_difference"].as_f64().unwrap() <= 0.05,
        "{agreement}"
    );
    // ONNX Runtime and PyTorch eager embed the same cells from the same weights.
    assert!(
        steps["embed"]["max_abs_difference"].as_f64().unwrap() < 1e-3,
        "{}",
        steps["embed"]
    );
    assert_eq!(steps["embed"]["pf_embed_provider"], "CPU");
    let summary = std::fs::read_to_string(out.join("gpu_check.txt")).unwrap();
    for name in expected {
        assert!(
            summary.contains(name),
            "the summary lacks {name}:\n{summary}"
        );
    }
    assert!(summary.contains("pf-train --list-devices"), "{summary}");
    let log = std::fs::read_to_string(out.join("gpu_check.log")).unwrap();
    assert!(log.contains("$ ldd "), "the log lacks ldd's output");
}

#[test]
fn an_oversized_bundle_fails_loudly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("gpu-bundle");
    bundle(&dest, "1").assert_failure(1, &["over the 1 MiB limit"]);
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_check_without_binaries_says_how_to_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("gpu");
    std::fs::create_dir_all(&lonely).unwrap();
    std::fs::copy(root().join("tests/gpu/run.sh"), lonely.join("run.sh")).unwrap();
    let output = Command::new(lonely.join("run.sh"))
        .arg("--cpu")
        .env_remove("PHENOFLOW_GPU_BIN")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("make gpu-bundle"));
}
