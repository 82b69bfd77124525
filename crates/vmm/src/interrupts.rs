//! Interrupt delivery to KVM: one GSI routing table for the IOAPIC's pins and every MSI-X
//! vector, and an irqfd per MSI-X vector.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so [`MsiRouter`] keeps the table in one place:
//! GSIs `0..IOAPIC_PINS` mirror the IOAPIC's pins (KVM's split irqchip reports the EOI of a
//! level-triggered vector only when a route below the pin count carries it), and GSIs from
//! [`FIRST_MSIX_GSI`] are the virtio functions' MSI-X vectors (each function's vectors get
//! consecutive GSIs, [`assign_msix_gsis`]). A vector has a route only while it can deliver
//! (MSI-X enabled, neither it nor the function masked); the MSI-X model keeps pending bits for
//! masked vectors and sends them on unmask, after announcing the route.
//!
//! Every MSI-X GSI that ever had a route gets an eventfd registered with `KVM_IRQFD`: sending
//! that vector is one eventfd write, from whichever thread the device runs on. When KVM does
//! not hold the route (no VM, or a routing update failed), the message goes through
//! `KVM_SIGNAL_MSI` instead. A message sent before the VM is attached (restoring a snapshot)
//! waits in the eventfd, and KVM injects it when the irqfd is registered.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use devices::{MsiMessage, MsiSink};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// The first GSI of MSI-X vectors: those below are the IOAPIC's pins.
pub const FIRST_MSIX_GSI: usize = arch::layout::IOAPIC_PINS as usize;
/// GSIs KVM accepts in a routing table (`KVM_MAX_IRQ_ROUTES`).
pub const MAX_GSIS: usize = 4096;

/// What the router needs of a KVM VM; unit tests use a fake.
pub trait IrqRouting: Send + Sync {
    /// Replaces the routing table with MSI routes `(gsi, address, data)`.
    fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> io::Result<()>;
    /// Makes writes to `fd` inject `gsi`.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()>;
    /// Undoes `register_irqfd`.
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()>;
    /// Injects one message (`KVM_SIGNAL_MSI`).
    fn signal_msi(&self, address: u64, data: u32) -> io::Result<()>;
}

fn io_error(error: hypervisor::HypervisorError) -> io::Error {
    io::Error::other(error.to_string())
}

impl IrqRouting for hypervisor::Vm {
    fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> io::Result<()> {
        hypervisor::Vm::set_msi_routes(self, routes).map_err(io_error)
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        hypervisor::Vm::register_irqfd(self, fd, gsi).map_err(io_error)
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> io::Result<()> {
        hypervisor::Vm::unregister_irqfd(self, fd, gsi).map_err(io_error)
    }

    fn signal_msi(&self, address: u64, data: u32) -> io::Result<()> {
        hypervisor::Vm::signal_msi(self, address, data).map_err(io_error)
    }
}

/// How interrupts left the VMM, for `vm.counters`.
#[derive(Default)]
struct DeliveryCounters {
    msix_irqfd: AtomicU64,
    msix_signal_msi: AtomicU64,
    ioapic_signal_msi: AtomicU64,
}

/// One MSI-X GSI's eventfd.
struct IrqFd {
    fd: EventFd,
    /// Registered with the attached VM.
    registered: bool,
}

/// The routing table and irqfds, and the VM that holds them.
#[derive(Default)]
struct Table {
    vm: Option<Arc<dyn IrqRouting>>,
    /// The route of each GSI (`None`: the source cannot deliver).
    routes: Vec<Option<MsiMessage>>,
    /// Whether the attached VM holds `routes` (the last update succeeded).
    in_kvm: bool,
    irqfds: BTreeMap<usize, IrqFd>,
}

impl Table {
    fn msi_routes(&self) -> Vec<(u32, u64, u32)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(gsi, route)| route.map(|m| (gsi as u32, m.address, m.data)))
            .collect()
    }

    /// Gives the attached VM the whole table.
    fn push(&mut self) -> io::Result<()> {
        let Some(vm) = &self.vm else {
            return Ok(());
        };
        let result = vm.set_msi_routes(&self.msi_routes());
        self.in_kvm = result.is_ok();
        result
    }

    /// Registers every irqfd not yet registered with the attached VM.
    fn register_irqfds(&mut self) {
        let Some(vm) = &self.vm else {
            return;
        };
        for (&gsi, irqfd) in self.irqfds.iter_mut().filter(|(_, i)| !i.registered) {
            match vm.register_irqfd(&irqfd.fd, gsi as u32) {
                Ok(()) => irqfd.registered = true,
                Err(e) => tracing::warn!(gsi, "irqfd not registered (KVM_SIGNAL_MSI instead): {e}"),
            }
        }
    }

    /// Whether a message `message` from `gsi` can go through its irqfd now.
    fn irqfd_for(&self, gsi: usize, message: MsiMessage) -> Option<&EventFd> {
        let irqfd = self.irqfds.get(&gsi)?;
        let routed = self.routes.get(gsi) == Some(&Some(message));
        let deliverable = match self.vm {
            // KVM injects what waits in the eventfd once the irqfd is registered.
            None => true,
            Some(_) => self.in_kvm && irqfd.registered,
        };
        (routed && deliverable).then_some(&irqfd.fd)
    }
}

/// Delivers interrupts to whichever KVM VM is current (a reboot creates a new one): the
/// IOAPIC's messages through `KVM_SIGNAL_MSI`, MSI-X vectors through irqfds on GSI routes.
#[derive(Default)]
pub struct MsiRouter {
    table: Mutex<Table>,
    counters: DeliveryCounters,
}

impl MsiRouter {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes later interrupts to `vm`, giving it the routing table and the irqfds; `None`
    /// detaches (the VM is going away) and drops messages still waiting for it.
    pub fn attach(&self, vm: Option<Arc<dyn IrqRouting>>) {
        let mut table = self.table();
        if let Some(old) = table.vm.take() {
            for (&gsi, irqfd) in table.irqfds.iter_mut().filter(|(_, i)| i.registered) {
                if let Err(e) = old.unregister_irqfd(&irqfd.fd, gsi as u32) {
                    tracing::debug!(gsi, "irqfd not unregistered: {e}");
                }
                irqfd.registered = false;
            }
        }
        table.in_kvm = false;
        if vm.is_none() {
            // A message for the old VM must not reach the next one: read the counts back.
            for irqfd in table.irqfds.values() {
                let _ = irqfd.fd.read();
            }
            return;
        }
        table.vm = vm;
        // Routes before irqfds: registering an irqfd injects what waits in it.
        if let Err(e) = table.push() {
            tracing::warn!("cannot install the GSI routes: {e}");
        }
        table.register_irqfds();
    }

    /// Delivery counts by path: `msix_irqfd`, `msix_signal_msi` (MSI-X without a usable
    /// irqfd) and `ioapic_signal_msi`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let c = &self.counters;
        [
            ("msix_irqfd", &c.msix_irqfd),
            ("msix_signal_msi", &c.msix_signal_msi),
            ("ioapic_signal_msi", &c.ioapic_signal_msi),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.load(Ordering::Relaxed)))
        .collect()
    }

    fn signal(&self, message: MsiMessage) -> io::Result<()> {
        let vm = self.table().vm.clone();
        match vm {
            Some(vm) => vm.signal_msi(message.address, message.data),
            None => Ok(()),
        }
    }
}

impl MsiSink for MsiRouter {
    fn send_msi(&self, address: u64, data: u32) -> io::Result<()> {
        self.counters
            .ioapic_signal_msi
            .fetch_add(1, Ordering::Relaxed);
        self.signal(MsiMessage { address, data })
    }

    fn send_routed(&self, source: usize, message: MsiMessage) -> io::Result<()> {
        {
            let table = self.table();
            if let Some(fd) = table.irqfd_for(source, message) {
                fd.write(1)?;
                self.counters.msix_irqfd.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        self.counters
            .msix_signal_msi
            .fetch_add(1, Ordering::Relaxed);
        self.signal(message)
    }

    fn route_changed(&self, source: usize, message: Option<MsiMessage>) -> io::Result<()> {
        if source >= MAX_GSIS {
            return Err(io::Error::other(format!(
                "GSI {source} is past KVM's {MAX_GSIS} routes"
            )));
        }
        let mut table = self.table();
        if table.routes.len() <= source {
            table.routes.resize(source + 1, None);
        }
        if table.routes[source] == message {
            return Ok(());
        }
        table.routes[source] = message;
        if source >= FIRST_MSIX_GSI && message.is_some() && !table.irqfds.contains_key(&source) {
            let fd = EventFd::new(EFD_NONBLOCK)?;
            table.irqfds.insert(
                source,
                IrqFd {
                    fd,
                    registered: false,
                },
            );
        }
        let pushed = table.push();
        table.register_irqfds();
        pushed
    }
}

/// Gives each MSI-X function consecutive GSIs from [`FIRST_MSIX_GSI`], calling
/// `set_base(function, Some(first GSI))`, in order; a function whose vectors would pass
/// [`MAX_GSIS`] gets `None` (its messages go through `KVM_SIGNAL_MSI`).
pub fn assign_msix_gsis(vector_counts: &[u16], mut set_base: impl FnMut(usize, Option<usize>)) {
    let mut next = FIRST_MSIX_GSI;
    for (function, &vectors) in vector_counts.iter().enumerate() {
        let end = next + usize::from(vectors);
        if end <= MAX_GSIS {
            set_base(function, Some(next));
            next = end;
        } else {
            tracing::warn!(function, "no GSIs left for its MSI-X vectors");
            set_base(function, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VM that records what the router asks of it.
    #[derive(Default)]
    struct FakeVm {
        tables: Mutex<Vec<Vec<(u32, u64, u32)>>>,
        irqfds: Mutex<Vec<u32>>,
        signalled: Mutex<Vec<(u64, u32)>>,
        fail_routes: std::sync::atomic::AtomicBool,
    }

    impl IrqRouting for FakeVm {
        fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> io::Result<()> {
            if self.fail_routes.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected routing failure"));
            }
            self.tables.lock().unwrap().push(routes.to_vec());
            Ok(())
        }

        fn register_irqfd(&self, _fd: &EventFd, gsi: u32) -> io::Result<()> {
            self.irqfds.lock().unwrap().push(gsi);
            Ok(())
        }

        fn unregister_irqfd(&self, _fd: &EventFd, gsi: u32) -> io::Result<()> {
            self.irqfds.lock().unwrap().retain(|&g| g != gsi);
            Ok(())
        }

        fn signal_msi(&self, address: u64, data: u32) -> io::Result<()> {
            self.signalled.lock().unwrap().push((address, data));
            Ok(())
        }
    }

    impl FakeVm {
        fn last_table(&self) -> Vec<(u32, u64, u32)> {
            self.tables
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    fn message(data: u32) -> MsiMessage {
        MsiMessage {
            address: 0xFEE0_0000,
            data,
        }
    }

    fn attached() -> (MsiRouter, Arc<FakeVm>) {
        let router = MsiRouter::default();
        let vm = Arc::new(FakeVm::default());
        router.attach(Some(vm.clone()));
        (router, vm)
    }

    fn irqfd_count(router: &MsiRouter, gsi: usize) -> u64 {
        router.table().irqfds[&gsi].fd.read().unwrap_or(0)
    }

    #[test]
    fn ioapic_and_msix_routes_share_one_table() {
        let (router, vm) = attached();

        router.route_changed(4, Some(message(0x30))).unwrap();
        router.route_changed(25, Some(message(0x41))).unwrap();

        assert_eq!(
            vm.last_table(),
            vec![(4, 0xFEE0_0000, 0x30), (25, 0xFEE0_0000, 0x41)]
        );
        assert_eq!(*vm.irqfds.lock().unwrap(), vec![25]);
    }

    #[test]
    fn a_removed_route_leaves_the_table_but_keeps_the_others() {
        let (router, vm) = attached();
        router.route_changed(4, Some(message(0x30))).unwrap();
        router.route_changed(25, Some(message(0x41))).unwrap();

        router.route_changed(25, None).unwrap();

        assert_eq!(vm.last_table(), vec![(4, 0xFEE0_0000, 0x30)]);
    }

    #[test]
    fn msix_messages_go_through_the_irqfd_and_nothing_is_signalled() {
        let (router, vm) = attached();
        router.route_changed(24, Some(message(0x41))).unwrap();

        router.send_routed(24, message(0x41)).unwrap();
        router.send_routed(24, message(0x41)).unwrap();

        assert_eq!(irqfd_count(&router, 24), 2);
        assert!(vm.signalled.lock().unwrap().is_empty());
        assert_eq!(router.counters()["msix_irqfd"], 2);
        assert_eq!(router.counters()["msix_signal_msi"], 0);
    }

    #[test]
    fn a_message_that_differs_from_the_route_is_signalled() {
        let (router, vm) = attached();
        router.route_changed(24, Some(message(0x41))).unwrap();

        router.send_routed(24, message(0x42)).unwrap();

        assert_eq!(*vm.signalled.lock().unwrap(), vec![(0xFEE0_0000, 0x42)]);
        assert_eq!(router.counters()["msix_signal_msi"], 1);
    }

    #[test]
    fn after_a_failed_routing_update_messages_are_signalled() {
        let (router, vm) = attached();
        vm.fail_routes.store(true, Ordering::SeqCst);

        assert!(router.route_changed(24, Some(message(0x41))).is_err());
        router.send_routed(24, message(0x41)).unwrap();

        assert_eq!(*vm.signalled.lock().unwrap(), vec![(0xFEE0_0000, 0x41)]);
    }

    #[test]
    fn ioapic_pins_get_no_irqfd_and_their_messages_are_signalled() {
        let (router, vm) = attached();
        router.route_changed(16, Some(message(0x50))).unwrap();

        router.send_msi(0xFEE0_0000, 0x50).unwrap();

        assert!(vm.irqfds.lock().unwrap().is_empty());
        assert_eq!(*vm.signalled.lock().unwrap(), vec![(0xFEE0_0000, 0x50)]);
        assert_eq!(router.counters()["ioapic_signal_msi"], 1);
    }

    #[test]
    fn routes_and_messages_from_before_attach_reach_the_vm() {
        // Arrange: a restore announces routes and sends before the VM exists
        let router = MsiRouter::default();
        router.route_changed(2, Some(message(0x30))).unwrap();
        router.route_changed(26, Some(message(0x43))).unwrap();
        router.send_routed(26, message(0x43)).unwrap();
        let vm = Arc::new(FakeVm::default());

        // Act
        router.attach(Some(vm.clone()));

        // Assert: whole table, irqfd registered, the message waits in it for KVM
        assert_eq!(
            vm.last_table(),
            vec![(2, 0xFEE0_0000, 0x30), (26, 0xFEE0_0000, 0x43)]
        );
        assert_eq!(*vm.irqfds.lock().unwrap(), vec![26]);
        assert_eq!(irqfd_count(&router, 26), 1);
    }

    #[test]
    fn a_new_vm_gets_the_table_and_old_messages_are_dropped() {
        let (router, old) = attached();
        router.route_changed(24, Some(message(0x41))).unwrap();
        router.attach(None);
        router.send_routed(24, message(0x41)).unwrap();
        assert!(old.irqfds.lock().unwrap().is_empty());

        router.attach(None);
        let new = Arc::new(FakeVm::default());
        router.attach(Some(new.clone()));

        assert_eq!(new.last_table(), vec![(24, 0xFEE0_0000, 0x41)]);
        assert_eq!(*new.irqfds.lock().unwrap(), vec![24]);
        assert_eq!(irqfd_count(&router, 24), 0);
    }

    #[test]
    fn gsis_past_kvms_limit_are_refused() {
        let router = MsiRouter::default();

        assert!(router.route_changed(MAX_GSIS, Some(message(1))).is_err());
    }

    #[test]
    fn functions_get_consecutive_gsis_until_kvms_limit() {
        let mut bases = Vec::new();

        assign_msix_gsis(&[2, 4, 5000, 1], |function, base| {
            bases.push((function, base))
        });

        assert_eq!(
            bases,
            vec![(0, Some(24)), (1, Some(26)), (2, None), (3, Some(30))]
        );
    }
}
