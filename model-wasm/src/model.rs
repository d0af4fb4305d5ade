//! The CLIP architecture on burn, one forward pass per tower, mirroring transformers'
//! `modeling_clip.py` (`CLIPVisionTransformer`, `CLIPTextTransformer`, `CLIPModel`).
//!
//! Weights are plain tensors taken from a checkpoint by their Hugging Face names; the table of
//! names is in [`ClipModel::from_weights`]. Linear weights are stored transposed (`[in, out]`)
//! so every projection is one `matmul` over the flattened batch.

use burn::tensor::{
    DType, FloatDType, Int, Tensor, TensorCreationOptions, TensorData, TensorPrimitive, activation, backend::Backend,
    module::embedding,
};

use crate::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig, TextPooling};
use crate::error::{Error, Result};
use crate::weights::{HostTensor, Weights};

/// Where the model's tensors live and in which float type they are computed.
///
/// `F16` halves the GPU memory of the weights and activations; LayerNorm statistics and the
/// attention softmax are still computed in f32 (as PyTorch's autocast does): an f16 variance
/// overflows on real activations, and the causal mask's large negative does not fit in f16.
#[derive(Debug, Clone)]
pub struct Place<B: Backend> {
    pub device: B::Device,
    pub dtype: FloatDType,
}

impl<B: Backend> Place<B> {
    pub fn f32(device: &B::Device) -> Self {
        Self { device: device.clone(), dtype: FloatDType::F32 }
    }

    /// A host tensor (f32) on the device in the compute type.
    pub fn tensor<const D: usize>(&self, t: HostTensor) -> Tensor<B, D> {
        self.with_dtype(t, self.dtype)
    }

    /// A host tensor on the device in f32, whatever the compute type.
    fn tensor_f32<const D: usize>(&self, t: HostTensor) -> Tensor<B, D> {
        self.with_dtype(t, FloatDType::F32)
    }

    fn with_dtype<const D: usize>(&self, t: HostTensor, dtype: FloatDType) -> Tensor<B, D> {
        let options = TensorCreationOptions::new(self.device.clone()).with_dtype(DType::from(dtype));
        Tensor::from_data(TensorData::new(t.data, t.shape), options)
    }
}

/// `nn.Linear` with the weight kept as `[in, out]`.
#[derive(Debug, Clone)]
struct Linear<B: Backend> {
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    fn load(w: &mut Weights, prefix: &str, d_in: usize, d_out: usize, bias: bool, place: &Place<B>) -> Result<Self> {
        Self::load_scaled(w, prefix, d_in, d_out, bias, 1.0, place)
    }

    /// `scale * nn.Linear`: weight and bias multiplied by `scale` on the host, once.
    #[allow(clippy::too_many_arguments)]
    fn load_scaled(
        w: &mut Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        scale: f32,
        place: &Place<B>,
    ) -> Result<Self> {
        let t = w.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        // PyTorch stores [out, in]; transpose on the host once.
        let mut data = vec![0f32; t.data.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                data[i * d_out + o] = t.data[o * d_in + i] * scale;
            }
        }
        let weight = place.tensor(HostTensor { shape: vec![d_in, d_out], data });
        let bias = if bias {
            let mut b = w.take(&format!("{prefix}.bias"), &[d_out])?;
            b.data.iter_mut().for_each(|x| *x *= scale);
            Some(place.tensor(b))
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// # Shapes
    /// - x: `[batch, tokens, in]`
    /// - output: `[batch, tokens, out]`
    fn forward3(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward3_then(x, None, None)
    }

    /// `act(x W + b) + residual`: on the CPU backend the bias, activation and residual are one
    /// pass ([`crate::cpu_ops`]).
    fn forward3_then(&self, x: Tensor<B, 3>, act: Option<Activation>, residual: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let out = self.weight.dims()[1];
        let residual = residual.map(|r| r.reshape([b * t, out]));
        crate::cpu_ops::linear(x.reshape([b * t, d]), &self.weight, self.bias.as_ref(), act, residual).reshape([b, t, out])
    }

    /// # Shapes
    /// - x: `[rows, in]`
    /// - output: `[rows, out]`
    fn forward2(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::cpu_ops::linear(x, &self.weight, self.bias.as_ref(), None, None)
    }
}

/// `nn.LayerNorm`, computed in f32 whatever the compute type; the result is cast back.
#[derive(Debug, Clone)]
struct LayerNorm<B: Backend> {
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
    dtype: FloatDType,
}

impl<B: Backend> LayerNorm<B> {
    fn load(w: &mut Weights, prefix: &str, d: usize, eps: f64, place: &Place<B>) -> Result<Self> {
        Ok(Self {
            gamma: place.tensor_f32(w.take(&format!("{prefix}.weight"), &[d])?),
            beta: place.tensor_f32(w.take(&format!("{prefix}.bias"), &[d])?),
            eps,
            dtype: place.dtype,
        })
    }

    /// Normalises over the last dimension (biased variance, as `nn.LayerNorm`), through the
    /// backend's `layer_norm`: on the CPU (burn-flex) one fused two-pass kernel over rows, run in
    /// parallel in the threaded build, where the composed form was six single-threaded passes;
    /// elsewhere burn's composition of the same (mean, centred variance), which fusion merges.
    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = x.cast(FloatDType::F32).into_primitive().tensor();
        let (gamma, beta) = (self.gamma.clone().into_primitive().tensor(), self.beta.clone().into_primitive().tensor());
        Tensor::<B, D>::from_primitive(TensorPrimitive::Float(B::layer_norm(x, gamma, Some(beta), self.eps))).cast(self.dtype)
    }
}

pub(crate) fn activate<B: Backend, const D: usize>(x: Tensor<B, D>, act: Activation) -> Tensor<B, D> {
    match act {
        // x * sigmoid(1.702 x) as x / (1 + exp(-1.702 x)): one exp. burn's `sigmoid` computes
        // exp(-log(1 + exp(-x))) in f32 (three transcendentals and two casts per element), which
        // was 12% of the CPU backend's image encode time (perf, batch 8). Limits are right in
        // both directions: exp overflows to inf for very negative x (x / inf = -0) and goes to 0
        // for large x (x / 1 = x), in f16 too.
        // On f16 compute it runs in f32, as burn's own sigmoid does (with GPU fusion the casts are
        // part of the same kernel): in f16 it cost the golden f16 test a logit ranking.
        Activation::QuickGelu => {
            let dtype = x.dtype();
            let x = x.cast(FloatDType::F32);
            (x.clone() / ((x * -1.702).exp() + 1.0)).cast(dtype)
        }
        Activation::Gelu => activation::gelu(x),
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP with residuals.
#[derive(Debug, Clone)]
struct EncoderLayer<B: Backend> {
    ln1: LayerNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    out: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    heads: usize,
    act: Activation,
}

impl<B: Backend> EncoderLayer<B> {
    #[allow(clippy::too_many_arguments)]
    fn load(
        w: &mut Weights,
        prefix: &str,
        d: usize,
        inter: usize,
        heads: usize,
        eps: f64,
        act: Activation,
        place: &Place<B>,
    ) -> Result<Self> {
        let lin = |w: &mut Weights, name: &str, i, o| Linear::load(w, &format!("{prefix}.{name}"), i, o, true, place);
        Ok(Self {
            ln1: LayerNorm::load(w, &format!("{prefix}.layer_norm1"), d, eps, place)?,
            // The attention scale head_dim^-0.5 is folded into q_proj: q k^T is then computed
            // at the size of the scores (not head_dim^0.5 = 8x larger), which keeps it in f16's
            // range, and costs no kernel.
            q: Linear::load_scaled(
                w,
                &format!("{prefix}.self_attn.q_proj"),
                d,
                d,
                true,
                ((d / heads) as f32).powf(-0.5),
                place,
            )?,
            k: lin(w, "self_attn.k_proj", d, d)?,
            v: lin(w, "self_attn.v_proj", d, d)?,
            out: lin(w, "self_attn.out_proj", d, d)?,
            ln2: LayerNorm::load(w, &format!("{prefix}.layer_norm2"), d, eps, place)?,
            fc1: lin(w, "mlp.fc1", d, inter)?,
            fc2: lin(w, "mlp.fc2", inter, d)?,
            heads,
            act,
        })
    }

    /// # Shapes
    /// - x: `[batch, tokens, hidden]`
    /// - mask: `[tokens, tokens]` additive, f32 (causal text mask) or none
    /// - output: `[batch, tokens, hidden]`
    fn forward(&self, x: Tensor<B, 3>, mask: Option<&Tensor<B, 2>>) -> Tensor<B, 3> {
        self.forward_first(x, mask, None)
    }

    /// [`Self::forward`] computing only the first `first` tokens' outputs (all tokens when
    /// `None`): every token is still a key and a value, but only those are queries, and only
    /// their rows go through the output projection and the MLP. The vision tower's last layer
    /// needs only the class token: for ViT-B/32 (50 tokens) that saves 6.6% of the tower's
    /// multiply-adds, with the same result.
    ///
    /// # Shapes
    /// - output: `[batch, first, hidden]`
    fn forward_first(&self, x: Tensor<B, 3>, mask: Option<&Tensor<B, 2>>, first: Option<usize>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let tq = first.unwrap_or(t).min(t);
        let dtype = self.ln1.dtype;
        let (h, hd) = (self.heads, d / self.heads);
        let y = self.ln1.forward(x.clone());
        let split = |y: Tensor<B, 3>, t: usize| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        // CLIPAttention: scores = (q k^T) * head_dim^-0.5 (the scale is in q's weights), softmax
        // in f32.
        let queries = if tq < t { y.clone().narrow(1, 0, tq) } else { y.clone() };
        let q = split(self.q.forward3(queries), tq);
        let k = split(self.k.forward3(y.clone()), t);
        let v = split(self.v.forward3(y), t);
        let x = if tq < t { x.narrow(1, 0, tq) } else { x };
        let mut scores = q.matmul(k.transpose()).cast(FloatDType::F32);
        if let Some(m) = mask {
            let m = if tq < t { m.clone().narrow(0, 0, tq) } else { m.clone() };
            scores = scores + m.unsqueeze::<4>();
        }
        let attn = crate::cpu_ops::merge_heads(activation::softmax(scores, 3).cast(dtype).matmul(v));
        let x = self.out.forward3_then(attn, None, Some(x));
        let y = self.ln2.forward(x.clone());
        self.fc2.forward3_then(self.fc1.forward3_then(y, Some(self.act), None), None, Some(x))
    }
}

#[allow(clippy::too_many_arguments)]
fn load_layers<B: Backend>(
    w: &mut Weights,
    prefix: &str,
    n: usize,
    d: usize,
    inter: usize,
    heads: usize,
    eps: f64,
    act: Activation,
    place: &Place<B>,
) -> Result<Vec<EncoderLayer<B>>> {
    (0..n)
        .map(|i| EncoderLayer::load(w, &format!("{prefix}.encoder.layers.{i}"), d, inter, heads, eps, act, place))
        .collect()
}

/// `CLIPVisionTransformer` + `visual_projection`.
#[derive(Debug, Clone)]
pub struct ClipVision<B: Backend> {
    config: ClipVisionConfig,
    /// Patch conv (no bias) as a matmul: `[3 * P * P, hidden]`.
    patch: Tensor<B, 2>,
    class: Tensor<B, 1>,
    position: Tensor<B, 2>,
    pre_ln: LayerNorm<B>,
    layers: Vec<EncoderLayer<B>>,
    post_ln: LayerNorm<B>,
    projection: Linear<B>,
}

impl<B: Backend> ClipVision<B> {
    fn load(w: &mut Weights, c: &ClipVisionConfig, proj: usize, place: &Place<B>) -> Result<Self> {
        let (d, p) = (c.hidden_size, c.patch_size);
        let conv = w.take("vision_model.embeddings.patch_embedding.weight", &[d, c.num_channels, p, p])?;
        // [hidden, 3, P, P] -> [hidden, 3*P*P] -> transpose.
        let k = c.num_channels * p * p;
        let mut patch = vec![0f32; conv.data.len()];
        for o in 0..d {
            for i in 0..k {
                patch[i * d + o] = conv.data[o * k + i];
            }
        }
        let eps = c.layer_norm_eps;
        Ok(Self {
            config: c.clone(),
            patch: place.tensor(HostTensor { shape: vec![k, d], data: patch }),
            class: place.tensor(w.take("vision_model.embeddings.class_embedding", &[d])?),
            position: place.tensor(w.take("vision_model.embeddings.position_embedding.weight", &[c.num_patches() + 1, d])?),
            pre_ln: LayerNorm::load(w, "vision_model.pre_layrnorm", d, eps, place)?,
            layers: load_layers(w, "vision_model", c.num_hidden_layers, d, c.intermediate_size, c.num_attention_heads, eps, c.hidden_act, place)?,
            post_ln: LayerNorm::load(w, "vision_model.post_layernorm", d, eps, place)?,
            projection: Linear::load(w, "visual_projection", d, proj, false, place)?,
        })
    }

    /// Image features (projected, not normalised), in f32.
    ///
    /// # Shapes
    /// - pixels: `[batch, 3, size, size]`, any float type (cast to the compute type)
    /// - output: `[batch, projection_dim]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let pixels = pixels.cast(self.pre_ln.dtype);
        let [b, _, s, _] = pixels.dims();
        let (p, d) = (self.config.patch_size, self.config.hidden_size);
        let g = s / p;
        // Non-overlapping patches in row-major grid order, each flattened as (c, kh, kw) like the
        // conv weight, so the conv is one matmul.
        let patches = crate::cpu_ops::patches(pixels, p);
        let x = crate::cpu_ops::linear(patches, &self.patch, None, None, None).reshape([b, g * g, d]);
        let class = self.class.clone().reshape([1, 1, d]).expand([b, 1, d]);
        let x = Tensor::cat(vec![class, x], 1) + self.position.clone().unsqueeze::<3>();
        let mut x = self.pre_ln.forward(x);
        // Only the class token's output is pooled: the last layer computes only its row.
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_first(x, None, (i == last).then_some(1));
        }
        let pooled = x.narrow(1, 0, 1).reshape([b, d]);
        self.projection.forward2(self.post_ln.forward(pooled)).cast(FloatDType::F32)
    }
}

/// `CLIPTextTransformer` + `text_projection`.
#[derive(Debug, Clone)]
pub struct ClipText<B: Backend> {
    config: ClipTextConfig,
    token: Tensor<B, 2>,
    position: Tensor<B, 2>,
    layers: Vec<EncoderLayer<B>>,
    final_ln: LayerNorm<B>,
    projection: Linear<B>,
    /// Additive causal mask for the full context length, in f32.
    mask: Tensor<B, 2>,
}

impl<B: Backend> ClipText<B> {
    fn load(w: &mut Weights, c: &ClipTextConfig, proj: usize, place: &Place<B>) -> Result<Self> {
        let d = c.hidden_size;
        let eps = c.layer_norm_eps;
        let n = c.max_position_embeddings;
        // Large negative rather than -inf: softmax on some GPU backends turns inf - inf into NaN.
        let mask: Vec<f32> = (0..n * n).map(|i| if i % n > i / n { -1e9 } else { 0.0 }).collect();
        Ok(Self {
            config: c.clone(),
            token: place.tensor(w.take("text_model.embeddings.token_embedding.weight", &[c.vocab_size, d])?),
            position: place.tensor(w.take("text_model.embeddings.position_embedding.weight", &[n, d])?),
            layers: load_layers(w, "text_model", c.num_hidden_layers, d, c.intermediate_size, c.num_attention_heads, eps, c.hidden_act, place)?,
            final_ln: LayerNorm::load(w, "text_model.final_layer_norm", d, eps, place)?,
            projection: Linear::load(w, "text_projection", d, proj, false, place)?,
            mask: place.tensor_f32(HostTensor { shape: vec![n, n], data: mask }),
        })
    }

    /// Index of the pooled token in each sequence.
    pub fn pool_positions(&self, ids: &[Vec<u32>]) -> Vec<usize> {
        ids.iter()
            .map(|seq| match self.config.pooling() {
                // torch.argmax returns the first maximal index.
                TextPooling::ArgmaxId => {
                    let max = seq.iter().copied().max().unwrap_or(0);
                    seq.iter().position(|&t| t == max).unwrap_or(0)
                }
                // `(ids == eos).int().argmax()`: 0 when there is no EOS at all.
                TextPooling::FirstEos(eos) => seq.iter().position(|&t| t == eos).unwrap_or(0),
            })
            .collect()
    }

    /// Text features (projected, not normalised), in f32.
    ///
    /// Only the tokens up to the last pooled position of the batch are computed (see the body);
    /// the result is the same as for the whole sequences.
    ///
    /// # Shapes
    /// - ids: `batch` sequences of equal length `tokens ≤ max_position_embeddings`
    /// - output: `[batch, projection_dim]`
    pub fn forward(&self, ids: &[Vec<u32>], device: &B::Device) -> Result<Tensor<B, 2>> {
        let b = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        let n = self.config.max_position_embeddings;
        if b == 0 || t == 0 || t > n || ids.iter().any(|s| s.len() != t) {
            return Err(Error::Input(format!("token sequences must be non-empty, of equal length and at most {n}")));
        }
        if let Some(bad) = ids.iter().flatten().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(Error::Input(format!("token id {bad} is outside the vocabulary ({})", self.config.vocab_size)));
        }
        let d = self.config.hidden_size;
        // The causal mask means the pooled token sees only the tokens before it, so everything
        // after the last pooled position in the batch (the padding of short prompts) cannot
        // change the output: drop it. A one-line query then costs a fraction of the full
        // context. Rounded up to a multiple of 8 so a GPU backend compiles kernels for at most
        // ten sequence lengths, not one per prompt length.
        let pools = self.pool_positions(ids);
        let t = pools.iter().max().map_or(t, |&p| (p + 1).next_multiple_of(8).min(t));
        let flat: Vec<i32> = ids.iter().flat_map(|s| &s[..t]).map(|&i| i as i32).collect();
        let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, t]), device);
        let x = embedding(self.token.clone(), idx) + self.position.clone().narrow(0, 0, t).unsqueeze::<3>();
        let mask = if t == n { self.mask.clone() } else { self.mask.clone().narrow(0, 0, t).narrow(1, 0, t) };
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(x, Some(&mask));
        }
        let rows: Vec<i32> = pools.iter().enumerate().map(|(i, p)| (i * t + p) as i32).collect();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [b]), device);
        // LayerNorm is per token, so normalising only the pooled rows is the same as
        // `final_layer_norm` on every token followed by the gather.
        let pooled = x.reshape([b * t, d]).select(0, rows);
        Ok(self.projection.forward2(self.final_ln.forward(pooled)).cast(FloatDType::F32))
    }
}

/// `CLIPModel`: both towers and the learned temperature.
#[derive(Debug, Clone)]
pub struct ClipModel<B: Backend> {
    pub vision: ClipVision<B>,
    pub text: ClipText<B>,
    /// `logit_scale` as stored (a log); logits use `exp(logit_scale)`.
    pub logit_scale: f32,
}

impl<B: Backend> ClipModel<B> {
    /// Build from checkpoint tensors. Hugging Face name → ours:
    ///
    /// | checkpoint | here |
    /// |---|---|
    /// | `vision_model.embeddings.patch_embedding.weight` `[D,3,P,P]` | `vision.patch` `[3PP, D]` |
    /// | `vision_model.embeddings.class_embedding` | `vision.class` |
    /// | `vision_model.embeddings.position_embedding.weight` | `vision.position` |
    /// | `vision_model.pre_layrnorm.{weight,bias}` | `vision.pre_ln` |
    /// | `{vision,text}_model.encoder.layers.N.layer_norm{1,2}` | `layers[N].ln{1,2}` |
    /// | `{..}.layers.N.self_attn.{q,k,v,out}_proj.{weight,bias}` | `layers[N].{q,k,v,out}` (transposed) |
    /// | `{..}.layers.N.mlp.fc{1,2}.{weight,bias}` | `layers[N].fc{1,2}` (transposed) |
    /// | `vision_model.post_layernorm` | `vision.post_ln` |
    /// | `visual_projection.weight` (no bias) | `vision.projection` |
    /// | `text_model.embeddings.token_embedding.weight` | `text.token` |
    /// | `text_model.embeddings.position_embedding.weight` | `text.position` |
    /// | `text_model.final_layer_norm` | `text.final_ln` |
    /// | `text_projection.weight` (no bias) | `text.projection` |
    /// | `logit_scale` (0-d) | `logit_scale` |
    ///
    /// `*.position_ids` buffers are ignored.
    pub fn from_weights(config: &ClipConfig, mut w: Weights, place: &Place<B>) -> Result<Self> {
        Ok(Self {
            vision: ClipVision::load(&mut w, &config.vision, config.projection_dim, place)?,
            text: ClipText::load(&mut w, &config.text, config.projection_dim, place)?,
            logit_scale: w.take_scalar("logit_scale")?,
        })
    }
}
