//! Checkpoints as they come from the hub, read lazily: a [`Folder`] of named [`Source`]s (files on
//! disk natively, `File`s dropped in the browser, or bytes in memory), recognised as a Hugging
//! Face `CLIPModel` checkpoint or an OpenCLIP one, whose tensors are read one at a time
//! ([`Tensors`]). A 600 MB `pytorch_model.bin` is never held in memory whole: the converter reads
//! a tensor, encodes it and lets it go.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::pickle::TorchArchive;
use crate::weights::{HostTensor, RawTensorInfo, Weights, parse_safetensors_header};

/// Random access to the bytes of one file.
pub trait Source {
    /// The file's name, for messages.
    fn name(&self) -> &str;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset`; reading past the end is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The whole file.
    fn read_all(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len() as usize];
        self.read_at(0, &mut buf)?;
        Ok(buf)
    }
}

/// A file's bytes in memory.
pub struct Bytes {
    pub name: String,
    pub data: Vec<u8>,
}

impl Bytes {
    pub fn source(name: impl Into<String>, data: Vec<u8>) -> Rc<dyn Source> {
        Rc::new(Self { name: name.into(), data })
    }
}

impl Source for Bytes {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len());
        let Some(end) = end else { return Err(past_end(&self.name, offset, buf.len(), self.len())) };
        buf.copy_from_slice(&self.data[offset as usize..end as usize]);
        Ok(())
    }
}

pub fn past_end(name: &str, offset: u64, len: usize, size: u64) -> Error {
    Error::Weights { file: name.into(), reason: format!("bytes {offset}..{} are past the end of the file ({size} bytes; truncated?)", offset + len as u64) }
}

/// A file on disk, read with seeks (never loaded whole).
#[cfg(not(target_family = "wasm"))]
pub struct DiskFile {
    path: String,
    len: u64,
    file: std::sync::Mutex<std::fs::File>,
}

#[cfg(not(target_family = "wasm"))]
impl DiskFile {
    pub fn open(path: &std::path::Path) -> Result<Rc<dyn Source>> {
        let io = |source| Error::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(Rc::new(Self { path: path.display().to_string(), len, file: std::sync::Mutex::new(file) }))
    }
}

#[cfg(not(target_family = "wasm"))]
impl Source for DiskFile {
    fn name(&self) -> &str {
        &self.path
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(past_end(&self.path, offset, buf.len(), self.len));
        }
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let io = |source| Error::Io { path: self.path.clone(), source };
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.read_exact(buf).map_err(io)
    }
}

/// `Read + Seek` over a [`Source`] (for the zip reader).
struct SourceReader {
    src: Rc<dyn Source>,
    pos: u64,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.src.len().saturating_sub(self.pos) as usize).min(buf.len());
        self.src.read_at(self.pos, &mut buf[..n]).map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SourceReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.src.len() as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if pos < 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"));
        }
        self.pos = pos as u64;
        Ok(self.pos)
    }
}

/// Named files, e.g. a checkpoint directory or the files dropped on the page.
pub trait Folder {
    /// The file called `name` (a plain file name), if there is one.
    fn file(&self, name: &str) -> Option<Rc<dyn Source>>;
}

/// Files by name (what was dropped in a browser, or bytes in tests). A path such as
/// `plip/config.json` is filed under its last component.
#[derive(Default, Clone)]
pub struct Files(pub HashMap<String, Rc<dyn Source>>);

impl Files {
    pub fn insert(&mut self, path: &str, src: Rc<dyn Source>) {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        self.0.insert(name.to_string(), src);
    }
}

impl Folder for Files {
    fn file(&self, name: &str) -> Option<Rc<dyn Source>> {
        self.0.get(name).cloned()
    }
}

/// A directory on disk.
#[cfg(not(target_family = "wasm"))]
pub struct Dir(pub std::path::PathBuf);

#[cfg(not(target_family = "wasm"))]
impl Folder for Dir {
    fn file(&self, name: &str) -> Option<Rc<dyn Source>> {
        let path = self.0.join(name);
        path.is_file().then(|| DiskFile::open(&path).ok()).flatten()
    }
}

/// One tensor's name, shape and stored size.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

/// Tensors read one at a time.
pub trait Tensors {
    /// Every float tensor, sorted by name.
    fn list(&self) -> Vec<TensorInfo>;
    fn get(&self, name: &str) -> Result<HostTensor>;
}

/// A safetensors file: the header is read at once, each tensor when asked for.
struct LazySafetensors {
    src: Rc<dyn Source>,
    entries: BTreeMap<String, RawTensorInfo>,
}

impl LazySafetensors {
    fn open(src: Rc<dyn Source>) -> Result<Self> {
        let bad = |reason: String| Error::Weights { file: src.name().to_string(), reason };
        if src.len() < 8 {
            return Err(bad(format!("{} bytes is too short for a safetensors file", src.len())));
        }
        let mut n = [0u8; 8];
        src.read_at(0, &mut n)?;
        let n = u64::from_le_bytes(n);
        if n > 100_000_000 || 8 + n > src.len() {
            return Err(bad(format!("header claims {n} bytes but the file has {} (truncated, or not safetensors?)", src.len())));
        }
        let mut header = vec![0u8; n as usize];
        src.read_at(8, &mut header)?;
        let entries = parse_safetensors_header(&header, 8 + n, src.len(), src.name())?
            .into_iter()
            .filter(|(_, info)| crate::weights::Dtype::from_safetensors(&info.dtype).is_some())
            .collect();
        Ok(Self { src, entries })
    }
}

impl Tensors for LazySafetensors {
    fn list(&self) -> Vec<TensorInfo> {
        self.entries.iter().map(|(n, i)| TensorInfo { name: n.clone(), shape: i.shape.clone(), bytes: (i.end - i.start) as u64 }).collect()
    }

    fn get(&self, name: &str) -> Result<HostTensor> {
        let info = self.entries.get(name).ok_or_else(|| Error::MissingTensor { key: name.to_string() })?;
        let dtype = crate::weights::Dtype::from_safetensors(&info.dtype).expect("listed float tensors only");
        let mut bytes = vec![0u8; info.end - info.start];
        self.src.read_at(info.start as u64, &mut bytes)?;
        Ok(HostTensor { shape: info.shape.clone(), data: bytes.chunks_exact(dtype.size()).map(|c| dtype.read_f32(c)).collect() })
    }
}

/// A PyTorch zip archive, read tensor by tensor.
struct LazyTorch {
    name: String,
    archive: RefCell<TorchArchive<BufReader<SourceReader>>>,
    list: Vec<TensorInfo>,
}

impl LazyTorch {
    fn open(src: Rc<dyn Source>) -> Result<Self> {
        let name = src.name().to_string();
        let reader = BufReader::with_capacity(1 << 16, SourceReader { src, pos: 0 });
        let archive = TorchArchive::open(reader, &name).map_err(|reason| Error::Weights { file: name.clone(), reason })?;
        let mut list: Vec<TensorInfo> = archive
            .tensors()
            .map(|(n, t)| {
                let numel: usize = t.size.iter().product();
                TensorInfo { name: n.to_string(), shape: t.size.clone(), bytes: (numel * t.dtype.map_or(4, |d| d.size())) as u64 }
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { name, archive: RefCell::new(archive), list })
    }
}

impl Tensors for LazyTorch {
    fn list(&self) -> Vec<TensorInfo> {
        self.list.clone()
    }

    fn get(&self, name: &str) -> Result<HostTensor> {
        if !self.list.iter().any(|t| t.name == name) {
            return Err(Error::MissingTensor { key: name.to_string() });
        }
        self.archive.borrow_mut().read(name).map_err(|reason| Error::Weights { file: self.name.clone(), reason })
    }
}

/// Opens a weights file by its content: a PyTorch zip archive or safetensors.
pub fn open_weights(src: Rc<dyn Source>) -> Result<Box<dyn Tensors>> {
    let mut magic = [0u8; 2];
    if src.len() >= 2 {
        src.read_at(0, &mut magic)?;
    }
    let name = src.name().to_string();
    if &magic == b"PK" || name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth") {
        Ok(Box::new(LazyTorch::open(src)?))
    } else {
        Ok(Box::new(LazySafetensors::open(src)?))
    }
}

impl Weights {
    /// Reads every tensor of `tensors` into memory.
    pub fn from_tensors(tensors: &dyn Tensors) -> Result<Self> {
        let mut map = HashMap::new();
        for t in tensors.list() {
            map.insert(t.name.clone(), tensors.get(&t.name)?);
        }
        Ok(Weights::from_map(map))
    }
}

/// How a checkpoint's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `config.json` + `model.safetensors` or `pytorch_model.bin` + `tokenizer.json`.
    HuggingFace,
    /// `open_clip_config.json` + `open_clip_model.safetensors` or `open_clip_pytorch_model.bin`.
    OpenClip,
    /// `manifest.json` + shards + tokenizer: already converted.
    Converted,
}

impl Layout {
    /// Recognises a folder's layout from its marker file, or says what is missing.
    pub fn detect(folder: &dyn Folder) -> Result<Self> {
        if folder.file("manifest.json").is_some() {
            Ok(Self::Converted)
        } else if folder.file(crate::openclip::CONFIG).is_some() {
            Ok(Self::OpenClip)
        } else if folder.file("config.json").is_some() {
            Ok(Self::HuggingFace)
        } else {
            Err(Error::MissingFile {
                file: "config.json".into(),
                purpose: "it describes the model's architecture and sizes. Add a Hugging Face CLIPModel checkpoint folder (config.json, model.safetensors or pytorch_model.bin, tokenizer.json), an OpenCLIP one (open_clip_config.json and its weights) or a converted model (manifest.json)".into(),
            })
        }
    }
}

/// A checkpoint ready to convert or to load: Hugging Face-shaped config, preprocessing and
/// tokenizer, and lazily read tensors under `CLIPModel` names.
pub struct Checkpoint {
    pub layout: Layout,
    /// The Hugging Face `config.json` (for OpenCLIP, the one its config maps to).
    pub config_json: String,
    pub preprocessor_json: Option<String>,
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: Option<String>,
    /// The weights file's name.
    pub weights_name: String,
    /// The model card (`README.md`), when there is one.
    pub readme: Option<String>,
    pub tensors: Box<dyn Tensors>,
}

const HF_WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

fn text(src: &Rc<dyn Source>) -> Result<String> {
    String::from_utf8(src.read_all()?).map_err(|_| Error::Config { file: src.name().into(), reason: "not UTF-8 text".into() })
}

impl Checkpoint {
    /// Opens a Hugging Face or OpenCLIP checkpoint. `tokenizer` is a CLIP `tokenizer.json` to use
    /// when the folder has none (OpenCLIP checkpoints use CLIP's BPE and rarely ship one).
    pub fn open(folder: &dyn Folder, tokenizer: Option<&[u8]>) -> Result<Self> {
        let layout = Layout::detect(folder)?;
        let readme = folder.file("README.md").and_then(|f| text(&f).ok());
        let tokenizer_json = |required: bool| -> Result<Vec<u8>> {
            match (folder.file("tokenizer.json"), tokenizer) {
                (Some(f), _) => f.read_all(),
                (None, Some(t)) if !required => Ok(t.to_vec()),
                _ => Err(Error::MissingFile {
                    file: "tokenizer.json".into(),
                    purpose: "it turns prompts into the model's tokens (the checkpoint's own tokenizer.json; Hugging Face CLIP checkpoints ship one)".into(),
                }),
            }
        };
        match layout {
            Layout::Converted => Err(Error::Config {
                file: "manifest.json".into(),
                reason: "this is a converted model: load it as it is, there is nothing to convert".into(),
            }),
            Layout::HuggingFace => {
                let config_json = text(&folder.file("config.json").expect("detected"))?;
                // Refuse another architecture before reading any weights.
                crate::ClipConfig::from_hf_json(&config_json, "config.json")?;
                let weights = HF_WEIGHTS.iter().find_map(|n| folder.file(n)).ok_or_else(|| Error::MissingFile {
                    file: "model.safetensors or pytorch_model.bin".into(),
                    purpose: "the model's weights".into(),
                })?;
                let weights_name = weights.name().rsplit(['/', '\\']).next().unwrap_or_default().to_string();
                Ok(Self {
                    layout,
                    config_json,
                    preprocessor_json: folder.file("preprocessor_config.json").map(|f| text(&f)).transpose()?,
                    tokenizer_json: tokenizer_json(true)?,
                    tokenizer_config_json: folder.file("tokenizer_config.json").map(|f| text(&f)).transpose()?,
                    weights_name,
                    readme,
                    tensors: open_weights(weights)?,
                })
            }
            Layout::OpenClip => {
                let raw = text(&folder.file(crate::openclip::CONFIG).expect("detected"))?;
                let mapped = crate::openclip::map_config(&raw)?;
                let weights = crate::openclip::WEIGHTS.iter().find_map(|n| folder.file(n)).ok_or_else(|| Error::MissingFile {
                    file: crate::openclip::WEIGHTS.join(" or "),
                    purpose: "the OpenCLIP model's weights".into(),
                })?;
                let weights_name = weights.name().rsplit(['/', '\\']).next().unwrap_or_default().to_string();
                let inner = open_weights(weights)?;
                let tensors = crate::openclip::Mapped::new(inner, mapped.vision_layers, mapped.text_layers)?;
                Ok(Self {
                    layout,
                    config_json: mapped.config_json,
                    preprocessor_json: Some(mapped.preprocessor_json),
                    tokenizer_json: tokenizer_json(false)?,
                    tokenizer_config_json: None,
                    weights_name: format!("{weights_name} (OpenCLIP, mapped)"),
                    readme,
                    tensors: Box::new(tensors),
                })
            }
        }
    }

    /// The licence named in the model card's front matter (`license: mit`), if any.
    pub fn license(&self) -> Option<String> {
        license_from_card(self.readme.as_deref()?)
    }

    /// Every tensor, read into memory (to build the unconverted model).
    pub fn weights(&self) -> Result<Weights> {
        Weights::from_tensors(self.tensors.as_ref())
    }
}

/// `license:` from a Hugging Face model card's YAML front matter.
pub fn license_from_card(readme: &str) -> Option<String> {
    let body = readme.trim_start().strip_prefix("---")?;
    let front = &body[..body.find("\n---")?];
    front.lines().find_map(|l| {
        let v = l.trim().strip_prefix("license:")?.trim().trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licence_from_front_matter() {
        assert_eq!(license_from_card("---\nlanguage: en\nlicense: mit\ntags:\n- clip\n---\n# PLIP"), Some("mit".into()));
        assert_eq!(license_from_card("# no front matter\nlicense: mit"), None);
    }

    #[test]
    fn safetensors_are_read_tensor_by_tensor() {
        let a = HostTensor { shape: vec![2, 2], data: vec![1., 2., 3., 4.] };
        let b = HostTensor { shape: vec![3], data: vec![5., 6., 7.] };
        let bytes = crate::weights::write_safetensors(&[("a", &a), ("b", &b)]);
        let t = open_weights(Bytes::source("m.safetensors", bytes.clone())).unwrap();
        assert_eq!(t.list().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t.get("b").unwrap(), b);
        // Truncated: the header is fine, the last tensor is cut.
        let err = open_weights(Bytes::source("m.safetensors", bytes[..bytes.len() - 4].to_vec())).err().unwrap();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn a_folder_without_config_names_what_is_missing() {
        let err = Checkpoint::open(&Files::default(), None).err().unwrap().to_string();
        assert!(err.starts_with("config.json is missing"), "{err}");
        let mut files = Files::default();
        files.insert("plip/config.json", Bytes::source("config.json", br#"{"model_type":"siglip"}"#.to_vec()));
        let err = Checkpoint::open(&files, None).err().unwrap().to_string();
        assert!(err.contains("siglip"), "{err}");
    }
}
