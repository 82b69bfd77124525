use kvm_bindings::{
    KVM_CAP_SPLIT_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
    KvmIrqRouting, kvm_enable_cap, kvm_irq_routing_entry, kvm_irq_routing_msi, kvm_msi,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::{HypervisorError, Result, vcpu::Vcpu};

/// Pins the userspace IOAPIC may route through KVM (the 82093AA has 24).
const IOAPIC_PINS: u64 = 24;
/// KVM slot number of the first ROM slot: RAM slots count up from 0 and never get this far.
const FIRST_ROM_SLOT: u32 = 256;

/// One guest-physical range backed by host memory.
#[derive(Clone, Copy, Debug)]
pub struct MemorySlot {
    /// Guest physical address of the first byte.
    pub guest_addr: u64,
    /// Length in bytes (a multiple of the page size).
    pub size: u64,
    /// Host virtual address of the first byte.
    pub host_addr: u64,
}

/// A KVM virtual machine.
pub struct Vm {
    fd: VmFd,
    /// RAM slots; slot `i` is KVM slot `i` (dirty logging walks these).
    slots: Vec<MemorySlot>,
    /// ROM slots so far (KVM slots `FIRST_ROM_SLOT..`).
    roms: u32,
}

impl Vm {
    pub(crate) fn new(fd: VmFd, tss_addr: u64, identity_map_addr: u64) -> Result<Self> {
        fd.set_identity_map_address(identity_map_addr)
            .map_err(HypervisorError::ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
        let tss = usize::try_from(tss_addr).map_err(|_| HypervisorError::Ioctl {
            operation: "KVM_SET_TSS_ADDR",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        fd.set_tss_address(tss)
            .map_err(HypervisorError::ioctl("KVM_SET_TSS_ADDR"))?;
        let split_irqchip = kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            args: [IOAPIC_PINS, 0, 0, 0],
            ..Default::default()
        };
        fd.enable_cap(&split_irqchip)
            .map_err(HypervisorError::ioctl(
                "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)",
            ))?;
        Ok(Vm {
            fd,
            slots: Vec::new(),
            roms: 0,
        })
    }

    /// Makes `slot` guest memory.
    ///
    /// # Safety
    ///
    /// `slot.host_addr .. slot.host_addr + slot.size` must be a mapping that stays valid (not
    /// unmapped or remapped) for as long as this VM exists: the guest reads and writes it.
    pub unsafe fn add_memory(&mut self, slot: MemorySlot) -> Result<()> {
        let index = self.slots.len() as u32;
        // SAFETY: the caller guarantees the host range outlives the VM (this function's contract).
        unsafe { self.register_slot(index, slot, 0) }?;
        self.slots.push(slot);
        Ok(())
    }

    /// Maps `slot` as ROM: the guest reads its bytes, and its writes exit to userspace as MMIO
    /// writes instead of changing them. Returns `false` (and maps nothing) when this host's KVM
    /// cannot map memory read-only (`KVM_CAP_READONLY_MEM`). ROM slots are not dirty-logged.
    ///
    /// # Safety
    ///
    /// As `add_memory`: the host range must stay mapped while the VM exists.
    pub unsafe fn add_rom(&mut self, slot: MemorySlot) -> Result<bool> {
        if !self.fd.check_extension(Cap::ReadonlyMem) {
            return Ok(false);
        }
        let index = FIRST_ROM_SLOT + self.roms;
        // SAFETY: the caller guarantees the host range outlives the VM (this function's contract).
        unsafe { self.register_slot(index, slot, KVM_MEM_READONLY) }?;
        self.roms += 1;
        Ok(true)
    }

    /// Maps `slot` as writable memory that is not guest RAM (no dirty logging): firmware on a
    /// host whose KVM cannot map it read-only.
    ///
    /// # Safety
    ///
    /// As `add_memory`: the host range must stay mapped while the VM exists.
    pub unsafe fn add_writable_rom(&mut self, slot: MemorySlot) -> Result<()> {
        let index = FIRST_ROM_SLOT + self.roms;
        // SAFETY: the caller guarantees the host range outlives the VM (this function's contract).
        unsafe { self.register_slot(index, slot, 0) }?;
        self.roms += 1;
        Ok(())
    }

    /// # Safety
    ///
    /// As `add_memory`: the host range must stay mapped while the VM exists.
    unsafe fn register_slot(&self, index: u32, slot: MemorySlot, flags: u32) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: index,
            flags,
            guest_phys_addr: slot.guest_addr,
            memory_size: slot.size,
            userspace_addr: slot.host_addr,
        };
        // SAFETY: forwarded from the caller's guarantee.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(HypervisorError::ioctl("KVM_SET_USER_MEMORY_REGION"))
    }

    /// Starts logging the pages the guest writes in every memory slot (for diff snapshots).
    pub fn enable_dirty_log(&self) -> Result<()> {
        for (index, slot) in self.slots.iter().enumerate() {
            // SAFETY: the same ranges `add_memory` registered under its contract, with a flag
            // added.
            unsafe { self.register_slot(index as u32, *slot, KVM_MEM_LOG_DIRTY_PAGES) }?;
        }
        Ok(())
    }

    /// For each memory slot, the bitmap of pages written since the last call (or since
    /// `enable_dirty_log`), one bit per 4 KiB page; reading clears it.
    pub fn take_dirty_log(&self) -> Result<Vec<Vec<u64>>> {
        self.slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                self.fd
                    .get_dirty_log(index as u32, slot.size as usize)
                    .map_err(HypervisorError::ioctl("KVM_GET_DIRTY_LOG"))
            })
            .collect()
    }

    pub(crate) fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Creates vCPU `index`; its APIC ID is `index`, and vCPU 0 is the bootstrap processor.
    pub fn create_vcpu(&self, index: u8) -> Result<Vcpu> {
        let fd = self
            .fd
            .create_vcpu(u64::from(index))
            .map_err(HypervisorError::ioctl("KVM_CREATE_VCPU"))?;
        Ok(Vcpu::new(fd, index))
    }

    /// Injects a message-signalled interrupt (`KVM_SIGNAL_MSI`).
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<()> {
        let msi = kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        self.fd
            .signal_msi(msi)
            .map_err(HypervisorError::ioctl("KVM_SIGNAL_MSI"))?;
        Ok(())
    }

    /// Replaces the VM's GSI routing table with MSI routes `(gsi, address, data)`. With the
    /// split irqchip, KVM reports the EOI of a level-triggered vector to userspace only when a
    /// route below the IOAPIC's pin count carries it.
    pub fn set_msi_routes(&self, routes: &[(u32, u64, u32)]) -> Result<()> {
        let entries: Vec<kvm_irq_routing_entry> = routes
            .iter()
            .map(|&(gsi, address, data)| {
                let mut entry = kvm_irq_routing_entry {
                    gsi,
                    type_: KVM_IRQ_ROUTING_MSI,
                    ..Default::default()
                };
                entry.u.msi = kvm_irq_routing_msi {
                    address_lo: address as u32,
                    address_hi: (address >> 32) as u32,
                    data,
                    ..Default::default()
                };
                entry
            })
            .collect();
        let routing =
            KvmIrqRouting::from_entries(&entries).map_err(|_| HypervisorError::Ioctl {
                operation: "KVM_SET_GSI_ROUTING (too many routes)",
                source: std::io::Error::from_raw_os_error(libc::E2BIG),
            })?;
        self.fd
            .set_gsi_routing(&routing)
            .map_err(HypervisorError::ioctl("KVM_SET_GSI_ROUTING"))
    }

    /// Makes a write to `fd` inject the interrupt GSI `gsi` routes to (`KVM_IRQFD`): with an MSI
    /// route, a device thread interrupts a vCPU without a system call into the VMM's vCPU
    /// thread. A GSI with no route yet injects nothing.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(HypervisorError::ioctl("KVM_IRQFD"))
    }

    /// Undoes `register_irqfd`.
    pub fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .unregister_irqfd(fd, gsi)
            .map_err(HypervisorError::ioctl("KVM_IRQFD (deassign)"))
    }

    /// Makes KVM signal `fd` on any guest write to the MMIO address `addr`, instead of exiting
    /// to userspace (queue notifications).
    pub fn register_mmio_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(HypervisorError::ioctl("KVM_IOEVENTFD"))
    }

    /// Undoes `register_mmio_ioevent`.
    pub fn unregister_mmio_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(HypervisorError::ioctl("KVM_IOEVENTFD (deassign)"))
    }
}
