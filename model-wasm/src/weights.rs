//! Checkpoint tensors on the host: Hugging Face `model.safetensors` and PyTorch
//! `pytorch_model.bin`, read from bytes (everywhere) or a path (native).

use std::collections::HashMap;

use half::{bf16, f16};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Element types found in checkpoints. All are widened to f32 on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::F64 => 8,
        }
    }

    #[inline]
    pub(crate) fn read_f32(self, b: &[u8]) -> f32 {
        match self {
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Self::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Self::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        }
    }

    pub(crate) fn from_safetensors(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(Self::F32),
            "F16" => Some(Self::F16),
            "BF16" => Some(Self::BF16),
            "F64" => Some(Self::F64),
            _ => None,
        }
    }
}

/// A dense, row-major f32 tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All tensors of a checkpoint by their Hugging Face names.
#[derive(Debug, Default)]
pub struct Weights {
    tensors: HashMap<String, HostTensor>,
}

impl Weights {
    /// Parse a `.safetensors` file's bytes. Integer tensors (`position_ids`) are skipped.
    pub fn from_safetensors(bytes: &[u8], file: &str) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (name, raw) in read_safetensors_raw(bytes, file)? {
            let Some(dtype) = Dtype::from_safetensors(&raw.dtype) else { continue };
            let data = raw.bytes.chunks_exact(dtype.size()).map(|c| dtype.read_f32(c)).collect();
            tensors.insert(name, HostTensor { shape: raw.shape, data });
        }
        Ok(Self { tensors })
    }

    /// Parse a PyTorch `torch.save` zip archive (`pytorch_model.bin`). No pickled code runs.
    pub fn from_torch_bin(bytes: &[u8], file: &str) -> Result<Self> {
        let tensors = crate::pickle::read_torch_zip(bytes, file)
            .map_err(|reason| Error::Weights { file: file.to_string(), reason })?;
        Ok(Self { tensors })
    }

    /// Pick the parser by content: safetensors or a PyTorch zip.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        if bytes.starts_with(b"PK") || file.ends_with(".bin") || file.ends_with(".pt") || file.ends_with(".pth") {
            Self::from_torch_bin(bytes, file)
        } else {
            Self::from_safetensors(bytes, file)
        }
    }

    pub fn from_map(tensors: HashMap<String, HostTensor>) -> Self {
        Self { tensors }
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&HostTensor> {
        self.tensors.get(key)
    }

    /// Remove a tensor, checking its shape. A missing or mis-shaped tensor is an error naming it.
    pub fn take(&mut self, key: &str, expected: &[usize]) -> Result<HostTensor> {
        let t = self.tensors.remove(key).ok_or_else(|| Error::MissingTensor { key: key.to_string() })?;
        if t.shape != expected {
            return Err(Error::ShapeMismatch { key: key.to_string(), expected: expected.to_vec(), got: t.shape });
        }
        Ok(t)
    }

    /// `logit_scale` is a 0-d tensor in checkpoints; accept `[]` or `[1]`.
    pub fn take_scalar(&mut self, key: &str) -> Result<f32> {
        let t = self.tensors.remove(key).ok_or_else(|| Error::MissingTensor { key: key.to_string() })?;
        if t.data.len() != 1 {
            return Err(Error::ShapeMismatch { key: key.to_string(), expected: vec![], got: t.shape });
        }
        Ok(t.data[0])
    }
}

/// One entry of a safetensors file, borrowed: its dtype name, shape, and bytes with their
/// absolute range in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor<'a> {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
    pub bytes: &'a [u8],
}

fn safetensors_dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// One entry of a safetensors header: dtype name, shape and absolute byte range in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// Parses a safetensors header (the JSON after the 8-byte length) of a file of `file_len` bytes
/// whose data starts at `data_start`, checking that every entry's byte range lies in the file
/// and matches its dtype and shape.
pub fn parse_safetensors_header(header: &[u8], data_start: u64, file_len: u64, file: &str) -> Result<HashMap<String, RawTensorInfo>> {
    let bad = |reason: String| Error::Weights { file: file.to_string(), reason };
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let data_len = file_len.saturating_sub(data_start) as usize;
    let mut tensors = HashMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        #[derive(Deserialize)]
        struct Info {
            dtype: String,
            shape: Vec<usize>,
            data_offsets: [usize; 2],
        }
        let info: Info = serde_json::from_value(info).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let [start, end] = info.data_offsets;
        if end < start || end > data_len {
            return Err(bad(format!("tensor `{name}` spans bytes {start}..{end} of {data_len} (truncated?)")));
        }
        let size = safetensors_dtype_size(&info.dtype)
            .ok_or_else(|| bad(format!("tensor `{name}` has unknown dtype {}", info.dtype)))?;
        let numel = info.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if numel.and_then(|n| n.checked_mul(size)) != Some(end - start) {
            return Err(bad(format!("tensor `{name}`: {} bytes for {} {:?}", end - start, info.dtype, info.shape)));
        }
        let at = data_start as usize;
        tensors.insert(name, RawTensorInfo { dtype: info.dtype, shape: info.shape, start: at + start, end: at + end });
    }
    Ok(tensors)
}

/// Parses a safetensors file's header and checks that every entry's byte range lies in the file
/// and matches its dtype and shape.
pub fn read_safetensors_raw<'a>(bytes: &'a [u8], file: &str) -> Result<HashMap<String, RawTensor<'a>>> {
    let bad = |reason: String| Error::Weights { file: file.to_string(), reason };
    if bytes.len() < 8 {
        return Err(bad(format!("{} bytes is too short for a safetensors file", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let header_end = 8u64.checked_add(n).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| {
        bad(format!("header claims {n} bytes but the file has {} (truncated?)", bytes.len()))
    })? as usize;
    let infos = parse_safetensors_header(&bytes[8..header_end], header_end as u64, bytes.len() as u64, file)?;
    Ok(infos
        .into_iter()
        .map(|(name, i)| {
            let raw = RawTensor { bytes: &bytes[i.start..i.end], dtype: i.dtype, shape: i.shape, start: i.start, end: i.end };
            (name, raw)
        })
        .collect())
}

/// Writes a safetensors file from `(key, dtype, shape, little-endian bytes)` entries, in order.
/// Returns the file and each entry's absolute byte range in it.
pub fn write_safetensors_raw(entries: &[(String, &str, Vec<usize>, Vec<u8>)]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in entries {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap_or_default();
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(b' ');
    }
    let data_start = 8 + h.len();
    let mut out = Vec::with_capacity(data_start + offset);
    out.extend((h.len() as u64).to_le_bytes());
    out.extend(h);
    let mut ranges = Vec::with_capacity(entries.len());
    for (_, _, _, bytes) in entries {
        ranges.push((out.len(), out.len() + bytes.len()));
        out.extend_from_slice(bytes);
    }
    debug_assert_eq!(out.len(), data_start + offset);
    (out, ranges)
}

/// Write tensors as a safetensors file (f32), e.g. for fixtures.
pub fn write_safetensors(tensors: &[(&str, &HostTensor)]) -> Vec<u8> {
    let entries: Vec<_> = tensors
        .iter()
        .map(|(name, t)| (name.to_string(), "F32", t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    write_safetensors_raw(&entries).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_errors() {
        let a = HostTensor { shape: vec![2, 3], data: vec![1., 2., 3., 4., 5., 6.] };
        let bytes = write_safetensors(&[("a", &a)]);
        let mut w = Weights::from_safetensors(&bytes, "m.safetensors").unwrap();
        let err = w.take("a", &[3, 2]).unwrap_err().to_string();
        assert_eq!(err, "tensor `a` has shape [2, 3], the config needs [3, 2]");
        let mut w = Weights::from_safetensors(&bytes, "m.safetensors").unwrap();
        assert_eq!(w.take("a", &[2, 3]).unwrap(), a);
        assert_eq!(w.take("b", &[1]).unwrap_err().to_string().split(' ').nth(2), Some("`b`"));
        let err = Weights::from_safetensors(&bytes[..bytes.len() - 4], "m.safetensors").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
