//! pf-train: the generative models learn on real cells, runs are reproducible and resumable; its errors.

use super::*;

pub(crate) fn train<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-train"), args)
}

/// The 259 real pre-cropped BBBC021 cells as a cells table.
pub(crate) fn tiny_cells(folder: &Path) -> PathBuf {
    let output = folder.join("cells.parquet");
    preprocess(&[
        "singlecell",
        "--root",
        &arg(&shared_data().join("bbbc021/singlecell_tiny")),
        "--output",
        &arg(&output),
        "--no-progress",
    ])
    .assert_success();
    output
}

/// Sets the value of a flag that `args` already has.
pub(crate) fn set_flag(args: &mut [String], flag: &str, value: &str) {
    let at = args
        .iter()
        .position(|arg| arg == flag)
        .unwrap_or_else(|| panic!("{flag} is not in {args:?}"));
    args[at + 1] = value.into();
}

pub(crate) fn train_args(cells: &Path, out: &Path, model: &str, epochs: usize) -> Vec<String> {
    vec![
        "generative".into(),
        "--cells".into(),
        arg(cells),
        "--output".into(),
        arg(out),
        "--model".into(),
        model.into(),
        "--epochs".into(),
        epochs.to_string(),
        "--batch-size".into(),
        "32".into(),
        "--latent-dim".into(),
        "32".into(),
        "--seed".into(),
        "5".into(),
        "--no-progress".into(),
        "--reference-cells".into(),
        "259".into(),
    ]
}

/// (epoch, split, term) → value of a training log.
pub(crate) fn training_log(path: &Path) -> std::collections::BTreeMap<(i64, String, String), f64> {
    let check = run_python("read_table.py", &[&arg(path), "Epoch,Split,Term,Value"]);
    check.assert_success();
    check
        .stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (
                (
                    fields[0].parse().unwrap(),
                    fields[1].to_string(),
                    fields[2].to_string(),
                ),
                fields[3].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn training_on_real_cells_lowers_the_reconstruction_loss_for_every_model() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    for model in [
        "cytoae",
        "cytovae",
        "sparsevae",
        "cytovaegan",
        "sparsevaegan",
    ] {
        let out = temp.path().join(model);
        train(&train_args(&cells, &out, model, 4)).assert_success();
        let log = training_log(&out.join("training_log.parquet"));
        let value = |epoch: i64, split: &str, term: &str| {
            log[&(epoch, split.to_string(), term.to_string())]
        };
        assert!(
            value(4, "train", "reconstruction") < 0.7 * value(1, "train", "reconstruction"),
            "{model}: {log:?}"
        );
        assert!(
            value(4, "validation", "reconstruction") < value(1, "validation", "reconstruction"),
            "{model}"
        );
        if model.ends_with("gan") {
            assert!(log.contains_key(&(
                4,
                "validation".to_string(),
                "feature_matching".to_string()
            )));
            assert!(log.contains_key(&(4, "train".to_string(), "discriminator".to_string())));
        }
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model_card.json")).unwrap())
                .unwrap();
        assert_eq!(card["model"], model);
        assert_eq!(card["epochs_completed"], 4);
        assert_eq!(card["data"]["n_cells"], 259);
        assert_eq!(
            card["hyperparameters"]["beta"],
            if model == "cytoae" { 0.0 } else { 1.0 }
        );
        let png = std::fs::read(out.join("reconstructions.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(temp_files(&out).is_empty());
        // Export: onnx.checker passes and ONNX Runtime reproduces libtorch's encoder and decoder
        // outputs on all 259 real cells.
        let (encoder, decoder) = (out.join("encoder.onnx"), out.join("decoder.onnx"));
        export(&out, &encoder, &decoder).assert_success();
        let check = run_python(
            "check_onnx.py",
            &[
                arg(&encoder),
                arg(&decoder),
                arg(&out.join("reference_outputs.safetensors")),
            ],
        );
        check.assert_success();
        assert!(
            check.stdout.contains("OK: 259 cells"),
            "{model}: {}",
            check.stdout
        );
        assert!(
            check.stdout.contains("onnx.checker OK, opset 18"),
            "{}",
            check.stdout
        );
        assert_eq!(
            check.stdout.contains("encoder gamma"),
            model.starts_with("sparse"),
            "{}",
            check.stdout
        );
    }
}

#[test]
fn same_seed_gives_identical_weights_and_resume_equals_an_uninterrupted_run() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    for model in ["cytovae", "sparsevaegan"] {
        let straight = temp.path().join(format!("{model}-straight"));
        let again = temp.path().join(format!("{model}-again"));
        let resumed = temp.path().join(format!("{model}-resumed"));
        train(&train_args(&cells, &straight, model, 3)).assert_success();
        train(&train_args(&cells, &again, model, 3)).assert_success();
        train(&train_args(&cells, &resumed, model, 2)).assert_success();
        let mut resume = train_args(&cells, &resumed, model, 3);
        resume.push("--resume".into());
        train(&resume).assert_success();
        let weights = |folder: &Path| std::fs::read(folder.join("checkpoint.safetensors")).unwrap();
        assert!(
            weights(&straight) == weights(&again),
            "{model}: same seed, different weights"
        );
        assert!(
            weights(&straight) == weights(&resumed),
            "{model}: resumed run differs"
        );
        assert_eq!(
            training_log(&straight.join("training_log.parquet"))
                .into_iter()
                .filter(|((_, _, term), _)| term != "images_per_second" && term != "seconds")
                .collect::<Vec<_>>(),
            training_log(&resumed.join("training_log.parquet"))
                .into_iter()
                .filter(|((_, _, term), _)| term != "images_per_second" && term != "seconds")
                .collect::<Vec<_>>()
        );
        // --start-from a finished run of the same cells: the same model, and from there on the
        // same training as a resume; with other cells it is refused.
        if model == "cytovae" {
            let started = temp.path().join("started");
            let mut start = train_args(&cells, &started, model, 2);
            start.extend([
                "--start-from".into(),
                arg(&temp
                    .path()
                    .join(format!("{model}-resumed-at-2/model_card.json"))),
            ]);
            let at_two = temp.path().join(format!("{model}-resumed-at-2"));
            train(&train_args(&cells, &at_two, model, 2)).assert_success();
            train(&start).assert_success();
            assert!(weights(&started) == weights(&at_two), "started as is");
            let card = std::fs::read_to_string(started.join("model_card.json")).unwrap();
            assert!(card.contains("\"started_from\""), "{card}");
            set_flag(&mut start, "--epochs", "3");
            train(&start).assert_success();
            assert!(
                weights(&started) == weights(&straight),
                "started, then trained"
            );
            let other_cells = temp.path().join("other-cells.parquet");
            let root = shared_data().join("bbbc021/singlecell_tiny");
            let metadata = std::fs::read_to_string(root.join("metadata.csv")).unwrap();
            let fewer = temp.path().join("fewer.csv");
            std::fs::write(
                &fewer,
                metadata.lines().take(201).collect::<Vec<_>>().join("\n"),
            )
            .unwrap();
            preprocess(&[
                "singlecell",
                "--root",
                &arg(&root),
                "--metadata",
                &arg(&fewer),
                "--output",
                &arg(&other_cells),
                "--no-progress",
            ])
            .assert_success();
            let mut wrong = train_args(&other_cells, &temp.path().join("wrong"), model, 3);
            wrong.extend(["--start-from".into(), arg(&at_two.join("model_card.json"))]);
            train(&wrong).assert_failure(2, &["trained on other data", "model_card.json"]);
            assert!(!temp.path().join("wrong/checkpoint.safetensors").exists());
        }
        let mut other_seed = train_args(&cells, &temp.path().join("other"), model, 1);
        set_flag(&mut other_seed, "--seed", "6");
        train(&other_seed).assert_success();
        assert!(weights(&temp.path().join("other")) != weights(&straight));
    }
}

#[test]
fn train_rejects_bad_input_and_stops_on_non_finite_losses() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    let out = temp.path().join("out");
    // A normalisation that overflows float32 makes the very first loss infinite.
    let mut overflow = train_args(&cells, &out, "cytovae", 2);
    overflow.extend([
        "--normalization".into(),
        "fixed".into(),
        "--fixed-divisor".into(),
        "1e-35".into(),
    ]);
    train(&overflow).assert_failure(1, &["epoch 1", "train loss term `loss` is not finite"]);
    assert!(!out.join("checkpoint.safetensors").exists());
    // Not a cells table.
    let log = temp.path().join("log-as-cells");
    train(&train_args(&cells, &log, "cytovae", 1)).assert_success();
    train(&train_args(
        &log.join("training_log.parquet"),
        &out,
        "cytovae",
        1,
    ))
    .assert_failure(2, &["training_log.parquet", "cells"]);
    // Missing, truncated.
    train(&train_args(
        &temp.path().join("missing.parquet"),
        &out,
        "cytovae",
        1,
    ))
    .assert_failure(2, &["missing.parquet"]);
    let truncated = temp.path().join("truncated.parquet");
    let bytes = std::fs::read(&cells).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    train(&train_args(&truncated, &out, "cytovae", 1)).assert_failure(2, &["truncated.parquet"]);
    // Settings that cannot work, named before any data is read.
    let mut bad_beta = train_args(&cells, &out, "cytoae", 1);
    bad_beta.extend(["--beta".into(), "2".into()]);
    train(&bad_beta).assert_failure(2, &["cytoae is CytoVAE with β = 0"]);
    let mut too_big = train_args(&cells, &out, "cytovae", 1);
    set_flag(&mut too_big, "--batch-size", "1000");
    train(&too_big).assert_failure(2, &["fewer than one batch of 1000"]);
    let mut balanced = train_args(&cells, &out, "cytovae", 1);
    balanced.extend(["--sampler".into(), "balanced".into()]);
    train(&balanced).assert_failure(2, &["at least two treatments"]);
    // Resuming with other settings.
    let mut resume = train_args(&cells, &log, "cytovae", 2);
    resume.extend(["--resume".into(), "--beta".into(), "3".into()]);
    train(&resume).assert_failure(2, &["cannot resume", "settings differ"]);
    // Resuming a run whose files disagree on the epoch (as after a crash while saving).
    let card_path = log.join("model_card.json");
    let card = std::fs::read_to_string(&card_path).unwrap();
    std::fs::write(
        &card_path,
        card.replace("\"epochs_completed\": 1", "\"epochs_completed\": 0"),
    )
    .unwrap();
    let mut resume = train_args(&cells, &log, "cytovae", 2);
    resume.push("--resume".into());
    train(&resume).assert_failure(
        2,
        &["checkpoint.safetensors: cannot resume: it holds epoch 1, the model card says 0"],
    );
}

// ---------------------------------------------------------------------------------------------
// pf-run
