//! Creates the platform devices, puts them on the port-I/O and MMIO buses, and resets them when
//! the guest reboots.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use arch::layout;
use devices::acpi_pm::{AcpiPm, AcpiPmState};
use devices::bus::{Bus, BusDevice};
use devices::cmos::{Cmos, CmosState};
use devices::debugcon::DebugCon;
use devices::fw_cfg::{FwCfg, FwCfgState};
use devices::i8042::{I8042, I8042State};
use devices::ioapic::{Ioapic, IoapicState};
use devices::serial::{Serial, SerialState};
use devices::{PowerEvents, SystemWallClock};
use serde::{Deserialize, Serialize};

use event_manager::MutEventSubscriber;

use crate::chardev::{InputSink, SocketChardev};
use crate::config::{SerialConfig, VmConfig};
use crate::counters::{Counted, VmCounters};
use crate::error::VmmError;
use crate::interrupts::MsiRouter;
use crate::memory::GuestRam;
use crate::pci_devices::{PciContext, PciDevices, PciState};

/// The guest-visible state of every platform device, for snapshots.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesState {
    serial: SerialState,
    i8042: I8042State,
    cmos: CmosState,
    acpi_pm: AcpiPmState,
    ioapic: IoapicState,
    pci: PciState,
    /// Only in firmware boots. Always encoded: the state is bincode, which cannot skip fields.
    fw_cfg: Option<FwCfgState>,
}

fn locked<T>(device: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

/// The devices of one VM and the buses they sit on.
pub struct DeviceManager {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// The userspace IOAPIC (vCPU threads forward EOIs to it).
    pub ioapic: Arc<Mutex<Ioapic>>,
    /// Where IOAPIC interrupts go.
    pub msi: Arc<MsiRouter>,
    serial: Arc<Mutex<Serial>>,
    i8042: Arc<Mutex<I8042>>,
    cmos: Arc<Mutex<Cmos>>,
    acpi_pm: Arc<Mutex<AcpiPm>>,
    /// The PCI root complex and its devices.
    pub pci: PciDevices,
    host_subscribers: Vec<HostSubscriber>,
    /// QEMU's firmware configuration interface, when the VM boots firmware.
    fw_cfg: Option<Arc<Mutex<FwCfg>>>,
}

/// An event-loop subscriber for a host-side file descriptor of a device.
pub type HostSubscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Where COM1's output goes, and the socket backend behind it if it has one.
fn serial_output(
    config: &SerialConfig,
) -> Result<(Box<dyn Write + Send>, Option<SocketChardev>), VmmError> {
    let output: Box<dyn Write + Send> = match config {
        // A duplicate of fd 1 as a `File`: unbuffered, so each byte the guest writes is on the
        // terminal at once (std's `Stdout` would hold it until the end of the line).
        SerialConfig::Stdio => Box::new(File::from(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| VmmError::Device {
                    device: "serial",
                    problem: format!("cannot duplicate standard output: {e}"),
                })?,
        )),
        SerialConfig::Off => Box::new(std::io::sink()),
        SerialConfig::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| VmmError::SerialFile {
                    path: path.clone(),
                    source,
                })?,
        ),
        SerialConfig::Socket(path) => {
            let (chardev, writer) =
                SocketChardev::listen(path).map_err(|e| VmmError::InvalidOption {
                    option: "--serial",
                    value: config.to_string(),
                    problem: e.to_string(),
                })?;
            return Ok((Box::new(writer), Some(chardev)));
        }
    };
    Ok((output, None))
}

/// A virtio-net card's traffic as device counters: frames are requests; bytes the guest
/// received are read, bytes it sent are written.
fn net_device_counters(net: &virtio::net::NetCounters) -> vmm_api::types::DeviceCounters {
    use std::sync::atomic::Ordering::Relaxed;
    vmm_api::types::DeviceCounters {
        requests: net.rx_frames.load(Relaxed) + net.tx_frames.load(Relaxed),
        bytes_read: net.rx_bytes.load(Relaxed),
        bytes_written: net.tx_bytes.load(Relaxed),
    }
}

/// COM1's receive FIFO as the destination of socket input.
struct SerialInput(Arc<Mutex<Serial>>);

impl InputSink for SerialInput {
    fn offer(&self, bytes: &[u8]) -> usize {
        offer_serial_input(&self.0, bytes)
    }
}

/// Feeds as much host input to the serial port as its receive FIFO takes now.
fn offer_serial_input(serial: &Mutex<Serial>, bytes: &[u8]) -> usize {
    let mut serial = serial.lock().unwrap_or_else(|e| e.into_inner());
    let count = serial.fifo_capacity().min(bytes.len());
    match serial.enqueue_input(&bytes[..count]) {
        Ok(()) => count,
        Err(e) => {
            tracing::debug!("serial input deferred: {e}");
            0
        }
    }
}

/// The devices only a firmware boot has: `fw_cfg` and the debug console, whose lines are
/// logged at debug level (target `firmware`).
fn insert_firmware_devices(
    config: &VmConfig,
    pio: &mut Bus,
    counters: &VmCounters,
) -> Result<Arc<Mutex<FwCfg>>, VmmError> {
    let fw_cfg = Arc::new(Mutex::new(crate::firmware::fw_cfg_device(config)?));
    let range = (layout::FW_CFG_PORT, layout::FW_CFG_LEN);
    insert(pio, counters, &fw_cfg, range, "fw_cfg")?;
    let debugcon = Arc::new(Mutex::new(DebugCon::new(Box::new(|line| {
        tracing::debug!(target: "firmware", "{line}");
    }))));
    insert(
        pio,
        counters,
        &debugcon,
        (layout::DEBUGCON_PORT, 1),
        "debugcon",
    )?;
    Ok(fw_cfg)
}

/// Puts `device` on `bus`, counting its accesses under `name`.
fn insert<D: BusDevice + 'static>(
    bus: &mut Bus,
    counters: &VmCounters,
    device: &Arc<Mutex<D>>,
    (base, len): (u64, u64),
    name: &'static str,
) -> Result<(), VmmError> {
    let counted = Counted::new(device.clone(), counters.device(name));
    bus.insert(Arc::new(Mutex::new(counted)), base, len)
        .map_err(|e| VmmError::Device {
            device: name,
            problem: e.to_string(),
        })
}

impl DeviceManager {
    /// Creates every platform device for `config`; power events go to `power`.
    pub fn new(
        config: &VmConfig,
        power: Arc<dyn PowerEvents>,
        counters: &VmCounters,
        memory: &GuestRam,
    ) -> Result<Self, VmmError> {
        let msi = Arc::new(MsiRouter::default());
        let router = msi.clone();
        counters.set_interrupt_source(Box::new(move || router.counters()));
        let ioapic = Arc::new(Mutex::new(Ioapic::new(msi.clone())));
        let (serial_out, serial_socket) = serial_output(&config.serial)?;
        let serial = Arc::new(Mutex::new(Serial::new(
            Ioapic::pin(&ioapic, layout::COM1_IRQ),
            serial_out,
        )));
        let mut host_subscribers: Vec<HostSubscriber> = Vec::new();
        if let Some(mut chardev) = serial_socket {
            chardev.set_input(Box::new(SerialInput(serial.clone())));
            host_subscribers.push(Arc::new(Mutex::new(chardev)));
        }
        let i8042 = Arc::new(Mutex::new(I8042::new(
            power.clone(),
            Ioapic::pin(&ioapic, layout::I8042_IRQ),
        )));
        let mut cmos = Cmos::new(Arc::new(SystemWallClock));
        let memory_bytes = config.memory.bytes();
        let below_4g = memory_bytes.min(layout::MMIO_HOLE_START);
        cmos.set_memory_size(below_4g, memory_bytes - below_4g);
        cmos.set_cpu_count(config.cpus.count);
        let cmos = Arc::new(Mutex::new(cmos));
        let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(
            power.clone(),
            Ioapic::pin(&ioapic, layout::ACPI_SCI_IRQ),
        )));
        let pci = PciDevices::new(
            config,
            PciContext {
                memory,
                msi: msi.clone(),
                ioapic: &ioapic,
                power,
            },
        )?;
        host_subscribers.extend(pci.host_subscribers.iter().cloned());
        for (name, net) in &pci.net_counters {
            let net = net.clone();
            counters.add_source(name.clone(), Box::new(move || net_device_counters(&net)));
        }
        for (name, disk) in &pci.disks {
            let disk = disk.clone();
            let read = move || crate::counters::disk_counters(&locked(&disk).device().stats());
            counters.add_disk(name.clone(), Box::new(read));
        }

        let mut pio = Bus::new();
        insert(
            &mut pio,
            counters,
            &serial,
            (layout::COM1_PORT, 8),
            "serial",
        )?;
        insert(&mut pio, counters, &i8042, (layout::I8042_PORT, 5), "i8042")?;
        insert(&mut pio, counters, &cmos, (layout::CMOS_PORT, 2), "cmos")?;
        let pm_range = (layout::ACPI_PM_PORT, layout::ACPI_PM_LEN);
        insert(&mut pio, counters, &acpi_pm, pm_range, "acpi-pm")?;
        let mut mmio = Bus::new();
        let ioapic_range = (layout::IOAPIC_START, layout::IOAPIC_SIZE);
        insert(&mut mmio, counters, &ioapic, ioapic_range, "ioapic")?;
        let config_ports = (layout::PCI_CONFIG_PORT, layout::PCI_CONFIG_PORT_LEN);
        insert(
            &mut pio,
            counters,
            &pci.config_io,
            config_ports,
            "pci-config",
        )?;
        let ecam = (layout::PCI_ECAM_START, layout::PCI_ECAM_SIZE);
        insert(&mut mmio, counters, &pci.config_mmio, ecam, "pci-ecam")?;
        let window = (layout::PCI_MMIO32_START, layout::PCI_MMIO32_SIZE);
        insert(&mut mmio, counters, &pci.window, window, "pci-mmio")?;
        let high_window = Arc::new(Mutex::new(devices::pci::PciMmioWindow::new(
            pci.root.clone(),
            layout::PCI_MMIO32_HIGH_START,
        )));
        let high_range = (layout::PCI_MMIO32_HIGH_START, layout::PCI_MMIO32_HIGH_SIZE);
        insert(&mut mmio, counters, &high_window, high_range, "pci-mmio")?;
        let fw_cfg = match config.payload.firmware {
            Some(_) => Some(insert_firmware_devices(config, &mut pio, counters)?),
            None => None,
        };
        Ok(DeviceManager {
            pio,
            mmio,
            ioapic,
            msi,
            serial,
            i8042,
            cmos,
            acpi_pm,
            pci,
            host_subscribers,
            fw_cfg,
        })
    }

    /// Event-loop subscribers of the devices' host-side descriptors (socket backends, TAPs).
    pub fn host_subscribers(&self) -> Vec<HostSubscriber> {
        self.host_subscribers.clone()
    }

    /// Puts every device back in its power-on state for a reboot in place. CMOS NVRAM and the
    /// serial output destination survive, as on real hardware.
    pub fn reset(&self) {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
        self.i8042.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.cmos.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.acpi_pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
        self.ioapic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset();
        self.pci.reset();
        if let Some(fw_cfg) = &self.fw_cfg {
            locked(fw_cfg).reset();
        }
    }

    /// Connects the devices to a freshly created KVM VM (after a reboot, a new one).
    pub fn attach_vm(&self, vm: Option<Arc<hypervisor::Vm>>) {
        self.pci.ioevents.attach(vm.clone());
        self.msi
            .attach(vm.map(|vm| vm as Arc<dyn crate::interrupts::IrqRouting>));
    }

    /// Lets no device work behind the paused vCPUs: what virtio devices run on other threads
    /// finishes and is published, and nothing new starts until [`DeviceManager::resume`].
    pub fn quiesce(&self) {
        self.pci.quiesce();
    }

    /// Ends [`DeviceManager::quiesce`].
    pub fn resume(&self) {
        self.pci.resume();
    }

    /// Reads the state of every device (the vCPUs must be stopped); fails for a device whose
    /// state cannot be saved.
    pub fn save_state(&self) -> Result<DevicesState, VmmError> {
        Ok(DevicesState {
            serial: locked(&self.serial).state(),
            i8042: locked(&self.i8042).state(),
            cmos: locked(&self.cmos).state(),
            acpi_pm: locked(&self.acpi_pm).state(),
            ioapic: locked(&self.ioapic).state(),
            pci: self.pci.save_state()?,
            fw_cfg: self.fw_cfg.as_ref().map(|fw_cfg| locked(fw_cfg).state()),
        })
    }

    /// Puts saved state back into freshly created devices.
    pub fn restore_state(&self, state: &DevicesState) -> Result<(), VmmError> {
        let failed = |device: &'static str| {
            move |e: &dyn std::fmt::Display| VmmError::Device {
                device,
                problem: format!("cannot restore its state: {e}"),
            }
        };
        locked(&self.serial)
            .restore(&state.serial)
            .map_err(|e| failed("serial")(&e))?;
        locked(&self.i8042)
            .restore(&state.i8042)
            .map_err(|e| failed("i8042")(&e))?;
        locked(&self.cmos)
            .restore(&state.cmos)
            .map_err(|e| failed("cmos")(&e))?;
        locked(&self.acpi_pm)
            .restore(&state.acpi_pm)
            .map_err(|e| failed("acpi-pm")(&e))?;
        locked(&self.ioapic)
            .restore(&state.ioapic)
            .map_err(|e| failed("ioapic")(&e))?;
        if let (Some(fw_cfg), Some(saved)) = (&self.fw_cfg, &state.fw_cfg) {
            locked(fw_cfg).restore(saved);
        }
        self.pci.restore_state(&state.pci)
    }

    /// Presses the ACPI power button (the guest decides what to do).
    pub fn press_power_button(&self) {
        self.acpi_pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
    }

    /// Feeds as much host input to the serial port as its receive FIFO takes now; returns how
    /// many bytes it took.
    pub fn serial_input(&self, bytes: &[u8]) -> usize {
        offer_serial_input(&self.serial, bytes)
    }
}
