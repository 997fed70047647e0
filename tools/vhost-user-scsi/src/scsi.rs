// SPDX-License-Identifier: GPL-2.0
//! The SCSI targets behind the device: N targets of M logical units, each a
//! disk or a CD-ROM on RAM (sparse tmpfs), a file, or nothing at all (a null
//! LUN: reads return zeros, writes are dropped). The command set is what
//! Linux's sd, sr and the midlayer's scan use, plus UNMAP and WRITE SAME;
//! everything else is CHECK CONDITION, ILLEGAL REQUEST, INVALID COMMAND
//! OPERATION CODE.
//!
//! Nothing here knows about virtqueues: a command comes in as a CDB and its
//! data-out bytes and leaves as a [`Reply`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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
        }
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
        unit.store.set_len(bytes)?;
        unit.blocks.store(bytes / unit.bs(), Ordering::Relaxed);
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
    /// data-in.
    pub fn execute(
        &self,
        target: u8,
        lun: u16,
        cdb: &[u8],
        data_out: &[u8],
        alloc: usize,
    ) -> Reply {
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
        match execute_unit(&unit, cdb, data_out, alloc) {
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
        let mut d = standard_inquiry(Kind::Disk);
        d[0] = 0x7f;
        return Reply::data(d, alloc);
    };
    if !evpd {
        if cdb[2] != 0 {
            return Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        }
        return Reply::data(standard_inquiry(unit.kind), alloc);
    }
    let pdt = unit.kind.peripheral_type();
    let disk = unit.kind == Kind::Disk;
    let page: Vec<u8> = match cdb[2] {
        0x00 => {
            let mut p = vec![0x00, 0x80, 0x83];
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

fn standard_inquiry(kind: Kind) -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = kind.peripheral_type();
    d[1] = if kind == Kind::Cdrom { 0x80 } else { 0 };
    // SPC-4, response data format 2, HiSup.
    d[2] = 0x06;
    d[3] = 0x12;
    d[4] = 31;
    // CmdQue.
    d[7] = 0x02;
    d[8..16].copy_from_slice(b"VSCSIRS ");
    d[16..32].copy_from_slice(match kind {
        Kind::Disk => b"vhost-user disk ",
        Kind::Cdrom => b"vhost-user cdrom",
    });
    d[32..36].copy_from_slice(b"0001");
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

fn execute_unit(unit: &Lun, cdb: &[u8], data_out: &[u8], alloc: usize) -> io::Result<Reply> {
    let bs = unit.bs();
    let blocks = unit.blocks();
    let disk = unit.kind == Kind::Disk;
    Ok(match cdb[0] {
        op::TEST_UNIT_READY | op::START_STOP_UNIT | op::PREVENT_ALLOW => Reply::good(),
        op::READ_6 | op::READ_10 | op::READ_16 => {
            let (lba, n) = rw_range(cdb);
            if lba.checked_add(n).is_none_or(|end| end > blocks) {
                return Ok(Reply::check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
            }
            let len = ((n * bs) as usize).min(alloc);
            let mut data = vec![0u8; len];
            unit.store.read(&mut data, lba * bs)?;
            Reply::data(data, alloc)
        }
        op::WRITE_6 | op::WRITE_10 | op::WRITE_16 => {
            if !disk {
                return Ok(Reply::check(key::DATA_PROTECT, asc::WRITE_PROTECTED));
            }
            let (lba, n) = rw_range(cdb);
            if lba.checked_add(n).is_none_or(|end| end > blocks) {
                return Ok(Reply::check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE));
            }
            let len = (n * bs) as usize;
            if data_out.len() < len {
                return Ok(Reply::check(
                    key::ILLEGAL_REQUEST,
                    asc::INVALID_FIELD_IN_CDB,
                ));
            }
            unit.store.write(&data_out[..len], lba * bs)?;
            Reply {
                consumed: len,
                ..Reply::good()
            }
        }
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
            if disk {
                // LBPME, LBPRZ: unmapped blocks read as zeros.
                d[14] = 0xc0;
            }
            Reply::data(d, (be32(&cdb[10..14]) as usize).min(alloc))
        }
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => mode_sense(unit, cdb, alloc),
        op::UNMAP if disk => unmap(unit, data_out)?,
        op::WRITE_SAME_16 if disk => write_same(unit, cdb, data_out)?,
        _ => Reply::check(key::ILLEGAL_REQUEST, asc::INVALID_OPCODE),
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
    for (lba, n) in ranges {
        zero_range(unit, lba, n)?;
    }
    Ok(Reply {
        consumed: 8 + desc_len,
        ..Reply::good()
    })
}

fn write_same(unit: &Lun, cdb: &[u8], data_out: &[u8]) -> io::Result<Reply> {
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
    if cdb[1] & 0x08 != 0 || block.iter().all(|&b| b == 0) {
        zero_range(unit, lba, n)?;
    } else {
        for i in 0..n {
            unit.store.write(block, (lba + i) * bs as u64)?;
        }
    }
    Ok(Reply {
        consumed: bs,
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
        assert_eq!((r.status, r.data.len(), r.data[0]), (GOOD, 36, 0));
        let r = t.execute(0, 3, &[op::INQUIRY, 0, 0, 0, 96, 0], &[], 4096);
        assert_eq!((r.data[0], r.data[1]), (5, 0x80));
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
