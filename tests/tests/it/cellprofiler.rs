//! pf-cellprofiler: CellProfiler SQLite, CSV and CytoTable inputs against pycytominer, and the classical pipeline end to end.

use super::*;

pub(crate) fn cellprofiler_data() -> (PathBuf, PathBuf) {
    let data = shared_data().join("cellprofiler");
    (
        data.join("nf1_schwann/all_cellprofiler.sqlite"),
        data.join("cpg0043_BR00116991_A01_1"),
    )
}

#[test]
fn cellprofiler_sqlite_csv_and_cytotable_merge_as_pycytominer_does() {
    let temp = tempfile::tempdir().unwrap();
    let path = |name: &str| temp.path().join(name);
    let (backend, csv_dir) = cellprofiler_data();
    let merge = |args: &[String]| run(&stage("pf-cellprofiler"), args);

    // The SQLite backend: the merged cells equal pycytominer's SingleCells.merge_single_cells.
    let sqlite = merge(&[
        "--sqlite".into(),
        arg(&backend),
        "--output".into(),
        arg(&path("sqlite.parquet")),
    ]);
    sqlite.assert_success();
    assert!(
        sqlite.stderr.contains("242 cells from 32 images")
            && sqlite
                .stderr
                .contains("191 nuclei no cytoplasm names left out"),
        "{}",
        sqlite.stderr
    );
    let provenance = phenoflow_schemas::read_provenance(&path("sqlite.parquet"))
        .unwrap()
        .expect("provenance");
    assert_eq!(provenance.table, phenoflow_schemas::TableKind::SingleCells);
    assert_eq!(
        provenance.extra.get("cells").map(String::as_str),
        Some("242")
    );
    run_python(
        "check_cellprofiler.py",
        &["sqlite".into(), arg(&path("sqlite.parquet")), arg(&backend)],
    )
    .assert_success();

    // Per-well medians through pf-aggregate equal pycytominer's aggregate of its merged cells,
    // and aggregate_profiles' Cells and Cytoplasm compartments.
    run_python(
        "check_cellprofiler.py",
        &[
            "platemap".into(),
            arg(&path("sqlite.parquet")),
            arg(&path("platemap.csv")),
            arg(&path("moa.csv")),
        ],
    )
    .assert_success();
    let aggregate = |input: &Path, wells: &str, extra: &[&str]| {
        let mut args = vec![
            "--input".to_string(),
            arg(input),
            "--cell-aggregation".into(),
            "median".into(),
            "--platemap".into(),
            arg(&path("platemap.csv")),
            "--moa-csv".into(),
            arg(&path("moa.csv")),
            "--wells".into(),
            arg(&path(wells)),
            "--treatments".into(),
            arg(&path(&format!("treatments-{wells}"))),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(&stage("pf-aggregate"), &args)
    };
    aggregate(&path("sqlite.parquet"), "wells.parquet", &[]).assert_success();
    // The backend's plate is `001`: as a CSV input too it stays `001` and meets the plate map's.
    run_python(
        "check_cellprofiler.py",
        &[
            "to-csv".into(),
            arg(&path("sqlite.parquet")),
            arg(&path("cells.csv")),
        ],
    )
    .assert_success();
    aggregate(&path("cells.csv"), "csv-wells.parquet", &[]).assert_success();
    for wells in ["wells.parquet", "csv-wells.parquet"] {
        run_python(
            "check_cellprofiler.py",
            &["plates".into(), arg(&path(wells)), "001".into()],
        )
        .assert_success();
    }
    run_python(
        "check_cellprofiler.py",
        &["wells".into(), arg(&path("wells.parquet")), arg(&backend)],
    )
    .assert_success();

    // Feature selection keeps what pycytominer's feature_select keeps, with missing values in
    // the cells (over and under the cutoff) and a blocklist file.
    run_python(
        "check_cellprofiler.py",
        &[
            "inject-missing".into(),
            arg(&path("sqlite.parquet")),
            arg(&path("missing.parquet")),
            arg(&path("blocklist.txt")),
        ],
    )
    .assert_success();
    let blocklist = arg(&path("blocklist.txt"));
    // Without drop-na-columns a missing measurement is an error that names it.
    aggregate(&path("missing.parquet"), "strict.parquet", &[])
        .assert_failure(2, &["missing value", "--feature-select drop-na-columns"]);
    let selected = aggregate(
        &path("missing.parquet"),
        "selected.parquet",
        &[
            "--feature-select",
            "blocklist,variance-threshold,correlation-threshold,drop-na-columns",
            "--blocklist",
            &blocklist,
        ],
    );
    selected.assert_success();
    assert!(
        selected.stderr.contains("drop_na_columns dropped 12"),
        "{}",
        selected.stderr
    );
    run_python(
        "check_cellprofiler.py",
        &[
            "select".into(),
            arg(&path("selected.parquet")),
            arg(&path("missing.parquet")),
            blocklist.clone(),
        ],
    )
    .assert_success();

    // The CSV export: 109 cells with Cells_/Cytoplasm_/Nuclei_ columns, equal to a pandas merge.
    let csv = merge(&[
        "--csv-dir".into(),
        arg(&csv_dir),
        "--output".into(),
        arg(&path("csv.parquet")),
    ]);
    csv.assert_success();
    assert!(
        csv.stderr.contains("109 cells from 1 images"),
        "{}",
        csv.stderr
    );
    run_python(
        "check_cellprofiler.py",
        &["csv".into(), arg(&path("csv.parquet")), arg(&csv_dir)],
    )
    .assert_success();

    // CytoTable's naming of the same backend gives the same table.
    run_python(
        "check_cellprofiler.py",
        &[
            "make-cytotable".into(),
            arg(&backend),
            arg(&path("cytotable-in.parquet")),
        ],
    )
    .assert_success();
    merge(&[
        "--cytotable".into(),
        arg(&path("cytotable-in.parquet")),
        "--output".into(),
        arg(&path("cytotable.parquet")),
    ])
    .assert_success();
    run_python(
        "check_cellprofiler.py",
        &[
            "same".into(),
            arg(&path("sqlite.parquet")),
            arg(&path("cytotable.parquet")),
        ],
    )
    .assert_success();
}

#[test]
fn the_cellprofiler_pipeline_runs_from_a_backend_to_a_report_that_compares_runs() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    let (backend, _) = cellprofiler_data();
    // A three-plate screen scaled from the real backend, with its plate map and MoA table.
    run_python(
        "make_cp_screen.py",
        &[
            arg(&backend),
            arg(&folder.join("screen")),
            "--plates".into(),
            "3".into(),
        ],
    )
    .assert_success();
    std::fs::create_dir_all(folder.join("pipelines")).unwrap();
    std::fs::copy(
        root().join("pipelines/cellprofiler.toml"),
        folder.join("pipelines/cellprofiler.toml"),
    )
    .unwrap();
    let outcome = pf_run(
        folder,
        &[
            "run",
            "pipelines/cellprofiler.toml",
            "--set",
            "backend=screen/screen.sqlite",
            "--set",
            "platemap=screen/platemap.csv",
            "--set",
            "moa=screen/moa.csv",
        ],
    );
    outcome.assert_success();
    assert!(
        outcome.stderr.contains("726 cells from 96 images")
            && outcome.stderr.contains("feature selection kept"),
        "{}",
        outcome.stderr
    );
    let out = folder.join("out/cellprofiler");
    let metrics = phenoflow_schemas::metrics::read_metrics(&out.join("metrics.parquet")).unwrap();
    let accuracy = |protocol: &str| {
        metrics
            .iter()
            .find(|row| row.0 == "accuracy" && row.1 == protocol && row.2 == "all")
            .map(|row| (row.3, row.4))
            .unwrap()
    };
    // Six treatments of three MoAs, each MoA's two compounds on alternate plates.
    assert_eq!(accuracy("NSC").1, Some(6));
    assert_eq!(accuracy("NSCB").1, Some(6));
    let report = std::fs::read_to_string(out.join("report/report.html")).unwrap();
    assert!(
        report.contains("Confusion matrix, NSCB") && report.contains("Treatment profiles, PCA"),
        "a report without a model card still shows the run's confusion matrices and map"
    );

    // The same screen without feature selection, beside the selected run in one report.
    let plain = |name: &str| arg(&out.join(name));
    let moa = arg(&folder.join("screen/moa.csv"));
    // Median wells of `input` with `platemap` into `<prefix>-wells.parquet` and
    // `<prefix>-treatments.parquet`.
    let median = |input: &str, platemap: &str, prefix: &str, extra: &[&str]| {
        let mut args = vec![
            "--input".to_string(),
            plain(input),
            "--cell-aggregation".into(),
            "median".into(),
            "--platemap".into(),
            platemap.to_string(),
            "--moa-csv".into(),
            moa.clone(),
            "--wells".into(),
            plain(&format!("{prefix}-wells.parquet")),
            "--treatments".into(),
            plain(&format!("{prefix}-treatments.parquet")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(&stage("pf-aggregate"), &args)
    };
    let screen_platemap = arg(&folder.join("screen/platemap.csv"));
    let robustize = ["--normalize", "mad-robustize"];
    median(
        "single_cells.parquet",
        &screen_platemap,
        "plain",
        &robustize,
    )
    .assert_success();
    // The median in passes of whole plates (one plate a pass here) gives the same bytes.
    let passes = median(
        "single_cells.parquet",
        &screen_platemap,
        "passes",
        &["--normalize", "mad-robustize", "--median-pass-mib", "1"],
    );
    passes.assert_success();
    assert!(
        passes.stderr.contains("3 plates aggregated in 3 passes"),
        "{}",
        passes.stderr
    );
    for (a, b) in [
        ("plain-wells.parquet", "passes-wells.parquet"),
        ("plain-treatments.parquet", "passes-treatments.parquet"),
    ] {
        assert_eq!(
            std::fs::read(out.join(a)).unwrap(),
            std::fs::read(out.join(b)).unwrap(),
            "{a} and {b} differ"
        );
    }
    // Plates numbered 2, 10, 1, 3 (text order is not number order) through the plate map: the
    // passes still give the one pass's bytes.
    run_python(
        "check_cellprofiler.py",
        &[
            "integer-plates".into(),
            plain("single_cells.parquet"),
            screen_platemap.clone(),
            plain("numbered.parquet"),
            plain("numbered-platemap.csv"),
        ],
    )
    .assert_success();
    for (passes, prefix) in [("1", "numbered-passes"), ("256", "numbered-one")] {
        median(
            "numbered.parquet",
            &plain("numbered-platemap.csv"),
            prefix,
            &["--median-pass-mib", passes],
        )
        .assert_success();
    }
    assert_eq!(
        std::fs::read(out.join("numbered-passes-wells.parquet")).unwrap(),
        std::fs::read(out.join("numbered-one-wells.parquet")).unwrap(),
        "numbered plates: the passes' wells differ from one pass's"
    );
    Call::stage("pf-classify")
        .flag("--treatments", plain("plain-treatments.parquet"))
        .flag("--predictions", plain("plain-predictions.parquet"))
        .flag("--metrics", plain("plain-metrics.parquet"))
        .run()
        .assert_success();
    Call::stage("pf-report")
        .flag("--metrics", plain("metrics.parquet"))
        .flag("--metrics-label", "CellProfiler features, selected")
        .flag(
            "--compare-metrics",
            format!(
                "CellProfiler features, all={}",
                plain("plain-metrics.parquet")
            ),
        )
        .flag("--output", plain("compared"))
        .run()
        .assert_success();
    let page = std::fs::read_to_string(out.join("compared/report.html")).unwrap();
    for fragment in [
        "Profiles compared",
        "CellProfiler features, selected",
        "CellProfiler features, all",
        "Per MoA",
    ] {
        assert!(page.contains(fragment), "the report lacks `{fragment}`");
    }
    // A malformed comparison is a usage error.
    Call::stage("pf-report")
        .flag("--metrics", plain("metrics.parquet"))
        .flag("--compare-metrics", "no-label-here")
        .flag("--output", plain("bad"))
        .run()
        .assert_failure(2, &["LABEL=PATH"]);
}
