//! Which K tiles one Q tile must visit, and the masking of the tiles it does visit. Only tiles
//! that hold at least one allowed (query, key) pair are ever touched: that skipping is where
//! S²-Attn's saving comes from.

use std::ops::Range;

use super::mask::{HeadMask, RowKeys};
use super::AttnStats;
use crate::float::Float;

/// The allowed keys of one Q tile's rows and the K tiles that hold at least one of them.
pub(super) struct TilePlan {
    /// Keys per K tile.
    tile_keys: usize,
    pub rows: Range<usize>,
    keys: Vec<RowKeys>,
    /// Keys every planned row may see: a K tile inside them needs no masking.
    seen_by_all: Range<usize>,
    /// Difference array over K tiles: row intervals add +1 at their first tile, -1 after the last.
    hits: Vec<i32>,
    /// Key ranges of the K tiles to visit, in order.
    pub tiles: Vec<Range<usize>>,
}

impl TilePlan {
    /// An empty plan for sequences of `seq_len` in tiles of `tile_keys` keys, room for
    /// `tile_rows` query rows.
    pub fn new(seq_len: usize, tile_rows: usize, tile_keys: usize) -> Self {
        let n_tiles = seq_len.div_ceil(tile_keys);
        TilePlan {
            tile_keys,
            rows: 0..0,
            keys: Vec::with_capacity(tile_rows),
            seen_by_all: 0..0,
            hits: vec![0; n_tiles + 1],
            tiles: Vec::with_capacity(n_tiles),
        }
    }

    /// Whether this plan's buffers serve sequences of `seq_len` without growing.
    pub fn fits(&self, seq_len: usize) -> bool {
        self.hits.len() == seq_len.div_ceil(self.tile_keys) + 1
    }

    pub fn plan(&mut self, mask: &HeadMask, rows: Range<usize>, seq_len: usize) {
        let bc = self.tile_keys;
        self.keys.clear();
        self.keys.extend(rows.clone().map(|i| mask.row_keys(i)));
        self.rows = rows;
        self.seen_by_all = self.keys.iter().map(|k| k.start).max().unwrap_or(0)
            ..self.keys.iter().map(|k| k.end).min().unwrap_or(0);
        self.hits.fill(0);
        for keys in &self.keys {
            for span in [keys.start..keys.end, keys.wrap_start..seq_len] {
                if !span.is_empty() {
                    self.hits[span.start / bc] += 1;
                    self.hits[(span.end - 1) / bc + 1] -= 1;
                }
            }
        }
        self.tiles.clear();
        let mut open = 0;
        for (t, &h) in self.hits[..seq_len.div_ceil(bc)].iter().enumerate() {
            open += h;
            if open > 0 {
                self.tiles.push(t * bc..((t + 1) * bc).min(seq_len));
            }
        }
    }

    pub fn stats(&self, seq_len: usize) -> AttnStats {
        AttnStats {
            tiles_visited: self.tiles.len(),
            tiles_total: seq_len.div_ceil(self.tile_keys),
        }
    }

    /// Sets the scores of keys each row may not see to -inf (so that exp() turns them into 0) in
    /// a transposed tile `st[key − keys.start][row]` of row stride `ld`.
    pub fn mask_columns<T: Float>(&self, keys: &Range<usize>, st: &mut [T], ld: usize) {
        if self.seen_by_all.start <= keys.start && keys.end <= self.seen_by_all.end {
            return;
        }
        let local = |x: usize| x.clamp(keys.start, keys.end) - keys.start;
        for (r, k) in self.keys.iter().enumerate() {
            for gap in [0..k.start, k.end..k.wrap_start] {
                for j in local(gap.start)..local(gap.end) {
                    st[j * ld + r] = T::neg_infinity();
                }
            }
        }
    }
}
