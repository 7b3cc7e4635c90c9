//! pf-aggregate and pf-classify: wells and treatments against pycytominer, NSC / NSCB against scikit-learn, the real BBBC021 layout, the plate map join; their errors.

use super::*;

pub(crate) fn aggregate<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-aggregate"), args)
}

/// pf-aggregate on one table of cells into `wells` and `treatments`, with `extra` flags.
fn aggregate_cells(input: &Path, wells: &Path, treatments: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "--input".to_string(),
        arg(input),
        "--wells".into(),
        arg(wells),
        "--treatments".into(),
        arg(treatments),
    ];
    args.extend(extra.iter().map(|flag| flag.to_string()));
    aggregate(&args)
}

/// The engine a wells table's provenance says aggregated its cells (`cell_engine`).
fn cell_engine(wells: &Path) -> serde_json::Value {
    let provenance = phenoflow_schemas::read_provenance(wells)
        .unwrap()
        .expect("provenance");
    provenance.params["cell_engine"].clone()
}

pub(crate) fn classify<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-classify"), args)
}

/// A synthetic single-cell profile table (see `tests/python/make_embeddings.py`).
pub(crate) fn embeddings(folder: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = folder.join(name);
    let mut args = vec![
        "--out".to_string(),
        arg(&path),
        "--cells".into(),
        "12000".into(),
        "--features".into(),
        "12".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run_python("make_embeddings.py", &args).assert_success();
    path
}

#[test]
fn wells_match_pycytominer_and_nsc_matches_scikit_learn() {
    let temp = tempfile::tempdir().unwrap();
    let cells = embeddings(temp.path(), "cells.parquet", &[]);
    let (wells, treatments) = (
        temp.path().join("wells.parquet"),
        temp.path().join("treatments.parquet"),
    );
    aggregate_cells(&cells, &wells, &treatments, &[]).assert_success();
    run_python(
        "check_profiles.py",
        &["wells", "--cells", &arg(&cells), "--wells", &arg(&wells)],
    )
    .assert_success();
    let (predictions, metrics) = (
        temp.path().join("predictions.parquet"),
        temp.path().join("metrics.parquet"),
    );
    let outcome = classify(&[
        "--treatments",
        &arg(&treatments),
        "--predictions",
        &arg(&predictions),
        "--metrics",
        &arg(&metrics),
    ]);
    outcome.assert_success();
    assert!(outcome.stdout.contains("NSC "), "{}", outcome.stdout);
    run_python(
        "check_profiles.py",
        &[
            "nsc",
            "--treatments",
            &arg(&treatments),
            "--metrics",
            &arg(&metrics),
        ],
    )
    .assert_success();
    // 6 MoAs x 3 compounds x 3 concentrations.
    let rows =
        phenoflow_schemas::read_table(&predictions, phenoflow_schemas::TableKind::Predictions)
            .unwrap();
    assert_eq!(
        rows.iter().map(|b| b.num_rows()).sum::<usize>(),
        54 * 2,
        "NSC and NSCB rows"
    );
    // The seed-compatible protocol keeps DMSO as a query and a candidate.
    let seed_metrics = temp.path().join("seed-metrics.parquet");
    let outcome = classify(&[
        "--treatments",
        &arg(&treatments),
        "--predictions",
        &arg(&temp.path().join("seed-predictions.parquet")),
        "--metrics",
        &arg(&seed_metrics),
        "--protocol",
        "seed-compatible",
        "--metric",
        "euclidean",
    ]);
    outcome.assert_success();
    assert!(
        outcome.stdout.contains("55 treatments, 7 MoAs"),
        "{}",
        outcome.stdout
    );
}

/// The default reader (Parquet cells straight into running sums, row groups in parallel) and
/// Polars' group-by both equal pycytominer on cells in random order over 12 small row groups, so
/// every well's cells are split across runs, batches and workers; the provenance names who
/// aggregated.
#[test]
fn both_cell_engines_equal_pycytominer_on_shuffled_cells() {
    let temp = tempfile::tempdir().unwrap();
    let cells = embeddings(
        temp.path(),
        "shuffled.parquet",
        &["--shuffle", "--row-group-size", "1000"],
    );
    // Keys written without a dictionary: the direct reader builds one per batch.
    let plain = embeddings(
        temp.path(),
        "shuffled-plain-keys.parquet",
        &["--shuffle", "--row-group-size", "1000", "--plain-keys"],
    );
    for (input, engine, recorded) in [
        (&cells, "auto", "arrow-rs"),
        (&plain, "auto", "arrow-rs"),
        (&cells, "polars", "polars"),
    ] {
        let name = input.file_stem().unwrap().to_string_lossy();
        let (wells, treatments) = (
            temp.path().join(format!("wells-{name}-{engine}.parquet")),
            temp.path()
                .join(format!("treatments-{name}-{engine}.parquet")),
        );
        aggregate_cells(input, &wells, &treatments, &["--engine", engine]).assert_success();
        run_python(
            "check_profiles.py",
            &["wells", "--cells", &arg(input), "--wells", &arg(&wells)],
        )
        .assert_success();
        assert_eq!(cell_engine(&wells), recorded, "--engine {engine} on {name}");
    }
    // Medians stay with Polars whatever --engine says.
    let wells = temp.path().join("wells-median.parquet");
    aggregate_cells(
        &cells,
        &wells,
        &temp.path().join("treatments-median.parquet"),
        &["--cell-aggregation", "median"],
    )
    .assert_success();
    assert_eq!(cell_engine(&wells), "polars");
}

#[test]
fn normalisations_equal_their_references_and_zscore_centres_each_plates_controls() {
    use arrow_array::{Array, Float64Array, StringArray};
    let temp = tempfile::tempdir().unwrap();
    let cells = embeddings(temp.path(), "cells.parquet", &[]);
    let wells_of = |name: &str, args: &[&str]| {
        let wells = temp.path().join(format!("wells-{name}.parquet"));
        let mut all = vec![
            "--input".to_string(),
            arg(&cells),
            "--wells".into(),
            arg(&wells),
            "--treatments".into(),
            arg(&temp.path().join(format!("treatments-{name}.parquet"))),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        aggregate(&all).assert_success();
        wells
    };
    // TVN (Ledoit-Wolf) against scikit-learn, CORAL after it against numpy + scipy.
    let raw = wells_of("none", &[]);
    let tvn = wells_of("tvn", &["--normalize", "tvn"]);
    let coral = wells_of("tvn-coral", &["--normalize", "tvn", "--coral"]);
    for (mode, before, after) in [("tvn", &raw, &tvn), ("coral", &tvn, &coral)] {
        let check = run_python(
            "check_profiles.py",
            &[mode, "--wells", &arg(before), "--normalized", &arg(after)],
        );
        check.assert_success();
        assert!(check.stdout.contains("OK: "), "{}", check.stdout);
    }
    for method in ["dmso-zscore", "mad-robustize"] {
        let wells = wells_of(method, &["--normalize", method]);
        if method != "dmso-zscore" {
            continue;
        }
        let batches =
            phenoflow_schemas::read_table(&wells, phenoflow_schemas::TableKind::Wells).unwrap();
        let batch = &batches[0];
        let plates = batch
            .column_by_name("Metadata_Plate")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let compounds = batch
            .column_by_name("Metadata_Compound")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let feature = batch
            .column_by_name("Cells_Synthetic_z000")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let mut sums: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
        for row in 0..batch.num_rows() {
            if compounds.value(row) == "DMSO" {
                let entry = sums.entry(plates.value(row)).or_default();
                entry.0 += feature.value(row);
                entry.1 += 1;
            }
        }
        assert!(sums.len() > 3);
        for (plate, (sum, n)) in sums {
            assert!(
                (sum / n as f64).abs() < 1e-9,
                "plate {plate}: DMSO mean {}",
                sum / n as f64
            );
        }
        assert!(!feature.is_empty());
    }
}

#[test]
fn cellprofiler_per_well_csv_with_a_moa_table() {
    let temp = tempfile::tempdir().unwrap();
    let (csv, moa) = (
        temp.path().join("per_well.csv"),
        temp.path().join("moa.csv"),
    );
    embeddings(
        temp.path(),
        "cells.parquet",
        &[
            "--cellprofiler-wells-csv",
            &arg(&csv),
            "--moa-csv",
            &arg(&moa),
        ],
    );
    let treatments = temp.path().join("treatments.parquet");
    let outcome = aggregate(&[
        "--level",
        "wells",
        "--input",
        &arg(&csv),
        "--plate-column",
        "Image_Metadata_Plate",
        "--well-column",
        "Image_Metadata_Well",
        "--compound-column",
        "Image_Metadata_Compound",
        "--concentration-column",
        "Image_Metadata_Concentration",
        "--moa-csv",
        &arg(&moa),
        "--wells",
        &arg(&temp.path().join("wells.parquet")),
        "--treatments",
        &arg(&treatments),
    ]);
    outcome.assert_success();
    assert!(
        outcome.stderr.contains("55 treatments"),
        "{}",
        outcome.stderr
    );
}

/// Every annotated well of the real BBBC021 image table (the taxol positive controls included)
/// as a per-well table with random features, aggregated and scored: the benchmark's 103
/// treatments in 12 MoAs (NSC) and 92 in 10 (NSCB), and 91 when the positive controls are kept.
#[test]
fn real_bbbc021_layout_gives_103_nsc_and_92_nscb_queries() {
    let temp = tempfile::tempdir().unwrap();
    let data = shared_data().join("bbbc021");
    let (image_csv, moa_csv) = (
        data.join("BBBC021_v1_image.csv"),
        data.join("BBBC021_v1_moa.csv"),
    );
    let per_well = temp.path().join("per_well.csv");
    run_python(
        "make_bbbc021_wells.py",
        &[
            "--image-csv",
            &arg(&image_csv),
            "--moa-csv",
            &arg(&moa_csv),
            "--out",
            &arg(&per_well),
        ],
    )
    .assert_success();
    let queries = |positive_controls: &str| {
        let (wells, treatments, metrics) = (
            temp.path()
                .join(format!("wells-{positive_controls}.parquet")),
            temp.path()
                .join(format!("treatments-{positive_controls}.parquet")),
            temp.path()
                .join(format!("metrics-{positive_controls}.parquet")),
        );
        let outcome = aggregate(&[
            "--level",
            "wells",
            "--input",
            &arg(&per_well),
            "--plate-column",
            "Image_Metadata_Plate_DAPI",
            "--well-column",
            "Image_Metadata_Well_DAPI",
            "--compound-column",
            "Image_Metadata_Compound",
            "--concentration-column",
            "Image_Metadata_Concentration",
            "--moa-csv",
            &arg(&moa_csv),
            "--positive-controls",
            positive_controls,
            "--wells",
            &arg(&wells),
            "--treatments",
            &arg(&treatments),
        ]);
        outcome.assert_success();
        assert!(
            outcome.stderr.contains("330 positive-control well(s) ")
                && outcome
                    .stderr
                    .contains("taxol @ 0.3 (B11, C11, D11, E02, F02, G02)"),
            "{}",
            outcome.stderr
        );
        classify(&[
            "--treatments",
            &arg(&treatments),
            "--predictions",
            &arg(&temp.path().join("predictions.parquet")),
            "--metrics",
            &arg(&metrics),
        ])
        .assert_success();
        let rows = run_python(
            "read_table.py",
            &[&arg(&metrics), "Protocol,Metric,Scope,Count"],
        );
        rows.assert_success();
        let count = |protocol: &str, what: &str| -> (usize, usize) {
            let lines: Vec<Vec<&str>> = rows
                .stdout
                .lines()
                .map(|line| line.split('\t').collect::<Vec<_>>())
                .filter(|fields| fields[0] == protocol)
                .collect();
            let queries = lines
                .iter()
                .find(|f| f[1] == "accuracy" && f[2] == "all")
                .map(|f| f[3].parse().unwrap())
                .unwrap_or(0);
            let moas = lines.iter().filter(|f| f[1] == what).count();
            (queries, moas)
        };
        (count("NSC", "recall"), count("NSCB", "recall"))
    };
    assert_eq!(queries("drop"), ((103, 12), (92, 10)));
    assert_eq!(queries("keep"), ((103, 12), (91, 10)));
}

#[test]
fn per_well_keys_are_annotated_from_the_real_image_table() {
    let temp = tempfile::tempdir().unwrap();
    let data = shared_data().join("bbbc021");
    let (image_csv, moa_csv) = (
        data.join("BBBC021_v1_image.csv"),
        data.join("BBBC021_v1_moa.csv"),
    );
    // The same wells and features twice: once with the treatment columns, once with plate and
    // well only, as a CellProfiler per-well export keyed by Image.csv's metadata holds them.
    let (joined, keys) = (
        temp.path().join("per_well.csv"),
        temp.path().join("per_well_keys.csv"),
    );
    for (out, extra) in [(&joined, None), (&keys, Some("--keys-only"))] {
        let mut args = vec![
            "--image-csv".to_string(),
            arg(&image_csv),
            "--moa-csv".to_string(),
            arg(&moa_csv),
            "--out".to_string(),
            arg(out),
        ];
        args.extend(extra.map(String::from));
        run_python("make_bbbc021_wells.py", &args).assert_success();
    }
    let header = std::fs::read_to_string(&keys).unwrap();
    assert!(
        header.starts_with("Image_Metadata_Plate_DAPI,Image_Metadata_Well_DAPI,Cells_Feature_0"),
        "{}",
        &header[..80]
    );
    let keyed = [
        "--level",
        "wells",
        "--plate-column",
        "Image_Metadata_Plate_DAPI",
        "--well-column",
        "Image_Metadata_Well_DAPI",
        "--moa-csv",
    ];
    let score = |name: &str, extra: &[String]| {
        let treatments = temp.path().join(format!("treatments-{name}.parquet"));
        let metrics = temp.path().join(format!("metrics-{name}.parquet"));
        let mut args: Vec<String> = keyed.iter().map(|a| a.to_string()).collect();
        args.push(arg(&moa_csv));
        args.extend(extra.iter().cloned());
        args.extend([
            "--wells".into(),
            arg(&temp.path().join(format!("wells-{name}.parquet"))),
            "--treatments".into(),
            arg(&treatments),
        ]);
        let outcome = aggregate(&args);
        outcome.assert_success();
        classify(&[
            "--treatments",
            &arg(&treatments),
            "--predictions",
            &arg(&temp.path().join(format!("predictions-{name}.parquet"))),
            "--metrics",
            &arg(&metrics),
        ])
        .assert_success();
        (outcome, treatments, metrics)
    };
    let (_, by_hand, by_hand_metrics) = score(
        "joined",
        &[
            "--input".into(),
            arg(&joined),
            "--compound-column".into(),
            "Image_Metadata_Compound".into(),
            "--concentration-column".into(),
            "Image_Metadata_Concentration".into(),
        ],
    );
    // The image table has one row per field (four per well): the annotate step takes the well's
    // one treatment, finding the image table's columns by their BBBC021 names.
    let (annotated_run, annotated, annotated_metrics) = score(
        "annotated",
        &[
            "--input".into(),
            arg(&keys),
            "--platemap".into(),
            arg(&image_csv),
        ],
    );
    assert!(
        annotated_run.stderr.contains(
            "Image_Metadata_Plate_DAPI → Image_Metadata_Plate_DAPI, Image_Metadata_Well_DAPI → Image_Metadata_Well_DAPI, \
             Image_Metadata_Compound → Metadata_Compound, Image_Metadata_Concentration → Metadata_Concentration"
        ),
        "{}",
        annotated_run.stderr
    );
    let table = |path: &Path| {
        phenoflow_schemas::read_table(path, phenoflow_schemas::TableKind::Treatments)
            .unwrap()
            .iter()
            .map(|batch| batch.columns().to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        table(&annotated),
        table(&by_hand),
        "the same treatment profiles"
    );
    let metrics = phenoflow_schemas::metrics::read_metrics(&annotated_metrics).unwrap();
    assert_eq!(
        metrics,
        phenoflow_schemas::metrics::read_metrics(&by_hand_metrics).unwrap()
    );
    let accuracy = |protocol: &str| {
        metrics
            .iter()
            .find(|row| row.0 == "accuracy" && row.1 == protocol && row.2 == "all")
            .and_then(|row| row.4)
    };
    assert_eq!((accuracy("NSC"), accuracy("NSCB")), (Some(103), Some(92)));
}

#[test]
fn aggregate_and_classify_reject_bad_input_clearly() {
    let temp = tempfile::tempdir().unwrap();
    let out = |name: &str| arg(&temp.path().join(name));
    let run_aggregate = |input: &Path, extra: &[&str]| {
        let mut args = vec![
            "--input".to_string(),
            arg(input),
            "--wells".into(),
            out("wells.parquet"),
            "--treatments".into(),
            out("treatments.parquet"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        aggregate(&args)
    };
    // No MoA column, and no MoA table to join one from.
    let no_moa = embeddings(
        temp.path(),
        "no-moa.parquet",
        &["--drop-column", "Metadata_MoA"],
    );
    run_aggregate(&no_moa, &[]).assert_failure(2, &["no MoA column", "--moa-csv"]);
    // A NaN feature names the well and the feature.
    let nan = embeddings(temp.path(), "nan.parquet", &["--nan-at", "7"]);
    run_aggregate(&nan, &[])
        .assert_failure(2, &["well Week1_1000/B02", "`Cells_Synthetic_z000` is NaN"]);
    // A batch column that does not exist.
    let good = embeddings(temp.path(), "good.parquet", &[]);
    run_aggregate(&good, &["--batch-column", "Metadata_Week"])
        .assert_failure(2, &["no column `Metadata_Week`"]);
    // A treatment of the MoA table with no wells.
    let moa = temp.path().join("moa.csv");
    std::fs::write(
        &moa,
        "compound,concentration,moa\rDMSO,0,DMSO\rghost,1,MoA 9",
    )
    .unwrap();
    run_aggregate(&good, &["--moa-csv", &arg(&moa)])
        .assert_failure(2, &["have no wells", "(ghost, 1)"]);
    assert!(
        !temp.path().join("wells.parquet").exists(),
        "nothing written on error"
    );
    // pf-classify: a batch column that does not exist, and a table that is not a treatments table.
    run_aggregate(&good, &[]).assert_success();
    classify(&[
        "--treatments",
        &out("treatments.parquet"),
        "--predictions",
        &out("p.parquet"),
        "--metrics",
        &out("m.parquet"),
        "--batch-column",
        "Metadata_Week",
    ])
    .assert_failure(2, &["batch column `Metadata_Week` does not exist"]);
    classify(&[
        "--treatments",
        &out("wells.parquet"),
        "--predictions",
        &out("p.parquet"),
        "--metrics",
        &out("m.parquet"),
    ])
    .assert_failure(2, &["wells.parquet", "expected `treatments`"]);
    assert!(!temp.path().join("p.parquet").exists());
}

// ---------------------------------------------------------------------------------------------
// pf-train
