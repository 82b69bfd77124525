//! Creates the platform devices, puts them on the port-I/O and MMIO buses, and resets them when
//! the guest reboots.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, RwLock};

use arch::layout;
use devices::acpi_pm::{AcpiPm, AcpiPmState};
use devices::bus::{Bus, BusDevice};
use devices::cmos::{Cmos, CmosState};
use devices::i8042::{I8042, I8042State};
use devices::ioapic::{Ioapic, IoapicState};
use devices::serial::{Serial, SerialState};
use devices::{MsiMessage, MsiSink, PowerEvents, SystemWallClock};
use serde::{Deserialize, Serialize};
use vm_memory::GuestMemoryMmap;

use crate::config::{SerialConfig, VmConfig};
use crate::counters::{Counted, VmCounters};
use crate::error::VmmError;
use crate::pci_devices::{PciContext, PciDevices, PciState};

/// Delivers IOAPIC messages to whichever KVM VM is current (a reboot creates a new one), and
/// mirrors each pin's message as a KVM GSI route so KVM reports level-triggered EOIs.
#[derive(Default)]
pub struct MsiRouter {
    vm: RwLock<Option<Arc<hypervisor::Vm>>>,
    routes: Mutex<Vec<Option<MsiMessage>>>,
}

impl MsiRouter {
    /// Routes later MSIs to `vm` (or nowhere with `None`).
    pub fn attach(&self, vm: Option<Arc<hypervisor::Vm>>) {
        *self.vm.write().unwrap_or_else(|e| e.into_inner()) = vm;
    }

    fn push_routes(&self, routes: &[Option<MsiMessage>]) -> std::io::Result<()> {
        let table: Vec<(u32, u64, u32)> = routes
            .iter()
            .enumerate()
            .filter_map(|(gsi, route)| route.map(|m| (gsi as u32, m.address, m.data)))
            .collect();
        let guard = self.vm.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(vm) => vm
                .set_msi_routes(&table)
                .map_err(|e| std::io::Error::other(e.to_string())),
            None => Ok(()),
        }
    }
}

impl MsiSink for MsiRouter {
    fn send_msi(&self, address: u64, data: u32) -> std::io::Result<()> {
        let guard = self.vm.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(vm) => vm
                .signal_msi(address, data)
                .map_err(|e| std::io::Error::other(e.to_string())),
            None => Ok(()),
        }
    }

    fn route_changed(&self, source: usize, message: Option<MsiMessage>) -> std::io::Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if routes.len() <= source {
            routes.resize(source + 1, None);
        }
        if routes[source] == message {
            return Ok(());
        }
        routes[source] = message;
        self.push_routes(&routes)
    }
}

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
}

fn serial_output(config: &SerialConfig) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match config {
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
    })
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
        memory: &GuestMemoryMmap,
    ) -> Result<Self, VmmError> {
        let msi = Arc::new(MsiRouter::default());
        let ioapic = Arc::new(Mutex::new(Ioapic::new(msi.clone())));
        let serial = Arc::new(Mutex::new(Serial::new(
            Ioapic::pin(&ioapic, layout::COM1_IRQ),
            serial_output(&config.serial)?,
        )));
        let i8042 = Arc::new(Mutex::new(I8042::new(
            power.clone(),
            Ioapic::pin(&ioapic, layout::I8042_IRQ),
        )));
        let mut cmos = Cmos::new(Arc::new(SystemWallClock));
        let memory_bytes = config.memory.size_mib << 20;
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
        })
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
    }

    /// Connects the devices to a freshly created KVM VM (after a reboot, a new one).
    pub fn attach_vm(&self, vm: Option<Arc<hypervisor::Vm>>) {
        let attached = vm.is_some();
        self.pci.ioevents.attach(vm.clone());
        self.msi.attach(vm);
        if attached {
            let routes = self
                .msi
                .routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Err(e) = self.msi.push_routes(&routes) {
                tracing::warn!("cannot install the IOAPIC's GSI routes: {e}");
            }
        }
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
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let count = serial.fifo_capacity().min(bytes.len());
        match serial.enqueue_input(&bytes[..count]) {
            Ok(()) => count,
            Err(e) => {
                tracing::debug!("serial input deferred: {e}");
                0
            }
        }
    }
}
