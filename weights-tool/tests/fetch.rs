//! `weights-tool fetch` against a stand-in hub on localhost (the real one cannot be reached from
//! the test machines): the same two requests the Hugging Face Hub answers, the file selection, and
//! each failure a user meets (unknown repository, gated repository, a download cut off, no
//! network) as a specific error that leaves no partial file behind.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/models/tiny-gelu-eos49407")
}

/// Serves until the test process ends. Routes: `org/tiny` (a whole checkpoint), `org/cut` (its
/// weights file cut off halfway), `org/gated` (401), anything else 404.
fn hub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let files: Vec<String> = std::fs::read_dir(tiny()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            let (status, body, claimed): (&str, Vec<u8>, Option<usize>) = if path == "/api/models/org/gated/revision/main" {
                ("401 Unauthorized", b"{}".to_vec(), None)
            } else if let Some(repo) = path.strip_prefix("/api/models/org/").and_then(|p| p.strip_suffix("/revision/main")) {
                if repo == "tiny" || repo == "cut" {
                    let mut siblings: Vec<String> = files.iter().map(|f| format!(r#"{{"rfilename":"{f}"}}"#)).collect();
                    siblings.push(r#"{"rfilename":"README.md"}"#.into());
                    ("200 OK", format!(r#"{{"sha":"c0ffee","siblings":[{}]}}"#, siblings.join(",")).into_bytes(), None)
                } else {
                    ("404 Not Found", b"{}".to_vec(), None)
                }
            } else if let Some(rest) = path.strip_prefix("/org/tiny/resolve/c0ffee/").or_else(|| path.strip_prefix("/org/cut/resolve/c0ffee/")) {
                let card = (rest == "README.md").then(|| b"---\nlicense: mit\ntags:\n- clip\n---\n# Tiny CLIP\n".to_vec());
                match card.map(Ok).unwrap_or_else(|| std::fs::read(tiny().join(rest))) {
                    Ok(bytes) if path.starts_with("/org/cut/") && rest == "model.safetensors" => {
                        let full = bytes.len();
                        ("200 OK", bytes[..full / 2].to_vec(), Some(full))
                    }
                    Ok(bytes) => ("200 OK", bytes, None),
                    Err(_) => ("404 Not Found", Vec::new(), None),
                }
            } else {
                ("404 Not Found", Vec::new(), None)
            };
            let len = claimed.unwrap_or(body.len());
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn fetch(endpoint: &str, repo: &str, out: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_weights-tool"))
        .args(["fetch", repo, "--endpoint", endpoint, "--out"])
        .arg(out)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weights-tool-fetch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn fetches_a_checkpoint_that_then_embeds() {
    let endpoint = hub();
    let out = scratch("tiny");
    let (ok, stderr) = fetch(&endpoint, "org/tiny", &out);
    assert!(ok, "{stderr}");
    let mut got: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    got.sort();
    assert_eq!(got, ["README.md", "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]);
    for f in got.iter().filter(|f| *f != "README.md") {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(tiny().join(f)).unwrap(), "{f} arrives whole");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_weights-tool")).args(["embed", "--model"]).arg(&out).args(["--text", "a test"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn failures_are_specific_and_leave_no_partial_files() {
    let endpoint = hub();
    let out = scratch("bad");
    let (ok, stderr) = fetch(&endpoint, "org/nothing", &out);
    assert!(!ok && stderr.contains("not found (HTTP 404)"), "{stderr}");
    let (ok, stderr) = fetch(&endpoint, "org/gated", &out);
    assert!(!ok && stderr.contains("gated or private") && stderr.contains("HF_TOKEN"), "{stderr}");
    let (ok, stderr) = fetch(&endpoint, "justaname", &out);
    assert!(!ok && stderr.contains("not a repository id"), "{stderr}");

    let (ok, stderr) = fetch(&endpoint, "org/cut", &out);
    assert!(!ok && stderr.contains("model.safetensors"), "{stderr}");
    assert!(!out.join("model.safetensors").exists() && !out.join("model.safetensors.part").exists(), "nothing half-written");

    // No hub at all: a port that was just closed.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (ok, stderr) = fetch(&format!("http://{closed}"), "org/tiny", &out);
    assert!(!ok && stderr.contains("could not reach the hub"), "{stderr}");
    std::fs::remove_dir_all(out).ok();
}

/// `scripts/add-model.sh` end to end against the stand-in hub: fetch, convert, verify, catalog.
#[test]
fn add_model_script_fetches_converts_verifies_and_writes_the_catalog() {
    let endpoint = hub();
    let models = scratch("add-model");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new("bash")
        .arg(root.join("scripts/add-model.sh"))
        .args(["org/tiny", "--dtype", "q8", "--name", "Tiny CLIP", "--domain", "pathology"])
        .env("HF_ENDPOINT", &endpoint)
        .env("OBSCURA_MODELS", &models)
        .env("WEIGHTS_TOOL", env!("CARGO_BIN_EXE_weights-tool"))
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("zero-shot top-1 agreement"), "{stdout}");
    let catalog: serde_json::Value = serde_json::from_slice(&std::fs::read(models.join("catalog.json")).unwrap()).unwrap();
    let model = &catalog["models"][0];
    assert_eq!((model["name"].as_str(), model["source"].as_str(), model["domain"].as_str()), (Some("Tiny CLIP"), Some("org/tiny"), Some("pathology")));
    // The licence comes from the model card's front matter.
    assert_eq!(model["license"].as_str(), Some("mit"));
    assert_eq!((model["variants"][0]["dtype"].as_str(), model["variants"][0]["path"].as_str()), (Some("q8"), Some("tiny/q8")));
    std::fs::remove_dir_all(&models).ok();
    std::fs::remove_dir_all(root.join("checkpoints/org--tiny")).ok();
}
