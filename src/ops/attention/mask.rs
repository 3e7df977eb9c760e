//! Which keys each query may attend to: causal dense attention, S²-Attn's groups (DESIGN §2), the
//! paper's rolled variant, and groups with no head shifted (the paper's short-attention ablation). The mask exists twice on purpose: `AttnMask::allows` is the formula
//! written as it reads in the design, and `HeadMask::row_keys` is the same set as at most two key
//! intervals per row, which is what lets the tiled kernels skip whole tiles and mask a tile without
//! a division per element. Tests check one against the other.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The attention pattern of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnMode {
    /// Full causal attention: what inference and evaluation use.
    Dense,
    /// Shifted sparse attention without wrap-around (DESIGN §2): causal, the training default.
    S2,
    /// The paper's Algorithm 1 (roll the shifted heads by -G/2, attend in groups, roll back). Its
    /// wrap-around lets the first G/2 queries of the shifted heads see the last G/2 keys, a leak
    /// from the future that the released LongLoRA weights were trained with; for reproduction only.
    S2Roll,
    /// The paper's "short attention" ablation: causal attention inside groups of G for every head,
    /// none shifted, so no information crosses a group boundary.
    S2NoShift,
}

impl AttnMode {
    /// Every mode, in the order error messages list them.
    pub const ALL: [AttnMode; 4] = [
        AttnMode::Dense,
        AttnMode::S2,
        AttnMode::S2Roll,
        AttnMode::S2NoShift,
    ];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            AttnMode::Dense => "dense",
            AttnMode::S2 => "s2",
            AttnMode::S2Roll => "s2-roll",
            AttnMode::S2NoShift => "s2-noshift",
        }
    }
}

impl fmt::Display for AttnMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttnMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        AttnMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::option(
                    "attn",
                    format!("unknown attention mode `{s}`; expected one of dense, s2, s2-roll, s2-noshift"),
                )
            })
    }
}

/// An attention mask: the mode and, for the S² modes, the group size G.
///
/// Query `i` of head `h` (of `H`) may attend to key `j` as follows; the offset of the shifted half
/// is `o = G/2` for `h >= H/2` (integer division, so with `H = 1` the only head is shifted):
/// - `Dense`: `j <= i`.
/// - `S2`: `j <= i` and `(i + o_h) / G == (j + o_h) / G`, with `o_h = 0` for `h < H/2`. Groups
///   never wrap; the last one is shorter when G does not divide N.
/// - `S2Roll`: unshifted heads as `S2`; a shifted head compares rolled positions
///   `p(x) = (x - G/2) mod N`: `p(i) / G == p(j) / G` and `p(j) <= p(i)`.
/// - `S2NoShift`: `j <= i` and `i / G == j / G` for every head.
///
/// When `G >= N` there is a single group and nothing to shift, so every S² mode equals `Dense`
/// exactly (a context shorter than one group is plain causal attention, not a truncated one).
/// Every row allows its own diagonal, so no row is ever fully masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnMask {
    pub mode: AttnMode,
    /// G; always 0 for `Dense` so that equal masks compare equal.
    pub group_size: usize,
}

impl AttnMask {
    /// Full causal attention.
    pub fn dense() -> Self {
        AttnMask {
            mode: AttnMode::Dense,
            group_size: 0,
        }
    }

    /// A mask with an explicit group size. s2 and s2-roll shift half the heads by G/2, so G must be
    /// even (an odd G would make the two halves' groups disagree on their size) and at least 2;
    /// s2-noshift takes the same group sizes, so that an ablation compares equal groups.
    pub fn new(mode: AttnMode, group_size: usize) -> Result<Self> {
        if mode == AttnMode::Dense {
            return Ok(Self::dense());
        }
        if group_size < 2 || !group_size.is_multiple_of(2) {
            return Err(Error::option(
                "group_size",
                format!(
                    "{mode} attention needs an even group size of at least 2 (s2 and s2-roll shift \
                     half the heads by group_size/2; s2-noshift takes the same sizes), got \
                     {group_size}"
                ),
            ));
        }
        Ok(AttnMask { mode, group_size })
    }

    /// The mask for `group_ratio` at context `seq_len`: `G = floor(seq_len · group_ratio)`.
    /// The ratio is checked even for `Dense`, where G is unused, so a bad ratio never goes
    /// unnoticed.
    pub fn from_ratio(mode: AttnMode, group_ratio: f64, seq_len: usize) -> Result<Self> {
        if !(group_ratio > 0.0 && group_ratio <= 1.0) {
            return Err(Error::option(
                "group_ratio",
                format!("must be in (0, 1], got {group_ratio}"),
            ));
        }
        if mode == AttnMode::Dense {
            return Ok(Self::dense());
        }
        let exact = seq_len as f64 * group_ratio;
        let group_size = exact.floor() as usize;
        let problem = if group_size < 2 {
            "which is below 2"
        } else if !group_size.is_multiple_of(2) {
            "which is odd"
        } else {
            return Ok(AttnMask { mode, group_size });
        };
        Err(Error::option(
            "group_ratio",
            format!(
                "{group_ratio} at context {seq_len} gives group size {group_size} \
                 (floor of {exact}), {problem}; {mode} attention needs an even group size of \
                 at least 2 (s2 and s2-roll shift half the heads by group_size/2): choose \
                 another ratio or context"
            ),
        ))
    }

    /// Whether query `i` of `head` may attend to key `j` (both in `0..seq_len`).
    pub fn allows(&self, head: usize, n_heads: usize, i: usize, j: usize, seq_len: usize) -> bool {
        self.head(head, n_heads, seq_len).allows(i, j)
    }

    /// The mask of one head with the mode, the head's half and the `G >= N` rule resolved.
    pub(super) fn head(&self, head: usize, n_heads: usize, seq_len: usize) -> HeadMask {
        let g = self.group_size;
        let shifted = head >= n_heads / 2;
        let layout = match self.mode {
            AttnMode::Dense => Layout::Causal,
            _ if g >= seq_len => Layout::Causal,
            AttnMode::S2 if shifted => Layout::Grouped { offset: g / 2 },
            AttnMode::S2Roll if shifted => Layout::Rolled { shift: g / 2 },
            AttnMode::S2 | AttnMode::S2Roll | AttnMode::S2NoShift => Layout::Grouped { offset: 0 },
        };
        HeadMask {
            layout,
            group: g,
            seq_len,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Causal,
    Grouped { offset: usize },
    Rolled { shift: usize },
}

/// One head's mask, ready to answer per-row questions.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadMask {
    layout: Layout,
    group: usize,
    seq_len: usize,
}

/// The keys one query row may see: `[start, end) ∪ [wrap_start, seq_len)`. The second part is
/// empty (`wrap_start == seq_len`) except for s2-roll's shifted rows whose group wraps around; it
/// then lies entirely after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RowKeys {
    pub start: usize,
    pub end: usize,
    pub wrap_start: usize,
}

impl RowKeys {
    #[cfg(test)]
    fn contains(&self, j: usize) -> bool {
        (self.start..self.end).contains(&j) || j >= self.wrap_start
    }
}

impl HeadMask {
    fn allows(&self, i: usize, j: usize) -> bool {
        let g = self.group;
        match self.layout {
            Layout::Causal => j <= i,
            Layout::Grouped { offset } => j <= i && (i + offset) / g == (j + offset) / g,
            Layout::Rolled { shift } => {
                let rolled = |x: usize| (x + self.seq_len - shift) % self.seq_len;
                let (pi, pj) = (rolled(i), rolled(j));
                pi / g == pj / g && pj <= pi
            }
        }
    }

    /// The allowed keys of query `i` as intervals.
    pub(super) fn row_keys(&self, i: usize) -> RowKeys {
        let (n, g) = (self.seq_len, self.group);
        let keys = |start, wrap_start| RowKeys {
            start,
            end: i + 1,
            wrap_start,
        };
        match self.layout {
            Layout::Causal => keys(0, n),
            Layout::Grouped { offset } => keys(((i + offset) / g * g).saturating_sub(offset), n),
            Layout::Rolled { shift } => {
                // The rolled group [p(i)/G·G, p(i)] maps back to consecutive positions mod N
                // ending at i; when its first position lies after i the interval wrapped.
                let group_start = (i + n - shift) % n / g * g;
                let first = (group_start + shift) % n;
                if first <= i {
                    keys(first, n)
                } else {
                    keys(0, first)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_match_allows_exhaustively() {
        for mode in AttnMode::ALL {
            for n in 1..=40 {
                for g in (2..=44).step_by(2) {
                    let mask = AttnMask::new(mode, g).unwrap();
                    for head in 0..2 {
                        let hm = mask.head(head, 2, n);
                        for i in 0..n {
                            let keys = hm.row_keys(i);
                            for j in 0..n {
                                assert_eq!(
                                    keys.contains(j),
                                    hm.allows(i, j),
                                    "{mode} N={n} G={g} head={head} i={i} j={j} keys={keys:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
