// SPDX-License-Identifier: GPL-2.0
//! The SCSI targets behind the device: N targets of M logical units, each a
//! disk or a CD-ROM on RAM (sparse tmpfs), a file, or nothing at all (a null
//! LUN: reads return zeros, writes are dropped). The command set is what
//! Linux's sd, sr and the midlayer's scan use, plus UNMAP and WRITE SAME;
//! everything else is CHECK CONDITION, ILLEGAL REQUEST, INVALID COMMAND
//! OPERATION CODE.
//!
//! A disk may be formatted with protection information, type 1 (see
//! [`crate::pi`]): INQUIRY says PROTECT, READ CAPACITY(16) PROT_EN, and
//! READ and WRITE(10/16) with RDPROTECT or WRPROTECT move and check the
//! tuples that travel with the data (virtio-scsi T10_PI).
//!
//! Nothing here knows about virtqueues: a command comes in as a CDB and its
//! data-out bytes and leaves as a [`Reply`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::pi::{self, Checks, Mismatch, Tuples, TUPLE_SIZE};

/// SAM status codes.
pub const GOOD: u8 = 0x00;
/// SAM status: CHECK CONDITION.
pub const CHECK_CONDITION: u8 = 0x02;

/// Sense keys.
pub mod key {
    /// NO SENSE.
    pub const NO_SENSE: u8 = 0x0;
    /// NOT READY.
    pub const NOT_READY: u8 = 0x2;
    /// ILLEGAL REQUEST.
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    /// UNIT ATTENTION.
    pub const UNIT_ATTENTION: u8 = 0x6;
    /// DATA PROTECT.
    pub const DATA_PROTECT: u8 = 0x7;
    /// ABORTED COMMAND.
    pub const ABORTED_COMMAND: u8 = 0xb;
}

/// Additional sense codes (ASC, ASCQ).
pub mod asc {
    /// INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: (u8, u8) = (0x20, 0x00);
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    /// INVALID FIELD IN CDB.
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    /// INVALID FIELD IN PARAMETER LIST.
    pub const INVALID_FIELD_IN_PARAM: (u8, u8) = (0x26, 0x00);
    /// LOGICAL UNIT NOT SUPPORTED.
    pub const LUN_NOT_SUPPORTED: (u8, u8) = (0x25, 0x00);
    /// WRITE PROTECTED.
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    /// CAPACITY DATA HAS CHANGED.
    pub const CAPACITY_CHANGED: (u8, u8) = (0x2a, 0x09);
    /// REPORTED LUNS DATA HAS CHANGED.
    pub const LUNS_CHANGED: (u8, u8) = (0x3f, 0x0e);
    /// LOGICAL BLOCK GUARD CHECK FAILED.
    pub const GUARD_CHECK_FAILED: (u8, u8) = (0x10, 0x01);
    /// LOGICAL BLOCK REFERENCE TAG CHECK FAILED.
    pub const REF_TAG_CHECK_FAILED: (u8, u8) = (0x10, 0x03);
    /// No additional sense.
    pub const NONE: (u8, u8) = (0x00, 0x00);
}

/// Operation codes this target implements.
mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    /// Service action of SERVICE ACTION IN(16): READ CAPACITY(16).
    pub const SAI_READ_CAPACITY_16: u8 = 0x10;
}

/// Most blocks one UNMAP or WRITE SAME may cover (VPD B0).
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 16;
/// Most descriptors one UNMAP may carry (VPD B0).
pub const MAX_UNMAP_DESCRIPTORS: u32 = 64;

/// What a logical unit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A disk (peripheral device type 0), 512-byte blocks, read-write.
    Disk,
    /// A CD-ROM (type 5), 2048-byte blocks, read-only, removable.
    Cdrom,
}

impl Kind {
    fn block_size(self) -> u64 {
        match self {
            Kind::Disk => 512,
            Kind::Cdrom => 2048,
        }
    }

    fn peripheral_type(self) -> u8 {
        match self {
            Kind::Disk => 0x00,
            Kind::Cdrom => 0x05,
        }
    }
}

/// Where a logical unit keeps its blocks.
#[derive(Debug)]
pub enum Store {
    /// Reads return zeros, writes are dropped.
    Null,
    /// An unlinked tmpfs file: RAM, allocated as written.
    Ram(File),
    /// A file of the user's.
    File(File),
}

impl Store {
    /// A sparse RAM store: a tmpfs file, unlinked at once.
    pub fn ram(bytes: u64) -> io::Result<Store> {
        let dir = std::env::var("VUS_RAM_DIR").unwrap_or_else(|_| "/dev/shm".into());
        let name = format!(
            "{dir}/vhost-user-scsi-{}-{}",
            std::process::id(),
            NEXT_RAM.fetch_add(1, Ordering::Relaxed)
        );
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&name)?;
        std::fs::remove_file(&name)?;
        f.set_len(bytes)?;
        Ok(Store::Ram(f))
    }

    fn read(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        match self {
            Store::Null => {
                buf.fill(0);
                Ok(())
            }
            Store::Ram(f) | Store::File(f) => f.read_exact_at(buf, off),
        }
    }

    fn write(&self, buf: &[u8], off: u64) -> io::Result<()> {
        match self {
            Store::Null => Ok(()),
            Store::Ram(f) | Store::File(f) => f.write_all_at(buf, off),
        }
    }

    fn sync(&self) -> io::Result<()> {
        match self {
            Store::Null => Ok(()),
            Store::Ram(f) | Store::File(f) => f.sync_data(),
        }
    }

    fn set_len(&self, bytes: u64) -> io::Result<()> {
        match self {
            Store::Null => Ok(()),
            Store::Ram(f) | Store::File(f) => f.set_len(bytes),
        }
    }
}

static NEXT_RAM: AtomicU64 = AtomicU64::new(0);

/// One logical unit.
#[derive(Debug)]
pub struct Lun {
    kind: Kind,
    store: Store,
    blocks: AtomicU64,
    /// A unit attention to report with the next command (ASC, ASCQ).
    pending_ua: Mutex<Option<(u8, u8)>>,
    serial: String,
    /// With protection information (type 1): the tuples the initiator
    /// sent. Held across the data's I/O, so that a block and its tuple
    /// change together.
    pi: Option<RwLock<Tuples>>,
}

impl Lun {
    /// A logical unit of `bytes` (rounded down to whole blocks).
    pub fn new(kind: Kind, store: Store, bytes: u64, serial: String) -> Lun {
        Lun {
            kind,
            store,
            blocks: AtomicU64::new(bytes / kind.block_size()),
            pending_ua: Mutex::new(None),
            serial,
            pi: None,
        }
    }

    /// The same logical unit formatted with protection information, type 1
    /// (a disk's: 512-byte blocks, 8 bytes of PI each).
    pub fn with_pi(mut self) -> Lun {
        assert_eq!(
            self.kind,
            Kind::Disk,
            "only a disk takes protection information"
        );
        self.pi = Some(RwLock::new(Tuples::new()));
        self
    }

    /// Whether the unit is formatted with protection information.
    pub fn protected(&self) -> bool {
        self.pi.is_some()
    }

    /// Capacity in blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    fn bs(&self) -> u64 {
        self.kind.block_size()
    }
}

/// A command's answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// SAM status.
    pub status: u8,
    /// Sense data (fixed format), empty unless CHECK CONDITION.
    pub sense: Vec<u8>,
    /// Data-in bytes, at most what the initiator allowed.
    pub data: Vec<u8>,
    /// Data-out bytes the command used.
    pub consumed: usize,
    /// Protection information in: exactly what [`Io::pi_in`] asked for,
    /// or nothing (the device sends zeros, if anything).
    pub pi: Vec<u8>,
    /// Blocks whose protection information a write checked.
    pub pi_checked: u64,
}

impl Reply {
    fn good() -> Reply {
        Reply {
            status: GOOD,
            ..Reply::default()
        }
    }

    fn data(mut data: Vec<u8>, alloc: usize) -> Reply {
        data.truncate(alloc);
        Reply {
            data,
            ..Reply::default()
        }
    }

    /// CHECK CONDITION with fixed-format sense.
    pub fn check(key: u8, (asc, ascq): (u8, u8)) -> Reply {
        Reply {
            status: CHECK_CONDITION,
            sense: fixed_sense(key, asc, ascq),
            ..Reply::default()
        }
    }

    /// CHECK CONDITION for protection information that failed a check.
    fn pi_mismatch(m: Mismatch) -> Reply {
        Reply::check(
            key::ABORTED_COMMAND,
            match m {
                Mismatch::Guard => asc::GUARD_CHECK_FAILED,
                Mismatch::Reference => asc::REF_TAG_CHECK_FAILED,
            },
        )
    }

    /// Whether the command failed a check of protection information.
    pub fn pi_error(&self) -> bool {
        self.status == CHECK_CONDITION
            && self.sense.get(2) == Some(&key::ABORTED_COMMAND)
            && self.sense.get(12) == Some(&0x10)
    }
}

/// What a command moves besides its CDB: its data-out, the room for its
/// data-in, and the protection information that precedes either on the
/// wire (virtio-scsi T10_PI: `pi_bytesout`, `pi_bytesin`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Io<'a> {
    /// Protection information out.
    pub pi_out: &'a [u8],
    /// Data out.
    pub data_out: &'a [u8],
    /// Bytes of protection information in the initiator asked for.
    pub pi_in: usize,
    /// Room for data in.
    pub alloc: usize,
}

/// Fixed-format sense data (SPC-4 4.5.3), 18 bytes.
pub fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key & 0xf;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The CDB length of an operation code's group (SPC-4 4.2.5.1); `None` for
/// the groups without a standard length.
fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Whether the bytes of a CDB field past the command are zero, as the
/// driver should send them (the spec does not require it; the tests count
/// the commands that break it). The length is that of the operation code's
/// group, or of a variable-length CDB (its additional length, byte 7); the
/// groups without a standard length are not checked.
pub fn cdb_tail_clear(cdb: &[u8]) -> bool {
    let len = match cdb.first() {
        Some(&0x7f) => cdb.get(7).map(|&n| 8 + usize::from(n)),
        Some(&opcode) => cdb_len(opcode),
        None => None,
    };
    len.and_then(|n| cdb.get(n..))
        .is_none_or(|tail| tail.iter().all(|&b| b == 0))
}

/// Every logical unit of the device, by (target, LUN).
#[derive(Debug, Default)]
pub struct Targets {
    luns: RwLock<BTreeMap<(u8, u16), Arc<Lun>>>,
}

impl Targets {
    /// Adds (or replaces) a logical unit.
    pub fn insert(&self, target: u8, lun: u16, unit: Lun) {
        self.luns
            .write()
            .unwrap()
            .insert((target, lun), Arc::new(unit));
    }

    /// Removes a logical unit; whether it existed.
    pub fn remove(&self, target: u8, lun: u16) -> bool {
        self.luns.write().unwrap().remove(&(target, lun)).is_some()
    }

    /// Resizes a logical unit and queues the unit attention that tells the
    /// initiator; whether it existed.
    pub fn resize(&self, target: u8, lun: u16, bytes: u64) -> io::Result<bool> {
        let Some(unit) = self.get(target, lun) else {
            return Ok(false);
        };
        let mut tuples = unit.pi.as_ref().map(|t| t.write().unwrap());
        unit.store.set_len(bytes)?;
        unit.blocks.store(bytes / unit.bs(), Ordering::Relaxed);
        if let Some(t) = tuples.as_mut() {
            // What grows back reads as zeros: the tuples go with the data.
            t.retain(|&lba, _| lba < bytes / unit.bs());
        }
        *unit.pending_ua.lock().unwrap() = Some(asc::CAPACITY_CHANGED);
        Ok(true)
    }

    /// Queues a unit attention on every LUN of `target` (the LUN set moved).
    pub fn luns_changed(&self, target: u8) {
        for (_, unit) in self
            .luns
            .read()
            .unwrap()
            .range((target, 0)..=(target, u16::MAX))
        {
            *unit.pending_ua.lock().unwrap() = Some(asc::LUNS_CHANGED);
        }
    }

    /// Replaces every logical unit.
    pub fn replace_all(&self, units: Vec<((u8, u16), Lun)>) {
        *self.luns.write().unwrap() = units.into_iter().map(|(k, u)| (k, Arc::new(u))).collect();
    }

    /// The logical unit at (target, LUN).
    pub fn get(&self, target: u8, lun: u16) -> Option<Arc<Lun>> {
        self.luns.read().unwrap().get(&(target, lun)).cloned()
    }

    /// Whether any LUN of `target` exists.
    pub fn target_exists(&self, target: u8) -> bool {
        self.luns
            .read()
            .unwrap()
            .range((target, 0)..=(target, u16::MAX))
            .next()
            .is_some()
    }

    fn luns_of(&self, target: u8) -> Vec<u16> {
        self.luns
            .read()
            .unwrap()
            .range((target, 0)..=(target, u16::MAX))
            .map(|((_, l), _)| *l)
            .collect()
    }

    /// Executes one command for (target, LUN), the target existing.
    /// `data_out` holds the initiator's data; `alloc` is the room for
    /// data-in. No protection information travels.
    #[cfg(test)]
    pub fn execute(
        &self,
        target: u8,
        lun: u16,
        cdb: &[u8],
        data_out: &[u8],
        alloc: usize,
    ) -> Reply {
        let io = Io {
            data_out,
            alloc,
            ..Io::default()
        };
        self.execute_io(target, lun, cdb, io)
    }

    /// Executes one command for (target, LUN), the target existing, with
    /// what `io` moves.
    pub fn execute_io(&self, target: u8, lun: u16, cdb: &[u8], io: Io<'_>) -> Reply {
        let alloc = io.alloc;
        let Some(&opcode) = cdb.first() else {
            return Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_OPCODE);
        };
        if cdb_len(opcode).is_some_and(|n| cdb.len() < n) {
            return Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        }
        let unit = self.get(target, lun);
        match opcode {
            op::INQUIRY => return inquiry(unit.as_deref(), target, lun, cdb, alloc),
            op::REPORT_LUNS => return self.report_luns(target, cdb, alloc),
            _ => {}
        }
        let Some(unit) = unit else {
            return Reply::check(key::ILLEGAL_REQUEST, asc::LUN_NOT_SUPPORTED);
        };
        if opcode == op::REQUEST_SENSE {
            let (k, code) = match unit.pending_ua.lock().unwrap().take() {
                Some(code) => (key::UNIT_ATTENTION, code),
                None => (key::NO_SENSE, asc::NONE),
            };
            return Reply::data(
                fixed_sense(k, code.0, code.1),
                usize::from(cdb[4]).min(alloc),
            );
        }
        if let Some(code) = unit.pending_ua.lock().unwrap().take() {
            return Reply::check(key::UNIT_ATTENTION, code);
        }
        match execute_unit(&unit, cdb, io) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vhost-user-scsi: {target}:{lun}: I/O error: {e}");
                Reply::check(key::NOT_READY, (0x04, 0x00))
            }
        }
    }

    fn report_luns(&self, target: u8, cdb: &[u8], alloc: usize) -> Reply {
        let luns = self.luns_of(target);
        let mut d = Vec::with_capacity(8 + 8 * luns.len());
        d.extend_from_slice(&((luns.len() * 8) as u32).to_be_bytes());
        d.extend_from_slice(&[0; 4]);
        for l in luns {
            // Peripheral addressing below 256, flat space above.
            let [hi, lo] = l.to_be_bytes();
            let b0 = if l < 256 { 0 } else { 0x40 | hi };
            d.extend_from_slice(&[b0, lo, 0, 0, 0, 0, 0, 0]);
        }
        Reply::data(d, (be32(&cdb[6..10]) as usize).min(alloc))
    }
}

fn inquiry(unit: Option<&Lun>, target: u8, lun: u16, cdb: &[u8], alloc: usize) -> Reply {
    let alloc = usize::from(be16(&cdb[3..5])).min(alloc);
    let evpd = cdb[1] & 1 != 0;
    let Some(unit) = unit else {
        if evpd {
            return Reply::check(key::ILLEGAL_REQUEST, asc::LUN_NOT_SUPPORTED);
        }
        // Peripheral qualifier 3: no logical unit here.
        let mut d = standard_inquiry(Kind::Disk, false);
        d[0] = 0x7f;
        return Reply::data(d, alloc);
    };
    if !evpd {
        if cdb[2] != 0 {
            return Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        }
        return Reply::data(standard_inquiry(unit.kind, unit.protected()), alloc);
    }
    let pdt = unit.kind.peripheral_type();
    let disk = unit.kind == Kind::Disk;
    let page: Vec<u8> = match cdb[2] {
        0x00 => {
            let mut p = vec![0x00, 0x80, 0x83];
            if unit.protected() {
                p.push(0x86);
            }
            if disk {
                p.extend_from_slice(&[0xb0, 0xb1, 0xb2]);
            }
            p
        }
        0x80 => unit.serial.as_bytes().to_vec(),
        0x83 => {
            let mut p = Vec::new();
            // NAA 5: a made-up IEEE company id, then target and LUN.
            let naa =
                (5u64 << 60) | (0x52_5400u64 << 36) | (u64::from(target) << 16) | u64::from(lun);
            p.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
            p.extend_from_slice(&naa.to_be_bytes());
            // T10 vendor id: vendor, then the serial.
            let id = format!("VSCSIRS {}", unit.serial);
            p.extend_from_slice(&[0x02, 0x01, 0x00, id.len() as u8]);
            p.extend_from_slice(id.as_bytes());
            p
        }
        0x86 if unit.protected() => {
            // Extended INQUIRY Data (SPC-4 7.8.7), from byte 4 on.
            let mut p = vec![0u8; 0x3c];
            // SPT 000b (type 1) in bits 5:3; GRD_CHK, APP_CHK, REF_CHK in
            // bits 2:0.
            p[0] = 0x07;
            // SIMPSUP: the SIMPLE task attribute.
            p[1] = 0x01;
            p
        }
        0xb0 if disk => {
            let mut p = vec![0u8; 0x3c];
            // WSNZ: WRITE SAME with 0 blocks is not supported.
            p[0] = 0x01;
            p[16..20].copy_from_slice(&MAX_UNMAP_BLOCKS.to_be_bytes());
            p[20..24].copy_from_slice(&MAX_UNMAP_DESCRIPTORS.to_be_bytes());
            p[32..40].copy_from_slice(&u64::from(MAX_UNMAP_BLOCKS).to_be_bytes());
            p
        }
        0xb1 if disk => {
            let mut p = vec![0u8; 0x3c];
            // Non-rotating medium.
            p[0..2].copy_from_slice(&1u16.to_be_bytes());
            p
        }
        // UNMAP and WRITE SAME(16) with UNMAP; thin provisioned.
        0xb2 if disk => vec![0x00, 0xc0, 0x02, 0x00],
        _ => return Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB),
    };
    let mut d = vec![pdt, cdb[2]];
    d.extend_from_slice(&(page.len() as u16).to_be_bytes());
    d.extend_from_slice(&page);
    Reply::data(d, alloc)
}

/// Standard INQUIRY data, 74 bytes with three version descriptors, as real
/// targets send more than the 36 bytes a midlayer asks for first (the
/// Linux midlayer then reads all of it and keeps the length).
fn standard_inquiry(kind: Kind, protect: bool) -> Vec<u8> {
    let mut d = vec![0u8; 74];
    d[0] = kind.peripheral_type();
    d[1] = if kind == Kind::Cdrom { 0x80 } else { 0 };
    // SPC-4, response data format 2, HiSup.
    d[2] = 0x06;
    d[3] = 0x12;
    // Additional length: the bytes after byte 4.
    d[4] = 69;
    // PROTECT: formatted with protection information.
    d[5] = u8::from(protect);
    // CmdQue.
    d[7] = 0x02;
    d[8..16].copy_from_slice(b"VSCSIRS ");
    d[16..32].copy_from_slice(match kind {
        Kind::Disk => b"vhost-user disk ",
        Kind::Cdrom => b"vhost-user cdrom",
    });
    d[32..36].copy_from_slice(b"0001");
    // Version descriptors (SPC-4, version descriptor values, no version
    // claimed): SAM-5, SPC-4, then SBC-3 or MMC-6.
    let command_set: u16 = match kind {
        Kind::Disk => 0x04c0,
        Kind::Cdrom => 0x04e0,
    };
    for (i, v) in [0x00a0u16, 0x0460, command_set].into_iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// Decodes the LBA and block count of a READ or WRITE CDB.
fn rw_range(cdb: &[u8]) -> (u64, u64) {
    match cdb[0] {
        op::READ_6 | op::WRITE_6 => {
            let lba = (u64::from(cdb[1] & 0x1f) << 16) | u64::from(be16(&cdb[2..4]));
            let n = if cdb[4] == 0 { 256 } else { u64::from(cdb[4]) };
            (lba, n)
        }
        op::READ_10 | op::WRITE_10 => (u64::from(be32(&cdb[2..6])), u64::from(be16(&cdb[7..9]))),
        _ => (be64(&cdb[2..10]), u64::from(be32(&cdb[10..14]))),
    }
}

/// The RDPROTECT or WRPROTECT field of a READ, WRITE or WRITE SAME CDB (0
/// for the 6-byte ones, which have none).
fn protect_field(cdb: &[u8]) -> u8 {
    match cdb[0] {
        op::READ_6 | op::WRITE_6 => 0,
        _ => cdb[1] >> 5,
    }
}

/// The checks a nonzero protect field asks for, or the answer to a
/// reserved value.
fn checks_of(protect: u8) -> Result<Checks, Reply> {
    Checks::of(protect).ok_or_else(|| Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB))
}

/// Checks the tuples a write carries for `data` (blocks of `bs` bytes from
/// `lba`) as its protect field asks: the tuples to store (none when the
/// driver sent none, or nothing is to be checked) and how many were
/// checked, or the answer refusing the write. A protect field with no
/// tuples is served without (the block layer attaches none when
/// `write_generate` is 0, and sd sets the field anyway).
fn check_pi_out<'a>(
    protect: u8,
    pi_out: &'a [u8],
    data: &[u8],
    bs: usize,
    lba: u64,
) -> Result<(Option<&'a [u8]>, u64), Reply> {
    if protect == 0 || pi_out.is_empty() {
        // An unknown protect value is refused even without tuples.
        if protect != 0 {
            checks_of(protect)?;
        }
        return Ok((None, 0));
    }
    let checks = checks_of(protect)?;
    if pi_out.len() != data.len() / bs * TUPLE_SIZE {
        return Err(Reply::check(
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        ));
    }
    let mut checked = 0;
    let blocks = data.chunks_exact(bs);
    for ((l, t), block) in (lba..).zip(pi_out.chunks_exact(TUPLE_SIZE)).zip(blocks) {
        checked += u64::from(pi::verify(t, block, l, checks).map_err(Reply::pi_mismatch)?);
    }
    Ok((Some(pi_out), checked))
}

fn execute_unit(unit: &Lun, cdb: &[u8], io: Io<'_>) -> io::Result<Reply> {
    let (data_out, alloc) = (io.data_out, io.alloc);
    let bs = unit.bs();
    let blocks = unit.blocks();
    let disk = unit.kind == Kind::Disk;
    Ok(match cdb[0] {
        op::TEST_UNIT_READY | op::START_STOP_UNIT | op::PREVENT_ALLOW => Reply::good(),
        op::READ_6 | op::READ_10 | op::READ_16 => read(unit, cdb, io)?,
        op::WRITE_6 | op::WRITE_10 | op::WRITE_16 => write(unit, cdb, io)?,
        op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => {
            unit.store.sync()?;
            Reply::good()
        }
        op::READ_CAPACITY_10 => {
            let last = blocks.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
            let mut d = last.to_be_bytes().to_vec();
            d.extend_from_slice(&(bs as u32).to_be_bytes());
            Reply::data(d, alloc)
        }
        op::SERVICE_ACTION_IN_16 if cdb[1] & 0x1f == op::SAI_READ_CAPACITY_16 => {
            let mut d = vec![0u8; 32];
            d[0..8].copy_from_slice(&blocks.saturating_sub(1).to_be_bytes());
            d[8..12].copy_from_slice(&(bs as u32).to_be_bytes());
            // P_TYPE 000b (type 1), PROT_EN; P_I_EXPONENT 0.
            d[12] = u8::from(unit.protected());
            if disk {
                // LBPME, LBPRZ: unmapped blocks read as zeros.
                d[14] = 0xc0;
            }
            Reply::data(d, (be32(&cdb[10..14]) as usize).min(alloc))
        }
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => mode_sense(unit, cdb, alloc),
        op::UNMAP if disk => unmap(unit, data_out)?,
        op::WRITE_SAME_16 if disk => write_same(unit, cdb, io)?,
        _ => Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_OPCODE),
    })
}

/// READ(6/10/16). With RDPROTECT on a unit formatted with protection
/// information, the tuples of the blocks read go back in the protection
/// information in, if the initiator asked for them: for every block or
/// (the device strips them) none.
fn read(unit: &Lun, cdb: &[u8], io: Io<'_>) -> io::Result<Reply> {
    let bs = unit.bs();
    let (lba, n) = rw_range(cdb);
    if lba.checked_add(n).is_none_or(|end| end > unit.blocks()) {
        return Ok(Reply::check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
    }
    let protect = protect_field(cdb);
    let tuples = match &unit.pi {
        Some(tuples) if protect != 0 => {
            if let Err(r) = checks_of(protect) {
                return Ok(r);
            }
            if io.pi_in != 0 && io.pi_in != n as usize * TUPLE_SIZE {
                return Ok(Reply::check(
                    key::ILLEGAL_REQUEST,
                    asc::INVALID_FIELD_IN_CDB,
                ));
            }
            Some(tuples).filter(|_| io.pi_in != 0)
        }
        _ => None,
    };
    let Some(tuples) = tuples else {
        let mut data = vec![0u8; ((n * bs) as usize).min(io.alloc)];
        unit.store.read(&mut data, lba * bs)?;
        return Ok(Reply::data(data, io.alloc));
    };
    // Every block, even past the data-in room: a tuple the device
    // generates needs its block.
    let mut data = vec![0u8; (n * bs) as usize];
    let tuples = tuples.read().unwrap();
    unit.store.read(&mut data, lba * bs)?;
    let mut pi = Vec::with_capacity(io.pi_in);
    for (l, block) in (lba..).zip(data.chunks_exact(bs as usize)) {
        let t = tuples
            .get(&l)
            .copied()
            .unwrap_or_else(|| pi::generate(block, l));
        pi.extend_from_slice(&t);
    }
    drop(tuples);
    Ok(Reply {
        pi,
        ..Reply::data(data, io.alloc)
    })
}

/// WRITE(6/10/16). With WRPROTECT on a unit formatted with protection
/// information, the tuples that came with the data are checked as the
/// field says, then kept; nothing is written if one fails. Without (or
/// with WRPROTECT but no protection information sent: the device inserts
/// it), the device generates the tuples from the data.
fn write(unit: &Lun, cdb: &[u8], io: Io<'_>) -> io::Result<Reply> {
    if unit.kind != Kind::Disk {
        return Ok(Reply::check(key::DATA_PROTECT, asc::WRITE_PROTECTED));
    }
    let bs = unit.bs();
    let (lba, n) = rw_range(cdb);
    if lba.checked_add(n).is_none_or(|end| end > unit.blocks()) {
        return Ok(Reply::check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
    }
    let len = (n * bs) as usize;
    let Some(data) = io.data_out.get(..len) else {
        return Ok(Reply::check(
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        ));
    };
    let done = Reply {
        consumed: len,
        ..Reply::good()
    };
    let Some(tuples) = &unit.pi else {
        unit.store.write(data, lba * bs)?;
        return Ok(done);
    };
    let (sent, checked) = match check_pi_out(protect_field(cdb), io.pi_out, data, bs as usize, lba)
    {
        Ok(r) => r,
        Err(reply) => return Ok(reply),
    };
    let mut tuples = tuples.write().unwrap();
    unit.store.write(data, lba * bs)?;
    match sent {
        Some(sent) => {
            for (l, t) in (lba..).zip(sent.chunks_exact(TUPLE_SIZE)) {
                let mut tuple = [0u8; TUPLE_SIZE];
                tuple.copy_from_slice(t);
                tuples.insert(l, tuple);
            }
        }
        None => pi::forget(&mut tuples, lba, n),
    }
    Ok(Reply {
        pi_checked: checked,
        ..done
    })
}

fn zero_range(unit: &Lun, lba: u64, n: u64) -> io::Result<()> {
    let bs = unit.bs();
    let chunk = vec![0u8; (bs * 256) as usize];
    let mut done = 0;
    while done < n {
        let k = (n - done).min(256);
        unit.store
            .write(&chunk[..(k * bs) as usize], (lba + done) * bs)?;
        done += k;
    }
    Ok(())
}

fn unmap(unit: &Lun, param: &[u8]) -> io::Result<Reply> {
    let bad = Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAM);
    if param.len() < 8 {
        return Ok(if param.is_empty() { Reply::good() } else { bad });
    }
    let desc_len = usize::from(be16(&param[2..4]));
    let Some(descs) = param.get(8..8 + desc_len) else {
        return Ok(bad);
    };
    if descs.len() % 16 != 0 || descs.len() / 16 > MAX_UNMAP_DESCRIPTORS as usize {
        return Ok(bad);
    }
    let mut ranges = Vec::new();
    for d in descs.chunks_exact(16) {
        let (lba, n) = (be64(&d[0..8]), u64::from(be32(&d[8..12])));
        if lba.checked_add(n).is_none_or(|end| end > unit.blocks()) {
            return Ok(Reply::check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
        }
        if n > u64::from(MAX_UNMAP_BLOCKS) {
            return Ok(bad);
        }
        ranges.push((lba, n));
    }
    let mut tuples = unit.pi.as_ref().map(|t| t.write().unwrap());
    for (lba, n) in ranges {
        zero_range(unit, lba, n)?;
        if let Some(t) = tuples.as_mut() {
            pi::forget(t, lba, n);
        }
    }
    Ok(Reply {
        consumed: 8 + desc_len,
        ..Reply::good()
    })
}

/// WRITE SAME(16). On a unit formatted with protection information, a
/// WRPROTECT field with the one block's tuple checks it at the first LBA
/// and keeps it for every block, its reference tag counting up (type 1);
/// otherwise the device generates the tuples.
fn write_same(unit: &Lun, cdb: &[u8], io: Io<'_>) -> io::Result<Reply> {
    let data_out = io.data_out;
    let (lba, n) = (be64(&cdb[2..10]), u64::from(be32(&cdb[10..14])));
    if n == 0 || n > u64::from(MAX_UNMAP_BLOCKS) {
        return Ok(Reply::check(
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        ));
    }
    if lba.checked_add(n).is_none_or(|end| end > unit.blocks()) {
        return Ok(Reply::check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
    }
    let bs = unit.bs() as usize;
    let Some(block) = data_out.get(..bs) else {
        return Ok(Reply::check(
            key::ILLEGAL_REQUEST,
            asc::INVALID_FIELD_IN_CDB,
        ));
    };
    // One block, one tuple, whatever the number of blocks written.
    let protect = if unit.protected() { cdb[1] >> 5 } else { 0 };
    let (sent, checked) = match check_pi_out(protect, io.pi_out, block, bs, lba) {
        Ok(r) => r,
        Err(reply) => return Ok(reply),
    };
    let mut tuples = unit.pi.as_ref().map(|t| t.write().unwrap());
    let zeros = cdb[1] & 0x08 != 0 || block.iter().all(|&b| b == 0);
    if zeros {
        zero_range(unit, lba, n)?;
    } else {
        for i in 0..n {
            unit.store.write(block, (lba + i) * bs as u64)?;
        }
    }
    if let Some(t) = tuples.as_mut() {
        match sent {
            // Unmapped or zeroed: the tuples of zeros, generated.
            Some(s) if !zeros => {
                let (guard, app) = (u16::from_be_bytes([s[0], s[1]]), pi::app_tag(s));
                for i in 0..n {
                    let reference = pi::ref_tag(s).wrapping_add(i as u32);
                    t.insert(lba + i, pi::tuple(guard, app, reference));
                }
            }
            _ => pi::forget(t, lba, n),
        }
    }
    Ok(Reply {
        consumed: bs,
        pi_checked: checked,
        ..Reply::good()
    })
}

fn mode_sense(unit: &Lun, cdb: &[u8], alloc: usize) -> Reply {
    let ten = cdb[0] == op::MODE_SENSE_10;
    let dbd = cdb[1] & 0x08 != 0;
    let (pc, page) = (cdb[2] >> 6, cdb[2] & 0x3f);
    let alloc = if ten {
        usize::from(be16(&cdb[7..9]))
    } else {
        usize::from(cdb[4])
    }
    .min(alloc);
    if pc == 3 {
        // Saved values: not supported.
        return Reply::check(key::ILLEGAL_REQUEST, (0x39, 0x00));
    }
    let changeable = pc == 1;
    let caching = || {
        let mut p = vec![0u8; 20];
        p[0] = 0x08;
        p[1] = 0x12;
        // WCE: a volatile cache, so the initiator sends SYNCHRONIZE CACHE.
        p[2] = if changeable { 0 } else { 0x04 };
        p
    };
    let control = || {
        let mut p = vec![0u8; 12];
        p[0] = 0x0a;
        p[1] = 0x0a;
        p
    };
    let pages: Vec<u8> = match page {
        0x08 => caching(),
        0x0a => control(),
        0x3f => [caching(), control()].concat(),
        _ => return Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB),
    };
    let mut bd = Vec::new();
    if !dbd && unit.kind == Kind::Disk {
        let blocks = unit.blocks().min(0xff_ffff) as u32;
        bd.extend_from_slice(&blocks.to_be_bytes());
        bd[0] = 0;
        bd.extend_from_slice(&(unit.bs() as u32).to_be_bytes());
        bd[4] = 0;
    }
    let dsp = if unit.kind == Kind::Cdrom { 0x80 } else { 0 };
    let mut d = if ten {
        let total = 8 + bd.len() + pages.len();
        let mut h = ((total - 2) as u16).to_be_bytes().to_vec();
        h.extend_from_slice(&[0, dsp, 0, 0]);
        h.extend_from_slice(&(bd.len() as u16).to_be_bytes());
        h
    } else {
        let total = 4 + bd.len() + pages.len();
        vec![(total - 1) as u8, 0, dsp, bd.len() as u8]
    };
    d.extend_from_slice(&bd);
    d.extend_from_slice(&pages);
    Reply::data(d, alloc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_tails() {
        let mut f = [0u8; 32];
        f[..10].copy_from_slice(&[0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0]);
        assert!(cdb_tail_clear(&f));
        f[10] = 1;
        assert!(!cdb_tail_clear(&f));
        // TEST UNIT READY is 6 bytes; byte 5 is its own.
        let mut f = [0u8; 32];
        f[5] = 0x80;
        assert!(cdb_tail_clear(&f));
        f[6] = 1;
        assert!(!cdb_tail_clear(&f));
        // A variable-length CDB of 8 + 24 bytes fills the field.
        let mut f = [0xffu8; 32];
        (f[0], f[7]) = (0x7f, 24);
        assert!(cdb_tail_clear(&f));
        // A vendor-specific group is not checked.
        assert!(cdb_tail_clear(&[0xc0; 32]));
    }

    fn targets() -> Targets {
        let t = Targets::default();
        t.insert(
            0,
            0,
            Lun::new(
                Kind::Disk,
                Store::ram(1 << 20).unwrap(),
                1 << 20,
                "d0".into(),
            ),
        );
        t.insert(
            0,
            3,
            Lun::new(Kind::Cdrom, Store::Null, 1 << 20, "c3".into()),
        );
        t
    }

    fn sense(r: &Reply) -> (u8, u8, u8) {
        (r.sense[2], r.sense[12], r.sense[13])
    }

    #[test]
    fn inquiry_standard_vpd_and_absent_lun() {
        let t = targets();
        let r = t.execute(0, 0, &[op::INQUIRY, 0, 0, 0, 96, 0], &[], 4096);
        assert_eq!((r.status, r.data.len(), r.data[0]), (GOOD, 74, 0));
        assert_eq!(usize::from(r.data[4]) + 5, r.data.len());
        assert_eq!(&r.data[58..64], &[0x00, 0xa0, 0x04, 0x60, 0x04, 0xc0]);
        let r = t.execute(0, 3, &[op::INQUIRY, 0, 0, 0, 96, 0], &[], 4096);
        assert_eq!((r.data[0], r.data[1]), (5, 0x80));
        assert_eq!(&r.data[62..64], &[0x04, 0xe0]);
        let r = t.execute(0, 1, &[op::INQUIRY, 0, 0, 0, 96, 0], &[], 4096);
        assert_eq!(r.data[0], 0x7f);
        let r = t.execute(0, 0, &[op::INQUIRY, 1, 0, 0, 255, 0], &[], 4096);
        assert_eq!(&r.data[4..], &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
        for page in [0x80, 0x83, 0xb0, 0xb1, 0xb2] {
            let r = t.execute(0, 0, &[op::INQUIRY, 1, page, 0, 255, 0], &[], 4096);
            assert_eq!(r.status, GOOD, "page {page:#x}");
            assert_eq!(usize::from(be16(&r.data[2..4])) + 4, r.data.len());
        }
        // Allocation length and the data-in room both bound the data.
        let r = t.execute(0, 0, &[op::INQUIRY, 0, 0, 0, 96, 0], &[], 5);
        assert_eq!(r.data.len(), 5);
        let r = t.execute(0, 3, &[op::INQUIRY, 1, 0xb0, 0, 255, 0], &[], 4096);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
    }

    #[test]
    fn report_luns_encodes_peripheral_and_flat() {
        let t = targets();
        t.insert(
            0,
            300,
            Lun::new(Kind::Disk, Store::Null, 1 << 20, "d300".into()),
        );
        let cdb = [op::REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        let r = t.execute(0, 0, &cdb, &[], 4096);
        assert_eq!(be32(&r.data[0..4]), 24);
        assert_eq!(&r.data[8..10], &[0, 0]);
        assert_eq!(&r.data[16..18], &[0, 3]);
        assert_eq!(&r.data[24..26], &[0x41, 0x2c]);
    }

    #[test]
    fn read_write_capacity_and_range() {
        let t = targets();
        let block: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        let w = [op::WRITE_10, 0, 0, 0, 0, 7, 0, 0, 1, 0];
        assert_eq!(t.execute(0, 0, &w, &block, 0).status, GOOD);
        let r = t.execute(
            0,
            0,
            &[op::READ_16, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0],
            &[],
            512,
        );
        assert_eq!(r.data, block);
        let r = t.execute(0, 0, &[op::READ_6, 0, 0, 7, 1, 0], &[], 512);
        assert_eq!(r.data, block);
        let r = t.execute(
            0,
            0,
            &[op::READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
            8,
        );
        assert_eq!((be32(&r.data[0..4]), be32(&r.data[4..8])), (2047, 512));
        let r = t.execute(0, 0, &[op::READ_10, 0, 0, 0, 7, 255, 0, 0, 2, 0], &[], 1024);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x21, 0));
        let r = t.execute(0, 3, &w, &block, 0);
        assert_eq!(sense(&r), (key::DATA_PROTECT, 0x27, 0));
        let r = t.execute(0, 0, &[0xc0, 0, 0, 0, 0, 0], &[], 0);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x20, 0));
    }

    #[test]
    fn capacity_change_raises_one_unit_attention() {
        let t = targets();
        assert!(t.resize(0, 0, 2 << 20).unwrap());
        let tur = [op::TEST_UNIT_READY, 0, 0, 0, 0, 0];
        let r = t.execute(0, 0, &tur, &[], 0);
        assert_eq!(sense(&r), (key::UNIT_ATTENTION, 0x2a, 0x09));
        assert_eq!(t.execute(0, 0, &tur, &[], 0).status, GOOD);
        let mut cdb = [0u8; 16];
        cdb[0] = op::SERVICE_ACTION_IN_16;
        cdb[1] = op::SAI_READ_CAPACITY_16;
        cdb[13] = 32;
        let r = t.execute(0, 0, &cdb, &[], 32);
        assert_eq!(be64(&r.data[0..8]), 4095);
    }

    #[test]
    fn unmap_and_write_same_zero_or_fill() {
        let t = targets();
        let ones = vec![0xa5u8; 512];
        let mut ws = [0u8; 16];
        ws[0] = op::WRITE_SAME_16;
        ws[9] = 10;
        ws[13] = 4;
        assert_eq!(t.execute(0, 0, &ws, &ones, 0).status, GOOD);
        let r = t.execute(0, 0, &[op::READ_10, 0, 0, 0, 0, 10, 0, 0, 4, 0], &[], 2048);
        assert!(r.data.iter().all(|&b| b == 0xa5));
        let mut param = vec![0u8; 24];
        param[3] = 16;
        param[15] = 11;
        param[19] = 2;
        let r = t.execute(0, 0, &[op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], &param, 0);
        assert_eq!(r.status, GOOD);
        let r = t.execute(0, 0, &[op::READ_10, 0, 0, 0, 0, 10, 0, 0, 4, 0], &[], 2048);
        assert!(r.data[..512].iter().all(|&b| b == 0xa5));
        assert!(r.data[512..1536].iter().all(|&b| b == 0));
        assert!(r.data[1536..].iter().all(|&b| b == 0xa5));
    }

    /// A disk formatted with protection information at 0:1, 1 MiB.
    fn with_pi_lun() -> Targets {
        let t = targets();
        let lun = Lun::new(
            Kind::Disk,
            Store::ram(1 << 20).unwrap(),
            1 << 20,
            "p1".into(),
        );
        t.insert(0, 1, lun.with_pi());
        t
    }

    fn rw10(opcode: u8, protect: u8, lba: u32, n: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = opcode;
        c[1] = protect << 5;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&n.to_be_bytes());
        c
    }

    /// `n` blocks of a pattern that differs by block, and their tuples
    /// (application tag 0x1234) as the initiator would send them for LBA
    /// `lba` on.
    fn blocks_with_pi(lba: u64, n: usize) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..n * 512).map(|i| (i * 13 + i / 512) as u8).collect();
        let pi = data
            .chunks_exact(512)
            .zip(lba..)
            .flat_map(|(b, l)| pi::tuple(pi::crc_t10dif(b), 0x1234, l as u32))
            .collect();
        (data, pi)
    }

    fn write_pi(t: &Targets, cdb: &[u8], data: &[u8], pi_out: &[u8]) -> Reply {
        let io = Io {
            pi_out,
            data_out: data,
            ..Io::default()
        };
        t.execute_io(0, 1, cdb, io)
    }

    fn read_pi(t: &Targets, cdb: &[u8], pi_in: usize, alloc: usize) -> Reply {
        let io = Io {
            pi_in,
            alloc,
            ..Io::default()
        };
        t.execute_io(0, 1, cdb, io)
    }

    #[test]
    fn pi_inquiry_and_capacity_only_on_pi_luns() {
        let t = with_pi_lun();
        let std_inq = [op::INQUIRY, 0, 0, 0, 96, 0];
        assert_eq!(t.execute(0, 1, &std_inq, &[], 4096).data[5], 0x01);
        assert_eq!(t.execute(0, 0, &std_inq, &[], 4096).data[5], 0x00);
        let pages = [op::INQUIRY, 1, 0, 0, 255, 0];
        let r = t.execute(0, 1, &pages, &[], 4096);
        assert_eq!(&r.data[4..], &[0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2]);
        let r = t.execute(0, 0, &pages, &[], 4096);
        assert_eq!(&r.data[4..], &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
        let ext = [op::INQUIRY, 1, 0x86, 0, 255, 0];
        let r = t.execute(0, 1, &ext, &[], 4096);
        assert_eq!((r.status, r.data.len()), (GOOD, 64));
        assert_eq!(&r.data[..4], &[0x00, 0x86, 0x00, 0x3c]);
        // SPT 000b; GRD_CHK, APP_CHK, REF_CHK.
        assert_eq!(r.data[4], 0x07);
        let r = t.execute(0, 0, &ext, &[], 4096);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
        let mut rc16 = [0u8; 16];
        rc16[0] = op::SERVICE_ACTION_IN_16;
        rc16[1] = op::SAI_READ_CAPACITY_16;
        rc16[13] = 32;
        let r = t.execute(0, 1, &rc16, &[], 32);
        assert_eq!(
            (be32(&r.data[8..12]), r.data[12], r.data[13]),
            (512, 0x01, 0)
        );
        assert_eq!(be64(&r.data[0..8]), 2047);
        let r = t.execute(0, 0, &rc16, &[], 32);
        assert_eq!((r.data[12], r.data[13]), (0, 0));
    }

    #[test]
    fn pi_written_is_read_back() {
        let t = with_pi_lun();
        let (data, pi) = blocks_with_pi(5, 3);
        let r = write_pi(&t, &rw10(op::WRITE_10, 1, 5, 3), &data, &pi);
        assert_eq!((r.status, r.consumed, r.pi_checked), (GOOD, 3 * 512, 3));
        let r = read_pi(&t, &rw10(op::READ_10, 1, 5, 3), 24, 3 * 512);
        assert_eq!((r.status, &r.data, &r.pi), (GOOD, &data, &pi));
        // READ(16), a block before and one after: those generated.
        let mut cdb = [0u8; 16];
        cdb[0] = op::READ_16;
        cdb[1] = 1 << 5;
        cdb[9] = 4;
        cdb[13] = 5;
        let r = read_pi(&t, &cdb, 40, 5 * 512);
        assert_eq!(&r.pi[..8], &pi::tuple(0, 0, 4));
        assert_eq!(&r.pi[8..32], &pi[..]);
        assert_eq!(&r.pi[32..], &pi::tuple(0, 0, 8));
        // A data-in room short of the blocks: the tuples of them all.
        let r = read_pi(&t, &rw10(op::READ_10, 1, 5, 3), 24, 512);
        assert_eq!((&r.data[..], &r.pi), (&data[..512], &pi));
        // RDPROTECT 0, or no room for the tuples (the device strips them):
        // the data alone.
        for (protect, pi_in) in [(0, 0), (1, 0), (0, 24)] {
            let r = read_pi(&t, &rw10(op::READ_10, protect, 5, 3), pi_in, 3 * 512);
            assert_eq!((r.status, &r.data, r.pi.len()), (GOOD, &data, 0));
        }
        // Tuples for some blocks only; a reserved RDPROTECT.
        let r = read_pi(&t, &rw10(op::READ_10, 1, 5, 3), 16, 3 * 512);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
        let r = read_pi(&t, &rw10(op::READ_10, 6, 5, 3), 24, 3 * 512);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
        // Written without PI (WRITE(6), WRPROTECT 0, or WRPROTECT without
        // tuples): the device's tuples from then on.
        let zeros = vec![0u8; 512];
        for cdb in [
            [op::WRITE_6, 0, 0, 5, 1, 0].as_slice(),
            &rw10(op::WRITE_10, 0, 6, 1),
            &rw10(op::WRITE_10, 1, 7, 1),
        ] {
            let r = write_pi(&t, cdb, &zeros, &[]);
            assert_eq!((r.status, r.pi_checked), (GOOD, 0));
        }
        let r = read_pi(&t, &rw10(op::READ_10, 1, 5, 3), 24, 3 * 512);
        assert!(r.data.iter().all(|&b| b == 0));
        let generated: Vec<u8> = (5..8).flat_map(|l| pi::tuple(0, 0, l)).collect();
        assert_eq!(r.pi, generated);
    }

    #[test]
    fn pi_mismatches_write_nothing() {
        let t = with_pi_lun();
        let (data, pi) = blocks_with_pi(9, 2);
        let mut bad_guard = pi.clone();
        bad_guard[8] ^= 0x80;
        let r = write_pi(&t, &rw10(op::WRITE_10, 1, 9, 2), &data, &bad_guard);
        assert_eq!(sense(&r), (key::ABORTED_COMMAND, 0x10, 0x01));
        assert!(r.pi_error());
        let mut bad_ref = pi.clone();
        bad_ref[15] ^= 1;
        let r = write_pi(&t, &rw10(op::WRITE_10, 1, 9, 2), &data, &bad_ref);
        assert_eq!(sense(&r), (key::ABORTED_COMMAND, 0x10, 0x03));
        // Written at the wrong LBA: its reference tags do not match.
        let r = write_pi(&t, &rw10(op::WRITE_10, 1, 10, 2), &data, &pi);
        assert_eq!(sense(&r), (key::ABORTED_COMMAND, 0x10, 0x03));
        // Nothing was written: zeros and the tuples of zeros.
        let r = read_pi(&t, &rw10(op::READ_10, 1, 9, 3), 24, 3 * 512);
        assert!(r.data.iter().all(|&b| b == 0));
        let generated: Vec<u8> = (9..12).flat_map(|l| pi::tuple(0, 0, l)).collect();
        assert_eq!(r.pi, generated);
        // WRPROTECT 010b checks the reference tag only, 100b the guard
        // only, 011b nothing; application tag FFFFh turns the checks off.
        let r = write_pi(&t, &rw10(op::WRITE_10, 2, 9, 2), &data, &bad_guard);
        assert_eq!((r.status, r.pi_checked), (GOOD, 2));
        let r = write_pi(&t, &rw10(op::WRITE_10, 4, 9, 2), &data, &bad_ref);
        assert_eq!((r.status, r.pi_checked), (GOOD, 2));
        let r = write_pi(&t, &rw10(op::WRITE_10, 3, 9, 2), &data, &bad_ref);
        assert_eq!((r.status, r.pi_checked), (GOOD, 0));
        let mut escaped = bad_guard.clone();
        escaped[10..12].copy_from_slice(&[0xff, 0xff]);
        let r = write_pi(&t, &rw10(op::WRITE_10, 1, 9, 2), &data, &escaped);
        assert_eq!((r.status, r.pi_checked), (GOOD, 1));
        // What was sent is what reads back, however unchecked.
        let r = read_pi(&t, &rw10(op::READ_10, 1, 9, 2), 16, 2 * 512);
        assert_eq!((&r.data, &r.pi), (&data, &escaped));
        // Tuples for some blocks only; a reserved WRPROTECT.
        let r = write_pi(&t, &rw10(op::WRITE_10, 1, 9, 2), &data, &pi[..8]);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
        let r = write_pi(&t, &rw10(op::WRITE_10, 7, 9, 2), &data, &pi);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
    }

    #[test]
    fn pi_follows_write_same_unmap_and_resize() {
        let t = with_pi_lun();
        let (data, pi) = blocks_with_pi(20, 1);
        let mut ws = [0u8; 16];
        ws[0] = op::WRITE_SAME_16;
        ws[1] = 1 << 5;
        ws[9] = 20;
        ws[13] = 3;
        let r = write_pi(&t, &ws, &data, &pi);
        assert_eq!((r.status, r.pi_checked), (GOOD, 1));
        let r = read_pi(&t, &rw10(op::READ_10, 1, 20, 3), 24, 3 * 512);
        let want: Vec<u8> = (20..23)
            .flat_map(|l| pi::tuple(be16(&pi[..2]), 0x1234, l))
            .collect();
        assert_eq!(r.pi, want);
        ws[9] = 21;
        let r = write_pi(&t, &ws, &data, &pi);
        assert_eq!(sense(&r), (key::ABORTED_COMMAND, 0x10, 0x03));
        // UNMAP: zeros, and their tuples.
        let mut param = vec![0u8; 24];
        param[3] = 16;
        param[15] = 21;
        param[19] = 1;
        let unmap = [op::UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        assert_eq!(t.execute(0, 1, &unmap, &param, 0).status, GOOD);
        let r = read_pi(&t, &rw10(op::READ_10, 1, 21, 1), 8, 512);
        assert_eq!(r.pi, pi::tuple(0, 0, 21));
        // Shrunk past LBA 20 and grown back: zeros, and their tuples.
        assert!(t.resize(0, 1, 10 * 512).unwrap());
        assert!(t.resize(0, 1, 1 << 20).unwrap());
        let tur = [op::TEST_UNIT_READY, 0, 0, 0, 0, 0];
        assert_eq!(sense(&t.execute(0, 1, &tur, &[], 0)).0, key::UNIT_ATTENTION);
        let r = read_pi(&t, &rw10(op::READ_10, 1, 20, 1), 8, 512);
        assert_eq!((r.data, r.pi), (vec![0; 512], pi::tuple(0, 0, 20).to_vec()));
    }

    #[test]
    fn no_pi_format_no_pi() {
        // A LUN without protection information ignores the protect fields,
        // as it always did, and gives back no tuple.
        let t = with_pi_lun();
        let (data, pi) = blocks_with_pi(5, 1);
        let io = Io {
            pi_out: &pi,
            data_out: &data,
            ..Io::default()
        };
        let r = t.execute_io(0, 0, &rw10(op::WRITE_10, 1, 5, 1), io);
        assert_eq!((r.status, r.consumed, r.pi_checked), (GOOD, 512, 0));
        let io = Io {
            pi_in: 8,
            alloc: 512,
            ..Io::default()
        };
        let r = t.execute_io(0, 0, &rw10(op::READ_10, 1, 5, 1), io);
        assert_eq!((r.status, &r.data, r.pi.len()), (GOOD, &data, 0));
    }

    #[test]
    fn mode_sense_pages() {
        let t = targets();
        let r = t.execute(0, 0, &[op::MODE_SENSE_6, 0, 0x3f, 0, 255, 0], &[], 4096);
        assert_eq!(usize::from(r.data[0]) + 1, r.data.len());
        assert_eq!(r.data[3], 8);
        let r = t.execute(
            0,
            0,
            &[op::MODE_SENSE_10, 8, 0x08, 0, 0, 0, 0, 0, 255, 0],
            &[],
            4096,
        );
        assert_eq!((r.data[8], r.data[10] & 0x04), (0x08, 0x04));
        let r = t.execute(0, 0, &[op::MODE_SENSE_6, 0, 0x2a, 0, 255, 0], &[], 4096);
        assert_eq!(sense(&r), (key::ILLEGAL_REQUEST, 0x24, 0));
    }
}
