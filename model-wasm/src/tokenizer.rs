//! CLIP tokenization with the `tokenizers` crate and the model's own `tokenizer.json`, padded
//! and truncated like `CLIPProcessor(padding="max_length", truncation=True)`.

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// The tokenizer of a CLIP checkpoint.
pub struct ClipTokenizer {
    inner: Tokenizer,
    context_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer").field("context_length", &self.context_length).finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Load `tokenizer.json`. `pad_token` is the tokenizer's pad token (`tokenizer_config.json`;
    /// `<|endoftext|>` for CLIP); `context_length` the text tower's `max_position_embeddings`.
    pub fn from_bytes(json: &[u8], pad_token: Option<&str>, context_length: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(json).map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        let pad_token = pad_token.unwrap_or("<|endoftext|>");
        let pad_id = inner.token_to_id(pad_token).ok_or_else(|| {
            Error::Tokenizer(format!("pad token `{pad_token}` is not in the vocabulary"))
        })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad_token.to_string(),
        }));
        Ok(Self { inner, context_length })
    }

    /// Read the pad token from a `tokenizer_config.json` (absent or unreadable: `None`).
    pub fn pad_token_from_config(json: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        match v.get("pad_token")? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => other.get("content")?.as_str().map(str::to_string),
        }
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Token ids, `context_length` of them: BOS, text, EOS, padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| Error::Tokenizer(format!("{text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}
