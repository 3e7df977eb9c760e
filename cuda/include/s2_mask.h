// The attention mask of DESIGN §2 for one head of one document of n tokens, in the forms the kernels
// need: the spans of keys a query may see (and of queries that may see a key), which mask a tile's
// rows with two compares per element and from which a block finds the K/V (or Q) tiles it must
// visit, so fully masked tiles are never loaded. The shift is pure index arithmetic; the Rust tests
// check the kernels against the exact rule (ops::attention::AttnMask::allows) for every mode.
#pragma once

#include "kernel.h"
#include "params.h"

enum class MaskKind : int {
    causal,   // j <= i
    grouped,  // j <= i and (i + offset) / g == (j + offset) / g
    rolled,   // positions rolled by -offset (mod n): p(j) <= p(i) and p(i) / g == p(j) / g
};

struct HeadMask {
    MaskKind kind;
    int n;       // the document's length
    int g;       // group size
    int offset;  // 0, or g / 2 for the shifted half of the heads
};

__device__ __forceinline__ HeadMask head_mask(const AttentionProblem& p, int head, int n) {
    const int g = static_cast<int>(p.group_size);
    // A group at least as long as the document is plain causal attention, in both halves of the heads.
    if (p.mask_mode == ATTENTION_MASK_DENSE || g >= n) return {MaskKind::causal, n, 0, 0};
    if (p.mask_mode == ATTENTION_MASK_S2_NOSHIFT || head < static_cast<int>(p.n_heads / 2)) {
        return {MaskKind::grouped, n, g, 0};
    }
    if (p.mask_mode == ATTENTION_MASK_S2) return {MaskKind::grouped, n, g, g / 2};
    return {MaskKind::rolled, n, g, g / 2};
}

// Position x after rolling the sequence by -offset: (x - offset) mod n.
__device__ __forceinline__ int rolled_position(const HeadMask& m, int x) {
    return x >= m.offset ? x - m.offset : x - m.offset + m.n;
}

// An inclusive range of positions, empty when lo > hi.
struct Span {
    int lo, hi;
};

__device__ __forceinline__ bool span_empty(Span s) { return s.lo > s.hi; }

__device__ __forceinline__ bool span_contains(Span s, int x) { return x >= s.lo && x <= s.hi; }

// The allowed positions seen from one query or one key: `main` contains the position itself; `wrap`
// is the part a rolled group brings around from the other end of the sequence (empty otherwise).
struct Spans {
    Span main, wrap;
};

__device__ __forceinline__ bool spans_contain(const Spans& s, int x) {
    return span_contains(s.main, x) || span_contains(s.wrap, x);
}

// Rolled positions [x, y] (x <= y < n) back in sequence positions: one span, or two when the rolled
// range crosses the end, [0, y + offset - n] (`low`) and [x + offset, n - 1] (`high`).
struct Unrolled {
    Span low, high;
};

__device__ __forceinline__ Unrolled unroll(const HeadMask& m, int x, int y) {
    const Span empty = {0, -1};
    const int lo = x + m.offset, hi = y + m.offset;
    if (hi < m.n) return {empty, {lo, hi}};
    if (lo >= m.n) return {{lo - m.n, hi - m.n}, empty};
    return {{0, hi - m.n}, {lo, m.n - 1}};
}

// Keys query i may attend to: [lo, i], and for rolled heads possibly [wrap_lo, n - 1].
__device__ __forceinline__ Spans keys_of_query(const HeadMask& m, int i) {
    const Span empty = {0, -1};
    switch (m.kind) {
        case MaskKind::causal:
            return {{0, i}, empty};
        case MaskKind::grouped: {
            const int start = (i + m.offset) / m.g * m.g - m.offset;
            return {{start > 0 ? start : 0, i}, empty};
        }
        case MaskKind::rolled: {
            const int pi = rolled_position(m, i);
            const Unrolled u = unroll(m, pi / m.g * m.g, pi);
            // i itself is the end of one piece: the main span.
            return span_empty(u.low) ? Spans{u.high, empty}
                   : span_empty(u.high) ? Spans{u.low, empty}
                                        : Spans{u.low, u.high};
        }
    }
    return {empty, empty};
}

// Queries that may attend to key j: [j, hi], and for rolled heads possibly [0, wrap_hi].
__device__ __forceinline__ Spans queries_of_key(const HeadMask& m, int j) {
    const Span empty = {0, -1};
    switch (m.kind) {
        case MaskKind::causal:
            return {{j, m.n - 1}, empty};
        case MaskKind::grouped: {
            const int end = (j + m.offset) / m.g * m.g + m.g - 1 - m.offset;
            return {{j, end < m.n - 1 ? end : m.n - 1}, empty};
        }
        case MaskKind::rolled: {
            const int pj = rolled_position(m, j);
            const int group_end = pj / m.g * m.g + m.g - 1;
            const Unrolled u = unroll(m, pj, group_end < m.n - 1 ? group_end : m.n - 1);
            return span_empty(u.low) ? Spans{u.high, empty}
                   : span_empty(u.high) ? Spans{u.low, empty}
                                        : Spans{u.high, u.low};
        }
    }
    return {empty, empty};
}

// The union over queries r0..r1 of their keys. keys_of_query(i).main is [lo(i), i] with lo
// non-decreasing in i; the wrap is [wrap_lo(i), n - 1] with wrap_lo non-decreasing, and only a prefix
// of the queries (i < offset, while the rolled group still starts before n - offset) has one. So the
// union is the first query's spans with the main span stretched to r1, and it has no holes.
__device__ __forceinline__ Spans keys_of_queries(const HeadMask& m, int r0, int r1) {
    Spans s = keys_of_query(m, r0);
    s.main.hi = r1;
    return s;
}

// The union over keys c0..c1 of their queries, by the mirror argument: queries_of_key(j).main is
// [j, hi(j)] and the wrap [0, wrap_hi(j)], both ends non-decreasing, the wrap only for a suffix.
__device__ __forceinline__ Spans queries_of_keys(const HeadMask& m, int c0, int c1) {
    Spans s = queries_of_key(m, c1);
    s.main.lo = c0;
    return s;
}

// The tiles of kTile positions that a block visits: up to two ranges, in order.
template <int kTile>
struct TileList {
    int first[2];
    int count[2];

    __device__ __forceinline__ int size() const { return count[0] + count[1]; }
    // The position of the first row of the t-th tile visited.
    __device__ __forceinline__ int start(int t) const {
        return (t < count[0] ? first[0] + t : first[1] + t - count[0]) * kTile;
    }
};

// The tiles covering `s`; the two spans merge into one range where they share or touch a tile.
template <int kTile>
__device__ __forceinline__ TileList<kTile> tiles_covering(Spans s) {
    TileList<kTile> list = {{s.main.lo / kTile, 0}, {s.main.hi / kTile - s.main.lo / kTile + 1, 0}};
    if (span_empty(s.wrap)) return list;
    int first = s.wrap.lo / kTile, last = s.wrap.hi / kTile;
    const int main_last = list.first[0] + list.count[0] - 1;
    if (first <= main_last + 1 && last >= list.first[0] - 1) {
        first = first < list.first[0] ? first : list.first[0];
        last = last > main_last ? last : main_last;
        list.first[0] = first;
        list.count[0] = last - first + 1;
    } else {
        list.first[1] = first;
        list.count[1] = last - first + 1;
    }
    return list;
}
