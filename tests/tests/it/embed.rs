//! pf-export and pf-embed: the exported encoder equals libtorch, hand-crafted features equal numpy, the shipped demo model; their errors.

use super::*;

pub(crate) fn export(model: &Path, encoder: &Path, decoder: &Path) -> Outcome {
    Call::stage("pf-export")
        .path("--model-card", model.join("model_card.json"))
        .path("--encoder", encoder)
        .path("--decoder", decoder)
        .run()
}

/// Trains `model_kind` on `cells` for a few epochs into `model` and exports it: (model folder,
/// encoder, decoder).
pub(crate) fn trained_and_exported(
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

pub(crate) fn embed<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
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
