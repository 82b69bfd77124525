//! virtio-net cards on TAP devices: opening the TAP (by name or an inherited descriptor),
//! the card's MAC address, and the event-loop watch that moves frames the host sends into
//! the guest's receive queue.
//!
//! The TAP is watched edge-triggered: the device reads it until it is empty or until the
//! guest has no receive buffers left, in which case the driver's next notification of the
//! receive queue resumes the reading (see `virtio::net`), so a guest that does not take its
//! frames never makes the loop spin.
//!
//! Rate limits (`bw=`, `ops=`): one limiter for each direction, both with the same rates,
//! token buckets refilled each second that start full (a second's worth may go at once), as
//! the disks'. A throttled receive queue is resumed by a timer of the TAP's watch (or of the
//! queue's own notification, see `ioevents`), a throttled transmit queue by its queue's
//! retry timer.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use net_util::Tap;
use storage::{RateLimiter, TokenBucket};
use virtio::VirtioDevice;
use virtio::net::{Net, NetCounters, NetOptions, RX_QUEUE, TapBackend, random_mac};
use vmm_sys_util::timerfd::TimerFd;

use crate::config::NetConfig;
use crate::error::VmmError;
use crate::ioevents::QueueNotify;

/// The virtio-net device a TAP feeds.
pub type NetHandle = Arc<Mutex<virtio::pci::VirtioPciDevice<Net>>>;

/// A card that is not built yet: its device model, the TAP descriptor to watch, its counters.
pub struct NetParts {
    /// The device model.
    pub device: Net,
    /// What the event loop watches for the card.
    pub watch: TapWatch,
    /// Its traffic counters.
    pub counters: Arc<NetCounters>,
}

fn failed(config: &NetConfig, index: usize) -> impl Fn(String) -> VmmError + '_ {
    move |problem| VmmError::InvalidOption {
        option: "--net",
        value: config.name(index),
        problem: format!("(card {index}) {problem}"),
    }
}

fn open_tap(config: &NetConfig) -> Result<Tap, String> {
    match (&config.tap, config.fd) {
        (Some(name), None) => Tap::open(name).map_err(|e| e.to_string()),
        (None, Some(fd)) => {
            // SAFETY: F_GETFD takes no pointer; it only asks whether `fd` is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(format!(
                    "file descriptor {fd} is not open: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: the descriptor is open and the user handed it to oxvmm (`fd=N`) for it
            // to own; nothing else in oxvmm uses it. Tap::from_fd checks it is a TAP.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            Tap::from_fd(owned).map_err(|e| e.to_string())
        }
        _ => Err("exactly one of tap=NAME and fd=N is required".to_string()),
    }
}

/// One direction's limiter: token buckets of a second's worth, refilled each second.
fn rate_limiter(config: &NetConfig) -> Result<Option<RateLimiter>, String> {
    let bucket = |per_second: Option<u64>| {
        per_second
            .map(|n| TokenBucket::new(n, 0, Duration::from_secs(1)))
            .transpose()
            .map_err(|e| e.to_string())
    };
    let bytes = bucket(config.bw)?;
    let frames = bucket(config.ops)?;
    Ok((bytes.is_some() || frames.is_some()).then(|| RateLimiter::new(bytes, frames)))
}

/// Opens card `index`'s TAP and builds its device model.
pub fn net_parts(config: &NetConfig, index: usize) -> Result<NetParts, VmmError> {
    let failed = failed(config, index);
    let mac = match config.mac_bytes().map_err(|e| failed(e.to_string()))? {
        Some(mac) => mac,
        None => random_mac().map_err(|e| failed(format!("cannot draw a MAC address: {e}")))?,
    };
    let rx_limiter = rate_limiter(config).map_err(&failed)?;
    let tx_limiter = rate_limiter(config).map_err(&failed)?;
    let tap = open_tap(config).map_err(&failed)?;
    let watch = TapWatch {
        tap: tap
            .try_clone()
            .map_err(|e| failed(format!("cannot duplicate the TAP descriptor: {e}")))?,
        retry: TimerFd::new().map_err(|e| failed(format!("cannot create a timer: {e}")))?,
    };
    let offloads = tap.supports_all_offloads();
    tracing::info!(
        tap = tap.name(),
        offloads,
        "virtio-net card {index}: MAC {}",
        format_mac(mac)
    );
    let counters = Arc::new(NetCounters::default());
    let device = Net::new(
        Box::new(TapBackend(tap)),
        NetOptions {
            mac,
            offloads,
            counters: counters.clone(),
            rx_limiter,
            tx_limiter,
        },
    );
    Ok(NetParts {
        device,
        watch,
        counters,
    })
}

/// Refuses to restore cards given as inherited descriptors: a card on a TAP named in the
/// configuration opens it again, but descriptor N of the first process means nothing (or
/// something else) in the restoring one.
pub fn check_restorable(nets: &[NetConfig]) -> Result<(), String> {
    match nets.iter().enumerate().find(|(_, net)| net.fd.is_some()) {
        Some((index, net)) => Err(format!(
            "virtio-net card {} was given as an inherited descriptor (fd=N), which a new \
             process does not have",
            net.name(index)
        )),
        None => Ok(()),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The descriptors the event loop watches for a card.
pub struct TapWatch {
    /// A second descriptor of the TAP queue.
    tap: File,
    /// Armed while the receive queue is throttled.
    retry: TimerFd,
}

/// Has the card read its TAP whenever the host sends frames, and again when its receive
/// rate limiter lets the next frame go.
pub struct TapWatcher {
    tap: File,
    retry: TimerFd,
    device: NetHandle,
}

impl TapWatcher {
    /// Watches `watch` (from [`net_parts`]) for `device`.
    pub fn new(watch: TapWatch, device: NetHandle) -> Self {
        TapWatcher {
            tap: watch.tap,
            retry: watch.retry,
            device,
        }
    }

    /// Arms the retry timer for `until`, or leaves it alone when not throttled.
    fn arm_retry(&mut self, until: Option<Instant>) {
        let Some(at) = until else { return };
        // A zero timeout would disarm the timer: wait at least a microsecond.
        let wait = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        if let Err(e) = self.retry.reset(wait, None) {
            tracing::warn!("cannot arm a TAP's receive rate-limit timer: {e}");
        }
    }
}

impl MutEventSubscriber for TapWatcher {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.retry.as_raw_fd() && self.retry.wait().is_err() {
            return;
        }
        let until = {
            let mut device = self.device.lock().unwrap_or_else(|e| e.into_inner());
            // Ignored by the transport while the driver has not started the device: the
            // frames wait in the TAP until its first receive notification.
            QueueNotify::notify_queue(&mut *device, RX_QUEUE);
            device.device().queue_throttled_until(RX_QUEUE)
        };
        self.arm_retry(until);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let tap = Events::new_raw(
            self.tap.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        );
        let retry = Events::new_raw(self.retry.as_raw_fd(), EventSet::IN);
        for events in [tap, retry] {
            if let Err(e) = ops.add(events) {
                tracing::error!("cannot watch a TAP: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_written_as_colon_separated_hex() {
        assert_eq!(format_mac([2, 0xab, 0, 1, 0x10, 0xff]), "02:ab:00:01:10:ff");
    }

    #[test]
    fn only_cards_on_named_taps_can_be_restored() {
        let named = NetConfig {
            tap: Some("tap0".into()),
            ..NetConfig::default()
        };
        let inherited = NetConfig {
            fd: Some(7),
            id: Some("wan".into()),
            ..NetConfig::default()
        };

        let ok = check_restorable(std::slice::from_ref(&named));
        let refused = check_restorable(&[named, inherited]).unwrap_err();

        assert_eq!(ok, Ok(()));
        assert!(
            refused.contains("wan") && refused.contains("fd=N"),
            "{refused}"
        );
    }

    #[test]
    fn rate_limits_give_each_direction_its_buckets() {
        let config = NetConfig {
            tap: Some("tap0".into()),
            bw: Some(1000),
            ops: Some(10),
            ..NetConfig::default()
        };

        let limiter = rate_limiter(&config).unwrap().unwrap();
        let unlimited = rate_limiter(&NetConfig::default()).unwrap();

        assert_eq!(limiter.bytes().map(TokenBucket::size), Some(1000));
        assert_eq!(limiter.ops().map(TokenBucket::size), Some(10));
        assert_eq!(
            limiter.bytes().map(TokenBucket::refill_period),
            Some(Duration::from_secs(1))
        );
        assert!(unlimited.is_none());
    }

    #[test]
    fn a_bad_card_is_refused_naming_it() {
        use std::os::fd::IntoRawFd;
        let not_a_tap = File::open("/dev/null").unwrap().into_raw_fd();
        let config = NetConfig {
            fd: Some(not_a_tap),
            id: Some("lan".into()),
            ..NetConfig::default()
        };
        let err = match net_parts(&config, 2) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("standard input is not a TAP"),
        };
        assert!(err.contains("lan") && err.contains("card 2"), "{err}");
    }
}
