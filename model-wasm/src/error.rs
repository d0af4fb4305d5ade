//! One error type for the crate: every variant names what failed (key, file, shape) so the
//! message shown to a user or printed by the CLI says what to fix.

use std::fmt;

/// Errors from loading, preprocessing and running CLIP models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be parsed or describes something we cannot run.
    #[error("config {file}: {reason}")]
    Config { file: String, reason: String },

    /// The checkpoint is of an architecture this crate does not implement.
    #[error("unsupported architecture in {file}: {found} (only CLIP-style models with a ViT vision tower and a CLIP text transformer are supported)")]
    UnsupportedArchitecture { file: String, found: String },

    /// A tensor the architecture needs is absent from the weights.
    #[error("missing tensor `{key}` in the weights (a CLIPModel checkpoint has it; is this the right file?)")]
    MissingTensor { key: String },

    /// A tensor exists but its shape disagrees with the config.
    #[error("tensor `{key}` has shape {got:?}, the config needs {expected:?}")]
    ShapeMismatch { key: String, expected: Vec<usize>, got: Vec<usize> },

    /// A weights file could not be read or parsed.
    #[error("weights {file}: {reason}")]
    Weights { file: String, reason: String },

    /// An image was refused: corrupt, truncated, unsupported or too large.
    #[error("image {name}: {reason}")]
    UnsupportedImage { name: String, reason: ImageProblem },

    /// A whole-slide image was refused or could not be read.
    #[error("slide {name}: {problem}")]
    Slide { name: String, problem: crate::slide::Problem },

    /// The tokenizer file could not be loaded or a text could not be encoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The compute backend failed (device lost, readback error, ...).
    #[error("backend {backend}: {reason}")]
    Backend { backend: &'static str, reason: String },

    /// An input had the wrong size or was empty where that is not allowed.
    #[error("invalid input: {0}")]
    Input(String),

    /// A file the checkpoint needs is not among the files given.
    #[error("{file} is missing: {purpose}")]
    MissingFile { file: String, purpose: String },

    /// The work was cancelled by the user.
    #[error("cancelled")]
    Cancelled,

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageProblem {
    /// Zero bytes.
    Empty,
    /// Not an image format we recognise.
    UnknownFormat,
    /// Recognised but the bytes are corrupt or truncated.
    Corrupt(String),
    /// Recognised but a variant we cannot decode (e.g. an exotic TIFF compression).
    Unsupported(String),
    /// Width x height above the limit: refused from the header, before decoding.
    TooLarge { width: u32, height: u32, max_pixels: u64 },
}

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty file (0 bytes)"),
            Self::UnknownFormat => write!(
                f,
                "not a supported image (PNG, JPEG, WebP, GIF, BMP and TIFF are supported)"
            ),
            Self::Corrupt(why) => write!(f, "corrupt or truncated: {why}"),
            Self::Unsupported(why) => write!(f, "unsupported variant: {why}"),
            Self::TooLarge { width, height, max_pixels } => write!(
                f,
                "{width}x{height} is {:.1} megapixels, above the limit of {:.0} (refused before decoding)",
                (*width as f64 * *height as f64) / 1e6,
                *max_pixels as f64 / 1e6
            ),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
