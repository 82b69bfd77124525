//! virtio-blk behind the PCI transport on a 64 KiB in-memory disk, driven by a hostile guest
//! script: every request type, any sector, any buffer layout.
#![no_main]

use std::io;

use libfuzzer_sys::fuzz_target;
use storage::DiskBackend;
use virtio::block::{Block, BlockOptions};

struct MemoryDisk(Vec<u8>);

impl MemoryDisk {
    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
        if end > self.0.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(start..end)
    }
}

impl DiskBackend for MemoryDisk {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.0[range]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let range = self.range(offset, buf.len())?;
        self.0[range].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _may_unmap: bool) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        let range = self.range(offset, len)?;
        self.0[range].fill(0);
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        false
    }
}

fuzz_target!(|data: &[u8]| {
    let options = BlockOptions {
        serial: Some("fuzz".into()),
        rate_limiter: None,
    };
    let Ok(device) = Block::new(Box::new(MemoryDisk(vec![0xA5; 0x1_0000])), options) else {
        return;
    };
    oxvirt_fuzz::run_device_script(device, oxvirt_fuzz::guest_memory(), data);
});
