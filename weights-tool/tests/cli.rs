//! Runs the `weights-tool` binary like a user would and checks its output against the golden
//! fixtures (`tests/golden/`, made by transformers).

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weights-tool"))
}

fn golden_json(model: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden().join(format!("{model}.json"))).unwrap()).unwrap()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn embed_prints_json_skips_bad_images_and_exits_nonzero() {
    let model = "tiny-gelu-eos49407";
    let out_dir = std::env::temp_dir().join(format!("weights-tool-cli-{}", std::process::id()));
    let g = golden();
    let output = tool()
        .args(["embed", "--backend", "cpu", "--model"])
        .arg(g.join("models").join(model))
        .arg("--image")
        .arg(g.join("images/odd-37x23.png"))
        .arg("--image")
        .arg(g.join("bad/empty.png"))
        .arg("--image")
        .arg(g.join("bad/truncated.png"))
        .arg("--image")
        .arg(g.join("bad/notes.txt"))
        .arg("--image")
        .arg(g.join("images/exif8-50x30.png"))
        .args(["--text", "a photo of a cat", "--text", "lymphocytes", "--pixels-out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a bad image makes the exit code non-zero; stderr: {stderr}");
    assert!(stderr.contains("empty.png: empty file (0 bytes)"), "{stderr}");
    assert!(stderr.contains("truncated.png: corrupt or truncated"), "{stderr}");
    assert!(stderr.contains("notes.txt: not a supported image"), "{stderr}");
    assert!(stderr.contains("3 image(s) could not be embedded"), "{stderr}");

    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["backend"], "cpu");
    assert_eq!(json["precision"], "f32", "the CPU backend computes in f32");
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "the good images are still embedded");
    let gold = golden_json(model);
    for (img, file) in images.iter().zip(["odd-37x23.png", "exif8-50x30.png"]) {
        assert!(img["path"].as_str().unwrap().ends_with(file));
        let want = gold["images"].as_array().unwrap().iter().find(|e| e["file"] == file && e["exif"] == "apply").unwrap();
        let c = cosine(&floats(&img["embedding"]), &floats(&want["embedding"]));
        assert!(c >= 0.99999, "{file}: cosine {c} to transformers");
        let norm: f64 = floats(&img["embedding"]).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "embeddings are L2-normalised");
    }
    let texts = json["texts"].as_array().unwrap();
    assert_eq!(texts[1]["text"], "lymphocytes");
    let want = gold["texts"].as_array().unwrap().iter().find(|t| t["text"] == "lymphocytes").unwrap();
    assert_eq!(texts[1]["input_ids"], want["input_ids"]);
    assert!(cosine(&floats(&texts[1]["embedding"]), &floats(&want["embedding"])) >= 0.99999);
    let logits = json["logits_per_image"].as_array().unwrap();
    assert_eq!((logits.len(), logits[0].as_array().unwrap().len()), (2, 2));

    // --pixels-out: NumPy [3, 48, 48] float32 equal to transformers' pixel values.
    let npy = std::fs::read(out_dir.join("odd-37x23.npy")).unwrap();
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (3, 48, 48)"), "{header}");
    assert_eq!((10 + header_len) % 64, 0);
    let ours: Vec<f32> = npy[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let theirs: Vec<f32> = std::fs::read(g.join("pixels").join(model).join("odd-37x23.apply.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(ours.len() == theirs.len() && max <= 1e-5, "pixels differ by {max}");
    assert!(!out_dir.join("empty.npy").exists());
    std::fs::remove_dir_all(out_dir).ok();
}

#[test]
fn exif_ignore_changes_the_pixel_grid() {
    let g = golden();
    let run = |mode: &str| {
        let out = tool()
            .args(["embed", "--backend", "cpu", "--exif", mode, "--model"])
            .arg(g.join("models/tiny-quickgelu-eos2"))
            .arg("--image")
            .arg(g.join("images/exif8-50x30.png"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        floats(&json["images"][0]["embedding"])
    };
    let gold = golden_json("tiny-quickgelu-eos2");
    for mode in ["apply", "ignore"] {
        let want = gold["images"].as_array().unwrap().iter().find(|e| e["file"] == "exif8-50x30.png" && e["exif"] == mode).unwrap();
        let c = cosine(&run(mode), &floats(&want["embedding"]));
        assert!(c >= 0.99999, "--exif {mode}: cosine {c}");
    }
}

#[test]
fn errors_are_specific_and_exit_2() {
    let g = golden();
    let out = tool().args(["embed", "--model"]).arg(g.join("images")).args(["--text", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config.json is missing"), "{stderr}");
    let out = tool().args(["embed", "--model"]).arg(g.join("models/tiny-gelu-eos49407")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to embed"));
}

/// `embed --slide`: the JSON the issue specifies, patches inside the slide, PNG crops, and a bad
/// slide skipped by name while the good one is still embedded.
#[test]
fn embed_slide_tiles_embeds_and_writes_patches() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let slides = root.join("tests/slides/data");
    let out_dir = std::env::temp_dir().join(format!("weights-tool-slide-{}", std::process::id()));
    let output = tool()
        .args(["embed", "--backend", "cpu", "--model"])
        .arg(root.join("public/models/demo"))
        .arg("--slide")
        .arg(slides.join("small-dicom"))
        .arg("--slide")
        .arg(slides.join("refused/slide.ndpi"))
        .args(["--mpp", "0.5", "--overlap", "0.25", "--pixels-out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a refused slide makes the exit status 2: {stderr}");
    assert!(stderr.contains("slide.ndpi") && stderr.contains("Hamamatsu NDPI"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let slides_out = json["slides"].as_array().unwrap();
    assert_eq!(slides_out.len(), 1);
    let s = &slides_out[0];
    // Level 1 is 0.5 µm/px already: read as it is, 96-px squares, stride 72 (overlap 0.25).
    assert_eq!((s["width"].as_u64(), s["height"].as_u64(), s["level"].as_u64()), (Some(520), Some(390), Some(1)));
    assert_eq!(s["mpp"].as_f64(), Some(0.5));
    assert!((s["slide_mpp"].as_f64().unwrap() - 0.25).abs() < 1e-9);
    let patches = s["patches"].as_array().unwrap();
    // Level 1 is 260x195: columns at 0, 72, 144 (216 would lie 54% off the slide, and off the
    // slide is glass); rows at 0, 72, 144 (the last 53% on it). All tissue: 3 x 3 patches.
    assert_eq!(patches.len(), 9, "{patches:?}");
    for p in patches {
        let (x, y, size) = (p["x"].as_u64().unwrap(), p["y"].as_u64().unwrap(), p["size"].as_u64().unwrap());
        assert_eq!(size, 192);
        assert!(x % 144 == 0 && y % 144 == 0 && x < 520 && y < 390);
        let e = floats(&p["embedding"]);
        assert_eq!(e.len(), 64);
        assert!((e.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-4);
        let png = out_dir.join(format!("small-dicom_{x}_{y}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("{} not written", png.display()));
        assert_eq!(&bytes[1..4], b"PNG");
    }
    std::fs::remove_dir_all(&out_dir).ok();
}

/// `embed --slide --collection-out`: a collection file the app imports, one item per patch,
/// with the patch's origin and the model's manifest hash.
#[test]
fn embed_slide_writes_a_collection_the_app_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("public/models/demo");
    let out = std::env::temp_dir().join(format!("weights-tool-slide-{}.obscura", std::process::id()));
    let output = tool()
        .args(["embed", "--backend", "cpu", "--model"])
        .arg(&model)
        .arg("--slide")
        .arg(root.join("tests/slides/data/tumour.svs"))
        .arg("--collection-out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let patches = json["slides"][0]["patches"].as_array().unwrap();
    let parsed = model_wasm::collection::parse_whole(&std::fs::read(&out).unwrap()).unwrap();
    use sha2::Digest;
    let manifest = sha2::Sha256::digest(std::fs::read(model.join("manifest.json")).unwrap());
    assert_eq!(parsed.header.manifest_sha256, model_wasm::collection::hex(&manifest));
    assert_eq!(parsed.header.dim, 64);
    assert_eq!(parsed.items.len(), patches.len());
    let hashes: std::collections::HashSet<_> = parsed.items.iter().map(|i| i.hash).collect();
    assert_eq!(hashes.len(), patches.len(), "every patch has its own hash");
    for (item, p) in parsed.items.iter().zip(patches) {
        let o = item.origin.as_ref().expect("a patch keeps its origin");
        assert_eq!((o.slide.as_str(), o.x as u64, o.y as u64), ("tumour.svs", p["x"].as_u64().unwrap(), p["y"].as_u64().unwrap()));
        assert_eq!(&item.thumb[..2], &[0xFF, 0xD8], "a JPEG thumbnail");
        let e = floats(&p["embedding"]);
        assert!(item.embedding.iter().zip(&e).all(|(a, b)| (*a as f64 - b).abs() < 1e-6));
    }
    // Without a converted model or a slide it is refused, by reason.
    let refused = tool()
        .args(["embed", "--backend", "cpu", "--model"])
        .arg(root.join("demo/checkpoint"))
        .arg("--slide")
        .arg(root.join("tests/slides/data/tumour.svs"))
        .arg("--collection-out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("converted model"));
    std::fs::remove_file(&out).ok();
}

/// A slide with a damaged tile: the patches on that tile are reported, the others embedded.
#[test]
fn a_damaged_tile_loses_its_patches_not_the_slide() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = tool()
        .args(["embed", "--backend", "cpu", "--model"])
        .arg(root.join("public/models/demo"))
        .arg("--slide")
        .arg(root.join("tests/slides/data/refused/corrupt-tile.svs"))
        // 0.25 µm/px reads level 0, where tile 5 (x 0-127, y 128-255) is zeroed.
        .args(["--mpp", "0.25", "--min-tissue", "0.3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("corrupt") && stderr.contains("tile 0,1 of level 0"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let s = &json["slides"][0];
    let (bad, good) = (s["unreadable"].as_u64().unwrap(), s["patches"].as_array().unwrap().len() as u64);
    assert!((1..=4).contains(&bad) && good >= 10, "{bad} unreadable, {good} embedded");
    for p in s["patches"].as_array().unwrap() {
        let (x, y) = (p["x"].as_u64().unwrap(), p["y"].as_u64().unwrap());
        assert!(!(x < 128 && y + 96 > 128 && y < 256), "a patch on the damaged tile was embedded: {x},{y}");
    }
}
