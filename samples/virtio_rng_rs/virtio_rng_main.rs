// SPDX-License-Identifier: GPL-2.0

//! Virtio entropy device driver (virtio-rng, device id 4), in Rust.
//!
//! A sample of the abstractions of `drivers/scsi/virtio_scsi_rs/`: a second
//! driver on them, safe Rust only, that registers each device with the
//! hw_random core as `virtio_rng_rs.<n>`. It follows the C driver,
//! `drivers/char/hw_random/virtio-rng.c`: one virtqueue ("input") and one
//! 64-byte buffer that is always either with the device or holding data not
//! handed out yet; a read takes what the buffer holds, gives it back to the
//! device once empty, and waits for the device if the caller may wait.
//! Unlike C it has no suspend and resume.

use core::sync::atomic::{AtomicU32, Ordering};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, Mutex};
use kernel::{c_str, fmt, new_mutex};

/// The abstractions, from the driver's source files. The sample uses a few
/// of the items of `device`, `sync` and `virtio` (which needs `blk_mq` and
/// `scatterlist`); the driver's build checks the others for use. `hwrng` has no other user: it is checked here.
#[path = "../../drivers/scsi/virtio_scsi_rs/abstractions"]
mod abstractions {
    #[path = "../bindings.rs"]
    mod bindings;

    #[allow(dead_code, unused_imports)]
    pub(crate) mod blk_mq;
    #[allow(dead_code, unused_imports, unused_macros)]
    pub(crate) mod device;
    pub(crate) mod hwrng;
    #[allow(dead_code, unused_imports)]
    pub(crate) mod scatterlist;
    #[allow(dead_code, unused_imports)]
    pub(crate) mod sync;
    #[allow(dead_code, unused_imports)]
    pub(crate) mod virtio;
}

use abstractions::device::dev_err;
use abstractions::hwrng;
use abstractions::sync::Completion;
use abstractions::virtio::{
    self, Device, DeviceBuf, DeviceId, DriverDevice, Queue, QueueGuard, QueueInfo,
};

module! {
    type: VirtioRngModule,
    name: "virtio_rng_rs",
    author: "virtio-scsi-rs maintainers <maintainers@users.noreply.r-seed-b1144991.example>",
    description: "Virtio random number driver (Rust sample)",
    license: "GPL",
}

struct VirtioRngModule {
    _driver: Pin<KBox<virtio::Registration<VirtioRng>>>,
}

impl kernel::Module for VirtioRngModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _driver: KBox::pin_init(virtio::Registration::new(module), GFP_KERNEL)?,
        })
    }
}

/// The device type of an entropy source (`VIRTIO_ID_RNG`).
const VIRTIO_ID_RNG: u32 = 4;

/// Bytes the device fills per request: C's buffer on x86, and what the
/// hw_random core asks for at once there.
const BUF_LEN: u32 = 64;

virtio::virtio_device_table!(RNG_ID_TABLE, [DeviceId::new(VIRTIO_ID_RNG)]);

/// Numbers generator names: `virtio_rng_rs.<n>`, never reused while the
/// module is loaded (C takes the lowest free index instead).
static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

/// Where the one buffer is.
enum Entropy {
    /// With the device: a request is pending.
    Requested,
    /// Given back with `len` bytes, of which the first `pos` were handed out.
    Filled {
        buf: KBox<DeviceBuf>,
        len: usize,
        pos: usize,
    },
    /// With neither: the queue refused it (broken, or torn down).
    Idle(KBox<DeviceBuf>),
}

/// What the queue's lock protects.
struct State {
    entropy: Entropy,
    /// The device is being removed: reads end (`hwrng_removed` in C).
    removed: bool,
}

/// The device as the virtqueue callback and the hw_random core's reads see
/// it.
#[pin_data]
struct Rng {
    #[pin]
    vq: Queue<KBox<DeviceBuf>, State>,
    /// Signalled each time the device gives the buffer back, and for good
    /// when the device is removed.
    #[pin]
    have_data: Completion,
}

impl Rng {
    /// Gives `buf` to the device (`request_entropy()`); the device is
    /// notified once `vq` is unlocked.
    fn request(vq: &mut QueueGuard<'_, KBox<DeviceBuf>, State>, buf: KBox<DeviceBuf>) {
        match vq.add(buf) {
            Ok(()) => {
                vq.data().entropy = Entropy::Requested;
                vq.kick_prepare();
            }
            Err((buf, _)) => vq.data().entropy = Entropy::Idle(buf),
        }
    }

    /// The device gave the buffer back (`random_recv_done()`).
    fn recv_done(&self) {
        let mut vq = self.vq.lock();
        // Spurious callbacks happen (a shared interrupt line).
        let Some((buf, len)) = vq.get_buf() else {
            return;
        };
        // The device may claim more than the buffer holds.
        let len = (len as usize).min(buf.bytes().len());
        vq.data().entropy = Entropy::Filled { buf, len, pos: 0 };
        drop(vq);
        self.have_data.complete();
    }

    /// Ends every read, present and future: the device is going away.
    fn stop(&self) {
        self.vq.lock().data().removed = true;
        self.have_data.complete_all();
    }
}

impl hwrng::Operations for Rng {
    fn read(&self, out: &mut [u8], wait: bool) -> Result<usize> {
        let mut copied = 0;
        loop {
            let mut vq = self.vq.lock();
            if vq.data().removed {
                return if copied == 0 { Err(ENODEV) } else { Ok(copied) };
            }
            match core::mem::replace(&mut vq.data().entropy, Entropy::Requested) {
                Entropy::Requested => {}
                Entropy::Filled { buf, len, pos } => {
                    let from = buf.bytes().get(pos..len).unwrap_or(&[]);
                    let n = from.len().min(out.len() - copied);
                    out[copied..copied + n].copy_from_slice(&from[..n]);
                    copied += n;
                    if pos + n < len {
                        vq.data().entropy = Entropy::Filled {
                            buf,
                            len,
                            pos: pos + n,
                        };
                    } else {
                        // All handed out: ask the device for more at once.
                        Self::request(&mut vq, buf);
                    }
                }
                Entropy::Idle(buf) => Self::request(&mut vq, buf),
            }
            let pending = matches!(vq.data().entropy, Entropy::Requested);
            // Unlocks, then notifies the device of a request made above.
            drop(vq);
            if copied == out.len() || !wait {
                return Ok(copied);
            }
            if !pending {
                // Nothing to wait for: the queue took no buffer.
                return if copied == 0 { Err(EIO) } else { Ok(copied) };
            }
            if let Err(e) = self.have_data.wait_killable() {
                return if copied == 0 { Err(e) } else { Ok(copied) };
            }
        }
    }
}

/// The driver data.
#[pin_data]
struct VirtioRng {
    rng: Arc<Rng>,
    /// Registered in `scan`, once the device can answer; unregistered in
    /// `remove`.
    #[pin]
    hwrng: Mutex<Option<Pin<KBox<hwrng::Registration<Rng>>>>>,
}

#[vtable]
impl virtio::Driver for VirtioRng {
    type Data = Pin<KBox<Self>>;

    const NAME: &'static CStr = c_str!("virtio_rng_rs");
    const ID_TABLE: &'static [DeviceId] = &RNG_ID_TABLE;
    const FEATURES: &'static [u32] = &[];

    fn probe(dev: &DriverDevice<'_, Self>) -> Result<Self::Data> {
        let info = QueueInfo {
            name: c_str!("input"),
            callback: true,
        };
        let raw = dev
            .find_vqs(core::slice::from_ref(&info), 0)?
            .into_iter()
            .next()
            .ok_or(EINVAL)?;
        let buf = KBox::new(DeviceBuf::new(BUF_LEN)?, GFP_KERNEL)?;
        let state = State {
            entropy: Entropy::Requested,
            removed: false,
        };
        let rng = Arc::pin_init(
            pin_init!(Rng {
                vq <- Queue::new(raw, state),
                have_data <- Completion::new(),
            }),
            GFP_KERNEL,
        )?;
        // A request is always pending, as in C. The device hears of it in
        // `scan`: no notification before DRIVER_OK.
        let added = rng.vq.lock().add(buf);
        if let Err((_, e)) = added {
            return Err(e);
        }
        KBox::pin_init(
            pin_init!(Self {
                rng,
                hwrng <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )
    }

    fn scan(dev: &Device, data: Pin<&Self>) {
        data.rng.vq.lock().kick_prepare();
        let index = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
        let reg = CString::try_from_fmt(fmt!("virtio_rng_rs.{index}")).and_then(|name| {
            KBox::pin_init(hwrng::Registration::new(name, data.rng.clone()), GFP_KERNEL)
        });
        match reg {
            Ok(reg) => *data.hwrng.lock() = Some(reg),
            Err(e) => dev_err!(dev, "cannot register with hw_random: {e:?}\n"),
        }
    }

    fn remove(_dev: &Device, data: Pin<&Self>) {
        // Reads end first, then the generator goes (unregistering waits for
        // the read in progress); the abstraction then resets the device,
        // which gives the buffer back, before anything is freed.
        data.rng.stop();
        let reg = data.hwrng.lock().take();
        drop(reg);
    }

    fn vq_done(data: Pin<&Self>, _index: u32) {
        data.rng.recv_done();
    }
}
