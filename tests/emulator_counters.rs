//! The emulator's per-launch counters (cuda/emu/counters.h) on hand-made shared-memory address
//! patterns, whose wavefronts follow from the 32-bank model by hand: a conflict-free ldmatrix.x4 is
//! 4 wavefronts, an 8x8 matrix whose rows share their banks is 8, a 16-byte load is 4 phases.

use longlora::kernels::self_test::{shared_access_counters, SharedAccess};
use longlora::kernels::Device;

/// (wavefronts, conflict-free wavefronts) of one access with lane l at `offset(l)`.
fn wavefronts(access: SharedAccess, offset: impl Fn(u32) -> u32) -> (u64, u64) {
    let offsets: [u32; 32] = std::array::from_fn(|l| offset(l as u32));
    let c = shared_access_counters(&Device::emulator(), access, &offsets).unwrap();
    match access {
        SharedAccess::LdmatrixX4 | SharedAccess::LdmatrixX1 => {
            assert_eq!(c.ldmatrix, 1, "{access:?}: one ldmatrix counted");
            (c.ldmatrix_wavefronts, c.ldmatrix_ideal_wavefronts)
        }
        SharedAccess::Store4 => {
            assert_eq!(c.shared_stores, 1, "{access:?}: one store counted");
            (c.shared_store_wavefronts, c.shared_store_ideal_wavefronts)
        }
        SharedAccess::Load16 => {
            assert_eq!(c.shared_loads, 1, "{access:?}: one load counted");
            (c.shared_load_wavefronts, c.shared_load_ideal_wavefronts)
        }
    }
}

#[test]
fn ldmatrix_wavefronts_follow_the_bank_model() {
    use SharedAccess::{LdmatrixX1, LdmatrixX4};
    // 32 consecutive 16-byte rows: each matrix reads 128 contiguous bytes.
    assert_eq!(wavefronts(LdmatrixX4, |l| 16 * l), (4, 4));
    // Rows of an unswizzled 64-element bf16 tile (128 bytes): a matrix's 8 rows all sit in the same
    // 4 banks, 8 wavefronts each.
    assert_eq!(
        wavefronts(LdmatrixX4, |l| 128 * (l % 8) + 16 * (l / 8)),
        (32, 4)
    );
    // The same rows under the XOR swizzle of cuda/include/tile.h: chunk c of row r at c ^ (r % 8).
    assert_eq!(
        wavefronts(LdmatrixX4, |l| 128 * (l % 8) + 16 * ((l / 8) ^ (l % 8))),
        (4, 4)
    );
    // Rows 64 bytes apart: rows 0, 2, 4, 6 share banks 0-3 and rows 1, 3, 5, 7 banks 16-19.
    assert_eq!(wavefronts(LdmatrixX1, |l| 64 * (l % 8)), (4, 1));
}

#[test]
fn shared_store_and_load_wavefronts_follow_the_bank_model() {
    use SharedAccess::{Load16, Store4};
    assert_eq!(wavefronts(Store4, |l| 4 * l), (1, 1));
    // Stride of two words: lanes l and l + 16 share a bank.
    assert_eq!(wavefronts(Store4, |l| 8 * l), (2, 1));
    // Every lane in bank 0, each a different word.
    assert_eq!(wavefronts(Store4, |l| 128 * (l % 24)), (24, 1));
    // Every lane on the same word: one wavefront.
    assert_eq!(wavefronts(Store4, |_| 64), (1, 1));
    // 16 bytes per lane: four phases of 8 lanes, each 128 contiguous bytes.
    assert_eq!(wavefronts(Load16, |l| 16 * l), (4, 4));
    // 32 bytes apart: lanes i and i + 4 of a phase share four banks.
    assert_eq!(wavefronts(Load16, |l| 32 * l), (8, 4));
}
