//! `weights-tool fetch`: downloads the files of a CLIP checkpoint from the Hugging Face Hub (or a
//! mirror: `--endpoint`, `HF_ENDPOINT`) into a directory that `convert` reads. Two requests kinds:
//! the repository's file listing at a revision (`/api/models/{repo}/revision/{rev}`, which also
//! pins the commit), then each chosen file from `/{repo}/resolve/{commit}/{file}`, streamed to
//! `{file}.part` with a progress bar and renamed only when complete. `HF_TOKEN` is sent when set
//! (gated and private repositories).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct FetchArgs {
    /// Repository id, e.g. openai/clip-vit-base-patch32, vinid/plip, wisdomik/QuiltNet-B-32.
    repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Output directory (default: checkpoints/<owner>--<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The hub's address.
    #[arg(long, env = "HF_ENDPOINT", default_value = "https://huggingface.co")]
    endpoint: String,
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// The files to download from a repository listing: a Hugging Face `CLIPModel` checkpoint
/// (preferred when both layouts are there) or an OpenCLIP one; safetensors before `.bin`.
pub fn select_files(files: &[String]) -> Result<Vec<String>, String> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let optional = |names: &[&str]| names.iter().filter(|f| has(f)).map(|f| f.to_string()).collect::<Vec<_>>();
    if has("config.json") {
        let weights = if has("model.safetensors") {
            "model.safetensors"
        } else if has("pytorch_model.bin") {
            "pytorch_model.bin"
        } else if has("model.safetensors.index.json") || has("pytorch_model.bin.index.json") {
            return Err("the checkpoint is sharded (*.index.json): not supported yet; CLIP checkpoints of this size ship as one file".into());
        } else {
            return Err("config.json but no model.safetensors or pytorch_model.bin".into());
        };
        if !has("tokenizer.json") {
            return Err("no tokenizer.json (only the slow tokenizer's vocab.json and merges.txt?): save the tokenizer with transformers' CLIPTokenizerFast and convert from a local directory".into());
        }
        let mut out = vec!["config.json".to_string(), weights.to_string(), "tokenizer.json".to_string()];
        // The model card: its front matter names the licence, which `convert` records.
        out.extend(optional(&["preprocessor_config.json", "tokenizer_config.json", "README.md"]));
        return Ok(out);
    }
    if has("open_clip_config.json") {
        let weights = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.bin"]
            .into_iter()
            .find(|f| has(f))
            .ok_or("open_clip_config.json but no open_clip_model.safetensors or open_clip_pytorch_model.bin")?;
        let mut out = vec!["open_clip_config.json".to_string(), weights.to_string()];
        out.extend(optional(&["tokenizer.json", "README.md"]));
        return Ok(out);
    }
    let mut listed: Vec<&str> = files.iter().map(String::as_str).take(12).collect();
    if files.len() > 12 {
        listed.push("…");
    }
    Err(format!(
        "neither config.json (Hugging Face CLIP) nor open_clip_config.json (OpenCLIP) is in the repository; it has: {}",
        listed.join(", ")
    ))
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(20)).build()
}

fn get(agent: &ureq::Agent, url: &str, what: &str) -> anyhow::Result<ureq::Response> {
    let mut req = agent.get(url).set("user-agent", concat!("obscura-weights-tool/", env!("CARGO_PKG_VERSION")));
    if let Ok(token) = std::env::var("HF_TOKEN") {
        req = req.set("authorization", &format!("Bearer {}", token.trim()));
    }
    match req.call() {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(code @ (401 | 403), _)) => {
            bail!("{what}: HTTP {code}: the repository is gated or private; accept its terms on the hub and set HF_TOKEN")
        }
        Err(ureq::Error::Status(404, _)) => bail!("{what}: not found (HTTP 404): check the repository id and revision"),
        Err(ureq::Error::Status(code, r)) => bail!("{what}: HTTP {code} {}", r.status_text()),
        Err(ureq::Error::Transport(t)) => bail!("{what}: could not reach the hub ({t})"),
    }
}

fn download(agent: &ureq::Agent, url: &str, file: &str, dest: &Path) -> anyhow::Result<u64> {
    let resp = get(agent, url, file)?;
    let total: Option<u64> = resp.header("content-length").and_then(|v| v.parse().ok());
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0)).with_style(
        indicatif::ProgressStyle::with_template("{msg:>28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(file.to_string());
    let part = dest.with_extension(format!("{}part", dest.extension().map(|e| format!("{}.", e.to_string_lossy())).unwrap_or_default()));
    let result = (|| -> anyhow::Result<u64> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?);
        let mut body = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let k = body.read(&mut buf).with_context(|| format!("{file}: the connection failed after {n} bytes"))?;
            if k == 0 {
                break;
            }
            out.write_all(&buf[..k]).with_context(|| format!("writing {}", part.display()))?;
            n += k as u64;
            bar.set_position(n);
        }
        out.flush()?;
        if let Some(t) = total.filter(|&t| t != n) {
            bail!("{file}: the download stopped after {n} of {t} bytes");
        }
        Ok(n)
    })();
    bar.finish_and_clear();
    match result {
        Ok(n) => {
            std::fs::rename(&part, dest).with_context(|| format!("renaming {}", part.display()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

pub fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let repo = args.repo.trim_matches('/');
    if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
        bail!("`{repo}` is not a repository id: expected owner/name, e.g. openai/clip-vit-base-patch32");
    }
    let endpoint = args.endpoint.trim_end_matches('/');
    let agent = agent();
    let info_url = format!("{endpoint}/api/models/{repo}/revision/{}", args.revision);
    let listing = get(&agent, &info_url, &format!("{repo}@{}", args.revision))?
        .into_string()
        .with_context(|| format!("{info_url}: reading the repository listing"))?;
    let info: RepoInfo = serde_json::from_str(&listing).with_context(|| format!("{info_url}: not a repository listing"))?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = select_files(&names).map_err(|e| anyhow::anyhow!("{repo}: {e}"))?;
    // Pin every file to the commit the listing named, so a push mid-download cannot mix versions.
    let commit = info.sha.unwrap_or_else(|| args.revision.clone());
    let out = args.out.unwrap_or_else(|| PathBuf::from("checkpoints").join(repo.replace('/', "--")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut total = 0;
    for file in &files {
        let url = format!("{endpoint}/{repo}/resolve/{commit}/{file}");
        total += download(&agent, &url, file, &out.join(file))?;
        eprintln!("weights-tool: {file} done");
    }
    eprintln!(
        "weights-tool: {repo} at {commit}: {} files, {total} bytes in {}\nnext: weights-tool convert {} --out public/models/<name> --dtype q8",
        files.len(),
        out.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::select_files;

    fn list(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hugging_face_layout_prefers_safetensors() {
        let files = list(&["README.md", "config.json", "pytorch_model.bin", "model.safetensors", "tokenizer.json", "vocab.json", "preprocessor_config.json", "flax_model.msgpack"]);
        assert_eq!(select_files(&files).unwrap(), ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "README.md"]);
        // vinid/plip ships pytorch_model.bin only.
        let files = list(&["config.json", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json"]);
        assert_eq!(select_files(&files).unwrap(), ["config.json", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json"]);
    }

    #[test]
    fn open_clip_layout() {
        let files = list(&["README.md", "open_clip_config.json", "open_clip_pytorch_model.bin"]);
        assert_eq!(select_files(&files).unwrap(), ["open_clip_config.json", "open_clip_pytorch_model.bin", "README.md"]);
    }

    #[test]
    fn unusable_repositories_are_explained() {
        let err = |xs: &[&str]| select_files(&list(xs)).unwrap_err();
        assert!(err(&["config.json", "tokenizer.json"]).contains("no model.safetensors"));
        assert!(err(&["config.json", "model.safetensors"]).contains("no tokenizer.json"));
        assert!(err(&["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]).contains("sharded"));
        assert!(err(&["README.md", "weights.ckpt"]).contains("it has: README.md, weights.ckpt"));
    }
}
