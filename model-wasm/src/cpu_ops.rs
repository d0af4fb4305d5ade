//! The encoders' CPU-backend (burn-flex) kernels, parallel on rayon's pool natively and in wasm
//! with the `threads` feature (in order otherwise):
//! - [`linear`]: a projection with its rows split into one block per thread, each block's
//!   product and epilogue one task;
//! - [`epilogue`]: bias, quick GELU and residual as one pass in place on the product's output,
//!   where burn's ops were two to six single-threaded passes, each allocating a new tensor;
//! - [`patches`] and [`merge_heads`]: the patch embedding's and attention's layout changes as
//!   parallel copies of contiguous runs.
//!
//! Any other backend (WebGPU, whose fusion already merges these ops), dtype or layout takes
//! burn's composed ops, with the same meaning.

use std::any::Any;

use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};
use burn_flex::FlexTensor;

use crate::config::Activation;

/// `act(x w + bias) + residual`, each part optional: a linear layer on `[rows, in]`.
///
/// On burn-flex with more than one thread, the rows are split into one block per thread and each
/// block's product and epilogue run as one task. gemm's own threading splits every product's
/// depth blocks across the threads, with two fork-joins per block; on wasm threads that scaled
/// the projections 1.54-1.71x from one thread to two; with row blocks, 1.59-1.85x (a 32-image add
/// in the threaded worker, batch 8, warm-up included).
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    act: Option<Activation>,
    residual: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        let threads = rayon::current_num_threads();
        let rows = x.dims()[0];
        let fused_act = act.is_none() || act == Some(Activation::QuickGelu);
        // Blocks of at least 32 rows: below that a block's product is mostly packing.
        if threads > 1 && rows >= 64 && fused_act && x.dtype() == burn::tensor::DType::F32 {
            match split_rows::<B>(x, w, bias, act, residual, threads.min(rows / 32)) {
                Ok(out) => return out,
                Err((x, residual)) => return epilogue(x.matmul(w.clone()), bias, act, residual),
            }
        }
    }
    epilogue(x.matmul(w.clone()), bias, act, residual)
}

#[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
fn split_rows<B: Backend>(
    x: Tensor<B, 2>,
    w: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    act: Option<Activation>,
    residual: Option<Tensor<B, 2>>,
    blocks: usize,
) -> Result<Tensor<B, 2>, Back<B>> {
    use burn::backend::Flex;
    use rayon::prelude::*;
    let x = match to_flex(x) {
        Ok(x) => from_flex::<Flex, 2>(x),
        Err(x) => return Err((x, residual)),
    };
    let flex = |t: Tensor<B, 2>| from_flex::<Flex, 2>(to_flex(t).expect("same backend as x"));
    let w = flex(w.clone());
    let bias = bias.map(|b| from_flex::<Flex, 1>(to_flex(b.clone()).expect("same backend as x")));
    let residual = residual.map(flex);
    let rows = x.dims()[0];
    let parts: Vec<Tensor<Flex, 2>> = (0..blocks)
        .into_par_iter()
        .map(|i| {
            let (start, end) = (rows * i / blocks, rows * (i + 1) / blocks);
            let y = x.clone().narrow(0, start, end - start).matmul(w.clone());
            let r = residual.as_ref().map(|r| r.clone().narrow(0, start, end - start));
            epilogue(y, bias.as_ref(), act, r)
        })
        .collect();
    Ok(from_flex::<B, 2>(to_flex(Tensor::cat(parts, 0)).expect("a burn-flex tensor")))
}

/// `act(y + bias) + residual`, each part optional; `y` is a projection's `[rows, out]` output.
pub(crate) fn epilogue<B: Backend>(
    y: Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    act: Option<Activation>,
    residual: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    // The fused pass knows quick GELU (CLIP's); exact GELU stays with burn's kernel.
    if act.is_none() || act == Some(Activation::QuickGelu) {
        match fused::<B>(y, bias, act.is_some(), residual) {
            Ok(out) => return out,
            Err((y, residual)) => return composed(y, bias, act, residual),
        }
    }
    composed(y, bias, act, residual)
}

fn composed<B: Backend>(
    y: Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    act: Option<Activation>,
    residual: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let y = match bias {
        Some(b) => y + b.clone().unsqueeze(),
        None => y,
    };
    let y = match act {
        Some(a) => crate::model::activate(y, a),
        None => y,
    };
    match residual {
        Some(r) => r + y,
        None => y,
    }
}

type Back<B> = (Tensor<B, 2>, Option<Tensor<B, 2>>);

/// The fused pass where every tensor is a contiguous f32 burn-flex tensor and `y` is not
/// shared; otherwise the tensors back, untouched.
fn fused<B: Backend>(
    y: Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    gelu: bool,
    residual: Option<Tensor<B, 2>>,
) -> Result<Tensor<B, 2>, Back<B>> {
    if y.dtype() != burn::tensor::DType::F32 {
        return Err((y, residual));
    }
    let [rows, n] = y.dims();
    let mut out = match to_flex(y) {
        Ok(f) => f,
        Err(y) => return Err((y, residual)),
    };
    let back = |out: FlexTensor, residual: Option<Tensor<B, 2>>| Err((from_flex::<B, 2>(out), residual));
    let b: Option<FlexTensor> = bias.map(|b| to_flex(b.clone()).expect("same backend as y"));
    let r: Option<FlexTensor> = residual.clone().map(|r| to_flex(r).expect("same backend as y"));
    let b_slice = match &b {
        Some(b) => match b.as_slice::<f32>() {
            Some(s) if s.len() == n => Some(s),
            _ => return back(out, residual),
        },
        None => None,
    };
    let r_slice = match &r {
        Some(r) => match r.as_slice::<f32>() {
            Some(s) if s.len() == rows * n => Some(s),
            _ => return back(out, residual),
        },
        None => None,
    };
    if out.layout().contiguous_offsets() != Some((0, rows * n)) {
        return back(out, residual);
    }
    let Some(data) = out.try_storage_mut::<f32>() else {
        return back(out, residual);
    };
    if data.len() != rows * n {
        return back(out, residual);
    }
    run(data, n, b_slice, gelu, r_slice);
    Ok(from_flex::<B, 2>(out))
}

/// The pass itself over `data` (`[rows, n]`), in chunks of rows.
fn run(data: &mut [f32], n: usize, bias: Option<&[f32]>, gelu: bool, residual: Option<&[f32]>) {
    // About 16K floats a task: enough work to outweigh a wake-up, small enough to share out.
    let rows_per = (16_384 / n.max(1)).max(1);
    let chunk = rows_per * n;
    let task = |(i, out): (usize, &mut [f32])| {
        let res = residual.map(|r| &r[i * chunk..i * chunk + out.len()]);
        for (row, o) in out.chunks_exact_mut(n).enumerate() {
            let res_row = res.map(|r| &r[row * n..(row + 1) * n]);
            row_pass(o, bias, gelu, res_row);
        }
    };
    for_each_chunk(data, chunk, task);
}

/// `task((i, chunk))` for each `len`-long chunk of `data`: on rayon's pool natively and in the
/// threaded wasm build, in order on this thread otherwise.
fn for_each_chunk(data: &mut [f32], len: usize, task: impl Fn((usize, &mut [f32])) + Sync + Send) {
    #[cfg(any(not(target_arch = "wasm32"), feature = "threads"))]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(len).enumerate().for_each(task);
    }
    #[cfg(not(any(not(target_arch = "wasm32"), feature = "threads")))]
    data.chunks_mut(len).enumerate().for_each(task);
}

/// One row: plain loops over equal-length slices, which LLVM vectorises (SIMD128 in wasm).
#[inline]
fn row_pass(o: &mut [f32], bias: Option<&[f32]>, gelu: bool, residual: Option<&[f32]>) {
    if let Some(b) = bias {
        for (o, b) in o.iter_mut().zip(b) {
            *o += b;
        }
    }
    if gelu {
        for o in o.iter_mut() {
            *o = quick_gelu(*o);
        }
    }
    if let Some(r) = residual {
        for (o, r) in o.iter_mut().zip(r) {
            *o += r;
        }
    }
}

/// `x * sigmoid(1.702 x)`, as `x / (1 + exp(-1.702 x))` (the composed form's arithmetic).
#[inline(always)]
fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

/// `e^x` to about 2 ulp (relative error below 2.5e-7 on [-87, 88]), branch-free so that the
/// loop vectorises: `x = k ln 2 + r` with |r| ≤ ln 2 / 2 (ln 2 in two parts, Cody and Waite),
/// `e^r` by its degree-7 Taylor polynomial (remainder below 4e-9), `2^k` from the exponent
/// bits. Inputs are clamped to [-87, 88], where `2^k` stays a normal float: below, the result
/// is at most e^-87 (1.6e-38) instead of smaller; above, at most e^88 (1.7e38) instead of
/// larger, and quick GELU divides by it either way (the result is 0 to within 1e-36).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + 0.5).floor();
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// Non-overlapping `p`x`p` patches of `[batch, channels, size, size]` pixels as rows
/// `[batch * g * g, channels * p * p]` (`g = size / p`), in row-major grid order, each
/// flattened as (channel, y, x) like the patch conv's weight. On burn-flex, one parallel copy of
/// `p`-long runs; burn's six-dimensional permute copied element by element on one thread, 7% of
/// the threaded image encode.
pub(crate) fn patches<B: Backend>(pixels: Tensor<B, 4>, p: usize) -> Tensor<B, 2> {
    let [b, c, s, _] = pixels.dims();
    let g = s / p;
    let composed = |pixels: Tensor<B, 4>| pixels.reshape([b, c, g, p, g, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b * g * g, c * p * p]);
    if s % p != 0 {
        return composed(pixels);
    }
    let flex = match flex_f32(pixels) {
        Ok(f) => f,
        Err(pixels) => return composed(pixels),
    };
    let src = flex.as_slice::<f32>().expect("checked by flex_f32");
    let row_len = c * p * p;
    let mut out = vec![0f32; b * g * g * row_len];
    let task = |(r, row): (usize, &mut [f32])| {
        let (bi, gy, gx) = (r / (g * g), (r / g) % g, r % g);
        for (run, dst) in row.chunks_exact_mut(p).enumerate() {
            let (ch, ky) = (run / p, run % p);
            let at = ((bi * c + ch) * s + gy * p + ky) * s + gx * p;
            dst.copy_from_slice(&src[at..at + p]);
        }
    };
    for_each_chunk(&mut out, row_len, task);
    let t = FlexTensor::from_data(burn::tensor::TensorData::new(out, [b * g * g, row_len]));
    from_flex::<B, 2>(t)
}

/// Attention's per-head outputs `[batch, heads, tokens, head_dim]` as rows of concatenated heads
/// `[batch, tokens, heads * head_dim]` (`swap_dims(1, 2)` then `reshape`). On burn-flex, one
/// parallel copy of `head_dim`-long runs, where burn's strided copy ran on one thread.
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, t, hd] = x.dims();
    let composed = |x: Tensor<B, 4>| x.swap_dims(1, 2).reshape([b, t, h * hd]);
    let flex = match flex_f32(x) {
        Ok(f) => f,
        Err(x) => return composed(x),
    };
    let src = flex.as_slice::<f32>().expect("checked by flex_f32");
    let mut out = vec![0f32; b * t * h * hd];
    let task = |(r, row): (usize, &mut [f32])| {
        let (bi, ti) = (r / t, r % t);
        for (hi, dst) in row.chunks_exact_mut(hd).enumerate() {
            let at = ((bi * h + hi) * t + ti) * hd;
            dst.copy_from_slice(&src[at..at + hd]);
        }
    };
    for_each_chunk(&mut out, h * hd, task);
    from_flex::<B, 3>(FlexTensor::from_data(burn::tensor::TensorData::new(out, [b, t, h * hd])))
}

/// `x` as a burn-flex tensor whose f32 data is one contiguous slice, or `x` back (another
/// backend, dtype or layout).
fn flex_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if x.dtype() != burn::tensor::DType::F32 {
        return Err(x);
    }
    let flex = to_flex(x)?;
    if flex.as_slice::<f32>().is_none() {
        return Err(from_flex(flex));
    }
    Ok(flex)
}

fn to_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    let mut slot: Option<B::FloatTensorPrimitive> = Some(t.into_primitive().tensor());
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<FlexTensor>>() {
        Some(flex) => Ok(flex.take().expect("set above")),
        None => Err(Tensor::from_primitive(TensorPrimitive::Float(slot.expect("not taken")))),
    }
}

/// Back from [`to_flex`]: only called where `B` is burn-flex.
fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let mut slot = Some(t);
    let prim = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B::FloatTensorPrimitive>>()
        .and_then(Option::take)
        .expect("from_flex on a burn-flex tensor");
    Tensor::from_primitive(TensorPrimitive::Float(prim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst: f32 = 0.0;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        // Far outside the range, quick GELU's limits: x for large x, 0 for very negative x.
        assert_eq!(quick_gelu(1e4), 1e4);
        assert!(quick_gelu(-1e4).abs() < 1e-30);
        assert_eq!(quick_gelu(0.0), 0.0);
    }

    #[test]
    fn patches_match_the_permute() {
        let device = Default::default();
        for (b, c, s, p) in [(2, 3, 8, 4), (1, 3, 6, 2), (3, 1, 9, 3)] {
            let n = b * c * s * s;
            let px = Tensor::<Flex, 1>::from_data(TensorData::new((0..n).map(|i| i as f32).collect::<Vec<_>>(), [n]), &device)
                .reshape([b, c, s, s]);
            let g = s / p;
            let want = px.clone().reshape([b, c, g, p, g, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b * g * g, c * p * p]);
            assert_eq!(patches(px, p).into_data().to_vec::<f32>().unwrap(), want.into_data().to_vec::<f32>().unwrap());
        }
    }

    #[test]
    fn merge_heads_matches_swap_and_reshape() {
        let device = Default::default();
        let (b, h, t, hd) = (2, 3, 5, 4);
        let n = b * h * t * hd;
        let x = Tensor::<Flex, 1>::from_data(TensorData::new((0..n).map(|i| i as f32).collect::<Vec<_>>(), [n]), &device)
            .reshape([b, h, t, hd]);
        let want = x.clone().swap_dims(1, 2).reshape([b, t, h * hd]);
        assert_eq!(merge_heads(x).into_data().to_vec::<f32>().unwrap(), want.into_data().to_vec::<f32>().unwrap());
    }

    /// The fused pass against burn's composed ops, on shapes with and without a remainder chunk.
    #[test]
    fn fused_matches_composed() {
        let device = Default::default();
        for (rows, n) in [(1, 7), (50, 768), (37, 3072), (400, 64)] {
            let vals = |len: usize, seed: u32| -> Vec<f32> {
                (0..len)
                    .map(|i| (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0 - 0.5) * 12.0)
                    .collect()
            };
            let t2 = |v: Vec<f32>| Tensor::<Flex, 2>::from_data(TensorData::new(v, [rows, n]), &device);
            let y = vals(rows * n, 1);
            let bias = Tensor::<Flex, 1>::from_data(TensorData::new(vals(n, 2), [n]), &device);
            let res = vals(rows * n, 3);
            for (act, residual) in [(Some(Activation::QuickGelu), false), (None, true), (None, false)] {
                let r = residual.then(|| t2(res.clone()));
                let want = composed(t2(y.clone()), Some(&bias), act, r.clone()).into_data().to_vec::<f32>().unwrap();
                let got = epilogue(t2(y.clone()), Some(&bias), act, r).into_data().to_vec::<f32>().unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{rows}x{n} {act:?} residual {residual}: {g} vs {w}");
                }
            }
        }
    }
}
