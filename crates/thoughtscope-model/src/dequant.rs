//! GGUF Q4_1 and Q8_0 blocks to f32 in vector registers, with candle's arithmetic (`q · d + m`
//! and `q · d` in f32, a multiply then an add, not fused), so every value equals
//! `GgmlType::to_float`'s bit for bit. candle's loop runs one weight at a time: converting
//! SmolLM2's Q4_1 and Q8_0 weights for one decode step took 19 % of the step; these run 16 (or 8)
//! weights per instruction. Other block types keep candle's conversion.

use candle_core::quantized::GgmlDType;
use half::f16;

/// Bytes of one Q4_1 block: scale `d` and minimum `m` (f16 each), then 16 bytes of 32 nibbles
/// (weight `j` in the low nibble of byte `j`, weight `16 + j` in its high nibble).
const Q4_1_BYTES: usize = 20;
/// Bytes of one Q8_0 block: scale `d` (f16), then 32 signed bytes.
const Q8_0_BYTES: usize = 34;
const BLOCK: usize = 32;

/// Decode the blocks in `bytes` into `out` (32 values per block) where this module has a vector
/// path for `dtype` on this CPU; `false` (nothing written) elsewhere, for candle's conversion.
pub(crate) fn blocks_to_f32(dtype: GgmlDType, bytes: &[u8], out: &mut [f32]) -> bool {
    let block_bytes = match dtype {
        GgmlDType::Q4_1 => Q4_1_BYTES,
        GgmlDType::Q8_0 => Q8_0_BYTES,
        _ => return false,
    };
    if bytes.len() % block_bytes != 0 || bytes.len() / block_bytes * BLOCK != out.len() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if crate::isa::avx512_enabled() {
            // SAFETY: the CPU has AVX-512F; lengths checked above.
            unsafe {
                match dtype {
                    GgmlDType::Q4_1 => simd::q4_1_avx512(bytes, out),
                    _ => simd::q8_0_avx512(bytes, out),
                }
            }
            return true;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2; lengths checked above.
            unsafe {
                match dtype {
                    GgmlDType::Q4_1 => simd::q4_1_avx2(bytes, out),
                    _ => simd::q8_0_avx2(bytes, out),
                }
            }
            return true;
        }
    }
    false
}

/// The f16 at `bytes[at..at + 2]` (little-endian), widened exactly.
#[inline(always)]
fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{f16_at, BLOCK, Q4_1_BYTES, Q8_0_BYTES};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn q4_1_avx512(bytes: &[u8], out: &mut [f32]) {
        let low = _mm512_set1_epi32(0x0F);
        for (block, ys) in bytes.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            let (d, m) = (_mm512_set1_ps(f16_at(block, 0)), _mm512_set1_ps(f16_at(block, 2)));
            // SAFETY: the block holds 16 bytes of nibbles after its two scales; `ys` holds 32 floats.
            unsafe {
                let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(block.as_ptr().add(4).cast()));
                let lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, low));
                let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(q));
                _mm512_storeu_ps(ys.as_mut_ptr(), _mm512_add_ps(_mm512_mul_ps(lo, d), m));
                _mm512_storeu_ps(ys.as_mut_ptr().add(16), _mm512_add_ps(_mm512_mul_ps(hi, d), m));
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn q8_0_avx512(bytes: &[u8], out: &mut [f32]) {
        for (block, ys) in bytes.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            let d = _mm512_set1_ps(f16_at(block, 0));
            // SAFETY: the block holds 32 signed bytes after its scale; `ys` holds 32 floats.
            unsafe {
                for half in 0..2 {
                    let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(block.as_ptr().add(2 + 16 * half).cast()));
                    _mm512_storeu_ps(ys.as_mut_ptr().add(16 * half), _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn q4_1_avx2(bytes: &[u8], out: &mut [f32]) {
        let low = _mm256_set1_epi32(0x0F);
        for (block, ys) in bytes.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            let (d, m) = (_mm256_set1_ps(f16_at(block, 0)), _mm256_set1_ps(f16_at(block, 2)));
            for eighth in 0..2 {
                // SAFETY: bytes 4 + 8·eighth .. + 8 lie in the block's 16 bytes of nibbles; `ys` holds 32 floats.
                unsafe {
                    let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(block.as_ptr().add(4 + 8 * eighth).cast()));
                    let lo = _mm256_cvtepi32_ps(_mm256_and_si256(q, low));
                    let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(q));
                    _mm256_storeu_ps(ys.as_mut_ptr().add(8 * eighth), _mm256_add_ps(_mm256_mul_ps(lo, d), m));
                    _mm256_storeu_ps(ys.as_mut_ptr().add(16 + 8 * eighth), _mm256_add_ps(_mm256_mul_ps(hi, d), m));
                }
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn q8_0_avx2(bytes: &[u8], out: &mut [f32]) {
        for (block, ys) in bytes.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            let d = _mm256_set1_ps(f16_at(block, 0));
            for quarter in 0..4 {
                // SAFETY: bytes 2 + 8·quarter .. + 8 lie in the block's 32 signed bytes; `ys` holds 32 floats.
                unsafe {
                    let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(block.as_ptr().add(2 + 8 * quarter).cast()));
                    _mm256_storeu_ps(ys.as_mut_ptr().add(8 * quarter), _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Every vector path this CPU runs decodes blocks to candle's values bit for bit, over
    /// weights with both signs, zero, large and tiny magnitudes (scales of many exponents).
    #[test]
    fn vector_blocks_equal_candle_bit_for_bit() {
        let (rows, cols) = (24, 256);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let scale = 10f32.powi((i / cols) as i32 % 9 - 6);
                ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * scale
            })
            .collect();
        let dense = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&dense, dtype).unwrap();
            let want: Vec<u32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
            let data = q.data().unwrap();
            let mut got = vec![f32::NAN; rows * cols];
            if !blocks_to_f32(dtype, &data, &mut got) {
                crate::isa::skip_hardware("vector_blocks_equal_candle_bit_for_bit", "no AVX2 on this CPU");
                return;
            }
            assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "{dtype:?}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut narrow = vec![f32::NAN; rows * cols];
                // SAFETY: AVX2 checked just above; whole blocks in, 32 floats per block out.
                unsafe {
                    match dtype {
                        GgmlDType::Q4_1 => simd::q4_1_avx2(&data, &mut narrow),
                        _ => simd::q8_0_avx2(&data, &mut narrow),
                    }
                }
                assert_eq!(narrow.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want, "{dtype:?}, AVX2");
            }
        }
        // A type without a vector path, or a length that is not whole blocks: nothing written.
        let mut out = vec![0f32; 32];
        assert!(!blocks_to_f32(GgmlDType::Q4_0, &[0; 18], &mut out));
        assert!(!blocks_to_f32(GgmlDType::Q8_0, &[0; 33], &mut out));
    }
}
