//! pf-report: the figures from real cells and a tiny model, checked in headless Chromium.

use super::*;

/// Width and height from a PNG's IHDR chunk.
pub(crate) fn png_size(path: &Path) -> (u32, u32) {
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
pub(crate) fn check_report_in_chromium(report: &Path, n_images: usize, scratch: &Path) {
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
    let outcome = Call::stage("pf-report")
        .path("--model-card", model.join("model_card.json"))
        .path("--decoder", &decoder)
        .path("--cells", &cells)
        .path("--embeddings", &embeddings)
        .path("--output", &report)
        .run();
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
    Call::stage("pf-report")
        .path("--model-card", model.join("model_card.json"))
        .path("--decoder", &encoder)
        .path("--cells", &cells)
        .path("--embeddings", &embeddings)
        .path("--output", temp.path().join("bad"))
        .run()
        .assert_failure(
            2,
            &["encoder.onnx: not a pf-export decoder (it takes `cells`, not `z`)"],
        );
    // A decoder that is missing or truncated: the same errors as pf-embed's (phenoflow-onnx).
    let truncated = temp.path().join("truncated.onnx");
    std::fs::write(&truncated, &std::fs::read(&decoder).unwrap()[..100]).unwrap();
    for (file, message) in [
        (temp.path().join("missing.onnx"), "no such decoder file"),
        (truncated, "not a loadable ONNX model"),
    ] {
        Call::stage("pf-report")
            .path("--model-card", model.join("model_card.json"))
            .path("--decoder", &file)
            .path("--cells", &cells)
            .path("--embeddings", &embeddings)
            .path("--output", temp.path().join("bad"))
            .run()
            .assert_failure(2, &[&arg(&file), message]);
        assert!(!temp.path().join("bad").exists());
    }
}
