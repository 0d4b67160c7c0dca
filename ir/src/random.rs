//! The one source of randomness in lpac: a counter-based random stream.
//!
//! Every random number is a pure function of a 64-bit *key* and a 64-bit
//! *counter*, so any element can be computed on its own, in any order, on any
//! device. The reference interpreter, the Cranelift CPU backend and the CUDA
//! PTX backend must all produce exactly the bits described here.
//!
//! # The generator: Philox4x32-10
//!
//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
//! SC 2011; the Random123 library) maps a 128-bit counter `c = [c0, c1, c2, c3]`
//! and a 64-bit key `k = [k0, k1]` (all `u32`) to 128 random bits. Ten rounds;
//! before every round but the first the key is bumped by the Weyl constants
//! (wrapping): `k0 += 0x9E3779B9`, `k1 += 0xBB67AE85`. One round is
//!
//! ```text
//! (hi0, lo0) = 0xD2511F53 * c0      // full 64-bit product, split in halves
//! (hi1, lo1) = 0xCD9E8D57 * c2
//! c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]
//! ```
//!
//! # From (key, counter) to words
//!
//! [`block`]`(key, counter)` runs Philox on the counter words
//! `[counter as u32, (counter >> 32) as u32, 0, 0]` with the key words
//! `[key as u32, (key >> 32) as u32]` and returns the four output words
//! `[w0, w1, w2, w3]`. Each counter value gives one block, and each generated
//! element uses its own counter (its flat, row-major index), so a kernel thread
//! needs exactly one Philox evaluation per element.
//!
//! # Numbers from words
//!
//! - [`uniform_bits`]`(key, counter, p)`: `(w0 >> (32 - p)) * 2^-p`, the top `p`
//!   bits of `w0`. Every value is exactly representable in any float format
//!   with at least `p` significand bits, and lies in `[0, 1)`.
//! - [`uniform_f32`]: `uniform_bits` with `p = 24`, converted to `f32` (exact).
//!   This is what `random_uniform` produces; the f64 interpreter uses the very
//!   same 24-bit value, so f32 and f64 runs see identical dropout masks.
//! - [`uniform`]: 53 bits, the top 53 bits of `(w0 << 32) | w1`, times `2^-53`;
//!   in `[0, 1)`. Its top 24 bits equal [`uniform_f32`]'s.
//! - [`normal`]: Box–Muller on one block: `u1` is the 53-bit uniform of
//!   `(w0, w1)`, `u2` the 53-bit uniform of `(w2, w3)`, and the result is
//!   `sqrt(-2 ln(1 - u1)) * cos(2π u2)` (`1 - u1` lies in `(0, 1]`, so the log is
//!   finite). The sine partner is discarded so that one counter gives one
//!   number. Computed in f64 on the host (initialisers only).
//!
//! # Keys
//!
//! Keys are derived by hashing, with a domain tag per use so that parameter
//! and dropout streams never coincide:
//!
//! - [`fnv1a64`]: 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
//!   `0x100000001b3`), over bytes.
//! - [`splitmix64`]`(x)`: `z = x + 0x9E3779B97F4A7C15`;
//!   `z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9`;
//!   `z = (z ^ (z >> 27)) * 0x94D049BB133111EB`; `z ^ (z >> 31)` (wrapping).
//! - [`mix`]`(a, b) = splitmix64(a ^ splitmix64(b))`.
//! - [`param_key`]`(seed, path) = mix(mix(seed, PARAM_DOMAIN), fnv1a64(path))`.
//! - [`dropout_key`]`(seed, step, node_key) =
//!   mix(mix(mix(seed, DROPOUT_DOMAIN), step), node_key)`.
//!
//! Keys are computed on the host; a device kernel receives the finished 64-bit
//! key and only has to implement [`block`] and the conversions above.

/// Philox multiplier applied to counter word 0.
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox multiplier applied to counter word 2.
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 (golden ratio).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 (sqrt(3) - 1).
pub const PHILOX_W1: u32 = 0xBB67_AE85;
/// Number of Philox rounds.
pub const PHILOX_ROUNDS: usize = 10;

/// Domain tag mixed into parameter-initialisation keys (ASCII "param").
pub const PARAM_DOMAIN: u64 = 0x0000_0070_6172_616d;
/// Domain tag mixed into dropout / `random_uniform` keys (ASCII "dropout").
pub const DROPOUT_DOMAIN: u64 = 0x0064_726f_706f_7574;

/// The Philox4x32-10 bijection on a 128-bit counter under a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..PHILOX_ROUNDS {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        c = philox_round(c, k);
    }
    c
}

fn philox_round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mul_hi_lo(PHILOX_M0, c[0]);
    let (hi1, lo1) = mul_hi_lo(PHILOX_M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// The high and low halves of the full 64-bit product.
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

/// The four random words for one (key, counter) pair; see the module docs for
/// how the 64-bit values are split into Philox words.
pub fn block(key: u64, counter: u64) -> [u32; 4] {
    philox4x32_10([counter as u32, (counter >> 32) as u32, 0, 0], [key as u32, (key >> 32) as u32])
}

/// A uniform number in `[0, 1)` with `bits` random bits (1..=32): the top
/// `bits` bits of word 0, times `2^-bits`.
pub fn uniform_bits(key: u64, counter: u64, bits: u32) -> f64 {
    let bits = bits.clamp(1, 32);
    let w0 = block(key, counter)[0];
    f64::from(w0 >> (32 - bits)) * (-f64::from(bits)).exp2()
}

/// A uniform `f32` in `[0, 1)` with 24 random bits: what `random_uniform` makes.
pub fn uniform_f32(key: u64, counter: u64) -> f32 {
    uniform_bits(key, counter, 24) as f32
}

/// A uniform `f64` in `[0, 1)` with 53 random bits, from words 0 and 1.
pub fn uniform(key: u64, counter: u64) -> f64 {
    let w = block(key, counter);
    uniform53(w[0], w[1])
}

fn uniform53(hi: u32, lo: u32) -> f64 {
    let bits = ((u64::from(hi) << 32) | u64::from(lo)) >> 11;
    bits as f64 * (-53f64).exp2()
}

/// A standard normal number by Box–Muller on one block (see the module docs).
pub fn normal(key: u64, counter: u64) -> f64 {
    let w = block(key, counter);
    let u1 = uniform53(w[0], w[1]);
    let u2 = uniform53(w[2], w[3]);
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The SplitMix64 output function applied to `x` (one step from state `x`).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combines two 64-bit values into a well-scrambled key; not symmetric.
pub fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b))
}

/// The key of a parameter's initialisation stream: depends only on the seed
/// and the parameter's path, never on node order.
pub fn param_key(seed: u64, path: &str) -> u64 {
    mix(mix(seed, PARAM_DOMAIN), fnv1a64(path.as_bytes()))
}

/// The key of a `random_uniform` node's stream at one training step.
pub fn dropout_key(seed: u64, step: u64, node_key: u64) -> u64 {
    mix(mix(mix(seed, DROPOUT_DOMAIN), step), node_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's `kat_vectors` for Philox4x32-10:
    /// (counter, key, expected output).
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        (
            [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
            [0xffffffff, 0xffffffff],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];

    #[test]
    fn philox_known_answers() {
        for (counter, key, expected) in KAT {
            assert_eq!(philox4x32_10(counter, key), expected, "counter {counter:x?} key {key:x?}");
        }
    }

    #[test]
    fn block_splits_key_and_counter_into_words() {
        let key = 0x0123_4567_89ab_cdef_u64;
        let counter = 0xfedc_ba98_7654_3210_u64;
        let expected = philox4x32_10([0x7654_3210, 0xfedc_ba98, 0, 0], [0x89ab_cdef, 0x0123_4567]);
        assert_eq!(block(key, counter), expected);
    }

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn streams_are_deterministic_and_keyed() {
        let k = param_key(7, "layers.0.attn.q.weight");
        assert_eq!(k, param_key(7, "layers.0.attn.q.weight"));
        assert_ne!(k, param_key(8, "layers.0.attn.q.weight"));
        assert_ne!(k, param_key(7, "layers.0.attn.k.weight"));
        assert_ne!(dropout_key(7, 0, 1), dropout_key(7, 1, 1));
        assert_ne!(dropout_key(7, 0, 1), dropout_key(7, 0, 2));
        assert_ne!(dropout_key(1, 2, 3), dropout_key(2, 1, 3), "step and seed are not interchangeable");
        assert_eq!(uniform(k, 5).to_bits(), uniform(k, 5).to_bits());
        assert_eq!(normal(k, 5).to_bits(), normal(k, 5).to_bits());
        assert_ne!(uniform(k, 5), uniform(k, 6));
    }

    #[test]
    fn uniform_f32_is_the_top_24_bits_of_uniform() {
        let key = param_key(1, "x");
        for c in 0..1000 {
            let u = uniform(key, c);
            let u24 = (u * (1u64 << 24) as f64).floor() / (1u64 << 24) as f64;
            assert_eq!(f64::from(uniform_f32(key, c)), u24);
        }
    }

    fn mean_and_variance(xs: impl Iterator<Item = f64>) -> (f64, f64) {
        let xs: Vec<f64> = xs.collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn uniform_is_roughly_uniform() {
        let key = dropout_key(42, 3, 9);
        let n = 100_000;
        for draw in [uniform as fn(u64, u64) -> f64, |k, c| f64::from(uniform_f32(k, c))] {
            assert!((0..n).all(|c| (0.0..1.0).contains(&draw(key, c))));
            let (mean, var) = mean_and_variance((0..n).map(|c| draw(key, c)));
            // Standard error of the mean is sqrt(1/12 / n) ~ 0.0009.
            assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
            assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
        }
        let mut buckets = [0usize; 10];
        for c in 0..n {
            buckets[(uniform(key, c) * 10.0) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (9_500..10_500).contains(&b)), "{buckets:?}");
    }

    #[test]
    fn normal_has_mean_zero_and_unit_std() {
        let key = param_key(3, "w");
        let (mean, var) = mean_and_variance((0..100_000).map(|c| normal(key, c)));
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var.sqrt() - 1.0).abs() < 0.015, "std {}", var.sqrt());
        assert!((0..100_000).all(|c| normal(key, c).is_finite()));
    }

    #[test]
    fn uniform_bits_are_exact_in_narrow_formats() {
        let key = 99;
        for c in 0..1000 {
            let u8bits = uniform_bits(key, c, 8);
            assert!((0.0..1.0).contains(&u8bits));
            assert_eq!(u8bits * 256.0, (u8bits * 256.0).floor());
            assert_eq!(uniform_bits(key, c, 24), f64::from(uniform_f32(key, c)));
        }
    }
}
