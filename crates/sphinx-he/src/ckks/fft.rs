//! The CKKS canonical embedding in `O(N log N)`.
//!
//! Slot `j` of a real-coefficient `m(X) mod X^N + 1` is `m(ζ^{g_j})` with `ζ = e^{iπ/N}` and
//! `g_j = 5^j mod 2N`. Writing `w_k = m_k + i m_{k+N/2}` (`k < n = N/2`) and using `ζ^{g N/2} = i`
//! (every `g_j ≡ 1 mod 4`) gives `m(ζ^g) = Σ_k w_k ζ^{gk}`. With `g = 1 + 4t` and `ω = ζ^4`, a
//! primitive `n`-th root of unity, this is `Σ_k (w_k ζ^k) ω^{tk}`: a length-`n` DFT of the twisted
//! vector, read at `t_j = (g_j - 1)/4`. Encoding inverts the three steps.

/// A complex number (`f64` parts).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Complex {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl Complex {
    /// `re + i·im`.
    pub const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }

    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }

    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }

    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.im - o.im)
    }

    fn conj(self) -> Self {
        Self::new(self.re, -self.im)
    }

    fn expi(theta: f64) -> Self {
        Self::new(theta.cos(), theta.sin())
    }
}

/// Precomputed tables of the embedding for one ring degree.
#[derive(Debug, Clone)]
pub(crate) struct SpecialFft {
    n: usize,
    /// `ζ^k` for `k < n`.
    twist: Vec<Complex>,
    /// `ω^k = e^{2πik/n}` for `k < n/2`.
    roots: Vec<Complex>,
    /// `t_j` for each slot `j`.
    slot_to_t: Vec<usize>,
    bitrev: Vec<usize>,
}

impl SpecialFft {
    /// Tables for ring degree `big_n` (so `n = big_n/2` slots).
    pub(crate) fn new(big_n: usize) -> Self {
        let n = big_n / 2;
        let two_n = 2 * big_n;
        let pi = std::f64::consts::PI;
        let twist = (0..n)
            .map(|k| Complex::expi(pi * k as f64 / big_n as f64))
            .collect();
        let roots = (0..n / 2)
            .map(|k| Complex::expi(2.0 * pi * k as f64 / n as f64))
            .collect();
        let mut g = 1usize;
        let slot_to_t = (0..n)
            .map(|_| {
                let t = (g - 1) / 4;
                g = g * 5 % two_n;
                t
            })
            .collect();
        let bits = n.trailing_zeros();
        let bitrev = (0..n)
            .map(|i| {
                if bits == 0 {
                    0
                } else {
                    i.reverse_bits() >> (usize::BITS - bits)
                }
            })
            .collect();
        Self {
            n,
            twist,
            roots,
            slot_to_t,
            bitrev,
        }
    }

    /// In-place DFT `x_t <- Σ_k x_k ω^{±tk}` (sign `+` when `inverse` is false).
    fn dft(&self, x: &mut [Complex], inverse: bool) {
        let n = self.n;
        for i in 0..n {
            let j = self.bitrev[i];
            if i < j {
                x.swap(i, j);
            }
        }
        let mut len = 2;
        while len <= n {
            let half = len / 2;
            let step = n / len;
            for chunk in x.chunks_exact_mut(len) {
                let (lo, hi) = chunk.split_at_mut(half);
                for (k, (a, b)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
                    let w = self.roots[k * step];
                    let w = if inverse { w.conj() } else { w };
                    let v = b.mul(w);
                    let u = *a;
                    *a = u.add(v);
                    *b = u.sub(v);
                }
            }
            len *= 2;
        }
    }

    /// Slots (length `n`) to the twisted complex coefficients `w` (length `n`), unscaled.
    pub(crate) fn slots_to_coeffs(&self, slots: &[Complex], out: &mut Vec<Complex>) {
        out.clear();
        out.resize(self.n, Complex::default());
        for (j, &z) in slots.iter().enumerate() {
            out[self.slot_to_t[j]] = z;
        }
        self.dft(out, true);
        let inv_n = 1.0 / self.n as f64;
        for (w, tw) in out.iter_mut().zip(&self.twist) {
            let v = w.mul(tw.conj());
            *w = Complex::new(v.re * inv_n, v.im * inv_n);
        }
    }

    /// Twisted complex coefficients `w` to slots.
    pub(crate) fn coeffs_to_slots(&self, w: &mut [Complex], out: &mut Vec<Complex>) {
        for (x, tw) in w.iter_mut().zip(&self.twist) {
            *x = x.mul(*tw);
        }
        self.dft(w, false);
        out.clear();
        out.extend(self.slot_to_t.iter().map(|&t| w[t]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_embedding() {
        let big_n = 64;
        let n = big_n / 2;
        let fft = SpecialFft::new(big_n);
        let m: Vec<f64> = (0..big_n).map(|k| ((k * 37 % 11) as f64) - 5.0).collect();
        let mut w: Vec<Complex> = (0..n).map(|k| Complex::new(m[k], m[k + n])).collect();
        let mut slots = Vec::new();
        fft.coeffs_to_slots(&mut w, &mut slots);
        let mut g = 1usize;
        for z in &slots {
            let theta = std::f64::consts::PI * g as f64 / big_n as f64;
            let (mut re, mut im) = (0.0, 0.0);
            for (k, &c) in m.iter().enumerate() {
                re += c * (theta * k as f64).cos();
                im += c * (theta * k as f64).sin();
            }
            assert!((z.re - re).abs() < 1e-9 && (z.im - im).abs() < 1e-9);
            g = g * 5 % (2 * big_n);
        }
        let mut back = Vec::new();
        fft.slots_to_coeffs(&slots, &mut back);
        for k in 0..n {
            assert!((back[k].re - m[k]).abs() < 1e-9 && (back[k].im - m[k + n]).abs() < 1e-9);
        }
    }
}
