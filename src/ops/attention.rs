//! Stand-in until the tiled implementation lands: a direct masked attention with the same API.
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::float::{cst, Float};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnMode {
    Dense,
    S2,
    S2Roll,
}

impl FromStr for AttnMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dense" => Ok(AttnMode::Dense),
            "s2" => Ok(AttnMode::S2),
            "s2-roll" => Ok(AttnMode::S2Roll),
            o => Err(Error::option(
                "attn",
                format!("expected dense, s2 or s2-roll; got `{o}`"),
            )),
        }
    }
}

impl fmt::Display for AttnMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttnMode::Dense => "dense",
            AttnMode::S2 => "s2",
            AttnMode::S2Roll => "s2-roll",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub seq_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnMask {
    pub mode: AttnMode,
    pub group_size: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct AttnStats {
    pub tiles_visited: usize,
    pub tiles_total: usize,
}

impl AttnMask {
    pub fn dense() -> Self {
        AttnMask {
            mode: AttnMode::Dense,
            group_size: 0,
        }
    }
    pub fn new(mode: AttnMode, group_size: usize) -> Result<Self> {
        if mode != AttnMode::Dense && (group_size < 2 || group_size % 2 != 0) {
            return Err(Error::option(
                "group_size",
                format!("must be even and >= 2, got {group_size}"),
            ));
        }
        Ok(AttnMask { mode, group_size })
    }
    pub fn from_ratio(mode: AttnMode, group_ratio: f64, seq_len: usize) -> Result<Self> {
        if mode == AttnMode::Dense {
            return Ok(Self::dense());
        }
        Self::new(mode, (seq_len as f64 * group_ratio) as usize)
    }
    pub fn allows(&self, head: usize, n_heads: usize, i: usize, j: usize, n: usize) -> bool {
        let g = self.group_size;
        if self.mode == AttnMode::Dense || g >= n || head < n_heads / 2 {
            return j <= i && (self.mode == AttnMode::Dense || g >= n || i / g == j / g);
        }
        let s = g / 2;
        match self.mode {
            AttnMode::S2 => j <= i && (i + s) / g == (j + s) / g,
            _ => {
                let p = |x: usize| (x + n - s) % n;
                p(j) <= p(i) && p(i) / g == p(j) / g
            }
        }
    }
}

pub fn attention_forward<T: Float>(
    out: &mut [T],
    lse: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    s: &AttnShape,
    mask: &AttnMask,
) -> AttnStats {
    let (n, h, hk, d) = (s.seq_len, s.n_heads, s.n_kv_heads, s.head_dim);
    let scale: T = cst(1.0 / (d as f64).sqrt());
    for b in 0..s.batch {
        for hh in 0..h {
            let kh = hh / (h / hk);
            for i in 0..n {
                let qi = &q[((b * n + i) * h + hh) * d..][..d];
                let sc: Vec<T> = (0..n)
                    .map(|j| {
                        if mask.allows(hh, h, i, j, n) {
                            let kj = &k[((b * n + j) * hk + kh) * d..][..d];
                            qi.iter().zip(kj).map(|(a, c)| *a * *c).sum::<T>() * scale
                        } else {
                            T::neg_infinity()
                        }
                    })
                    .collect();
                let m = sc.iter().fold(T::neg_infinity(), |a, &x| a.max(x));
                let l: T = sc.iter().map(|&x| (x - m).exp()).sum();
                lse[(b * h + hh) * n + i] = m + l.ln();
                let o = &mut out[((b * n + i) * h + hh) * d..][..d];
                o.iter_mut().for_each(|x| *x = T::zero());
                for j in 0..n {
                    let p = (sc[j] - m).exp() / l;
                    let vj = &v[((b * n + j) * hk + kh) * d..][..d];
                    o.iter_mut().zip(vj).for_each(|(x, &y)| *x += p * y);
                }
            }
        }
    }
    AttnStats {
        tiles_visited: 0,
        tiles_total: 0,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Float>(
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
    dout: &[T],
    q: &[T],
    k: &[T],
    v: &[T],
    out: &[T],
    lse: &[T],
    s: &AttnShape,
    mask: &AttnMask,
) {
    let (n, h, hk, d) = (s.seq_len, s.n_heads, s.n_kv_heads, s.head_dim);
    let scale: T = cst(1.0 / (d as f64).sqrt());
    for b in 0..s.batch {
        for hh in 0..h {
            let kh = hh / (h / hk);
            for i in 0..n {
                let qo = ((b * n + i) * h + hh) * d;
                let di: T = (0..d).map(|x| dout[qo + x] * out[qo + x]).sum();
                for j in 0..n {
                    if !mask.allows(hh, h, i, j, n) {
                        continue;
                    }
                    let ko = ((b * n + j) * hk + kh) * d;
                    let sc = (0..d).map(|x| q[qo + x] * k[ko + x]).sum::<T>() * scale;
                    let p = (sc - lse[(b * h + hh) * n + i]).exp();
                    let dp: T = (0..d).map(|x| dout[qo + x] * v[ko + x]).sum();
                    let ds = p * (dp - di);
                    for x in 0..d {
                        dv[ko + x] += p * dout[qo + x];
                        dq[qo + x] += ds * k[ko + x] * scale;
                        dk[ko + x] += ds * q[qo + x] * scale;
                    }
                }
            }
        }
    }
}
