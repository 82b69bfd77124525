//! The `balloon` scenario (guest side in `oxguest/virtio_balloon.h`): the lines it prints, what
//! the host does when it sees them, and their parsers.
//!
//! Sequence: the device line ([`parse_balloon_device_line`]); with `balloon-touch=M`,
//! [`parse_balloon_touched_line`]; then [`BALLOON_WAITING`]: the host sets a target of N pages
//! (within 5 s); [`parse_balloon_inflated_line`] once the guest gave N pages; then
//! [`parse_balloon_waiting_to_fall_line`]: the host lowers the target to T < N (within 10 s);
//! finally `TEST balloon PASS inflated=N deflated=N-T` ([`parse_balloon_details`]).

use super::blk::key_values;
use super::parse_bdf;

/// Printed before the guest polls for a target: set one (`num_pages` > 0) after this line.
pub const BALLOON_WAITING: &str = "oxguest: balloon waiting for a target";
/// The option that makes the guest touch that many MiB of memory first (`balloon-touch=M`).
pub const BALLOON_TOUCH_OPTION: &str = "balloon-touch";
/// FAIL reason without a virtio-balloon function.
pub const BALLOON_NO_DEVICE: &str = "no virtio-balloon device";
/// Largest target (and `balloon-touch=`, in pages) the guest takes: 1 GiB.
pub const BALLOON_MAX_PAGES: u32 = 262_144;
/// PFNs per inflate or deflate buffer the guest sends.
pub const BALLOON_PFNS_PER_BUFFER: u32 = 256;
/// Prefix of the device line ([`parse_balloon_device_line`]).
pub const BALLOON_DEVICE_LINE_PREFIX: &str = "oxguest: virtio-balloon ";

const TOUCHED_PREFIX: &str = "oxguest: balloon touched ";
const INFLATED_PREFIX: &str = "oxguest: balloon inflated ";
const FALL_PREFIX: &str = "oxguest: balloon waiting for the target to fall below ";

/// `oxguest: virtio-balloon <bdf> features=0x<hex> queue_size=<n> stats=<0|1> num_pages=<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalloonDeviceLine {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    /// Negotiated feature bits.
    pub features: u64,
    pub queue_size: u16,
    /// The driver uses the stats queue.
    pub stats: bool,
    /// The target when the driver started.
    pub num_pages: u32,
}

/// Parses a [`BalloonDeviceLine`]; `None` for any other line.
pub fn parse_balloon_device_line(line: &str) -> Option<BalloonDeviceLine> {
    let rest = line.strip_prefix(BALLOON_DEVICE_LINE_PREFIX)?;
    let (bdf, fields) = rest.split_once(' ')?;
    let (bus, device, function) = parse_bdf(bdf)?;
    let keys = ["features", "queue_size", "stats", "num_pages"];
    let [features, queue_size, stats, num_pages] = key_values(fields, keys)?;
    Some(BalloonDeviceLine {
        bus,
        device,
        function,
        features: u64::from_str_radix(features.strip_prefix("0x")?, 16).ok()?,
        queue_size: queue_size.parse().ok()?,
        stats: match stats {
            "0" => false,
            "1" => true,
            _ => return None,
        },
        num_pages: num_pages.parse().ok()?,
    })
}

fn number_between<T: std::str::FromStr>(line: &str, prefix: &str, suffix: &str) -> Option<T> {
    let rest = line.trim_end().strip_prefix(prefix)?;
    let digits = rest.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// MiB of `oxguest: balloon touched <M> MiB`.
pub fn parse_balloon_touched_line(line: &str) -> Option<u64> {
    number_between(line, TOUCHED_PREFIX, " MiB")
}

/// Pages of `oxguest: balloon inflated <N> pages`: now lower the target.
pub fn parse_balloon_inflated_line(line: &str) -> Option<u32> {
    number_between(line, INFLATED_PREFIX, " pages")
}

/// N of `oxguest: balloon waiting for the target to fall below <N>`.
pub fn parse_balloon_waiting_to_fall_line(line: &str) -> Option<u32> {
    number_between(line, FALL_PREFIX, "")
}

/// `(inflated, deflated)` of `TEST balloon PASS inflated=<N> deflated=<M>`'s details.
pub fn parse_balloon_details(details: &str) -> Option<(u32, u32)> {
    let [inflated, deflated] = key_values(details, ["inflated", "deflated"])?;
    Some((inflated.parse().ok()?, deflated.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::c_define;

    const HEADER: &str = include_str!("../../oxguest/virtio_balloon.h");

    #[test]
    fn constants_match_the_guest() {
        let define = |name| c_define(HEADER, name).unwrap_or_else(|| panic!("{name} defined"));

        assert_eq!(
            define("BALLOON_WAITING_LINE"),
            format!("{BALLOON_WAITING:?}")
        );
        assert_eq!(define("BALLOON_MAX_PAGES"), format!("{BALLOON_MAX_PAGES}u"));
        assert_eq!(
            define("BALLOON_PFNS_PER_BUFFER"),
            BALLOON_PFNS_PER_BUFFER.to_string()
        );
    }

    #[test]
    fn the_device_line_parses() {
        let line = "oxguest: virtio-balloon 00:03.0 features=0x100000002 queue_size=64 \
                    stats=1 num_pages=0";

        let parsed = parse_balloon_device_line(line).unwrap();

        assert_eq!(
            parsed,
            BalloonDeviceLine {
                bus: 0,
                device: 3,
                function: 0,
                features: 0x1_0000_0002,
                queue_size: 64,
                stats: true,
                num_pages: 0,
            }
        );
        assert!(parse_balloon_device_line(&line.replace("stats=1", "stats=2")).is_none());
        assert!(parse_balloon_device_line(&format!("{line} extra=1")).is_none());
    }

    #[test]
    fn progress_lines_and_details_parse() {
        assert_eq!(
            parse_balloon_touched_line("oxguest: balloon touched 64 MiB"),
            Some(64)
        );
        assert_eq!(
            parse_balloon_inflated_line("oxguest: balloon inflated 12288 pages\n"),
            Some(12288)
        );
        assert_eq!(
            parse_balloon_waiting_to_fall_line(
                "oxguest: balloon waiting for the target to fall below 12288"
            ),
            Some(12288)
        );
        assert_eq!(
            parse_balloon_details("inflated=12288 deflated=4096"),
            Some((12288, 4096))
        );
        assert_eq!(
            parse_balloon_inflated_line("oxguest: balloon inflated pages"),
            None
        );
        assert_eq!(parse_balloon_details("inflated=1"), None);
    }
}
