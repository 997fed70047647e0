// SPDX-License-Identifier: GPL-2.0
//! Faults the device can be told to commit: each one named, applied to the
//! commands of one LUN (or all), a given number of times or until cleared;
//! or a seeded random mix, which replays exactly from its seed.

use std::fmt;

/// One misbehaviour of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Used length beyond everything the driver made writable.
    UsedLenOver,
    /// Used length below the response header (the header is written).
    UsedLenShort,
    /// A response code no specification defines.
    UnknownResponse,
    /// A status byte that is no SAM status.
    GarbageStatus,
    /// `sense_len` above the 96 bytes of the format (96 written).
    SenseOver96,
    /// `sense_len` of 4 GiB.
    SenseOverBuffer,
    /// Residual above the transfer length.
    ResidOver,
    /// The command is never given back (until its queue is stopped: a
    /// device reset); TMFs naming it are answered as if it were done.
    NeverAnswer,
    /// The command is given back only after the next TMF to its target has
    /// been answered (the specification wants it before).
    AnswerAfterAbort,
    /// The command's head goes in the used ring twice.
    DuplicateUsed,
    /// The used index moves past the command's entry by entries the device
    /// never filled.
    UsedIdxJump,
    /// TMFs answered FUNCTION REJECTED.
    TmfRejected,
    /// TMFs answered with a code no specification defines.
    TmfUnknown,
    /// TMFs never given back (until the control queue is stopped).
    TmfNeverAnswer,
    /// Every event carries EVENTS_MISSED.
    EventsMissedAlways,
    /// The protection information a read returns has its guard tag
    /// inverted (the data itself is right).
    PiCorrupt,
}

impl Fault {
    /// The faults committed elsewhere: on TMFs and events.
    pub const OTHER: [Fault; 4] = [
        Fault::TmfRejected,
        Fault::TmfUnknown,
        Fault::TmfNeverAnswer,
        Fault::EventsMissedAlways,
    ];

    /// The faults in how a command is given back rather than in what its
    /// answer says.
    pub const RING: [Fault; 4] = [
        Fault::NeverAnswer,
        Fault::AnswerAfterAbort,
        Fault::DuplicateUsed,
        Fault::UsedIdxJump,
    ];

    /// The faults in the data a command returns.
    pub const DATA: [Fault; 1] = [Fault::PiCorrupt];

    /// Every fault, in the order of the matrix.
    pub fn all() -> impl Iterator<Item = Fault> {
        Fault::COMMAND
            .into_iter()
            .chain(Fault::RING)
            .chain(Fault::OTHER)
            .chain(Fault::DATA)
    }

    /// The faults a command response can carry (the random mode's pool).
    pub const COMMAND: [Fault; 7] = [
        Fault::UsedLenOver,
        Fault::UsedLenShort,
        Fault::UnknownResponse,
        Fault::GarbageStatus,
        Fault::SenseOver96,
        Fault::SenseOverBuffer,
        Fault::ResidOver,
    ];

    /// The fault's name on the command line and the control socket.
    pub fn name(self) -> &'static str {
        match self {
            Fault::UsedLenOver => "used-len-over",
            Fault::UsedLenShort => "used-len-short",
            Fault::UnknownResponse => "unknown-response",
            Fault::GarbageStatus => "garbage-status",
            Fault::SenseOver96 => "sense-over-96",
            Fault::SenseOverBuffer => "sense-over-buffer",
            Fault::ResidOver => "resid-over",
            Fault::NeverAnswer => "never-answer",
            Fault::AnswerAfterAbort => "answer-after-abort",
            Fault::DuplicateUsed => "duplicate-used",
            Fault::UsedIdxJump => "used-idx-jump",
            Fault::TmfRejected => "tmf-rejected",
            Fault::TmfUnknown => "tmf-unknown",
            Fault::TmfNeverAnswer => "tmf-never-answer",
            Fault::EventsMissedAlways => "events-missed-always",
            Fault::PiCorrupt => "pi-corrupt",
        }
    }

    /// Looks a fault up by name.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::all().find(|f| f.name() == name)
    }

    /// Whether the fault is committed on commands.
    pub fn on_commands(self) -> bool {
        Fault::COMMAND.contains(&self) || Fault::RING.contains(&self) || Fault::DATA.contains(&self)
    }

    /// Whether the fault is committed on TMFs.
    pub fn on_tmfs(self) -> bool {
        matches!(
            self,
            Fault::TmfRejected | Fault::TmfUnknown | Fault::TmfNeverAnswer
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A command response as the fault may rewrite it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// `sense_len` field.
    pub sense_len: u32,
    /// `resid` field.
    pub resid: u32,
    /// SAM status.
    pub status: u8,
    /// virtio-scsi response code.
    pub response: u8,
    /// Used length reported.
    pub used: u32,
}

impl Fault {
    /// Rewrites an answer; `writable` is every byte the driver made
    /// device-writable, `transfer` the data length of the command.
    pub fn apply(self, a: &mut Answer, writable: usize, transfer: usize) {
        match self {
            Fault::UsedLenOver => a.used = (writable as u32).saturating_add(4096),
            Fault::UsedLenShort => a.used = 5,
            Fault::UnknownResponse => a.response = 0x7e,
            Fault::GarbageStatus => a.status = 0xfe,
            Fault::SenseOver96 => a.sense_len = 200,
            Fault::SenseOverBuffer => a.sense_len = u32::MAX,
            Fault::ResidOver => a.resid = (transfer as u32).saturating_add(4096),
            _ => {}
        }
    }
}

/// A deterministic generator (xorshift64*): a seed replays the same faults.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift has no zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Which commands a plan applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every LUN.
    All,
    /// One LUN.
    Lun(u8, u16),
}

impl Scope {
    fn covers(self, target: u8, lun: u16) -> bool {
        match self {
            Scope::All => true,
            Scope::Lun(t, l) => (t, l) == (target, lun),
        }
    }
}

/// What the device does wrong, and how often.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    fixed: Option<(Fault, Scope, Option<u64>)>,
    random: Option<(Rng, u32, Scope)>,
    /// Faults committed so far (for `stats`).
    pub committed: u64,
}

impl Plan {
    /// Commits `fault` on the commands (or TMFs, or events) in `scope`,
    /// `count` times or until cleared.
    pub fn set(&mut self, fault: Fault, scope: Scope, count: Option<u64>) {
        self.fixed = Some((fault, scope, count));
        self.random = None;
    }

    /// Commits a random command fault on `percent` % of the commands in
    /// `scope`, drawn from `seed`.
    pub fn set_random(&mut self, seed: u64, percent: u32, scope: Scope) {
        self.random = Some((Rng::new(seed), percent.min(100), scope));
        self.fixed = None;
    }

    /// Stops committing faults.
    pub fn clear(&mut self) {
        self.fixed = None;
        self.random = None;
    }

    /// The fault to commit on the next command to (target, LUN), if any.
    pub fn for_command(&mut self, target: u8, lun: u16) -> Option<Fault> {
        if let Some((rng, percent, scope)) = &mut self.random {
            if !scope.covers(target, lun) {
                return None;
            }
            let draw = rng.next();
            if (draw % 100) as u32 >= *percent {
                return None;
            }
            let f = Fault::COMMAND[((draw >> 32) % Fault::COMMAND.len() as u64) as usize];
            self.committed += 1;
            return Some(f);
        }
        self.take(|f| f.on_commands(), Some((target, lun)))
    }

    /// Whether the next TMF to `target` is answered with `fault`.
    pub fn for_tmf(&mut self, target: u8, lun: u16) -> Option<Fault> {
        self.take(Fault::on_tmfs, Some((target, lun)))
    }

    /// Whether events carry EVENTS_MISSED regardless.
    pub fn events_missed_always(&mut self) -> bool {
        self.take(|f| f == Fault::EventsMissedAlways, None)
            .is_some()
    }

    fn take(&mut self, kind: impl Fn(Fault) -> bool, at: Option<(u8, u16)>) -> Option<Fault> {
        let (fault, scope, count) = self.fixed.as_mut()?;
        if !kind(*fault) || at.is_some_and(|(t, l)| !scope.covers(t, l)) {
            return None;
        }
        let fault = *fault;
        if let Some(n) = count {
            *n -= 1;
            if *n == 0 {
                self.fixed = None;
            }
        }
        self.committed += 1;
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            sense_len: 0,
            resid: 0,
            status: 0,
            response: 0,
            used: 108 + 4096,
        }
    }

    #[test]
    fn names_round_trip() {
        for f in Fault::all() {
            assert_eq!(Fault::parse(f.name()), Some(f));
        }
        assert_eq!(Fault::parse("nonsense"), None);
    }

    #[test]
    fn each_fault_encodes_what_it_says() {
        type Check = fn(&Answer) -> bool;
        let cases: [(Fault, Check); 7] = [
            (Fault::UsedLenOver, |a| a.used == 108 + 4096 + 4096),
            (Fault::UsedLenShort, |a| a.used < 12),
            (Fault::UnknownResponse, |a| a.response > 12),
            (Fault::GarbageStatus, |a| a.status == 0xfe),
            (Fault::SenseOver96, |a| a.sense_len > 96),
            (Fault::SenseOverBuffer, |a| a.sense_len == u32::MAX),
            (Fault::ResidOver, |a| a.resid > 4096),
        ];
        for (f, ok) in cases {
            let mut a = answer();
            f.apply(&mut a, 108 + 4096, 4096);
            assert!(ok(&a), "{f}: {a:?}");
        }
        // TMF, event and ring faults leave command answers alone.
        for f in Fault::OTHER.into_iter().chain(Fault::RING) {
            let mut a = answer();
            f.apply(&mut a, 108 + 4096, 4096);
            assert_eq!(a, answer(), "{f}");
        }
    }

    #[test]
    fn a_counted_fault_ends_and_a_scope_is_kept() {
        let mut p = Plan::default();
        p.set(Fault::ResidOver, Scope::Lun(0, 1), Some(2));
        assert_eq!(p.for_command(0, 0), None);
        assert_eq!(p.for_tmf(0, 1), None);
        assert_eq!(p.for_command(0, 1), Some(Fault::ResidOver));
        assert_eq!(p.for_command(0, 1), Some(Fault::ResidOver));
        assert_eq!(p.for_command(0, 1), None);
        assert_eq!(p.committed, 2);
        p.set(Fault::TmfRejected, Scope::All, None);
        assert_eq!(p.for_command(0, 1), None);
        assert_eq!(p.for_tmf(3, 0), Some(Fault::TmfRejected));
        p.set(Fault::NeverAnswer, Scope::Lun(0, 1), Some(1));
        assert_eq!(p.for_tmf(0, 1), None);
        assert_eq!(p.for_command(0, 1), Some(Fault::NeverAnswer));
        p.set(Fault::TmfNeverAnswer, Scope::All, Some(1));
        assert_eq!(p.for_command(0, 1), None);
        assert_eq!(p.for_tmf(0, 1), Some(Fault::TmfNeverAnswer));
        p.clear();
        assert_eq!(p.for_tmf(3, 0), None);
    }

    #[test]
    fn a_seed_replays() {
        let run = |seed| {
            let mut p = Plan::default();
            p.set_random(seed, 50, Scope::Lun(0, 0));
            (0..200).map(|_| p.for_command(0, 0)).collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let n = a.iter().filter(|f| f.is_some()).count();
        assert!((60..140).contains(&n), "{n} of 200 at 50%");
        // Every command fault turns up.
        for f in Fault::COMMAND {
            assert!(a.contains(&Some(f)), "{f} never drawn");
        }
    }
}
