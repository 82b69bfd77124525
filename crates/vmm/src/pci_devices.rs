//! The PCI side of the machine: the root complex with its host bridge, the virtio devices the
//! configuration asks for, and the bus devices that give the guest access to them
//! (configuration ports 0xCF8–0xCFF, ECAM, and the 32-bit MMIO window where BARs live).

use std::fs::File;
use std::sync::{Arc, Mutex};

use arch::layout;
use devices::bus::BusRange;
use devices::ioapic::Ioapic;
use devices::pci::{
    PciConfigIo, PciConfigIoState, PciConfigMmio, PciMmioWindow, PciRoot, PciRootState, PciWindows,
    SharedPciDevice,
};
use devices::{MsiSink, PowerEvents};
use serde::{Deserialize, Serialize};
use virtio::balloon::{Balloon, BalloonOptions, GuestMemoryReleaser, pages_for_size};
use virtio::pci::VirtioPciState;

use crate::chardev::{InputSink, SocketChardev};
use crate::config::{BalloonConfig, ConsoleConfig, DiskConfig, VmConfig};
use crate::device_manager::HostSubscriber;
use crate::error::VmmError;
use crate::ioevents::{IoEvents, QueueNotify};
use crate::memory::GuestRam;

/// The PCI devices of a machine and their bus-side access points.
pub struct PciDevices {
    /// The root complex.
    pub root: Arc<Mutex<PciRoot>>,
    /// Configuration ports (CONFIG_ADDRESS latch and the 0xCF9 reset register).
    pub config_io: Arc<Mutex<PciConfigIo>>,
    /// ECAM.
    pub config_mmio: Arc<Mutex<PciConfigMmio>>,
    /// The 32-bit BAR window.
    pub window: Arc<Mutex<PciMmioWindow>>,
    /// The virtio functions, in slot order.
    virtio: Vec<Arc<Mutex<dyn QueueNotify>>>,
    /// The queues' ioeventfds.
    pub ioevents: Arc<IoEvents>,
    /// The balloon, if the VM has one.
    pub balloon: Option<BalloonHandle>,
    /// Event-loop subscribers of the devices' host-side descriptors.
    pub host_subscribers: Vec<HostSubscriber>,
    /// The virtio-net cards' traffic counters, by card name.
    pub net_counters: Vec<(String, Arc<virtio::net::NetCounters>)>,
    /// The virtio-blk disks, by [`DiskConfig::name`], for their counters.
    pub disks: Vec<(String, DiskHandle)>,
}

/// The PCI state a snapshot keeps.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciState {
    root: PciRootState,
    config_io: PciConfigIoState,
    virtio: Vec<VirtioPciState>,
}

/// What PCI devices need from the rest of the machine.
pub struct PciContext<'a> {
    /// Guest memory, for virtio queues.
    pub memory: &'a GuestRam,
    /// Where MSI-X messages go.
    pub msi: Arc<dyn MsiSink>,
    /// For INTx lines.
    pub ioapic: &'a Arc<Mutex<Ioapic>>,
    /// For the 0xCF9 reset register.
    pub power: Arc<dyn PowerEvents>,
}

/// A virtio device as the PCI root sees it and as the ioeventfd plumbing sees it.
struct VirtioHandles {
    pci: SharedPciDevice,
    queues: Arc<Mutex<dyn QueueNotify>>,
}

fn handles<D: virtio::VirtioDevice + 'static>(
    device: virtio::pci::VirtioPciDevice<D>,
) -> VirtioHandles {
    let device = Arc::new(Mutex::new(device));
    VirtioHandles {
        pci: device.clone(),
        queues: device,
    }
}

/// A virtio-blk disk, whose statistics the control API reports.
pub type DiskHandle = Arc<Mutex<virtio::pci::VirtioPciDevice<virtio::block::Block>>>;

/// The balloon, which the control API drives.
pub type BalloonHandle = Arc<Mutex<virtio::pci::VirtioPciDevice<Balloon>>>;

fn balloon_device(
    balloon: &BalloonConfig,
    config: &VmConfig,
    context: &PciContext<'_>,
    intx: Arc<dyn devices::IrqLine>,
) -> Result<BalloonHandle, VmmError> {
    let failed = |problem: String| VmmError::InvalidOption {
        option: "--balloon",
        value: format!("size={}M", balloon.size_mib),
        problem,
    };
    let ram_bytes = config.memory.bytes();
    let target_pages =
        pages_for_size(balloon.size_mib << 20, ram_bytes).map_err(|e| failed(e.to_string()))?;
    let device = Balloon::new(
        BalloonOptions {
            target_pages,
            deflate_on_oom: balloon.deflate_on_oom,
            stats: balloon.stats,
        },
        Box::new(GuestMemoryReleaser::new(context.memory.clone())),
    );
    let device = virtio::pci::VirtioPciDevice::new(
        device,
        context.memory.clone(),
        context.msi.clone(),
        intx,
    )
    .map_err(|e| failed(e.to_string()))?;
    Ok(Arc::new(Mutex::new(device)))
}

/// The virtio-console device, which socket input reaches through its receive queue.
type ConsoleHandle = Arc<Mutex<virtio::pci::VirtioPciDevice<virtio::console::Console>>>;

/// The console's input buffer as the destination of socket input: what it takes is
/// delivered at once to the receive buffers the driver posted (through a queue 0
/// notification, which the transport ignores while the driver has not started the device).
struct ConsoleInput(ConsoleHandle);

impl InputSink for ConsoleInput {
    fn offer(&self, bytes: &[u8]) -> usize {
        let mut device = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let taken = device.device_mut().push_input(bytes);
        if device.device().pending_input() > 0 {
            QueueNotify::notify_queue(&mut *device, 0);
        }
        taken
    }
}

/// The virtio-console device and, for a socket backend, its event-loop subscriber.
fn console_device(
    console: &ConsoleConfig,
    context: &PciContext<'_>,
    intx: Arc<dyn devices::IrqLine>,
) -> Result<(ConsoleHandle, Option<HostSubscriber>), VmmError> {
    let failed = |problem: String| VmmError::InvalidOption {
        option: "--console",
        value: console.to_string(),
        problem,
    };
    let (output, chardev): (Box<dyn std::io::Write + Send>, _) = match console {
        ConsoleConfig::Socket(path) => {
            let (chardev, writer) =
                SocketChardev::listen(path).map_err(|e| failed(e.to_string()))?;
            (Box::new(writer), Some(chardev))
        }
        ConsoleConfig::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| failed(format!("cannot open: {e}")))?;
            (Box::new(file), None)
        }
    };
    let device = virtio::pci::VirtioPciDevice::new(
        virtio::console::Console::new(output),
        context.memory.clone(),
        context.msi.clone(),
        intx,
    )
    .map_err(|e| failed(e.to_string()))?;
    let device = Arc::new(Mutex::new(device));
    let subscriber = chardev.map(|mut chardev| {
        chardev.set_input(Box::new(ConsoleInput(device.clone())));
        Arc::new(Mutex::new(chardev)) as HostSubscriber
    });
    Ok((device, subscriber))
}

fn virtio_devices(
    config: &VmConfig,
    context: &PciContext<'_>,
    balloon: &mut Option<BalloonHandle>,
    host_subscribers: &mut Vec<HostSubscriber>,
    net_counters: &mut Vec<(String, Arc<virtio::net::NetCounters>)>,
    disks: &mut Vec<(String, DiskHandle)>,
) -> Result<Vec<VirtioHandles>, VmmError> {
    let mut devices: Vec<VirtioHandles> = Vec::new();
    // Devices take slots 1, 2, … in this order (the host bridge is slot 0); the DSDT's _PRT
    // routes slot s's INTA# to pin PCI_INTX_FIRST_PIN + (s − 1) mod PCI_INTX_PINS.
    let intx = |index: usize| {
        let pin = layout::PCI_INTX_FIRST_PIN + (index as u32 % layout::PCI_INTX_PINS);
        Ioapic::pin(context.ioapic, pin)
    };
    if let Some(rng) = &config.rng {
        let source = File::open(&rng.src).map_err(|e| VmmError::InvalidOption {
            option: "--rng",
            value: format!("src={}", rng.src.display()),
            problem: format!("cannot open: {e}"),
        })?;
        let device = virtio::pci::VirtioPciDevice::new(
            virtio::rng::Rng::new(Box::new(source)),
            context.memory.clone(),
            context.msi.clone(),
            intx(devices.len()),
        )
        .map_err(|e| VmmError::Device {
            device: "virtio-rng",
            problem: e.to_string(),
        })?;
        devices.push(handles(device));
    }
    if let Some(settings) = &config.balloon {
        let device = balloon_device(settings, config, context, intx(devices.len()))?;
        devices.push(VirtioHandles {
            pci: device.clone(),
            queues: device.clone(),
        });
        *balloon = Some(device);
    }
    for (index, disk) in config.disks.iter().enumerate() {
        let device = block_device(disk, index)?;
        let device = virtio::pci::VirtioPciDevice::new(
            device,
            context.memory.clone(),
            context.msi.clone(),
            intx(devices.len()),
        )
        .map_err(|e| disk_error(disk, index, e))?;
        let device = Arc::new(Mutex::new(device));
        disks.push((disk.name(index), device.clone()));
        devices.push(VirtioHandles {
            pci: device.clone(),
            queues: device,
        });
    }
    if let Some(console) = &config.console {
        let (device, subscriber) = console_device(console, context, intx(devices.len()))?;
        devices.push(VirtioHandles {
            pci: device.clone(),
            queues: device,
        });
        host_subscribers.extend(subscriber);
    }
    for (index, net) in config.nets.iter().enumerate() {
        let parts = crate::net::net_parts(net, index)?;
        net_counters.push((format!("net:{}", net.name(index)), parts.counters.clone()));
        let device = virtio::pci::VirtioPciDevice::new(
            parts.device,
            context.memory.clone(),
            context.msi.clone(),
            intx(devices.len()),
        )
        .map_err(|e| VmmError::Device {
            device: "virtio-net",
            problem: e.to_string(),
        })?;
        let device = Arc::new(Mutex::new(device));
        host_subscribers.push(Arc::new(Mutex::new(crate::net::TapWatcher::new(
            parts.watch,
            device.clone(),
        ))));
        devices.push(VirtioHandles {
            pci: device.clone(),
            queues: device,
        });
    }
    if let Some(vsock) = &config.vsock {
        let device = virtio::pci::VirtioPciDevice::new(
            crate::vsock::vsock_device(vsock)?,
            context.memory.clone(),
            context.msi.clone(),
            intx(devices.len()),
        )
        .map_err(|e| VmmError::Device {
            device: "virtio-vsock",
            problem: e.to_string(),
        })?;
        let device = Arc::new(Mutex::new(device));
        let subscriber =
            crate::vsock::VsockSubscriber::new(device.clone()).map_err(|e| VmmError::Device {
                device: "virtio-vsock",
                problem: format!("cannot create its event-loop kick: {e}"),
            })?;
        host_subscribers.push(Arc::new(Mutex::new(subscriber)));
        devices.push(VirtioHandles {
            pci: device.clone(),
            queues: device,
        });
    }
    Ok(devices)
}

fn disk_error(disk: &DiskConfig, index: usize, problem: impl std::fmt::Display) -> VmmError {
    let name = disk
        .id
        .clone()
        .unwrap_or_else(|| format!("path={}", disk.path.display()));
    VmmError::InvalidOption {
        option: "--disk",
        value: name,
        problem: format!("(disk {index}) {problem}"),
    }
}

/// Token buckets refilled each second, with no extra burst.
fn rate_limiter(disk: &DiskConfig) -> Result<Option<storage::RateLimiter>, String> {
    let bucket = |per_second: Option<u64>| {
        per_second
            .map(|n| storage::TokenBucket::new(n, 0, std::time::Duration::from_secs(1)))
            .transpose()
            .map_err(|e| e.to_string())
    };
    let bytes = bucket(disk.bw)?;
    let ops = bucket(disk.iops)?;
    Ok((bytes.is_some() || ops.is_some()).then(|| storage::RateLimiter::new(bytes, ops)))
}

fn block_device(disk: &DiskConfig, index: usize) -> Result<virtio::block::Block, VmmError> {
    let backend = storage::RawFile::open(
        &disk.path,
        storage::RawFileOptions {
            read_only: disk.readonly,
            direct: disk.direct,
        },
    )
    .map_err(|e| disk_error(disk, index, e))?;
    let rate_limiter = rate_limiter(disk).map_err(|e| disk_error(disk, index, e))?;
    virtio::block::Block::new(
        Box::new(backend),
        virtio::block::BlockOptions {
            serial: disk.serial.clone(),
            rate_limiter,
        },
    )
    .and_then(|block| block.with_io_threads(virtio::block::IO_THREADS))
    .map_err(|e| disk_error(disk, index, e))
}

/// Gives every virtio function's MSI-X vectors GSIs with irqfds (`crate::interrupts`).
fn assign_msix_routes(functions: &[Arc<Mutex<dyn QueueNotify>>]) {
    let counts: Vec<u16> = functions
        .iter()
        .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()).msix_vectors())
        .collect();
    crate::interrupts::assign_msix_gsis(&counts, |index, base| {
        if let Some(function) = functions.get(index) {
            function
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_msix_route_base(base);
        }
    });
}

fn pci_error(error: impl std::fmt::Display) -> VmmError {
    VmmError::Device {
        device: "pci",
        problem: error.to_string(),
    }
}

impl PciDevices {
    /// Builds the root complex with the devices `config` asks for, BARs placed in the window.
    pub fn new(config: &VmConfig, context: PciContext<'_>) -> Result<Self, VmmError> {
        let mut root = PciRoot::new();
        let mut balloon = None;
        let mut host_subscribers = Vec::new();
        let mut net_counters = Vec::new();
        let mut disks = Vec::new();
        let devices = virtio_devices(
            config,
            &context,
            &mut balloon,
            &mut host_subscribers,
            &mut net_counters,
            &mut disks,
        )?;
        let notifiers: Vec<Arc<Mutex<dyn QueueNotify>>> =
            devices.iter().map(|d| d.queues.clone()).collect();
        assign_msix_routes(&notifiers);
        let ioevents = Arc::new(IoEvents::new(&notifiers).map_err(pci_error)?);

        for device in devices {
            root.add_device(device.pci).map_err(pci_error)?;
        }
        root.set_observer(Some(ioevents.bar_observer()));
        root.allocate_bars(&PciWindows {
            mmio32: BusRange {
                base: layout::PCI_MMIO32_START,
                len: layout::PCI_MMIO32_SIZE,
            },
            mmio64: None,
        })
        .map_err(pci_error)?;
        let root = Arc::new(Mutex::new(root));
        Ok(PciDevices {
            config_io: Arc::new(Mutex::new(PciConfigIo::with_reset(
                root.clone(),
                context.power,
            ))),
            config_mmio: Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
            window: Arc::new(Mutex::new(PciMmioWindow::new(
                root.clone(),
                layout::PCI_MMIO32_START,
            ))),
            root,
            virtio: notifiers,
            ioevents,
            balloon,
            host_subscribers,
            net_counters,
            disks,
        })
    }

    /// Puts the host bridge and every device back in its power-on state.
    pub fn reset(&self) {
        self.root.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.config_io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
    }

    /// Has every virtio function finish and publish the requests it runs on other threads
    /// (virtio-blk's I/O threads), and start none until [`PciDevices::resume`]: for a pause
    /// or a snapshot, after the vCPUs stopped.
    pub fn quiesce(&self) {
        for function in &self.virtio {
            function.lock().unwrap_or_else(|e| e.into_inner()).quiesce();
        }
    }

    /// Ends [`PciDevices::quiesce`].
    pub fn resume(&self) {
        for function in &self.virtio {
            function.lock().unwrap_or_else(|e| e.into_inner()).resume();
        }
    }

    /// The state of the host bridge, the configuration ports and every virtio function.
    pub fn save_state(&self) -> Result<PciState, VmmError> {
        let mut virtio = Vec::with_capacity(self.virtio.len());
        for function in &self.virtio {
            let state = function
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .save_state()
                .map_err(pci_error)?;
            virtio.push(state);
        }
        Ok(PciState {
            root: self.root.lock().unwrap_or_else(|e| e.into_inner()).state(),
            config_io: self
                .config_io
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state(),
            virtio,
        })
    }

    /// Restores what `save_state` returned (virtio functions first, then the root).
    pub fn restore_state(&self, state: &PciState) -> Result<(), VmmError> {
        if state.virtio.len() != self.virtio.len() {
            return Err(pci_error(format!(
                "the snapshot has {} virtio devices, this VM {}",
                state.virtio.len(),
                self.virtio.len()
            )));
        }
        for (function, saved) in self.virtio.iter().zip(&state.virtio) {
            function
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore_state(saved)
                .map_err(pci_error)?;
        }
        self.root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&state.root)
            .map_err(pci_error)?;
        self.config_io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&state.config_io)
            .map_err(pci_error)
    }
}
