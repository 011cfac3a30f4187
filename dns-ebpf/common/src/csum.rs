//! The Internet checksum (RFC 1071) as both sides compute it: the daemon precomputes the sums of
//! the answer bytes it stores in map values, and the XDP program adds them to the sums of the
//! bytes it writes itself and completes the UDP checksum. One code for both, so the two halves of
//! one sum agree on byte order and folding.
//!
//! Sums are of big-endian 16-bit words. A run of bytes that lands at an odd offset of the
//! datagram pairs its bytes the other way round: its sum is the even-offset sum with its two
//! bytes swapped (RFC 1071 2.(B), byte order independence), see [`at_offset`].

/// Folds a 32-bit one's-complement sum to 16 bits (twice: the first fold can carry once more).
#[inline(always)]
pub fn fold(mut x: u32) -> u16 {
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    x as u16
}

/// Sum of `b` as big-endian 16-bit words from an even offset, an odd last byte padded with a
/// zero, not folded. Without a fold in the loop it is exact for up to 65,537 words (128 KiB):
/// more than any DNS message over UDP.
#[inline(always)]
pub fn sum_bytes(b: &[u8]) -> u32 {
    let mut acc = 0u32;
    let mut i = 0;
    while i + 1 < b.len() {
        acc += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    if i < b.len() {
        acc += (b[i] as u32) << 8;
    }
    acc
}

/// [`sum_bytes`], folded: the form stored in map values ([`crate::Seg::sum`],
/// [`crate::ZoneValue::soa_sum`]).
#[inline(always)]
pub fn sum16(b: &[u8]) -> u16 {
    fold(sum_bytes(b))
}

/// The folded sum of bytes whose even-offset sum is `sum`, placed at an odd (`odd == true`) or
/// even offset of the datagram.
#[inline(always)]
pub fn at_offset(sum: u16, odd: bool) -> u16 {
    if odd {
        sum.swap_bytes()
    } else {
        sum
    }
}

/// The checksum field for a datagram whose other bytes (pseudo-header included) sum to `sum`.
/// RFC 768: a computed zero is sent as all ones, since zero means "no checksum" in IPv4.
#[inline(always)]
pub fn udp_field(sum: u32) -> u16 {
    match !fold(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// Whether bytes whose sum (checksum field included) is `sum` carry a correct checksum.
#[inline(always)]
pub fn verifies(sum: u32) -> bool {
    fold(sum) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum16_matches_rfc1071_example() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 (folded).
        assert_eq!(
            sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(sum16(&[0x12]), 0x1200);
        assert_eq!(at_offset(sum16(&[0x12, 0x34]), true), 0x3412);
    }

    #[test]
    fn a_run_at_an_odd_offset_sums_to_the_swapped_even_sum() {
        let run = [0x8f, 0x01, 0xff, 0x7e, 0x33];
        // The run after one leading byte, summed as it lies in the datagram.
        let mut placed = [0u8; 6];
        placed[1..].copy_from_slice(&run);
        assert_eq!(sum16(&placed), at_offset(sum16(&run), true));
    }

    #[test]
    fn a_filled_in_checksum_verifies() {
        let mut d = [0x45u8, 0, 0, 0x20, 0, 0, 0xff, 0xfe, 0, 0];
        let c = !fold(sum_bytes(&d));
        d[8..10].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(sum_bytes(&d)));
        d[0] ^= 1;
        assert!(!verifies(sum_bytes(&d)));
        assert_eq!(udp_field(0xffff), 0xffff);
    }
}
