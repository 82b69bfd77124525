//! The virtio-blk benchmarks (`blk-bench-seq-read`, `blk-bench-seq-write`,
//! `blk-bench-rand-read`; guest side in `oxguest/blk_bench.h`): their command line, the stamps
//! a host plants in the disk and checks after a write run, the random offsets, and the parser
//! of their result line.
//!
//! The disk is stamped in blocks of [`BLK_BENCH_BLOCK`] bytes: bytes 0..8 of a block hold its
//! byte offset on the disk, bytes 8..16 a tag ([`BLK_BENCH_HOST_TAG`] where the host planted
//! it, [`BLK_BENCH_GUEST_TAG`] where `blk-bench-seq-write` wrote it), both little-endian.

use std::fmt;

use super::blk::splitmix64;

/// Reads `bench-mib` MiB from offset 0, in requests of `bench-req-kib` KiB.
pub const BLK_BENCH_SEQ_READ: &str = "blk-bench-seq-read";
/// Writes the same range the same way, stamping every block with [`BLK_BENCH_GUEST_TAG`].
pub const BLK_BENCH_SEQ_WRITE: &str = "blk-bench-seq-write";
/// Reads `bench-mib` MiB in requests at [`blk_bench_rand_offsets`].
pub const BLK_BENCH_RAND_READ: &str = "blk-bench-rand-read";

/// Size of a stamped block, and the unit request sizes are multiples of.
pub const BLK_BENCH_BLOCK: usize = 4096;
/// Tag of the blocks a host plants ("oblkhost" as a little-endian word).
pub const BLK_BENCH_HOST_TAG: u64 = 0x7473_6f68_6b6c_626f;
/// Tag of the blocks `blk-bench-seq-write` writes ("oblkgues" as a little-endian word).
pub const BLK_BENCH_GUEST_TAG: u64 = 0x7365_7567_6b6c_626f;
/// Seed of the random offsets of `blk-bench-rand-read`.
pub const BLK_BENCH_RAND_SEED: u64 = 0x6f78_626c_6b72_616e;
/// Largest `bench-mib`.
pub const BLK_BENCH_MAX_MIB: u32 = 65536;
/// Largest `bench-req-kib` (it must also be a multiple of 4).
pub const BLK_BENCH_MAX_REQ_KIB: u32 = 4096;
/// Largest `bench-qd`: the guest driver's request slots.
pub const BLK_BENCH_MAX_QD: u32 = 8;
/// `bench-mib` when the command line has none.
pub const BLK_BENCH_DEFAULT_MIB: u32 = 64;
/// `bench-req-kib` of the sequential benchmarks when the command line has none.
pub const BLK_BENCH_DEFAULT_SEQ_REQ_KIB: u32 = 128;
/// `bench-req-kib` of the random benchmark when the command line has none.
pub const BLK_BENCH_DEFAULT_RAND_REQ_KIB: u32 = 4;
/// `bench-qd` when the command line has none.
pub const BLK_BENCH_DEFAULT_QD: u32 = 4;

/// What one benchmark run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkBenchParams {
    /// Bytes moved in all (`bench-mib`, in MiB).
    pub mib: u32,
    /// Bytes per request (`bench-req-kib`, in KiB).
    pub req_kib: u32,
    /// Requests in flight (`bench-qd`).
    pub qd: u32,
}

impl BlkBenchParams {
    /// Bytes moved in all.
    pub fn bytes(&self) -> u64 {
        u64::from(self.mib) << 20
    }

    /// Bytes per request.
    pub fn req_bytes(&self) -> u64 {
        u64::from(self.req_kib) << 10
    }

    /// Requests in all (the guest refuses parameters that leave a remainder).
    pub fn requests(&self) -> u64 {
        self.bytes() / self.req_bytes().max(1)
    }

    /// The guest's command-line words for `scenario` with these parameters.
    pub fn cmdline(&self, scenario: &str) -> String {
        format!(
            "{scenario} bench-mib={} bench-req-kib={} bench-qd={}",
            self.mib, self.req_kib, self.qd
        )
    }
}

/// Writes the stamps of the blocks of `data`, which lies at byte `offset` of the disk
/// (`offset` and `data.len()` multiples of [`BLK_BENCH_BLOCK`]; a shorter last block gets
/// what fits of its stamp).
pub fn blk_bench_stamp(data: &mut [u8], offset: u64, tag: u64) {
    for (i, block) in data.chunks_mut(BLK_BENCH_BLOCK).enumerate() {
        let mut stamp = [0u8; 16];
        stamp[..8].copy_from_slice(&block_offset(offset, i).to_le_bytes());
        stamp[8..].copy_from_slice(&tag.to_le_bytes());
        let n = block.len().min(stamp.len());
        block[..n].copy_from_slice(&stamp[..n]);
    }
}

fn block_offset(offset: u64, index: usize) -> u64 {
    offset.wrapping_add((index as u64).wrapping_mul(BLK_BENCH_BLOCK as u64))
}

/// A block whose stamp is not what it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkBenchBadStamp {
    /// Where the block lies on the disk.
    pub offset: u64,
    /// The offset word it holds.
    pub found_offset: u64,
    /// The tag word it holds.
    pub found_tag: u64,
}

impl fmt::Display for BlkBenchBadStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block at offset {} holds stamp offset {:#x} tag {:#x}",
            self.offset, self.found_offset, self.found_tag
        )
    }
}

/// Checks the stamps of the whole blocks of `data`, which lies at byte `offset` of the disk:
/// each must hold its own offset and, when `tag` is given, that tag.
pub fn blk_bench_check_stamps(
    data: &[u8],
    offset: u64,
    tag: Option<u64>,
) -> Result<(), BlkBenchBadStamp> {
    for (i, block) in data.chunks_exact(BLK_BENCH_BLOCK).enumerate() {
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&block[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        let (found_offset, found_tag) = (word(0), word(8));
        let expected = block_offset(offset, i);
        if found_offset != expected || tag.is_some_and(|tag| tag != found_tag) {
            return Err(BlkBenchBadStamp {
                offset: expected,
                found_offset,
                found_tag,
            });
        }
    }
    Ok(())
}

/// The offsets `blk-bench-rand-read` reads, in order, on a disk of `disk_bytes` bytes with
/// requests of `req_bytes`: `(x % (disk_bytes / req_bytes)) * req_bytes` for each next value
/// `x` of splitmix64 seeded with [`BLK_BENCH_RAND_SEED`]. Empty when no request fits.
pub fn blk_bench_rand_offsets(disk_bytes: u64, req_bytes: u64) -> impl Iterator<Item = u64> {
    let places = disk_bytes.checked_div(req_bytes).unwrap_or(0);
    let mut state = BLK_BENCH_RAND_SEED;
    std::iter::from_fn(move || (places > 0).then(|| splitmix64(&mut state) % places * req_bytes))
}

/// What `TEST blk-bench-* PASS ...` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkBenchReport {
    /// Bytes moved.
    pub bytes: u64,
    /// Nanoseconds on the guest's calibrated TSC, from the first request started to the last
    /// one completed.
    pub ns: u64,
    pub requests: u64,
    pub req_bytes: u32,
    pub qd: u32,
}

impl BlkBenchReport {
    /// Throughput in MiB/s (0 for a run that took no time).
    pub fn mib_per_s(&self) -> f64 {
        per_second(self.bytes as f64 / f64::from(1u32 << 20), self.ns)
    }

    /// Requests per second (0 for a run that took no time).
    pub fn iops(&self) -> f64 {
        per_second(self.requests as f64, self.ns)
    }
}

fn per_second(amount: f64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        amount * 1e9 / ns as f64
    }
}

/// Where a benchmark's request loop spent its time, from the line it prints before its `TEST`
/// line: `oxguest: <scenario> submit_ns=N wait_ns=N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkBenchTimes {
    /// Starting requests: building the chains and notifying the device (its exit included).
    pub submit_ns: u64,
    /// Polling for completions.
    pub wait_ns: u64,
}

/// Parses the [`BlkBenchTimes`] line of `scenario`; `None` for any other line.
pub fn parse_blk_bench_times_line(line: &str, scenario: &str) -> Option<BlkBenchTimes> {
    let rest = line
        .strip_prefix("oxguest: ")?
        .strip_prefix(scenario)?
        .strip_prefix(' ')?;
    let [submit_ns, wait_ns] = super::blk::key_values(rest, ["submit_ns", "wait_ns"])?;
    Some(BlkBenchTimes {
        submit_ns: submit_ns.parse().ok()?,
        wait_ns: wait_ns.parse().ok()?,
    })
}

/// Parses the details of `TEST blk-bench-* PASS bytes=N ns=N requests=N req_bytes=N qd=N`.
pub fn parse_blk_bench_details(details: &str) -> Option<BlkBenchReport> {
    let keys = ["bytes", "ns", "requests", "req_bytes", "qd"];
    let [bytes, ns, requests, req_bytes, qd] = super::blk::key_values(details, keys)?;
    Some(BlkBenchReport {
        bytes: bytes.parse().ok()?,
        ns: ns.parse().ok()?,
        requests: requests.parse().ok()?,
        req_bytes: req_bytes.parse().ok()?,
        qd: qd.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::c_define_u64;

    const HEADER: &str = include_str!("../../oxguest/blk_bench.h");

    fn header_u64(name: &str) -> u64 {
        c_define_u64(HEADER, name)
    }

    #[test]
    fn constants_match_the_guest() {
        let pairs = [
            ("BLK_BENCH_BLOCK", BLK_BENCH_BLOCK as u64),
            ("BLK_BENCH_HOST_TAG", BLK_BENCH_HOST_TAG),
            ("BLK_BENCH_GUEST_TAG", BLK_BENCH_GUEST_TAG),
            ("BLK_BENCH_RAND_SEED", BLK_BENCH_RAND_SEED),
            ("BLK_BENCH_MAX_MIB", BLK_BENCH_MAX_MIB.into()),
            ("BLK_BENCH_MAX_REQ_KIB", BLK_BENCH_MAX_REQ_KIB.into()),
            ("BLK_BENCH_MAX_QD", BLK_BENCH_MAX_QD.into()),
            ("BLK_BENCH_DEFAULT_MIB", BLK_BENCH_DEFAULT_MIB.into()),
            (
                "BLK_BENCH_DEFAULT_SEQ_REQ_KIB",
                BLK_BENCH_DEFAULT_SEQ_REQ_KIB.into(),
            ),
            (
                "BLK_BENCH_DEFAULT_RAND_REQ_KIB",
                BLK_BENCH_DEFAULT_RAND_REQ_KIB.into(),
            ),
            ("BLK_BENCH_DEFAULT_QD", BLK_BENCH_DEFAULT_QD.into()),
        ];

        for (name, value) in pairs {
            assert_eq!(header_u64(name), value, "{name}");
        }
    }

    #[test]
    fn tags_spell_their_names() {
        assert_eq!(&BLK_BENCH_HOST_TAG.to_le_bytes(), b"oblkhost");
        assert_eq!(&BLK_BENCH_GUEST_TAG.to_le_bytes(), b"oblkgues");
    }

    #[test]
    fn params_build_the_command_line() {
        let params = BlkBenchParams {
            mib: 256,
            req_kib: 128,
            qd: 4,
        };

        let cmdline = params.cmdline(BLK_BENCH_SEQ_READ);

        assert_eq!(
            cmdline,
            "blk-bench-seq-read bench-mib=256 bench-req-kib=128 bench-qd=4"
        );
        assert_eq!(
            (params.bytes(), params.req_bytes(), params.requests()),
            (256 << 20, 128 << 10, 2048)
        );
    }

    #[test]
    fn stamps_round_trip() {
        let mut data = vec![0xA5u8; 3 * BLK_BENCH_BLOCK];

        blk_bench_stamp(&mut data, 8192, BLK_BENCH_HOST_TAG);

        assert_eq!(data[..8], 8192u64.to_le_bytes());
        assert_eq!(
            data[BLK_BENCH_BLOCK..BLK_BENCH_BLOCK + 8],
            12288u64.to_le_bytes()
        );
        assert_eq!(data[16], 0xA5, "only 16 bytes per block change");
        assert_eq!(
            blk_bench_check_stamps(&data, 8192, Some(BLK_BENCH_HOST_TAG)),
            Ok(())
        );
        assert_eq!(blk_bench_check_stamps(&data, 8192, None), Ok(()));
    }

    #[test]
    fn check_names_the_first_bad_block() {
        let mut data = vec![0u8; 2 * BLK_BENCH_BLOCK];
        blk_bench_stamp(&mut data, 0, BLK_BENCH_HOST_TAG);

        let wrong_tag = blk_bench_check_stamps(&data, 0, Some(BLK_BENCH_GUEST_TAG));
        let wrong_place = blk_bench_check_stamps(&data, 4096, None);

        assert_eq!(
            wrong_tag,
            Err(BlkBenchBadStamp {
                offset: 0,
                found_offset: 0,
                found_tag: BLK_BENCH_HOST_TAG
            })
        );
        assert_eq!(wrong_place.map_err(|bad| bad.offset), Err(4096));
    }

    #[test]
    fn rand_offsets_are_aligned_inside_the_disk_and_follow_splitmix64() {
        let disk = 64 << 20;
        let mut state = BLK_BENCH_RAND_SEED;

        let offsets: Vec<u64> = blk_bench_rand_offsets(disk, 4096).take(1000).collect();

        assert_eq!(offsets[0], splitmix64(&mut state) % (disk / 4096) * 4096);
        assert!(offsets.iter().all(|&o| o % 4096 == 0 && o + 4096 <= disk));
        let distinct: std::collections::HashSet<_> = offsets.iter().collect();
        assert!(distinct.len() > 950, "{} distinct", distinct.len());
    }

    #[test]
    fn rand_offsets_are_empty_when_no_request_fits() {
        assert_eq!(blk_bench_rand_offsets(4095, 4096).next(), None);
        assert_eq!(blk_bench_rand_offsets(4096, 0).next(), None);
    }

    #[test]
    fn parses_the_times_line() {
        let line = "oxguest: blk-bench-rand-read submit_ns=2751799 wait_ns=64404112\n";

        let times = parse_blk_bench_times_line(line, BLK_BENCH_RAND_READ);

        assert_eq!(
            times,
            Some(BlkBenchTimes {
                submit_ns: 2_751_799,
                wait_ns: 64_404_112
            })
        );
        assert!(parse_blk_bench_times_line(line, BLK_BENCH_SEQ_READ).is_none());
        assert!(
            parse_blk_bench_times_line(
                "oxguest: blk-bench-rand-read submit_ns=1",
                BLK_BENCH_RAND_READ
            )
            .is_none()
        );
    }

    #[test]
    fn parses_the_report() {
        let details = "bytes=268435456 ns=433036818 requests=2048 req_bytes=131072 qd=4";

        let report = parse_blk_bench_details(details).expect("a report");

        assert_eq!(
            report,
            BlkBenchReport {
                bytes: 268_435_456,
                ns: 433_036_818,
                requests: 2048,
                req_bytes: 131_072,
                qd: 4
            }
        );
        assert!(
            (report.mib_per_s() - 591.2).abs() < 0.1,
            "{}",
            report.mib_per_s()
        );
        assert!((report.iops() - 4729.4).abs() < 0.1, "{}", report.iops());
        assert!(parse_blk_bench_details("bytes=1 ns=2 requests=3 req_bytes=4").is_none());
        assert!(parse_blk_bench_details("no virtio-blk device").is_none());
    }
}
