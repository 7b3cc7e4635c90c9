//! The supervised track: pf-train cnn / resnet18 and pf-baseline on the same split.

use super::*;

/// The separable screen of `make_separable.py` as a cells table of 32×32 grey fields.
pub(crate) fn separable_cells(folder: &Path) -> PathBuf {
    let screen = folder.join("screen");
    run_python("make_separable.py", &[arg(&screen)]).assert_success();
    let output = folder.join("whole.parquet");
    preprocess(&[
        "whole",
        "--image-csv",
        &arg(&screen.join("images.csv")),
        "--channels",
        "DNA",
        "--size",
        "32",
        "--output",
        &arg(&output),
        "--no-progress",
    ])
    .assert_success();
    output
}

/// (Metric, Scope) → Value of a metrics table.
pub(crate) fn metric_values(path: &Path) -> std::collections::BTreeMap<(String, String), f64> {
    let check = run_python("read_table.py", &[&arg(path), "Metric,Scope,Value"]);
    check.assert_success();
    check
        .stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (
                (fields[0].to_string(), fields[1].to_string()),
                fields[2].parse().expect("a number"),
            )
        })
        .collect()
}

/// The held-out rows of a class_predictions table, as plate/well/site keys.
pub(crate) fn held_out_keys(path: &Path) -> Vec<String> {
    let check = run_python(
        "read_table.py",
        &[&arg(path), "Metadata_Plate,Metadata_Well,Metadata_Site"],
    );
    check.assert_success();
    let mut keys: Vec<String> = check.stdout.lines().map(str::to_string).collect();
    keys.sort();
    keys
}

#[test]
fn every_classifier_learns_a_separable_problem_on_the_same_split() {
    let folder = tempfile::tempdir().unwrap();
    let cells = separable_cells(folder.path());
    let mut splits = Vec::new();
    for (name, args) in [
        ("cnn", vec!["--epochs", "12", "--batch-size", "16"]),
        // Five batches an epoch: with torchvision's initialisation (batch-norm scale 1) the
        // running statistics the test split is scored with need ~60 steps to catch up with the
        // batch statistics (momentum 0.1); before that the test accuracy sits at chance while the
        // training accuracy is 1, as it would in PyTorch. 30 epochs, not 20: libtorch's CPU
        // kernels round differently from one CPU to the next, and on an AMD EPYC VM the same
        // seed reached a balanced accuracy of 0.667 after 20 epochs (1.0 after 30 and 40).
        ("resnet18", vec!["--epochs", "30", "--batch-size", "16"]),
    ] {
        let out = folder.path().join(name);
        let mut all = vec![
            "classifier".to_string(),
            "--cells".to_string(),
            arg(&cells),
            "--output".into(),
            arg(&out),
            "--model".into(),
            name.into(),
            "--seed".into(),
            "3".into(),
            "--no-progress".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        train(&all).assert_success();
        assert!(out.join("classifier.json").exists());
        assert!(out.join("checkpoint.safetensors").exists());
        let metrics = metric_values(&out.join("metrics.parquet"));
        let balanced = metrics[&("balanced_accuracy".to_string(), "all".to_string())];
        assert!(
            balanced >= 0.8,
            "{name}: balanced accuracy {balanced} (chance 1/3)"
        );
        assert!(
            (metrics[&("majority_balanced_accuracy".to_string(), "all".to_string())] - 1.0 / 3.0)
                .abs()
                < 1e-9
        );
        splits.push(held_out_keys(&out.join("class_predictions.parquet")));
    }
    for classifier in ["random-forest", "svm"] {
        let out = folder.path().join(classifier);
        Call::stage("pf-baseline")
            .path("--input", &cells)
            .flag("--classifier", classifier)
            .flag("--seed", "3")
            .path("--output", &out)
            .run()
            .assert_success();
        let metrics = metric_values(&out.join("metrics.parquet"));
        let balanced = metrics[&("balanced_accuracy".to_string(), "all".to_string())];
        assert!(
            balanced >= 0.8,
            "{classifier}: balanced accuracy {balanced} (chance 1/3)"
        );
        splits.push(held_out_keys(&out.join("class_predictions.parquet")));
    }
    // 90 fields, 30 per treatment: 6 of each held out, the same 18 for every classifier.
    assert_eq!(splits[0].len(), 18);
    assert!(splits.iter().all(|split| split == &splits[0]));

    // The report puts the four side by side.
    let report = folder.path().join("report");
    let mut args = vec!["--output".to_string(), arg(&report)];
    for name in ["cnn", "resnet18", "random-forest", "svm"] {
        args.push("--classifier-metrics".into());
        args.push(arg(&folder.path().join(name).join("metrics.parquet")));
    }
    run(&stage("pf-report"), &args).assert_success();
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    for name in ["cnn", "resnet18", "random-forest", "svm"] {
        assert!(
            html.contains(&format!(
                "<tr><td>{name}</td><td>treatment</td><td>holdout-stratified</td>"
            )),
            "{name} missing"
        );
        assert!(report
            .join(format!("confusion_{}.png", name.replace('-', "_")))
            .exists());
    }
    check_report_in_chromium(&report, 4, folder.path());
}

#[test]
fn classifiers_reject_a_missing_label_column_and_a_single_class() {
    let folder = tempfile::tempdir().unwrap();
    let cells = separable_cells(folder.path());
    let out = folder.path().join("out");
    train(&[
        "classifier",
        "--cells",
        &arg(&cells),
        "--out",
        &arg(&out),
        "--model",
        "cnn",
        "--label",
        "Metadata_Target",
    ])
    .assert_failure(
        2,
        &[
            "whole.parquet",
            "label column `Metadata_Target`",
            "Metadata_Compound",
        ],
    );
    assert!(!out.exists(), "nothing written");
    Call::stage("pf-baseline")
        .path("--input", &cells)
        .flag("--classifier", "svm")
        .flag("--label", "Metadata_Target")
        .path("--out", &out)
        .run()
        .assert_failure(2, &["whole.parquet", "label column `Metadata_Target`"]);
    assert!(!out.exists(), "nothing written");
    // Every field is object 1: a single class.
    Call::stage("pf-baseline")
        .path("--input", &cells)
        .flag("--classifier", "random-forest")
        .flag("--label", "Metadata_ObjectNumber")
        .path("--out", &out)
        .run()
        .assert_failure(2, &["`Metadata_ObjectNumber` has a single value (1)"]);
    assert!(!out.exists(), "nothing written");
    // A Float64 column is no label.
    Call::stage("pf-baseline")
        .path("--input", &cells)
        .flag("--classifier", "svm")
        .flag("--label", "Metadata_Concentration")
        .path("--out", &out)
        .run()
        .assert_failure(2, &["Metadata_Concentration"]);
    train(&[
        "classifier",
        "--cells",
        &arg(&cells),
        "--out",
        &arg(&out),
        "--model",
        "resnet18",
        "--test-fraction",
        "1.5",
    ])
    .assert_failure(2, &["--test-fraction"]);
}
