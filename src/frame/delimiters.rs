//! Every position of one delimiter byte in a read, ascending: what
//! `memchr::memchr_iter(delimiter, input)` yields, found another way.
//!
//! Why: a read of short lines (tens of bytes each) pays memchr's per-call setup
//! (a dispatch, pointer alignment, a first unaligned vector and the end checks) once
//! per line, which costs more than the search itself. Here the read is scanned once,
//! in 64-byte blocks: each block becomes a `u64` with a bit set where the delimiter
//! is (four SSE2 compares and `movemask`s), and every line end is then a
//! `trailing_zeros` and a cleared bit, a few instructions each.
//!
//! The bytes after the last whole block (fewer than 64) are copied into a zeroed
//! block and scanned the same way, their bits past the end masked off.
//!
//! Only on x86_64 with SSE2 (its baseline): elsewhere `Delimiters` is memchr's own
//! iterator. Without the `movemask` intrinsic the mask costs more than memchr saves:
//! safe Rust that LLVM vectorises (a compare per byte, then a multiply gathering
//! each 8 bytes' bits) took ~85 instructions per 64-byte block under callgrind, and
//! `--mode print` of 64-byte lines went from 366 to 377 instructions a message
//! (330 with the intrinsics).

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use std::iter::FusedIterator;

/// Elsewhere, memchr's iterator: the same positions, `Delimiters::new(delimiter, input)`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
pub(crate) type Delimiters<'a> = memchr::Memchr<'a>;

/// Bytes per block: one bit of a `u64` mask each.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
const BLOCK: usize = 64;

/// The ascending positions of `delimiter` in a slice; see the module documentation.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[derive(Debug, Clone)]
pub(crate) struct Delimiters<'a> {
    delimiter: u8,
    /// Whole blocks not scanned yet.
    blocks: &'a [[u8; BLOCK]],
    /// The bytes after the last whole block, until scanned.
    tail: Option<&'a [u8]>,
    /// Delimiters of the block last scanned not yielded yet, one bit each.
    mask: u64,
    /// Where that block starts in the input.
    base: usize,
    /// Where the next block to scan starts in the input.
    next_base: usize,
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
impl<'a> Delimiters<'a> {
    pub(crate) fn new(delimiter: u8, input: &'a [u8]) -> Self {
        let (blocks, tail) = input.as_chunks::<BLOCK>();
        Delimiters {
            delimiter,
            blocks,
            tail: (!tail.is_empty()).then_some(tail),
            mask: 0,
            base: 0,
            next_base: 0,
        }
    }

    /// Scans the next block (or the tail) into `mask`; false once all are scanned.
    #[inline]
    fn refill(&mut self) -> bool {
        let mask = if let Some((block, rest)) = self.blocks.split_first() {
            self.blocks = rest;
            block_mask(block, self.delimiter)
        } else if let Some(tail) = self.tail.take() {
            let mut block = [0; BLOCK];
            let len = tail.len().min(BLOCK - 1);
            for (slot, byte) in block.iter_mut().zip(tail) {
                *slot = *byte;
            }
            // The zero padding matches a `\0` delimiter: only the tail's own bits count.
            block_mask(&block, self.delimiter) & ((1u64 << len) - 1)
        } else {
            return false;
        };
        self.mask = mask;
        self.base = self.next_base;
        self.next_base += BLOCK;
        true
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
impl Iterator for Delimiters<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            if !self.refill() {
                return None;
            }
        }
        let bit = self.mask.trailing_zeros() as usize;
        // Clears the lowest set bit (`blsr`).
        self.mask &= self.mask - 1;
        Some(self.base + bit)
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
impl FusedIterator for Delimiters<'_> {}

/// Bit `i` set where `block[i] == delimiter`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn block_mask(block: &[u8; BLOCK], delimiter: u8) -> u64 {
    // SAFETY: `sse2_mask` only needs SSE2, which this build enables for every
    // function (the `cfg` above), so the CPU running it has it.
    unsafe { sse2_mask(block, delimiter) }
}

/// [`block_mask`] in four 16-byte SSE2 compares and `movemask`s. Its intrinsics
/// are safe to call only inside a `#[target_feature]` function (Rust 1.95 requires
/// the attribute even where the feature is statically enabled: E0133), hence this
/// function and the one `unsafe` call to it.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn sse2_mask(block: &[u8; BLOCK], delimiter: u8) -> u64 {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8};

    let needle = _mm_set1_epi8(delimiter as i8);
    let (lanes, _) = block.as_chunks::<16>();
    let mut mask = 0;
    for (i, lane) in lanes.iter().enumerate() {
        // A 16-byte load without a raw pointer: two little-endian halves, which
        // LLVM merges into one unaligned load (`movdqu`).
        let (halves, _) = lane.as_chunks::<8>();
        let mut words = halves.iter().map(|half| u64::from_le_bytes(*half));
        let lo = words.next().unwrap_or_default();
        let hi = words.next().unwrap_or_default();
        let bytes = _mm_set_epi64x(hi as i64, lo as i64);
        let hits = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, needle)) as u32;
        mask |= u64::from(hits & 0xffff) << (16 * i);
    }
    mask
}

/// The byte-by-byte mask, which [`block_mask`] must equal.
#[cfg(all(test, target_arch = "x86_64", target_feature = "sse2"))]
fn scalar_mask(block: &[u8; BLOCK], delimiter: u8) -> u64 {
    block.iter().enumerate().fold(0, |mask, (i, &byte)| {
        mask | (u64::from(byte == delimiter) << i)
    })
}

/// What one pass over complete lines tells discard's count-only path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// How many delimiters the input holds.
    pub ends: u64,
    /// Whether some line begins with the mark byte: at the start of the input or
    /// right after a delimiter.
    pub marked: bool,
}

/// Counts `input`'s delimiters and looks for a line that begins with `mark`, in one
/// pass.
///
/// Why: discard counts the line ends of every read and must notice a
/// `!Disconnect` line. Two memchr passes (a count, a search for `!`) read the
/// 256 KiB buffer twice, and the second pass was 5% of a whole P1d run's CPU,
/// senders included (perf). One AVX2 pass builds both bitmasks from the same
/// loads, and a `!` only counts where a line begins, so a `!` inside a line no
/// longer sends the read to the slow path.
pub(crate) fn tally(delimiter: u8, mark: u8, input: &[u8]) -> Tally {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
    {
        // SAFETY: `avx2::count` and `avx2::tally` need AVX2 and POPCNT, and this
        // CPU has both (the detection just above).
        let (ends, seen) = unsafe { avx2::count(delimiter, mark, input) };
        if !seen {
            return Tally {
                ends,
                marked: false,
            };
        }
        // SAFETY: as above.
        return unsafe { avx2::tally(delimiter, mark, input) };
    }
    portable_tally(delimiter, mark, input)
}

/// [`tally`] in two memchr passes: what CPUs without AVX2 run, and the reference
/// the AVX2 pass is tested against.
fn portable_tally(delimiter: u8, mark: u8, input: &[u8]) -> Tally {
    Tally {
        ends: memchr::memchr_iter(delimiter, input).count() as u64,
        marked: input.first() == Some(&mark)
            || memchr::memmem::find(input, &[delimiter, mark]).is_some(),
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_extract_epi64, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_sad_epu8, _mm256_set_epi64x, _mm256_set1_epi8, _mm256_setzero_si256,
        _mm256_sub_epi8,
    };

    use super::{BLOCK, Tally};

    /// How many 64-byte blocks fit in byte-wide counters: each adds at most 2 per
    /// lane (two 32-byte halves), so 127 blocks stay below 256.
    const GROUP: usize = 127;

    /// The delimiters in `input`, and whether the mark byte occurs anywhere.
    ///
    /// Why: this is discard's whole cost per byte. Per 32 bytes it is a compare
    /// subtracted into byte-wide counters (summed once per group by `sad`) and a
    /// compare OR-ed into a flag: a third of the instructions of [`tally`]'s masks
    /// and popcounts. Only a read that holds the mark at all, which bulk data
    /// rarely does, is gone over again by [`tally`] to see whether the mark begins
    /// a line.
    #[target_feature(enable = "avx2")]
    pub(super) fn count(delimiter: u8, mark: u8, input: &[u8]) -> (u64, bool) {
        let delimiters = _mm256_set1_epi8(delimiter as i8);
        let marks = _mm256_set1_epi8(mark as i8);
        let (blocks, tail) = input.as_chunks::<BLOCK>();
        let mut ends = 0u64;
        let mut seen = _mm256_setzero_si256();
        for group in blocks.chunks(GROUP) {
            let mut counters = _mm256_setzero_si256();
            for block in group {
                let (lanes, _) = block.as_chunks::<32>();
                for lane in lanes {
                    let bytes = load(lane);
                    // A match is all ones (-1): subtracting it adds one.
                    counters = _mm256_sub_epi8(counters, _mm256_cmpeq_epi8(bytes, delimiters));
                    seen = _mm256_or_si256(seen, _mm256_cmpeq_epi8(bytes, marks));
                }
            }
            let sums = _mm256_sad_epu8(counters, _mm256_setzero_si256());
            let lanes = [
                _mm256_extract_epi64::<0>(sums),
                _mm256_extract_epi64::<1>(sums),
                _mm256_extract_epi64::<2>(sums),
                _mm256_extract_epi64::<3>(sums),
            ];
            ends += lanes.iter().map(|&n| n as u64).sum::<u64>();
        }
        ends += tail.iter().filter(|&&b| b == delimiter).count() as u64;
        let seen = _mm256_movemask_epi8(seen) != 0 || tail.contains(&mark);
        (ends, seen)
    }

    /// 32 bytes as one unaligned load, without a raw pointer: four little-endian
    /// words, which LLVM merges into one `vmovdqu`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(lane: &[u8; 32]) -> __m256i {
        let (quarters, _) = lane.as_chunks::<8>();
        let mut words = quarters.iter().map(|q| u64::from_le_bytes(*q) as i64);
        let mut next = || words.next().unwrap_or_default();
        let (a, b, c, d) = (next(), next(), next(), next());
        _mm256_set_epi64x(d, c, b, a)
    }

    /// [`super::tally`] over 64-byte blocks: for each, a delimiter mask and a mark
    /// mask (two 32-byte compares and `movemask`s each); the line starts are the
    /// delimiter mask shifted by one, carrying its top bit into the next block.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) fn tally(delimiter: u8, mark: u8, input: &[u8]) -> Tally {
        let delimiters = _mm256_set1_epi8(delimiter as i8);
        let marks = _mm256_set1_epi8(mark as i8);
        let (blocks, tail) = input.as_chunks::<BLOCK>();
        let mut ends = 0;
        // Bit 0 of the next block begins a line (the input's first byte does).
        let mut carry = 1;
        let mut marked = 0;
        let mut add = |ends_mask: u64, marks_mask: u64| {
            ends += u64::from(ends_mask.count_ones());
            marked |= marks_mask & ((ends_mask << 1) | carry);
            carry = ends_mask >> 63;
        };
        for block in blocks {
            let (ends_mask, marks_mask) = masks(block, delimiters, marks);
            add(ends_mask, marks_mask);
        }
        if !tail.is_empty() {
            // A zeroed block with the tail in front; the padding's bits are cleared.
            let mut block = [0; BLOCK];
            for (slot, byte) in block.iter_mut().zip(tail) {
                *slot = *byte;
            }
            let valid = (1u64 << tail.len().min(BLOCK - 1)) - 1;
            let (ends_mask, marks_mask) = masks(&block, delimiters, marks);
            add(ends_mask & valid, marks_mask & valid);
        }
        Tally {
            ends,
            marked: marked != 0,
        }
    }

    /// Bit `i` of each mask set where `block[i]` is the delimiter, or the mark.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn masks(block: &[u8; BLOCK], delimiters: __m256i, marks: __m256i) -> (u64, u64) {
        let (lanes, _) = block.as_chunks::<32>();
        let (mut ends, mut marked) = (0, 0);
        for (i, lane) in lanes.iter().enumerate() {
            let bytes = load(lane);
            let shift = 32 * i;
            let found = |needle| _mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, needle)) as u32;
            ends |= u64::from(found(delimiters)) << shift;
            marked |= u64::from(found(marks)) << shift;
        }
        (ends, marked)
    }
}

#[cfg(test)]
mod tests {
    use super::{Delimiters, Tally, portable_tally, tally};
    use proptest::prelude::*;

    fn positions(delimiter: u8, input: &[u8]) -> Vec<usize> {
        Delimiters::new(delimiter, input).collect()
    }

    fn expected(delimiter: u8, input: &[u8]) -> Vec<usize> {
        memchr::memchr_iter(delimiter, input).collect()
    }

    #[test]
    fn empty_input_yields_nothing() {
        assert_eq!(positions(b'\n', b""), Vec::<usize>::new());
        assert_eq!(positions(0, b""), Vec::<usize>::new());
    }

    #[test]
    fn no_delimiter_yields_nothing() {
        for len in [1, 63, 64, 65, 200] {
            assert_eq!(positions(b'\n', &vec![b'a'; len]), Vec::<usize>::new());
        }
    }

    #[test]
    fn block_edges() {
        for len in [64, 128] {
            for at in [0, 1, 15, 16, 31, 32, 47, 48, 62, 63, 64, 65, 127, len - 1] {
                if at >= len {
                    continue;
                }
                let mut input = vec![b'a'; len];
                input[at] = b'\n';
                assert_eq!(positions(b'\n', &input), vec![at], "len {len}, at {at}");
            }
            let mut input = vec![b'a'; len];
            for at in [0, 63, 64, len - 1] {
                if let Some(byte) = input.get_mut(at) {
                    *byte = b'\n';
                }
            }
            assert_eq!(
                positions(b'\n', &input),
                expected(b'\n', &input),
                "len {len}"
            );
        }
    }

    #[test]
    fn every_byte_a_delimiter() {
        for len in [1, 63, 64, 65, 128, 130] {
            let input = vec![b'\n'; len];
            assert_eq!(positions(b'\n', &input), (0..len).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_nul_delimiter_ignores_the_tail_padding() {
        for len in [0, 1, 63, 64, 65, 100] {
            let mut input = vec![b'a'; len];
            input.push(0);
            input.extend_from_slice(b"bc");
            assert_eq!(positions(0, &input), vec![len], "len {len}");
        }
    }

    #[test]
    fn the_last_byte() {
        for len in 1..=200 {
            let mut input = vec![b'x'; len];
            if let Some(last) = input.last_mut() {
                *last = b'\n';
            }
            assert_eq!(positions(b'\n', &input), vec![len - 1], "len {len}");
        }
    }

    /// Bytes from a small alphabet with the delimiter in it, or any bytes.
    fn bytes(delimiter: u8) -> impl Strategy<Value = Vec<u8>> {
        let few = prop_oneof![Just(delimiter), Just(b'a'), Just(b'\r'), Just(0u8)];
        prop_oneof![
            proptest::collection::vec(few, 0..300),
            proptest::collection::vec(prop_oneof![Just(delimiter), any::<u8>()], 0..300),
            proptest::collection::vec(any::<u8>(), 0..300),
        ]
    }

    proptest! {
        #[test]
        fn yields_what_memchr_iter_yields(
            (delimiter, input) in any::<u8>().prop_flat_map(|d| (Just(d), bytes(d))),
        ) {
            prop_assert_eq!(positions(delimiter, &input), expected(delimiter, &input));
        }
    }

    /// The definition, byte by byte.
    fn scalar_tally(delimiter: u8, mark: u8, input: &[u8]) -> Tally {
        let mut starts_line = true;
        let mut tally = Tally {
            ends: 0,
            marked: false,
        };
        for &byte in input {
            tally.marked |= starts_line && byte == mark;
            starts_line = byte == delimiter;
            tally.ends += u64::from(starts_line);
        }
        tally
    }

    #[test]
    fn tally_counts_ends_and_sees_marks_only_where_lines_begin() {
        let cases: [(&[u8], u64, bool); 7] = [
            (b"", 0, false),
            (b"!", 0, true),
            (b"ab\n!Disconnect\n", 2, true),
            (b"a!b\nc!\n", 2, false),
            (b"!\n", 1, true),
            (b"\n\n\n", 3, false),
            (b"xyz\n!", 1, true),
        ];
        for (input, ends, marked) in cases {
            let want = Tally { ends, marked };
            assert_eq!(
                tally(b'\n', b'!', input),
                want,
                "{:?}",
                input.escape_ascii()
            );
            assert_eq!(portable_tally(b'\n', b'!', input), want);
        }
    }

    #[test]
    fn tally_carries_line_starts_across_blocks() {
        for len in [63, 64, 65, 127, 128, 129, 300] {
            for at in 1..len {
                let mut input = vec![b'a'; len];
                input[at - 1] = b'\n';
                input[at] = b'!';
                let got = tally(b'\n', b'!', &input);
                assert_eq!(
                    got,
                    Tally {
                        ends: 1,
                        marked: true
                    },
                    "len {len}, at {at}"
                );
                // The same `!` one byte later is inside a line.
                input.insert(at, b'b');
                let got = tally(b'\n', b'!', &input);
                assert_eq!(
                    got,
                    Tally {
                        ends: 1,
                        marked: false
                    },
                    "len {len}, at {at}"
                );
            }
        }
    }

    #[test]
    fn tally_counts_past_what_a_byte_wide_counter_holds() {
        // Every byte a delimiter: each counter lane gains 2 per block, the most.
        for len in [8_127, 8_128, 8_129, 16_256, 3 * 8_128 + 17, 256 * 1024] {
            let input = vec![b'\n'; len];
            assert_eq!(
                tally(b'\n', b'!', &input),
                Tally {
                    ends: len as u64,
                    marked: false
                },
                "len {len}"
            );
        }
        // Bulk lines whose `!` is never where a line begins.
        let input = b"0123456789 ! abcdef\n".repeat(20_000);
        assert_eq!(
            tally(b'\n', b'!', &input),
            Tally {
                ends: 20_000,
                marked: false
            }
        );
    }

    /// Bytes where delimiters and marks are frequent, or any bytes.
    fn marked_bytes(delimiter: u8, mark: u8) -> impl Strategy<Value = Vec<u8>> {
        let few = prop_oneof![Just(delimiter), Just(mark), Just(b'a'), Just(0u8)];
        prop_oneof![
            proptest::collection::vec(few.clone(), 0..400),
            proptest::collection::vec(any::<u8>(), 0..400),
            // Past one group of byte-wide counters (127 blocks, 8,128 bytes).
            proptest::collection::vec(few, 8_000..20_000),
        ]
    }

    proptest! {
        #[test]
        fn tally_is_the_scalar_tally(
            (delimiter, mark, input) in (any::<u8>(), any::<u8>())
                .prop_flat_map(|(d, m)| (Just(d), Just(m), marked_bytes(d, m))),
        ) {
            let want = scalar_tally(delimiter, mark, &input);
            prop_assert_eq!(tally(delimiter, mark, &input), want);
            if delimiter != mark {
                // Where a byte is both, the two-byte search cannot tell starts apart.
                prop_assert_eq!(portable_tally(delimiter, mark, &input), want);
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    proptest! {
        #[test]
        fn the_block_mask_is_the_scalar_mask(
            (delimiter, input) in any::<u8>().prop_flat_map(|d| {
                (Just(d), proptest::collection::vec(prop_oneof![Just(d), any::<u8>()], super::BLOCK))
            }),
        ) {
            let block: [u8; super::BLOCK] = input.try_into().unwrap_or([0; super::BLOCK]);
            prop_assert_eq!(super::block_mask(&block, delimiter), super::scalar_mask(&block, delimiter));
        }
    }
}
