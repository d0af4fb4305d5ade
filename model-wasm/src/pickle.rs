//! Reads the tensors of a PyTorch `torch.save` zip archive (`pytorch_model.bin`) without
//! executing any pickled code.
//!
//! The pickle stream is interpreted by a small stack machine that knows the opcodes
//! `torch.save` emits (protocol 2) and treats every `GLOBAL` as an inert name. Only two
//! callables are understood, and only to record a tensor's layout: `torch._utils._rebuild_tensor_v2`
//! and `torch._utils._rebuild_parameter`; `collections.OrderedDict` becomes a dict. Anything else
//! stays an opaque value and is never called. Tensor bytes come from the archive's
//! `<prefix>/data/<key>` entries.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};

use crate::weights::{Dtype, HostTensor};

/// A tensor as recorded by the pickle: where its storage is and how it is viewed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    key: String,
    pub(crate) dtype: Option<Dtype>,
    offset: usize,
    pub(crate) size: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    PersId(Box<Value>),
    Tensor(TensorRef),
    /// A call to something we do not execute: kept for error messages.
    Opaque(String),
    Mark,
}

/// Read every tensor of a `torch.save` zip archive. Non-float tensors (e.g. the int64
/// `position_ids` buffers of old checkpoints) are skipped.
pub fn read_torch_zip(bytes: &[u8], file: &str) -> Result<HashMap<String, HostTensor>, String> {
    let mut archive = TorchArchive::open(Cursor::new(bytes), file)?;
    let names: Vec<String> = archive.tensors().map(|(n, _)| n.to_string()).collect();
    let mut out = HashMap::new();
    for name in names {
        let t = archive.read(&name)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// A `torch.save` zip archive opened for reading tensor by tensor: the pickle is interpreted up
/// front (it is small), tensor bytes are read from the archive only when asked for, so a
/// checkpoint read from a file is never held in memory whole.
pub(crate) struct TorchArchive<R: Read + Seek> {
    zip: zip::ZipArchive<R>,
    prefix: String,
    tensors: Vec<(String, TensorRef)>,
}

impl<R: Read + Seek> TorchArchive<R> {
    pub(crate) fn open(mut reader: R, file: &str) -> Result<Self, String> {
        let mut magic = [0u8; 2];
        let n = reader.read(&mut magic).map_err(|e| e.to_string())?;
        reader.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        if n >= 2 && &magic != b"PK" {
            return Err(if magic[0] == 0x80 {
                "legacy (pre-1.6) PyTorch serialization is not supported; re-save it with torch>=1.6 or convert to safetensors".into()
            } else {
                "not a PyTorch zip archive".into()
            });
        }
        let mut zip = zip::ZipArchive::new(reader)
            .map_err(|e| format!("not a complete zip archive ({e}); is the download truncated?"))?;
        let pkl_name = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| n.ends_with("data.pkl"))
            .map(|n| n.into_owned())
            .ok_or("no data.pkl in the archive")?;
        let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
        let pkl = read_entry(&mut zip, &pkl_name)?;
        let root = Machine::new(&pkl).run().map_err(|e| format!("{pkl_name}: {e}"))?;
        let Value::Dict(items) = root else {
            return Err(format!("{pkl_name}: the pickle holds {}, not a state dict", kind(&root)));
        };
        let mut tensors = Vec::new();
        for (k, v) in items {
            let Value::Str(name) = k else { continue };
            match v {
                Value::Tensor(t) if t.dtype.is_some() => tensors.push((name, t)),
                Value::Tensor(_) => {}
                other => {
                    // Opaque objects are never executed; a state dict should hold only tensors.
                    if let Value::Opaque(what) = &other {
                        return Err(format!("entry `{name}` is `{what}`, not a tensor: refusing to run pickled code"));
                    }
                }
            }
        }
        if tensors.is_empty() {
            return Err(format!("{file}: no floating-point tensors found"));
        }
        Ok(Self { zip, prefix, tensors })
    }

    /// Float tensors: name, shape and the bytes they take in the file.
    pub(crate) fn tensors(&self) -> impl Iterator<Item = (&str, &TensorRef)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    pub(crate) fn read(&mut self, name: &str) -> Result<HostTensor, String> {
        let t = self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone()).ok_or_else(|| format!("no tensor `{name}`"))?;
        let data = read_entry(&mut self.zip, &format!("{}data/{}", self.prefix, t.key))?;
        gather(&data, t.dtype.expect("float tensors only"), &t).map_err(|e| format!("tensor `{name}`: {e}"))
    }
}

fn read_entry<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, name: &str) -> Result<Vec<u8>, String> {
    let mut f = zip.by_name(name).map_err(|e| format!("archive entry {name}: {e}"))?;
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut buf).map_err(|e| format!("archive entry {name}: {e} (truncated or corrupt?)"))?;
    Ok(buf)
}

fn kind(v: &Value) -> String {
    match v {
        Value::Opaque(s) => format!("an object `{s}`"),
        Value::Global(m, n) => format!("a reference to `{m}.{n}`"),
        other => format!("{:?}", std::mem::discriminant(other)),
    }
}

/// Copy a (possibly strided) view out of its storage into a contiguous f32 tensor.
fn gather(storage: &[u8], dtype: Dtype, t: &TensorRef) -> Result<HostTensor, String> {
    let esize = dtype.size();
    let numel: usize = t.size.iter().product();
    if t.size.len() != t.stride.len() {
        return Err("size and stride ranks differ".into());
    }
    let max_index = t.offset
        + t.size.iter().zip(&t.stride).map(|(s, st)| s.saturating_sub(1) * st).sum::<usize>();
    if numel > 0 && (max_index + 1) * esize > storage.len() {
        return Err(format!(
            "storage {} holds {} bytes, the view needs {} (truncated file?)",
            t.key,
            storage.len(),
            (max_index + 1) * esize
        ));
    }
    let mut data = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(dtype.read_f32(&storage[off * esize..][..esize]));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(HostTensor { shape: t.size.clone(), data })
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0, stack: Vec::new(), memo: HashMap::new() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.input.len()).ok_or("pickle stream ends early (truncated?)")?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.input[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("unterminated GLOBAL")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self.stack.iter().rposition(|v| *v == Value::Mark).ok_or("MARK not found")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack.last_mut().ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn str(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        Ok(Value::Str(String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string")?))
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                } // PROTO
                0x95 => {
                    self.take(8)?;
                } // FRAME
                b'.' => return self.pop(),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                0x8f => self.stack.push(Value::List(Vec::new())), // EMPTY_SET
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.str(n)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.str(n)?;
                    self.stack.push(v)
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'c' => {
                    let (m, n) = (self.line()?, self.line()?);
                    self.stack.push(Value::Global(m, n))
                }
                0x93 => {
                    let (n, m) = (self.pop()?, self.pop()?);
                    match (m, n) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                    let v = self.memo.get(&i).cloned().ok_or_else(|| format!("memo {i} not set"))?;
                    self.stack.push(v)
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default());
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("LONG1 wider than 64 bits".into());
                    }
                    let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.stack.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap_or_default())))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(Value::PersId(Box::new(pid)))
                }
                b'R' | 0x81 => {
                    let (args, func) = (self.pop()?, self.pop()?);
                    let v = reduce(func, args)?;
                    self.stack.push(v)
                }
                b's' => {
                    let (v, k) = (self.pop()?, self.pop()?);
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err("SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::Dict(d) => {
                            let mut it = items.into_iter();
                            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                                d.push((k, v));
                            }
                        }
                        _ => return Err("SETITEMS on a non-dict".into()),
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("APPEND on a non-list".into()),
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("APPENDS on a non-list".into()),
                    }
                }
                b'b' => {
                    // BUILD sets an object's state (e.g. an OrderedDict's `_metadata`): irrelevant
                    // to the tensors, so the state is dropped.
                    self.pop()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v)
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1)),
            }
        }
    }
}

fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Opaque("call of a non-global".into()));
    };
    let Value::Tuple(args) = args else { return Ok(Value::Opaque(format!("{module}.{name}"))) };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => rebuild_tensor(&args),
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            args.into_iter().next().ok_or_else(|| "_rebuild_parameter without arguments".to_string())
        }
        _ => Ok(Value::Opaque(format!("{module}.{name}"))),
    }
}

fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let ints = |v: &Value| -> Result<Vec<usize>, String> {
        match v {
            Value::Tuple(xs) => xs
                .iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err("tensor size/stride must be non-negative ints".to_string()),
                })
                .collect(),
            _ => Err("tensor size/stride must be a tuple".into()),
        }
    };
    let [storage, offset, size, stride, ..] = args else {
        return Err("_rebuild_tensor_v2 with too few arguments".into());
    };
    let Value::PersId(pid) = storage else { return Err("tensor storage is not a persistent id".into()) };
    let Value::Tuple(pid) = pid.as_ref() else { return Err("malformed storage id".into()) };
    let (storage_type, key) = match pid.as_slice() {
        [Value::Str(tag), Value::Global(_, ty), Value::Str(key), ..] if tag == "storage" => (ty.clone(), key.clone()),
        _ => return Err("malformed storage id".into()),
    };
    let Value::Int(offset) = offset else { return Err("storage offset is not an int".into()) };
    let dtype = match storage_type.as_str() {
        "FloatStorage" => Some(Dtype::F32),
        "HalfStorage" => Some(Dtype::F16),
        "BFloat16Storage" => Some(Dtype::BF16),
        "DoubleStorage" => Some(Dtype::F64),
        _ => None, // Long/Int/Bool buffers: not weights.
    };
    Ok(Value::Tensor(TensorRef {
        key,
        dtype,
        offset: *offset as usize,
        size: ints(size)?,
        stride: ints(stride)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_zip_and_truncated_input() {
        assert!(read_torch_zip(b"\x80\x02}q\x00.", "x.bin").unwrap_err().contains("legacy"));
        assert!(read_torch_zip(b"PK\x03\x04trunc", "x.bin").unwrap_err().contains("truncated"));
    }

    #[test]
    fn opaque_calls_are_never_run() {
        // pickle of {'a': os.system('echo')}: GLOBAL os system, REDUCE.
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01cos\nsystem\nq\x02X\x04\x00\x00\x00echoq\x03\x85q\x04Rq\x05s.";
        let v = Machine::new(p).run().unwrap();
        assert_eq!(v, Value::Dict(vec![(Value::Str("a".into()), Value::Opaque("os.system".into()))]));
    }
}
