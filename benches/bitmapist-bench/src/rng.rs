//! A small deterministic generator (xoshiro256**, seeded by SplitMix64) and
//! the distributions the workloads use. Written out here rather than taken
//! from `rand` so the dataset a seed gives never changes with a dependency
//! upgrade.

#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator for a sub-stream (`a`, `b`) of `seed`.
    pub fn derive(seed: u64, a: u64, b: u64) -> Rng {
        Rng::new(
            seed ^ a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.wrapping_mul(0x9FB2_1C65_1E98_DF25),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A user id in 1..=u skewed to recent (high) ids:
    /// `floor(u · (1 − Beta(1, 3))) + 1`. `1 − Beta(1, 3)` is `V^(1/3)` for
    /// uniform `V`.
    pub fn skewed_id(&mut self, u: u32) -> u32 {
        let x = self.f64().cbrt();
        ((u as f64 * x) as u32).min(u - 1) + 1
    }
}

/// Zipf over ranks 0..n with exponent `s`: P(k) ∝ 1/(k+1)^s.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 0..n.max(1) {
            acc += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.f64();
        self.cdf
            .partition_point(|&c| c <= x)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        let mut high = 0;
        for _ in 0..100_000 {
            let id = r.skewed_id(1000);
            assert!((1..=1000).contains(&id));
            high += u32::from(id > 500);
        }
        // P(id > u/2) = 1 − 0.5³ = 0.875.
        assert!((86_000..89_000).contains(&high), "{high}");
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
        }
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(20, 1.2);
        let mut r = Rng::new(3);
        let mut counts = [0u32; 20];
        for _ in 0..100_000 {
            counts[z.sample(&mut r)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[5] && counts[5] > counts[19]);
        assert!(counts[19] > 0);
    }
}
