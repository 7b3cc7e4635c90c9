//! pf-preprocess: BBBC021 fields, pre-cropped cells and whole images against numpy, tifffile and scikit-image; its errors.

use super::*;

pub(crate) fn preprocess<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-preprocess"), args)
}

/// ExampleHuman's three channels as a BBBC021-style image table (DAPI = DNA, Tubulin = PH3,
/// Actin = cell body), so that the raw-layout code path reads real pixels.
pub(crate) fn examplehuman_table(folder: &Path) -> PathBuf {
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
pub(crate) const EXAMPLEHUMAN_NUCLEI: [&str; 10] = [
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
pub(crate) fn generated_fields(folder: &Path, n_fields: usize) -> (PathBuf, PathBuf) {
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

pub(crate) fn bbbc021_args(image_csv: &Path, moa_csv: &Path, output: &Path) -> Vec<String> {
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
pub(crate) fn assert_nothing_written(output: &Path) {
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
