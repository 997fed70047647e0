// SPDX-License-Identifier: GPL-2.0
//! vhost-user-scsi: a virtio-scsi device back end for testing
//! `virtio_scsi_rs` behind devices other than QEMU's own.
//!
//! ```text
//! vhost-user-scsi --socket PATH [--control PATH] [--profile NAME]
//!                 [--queues N] [--queue-size N] [--lun SPEC]...
//! ```
//!
//! `--lun T:L:SIZE[:KIND]` adds LUN L of target T, SIZE mebibytes, KIND
//! `disk` (default, RAM), `disk+pi` (RAM, formatted with T10 protection
//! information, type 1), `cdrom` (RAM, read-only), `null`, `file=PATH`
//! (a disk on a file; SIZE is ignored) or `cdrom=PATH` (a CD-ROM on one). `--grid T,L,SIZE` adds targets 0..T with LUNs 0..L each.
//! Profiles: `qemu` (default), `vhost-scsi`, `minimal`, `bidi-pi`.
//!
//! A `disk+pi` LUN has 512-byte blocks with 8 bytes of protection
//! information each (INQUIRY PROTECT, READ CAPACITY(16) PROT_EN, type 1).
//! Under `bidi-pi` (T10_PI negotiated) the tuples travel with READ and
//! WRITE(10/16) that set RDPROTECT or WRPROTECT: the device checks the
//! guard and reference tags of what it is sent (ABORTED COMMAND, LOGICAL
//! BLOCK GUARD or REFERENCE TAG CHECK FAILED, nothing written), keeps the
//! tuples and gives them back; it generates them for blocks written without.
//!
//! The control socket takes one command per line and answers `ok` or
//! `error: ...`: `add T L SIZE [KIND]` (hot-plug with an event), `remove T
//! L` (hot-unplug with an event), `resize T L SIZE` (capacity change: a
//! unit attention and a PARAM_CHANGE event), `event TYPE T L REASON` (a
//! raw event), `eventraw TYPE HEX16 REASON` (an event whose LUN field is
//! the 8 bytes given in hex, however malformed), `flood N T L` (N hot-add events for one LUN), `storm N` (each event
//! buffer handed back with NO_EVENT as soon as it is posted, N times in
//! all; 0 stops), `fault NAME [T L | all] [COUNT]` (commit a
//! fault of `fault.rs` on that LUN's commands, COUNT times or until `fault
//! clear`), `fault random SEED PERCENT [T L | all]` (a seeded mix of command
//! faults), `fault clear`, `stats` (`ok commands N tmfs N events N
//! events_dropped N malformed N faults N held N pi_checked N pi_errors N`:
//! `pi_checked` counts the blocks whose protection information a write
//! checked, `pi_errors` the writes refused for it), `reset` (the LUNs as the command line
//! made them, with fresh contents, no fault, no pending event, counters at
//! zero: between two tests sharing a guest, after the driver let go).

mod device;
mod fault;
mod pi;
mod scsi;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::Arc;

use vhost_user_backend::VhostUserDaemon;
use virtio_bindings::virtio_scsi::*;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use device::{Device, Profile};
use fault::{Fault, Scope};
use scsi::{Kind, Lun, Store, Targets};

const MIB: u64 = 1 << 20;

struct Args {
    socket: String,
    control: Option<String>,
    profile: Profile,
    queues: usize,
    queue_size: usize,
    luns: LunSpecs,
}

fn usage() -> String {
    "usage: vhost-user-scsi --socket PATH [--control PATH] [--profile qemu|vhost-scsi|minimal|bidi-pi] \
     [--queues N] [--queue-size N] [--lun T:L:SIZE[:disk|disk+pi|cdrom|null|file=PATH|cdrom=PATH]]... \
     [--grid T,L,SIZE]"
        .into()
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what}: {s:?}"))
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        socket: String::new(),
        control: None,
        profile: Profile::Qemu,
        queues: 0,
        queue_size: 1024,
        luns: Vec::new(),
    };
    while let Some(opt) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{opt} needs a value"));
        match opt.as_str() {
            "--socket" => a.socket = val()?,
            "--control" => a.control = Some(val()?),
            "--profile" => {
                let v = val()?;
                a.profile = Profile::parse(&v).ok_or_else(|| format!("unknown profile {v:?}"))?;
            }
            "--queues" => a.queues = num(&val()?, "queue count")?,
            "--queue-size" => a.queue_size = num(&val()?, "queue size")?,
            "--lun" => {
                let v = val()?;
                let f: Vec<&str> = v.splitn(4, ':').collect();
                if f.len() < 3 {
                    return Err(format!("bad --lun {v:?}"));
                }
                let kind = f.get(3).copied().unwrap_or("disk").to_string();
                a.luns.push((
                    num(f[0], "target")?,
                    num(f[1], "LUN")?,
                    num(f[2], "size")?,
                    kind,
                ));
            }
            "--grid" => {
                let v = val()?;
                let f: Vec<&str> = v.split(',').collect();
                if f.len() != 3 {
                    return Err(format!("bad --grid {v:?}"));
                }
                let (t, l, size): (u16, u16, u64) = (
                    num(f[0], "targets")?,
                    num(f[1], "LUNs")?,
                    num(f[2], "size")?,
                );
                if t > 256 {
                    return Err(format!("at most 256 targets, not {t}"));
                }
                for target in 0..t {
                    for lun in 0..l {
                        a.luns.push((target as u8, lun, size, "disk".into()));
                    }
                }
            }
            "--help" | "-h" => return Err(usage()),
            _ => return Err(format!("unknown option {opt:?}\n{}", usage())),
        }
    }
    if a.socket.is_empty() {
        return Err(usage());
    }
    if a.queues == 0 {
        a.queues = if a.profile == Profile::Minimal { 1 } else { 2 };
    }
    if a.queues > 62 || !a.queue_size.is_power_of_two() || a.queue_size > 32768 {
        return Err("--queues must be 1..62 and --queue-size a power of two up to 32768".into());
    }
    Ok(a)
}

fn make_lun(target: u8, lun: u16, size_mib: u64, kind: &str) -> Result<Lun, String> {
    let bytes = size_mib * MIB;
    let serial = format!("vus-{target}-{lun}");
    let ram = |kind| {
        let store = Store::ram(bytes).map_err(|e| format!("RAM store: {e}"))?;
        Ok(Lun::new(kind, store, bytes, serial.clone()))
    };
    let on_file = |kind, path: &str| {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(kind == Kind::Disk)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        Ok(Lun::new(kind, Store::File(f), len, serial.clone()))
    };
    match kind.split_once('=') {
        None if kind == "disk" => ram(Kind::Disk),
        None if kind == "disk+pi" => ram(Kind::Disk).map(Lun::with_pi),
        None if kind == "cdrom" => ram(Kind::Cdrom),
        None if kind == "null" => Ok(Lun::new(Kind::Disk, Store::Null, bytes, serial.clone())),
        Some(("file", path)) => on_file(Kind::Disk, path),
        Some(("cdrom", path)) => on_file(Kind::Cdrom, path),
        None if kind.ends_with("+pi") => Err(format!(
            "LUN kind {kind:?}: protection information only on a RAM disk (disk+pi)"
        )),
        _ => Err(format!("unknown LUN kind {kind:?}")),
    }
}

/// The LUNs of the command line: (target, LUN, MiB, kind).
type LunSpecs = Vec<(u8, u16, u64, String)>;

/// One control-socket command.
fn control_command(dev: &Device, initial: &LunSpecs, line: &str) -> Result<String, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let t = |i: usize| -> Result<u8, String> { num(w.get(i).ok_or("missing target")?, "target") };
    let l = |i: usize| -> Result<u16, String> { num(w.get(i).ok_or("missing LUN")?, "LUN") };
    let io = |e: std::io::Error| e.to_string();
    match w.first().copied() {
        Some("add") => {
            let (target, lun) = (t(1)?, l(2)?);
            let size: u64 = num(w.get(3).ok_or("missing size")?, "size")?;
            let unit = make_lun(target, lun, size, w.get(4).copied().unwrap_or("disk"))?;
            dev.targets.insert(target, lun, unit);
            dev.targets.luns_changed(target);
            dev.rescan_event(target, lun).map_err(io)?;
        }
        Some("remove") => {
            let (target, lun) = (t(1)?, l(2)?);
            if !dev.targets.remove(target, lun) {
                return Err(format!("no LUN {target}:{lun}"));
            }
            dev.targets.luns_changed(target);
            dev.queue_event(
                VIRTIO_SCSI_T_TRANSPORT_RESET,
                target,
                lun,
                VIRTIO_SCSI_EVT_RESET_REMOVED,
            )
            .map_err(io)?;
        }
        Some("resize") => {
            let (target, lun) = (t(1)?, l(2)?);
            let size: u64 = num(w.get(3).ok_or("missing size")?, "size")?;
            if !dev.targets.resize(target, lun, size * MIB).map_err(io)? {
                return Err(format!("no LUN {target}:{lun}"));
            }
            // CAPACITY DATA HAS CHANGED: ASC in bits 0-7, ASCQ in 8-15.
            dev.queue_event(VIRTIO_SCSI_T_PARAM_CHANGE, target, lun, 0x2a | (0x09 << 8))
                .map_err(io)?;
        }
        Some("event") => {
            let kind: u32 = num(w.get(1).ok_or("missing type")?, "type")?;
            let reason: u32 = num(w.get(4).ok_or("missing reason")?, "reason")?;
            dev.queue_event(kind, t(2)?, l(3)?, reason).map_err(io)?;
        }
        Some("eventraw") => {
            let kind: u32 = num(w.get(1).ok_or("missing type")?, "type")?;
            let hex = w.get(2).ok_or("missing LUN bytes")?;
            let lun = u64::from_str_radix(hex, 16).map_err(|_| format!("bad LUN bytes {hex:?}"))?;
            let reason: u32 = num(w.get(3).ok_or("missing reason")?, "reason")?;
            dev.queue_raw_event(kind, lun.to_be_bytes(), reason)
                .map_err(io)?;
        }
        Some("reset") => {
            // Only once no driver uses the device: a request still kept
            // back would be answered on a ring set up anew.
            if dev.held() != 0 {
                return Err(format!("{} requests still held back", dev.held()));
            }
            let mut luns = Vec::new();
            for (t, l, size, kind) in initial {
                luns.push(((*t, *l), make_lun(*t, *l, *size, kind)?));
            }
            dev.targets.replace_all(luns);
            dev.reset_state();
        }
        Some("fault") => return fault_command(dev, &w[1..]),
        Some("storm") => {
            let n: u64 = num(w.get(1).ok_or("missing count")?, "count")?;
            dev.storm(n).map_err(io)?;
        }
        Some("flood") => {
            // N hot-add events for one LUN (which exists: each is a no-op
            // for the driver but the delivery).
            let n: u32 = num(w.get(1).ok_or("missing count")?, "count")?;
            let (target, lun) = (t(2)?, l(3)?);
            for _ in 0..n {
                dev.rescan_event(target, lun).map_err(io)?;
            }
        }
        Some("stats") => {
            let s = &dev.stats;
            let g = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            return Ok(format!(
                "ok commands {} tmfs {} events {} events_dropped {} malformed {} cdb_tail {} \
                 faults {} held {} pi_checked {} pi_errors {}",
                g(&s.commands),
                g(&s.tmfs),
                g(&s.events),
                g(&s.events_dropped),
                g(&s.malformed),
                g(&s.cdb_tail),
                dev.plan.lock().unwrap().committed,
                dev.held(),
                g(&s.pi_checked),
                g(&s.pi_errors)
            ));
        }
        _ => return Err(format!("unknown command {line:?}")),
    }
    Ok("ok".into())
}

/// `fault NAME [T L | all] [COUNT]`, `fault random SEED PERCENT [T L | all]`,
/// `fault clear`.
fn fault_command(dev: &Device, w: &[&str]) -> Result<String, String> {
    let scope = |w: &[&str]| -> Result<(Scope, usize), String> {
        match w.first().copied() {
            None | Some("all") => Ok((Scope::All, w.len().min(1))),
            Some(t) => {
                let l = w.get(1).ok_or("missing LUN")?;
                Ok((Scope::Lun(num(t, "target")?, num(l, "LUN")?), 2))
            }
        }
    };
    let mut plan = dev.plan.lock().unwrap();
    match w.first().copied() {
        Some("clear") => plan.clear(),
        Some("random") => {
            let seed: u64 = num(w.get(1).ok_or("missing seed")?, "seed")?;
            let percent: u32 = num(w.get(2).ok_or("missing percent")?, "percent")?;
            let (s, _) = scope(&w[3..])?;
            plan.set_random(seed, percent, s);
            eprintln!("vhost-user-scsi: random faults, seed {seed}, {percent}% of commands");
        }
        Some(name) => {
            let f = Fault::parse(name).ok_or_else(|| format!("unknown fault {name:?}"))?;
            let (s, used) = scope(&w[1..])?;
            let count = match w.get(1 + used) {
                Some(c) => Some(num::<u64>(c, "count")?).filter(|&c| c > 0),
                None => None,
            };
            plan.set(f, s, count);
        }
        None => return Err("fault needs a name, random or clear".into()),
    }
    Ok("ok".into())
}

fn serve_control(dev: Arc<Device>, listener: UnixListener, initial: Arc<LunSpecs>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let dev = dev.clone();
        let initial = initial.clone();
        std::thread::spawn(move || control_client(&dev, conn, &initial));
    }
}

fn control_client(dev: &Device, conn: UnixStream, initial: &LunSpecs) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let answer = match control_command(dev, initial, &line) {
            Ok(s) => s,
            Err(e) => format!("error: {e}"),
        };
        eprintln!("vhost-user-scsi: control: {line} -> {answer}");
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

fn run(a: Args) -> Result<(), String> {
    let targets = Arc::new(Targets::default());
    for (t, l, size, kind) in &a.luns {
        targets.insert(*t, *l, make_lun(*t, *l, *size, kind)?);
    }
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let dev = Arc::new(
        Device::new(a.profile, a.queues, a.queue_size, mem.clone(), targets)
            .map_err(|e| e.to_string())?,
    );
    let mut daemon = VhostUserDaemon::new("vhost-user-scsi".into(), dev.clone(), mem)
        .map_err(|e| format!("daemon: {e}"))?;
    let (fd, id) = dev.wake_listener();
    daemon.get_epoll_handlers()[0]
        .register_listener(fd, EventSet::IN, id)
        .map_err(|e| format!("listener: {e}"))?;
    if let Some(path) = &a.control {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).map_err(|e| format!("{path}: {e}"))?;
        let dev = dev.clone();
        let initial = Arc::new(a.luns.clone());
        std::thread::spawn(move || serve_control(dev, l, initial));
    }
    eprintln!(
        "vhost-user-scsi: profile {:?}, {} request queues of {}, {} LUNs, on {}",
        a.profile,
        a.queues,
        a.queue_size,
        a.luns.len(),
        a.socket
    );
    daemon.serve(&a.socket).map_err(|e| format!("serve: {e}"))?;
    eprintln!("vhost-user-scsi: front end gone, exiting");
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhost-user-scsi: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_undoes_what_the_control_socket_did() {
        let targets = Arc::new(Targets::default());
        let initial: LunSpecs = vec![(0, 0, 1, "disk".into())];
        targets.insert(0, 0, make_lun(0, 0, 1, "disk").unwrap());
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let dev = Device::new(Profile::Qemu, 1, 16, mem, targets).unwrap();
        let cmd = |line: &str| control_command(&dev, &initial, line);
        let write = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(dev.targets.execute(0, 0, &write, &[7; 512], 0).status, 0);
        cmd("add 1 2 1").unwrap();
        cmd("remove 0 0").unwrap();
        cmd("fault never-answer all").unwrap();
        assert!(dev.targets.get(0, 0).is_none() && dev.targets.get(1, 2).is_some());
        cmd("reset").unwrap();
        assert!(dev.targets.get(0, 0).is_some() && dev.targets.get(1, 2).is_none());
        assert_eq!(dev.plan.lock().unwrap().for_command(0, 0), None);
        let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            dev.targets.execute(0, 0, &read, &[], 512).data,
            vec![0; 512]
        );
        assert_eq!(
            cmd("stats").unwrap(),
            "ok commands 0 tmfs 0 events 0 events_dropped 0 malformed 0 cdb_tail 0 faults 0 \
             held 0 pi_checked 0 pi_errors 0"
        );
    }

    #[test]
    fn pi_luns_from_the_command_line_and_the_control_socket() {
        let inquiry = [0x12, 0, 0, 0, 36, 0];
        let protect = |t: &Targets, target, lun| t.execute(target, lun, &inquiry, &[], 36).data[5];
        let targets = Arc::new(Targets::default());
        let a = parse_args(
            ["--socket", "s", "--lun", "0:0:1:disk+pi", "--lun", "0:1:1"]
                .into_iter()
                .map(String::from),
        )
        .unwrap();
        for (t, l, size, kind) in &a.luns {
            targets.insert(*t, *l, make_lun(*t, *l, *size, kind).unwrap());
        }
        assert_eq!((protect(&targets, 0, 0), protect(&targets, 0, 1)), (1, 0));
        for bad in ["cdrom+pi", "null+pi", "disk+dif"] {
            assert!(make_lun(0, 0, 1, bad).is_err(), "{bad}");
        }
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let dev = Device::new(Profile::BidiPi, 1, 16, mem, targets).unwrap();
        control_command(&dev, &a.luns, "add 1 0 1 disk+pi").unwrap();
        assert_eq!(protect(&dev.targets, 1, 0), 1);
        assert!(control_command(&dev, &a.luns, "add 1 1 1 cdrom+pi").is_err());
        control_command(&dev, &a.luns, "reset").unwrap();
        assert_eq!(protect(&dev.targets, 0, 0), 1);
        let stats = control_command(&dev, &a.luns, "stats").unwrap();
        assert!(
            stats.ends_with(" held 0 pi_checked 0 pi_errors 0"),
            "{stats}"
        );
    }
}
