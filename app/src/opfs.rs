//! Files in the origin-private file system (OPFS), through synchronous access handles: the worker
//! appends a batch of images and flushes it before telling the page, so what the page shows is on
//! disk. Only dedicated workers may open such handles, and one handle per file at a time.

use js_sys::Promise;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    DedicatedWorkerGlobalScope, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemReadWriteOptions, FileSystemSyncAccessHandle,
};

/// The folder of the OPFS root that holds the app's collections.
const DIR: &str = "obscura-collections";

fn js_err(e: JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| format!("{}: {}", String::from(e.name()), String::from(e.message())))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

async fn dir() -> Result<FileSystemDirectoryHandle, String> {
    subdir(None, DIR, true).await?.ok_or_else(|| format!("{DIR} could not be created"))
}

/// The folder `name` in `parent` (the OPFS root when `None`); created when `create`, else
/// `None` when it does not exist.
pub async fn subdir(parent: Option<&FileSystemDirectoryHandle>, name: &str, create: bool) -> Result<Option<FileSystemDirectoryHandle>, String> {
    let root: FileSystemDirectoryHandle = match parent {
        Some(p) => p.clone(),
        None => JsFuture::from(scope().navigator().storage().get_directory()).await.map_err(js_err)?.unchecked_into(),
    };
    let opts = FileSystemGetDirectoryOptions::new();
    opts.set_create(create);
    match JsFuture::from(root.get_directory_handle_with_options(name, &opts)).await {
        Ok(d) => Ok(Some(d.unchecked_into())),
        Err(e) if !create => {
            let _ = e;
            Ok(None)
        }
        Err(e) => Err(js_err(e)),
    }
}

/// Writes (replacing) `name` in `dir` and flushes. A full disk or quota fails here, by name.
pub async fn write_in(dir: &FileSystemDirectoryHandle, name: &str, bytes: &[u8]) -> Result<(), String> {
    let opts = FileSystemGetFileOptions::new();
    opts.set_create(true);
    let file: FileSystemFileHandle = JsFuture::from(dir.get_file_handle_with_options(name, &opts)).await.map_err(js_err)?.unchecked_into();
    let handle: FileSystemSyncAccessHandle = JsFuture::from(file.create_sync_access_handle()).await.map_err(js_err)?.unchecked_into();
    let result = (|| {
        handle.truncate_with_f64(0.0).map_err(js_err)?;
        let at = FileSystemReadWriteOptions::new();
        at.set_at(0.0);
        let n = handle.write_with_u8_array_and_options(bytes, &at).map_err(js_err)?;
        if n as usize != bytes.len() {
            return Err(format!("wrote {n} of {} bytes of {name} (is the disk full?)", bytes.len()));
        }
        handle.flush().map_err(js_err)
    })();
    handle.close();
    result
}

/// `name` in `dir`, or `None` when it does not exist.
pub async fn read_in(dir: &FileSystemDirectoryHandle, name: &str) -> Result<Option<Vec<u8>>, String> {
    let Ok(file) = JsFuture::from(dir.get_file_handle(name)).await else { return Ok(None) };
    let file: FileSystemFileHandle = file.unchecked_into();
    let handle: FileSystemSyncAccessHandle = JsFuture::from(file.create_sync_access_handle()).await.map_err(js_err)?.unchecked_into();
    let result = (|| {
        let len = handle.get_size().map_err(js_err)?;
        let mut out = vec![0u8; len as usize];
        let at = FileSystemReadWriteOptions::new();
        at.set_at(0.0);
        let n = handle.read_with_u8_array_and_options(&mut out, &at).map_err(js_err)?;
        out.truncate(n as usize);
        Ok(Some(out))
    })();
    handle.close();
    result
}

/// The names in `dir`.
pub async fn list(dir: &FileSystemDirectoryHandle) -> Vec<String> {
    let iter = dir.keys();
    let mut out = Vec::new();
    loop {
        let Ok(p) = iter.next() else { break };
        let Ok(step) = JsFuture::from(p).await else { break };
        if js_sys::Reflect::get(&step, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true) {
            break;
        }
        if let Some(name) = js_sys::Reflect::get(&step, &"value".into()).ok().and_then(|v| v.as_string()) {
            out.push(name);
        }
    }
    out
}

/// Removes `name` (a file, or a folder with everything in it) from `dir`.
pub async fn remove_in(dir: &FileSystemDirectoryHandle, name: &str) -> Result<(), String> {
    let opts = web_sys::FileSystemRemoveOptions::new();
    opts.set_recursive(true);
    JsFuture::from(dir.remove_entry_with_options(name, &opts)).await.map(|_| ()).map_err(js_err)
}

/// One open file.
pub struct File {
    handle: FileSystemSyncAccessHandle,
    len: f64,
}

impl File {
    /// Opens (creating) `name`. A handle still held by the worker of a page that is being
    /// reloaded is waited for, up to a few seconds.
    pub async fn open(name: &str) -> Result<Self, String> {
        let dir = dir().await?;
        let opts = FileSystemGetFileOptions::new();
        opts.set_create(true);
        let file: FileSystemFileHandle =
            JsFuture::from(dir.get_file_handle_with_options(name, &opts)).await.map_err(js_err)?.unchecked_into();
        let mut last = String::new();
        for _ in 0..50 {
            match JsFuture::from(file.create_sync_access_handle()).await {
                Ok(h) => {
                    let handle: FileSystemSyncAccessHandle = h.unchecked_into();
                    let len = handle.get_size().map_err(js_err)?;
                    return Ok(Self { handle, len });
                }
                Err(e) => last = js_err(e),
            }
            sleep(100).await;
        }
        Err(format!("{name} is held by another tab of this app ({last}); close it and reload"))
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0.0
    }

    pub fn read_all(&self) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; self.len as usize];
        let opts = FileSystemReadWriteOptions::new();
        opts.set_at(0.0);
        let n = self.handle.read_with_u8_array_and_options(&mut out, &opts).map_err(js_err)?;
        out.truncate(n as usize);
        Ok(out)
    }

    /// Appends and flushes.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        let opts = FileSystemReadWriteOptions::new();
        opts.set_at(self.len);
        let n = self.handle.write_with_u8_array_and_options(bytes, &opts).map_err(js_err)?;
        if n as usize != bytes.len() {
            return Err(format!("wrote {n} of {} bytes (is the disk full?)", bytes.len()));
        }
        self.handle.flush().map_err(js_err)?;
        self.len += n;
        Ok(())
    }

    /// Cuts the file to `len` bytes.
    pub fn truncate(&mut self, len: u64) -> Result<(), String> {
        self.handle.truncate_with_f64(len as f64).map_err(js_err)?;
        self.handle.flush().map_err(js_err)?;
        self.len = len as f64;
        Ok(())
    }

    /// Replaces the whole content.
    pub fn replace(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.truncate(0)?;
        self.append(bytes)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Writes a whole file at once (opened and closed here).
pub async fn write(name: &str, bytes: &[u8]) -> Result<(), String> {
    File::open(name).await?.replace(bytes)
}

/// A whole file's bytes, or `None` when it does not exist.
pub async fn read(name: &str) -> Result<Option<Vec<u8>>, String> {
    let dir = dir().await?;
    match JsFuture::from(dir.get_file_handle(name)).await {
        Ok(_) => File::open(name).await?.read_all().map(Some),
        Err(_) => Ok(None),
    }
}

pub async fn remove(name: &str) {
    if let Ok(dir) = dir().await {
        let _ = JsFuture::from(dir.remove_entry(name)).await;
    }
}
