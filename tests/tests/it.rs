//! End-to-end tests: the release stage binaries on real data (`../shared/data`) and on small
//! generated fields, checked against independent Python computations (numpy, tifffile,
//! scikit-image, pyarrow, pandas) from the project's venv.

use std::path::{Path, PathBuf};

use phenoflow_e2e::{
    arg, pf_run, python, root, run, run_in, run_python, shared_data, stage, temp_files, Outcome,
};

fn preprocess<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-preprocess"), args)
}

/// ExampleHuman's three channels as a BBBC021-style image table (DAPI = DNA, Tubulin = PH3,
/// Actin = cell body), so that the raw-layout code path reads real pixels.
fn examplehuman_table(folder: &Path) -> PathBuf {
    let path = folder.join("images.csv");
    std::fs::write(
        &path,
        "TableNumber,ImageNumber,Image_FileName_DAPI,Image_PathName_DAPI,Image_FileName_Tubulin,Image_PathName_Tubulin,\
         Image_FileName_Actin,Image_PathName_Actin,Image_Metadata_Plate_DAPI,Image_Metadata_Well_DAPI,Replicate,\
         Image_Metadata_Compound,Image_Metadata_Concentration\n\
         1,1,AS_09125_050116030001_D03f00d0.tif,.,AS_09125_050116030001_D03f00d1.tif,.,\
         AS_09125_050116030001_D03f00d2.tif,.,AS_09125_0501160300,D03,1,none,0\n",
    )
    .unwrap();
    path
}

/// Nucleus parameters for ExampleHuman's 512×512 field (nuclei ~10–15 px across).
const EXAMPLEHUMAN_NUCLEI: [&str; 10] = [
    "--background-block",
    "32",
    "--min-area",
    "30",
    "--declump-sigma",
    "2.5",
    "--min-distance",
    "5",
    "--smoothing-sigma",
    "1",
];

/// A few small generated fields in the BBBC021 layout (see `tests/python/make_fields.py`).
fn generated_fields(folder: &Path, n_fields: usize) -> (PathBuf, PathBuf) {
    run_python(
        "make_fields.py",
        &[
            "--out",
            &arg(folder),
            "--n-fields",
            &n_fields.to_string(),
            "--height",
            "300",
            "--width",
            "360",
            "--seed",
            "11",
        ],
    )
    .assert_success();
    (
        folder.join("BBBC021_v1_image.csv"),
        folder.join("BBBC021_v1_moa.csv"),
    )
}

fn bbbc021_args(image_csv: &Path, moa_csv: &Path, output: &Path) -> Vec<String> {
    vec![
        "bbbc021".into(),
        "--image-csv".into(),
        arg(image_csv),
        "--moa-csv".into(),
        arg(moa_csv),
        "--output".into(),
        arg(output),
        "--no-progress".into(),
    ]
}

#[test]
fn singlecell_tiny_pixels_equal_numpy_and_dtypes_are_documented() {
    let temp = tempfile::tempdir().unwrap();
    let output = temp.path().join("cells.parquet");
    let root = shared_data().join("bbbc021/singlecell_tiny");
    preprocess(&[
        "singlecell",
        "--root",
        &arg(&root),
        "--output",
        &arg(&output),
        "--no-progress",
    ])
    .assert_success();
    let check = run_python(
        "check_cells.py",
        &["npy", "--cells", &arg(&output), "--root", &arg(&root)],
    );
    check.assert_success();
    assert!(check.stdout.contains("OK: 259 cells"), "{}", check.stdout);
}

#[test]
fn examplehuman_tiffs_decode_like_tifffile() {
    // d0 and d1 are 8-bit PackBits, d2 is uncompressed: whole-field mode at the native size
    // stores every pixel unchanged.
    let temp = tempfile::tempdir().unwrap();
    let table = examplehuman_table(temp.path());
    let output = temp.path().join("whole.parquet");
    let data = shared_data().join("examplehuman");
    preprocess(&[
        "whole",
        "--image-csv",
        &arg(&table),
        "--images-root",
        &arg(&data),
        "--channels",
        "DAPI,Tubulin,Actin",
        "--size",
        "512",
        "--output",
        &arg(&output),
        "--no-progress",
    ])
    .assert_success();
    let tiffs = ["d0", "d1", "d2"]
        .map(|suffix| arg(&data.join(format!("AS_09125_050116030001_D03f00{suffix}.tif"))))
        .join(",");
    run_python(
        "check_cells.py",
        &["tiff", "--cells", &arg(&output), "--tiffs", &tiffs],
    )
    .assert_success();
}

#[test]
fn examplehuman_nuclei_are_plausible_and_match_the_scikit_image_reference() {
    let temp = tempfile::tempdir().unwrap();
    let table = examplehuman_table(temp.path());
    let data = shared_data();
    let ours = temp.path().join("ours.parquet");
    let reference = temp.path().join("reference.parquet");
    let mut args = vec![
        "bbbc021".to_string(),
        "--image-csv".into(),
        arg(&table),
        "--images-root".into(),
        arg(&data.join("examplehuman")),
        "--moa-csv".into(),
        arg(&data.join("bbbc021/BBBC021_v1_moa.csv")),
        "--unannotated".into(),
        "keep".into(),
        "--crop-size".into(),
        "32".into(),
        "--output".into(),
        arg(&ours),
        "--no-progress".into(),
    ];
    args.extend(EXAMPLEHUMAN_NUCLEI.map(String::from));
    let outcome = preprocess(&args);
    outcome.assert_success();
    // "wrote N cells ... K cells skipped at the edge": detected nuclei = N + K.
    let numbers: Vec<usize> = outcome
        .stderr
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    let (n_written, n_edge) = (numbers[0], numbers[numbers.len() - 1]);
    assert!(
        (150..=600).contains(&(n_written + n_edge)),
        "implausible nucleus count {} in ExampleHuman d0: {}",
        n_written + n_edge,
        outcome.stderr
    );
    let mut reference_args = vec![
        "--image-csv".to_string(),
        arg(&table),
        "--images-root".into(),
        arg(&data.join("examplehuman")),
        "--crop-size".into(),
        "32".into(),
        "--output".into(),
        arg(&reference),
    ];
    reference_args.extend(EXAMPLEHUMAN_NUCLEI.map(String::from));
    run_python("ref_preprocess.py", &reference_args).assert_success();
    run_python(
        "check_cells.py",
        &[
            "crops",
            "--cells",
            &arg(&ours),
            "--reference",
            &arg(&reference),
            "--min-equal",
            "0.98",
        ],
    )
    .assert_success();
}

#[test]
fn generated_fields_crop_like_the_reference_and_deterministically() {
    let temp = tempfile::tempdir().unwrap();
    let (image_csv, moa_csv) = generated_fields(&temp.path().join("screen"), 6);
    let ours = temp.path().join("ours.parquet");
    let again = temp.path().join("again.parquet");
    let manifest = temp.path().join("manifest.parquet");
    let mut args = bbbc021_args(&image_csv, &moa_csv, &ours);
    args.extend(["--manifest".into(), arg(&manifest)]);
    preprocess(&args).assert_success();
    preprocess(&bbbc021_args(&image_csv, &moa_csv, &again)).assert_success();
    let reference = temp.path().join("reference.parquet");
    run_python(
        "ref_preprocess.py",
        &[
            "--image-csv",
            &arg(&image_csv),
            "--images-root",
            &arg(&temp.path().join("screen")),
            "--output",
            &arg(&reference),
        ],
    )
    .assert_success();
    // Same cells; crops identical but for the few whose centroid moved by a boundary pixel
    // (float rounding differs between the two implementations where the watershed has ties).
    run_python(
        "check_cells.py",
        &[
            "crops",
            "--cells",
            &arg(&ours),
            "--reference",
            &arg(&reference),
            "--min-equal",
            "0.97",
        ],
    )
    .assert_success();
    run_python(
        "check_cells.py",
        &[
            "crops",
            "--cells",
            &arg(&ours),
            "--reference",
            &arg(&again),
            "--min-equal",
            "1.0",
        ],
    )
    .assert_success();
    let batches =
        phenoflow_schemas::read_table(&manifest, phenoflow_schemas::TableKind::ImageManifest)
            .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
}

#[test]
fn plate_filter_selects_one_plate_and_unknown_plate_is_an_error() {
    let temp = tempfile::tempdir().unwrap();
    let (image_csv, moa_csv) = generated_fields(&temp.path().join("screen"), 2);
    let output = temp.path().join("cells.parquet");
    let mut args = bbbc021_args(&image_csv, &moa_csv, &output);
    args.extend(["--plate".into(), "Week1_00001".into()]);
    preprocess(&args).assert_success();
    let mut args = bbbc021_args(&image_csv, &moa_csv, &temp.path().join("none.parquet"));
    args.extend(["--plate".into(), "Week9_99999".into()]);
    preprocess(&args).assert_failure(2, &["--plate Week9_99999", "BBBC021_v1_image.csv"]);
}

/// Asserts that no output (and no half-written temporary file) was left in `folder`.
fn assert_nothing_written(output: &Path) {
    assert!(!output.exists(), "{} was written", output.display());
    let leftovers = temp_files(output.parent().unwrap());
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn truncated_tiff_names_the_file_and_leaves_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let (image_csv, moa_csv) = generated_fields(&temp.path().join("screen"), 3);
    let victim = std::fs::read_dir(temp.path().join("screen/Week1/Week1_00001"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().contains("_s2_w1"))
        .unwrap();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 3]).unwrap();
    let output = temp.path().join("out/cells.parquet");
    preprocess(&bbbc021_args(&image_csv, &moa_csv, &output)).assert_failure(
        2,
        &[
            &victim.file_name().unwrap().to_string_lossy(),
            "line 3",
            "not a readable TIFF",
        ],
    );
    assert_nothing_written(&output);

    // With --skip-bad the field is skipped, counted on stderr and in the metadata.
    let mut args = bbbc021_args(&image_csv, &moa_csv, &output);
    args.push("--skip-bad".into());
    let outcome = preprocess(&args);
    outcome.assert_success();
    assert!(
        outcome.stderr.contains("1 items skipped as bad"),
        "{}",
        outcome.stderr
    );
    let reader = phenoflow_schemas::ParquetTableReader::open(
        &output,
        phenoflow_schemas::TableKind::Cells,
        1024,
        None,
    )
    .unwrap();
    assert_eq!(reader.key_values()["phenoflow.n_skipped"], "1");
}

#[test]
fn channels_of_different_sizes_are_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let (image_csv, moa_csv) = generated_fields(&temp.path().join("screen"), 1);
    let (other_csv, _) = {
        let folder = temp.path().join("other");
        run_python(
            "make_fields.py",
            &[
                "--out",
                &arg(&folder),
                "--n-fields",
                "1",
                "--height",
                "100",
                "--width",
                "120",
            ],
        )
        .assert_success();
        (folder.join("BBBC021_v1_image.csv"), ())
    };
    // Put the small field's actin image in place of the large field's.
    let find = |folder: &Path, tag: &str| {
        std::fs::read_dir(folder.join("Week1/Week1_00001"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.to_string_lossy().contains(tag))
            .unwrap()
    };
    let large = find(&temp.path().join("screen"), "_w4");
    std::fs::copy(find(other_csv.parent().unwrap(), "_w4"), &large).unwrap();
    let output = temp.path().join("cells.parquet");
    preprocess(&bbbc021_args(&image_csv, &moa_csv, &output))
        .assert_failure(2, &["differ in size", "is 120x100", "is 360x300", "line 2"]);
    assert_nothing_written(&output);
}

#[test]
fn bad_tables_are_named_with_line_and_column() {
    let temp = tempfile::tempdir().unwrap();
    let (image_csv, moa_csv) = generated_fields(&temp.path().join("screen"), 2);
    let output = temp.path().join("cells.parquet");
    let original = std::fs::read_to_string(&image_csv).unwrap();

    // A required column is missing.
    std::fs::write(
        &image_csv,
        original.replace("Image_Metadata_Well_DAPI", "Well"),
    )
    .unwrap();
    preprocess(&bbbc021_args(&image_csv, &moa_csv, &output)).assert_failure(
        2,
        &[
            "BBBC021_v1_image.csv",
            "missing required column `Image_Metadata_Well_DAPI`",
        ],
    );

    // An empty value in a field's row.
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    lines[2] = lines[2].replacen(",Week1_00001,", ",,", 1);
    std::fs::write(&image_csv, lines.join("\n")).unwrap();
    preprocess(&bbbc021_args(&image_csv, &moa_csv, &output)).assert_failure(
        2,
        &["line 3", "column `Image_Metadata_Plate_DAPI`: empty value"],
    );

    // A treatment with no MoA row, under --unannotated error.
    std::fs::write(
        &image_csv,
        original.replace(",DMSO,0.000000", ",mystery,0.500000"),
    )
    .unwrap();
    let mut args = bbbc021_args(&image_csv, &moa_csv, &output);
    args.extend(["--unannotated".into(), "error".into()]);
    preprocess(&args).assert_failure(2, &["line 2", "(mystery, 0.5) has no row in the MoA table"]);

    // A concentration that is not a number.
    std::fs::write(&image_csv, original.replace(",DMSO,0.000000", ",DMSO,zero")).unwrap();
    preprocess(&bbbc021_args(&image_csv, &moa_csv, &output)).assert_failure(
        2,
        &["column `Image_Metadata_Concentration`: `zero` is not a finite number"],
    );
    assert_nothing_written(&output);
}

#[test]
fn fields_without_nuclei_give_a_clear_error_not_an_empty_table() {
    let temp = tempfile::tempdir().unwrap();
    let (image_csv, moa_csv) = generated_fields(&temp.path().join("screen"), 1);
    let output = temp.path().join("cells.parquet");
    let mut args = bbbc021_args(&image_csv, &moa_csv, &output);
    args.extend(["--min-area".into(), "1000000".into()]);
    preprocess(&args).assert_failure(2, &["no cells were produced from 1 input item(s)"]);
    assert_nothing_written(&output);
}

#[test]
fn bad_npy_files_are_named() {
    let temp = tempfile::tempdir().unwrap();
    let source = shared_data().join("bbbc021/singlecell_tiny");
    let root = temp.path().join("tiny");
    let images = root.join("singh_cp_pipeline_singlecell_images");
    let field = "B02_s1_w1B1A7ADEA-8896-4C7D-8C63-663265374B72";
    std::fs::create_dir_all(images.join(field)).unwrap();
    std::fs::copy(source.join("metadata.csv"), root.join("metadata.csv")).unwrap();
    for entry in std::fs::read_dir(
        source
            .join("singh_cp_pipeline_singlecell_images")
            .join(field),
    )
    .unwrap()
    {
        let path = entry.unwrap().path();
        std::fs::copy(&path, images.join(field).join(path.file_name().unwrap())).unwrap();
    }
    let output = temp.path().join("cells.parquet");
    let run_tiny = || {
        preprocess(&[
            "singlecell",
            "--root",
            &arg(&root),
            "--output",
            &arg(&output),
            "--no-progress",
        ])
    };
    // Wrong dtype: float32 data under a `<f4` header.
    let victim = images.join(field).join(format!("{field}_5.npy"));
    let original = std::fs::read(&victim).unwrap();
    let replace_in_header = |from: &[u8], to: &[u8]| -> Vec<u8> {
        assert_eq!(from.len(), to.len(), "the header keeps its length");
        let at = original
            .windows(from.len())
            .position(|w| w == from)
            .unwrap();
        let mut bytes = original.clone();
        bytes[at..at + to.len()].copy_from_slice(to);
        bytes
    };
    std::fs::write(&victim, replace_in_header(b"<u2", b"<f4")).unwrap();
    run_tiny().assert_failure(2, &[&format!("{field}_5.npy"), "dtype `<f4`"]);
    assert_nothing_written(&output);
    // Wrong shape: (68, 68, 3) declared as (34, 136, 3).
    std::fs::write(&victim, replace_in_header(b"(68, 68, 3)", b"(34,136, 3)")).unwrap();
    run_tiny().assert_failure(
        2,
        &[
            &format!("{field}_5.npy"),
            "shape [34, 136, 3], expected [68, 68, 3]",
        ],
    );
    // Missing file.
    std::fs::remove_file(&victim).unwrap();
    run_tiny().assert_failure(2, &[&format!("{field}_5.npy")]);
    assert_nothing_written(&output);
}

fn synth<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-synth"), args)
}

/// Every file under `folder` (relative path → bytes), sorted.
fn folder_contents(folder: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(folder).unwrap().to_path_buf();
                files.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn synthetic_screen_has_the_published_layout_and_preprocesses_unchanged() {
    let temp = tempfile::tempdir().unwrap();
    let screen = temp.path().join("screen");
    synth(&[
        "--preset",
        "tiny",
        "--seed",
        "3",
        "--output",
        &arg(&screen),
        "--no-progress",
    ])
    .assert_success();
    let real = shared_data().join("bbbc021");
    let first_line = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap()
            .split(['\n', '\r'])
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        first_line(&screen.join("BBBC021_v1_image.csv")),
        first_line(&real.join("BBBC021_v1_image.csv")),
        "the image table's header is the published one"
    );
    assert_eq!(
        std::fs::read(screen.join("BBBC021_v1_moa.csv")).unwrap(),
        std::fs::read(real.join("BBBC021_v1_moa.csv")).unwrap(),
        "the MoA table is the published one"
    );
    assert!(screen.join("Week1").is_dir());
    let cells = temp.path().join("cells.parquet");
    let outcome = preprocess(&bbbc021_args(
        &screen.join("BBBC021_v1_image.csv"),
        &screen.join("BBBC021_v1_moa.csv"),
        &cells,
    ));
    outcome.assert_success();
    let batches =
        phenoflow_schemas::read_table(&cells, phenoflow_schemas::TableKind::Cells).unwrap();
    let n_cells: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert!(n_cells > 50, "only {n_cells} cells: {}", outcome.stderr);
}

#[test]
fn same_seed_gives_identical_files_and_another_seed_does_not() {
    let temp = tempfile::tempdir().unwrap();
    let run_seed = |name: &str, seed: &str, threads: &str| {
        let folder = temp.path().join(name);
        synth(&[
            "--preset",
            "tiny",
            "--seed",
            seed,
            "--threads",
            threads,
            "--weeks",
            "Week2",
            "--output",
            &arg(&folder),
            "--no-progress",
        ])
        .assert_success();
        folder_contents(&folder)
    };
    let first = run_seed("a", "5", "2");
    let second = run_seed("b", "5", "1");
    assert!(first.len() > 4);
    assert!(first == second, "same seed, different files");
    let other = run_seed("c", "6", "2");
    assert!(first != other, "another seed gave the same files");
}

#[test]
fn synth_rejects_bad_usage_and_writes_a_panel() {
    let temp = tempfile::tempdir().unwrap();
    let screen = temp.path().join("screen");
    synth(&["--weeks", "Week11", "--output", &arg(&screen)])
        .assert_failure(2, &["`Week11` is not one of Week1 … Week10"]);
    synth(&["--field-size", "50x50", "--output", &arg(&screen)])
        .assert_failure(2, &["--field-size `50x50`"]);
    std::fs::create_dir_all(&screen).unwrap();
    synth(&["--preset", "tiny", "--output", &arg(&screen)])
        .assert_failure(2, &["exists; pass --force"]);
    let panel = temp.path().join("panel.png");
    synth(&["--panel", &arg(&panel)]).assert_success();
    let bytes = std::fs::read(&panel).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(
        (width, height),
        (426, 13 * 210),
        "13 rows of one field and six crops"
    );
}

fn aggregate<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-aggregate"), args)
}

fn classify<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-classify"), args)
}

/// A synthetic single-cell profile table (see `tests/python/make_embeddings.py`).
fn embeddings(folder: &Path, name: &str, extra: &[&str]) -> PathBuf {
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
    aggregate(&[
        "--input",
        &arg(&cells),
        "--wells",
        &arg(&wells),
        "--treatments",
        &arg(&treatments),
    ])
    .assert_success();
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

fn train<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-train"), args)
}

/// The 259 real pre-cropped BBBC021 cells as a cells table.
fn tiny_cells(folder: &Path) -> PathBuf {
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

fn train_args(cells: &Path, out: &Path, model: &str, epochs: usize) -> Vec<String> {
    vec![
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
fn training_log(path: &Path) -> std::collections::BTreeMap<(i64, String, String), f64> {
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

fn export(model: &Path, encoder: &Path, decoder: &Path) -> Outcome {
    run(
        &stage("pf-export"),
        &[
            "--model-card".to_string(),
            arg(&model.join("model_card.json")),
            "--encoder".into(),
            arg(encoder),
            "--decoder".into(),
            arg(decoder),
        ],
    )
}

/// Trains `model_kind` on `cells` for a few epochs into `model` and exports it: (model folder,
/// encoder, decoder).
fn trained_and_exported(
    cells: &Path,
    model: &Path,
    model_kind: &str,
    epochs: usize,
) -> (PathBuf, PathBuf, PathBuf) {
    train(&train_args(cells, model, model_kind, epochs)).assert_success();
    let (encoder, decoder) = (model.join("encoder.onnx"), model.join("decoder.onnx"));
    export(model, &encoder, &decoder).assert_success();
    (model.to_path_buf(), encoder, decoder)
}

fn embed<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-embed"), args)
}

#[test]
fn embed_keeps_every_cell_and_its_metadata_and_matches_libtorch() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    let (model, encoder, _) =
        trained_and_exported(&cells, &temp.path().join("svae"), "sparsevae", 1);
    let output = temp.path().join("embeddings.parquet");
    embed(&[
        "--cells",
        &arg(&cells),
        "--encoder",
        &arg(&encoder),
        "--output",
        &arg(&output),
        "--with-gamma",
        "--with-log-sigma",
        "--batch-size",
        "100",
        "--no-progress",
    ])
    .assert_success();
    let check = run_python(
        "check_embeddings.py",
        &[
            arg(&cells),
            arg(&output),
            arg(&model.join("reference_outputs.safetensors")),
        ],
    );
    check.assert_success();
    assert!(check.stdout.contains("OK: 259 rows"), "{}", check.stdout);
    // The checker itself fails a table that lacks the profile block (it used to pass it).
    let headless = temp.path().join("embeddings-without-profile.parquet");
    run(
        &python(),
        &[
            "-c".to_string(),
            "import sys, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); \
             pq.write_table(t.select([c for c in t.column_names if not c.startswith('Cells_')]), sys.argv[2])"
                .to_string(),
            arg(&output),
            arg(&headless),
        ],
    )
    .assert_success();
    let check = run_python(
        "check_embeddings.py",
        &[
            arg(&cells),
            arg(&headless),
            arg(&model.join("reference_outputs.safetensors")),
        ],
    );
    assert!(
        check.code != Some(0) && check.stdout.contains("lack the profile block"),
        "{}",
        check.stdout
    );
    // Under the seed's spike sampler the profile gate is a Gauss-Hermite expectation in the ONNX
    // graph; it too equals libtorch's.
    let dtu = temp.path().join("svae-dtu");
    let mut args = train_args(&cells, &dtu, "sparsevae", 1);
    args.extend(["--spike-sampler".into(), "dtu".into()]);
    train(&args).assert_success();
    let dtu_encoder = dtu.join("encoder.onnx");
    export(&dtu, &dtu_encoder, &dtu.join("decoder.onnx")).assert_success();
    let dtu_output = temp.path().join("embeddings-dtu.parquet");
    embed(&[
        "--cells",
        &arg(&cells),
        "--encoder",
        &arg(&dtu_encoder),
        "--output",
        &arg(&dtu_output),
        "--no-progress",
    ])
    .assert_success();
    let check = run_python(
        "check_embeddings.py",
        &[
            arg(&cells),
            arg(&dtu_output),
            arg(&dtu.join("reference_outputs.safetensors")),
        ],
    );
    check.assert_success();
    assert!(check.stdout.contains("OK: 259 rows"), "{}", check.stdout);
    // Sharding by plate: the tiny set has one plate, so shard 0/2 holds every cell and 1/2 none.
    let shard = temp.path().join("shard.parquet");
    embed(&[
        "--cells",
        &arg(&cells),
        "--encoder",
        &arg(&encoder),
        "--output",
        &arg(&shard),
        "--shard",
        "0/2",
        "--no-progress",
    ])
    .assert_success();
    embed(&[
        "--cells",
        &arg(&cells),
        "--encoder",
        &arg(&encoder),
        "--output",
        &arg(&shard),
        "--shard",
        "1/2",
        "--no-progress",
    ])
    .assert_failure(2, &["no cells selected"]);
    embed(&[
        "--cells",
        &arg(&cells),
        "--encoder",
        &arg(&encoder),
        "--output",
        &arg(&shard),
        "--plate",
        "Week9_1",
        "--no-progress",
    ])
    .assert_failure(2, &["--plate Week9_1: no such plate", "Week4_27861"]);
}

/// `pf-embed --handcrafted` on the real tiny cells equals numpy's features of the Python
/// baseline; it cannot be combined with an encoder.
#[test]
fn handcrafted_features_equal_numpy() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    let output = temp.path().join("handcrafted.parquet");
    embed(&[
        "--cells",
        &arg(&cells),
        "--handcrafted",
        "--output",
        &arg(&output),
        "--batch-size",
        "100",
        "--no-progress",
    ])
    .assert_success();
    let check = run_python("check_handcrafted.py", &[arg(&cells), arg(&output)]);
    check.assert_success();
    assert!(
        check.stdout.contains("OK: 259 cells x 15"),
        "{}",
        check.stdout
    );
    embed(&[
        "--cells",
        &arg(&cells),
        "--handcrafted",
        "--encoder",
        &arg(&temp.path().join("encoder.onnx")),
        "--output",
        &arg(&temp.path().join("both.parquet")),
    ])
    .assert_failure(2, &["--handcrafted", "--encoder"]);
    assert!(!temp.path().join("both.parquet").exists());
}

/// The model the demo starts from (models/demo-cytovae, made by `make demo-model`) must have
/// been trained on exactly the cells the demo pipeline makes: regenerate them as pf-run does
/// (same relative paths, two plate shards) and compare the content hash its card records. When
/// this fails, the screen or the cropping changed: run `make demo-model` again.
#[test]
fn shipped_demo_model_matches_the_demo_screen() {
    let temp = tempfile::tempdir().unwrap();
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/demo-cytovae/model_card.json")).unwrap(),
    )
    .unwrap();
    run_in(
        temp.path(),
        &stage("pf-synth"),
        &[
            "--preset",
            "demo",
            "--seed",
            "1",
            "--force",
            "--no-progress",
            "--output",
            "out/demo/synthetic",
        ],
    )
    .assert_success();
    let mut shards = Vec::new();
    for shard in 0..2 {
        let output = format!("out/demo/cells.shard{shard}.parquet");
        run_in(
            temp.path(),
            &stage("pf-preprocess"),
            &[
                "bbbc021",
                "--image-csv",
                "out/demo/synthetic/BBBC021_v1_image.csv",
                "--moa-csv",
                "out/demo/synthetic/BBBC021_v1_moa.csv",
                "--no-progress",
                "--output",
                &output,
                "--shard",
                &format!("{shard}/2"),
            ],
        )
        .assert_success();
        shards.push(temp.path().join(output));
    }
    let hash = phenoflow_schemas::hash_files(&shards).unwrap();
    assert_eq!(
        card["data"]["content_hash"].as_str().unwrap(),
        hash,
        "the demo's cells changed since models/demo-cytovae was trained: run `make demo-model`"
    );
}

#[test]
fn embed_rejects_bad_models_and_mismatched_cells() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    let (model, encoder, decoder) =
        trained_and_exported(&cells, &temp.path().join("vae"), "cytovae", 1);
    let output = temp.path().join("out.parquet");
    let embed_with = |encoder: &Path, cells: &Path| {
        embed(&[
            "--cells".to_string(),
            arg(cells),
            "--encoder".into(),
            arg(encoder),
            "--output".into(),
            arg(&output),
            "--no-progress".into(),
        ])
    };
    // A truncated model.
    let truncated = temp.path().join("truncated.onnx");
    let bytes = std::fs::read(&encoder).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    embed_with(&truncated, &cells)
        .assert_failure(2, &["truncated.onnx", "not a loadable ONNX model"]);
    // The decoder where the encoder belongs.
    embed_with(&decoder, &cells)
        .assert_failure(2, &["decoder.onnx: this is the decoder, not the encoder"]);
    // Cells of another shape (whole ExampleHuman fields at 128×128).
    let whole = temp.path().join("whole.parquet");
    preprocess(&[
        "whole",
        "--image-csv",
        &arg(&examplehuman_table(temp.path())),
        "--images-root",
        &arg(&shared_data().join("examplehuman")),
        "--channels",
        "DAPI,Tubulin,Actin",
        "--output",
        &arg(&whole),
        "--no-progress",
    ])
    .assert_success();
    embed_with(&encoder, &whole).assert_failure(
        2,
        &[
            "whole.parquet: cells are [3, 128, 128]",
            "takes [3, 68, 68]",
        ],
    );
    // A sparse-only option on a Gaussian model.
    embed(&[
        "--cells".to_string(),
        arg(&cells),
        "--encoder".into(),
        arg(&encoder),
        "--output".into(),
        arg(&output),
        "--profile".into(),
        "mu-gamma".into(),
    ])
    .assert_failure(2, &["cytovae is not a sparse model"]);
    assert!(!output.exists());
    assert!(temp_files(temp.path()).is_empty());
    // A checkpoint that does not belong to its model card.
    let card = std::fs::read_to_string(model.join("model_card.json")).unwrap();
    std::fs::write(
        model.join("model_card.json"),
        card.replace("\"latent_dim\": 32", "\"latent_dim\": 64"),
    )
    .unwrap();
    export(&model, &encoder, &decoder).assert_failure(
        2,
        &["checkpoint.safetensors: tensor `encoder.head.weight` has shape"],
    );
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
            start[7] = "3".into();
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
        other_seed[13] = "6".into();
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
    too_big[9] = "1000".into();
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

/// A small pipeline over the tiny synthetic screen (2 plates, 2 shards), every stage for real.
/// The tiny synthetic screen end to end. Its train step keeps pf-train's old flag names (`out`,
/// `quiet`, now `output`, `no-progress`): the stages list hidden aliases, so older pipeline files
/// still run.
const TINY_PIPELINE: &str = r#"
[pipeline]
name = "tiny"
description = "tiny synthetic screen end to end"
workdir = "out"
shards = 2

[[step]]
name = "synth"
stage = "pf-synth"
outputs = { output = "synthetic" }
params = { preset = "tiny", seed = 3, force = true, no-progress = true }

[[step]]
name = "preprocess"
stage = "pf-preprocess"
command = "bbbc021"
fan_out = "shard"
inputs = { image-csv = "@synth.output/BBBC021_v1_image.csv", moa-csv = "@synth.output/BBBC021_v1_moa.csv" }
outputs = { output = "cells.parquet" }
params = { no-progress = true }

[[step]]
name = "train"
stage = "pf-train"
inputs = { cells = "@preprocess.output" }
outputs = { out = "model" }
params = { model = "cytovae", epochs = 1, batch-size = 32, latent-dim = 8, quiet = true, threads = 2 }

[[step]]
name = "export"
stage = "pf-export"
inputs = { model-card = "@train.out/model_card.json" }
outputs = { encoder = "encoder.onnx", decoder = "decoder.onnx" }

[[step]]
name = "embed"
stage = "pf-embed"
fan_out = "shard"
inputs = { cells = "@preprocess.output", encoder = "@export.encoder" }
outputs = { output = "embeddings.parquet" }
params = { no-progress = true, threads = 2 }

[[step]]
name = "aggregate"
stage = "pf-aggregate"
inputs = { input = "@embed.output" }
outputs = { wells = "wells.parquet", treatments = "treatments.parquet" }
params = { normalize = "dmso-zscore" }

[[step]]
name = "classify"
stage = "pf-classify"
inputs = { treatments = "@aggregate.treatments" }
outputs = { predictions = "predictions.parquet", metrics = "metrics.parquet" }

[[step]]
name = "report"
stage = "pf-report"
inputs = { model-card = "@train.out/model_card.json", decoder = "@export.decoder", cells = "@preprocess.output", embeddings = "@embed.output", treatments = "@aggregate.treatments", predictions = "@classify.predictions", metrics = "@classify.metrics", pipeline = "tiny.toml" }
outputs = { output = "report" }
"#;

/// How many steps a run executed, from its closing line.
fn n_ran(outcome: &Outcome) -> usize {
    let line = outcome
        .stderr
        .lines()
        .find(|line| line.contains(" ran "))
        .unwrap_or_else(|| panic!("{}", outcome.stderr));
    line.split(" ran ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn pipelines_rerun_only_what_changed() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    std::fs::write(folder.join("tiny.toml"), TINY_PIPELINE).unwrap();
    let first = pf_run(folder, &["run", "tiny.toml", "--jobs", "2"]);
    first.assert_success();
    assert_eq!(n_ran(&first), 10, "{}", first.stderr);
    // Seven figures (the PCA and t-SNE maps among them): one week only, so NSCB has no
    // candidates and no confusion matrix.
    check_report_in_chromium(&folder.join("out/report"), 7, folder);
    let map = std::fs::read_to_string(folder.join("out/report/treatment_map.csv")).unwrap();
    assert!(
        map.starts_with(
            "Metadata_Compound,Metadata_Concentration,Metadata_MoA,PC1,PC2,tSNE1,tSNE2\n"
        ),
        "{map}"
    );
    assert!(
        map.lines().skip(1).all(|line| !line.ends_with(",,")),
        "every treatment has t-SNE coordinates: {map}"
    );
    // Run twice: nothing runs.
    let second = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(second.assert_success()), 0, "{}", second.stderr);
    // Touch an input without changing it: nothing runs.
    let csv = folder.join("out/synthetic/BBBC021_v1_image.csv");
    std::fs::write(&csv, std::fs::read(&csv).unwrap()).unwrap();
    let touched = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(touched.assert_success()), 0, "{}", touched.stderr);
    // Change one param: that step and its dependents run, nothing else.
    std::fs::write(
        folder.join("tiny.toml"),
        TINY_PIPELINE.replace("\"dmso-zscore\"", "\"none\""),
    )
    .unwrap();
    let dry = pf_run(folder, &["run", "tiny.toml", "--dry-run"]);
    assert!(
        dry.assert_success()
            .stdout
            .contains("would run   aggregate        because its params or paths changed"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("would run   classify         because `aggregate` runs before it"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("up to date  train"), "{}", dry.stdout);
    let changed = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(changed.assert_success()), 3, "{}", changed.stderr);
    assert!(changed
        .stderr
        .contains("run   aggregate (its params or paths changed)"));
    // Corrupt an intermediate file: its producer runs again and restores it; since the content
    // comes back the same, its consumers have nothing to do.
    let embeddings = folder.join("out/embeddings.shard0.parquet");
    let good = std::fs::read(&embeddings).unwrap();
    std::fs::write(&embeddings, b"not parquet").unwrap();
    let repaired = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(repaired.assert_success()), 1, "{}", repaired.stderr);
    assert!(repaired.stderr.contains(
        "run   embed[0] (output out/embeddings.shard0.parquet changed since it was written)"
    ));
    assert_eq!(std::fs::read(&embeddings).unwrap(), good);
    // --from and --only force.
    let from = pf_run(folder, &["run", "tiny.toml", "--from", "embed"]);
    assert_eq!(n_ran(from.assert_success()), 5, "{}", from.stderr);
    let only = pf_run(folder, &["run", "tiny.toml", "--only", "classify"]);
    assert_eq!(n_ran(only.assert_success()), 1, "{}", only.stderr);
    let metrics = std::fs::read(folder.join("out/metrics.parquet")).unwrap();
    // A failing step stops what depends on it and leaves earlier outputs intact.
    std::fs::write(
        folder.join("tiny.toml"),
        TINY_PIPELINE.replace("batch-size = 32", "batch-size = 100000"),
    )
    .unwrap();
    let cells_before = std::fs::read(folder.join("out/cells.shard1.parquet")).unwrap();
    let failed = pf_run(folder, &["run", "tiny.toml"]);
    failed.assert_failure(
        1,
        &[
            "FAIL  train",
            "1 step(s) failed (train), 6 skipped",
            "fewer than one batch of 100000",
        ],
    );
    assert_eq!(
        std::fs::read(folder.join("out/cells.shard1.parquet")).unwrap(),
        cells_before
    );
    assert!(folder.join("out/model/checkpoint.safetensors").exists());
    assert_eq!(
        std::fs::read(folder.join("out/metrics.parquet")).unwrap(),
        metrics
    );
    assert!(temp_files(&folder.join("out")).is_empty());
}

/// The tiny pipeline trained with two seeds: training to classification once per seed, then a
/// summary across them and a report per seed that shows it.
fn seeded_tiny_pipeline() -> String {
    let mut text = TINY_PIPELINE.replace("shards = 2\n", "shards = 2\nseeds = [3, 5]\n");
    for step in [
        "train",
        "export",
        "embed",
        "aggregate",
        "classify",
        "report",
    ] {
        text = text.replace(
            &format!("name = \"{step}\"\n"),
            &format!("name = \"{step}\"\nper_seed = true\n"),
        );
    }
    text = text.replace("latent-dim = 8,", "latent-dim = 8, seed = \"${seed}\",");
    text = text.replace(
        "metrics = \"@classify.metrics\", pipeline",
        "metrics = \"@classify.metrics\", metrics-summary = \"@summary.output\", pipeline",
    );
    text.push_str(
        "\n[[step]]\nname = \"summary\"\nstage = \"pf-classify\"\ncommand = \"summarize\"\n\
         inputs = { metrics = \"@classify.metrics\" }\noutputs = { output = \"summary.parquet\" }\n",
    );
    text
}

#[test]
fn seeded_pipelines_train_once_per_seed_and_summarise_like_pandas() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    std::fs::write(folder.join("tiny.toml"), seeded_tiny_pipeline()).unwrap();
    let first = pf_run(folder, &["run", "tiny.toml", "--jobs", "2"]);
    first.assert_success();
    // synth, 2 preprocess shards, then per seed: train, export, 2 embed shards, aggregate,
    // classify, report; and the summary.
    assert_eq!(n_ran(&first), 3 + 2 * 7 + 1, "{}", first.stderr);
    let out = folder.join("out");
    let cards: Vec<serde_json::Value> = [3, 5]
        .iter()
        .map(|seed| {
            let path = out.join(format!("seed{seed}/model/model_card.json"));
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(
        (cards[0]["seed"].as_u64(), cards[1]["seed"].as_u64()),
        (Some(3), Some(5))
    );
    assert_ne!(
        std::fs::read(out.join("seed3/encoder.onnx")).unwrap(),
        std::fs::read(out.join("seed5/encoder.onnx")).unwrap(),
        "two seeds, two models"
    );
    let (metrics3, metrics5, summary) = (
        out.join("seed3/metrics.parquet"),
        out.join("seed5/metrics.parquet"),
        out.join("summary.parquet"),
    );
    run_python(
        "check_profiles.py",
        &[
            "summary",
            "--metrics",
            &arg(&metrics3),
            "--metrics",
            &arg(&metrics5),
            "--summary",
            &arg(&summary),
        ],
    )
    .assert_success();
    for seed in [3, 5] {
        let page =
            std::fs::read_to_string(out.join(format!("seed{seed}/report/report.html"))).unwrap();
        assert!(page.contains("<h2>Across seeds</h2>"), "seed {seed}");
        assert!(
            page.contains("trained with 2 different seeds"),
            "seed {seed}"
        );
    }
    // `--only train` is every seed's; `--seeds` runs other replicates without editing the file.
    let dry = pf_run(folder, &["run", "tiny.toml", "--dry-run", "--seeds", "3,9"]);
    let dry = dry.assert_success();
    assert!(
        dry.stdout.contains("up to date  train-seed3"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("would run   train-seed9      because never run here"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("seed5"), "{}", dry.stdout);
    let only = pf_run(folder, &["run", "tiny.toml", "--only", "classify"]);
    assert_eq!(n_ran(only.assert_success()), 2, "{}", only.stderr);
    // A run with other seeds and another fan-out width (one shard: the steps run whole): its
    // report counts the steps of that run (pf-run records its overrides), not the file's 2 × 2
    // embed shards, whose records of the first run are still there.
    pf_run(
        folder,
        &[
            "run",
            "tiny.toml",
            "--seeds",
            "3",
            "--shards",
            "1",
            "--jobs",
            "2",
        ],
    )
    .assert_success();
    let page = std::fs::read_to_string(out.join("seed3/report/report.html")).unwrap();
    for step in [
        "<td>preprocess</td><td>pf-preprocess</td>",
        "<td>embed-seed3</td><td>pf-embed</td>",
    ] {
        assert!(
            page.contains(&format!("{step}<td class=\"num\">1</td>")),
            "{step}: {}",
            &page[page.find("Wall time per step").unwrap_or(0)..]
        );
    }
    let times = &page[page.find("Wall time per step").unwrap()..];
    assert!(!times.contains("seed5"), "{times}");
    // pf-classify summarize refuses the same replicate twice and a table that is not metrics.
    classify(&[
        "summarize",
        "--metrics",
        &arg(&metrics3),
        "--metrics",
        &arg(&metrics3),
        "--output",
        &arg(&folder.join("twice.parquet")),
    ])
    .assert_failure(2, &["given twice"]);
    classify(&[
        "summarize",
        "--metrics",
        &arg(&out.join("seed3/treatments.parquet")),
        "--output",
        &arg(&folder.join("wrong.parquet")),
    ])
    .assert_failure(2, &["seed3/treatments.parquet"]);
    assert!(!folder.join("twice.parquet").exists() && !folder.join("wrong.parquet").exists());
}

#[test]
fn pipeline_files_are_checked_before_anything_runs() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    let check = |text: String, fragments: &[&str]| {
        std::fs::write(folder.join("p.toml"), text).unwrap();
        pf_run(folder, &["run", "p.toml"]).assert_failure(2, fragments);
        assert!(!folder.join("out").exists(), "something ran");
    };
    check(
        TINY_PIPELINE.replace(
            "fan_out = \"shard\"\ninputs = { cells",
            "fan_out = \"shard\"\ncolour = 1\ninputs = { cells",
        ),
        &["p.toml", "unknown field `colour`", "line 40"],
    );
    check(
        TINY_PIPELINE.replace("stage = \"pf-export\"", "stage = \"pf-exprot\""),
        &["step `export`: unknown stage `pf-exprot`"],
    );
    check(
        TINY_PIPELINE.replace("epochs = 1,", "epochs = 1, learning-rat = 0.1,"),
        &["step `train`: pf-train does not accept --learning-rat"],
    );
    // A flag that only the help text names (pf-classify's examples show `summarize --output`)
    // is not one of the step's flags: the stage lists its flags, pf-run no longer reads --help.
    check(
        TINY_PIPELINE.replace(
            "outputs = { predictions = \"predictions.parquet\", metrics = \"metrics.parquet\" }",
            "outputs = { predictions = \"predictions.parquet\", metrics = \"metrics.parquet\", output = \"x.parquet\" }",
        ),
        &["step `classify`: pf-classify does not accept --output"],
    );
    // A subcommand the stage does not have.
    check(
        TINY_PIPELINE.replace("command = \"bbbc021\"", "command = \"bbbc022\""),
        &["step `preprocess`: pf-preprocess does not know the command `bbbc022`"],
    );
    check(
        TINY_PIPELINE.replace("\"@synth.output/BBBC021_v1_moa.csv\"", "\"moa.csv\""),
        &["step `preprocess`: input --moa-csv moa.csv does not exist and no step produces it"],
    );
    check(
        TINY_PIPELINE.replace("\"@train.out/model_card.json\"", "\"@classify.metrics\""),
        &["cycle", "export", "classify"],
    );
    check(
        TINY_PIPELINE.replace(
            "outputs = { wells = \"wells.parquet\"",
            "outputs = { wells = \"cells.shard0.parquet\"",
        ),
        &["out/cells.shard0.parquet is written by two steps: `preprocess[0]` and `aggregate`"],
    );
}

#[test]
fn snakemake_runs_the_emitted_pipeline_like_pf_run() {
    let temp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (temp.path().join("pf-run"), temp.path().join("snakemake"));
    for folder in [&ours, &theirs] {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::write(folder.join("tiny.toml"), TINY_PIPELINE).unwrap();
    }
    pf_run(&ours, &["run", "tiny.toml"]).assert_success();
    pf_run(
        &theirs,
        &["emit", "snakemake", "tiny.toml", "--output", "Snakefile"],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", stage("pf-run").parent().unwrap().display());
    let dry = run_in(
        &theirs,
        &snakemake,
        &["-n", "--cores", "2", "--config", &bin_dir],
    );
    dry.assert_success();
    assert!(
        dry.stdout.contains("preprocess") && dry.stdout.contains("classify"),
        "{}",
        dry.stdout
    );
    run_in(&theirs, &snakemake, &["--cores", "2", "--config", &bin_dir]).assert_success();
    assert!(theirs.join("out/logs/embed.1.log").exists());
    // The fan-out width is a config key: five jobs per fan-out step, and the merge reads five.
    let wide = run_in(
        &theirs,
        &snakemake,
        &[
            "-n",
            "-p",
            "--forceall",
            "--cores",
            "2",
            "--config",
            &bin_dir,
            "shards=5",
        ],
    );
    wide.assert_success();
    let plan = format!("{}{}", wide.stdout, wide.stderr);
    assert!(plan.contains("--shard 4/5"), "{plan}");
    assert!(
        plan.contains("--cells out/cells.shard4.parquet --out out/model"),
        "{plan}"
    );
    assert!(
        plan.contains("--output out/embeddings.shard4.parquet"),
        "embed runs per shard too: {plan}"
    );
    // make and Nextflow fix the width when the file is emitted: --shards picks it there, and
    // pf-run takes the same flag.
    let emitted = |format: &str| {
        let outcome = pf_run(&theirs, &["emit", format, "tiny.toml", "--shards", "5"]);
        outcome.assert_success();
        outcome.stdout.clone()
    };
    let make = emitted("make");
    assert!(
        make.contains("--shard 4/5")
            && make.contains("--cells out/cells.shard4.parquet --out out/model"),
        "{make}"
    );
    let nextflow = emitted("nextflow");
    assert!(
        nextflow.contains("Channel.of(0..4)")
            && nextflow.contains("--shard ${shard}/5")
            && nextflow.contains("--cells out/cells.shard4.parquet --out out/model"),
        "{nextflow}"
    );
    let snakefile = emitted("snakemake");
    assert!(
        snakefile.contains("config.get(\"shards\", 5)"),
        "{snakefile}"
    );
    let planned = pf_run(&theirs, &["run", "tiny.toml", "--dry-run", "--shards", "3"]);
    planned.assert_success();
    let planned = format!("{}{}", planned.stdout, planned.stderr);
    assert!(
        planned.contains("preprocess[2]") && !planned.contains("preprocess[3]"),
        "{planned}"
    );
    let table = |folder: &Path, name: &str, columns: &str| {
        let outcome = run_python(
            "read_table.py",
            &[&arg(&folder.join("out").join(name)), columns],
        );
        outcome.assert_success();
        outcome.stdout.clone()
    };
    let metrics = table(
        &ours,
        "metrics.parquet",
        "Metric,Protocol,Scope,Value,Count",
    );
    assert!(metrics.contains("accuracy"), "{metrics}");
    assert_eq!(
        metrics,
        table(
            &theirs,
            "metrics.parquet",
            "Metric,Protocol,Scope,Value,Count"
        )
    );
    assert_eq!(
        table(
            &ours,
            "predictions.parquet",
            "Metadata_Compound,Protocol,Predicted_MoA,Distance"
        ),
        table(
            &theirs,
            "predictions.parquet",
            "Metadata_Compound,Protocol,Predicted_MoA,Distance"
        )
    );
}

/// The jobs of a Snakemake dry run: rule → (resources line, shell command) of its first job.
fn dry_run_jobs(output: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut jobs = std::collections::BTreeMap::new();
    let mut rule: Option<String> = None;
    let mut resources = String::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("rule ").and_then(|l| l.strip_suffix(':')) {
            rule = Some(name.to_string());
            resources.clear();
        } else if let Some(value) = line.trim_start().strip_prefix("resources: ") {
            resources = value.to_string();
        } else if let Some(command) = line.strip_prefix("Shell command: ") {
            if let Some(name) = rule.take() {
                jobs.entry(name)
                    .or_insert_with(|| (resources.clone(), command.to_string()));
            }
        }
    }
    jobs
}

#[test]
fn snakemake_under_the_slurm_profile_asks_each_job_for_its_resources() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    // The seed pipeline as a cluster user runs it: its data folder and pipeline file in place.
    std::fs::create_dir_all(folder.join("data/bbbc021-singlecell")).unwrap();
    std::fs::create_dir_all(folder.join("pipelines")).unwrap();
    std::fs::copy(
        root().join("pipelines/seed-cytovae.toml"),
        folder.join("pipelines/seed-cytovae.toml"),
    )
    .unwrap();
    pf_run(
        folder,
        &[
            "emit",
            "snakemake",
            "pipelines/seed-cytovae.toml",
            "--output",
            "Snakefile",
        ],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", stage("pf-run").parent().unwrap().display());
    let profile = arg(&root().join("pipelines/profiles/slurm"));
    // `--cores 64`: a dry run caps threads at the local cores; on SLURM each job gets its own.
    let dry = run_in(
        folder,
        &snakemake,
        &[
            "-s",
            "Snakefile",
            "--profile",
            &profile,
            "--dry-run",
            "--cores",
            "64",
            "--config",
            &bin_dir,
        ],
    );
    dry.assert_success();
    let text = format!("{}{}", dry.stdout, dry.stderr);
    assert!(text.contains("Using profile"), "{text}");
    assert!(text.contains("total                       37"), "{text}");
    let jobs = dry_run_jobs(&text);
    // (rule, mem_mb, runtime, gpu, threads)
    for (rule, mem_mb, runtime, gpu, threads) in [
        ("preprocess", 8000, 120, false, 2),
        ("train_seed0", 32000, 1440, true, 8),
        ("train_seed2", 32000, 1440, true, 8),
        ("export_seed1", 8000, 30, false, 1),
        ("embed_seed1", 16000, 240, true, 4),
        ("aggregate_seed0", 16000, 120, false, 4),
        ("classify_seed0", 4000, 30, false, 1),
        ("summary", 4000, 30, false, 1),
        ("report_seed2", 8000, 60, false, 2),
    ] {
        let (resources, command) = jobs
            .get(rule)
            .unwrap_or_else(|| panic!("no job of {rule}: {text}"));
        assert!(
            resources.contains(&format!("mem_mb={mem_mb},"))
                && resources.contains(&format!("runtime={runtime}")),
            "{rule}: {resources}"
        );
        assert_eq!(resources.contains("gpu=1"), gpu, "{rule}: {resources}");
        assert!(
            command.starts_with(&format!(
                "RAYON_NUM_THREADS={threads} POLARS_MAX_THREADS={threads} "
            )),
            "{rule}: {command}"
        );
        assert!(command.ends_with(".log 2>&1"), "{rule}: {command}");
    }
    // The pipeline's [vars] are config keys: the data folder is chosen when Snakemake runs
    // (shell-quoted, so a folder with a space stays one argument).
    let elsewhere = folder.join("other place/singlecell");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = run_in(
        folder,
        &snakemake,
        &[
            "-s",
            "Snakefile",
            "--dry-run",
            "-p",
            "--cores",
            "4",
            "--config",
            &bin_dir,
            &format!("data={}", arg(&elsewhere)),
        ],
    );
    moved.assert_success();
    let moved_jobs = dry_run_jobs(&format!("{}{}", moved.stdout, moved.stderr));
    assert!(
        moved_jobs["preprocess"]
            .1
            .contains(&format!("--root '{}' ", arg(&elsewhere))),
        "{:?}",
        moved_jobs["preprocess"]
    );
    assert!(
        jobs["train_seed1"].1.contains("--seed 1 "),
        "{:?}",
        jobs["train_seed1"]
    );
    assert!(
        jobs["train_seed1"].1.contains("--threads 8 "),
        "{:?}",
        jobs["train_seed1"]
    );
    // The linter: a log per job, parameters through params, a conda environment per rule.
    let lint = run_in(
        folder,
        &snakemake,
        &["--lint", "-s", "Snakefile", "--config", &bin_dir],
    );
    let lints: std::collections::BTreeSet<&str> = lint
        .stdout
        .lines()
        .chain(lint.stderr.lines())
        .filter_map(|line| line.trim_start().strip_prefix("* "))
        .collect();
    assert!(
        lints.is_empty() && lint.code == Some(0),
        "{lints:?}\n{}{}",
        lint.stdout,
        lint.stderr
    );
}

/// A pin of `name` (`name==version`) in a requirements-like text.
fn pinned(text: &str, name: &str) -> String {
    text.lines()
        .map(str::trim)
        .map(|line| line.trim_start_matches("- "))
        .find(|line| line.starts_with(&format!("{name}==")))
        .unwrap_or_else(|| panic!("no {name}== in:\n{text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_conda_environment_of_the_emitted_rules_gives_the_stages_their_libraries() {
    // Its pins are what `make setup` installs.
    let environment =
        std::fs::read_to_string(root().join("pipelines/envs/phenoflow.yaml")).unwrap();
    let requirements =
        std::fs::read_to_string(root().join("tests/python/requirements.txt")).unwrap();
    assert_eq!(
        pinned(&environment, "torch"),
        pinned(&requirements, "torch")
    );
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let ort_version = makefile
        .lines()
        .find_map(|line| line.strip_prefix("ORT_VERSION := "))
        .unwrap()
        .trim();
    assert_eq!(
        pinned(&environment, "onnxruntime-gpu"),
        format!("onnxruntime-gpu=={ort_version}")
    );
    // Its post-deploy script, run as Snakemake runs it: inside the new environment, here a
    // prefix whose Python is the project's (the same wheels, laid out as in a conda prefix).
    let temp = tempfile::tempdir().unwrap();
    let prefix = temp.path().join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::write(
        prefix.join("bin/python"),
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", arg(&python())),
    )
    .unwrap();
    run(
        Path::new("chmod"),
        &["+x", &arg(&prefix.join("bin/python"))],
    )
    .assert_success();
    let script = root().join("pipelines/envs/phenoflow.post-deploy.sh");
    let deployed: Outcome = std::process::Command::new("sh")
        .arg(&script)
        .env("CONDA_PREFIX", &prefix)
        .output()
        .unwrap()
        .into();
    deployed.assert_success();
    let activate = prefix.join("etc/conda/activate.d/phenoflow.sh");
    let activation = std::fs::read_to_string(&activate).unwrap();
    assert!(
        activation.contains("/torch/lib") && activation.contains("libonnxruntime.so."),
        "{activation}"
    );
    // A job outside the environment has no ONNX Runtime: pf-embed stops and names the variable.
    let folder = temp.path().join("run");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tiny.toml"), TINY_PIPELINE).unwrap();
    let job = |activated: bool| -> Outcome {
        let command = format!(
            "{}exec '{}' run tiny.toml",
            if activated {
                format!(". '{}' && ", arg(&activate))
            } else {
                String::new()
            },
            arg(&stage("pf-run"))
        );
        std::process::Command::new("bash")
            .args(["-c", &command])
            .current_dir(&folder)
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap()
            .into()
    };
    let outside = job(false);
    assert_ne!(outside.code, Some(0), "{}", outside.stderr);
    assert!(
        outside.stderr.contains("ORT_DYLIB_PATH is not set"),
        "{}",
        outside.stderr
    );
    // The emitted rules name it; a conda_env setting that names no file is refused.
    pf_run(
        &folder,
        &["emit", "snakemake", "tiny.toml", "--output", "Snakefile"],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", arg(stage("pf-run").parent().unwrap()));
    let snakefile = std::fs::read_to_string(folder.join("Snakefile")).unwrap();
    let rules = snakefile.matches("\nrule ").count();
    assert!(rules > 5, "{snakefile}");
    assert_eq!(
        snakefile.matches("\n    conda: CONDA_ENV\n").count(),
        rules - 1,
        "every rule but `all`: {snakefile}"
    );
    let elsewhere = folder.join("no-such-env.yaml");
    let refused = run_in(
        &folder,
        &snakemake,
        &[
            "-n",
            "--config",
            &bin_dir,
            &format!("conda_env={}", arg(&elsewhere)),
        ],
    );
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.code == Some(1) && said.contains("no-such-env.yaml: no such file"),
        "{said}"
    );
    // Activated in it, the pipeline runs through.
    let inside = job(true);
    inside.assert_success();
    assert!(
        folder.join("out/report/report.html").exists(),
        "{}",
        inside.stderr
    );
}

#[test]
fn help_texts_in_docs_cli_do_not_drift() {
    // docs/cli/ holds the --help of every stage and subcommand (`make cli-docs`); written again
    // from the binaries under test, every file is the same and none is missing or left over.
    let temp = tempfile::tempdir().unwrap();
    let bin_dir = stage("pf-run").parent().unwrap().to_path_buf();
    std::process::Command::new(root().join("tests/cli_docs.sh"))
        .arg(&bin_dir)
        .arg(temp.path())
        .env("PHENOFLOW_PYTHON", python())
        .output()
        .map(Outcome::from)
        .unwrap()
        .assert_success();
    let texts = |folder: &Path| -> std::collections::BTreeMap<String, String> {
        std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
            .map(|path| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect()
    };
    let (written, shipped) = (texts(temp.path()), texts(&root().join("docs/cli")));
    assert!(written.len() >= 17, "{:?}", written.keys());
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "docs/cli is out of date: run `make cli-docs`"
    );
    for (name, text) in &written {
        assert_eq!(
            text, &shipped[name],
            "docs/cli/{name} is out of date: run `make cli-docs`"
        );
    }
}

#[test]
fn emitted_files_of_the_shipped_pipelines_do_not_drift() {
    let pipelines = root().join("pipelines");
    let mut n_checked = 0;
    for entry in std::fs::read_dir(&pipelines).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let relative = format!("pipelines/{name}.toml");
        for (format, file) in [
            ("make", "pipeline.mk"),
            ("snakemake", "Snakefile"),
            ("nextflow", "main.nf"),
        ] {
            let emitted = pf_run(&root(), &["emit", format, &relative]);
            emitted.assert_success();
            let committed = pipelines.join("generated").join(&name).join(file);
            let committed = std::fs::read_to_string(&committed).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run `make pipelines-generated`",
                    committed.display()
                )
            });
            assert!(
                emitted.stdout == committed,
                "pipelines/generated/{name}/{file} is stale: run `make pipelines-generated`"
            );
            n_checked += 1;
        }
    }
    assert!(n_checked >= 3, "no pipeline checked");
}

// ---------------------------------------------------------------------------------------------
// pf-report

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

/// Opens a report in headless Chromium (Debian's `chromium`): every image must decode; the
/// screenshot and Chromium's profile go to `scratch` (the test's temporary folder).
fn check_report_in_chromium(report: &Path, n_images: usize, scratch: &Path) {
    let n_pngs = std::fs::read_dir(report)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|extension| extension == "png")
        })
        .count();
    assert_eq!(n_pngs, n_images, "PNG files beside the report");
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "headless Chromium is needed for this test: apt-get install chromium (.ci/run does)"
    );
    let url = format!("file://{}", report.join("report.html").display());
    let profile = scratch.join("chromium-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let mut dump: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    dump.extend([
        format!("--user-data-dir={}", profile.display()),
        "--virtual-time-budget=10000".into(),
        "--dump-dom".into(),
        url.clone(),
    ]);
    let dom = run(chromium, &dump);
    dom.assert_success();
    assert!(
        dom.stdout.contains(&format!("data-images=\"{n_images}\"")),
        "{}",
        &dom.stdout[..dom.stdout.len().min(600)]
    );
    assert!(
        dom.stdout.contains("data-broken-images=\"0\""),
        "broken images in the report"
    );
    let screenshot = scratch.join("report-screenshot.png");
    let mut shot: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    shot.extend([
        format!("--user-data-dir={}", profile.display()),
        "--window-size=1280,2400".into(),
        format!("--screenshot={}", screenshot.display()),
        url,
    ]);
    run(chromium, &shot).assert_success();
    assert_eq!(png_size(&screenshot), (1280, 2400));
    let _ = std::fs::remove_dir_all(profile);
}

#[test]
fn report_figures_from_the_real_cells_and_a_tiny_model() {
    let temp = tempfile::tempdir().unwrap();
    let cells = tiny_cells(temp.path());
    let (model, encoder, decoder) =
        trained_and_exported(&cells, &temp.path().join("model"), "sparsevae", 2);
    let embeddings = temp.path().join("embeddings.parquet");
    embed(&[
        "--cells",
        &arg(&cells),
        "--encoder",
        &arg(&encoder),
        "--output",
        &arg(&embeddings),
        "--with-gamma",
        "--no-progress",
    ])
    .assert_success();
    let report = temp.path().join("report");
    let outcome = run(
        &stage("pf-report"),
        &[
            "--model-card",
            &arg(&model.join("model_card.json")),
            "--decoder",
            &arg(&decoder),
            "--cells",
            &arg(&cells),
            "--embeddings",
            &arg(&embeddings),
            "--output",
            &arg(&report),
        ],
    );
    outcome.assert_success();
    // Two rows of three loss-term panels; 8 cells × (RGB + 3 channels) × (original, decoded) at 2×.
    assert_eq!(png_size(&report.join("learning_curves.png")), (1200, 640));
    assert_eq!(
        png_size(&report.join("reconstructions.png")),
        (150 + 8 * 140 + 4, 30 + 8 * 140 + 4)
    );
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(
        html.contains("Active latent dimensions (sparse model)"),
        "no active-dimension table"
    );
    assert!(
        html.contains("fewer than two MoAs"),
        "the single-MoA case is not explained"
    );
    assert_eq!(html.matches("data:image/png;base64,").count(), 2);
    check_report_in_chromium(&report, 2, temp.path());
    // A decoder that is not one.
    run(
        &stage("pf-report"),
        &[
            "--model-card",
            &arg(&model.join("model_card.json")),
            "--decoder",
            &arg(&encoder),
            "--cells",
            &arg(&cells),
            "--embeddings",
            &arg(&embeddings),
            "--output",
            &arg(&temp.path().join("bad")),
        ],
    )
    .assert_failure(
        2,
        &["encoder.onnx: not a pf-export decoder (it takes `cells`, not `z`)"],
    );
}

#[test]
fn singlecell_shards_are_whole_plates() {
    let temp = tempfile::tempdir().unwrap();
    let root = shared_data().join("bbbc021/singlecell_tiny");
    let shard = |spec: &str, output: &Path| {
        preprocess(&[
            "singlecell",
            "--root",
            &arg(&root),
            "--shard",
            spec,
            "--output",
            &arg(output),
            "--no-progress",
        ])
    };
    // The fixture's 259 cells are all on plate Week4_27861: shard 0 of 2 holds them, shard 1
    // none, and writes an empty table of the same shape (so a pipeline with more shards than
    // plates runs through), saying so.
    let first = temp.path().join("shard0.parquet");
    shard("0/2", &first).assert_success();
    assert!(shard("0/2", &first).stderr.contains("wrote 259 cells"));
    let empty = temp.path().join("shard1.parquet");
    let outcome = shard("1/2", &empty);
    outcome.assert_success();
    assert!(
        outcome.stderr.contains("holds no plate"),
        "{}",
        outcome.stderr
    );
    let rows = phenoflow_schemas::read_table(&empty, phenoflow_schemas::TableKind::Cells).unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(
        phenoflow_schemas::parquet_io::file_schema(&empty)
            .unwrap()
            .fields(),
        phenoflow_schemas::parquet_io::file_schema(&first)
            .unwrap()
            .fields()
    );
    shard("2/2", &temp.path().join("bad.parquet"))
        .assert_failure(2, &["--shard 2/2: expected I/N with 0 ≤ I < N"]);
}

// ---------------------------------------------------------------------------------------------
// Supervised classification (the second seed): pf-train cnn / resnet18, pf-baseline

/// The separable screen of `make_separable.py` as a cells table of 32×32 grey fields.
fn separable_cells(folder: &Path) -> PathBuf {
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
fn metric_values(path: &Path) -> std::collections::BTreeMap<(String, String), f64> {
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
fn held_out_keys(path: &Path) -> Vec<String> {
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
        // training accuracy is 1, as it would in PyTorch.
        ("resnet18", vec!["--epochs", "20", "--batch-size", "16"]),
    ] {
        let out = folder.path().join(name);
        let mut all = vec![
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
        run(
            &stage("pf-baseline"),
            &[
                "--input",
                &arg(&cells),
                "--classifier",
                classifier,
                "--seed",
                "3",
                "--output",
                &arg(&out),
            ],
        )
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
    run(
        &stage("pf-baseline"),
        &[
            "--input",
            &arg(&cells),
            "--classifier",
            "svm",
            "--label",
            "Metadata_Target",
            "--out",
            &arg(&out),
        ],
    )
    .assert_failure(2, &["whole.parquet", "label column `Metadata_Target`"]);
    assert!(!out.exists(), "nothing written");
    // Every field is object 1: a single class.
    run(
        &stage("pf-baseline"),
        &[
            "--input",
            &arg(&cells),
            "--classifier",
            "random-forest",
            "--label",
            "Metadata_ObjectNumber",
            "--out",
            &arg(&out),
        ],
    )
    .assert_failure(2, &["`Metadata_ObjectNumber` has a single value (1)"]);
    assert!(!out.exists(), "nothing written");
    // A Float64 column is no label.
    run(
        &stage("pf-baseline"),
        &[
            "--input",
            &arg(&cells),
            "--classifier",
            "svm",
            "--label",
            "Metadata_Concentration",
            "--out",
            &arg(&out),
        ],
    )
    .assert_failure(2, &["Metadata_Concentration"]);
    train(&[
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

#[test]
fn cpjump1_like_screen_preprocesses_to_grey_fields_with_dmso_the_majority() {
    let folder = tempfile::tempdir().unwrap();
    let screen = folder.path().join("screen");
    synth(&[
        "--preset",
        "cpjump1",
        "--compounds",
        "6",
        "--plates",
        "2",
        "--sites",
        "1",
        "--field-size",
        "128x128",
        "--output",
        &arg(&screen),
        "--no-progress",
    ])
    .assert_success();
    for channel in ["DNA", "RNA", "ER", "AGP", "Mito"] {
        assert!(screen
            .join("BR00117003")
            .join(format!("A01_s1_{channel}.tif"))
            .exists());
    }
    let output = folder.path().join("whole.parquet");
    preprocess(&[
        "whole",
        "--image-csv",
        &arg(&screen.join("cpjump1_images.csv")),
        "--moa-csv",
        &arg(&screen.join("cpjump1_moa.csv")),
        "--channels",
        "DNA,RNA,ER,AGP,Mito",
        "--size",
        "64",
        "--grey",
        "--output",
        &arg(&output),
        "--no-progress",
    ])
    .assert_success();
    let check = run_python(
        "read_table.py",
        &[&arg(&output), "Metadata_Compound,Metadata_MoA"],
    );
    check.assert_success();
    let rows: Vec<&str> = check.stdout.lines().collect();
    // 2 plates × (6 compounds + 16 DMSO wells) × 1 site.
    assert_eq!(rows.len(), 44);
    assert_eq!(
        rows.iter().filter(|row| row.starts_with("DMSO\t")).count(),
        32
    );
    assert!(
        rows.iter().all(|row| !row.ends_with("\tNone")),
        "every field has an MoA"
    );
    synth(&[
        "--preset",
        "cpjump1",
        "--weeks",
        "Week1",
        "--output",
        &arg(&folder.path().join("x")),
    ])
    .assert_failure(2, &["--weeks"]);
}

// ---------------------------------------------------------------------------------------------
// The classical path: CellProfiler single cells → wells → feature selection → NSC

fn cellprofiler_data() -> (PathBuf, PathBuf) {
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
    run(
        &stage("pf-classify"),
        &[
            "--treatments".to_string(),
            plain("plain-treatments.parquet"),
            "--predictions".into(),
            plain("plain-predictions.parquet"),
            "--metrics".into(),
            plain("plain-metrics.parquet"),
        ],
    )
    .assert_success();
    run(
        &stage("pf-report"),
        &[
            "--metrics".to_string(),
            plain("metrics.parquet"),
            "--metrics-label".into(),
            "CellProfiler features, selected".into(),
            "--compare-metrics".into(),
            format!(
                "CellProfiler features, all={}",
                plain("plain-metrics.parquet")
            ),
            "--output".into(),
            plain("compared"),
        ],
    )
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
    run(
        &stage("pf-report"),
        &[
            "--metrics".to_string(),
            plain("metrics.parquet"),
            "--compare-metrics".into(),
            "no-label-here".into(),
            "--output".into(),
            plain("bad"),
        ],
    )
    .assert_failure(2, &["LABEL=PATH"]);
}
