//! Counters for the control API's `vm.counters`: vCPU exits by kind, and accesses and bytes per
//! device (counted at the bus, so every device is covered the same way).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use devices::bus::BusDevice;
use hypervisor::VcpuExit;
use vmm_api::types::{Counters, DeviceCounters, DiskCounters};

/// The kinds of vCPU exit that are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// Port reads.
    IoIn,
    /// Port writes.
    IoOut,
    /// MMIO reads.
    MmioRead,
    /// MMIO writes.
    MmioWrite,
    /// Level-triggered EOIs.
    IoapicEoi,
    /// Kicks and signals.
    Interrupted,
    /// Everything else (halts, shutdowns, system events, errors).
    Other,
}

const EXIT_KINDS: [(ExitKind, &str); 7] = [
    (ExitKind::IoIn, "io_in"),
    (ExitKind::IoOut, "io_out"),
    (ExitKind::MmioRead, "mmio_read"),
    (ExitKind::MmioWrite, "mmio_write"),
    (ExitKind::IoapicEoi, "ioapic_eoi"),
    (ExitKind::Interrupted, "interrupted"),
    (ExitKind::Other, "other"),
];

impl ExitKind {
    /// The kind of `exit`.
    pub fn of(exit: &VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::IoIn { .. } => ExitKind::IoIn,
            VcpuExit::IoOut { .. } => ExitKind::IoOut,
            VcpuExit::MmioRead(..) => ExitKind::MmioRead,
            VcpuExit::MmioWrite(..) => ExitKind::MmioWrite,
            VcpuExit::IoapicEoi(_) => ExitKind::IoapicEoi,
            VcpuExit::Interrupted => ExitKind::Interrupted,
            _ => ExitKind::Other,
        }
    }
}

/// Per-device access counts.
#[derive(Default)]
pub struct DeviceCounter {
    requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// Reads the counters of a device that counts its own traffic (virtio-net).
pub type CounterSource = Box<dyn Fn() -> DeviceCounters + Send + Sync>;

/// Reads interrupt delivery counts by path.
pub type InterruptSource = Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>;

/// Reads the request counts of one virtio-blk disk.
pub type DiskSource = Box<dyn Fn() -> DiskCounters + Send + Sync>;

/// A virtio-blk device's statistics in the control API's shape (write-zeroes requests count
/// with discards: both free space rather than write data).
pub fn disk_counters(stats: &virtio::block::BlockStats) -> DiskCounters {
    DiskCounters {
        reads: stats.reads,
        bytes_read: stats.bytes_read,
        writes: stats.writes,
        bytes_written: stats.bytes_written,
        flushes: stats.flushes,
        discards: stats.discards + stats.write_zeroes,
        errors: stats.errors,
    }
}

/// All counters of a VM; they survive reboots.
#[derive(Default)]
pub struct VmCounters {
    exits: [AtomicU64; EXIT_KINDS.len()],
    devices: std::sync::Mutex<Vec<(&'static str, Arc<DeviceCounter>)>>,
    sources: std::sync::Mutex<Vec<(String, CounterSource)>>,
    interrupts: std::sync::Mutex<Option<InterruptSource>>,
    disks: std::sync::Mutex<Vec<(String, DiskSource)>>,
}

impl VmCounters {
    /// Counts one exit.
    pub fn count_exit(&self, kind: ExitKind) {
        if let Some(slot) = EXIT_KINDS.iter().position(|(k, _)| *k == kind) {
            self.exits[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A counter for device `name`, reported by `snapshot`.
    pub fn device(&self, name: &'static str) -> Arc<DeviceCounter> {
        let counter = Arc::new(DeviceCounter::default());
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, counter.clone()));
        counter
    }

    /// Reports device `name`'s own counters, read from `source`, with the others.
    pub fn add_source(&self, name: String, source: CounterSource) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, source));
    }

    /// Reports the requests of disk `name`, read from `source`, under `disks`.
    pub fn add_disk(&self, name: String, source: DiskSource) {
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, source));
    }

    /// Reports interrupt delivery counts read from `source`.
    pub fn set_interrupt_source(&self, source: InterruptSource) {
        *self.interrupts.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// The current values, in the control API's shape.
    pub fn snapshot(&self) -> Counters {
        let exits = EXIT_KINDS
            .iter()
            .zip(&self.exits)
            .map(|((_, name), value)| (name.to_string(), value.load(Ordering::Relaxed)))
            .collect();
        let mut devices: BTreeMap<String, DeviceCounters> = self
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, c)| {
                (
                    name.to_string(),
                    DeviceCounters {
                        requests: c.requests.load(Ordering::Relaxed),
                        bytes_read: c.bytes_read.load(Ordering::Relaxed),
                        bytes_written: c.bytes_written.load(Ordering::Relaxed),
                    },
                )
            })
            .collect();
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        devices.extend(sources.iter().map(|(name, read)| (name.clone(), read())));
        let interrupts = self
            .interrupts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|read| read())
            .unwrap_or_default();
        let disks = (self.disks.lock().unwrap_or_else(|e| e.into_inner()).iter())
            .map(|(name, read)| (name.clone(), read()))
            .collect();
        Counters {
            exits,
            devices,
            interrupts,
            disks,
        }
    }
}

/// A bus device wrapper that counts the accesses reaching the device it wraps.
pub struct Counted<D> {
    inner: Arc<std::sync::Mutex<D>>,
    counter: Arc<DeviceCounter>,
}

impl<D> Counted<D> {
    /// Counts accesses to `inner` in `counter`.
    pub fn new(inner: Arc<std::sync::Mutex<D>>, counter: Arc<DeviceCounter>) -> Self {
        Counted { inner, counter }
    }
}

impl<D: BusDevice> BusDevice for Counted<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.counter.requests.fetch_add(1, Ordering::Relaxed);
        self.counter
            .bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.counter.requests.fetch_add(1, Ordering::Relaxed);
        self.counter
            .bytes_written
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);

    impl BusDevice for Echo {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(self.0);
        }

        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn accesses_are_counted_per_device_and_exits_per_kind() {
        let counters = VmCounters::default();
        let device = Arc::new(std::sync::Mutex::new(Echo(0)));
        let mut counted = Counted::new(device.clone(), counters.device("echo"));

        counted.write(0, &[7, 7]);
        let mut buf = [0u8; 4];
        counted.read(0, &mut buf);
        counters.count_exit(ExitKind::IoOut);
        counters.count_exit(ExitKind::IoOut);

        let snapshot = counters.snapshot();
        assert_eq!(buf, [7; 4]);
        assert_eq!(snapshot.exits["io_out"], 2);
        assert_eq!(snapshot.exits["mmio_read"], 0);
        let echo = &snapshot.devices["echo"];
        assert_eq!(
            (echo.requests, echo.bytes_read, echo.bytes_written),
            (2, 4, 2)
        );
    }

    #[test]
    fn disks_are_reported_by_name_with_their_current_stats() {
        let counters = VmCounters::default();
        let stats = Arc::new(std::sync::Mutex::new(virtio::block::BlockStats::default()));
        let source = stats.clone();
        counters.add_disk(
            "vda".to_string(),
            Box::new(move || disk_counters(&source.lock().unwrap())),
        );

        let before = counters.snapshot().disks["vda"];
        *stats.lock().unwrap() = virtio::block::BlockStats {
            reads: 3,
            bytes_read: 12288,
            writes: 1,
            bytes_written: 512,
            flushes: 2,
            discards: 1,
            write_zeroes: 1,
            errors: 1,
            ..Default::default()
        };
        let after = counters.snapshot().disks["vda"];

        assert_eq!(before, DiskCounters::default());
        assert_eq!(
            after,
            DiskCounters {
                reads: 3,
                bytes_read: 12288,
                writes: 1,
                bytes_written: 512,
                flushes: 2,
                discards: 2,
                errors: 1,
            }
        );
    }
}
