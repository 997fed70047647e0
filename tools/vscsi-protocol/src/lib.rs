// SPDX-License-Identifier: GPL-2.0

//! The module's protocol layer (`drivers/scsi/virtio_scsi_rs/protocol.rs`),
//! compiled unchanged for the host so that `cargo test` runs its unit tests.

#![no_std]

#[cfg(test)]
extern crate std;

#[allow(dead_code)]
#[path = "../../../drivers/scsi/virtio_scsi_rs/protocol.rs"]
mod protocol;

/// `protocol.rs` against `virtio-bindings` (bindgen output of the Linux UAPI
/// header `virtio_scsi.h`): every size, offset and constant the driver puts on
/// the wire, from a source that is not ours.
#[cfg(test)]
mod against_virtio_bindings {
    use super::protocol::*;
    use core::mem::{offset_of, size_of};
    use virtio_bindings::virtio_scsi as vb;

    #[test]
    fn sizes() {
        assert_eq!(CMD_REQ_SIZE, size_of::<vb::virtio_scsi_cmd_req>());
        assert_eq!(CMD_REQ_PI_SIZE, size_of::<vb::virtio_scsi_cmd_req_pi>());
        assert_eq!(CMD_RESP_SIZE, size_of::<vb::virtio_scsi_cmd_resp>());
        assert_eq!(CMD_RESP_FIXED, offset_of!(vb::virtio_scsi_cmd_resp, sense));
        assert_eq!(TMF_REQ_SIZE, size_of::<vb::virtio_scsi_ctrl_tmf_req>());
        assert_eq!(TMF_RESP_SIZE, size_of::<vb::virtio_scsi_ctrl_tmf_resp>());
        assert_eq!(EVENT_SIZE as usize, size_of::<vb::virtio_scsi_event>());
        assert_eq!(size_of::<Config>(), size_of::<vb::virtio_scsi_config>());
        assert_eq!(CDB_SIZE, vb::VIRTIO_SCSI_CDB_SIZE);
        assert_eq!(SENSE_SIZE, vb::VIRTIO_SCSI_SENSE_SIZE);
    }

    #[test]
    fn config_offsets() {
        use config_offset::*;
        assert_eq!(NUM_QUEUES, offset_of!(vb::virtio_scsi_config, num_queues));
        assert_eq!(SEG_MAX, offset_of!(vb::virtio_scsi_config, seg_max));
        assert_eq!(MAX_SECTORS, offset_of!(vb::virtio_scsi_config, max_sectors));
        assert_eq!(CMD_PER_LUN, offset_of!(vb::virtio_scsi_config, cmd_per_lun));
        assert_eq!(
            EVENT_INFO_SIZE,
            offset_of!(vb::virtio_scsi_config, event_info_size)
        );
        assert_eq!(SENSE_SIZE, offset_of!(vb::virtio_scsi_config, sense_size));
        assert_eq!(CDB_SIZE, offset_of!(vb::virtio_scsi_config, cdb_size));
        assert_eq!(MAX_CHANNEL, offset_of!(vb::virtio_scsi_config, max_channel));
        assert_eq!(MAX_TARGET, offset_of!(vb::virtio_scsi_config, max_target));
        assert_eq!(MAX_LUN, offset_of!(vb::virtio_scsi_config, max_lun));
    }

    #[test]
    fn request_layout() {
        let lun = [1, 2, 0x40, 3, 0, 0, 0, 0];
        let cdb = [0x28, 0, 0, 0, 0, 9, 0, 0, 1, 0];
        let mut field = [0u8; CDB_FIELD_SIZE];
        field[..cdb.len()].copy_from_slice(&cdb);
        let mut b = [0xaau8; 64];
        assert_eq!(
            write_cmd_req(&mut b, &lun, 0x1122, &field),
            Some(CMD_REQ_SIZE)
        );
        let o = offset_of!(vb::virtio_scsi_cmd_req, lun);
        assert_eq!(b[o..o + 8], lun);
        let o = offset_of!(vb::virtio_scsi_cmd_req, tag);
        assert_eq!(b[o..o + 8], 0x1122u64.to_le_bytes());
        assert_eq!(
            b[offset_of!(vb::virtio_scsi_cmd_req, task_attr)],
            vb::VIRTIO_SCSI_S_SIMPLE as u8
        );
        let o = offset_of!(vb::virtio_scsi_cmd_req, cdb);
        assert_eq!(b[o..o + cdb.len()], cdb);
        assert!(b[o + cdb.len()..CMD_REQ_SIZE].iter().all(|&x| x == 0));

        let mut b = [0xaau8; 64];
        assert_eq!(
            write_cmd_req_pi(&mut b, &lun, 7, 0x10, 0x20, &field),
            Some(CMD_REQ_PI_SIZE)
        );
        let o = offset_of!(vb::virtio_scsi_cmd_req_pi, pi_bytesout);
        assert_eq!(b[o..o + 4], 0x10u32.to_le_bytes());
        let o = offset_of!(vb::virtio_scsi_cmd_req_pi, pi_bytesin);
        assert_eq!(b[o..o + 4], 0x20u32.to_le_bytes());
        let o = offset_of!(vb::virtio_scsi_cmd_req_pi, cdb);
        assert_eq!(b[o..o + cdb.len()], cdb);

        let mut t = [0u8; TMF_REQ_SIZE];
        write_tmf_req(&mut t, Tmf::LogicalUnitReset, &lun, 0x33);
        let o = offset_of!(vb::virtio_scsi_ctrl_tmf_req, type_);
        assert_eq!(t[o..o + 4], vb::VIRTIO_SCSI_T_TMF.to_le_bytes());
        let o = offset_of!(vb::virtio_scsi_ctrl_tmf_req, subtype);
        assert_eq!(
            t[o..o + 4],
            vb::VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET.to_le_bytes()
        );
        let o = offset_of!(vb::virtio_scsi_ctrl_tmf_req, lun);
        assert_eq!(t[o..o + 8], lun);
        let o = offset_of!(vb::virtio_scsi_ctrl_tmf_req, tag);
        assert_eq!(t[o..o + 8], 0x33u64.to_le_bytes());
    }

    #[test]
    fn response_and_event_layout() {
        let mut r = [0u8; CMD_RESP_SIZE];
        let put = |r: &mut [u8], off: usize, v: &[u8]| r[off..off + v.len()].copy_from_slice(v);
        put(
            &mut r,
            offset_of!(vb::virtio_scsi_cmd_resp, sense_len),
            &18u32.to_le_bytes(),
        );
        put(
            &mut r,
            offset_of!(vb::virtio_scsi_cmd_resp, resid),
            &512u32.to_le_bytes(),
        );
        put(&mut r, offset_of!(vb::virtio_scsi_cmd_resp, status), &[2]);
        put(
            &mut r,
            offset_of!(vb::virtio_scsi_cmd_resp, response),
            &[vb::VIRTIO_SCSI_S_BUSY as u8],
        );
        let p = parse_cmd_resp(&r, CMD_RESP_SIZE as u32, 4096).unwrap();
        assert_eq!((p.sense_len, p.resid, p.status), (18, 512, 2));
        assert_eq!(p.response, vb::VIRTIO_SCSI_S_BUSY as u8);

        let mut e = [0u8; 16];
        let o = offset_of!(vb::virtio_scsi_event, event);
        e[o..o + 4].copy_from_slice(&vb::VIRTIO_SCSI_T_TRANSPORT_RESET.to_le_bytes());
        let o = offset_of!(vb::virtio_scsi_event, lun);
        e[o..o + 8].copy_from_slice(&[1, 4, 0, 2, 0, 0, 0, 0]);
        let o = offset_of!(vb::virtio_scsi_event, reason);
        e[o..o + 4].copy_from_slice(&vb::VIRTIO_SCSI_EVT_RESET_REMOVED.to_le_bytes());
        let ev = parse_event(&e).unwrap();
        assert_eq!(
            ev.action,
            EventAction::RemoveDevice {
                target: 4,
                lun: 2,
                then_scan_target: false
            }
        );
    }

    #[test]
    fn constants() {
        assert_eq!(feature::INOUT, vb::VIRTIO_SCSI_F_INOUT);
        assert_eq!(feature::HOTPLUG, vb::VIRTIO_SCSI_F_HOTPLUG);
        assert_eq!(feature::CHANGE, vb::VIRTIO_SCSI_F_CHANGE);
        assert_eq!(feature::T10_PI, vb::VIRTIO_SCSI_F_T10_PI);
        let codes = [
            (response::OK, vb::VIRTIO_SCSI_S_OK),
            (response::OVERRUN, vb::VIRTIO_SCSI_S_OVERRUN),
            (response::ABORTED, vb::VIRTIO_SCSI_S_ABORTED),
            (response::BAD_TARGET, vb::VIRTIO_SCSI_S_BAD_TARGET),
            (response::RESET, vb::VIRTIO_SCSI_S_RESET),
            (response::BUSY, vb::VIRTIO_SCSI_S_BUSY),
            (
                response::TRANSPORT_FAILURE,
                vb::VIRTIO_SCSI_S_TRANSPORT_FAILURE,
            ),
            (response::TARGET_FAILURE, vb::VIRTIO_SCSI_S_TARGET_FAILURE),
            (response::NEXUS_FAILURE, vb::VIRTIO_SCSI_S_NEXUS_FAILURE),
            (response::FAILURE, vb::VIRTIO_SCSI_S_FAILURE),
            (
                response::FUNCTION_SUCCEEDED,
                vb::VIRTIO_SCSI_S_FUNCTION_SUCCEEDED,
            ),
            (
                response::FUNCTION_REJECTED,
                vb::VIRTIO_SCSI_S_FUNCTION_REJECTED,
            ),
            (response::INCORRECT_LUN, vb::VIRTIO_SCSI_S_INCORRECT_LUN),
        ];
        for (ours, theirs) in codes {
            assert_eq!(u32::from(ours), theirs);
        }
        // The sentinel is no code a device can send.
        assert!(codes
            .iter()
            .all(|&(_, c)| c != u32::from(RESPONSE_UNWRITTEN)));
        assert_eq!(event::NO_EVENT, vb::VIRTIO_SCSI_T_NO_EVENT);
        assert_eq!(event::TRANSPORT_RESET, vb::VIRTIO_SCSI_T_TRANSPORT_RESET);
        assert_eq!(event::ASYNC_NOTIFY, vb::VIRTIO_SCSI_T_ASYNC_NOTIFY);
        assert_eq!(event::PARAM_CHANGE, vb::VIRTIO_SCSI_T_PARAM_CHANGE);
        assert_eq!(event::EVENTS_MISSED, vb::VIRTIO_SCSI_T_EVENTS_MISSED);
        assert_eq!(event::RESET_HARD, vb::VIRTIO_SCSI_EVT_RESET_HARD);
        assert_eq!(event::RESET_RESCAN, vb::VIRTIO_SCSI_EVT_RESET_RESCAN);
        assert_eq!(event::RESET_REMOVED, vb::VIRTIO_SCSI_EVT_RESET_REMOVED);
        assert_eq!(T_TMF, vb::VIRTIO_SCSI_T_TMF);
        assert_eq!(Tmf::AbortTask as u32, vb::VIRTIO_SCSI_T_TMF_ABORT_TASK);
        assert_eq!(
            Tmf::ItNexusReset as u32,
            vb::VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET
        );
        assert_eq!(
            Tmf::LogicalUnitReset as u32,
            vb::VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET
        );
        assert_eq!(u32::from(TASK_ATTR_SIMPLE), vb::VIRTIO_SCSI_S_SIMPLE);
        assert_eq!(VIRTIO_ID_SCSI, virtio_bindings::virtio_ids::VIRTIO_ID_SCSI);
    }
}
