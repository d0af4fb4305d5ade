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
    let root: FileSystemDirectoryHandle =
        JsFuture::from(scope().navigator().storage().get_directory()).await.map_err(js_err)?.unchecked_into();
    let opts = FileSystemGetDirectoryOptions::new();
    opts.set_create(true);
    Ok(JsFuture::from(root.get_directory_handle_with_options(DIR, &opts)).await.map_err(js_err)?.unchecked_into())
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
