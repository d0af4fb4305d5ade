//! The one hot loop: dot products of 512-float rows.
//!
//! Written as 16 independent lanes so that LLVM vectorises it without fast-math (a plain
//! `iter().sum()` is a serial chain of dependent adds): SSE/AVX natively, `simd128` in wasm
//! (enabled for wasm32 in `.cargo/config.toml`). No `unsafe`, no intrinsics, one code path.

const LANES: usize = 16;

/// `Σ a[i]·b[i]`. The slices must have equal lengths.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_with(a, b)
}

/// `Σ a[i]·b[i]` for int8 codes `b`: the same lanes and order of additions as [`dot`].
#[inline]
pub fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
    dot_with(a, b)
}

/// The one loop behind both: `b`'s items widened to f32 (exactly, for i8), multiplied and added
/// in 16 lanes. Nothing here depends on the platform's vector width, so a result is the same
/// bits natively and in wasm.
#[inline(always)]
fn dot_with<T: Copy + Into<f32>>(a: &[f32], b: &[T]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i].into();
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * (*y).into();
    }
    // Pairwise reduction: 8 + 4 + 2 + 1 vector adds.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// Scales `v` to unit length in place, returning the original norm.
pub fn normalize(v: &mut [f32]) -> f32 {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 && norm.is_finite() {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_f64_reference_for_all_tail_lengths() {
        for len in [0, 1, 7, 15, 16, 17, 31, 33, 512, 515] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 2.0)
                .collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(&a, &b) as f64;
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "len {len}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn dot_i8_matches_dot_on_the_widened_codes() {
        for len in [0, 5, 16, 33, 512] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
                .collect();
            let b: Vec<i8> = (0..len).map(|i| (i * 37 % 255) as u8 as i8).collect();
            let wide: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            assert_eq!(
                dot_i8(&a, &b).to_bits(),
                dot(&a, &wide).to_bits(),
                "len {len}"
            );
        }
    }

    #[test]
    fn normalize_gives_unit_norm() {
        let mut v = vec![3.0, 4.0];
        assert_eq!(normalize(&mut v), 5.0);
        assert_eq!(v, vec![0.6, 0.8]);
    }
}
