//! One runtime choice over two burn backends: wgpu (WebGPU in the browser, Vulkan/Metal/DX12
//! natively) and burn-flex on the CPU (also in wasm). Readback is async everywhere, because the
//! browser has no synchronous GPU readback. Without the `gpu` feature only the CPU backend is
//! built (the app's threaded CPU worker: wgpu does not build with wasm atomics).

use burn::backend::Flex;
#[cfg(feature = "gpu")]
use burn::backend::wgpu::{Wgpu, WgpuDevice};
#[cfg(feature = "gpu")]
use burn::tensor::{DType, FloatDType};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::config::ClipConfig;
use crate::error::{Error, Result};
use crate::model::{ClipModel, Place};
use crate::preprocess::Pixels;
use crate::weights::Weights;

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// GPU when an adapter can be had (in f16 where it has `shader-f16`), else the CPU.
    #[default]
    Auto,
    /// GPU or an error; f16 compute where the adapter has `shader-f16`, else f32.
    Wgpu,
    /// GPU or an error, always computing in f32 (the closest to the reference).
    WgpuF32,
    /// CPU only.
    Cpu,
}

/// The float type the encoder computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// Weights and activations in f16; LayerNorm and softmax in f32.
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// The backend's name in errors.
    #[cfg(feature = "gpu")]
    fn gpu_label(self) -> &'static str {
        match self {
            Self::F32 => "wgpu",
            Self::F16 => "wgpu (f16 compute)",
        }
    }
}

/// What runs, and why when it is not what was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    pub kind: BackendKind,
    pub precision: Precision,
    /// Adapter name on the GPU path.
    pub adapter: Option<String>,
    /// Set when the GPU was wanted but the CPU runs (e.g. "no WebGPU adapter").
    pub fallback_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Wgpu,
    Cpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            // In a browser wgpu is WebGPU; natively it is Vulkan/Metal/DX12 through wgpu.
            Self::Wgpu => {
                if cfg!(target_family = "wasm") {
                    "webgpu"
                } else {
                    "wgpu"
                }
            }
            Self::Cpu => "cpu",
        }
    }
}

/// The CPU backend (also in wasm). Public so that benches measure what the encoder runs on.
pub type Cpu = Flex;
#[cfg(feature = "gpu")]
type Gpu = Wgpu<f32, i32>;

/// A loaded model on one backend.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per loaded model; boxing buys nothing
pub enum Encoder {
    Cpu(ClipModel<Cpu>),
    #[cfg(feature = "gpu")]
    Gpu(ClipModel<Gpu>, WgpuDevice, Precision),
}

/// The wgpu adapter in use.
#[cfg(feature = "gpu")]
#[derive(Debug, Clone)]
struct Adapter {
    name: String,
    /// The device runs f16 kernels (`shader-f16`: f16 arithmetic and storage in shaders).
    f16: bool,
}

/// Initialise the wgpu runtime once per process (burn's runtime is global). Returns the adapter,
/// or why none.
#[cfg(feature = "gpu")]
#[allow(clippy::await_holding_lock)] // on purpose: a second caller waits for the first's init
async fn init_wgpu() -> std::result::Result<(WgpuDevice, Adapter), String> {
    // Natively, callers on several threads (tests) must not both initialise: the lock is held
    // across the probe. In wasm there is one thread and no blocking lock.
    #[cfg(not(target_family = "wasm"))]
    static INIT: std::sync::Mutex<Option<std::result::Result<Adapter, String>>> = std::sync::Mutex::new(None);
    #[cfg(not(target_family = "wasm"))]
    let mut slot = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    #[cfg(target_family = "wasm")]
    thread_local! {
        static INIT: std::cell::RefCell<Option<std::result::Result<Adapter, String>>> = const { std::cell::RefCell::new(None) };
    }
    #[cfg(target_family = "wasm")]
    let slot = INIT.with(|c| c.borrow().clone());
    if let Some(done) = slot.clone() {
        return done.map(|adapter| (WgpuDevice::default(), adapter));
    }
    let result = probe_and_init().await;
    #[cfg(not(target_family = "wasm"))]
    {
        *slot = Some(result.clone());
    }
    #[cfg(target_family = "wasm")]
    INIT.with(|c| *c.borrow_mut() = Some(result.clone()));
    result.map(|adapter| (WgpuDevice::default(), adapter))
}

#[cfg(feature = "gpu")]
async fn probe_and_init() -> std::result::Result<Adapter, String> {
    // Probe first: burn panics when it finds no adapter, and a panic aborts a wasm worker. Probe
    // the one backend burn's `AutoGraphicsApi` asks for (Vulkan, Metal on macOS, WebGPU in the
    // browser): on a machine with only a GL adapter the default instance finds one and burn's
    // Vulkan-only request then panics.
    use burn::backend::wgpu::graphics::GraphicsApi;
    let backends = wgpu::Backends::from(<burn::backend::wgpu::graphics::AutoGraphicsApi as GraphicsApi>::backend());
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor { backends, ..wgpu::InstanceDescriptor::new_without_display_handle() });
    match instance.request_adapter(&wgpu::RequestAdapterOptions::default()).await {
        Ok(adapter) => {
            let info = adapter.get_info();
            drop(adapter);
            let device = WgpuDevice::default();
            burn::backend::wgpu::init_setup_async::<burn::backend::wgpu::graphics::AutoGraphicsApi>(
                &device,
                Default::default(),
            )
            .await;
            // Ask the runtime burn set up, not the probe's adapter: on a machine with two GPUs
            // they can differ. cubecl registers f16 for arithmetic only with `shader-f16`.
            let f16 = <Gpu as Backend>::supports_dtype(&device, DType::F16);
            Ok(Adapter { name: format!("{} ({:?})", info.name, info.backend), f16 })
        }
        Err(e) => Err(if cfg!(target_family = "wasm") {
            format!("no WebGPU adapter ({e})")
        } else {
            format!("no GPU adapter ({e})")
        }),
    }
}

impl Encoder {
    /// Load weights onto the chosen backend, falling back to the CPU under `Auto`.
    #[cfg(feature = "gpu")]
    pub async fn load(config: &ClipConfig, weights: Weights, choice: BackendChoice) -> Result<(Self, BackendInfo)> {
        let gpu = match choice {
            BackendChoice::Cpu => Err(None),
            _ => init_wgpu().await.map_err(Some),
        };
        match (gpu, choice) {
            (Ok((device, adapter)), _) => {
                let precision =
                    if adapter.f16 && choice != BackendChoice::WgpuF32 { Precision::F16 } else { Precision::F32 };
                let dtype = match precision {
                    Precision::F32 => FloatDType::F32,
                    Precision::F16 => FloatDType::F16,
                };
                let model = ClipModel::from_weights(config, weights, &Place { device: device.clone(), dtype })?;
                let info =
                    BackendInfo { kind: BackendKind::Wgpu, precision, adapter: Some(adapter.name), fallback_reason: None };
                Ok((Self::Gpu(model, device, precision), info))
            }
            (Err(Some(reason)), BackendChoice::Wgpu | BackendChoice::WgpuF32) => {
                Err(Error::Backend { backend: "wgpu", reason })
            }
            (Err(reason), _) => {
                let model = ClipModel::from_weights(config, weights, &Place::f32(&Default::default()))?;
                let info =
                    BackendInfo { kind: BackendKind::Cpu, precision: Precision::F32, adapter: None, fallback_reason: reason };
                Ok((Self::Cpu(model), info))
            }
        }
    }

    /// Load weights onto the CPU: this build has no GPU backend.
    #[cfg(not(feature = "gpu"))]
    pub async fn load(config: &ClipConfig, weights: Weights, choice: BackendChoice) -> Result<(Self, BackendInfo)> {
        const NONE: &str = "this build has no GPU backend";
        if matches!(choice, BackendChoice::Wgpu | BackendChoice::WgpuF32) {
            return Err(Error::Backend { backend: "wgpu", reason: NONE.into() });
        }
        let model = ClipModel::from_weights(config, weights, &Place::f32(&Default::default()))?;
        let reason = (choice == BackendChoice::Auto).then(|| NONE.to_string());
        let info = BackendInfo { kind: BackendKind::Cpu, precision: Precision::F32, adapter: None, fallback_reason: reason };
        Ok((Self::Cpu(model), info))
    }

    pub fn logit_scale(&self) -> f32 {
        match self {
            Self::Cpu(m) => m.logit_scale,
            #[cfg(feature = "gpu")]
            Self::Gpu(m, ..) => m.logit_scale,
        }
    }

    /// Projected image features, one row per image (not normalised).
    pub async fn image_features(&self, pixels: &[Pixels]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Cpu(m) => image_features(m, pixels, &Default::default(), "cpu").await,
            #[cfg(feature = "gpu")]
            Self::Gpu(m, d, p) => image_features(m, pixels, d, p.gpu_label()).await,
        }
    }

    /// Projected text features, one row per sequence (not normalised).
    pub async fn text_features(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::Cpu(m) => readback(m.text.forward(ids, &Default::default())?, "cpu").await,
            #[cfg(feature = "gpu")]
            Self::Gpu(m, d, p) => readback(m.text.forward(ids, d)?, p.gpu_label()).await,
        }
    }
}

async fn image_features<B: Backend>(
    m: &ClipModel<B>,
    pixels: &[Pixels],
    device: &B::Device,
    backend: &'static str,
) -> Result<Vec<Vec<f32>>> {
    let Some(first) = pixels.first() else { return Ok(Vec::new()) };
    let (h, w) = (first.height as usize, first.width as usize);
    if h != w || pixels.iter().any(|p| p.height as usize != h || p.width as usize != w) {
        return Err(Error::Input("all images of a batch must be preprocessed to the same square size".into()));
    }
    let mut data = Vec::with_capacity(pixels.len() * 3 * h * w);
    pixels.iter().for_each(|p| data.extend_from_slice(&p.data));
    let x = Tensor::<B, 4>::from_data(TensorData::new(data, [pixels.len(), 3, h, w]), device);
    readback(m.vision.forward(x), backend).await
}

async fn readback<B: Backend>(t: Tensor<B, 2>, backend: &'static str) -> Result<Vec<Vec<f32>>> {
    let [rows, cols] = t.dims();
    let data = t.into_data_async().await.map_err(|e| Error::Backend { backend, reason: format!("readback failed: {e:?}") })?;
    let flat = data.into_vec::<f32>().map_err(|e| Error::Backend { backend, reason: format!("readback: {e:?}") })?;
    // A NaN or an infinity would poison every search it takes part in. On f16 compute it means an
    // activation overflowed (f16 ends at 65504): the caller can retry with BackendChoice::WgpuF32.
    if let Some(bad) = flat.iter().position(|x| !x.is_finite()) {
        return Err(Error::Backend {
            backend,
            reason: format!("the encoder produced a non-finite value ({}) in row {}", flat[bad], bad / cols.max(1)),
        });
    }
    Ok((0..rows).map(|r| flat[r * cols..(r + 1) * cols].to_vec()).collect())
}
