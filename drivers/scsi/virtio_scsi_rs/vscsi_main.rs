// SPDX-License-Identifier: GPL-2.0

//! Virtio SCSI host adapter driver, in Rust.
//!
//! The crate root: module declaration and registration only. See `Kbuild` for
//! how the layers below depend on each other.

use kernel::prelude::*;

mod abstractions;
mod driver;
// The protocol module describes the whole wire format, shared with the host
// test crate; the driver does not use every definition.
#[allow(dead_code)]
mod protocol;

use abstractions::virtio;

module! {
    type: VirtioScsiModule,
    name: "virtio_scsi_rs",
    author: "virtio-scsi-rs maintainers <maintainers@users.noreply.r-seed-b1144991.example>",
    description: "Virtio SCSI HBA driver (Rust)",
    license: "GPL",
}

struct VirtioScsiModule {
    driver: Option<Pin<KBox<virtio::Registration<driver::VirtioScsi>>>>,
}

impl kernel::Module for VirtioScsiModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        driver::TEMPLATE.init()?;
        match KBox::pin_init(virtio::Registration::new(module), GFP_KERNEL) {
            Ok(driver) => Ok(Self {
                driver: Some(driver),
            }),
            Err(e) => {
                driver::TEMPLATE.exit();
                Err(e)
            }
        }
    }
}

impl Drop for VirtioScsiModule {
    fn drop(&mut self) {
        // Unregister first: every host goes away before the template's
        // debugfs directory does.
        self.driver.take();
        driver::TEMPLATE.exit();
    }
}
