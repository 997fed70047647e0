// SPDX-License-Identifier: GPL-2.0
//! T10 protection information, type 1 (SBC-3 4.22): an 8-byte tuple per
//! 512-byte logical block, the guard tag (CRC16 T10-DIF of the block,
//! big-endian) in bytes 0-1, the application tag in 2-3, the reference tag
//! (the low 32 bits of the block's LBA, big-endian) in 4-7.
//!
//! A LUN formatted with protection information keeps the tuples it was
//! sent, by LBA; a block it holds none for (never written with PI, written
//! without, unmapped) has the tuple the device generates from its data:
//! the guard of the data, application tag 0, the LBA as reference tag.

use std::collections::BTreeMap;

/// Bytes of protection information per logical block.
pub const TUPLE_SIZE: usize = 8;

/// One block's protection information.
pub type Tuple = [u8; TUPLE_SIZE];

/// The tuples a LUN was sent, by LBA.
pub type Tuples = BTreeMap<u64, Tuple>;

/// An application tag that turns every check off for its block (type 1).
const APP_ESCAPE: u16 = 0xffff;

/// CRC16 T10-DIF: polynomial 0x8BB7, initial value 0, neither input nor
/// output reflected, no final XOR.
pub fn crc_t10dif(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

static CRC_TABLE: [u16; 256] = crc_table();

const fn crc_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x8bb7
            } else {
                c << 1
            };
            bit += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// The tuple the device generates for `block` at `lba`.
pub fn generate(block: &[u8], lba: u64) -> Tuple {
    tuple(crc_t10dif(block), 0, lba as u32)
}

/// A tuple of its three tags.
pub fn tuple(guard: u16, app: u16, reference: u32) -> Tuple {
    let mut t = [0u8; TUPLE_SIZE];
    t[0..2].copy_from_slice(&guard.to_be_bytes());
    t[2..4].copy_from_slice(&app.to_be_bytes());
    t[4..8].copy_from_slice(&reference.to_be_bytes());
    t
}

/// A tuple's application tag.
pub fn app_tag(t: &[u8]) -> u16 {
    u16::from_be_bytes([t[2], t[3]])
}

/// A tuple's reference tag.
pub fn ref_tag(t: &[u8]) -> u32 {
    u32::from_be_bytes([t[4], t[5], t[6], t[7]])
}

/// What the device server checks of the protection information a
/// RDPROTECT or WRPROTECT field other than 000b sends along (SBC-3 tables
/// 97 and 160). The application tag is never checked: the application
/// client owns it (ATO 0 in the Control mode page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// The guard tag against the data.
    pub guard: bool,
    /// The reference tag against the LBA.
    pub reference: bool,
}

impl Checks {
    /// The checks of a nonzero RDPROTECT or WRPROTECT value; `None` for the
    /// reserved ones (110b, 111b).
    pub fn of(protect: u8) -> Option<Checks> {
        let (guard, reference) = match protect {
            0b001 | 0b101 => (true, true),
            0b010 => (false, true),
            0b011 => (false, false),
            0b100 => (true, false),
            _ => return None,
        };
        Some(Checks { guard, reference })
    }
}

/// How a tuple failed its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The guard tag is not the CRC of the data.
    Guard,
    /// The reference tag is not the LBA.
    Reference,
}

/// Checks `t` against `block` at `lba`: whether anything was checked (not
/// for an escaped tuple, nor when `checks` turn everything off), or what
/// failed.
pub fn verify(t: &[u8], block: &[u8], lba: u64, checks: Checks) -> Result<bool, Mismatch> {
    if app_tag(t) == APP_ESCAPE || !(checks.guard || checks.reference) {
        return Ok(false);
    }
    if checks.guard && u16::from_be_bytes([t[0], t[1]]) != crc_t10dif(block) {
        return Err(Mismatch::Guard);
    }
    if checks.reference && ref_tag(t) != lba as u32 {
        return Err(Mismatch::Reference);
    }
    Ok(true)
}

/// Forgets the tuples of blocks `lba..lba + n`: they read back as generated.
pub fn forget(tuples: &mut Tuples, lba: u64, n: u64) {
    let gone: Vec<u64> = tuples
        .range(lba..lba.saturating_add(n))
        .map(|(&k, _)| k)
        .collect();
    for k in gone {
        tuples.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_t10dif_check_value() {
        assert_eq!(crc_t10dif(b"123456789"), 0xd0db);
        assert_eq!(crc_t10dif(&[0; 512]), 0);
        assert_eq!(crc_t10dif(&[]), 0);
    }

    #[test]
    fn tuples_verify_and_escape() {
        let block = [0x5au8; 512];
        let good = generate(&block, 0x1_0000_0007);
        assert_eq!(ref_tag(&good), 7);
        assert_eq!(app_tag(&good), 0);
        let all = Checks::of(1).unwrap();
        assert_eq!(verify(&good, &block, 0x1_0000_0007, all), Ok(true));
        let mut bad = good;
        bad[1] ^= 1;
        assert_eq!(verify(&bad, &block, 7, all), Err(Mismatch::Guard));
        assert_eq!(verify(&bad, &block, 7, Checks::of(2).unwrap()), Ok(true));
        assert_eq!(verify(&good, &block, 8, all), Err(Mismatch::Reference));
        assert_eq!(verify(&good, &block, 8, Checks::of(4).unwrap()), Ok(true));
        assert_eq!(verify(&bad, &block, 8, Checks::of(3).unwrap()), Ok(false));
        // Application tag FFFFh: nothing checked.
        let escaped = tuple(0, APP_ESCAPE, 99);
        assert_eq!(verify(&escaped, &block, 7, all), Ok(false));
        assert_eq!((Checks::of(6), Checks::of(7)), (None, None));
    }

    #[test]
    fn forget_a_range() {
        let mut t: Tuples = (0..10).map(|l| (l, generate(&[], l))).collect();
        forget(&mut t, 3, 4);
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 7, 8, 9]);
        forget(&mut t, u64::MAX - 1, 5);
        assert_eq!(t.len(), 6);
    }
}
