//! A real Linux guest (QEMU TCG, `vhost-user-blk-pci`) uses three disks served by
//! `oxvmm-vhost-user blk`: raw reads and writes, a file system, and a read-only disk.

mod common;

use std::process::Command;

use common::{Backend, Guest, TempDir, initramfs, sha256, vhost_user_device};

const MIB: usize = 1 << 20;
/// Where the host plants data the guest reads back (in 4 KiB blocks: 1 MiB).
const PLANTED_BLOCK: usize = 256;
/// Where the guest writes (in 4 KiB blocks: 2 MiB), and how many blocks.
const WRITTEN_BLOCK: usize = 512;
const WRITTEN_BLOCKS: usize = 64;
/// The MiB the guest discards (at 8 MiB), planted non-zero by the host.
const DISCARDED: std::ops::Range<usize> = 8 * MIB..9 * MIB;

/// The guest's side: each check prints `RESULT key=value`.
const CHECKS: &str = r#"
for i in $(seq 1 100); do [ -b /dev/vdc ] && break; sleep 0.1; done
echo "RESULT sectors=$(cat /sys/block/vda/size)"
echo "RESULT serial=$(cat /sys/block/vda/serial)"
echo "RESULT planted=$(dd if=/dev/vda bs=4096 skip=256 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)"
dd if=/dev/urandom of=/tmp/data bs=4096 count=64 2>/dev/null
echo "RESULT written=$(sha256sum /tmp/data | cut -d' ' -f1)"
dd if=/tmp/data of=/dev/vda bs=4096 seek=512 oflag=direct conv=fsync 2>/dev/null && echo "RESULT write=ok"
sync
echo 3 > /proc/sys/vm/drop_caches
echo "RESULT reread=$(dd if=/dev/vda bs=4096 skip=512 count=64 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
blkdiscard -o 8388608 -l 1048576 /dev/vda && echo "RESULT discard=ok"
mke2fs -q /dev/vdb && echo "RESULT mke2fs=ok"
mount -t ext2 /dev/vdb /mnt 2>/dev/null || mount -t ext4 /dev/vdb /mnt
echo hello-from-the-guest > /mnt/hello
mkdir /mnt/dir
dd if=/dev/urandom of=/mnt/dir/big bs=1024 count=700 2>/dev/null
echo "RESULT big=$(sha256sum /mnt/dir/big | cut -d' ' -f1)"
umount /mnt && echo "RESULT umount=ok"
sync
echo "RESULT ro=$(cat /sys/block/vdc/ro)"
dd if=/dev/zero of=/dev/vdc bs=512 count=1 oflag=direct 2>/dev/null && echo "RESULT ro_write=accepted" || echo "RESULT ro_write=refused"
"#;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// Runs a host command on `image` and returns its stdout; panics if it fails.
fn host(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (package e2fsprogs): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_linux_guest_reads_writes_and_formats_vhost_user_disks() {
    // Arrange: a data disk with a planted block, an empty disk for a file system, and a
    // read-only disk.
    let dir = TempDir::new("blk");
    let data_image = dir.join("data.img");
    let mut data = vec![0u8; 16 * MIB];
    let planted = pattern(4096, 7);
    data[PLANTED_BLOCK * 4096..][..4096].copy_from_slice(&planted);
    data[DISCARDED].fill(0x5A);
    std::fs::write(&data_image, &data).unwrap();
    let fs_image = dir.join("fs.img");
    std::fs::write(&fs_image, vec![0u8; 16 * MIB]).unwrap();
    let ro_image = dir.join("ro.img");
    let ro_contents = pattern(MIB, 99);
    std::fs::write(&ro_image, &ro_contents).unwrap();
    let mut backends = [
        Backend::start(
            &dir,
            "data",
            "blk",
            &format!("path={},serial=oxvirt-vu-data", data_image.display()),
        ),
        Backend::start(&dir, "fs", "blk", &format!("path={}", fs_image.display())),
        Backend::start(
            &dir,
            "ro",
            "blk",
            &format!("path={},readonly=on", ro_image.display()),
        ),
    ];
    let initrd = dir.join("initramfs.cpio");
    initramfs(&initrd, CHECKS);
    let mut devices = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        devices.extend(vhost_user_device(
            &format!("c{i}"),
            &backend.socket,
            "vhost-user-blk-pci",
            "",
        ));
    }

    // Act
    let guest = Guest::run(&initrd, &devices);

    // Assert: what the guest saw…
    eprintln!("{}\n[back-end log]\n{}", guest.console, backends[0].log());
    guest.assert_modules_loaded();
    assert_eq!(guest.result("sectors"), (16 * MIB / 512).to_string());
    assert_eq!(guest.result("serial"), "oxvirt-vu-data");
    assert_eq!(guest.result("planted"), sha256(&planted));
    assert_eq!(guest.result("write"), "ok");
    assert_eq!(guest.result("reread"), guest.result("written"));
    assert_eq!(guest.result("discard"), "ok");
    assert_eq!(guest.result("mke2fs"), "ok");
    assert_eq!(guest.result("umount"), "ok");
    assert_eq!(guest.result("ro"), "1");
    assert_eq!(guest.result("ro_write"), "refused");
    // …and what is on the host files after power-off.
    let data_after = std::fs::read(&data_image).unwrap();
    let written = &data_after[WRITTEN_BLOCK * 4096..][..WRITTEN_BLOCKS * 4096];
    assert_eq!(sha256(written), guest.result("written"));
    assert_eq!(&data_after[PLANTED_BLOCK * 4096..][..4096], &planted[..]);
    assert!(
        data_after[DISCARDED].iter().all(|&b| b == 0),
        "the discarded range still holds data (a hole is punched in the image)"
    );
    let fs_path = fs_image.to_str().unwrap();
    host("e2fsck", &["-fn", fs_path]);
    assert_eq!(
        host("debugfs", &["-R", "cat /hello", fs_path]).trim(),
        "hello-from-the-guest"
    );
    let big = dir.join("big");
    let dump = format!("dump /dir/big {}", big.display());
    host("debugfs", &["-R", &dump, fs_path]);
    assert_eq!(sha256(&std::fs::read(&big).unwrap()), guest.result("big"));
    assert!(
        std::fs::read(&ro_image).unwrap() == ro_contents,
        "read-only disk changed"
    );
    for backend in &mut backends {
        backend.assert_alive();
    }
}
