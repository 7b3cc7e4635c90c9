//! pf-synth: the synthetic screens (BBBC021- and CPJUMP1-like) and what pf-preprocess makes of them.

use super::*;

pub(crate) fn synth<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    run(&stage("pf-synth"), args)
}

/// Every file under `folder` (relative path → bytes), sorted.
pub(crate) fn folder_contents(folder: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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
