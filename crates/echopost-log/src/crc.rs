//! CRC-32C, the checksum of every header and body EchoPost writes.
//!
//! CRC-32C is the Castagnoli polynomial (RFC 3720 §B.4, "CRC-32/ISCSI" in the CRC
//! catalogue): check value `crc32c(b"123456789") == 0xe3069283`. It is computed by
//! `crc-fast`, which combines the CPU's CRC32 instruction with carry-less multiplication
//! (PCLMULQDQ/VPCLMULQDQ on x86-64, PMULL on AArch64) where the CPU has them: 2.1× the
//! `crc32c` crate on a 256 KB frame on an AVX-512 machine (53 against 26 GiB/s, `cargo
//! bench -p echopost-log --bench log -- checksum`). The frame CRC was a seventh of a warm
//! drain's CPU time before (issue 17). Tests check every value here against the `crc32c`
//! crate, an independent implementation.

use crc_fast::{CrcAlgorithm, Digest};

/// CRC-32C of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// CRC-32C of `a ++ data`, given `crc == crc32c(a)`: for checksums over parts that lie
/// apart (a frame's body, then its header).
#[inline]
pub(crate) fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    // The digest's state is the register before the final inversion, so resuming from a
    // finished CRC means inverting it back.
    let mut d = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    d.update(data);
    // A CRC-32's value fits its low 32 bits.
    (d.finalize() & u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_value_of_the_crc_catalogue() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xe306_9283);
        assert_eq!(crc32c_append(crc32c(b""), b"123456789"), 0xe306_9283);
    }

    #[test]
    fn agrees_with_an_independent_implementation_at_every_length_and_split() {
        // Lengths around every kernel's block sizes (8 to 4096 bytes) and a frame's size.
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut lens: Vec<usize> = (0..=600).collect();
        lens.extend([1023, 1024, 1025, 4095, 4096, 4097, 65_536, 262_144, 300_000]);
        for &n in &lens {
            let d = &data[..n];
            assert_eq!(crc32c(d), ::crc32c::crc32c(d), "length {n}");
            let cut = n / 3;
            assert_eq!(
                crc32c_append(crc32c(&d[..cut]), &d[cut..]),
                ::crc32c::crc32c(d),
                "length {n} split at {cut}"
            );
            assert_eq!(
                crc32c_append(0xdead_beef, d),
                ::crc32c::crc32c_append(0xdead_beef, d),
                "length {n} appended to an arbitrary crc"
            );
        }
    }
}
