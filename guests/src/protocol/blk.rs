//! The virtio-blk scenarios (`blk-info`, `blk-read`, `blk-write`, `blk-ro`, `blk-mixed`,
//! `blk-discard`; guest side in `oxguest/blk_scenarios.h`): what a host plants in the disk
//! image before boot, what it finds there after the guest powered off, and the parsers of the
//! scenarios' lines. Sectors are 512 bytes; sector ranges are in sectors, byte offsets within a
//! sector go from 0 to 511.

use std::ops::Range;

use super::{fnv1a64, parse_bdf};

/// Bytes per virtio-blk sector.
pub const BLK_SECTOR_SIZE: usize = 512;
/// Sectors `blk-read` reads and checks against [`blk_pattern`] (the host plants them).
pub const BLK_READ_SECTORS: Range<u64> = 0..8;
/// Sectors `blk-write` fills with [`blk_write_pattern`] (the host checks them after exit).
pub const BLK_WRITE_SECTORS: Range<u64> = 8..16;
/// The sector `blk-ro` tries to write (it must stay unchanged).
pub const BLK_RO_SECTOR: u64 = 8;
/// Sectors `blk-mixed` reads and writes; its checksum covers exactly these.
pub const BLK_MIXED_SECTORS: Range<u64> = 64..1088;
/// Requests `blk-mixed` makes (besides reading the whole range before and after).
pub const BLK_MIXED_REQUESTS: u32 = 1000;
/// Seed of the `blk-mixed` request sequence ([`blk_mixed_requests`]).
pub const BLK_MIXED_SEED: u64 = 0x6f78_626c_6b6d_6978;
/// Largest request of `blk-mixed`, in sectors.
pub const BLK_MIXED_MAX_SECTORS: u32 = 8;
/// Sectors `blk-discard` fills with [`BLK_FILL_BYTE`] and then DISCARDs.
pub const BLK_DISCARD_SECTORS: Range<u64> = 2048..4096;
/// Sectors `blk-discard` fills with [`BLK_FILL_BYTE`] and then WRITE_ZEROES (they read zero).
pub const BLK_ZEROES_SECTORS: Range<u64> = 4096..4160;
/// What `blk-discard` writes before discarding or zeroing.
pub const BLK_FILL_BYTE: u8 = 0x5A;
/// A disk of at least this many sectors runs every blk scenario.
pub const BLK_MIN_SECTORS: u64 = BLK_ZEROES_SECTORS.end;

/// Details of `TEST blk-read PASS ...`.
pub const BLK_READ_DETAILS: &str = "sectors=8";
/// Details of `TEST blk-write PASS ...` on a device that offers FLUSH.
pub const BLK_WRITE_DETAILS: &str = "sectors=8 flushed=yes";
/// Details of `TEST blk-ro PASS ...`: the write ended with status IOERR.
pub const BLK_RO_DETAILS: &str = "write-status=1";
/// Details of `TEST blk-discard PASS ...` when both DISCARD and WRITE_ZEROES are offered and
/// the discarded sectors read back as zero.
pub const BLK_DISCARD_DETAILS: &str = "discard=yes write_zeroes=yes";
/// FAIL reason of every blk scenario when there is no virtio-blk function.
pub const BLK_NO_DEVICE: &str = "no virtio-blk device";
/// Prefix of the line each blk scenario prints after opening the device
/// ([`parse_blk_device_line`]).
pub const BLK_DEVICE_LINE_PREFIX: &str = "oxguest: virtio-blk ";
/// Prefix of the line `blk-mixed` prints with its counts and times ([`parse_blk_mixed_line`]).
pub const BLK_MIXED_LINE_PREFIX: &str = "oxguest: blk-mixed ";

/// What the host plants in [`BLK_READ_SECTORS`]: byte `i` of sector `sector`.
pub fn blk_pattern(sector: u64, i: usize) -> u8 {
    (sector.wrapping_mul(31).wrapping_add(i as u64) & 0xff) as u8
}

/// What `blk-write` writes to [`BLK_WRITE_SECTORS`]: byte `i` of sector `sector`.
pub fn blk_write_pattern(sector: u64, i: usize) -> u8 {
    (sector
        .wrapping_mul(17)
        .wrapping_add((i as u64).wrapping_mul(3))
        .wrapping_add(1)
        & 0xff) as u8
}

/// The bytes of `sectors` filled with `pattern` (e.g. [`blk_pattern`]), to write into an
/// image at byte offset `sectors.start * 512`.
pub fn pattern_bytes(sectors: Range<u64>, pattern: fn(u64, usize) -> u8) -> Vec<u8> {
    sectors
        .flat_map(|sector| (0..BLK_SECTOR_SIZE).map(move |i| pattern(sector, i)))
        .collect()
}

/// Byte range of `sectors` in an image; `None` when it does not fit in `usize`.
fn byte_range(sectors: &Range<u64>) -> Option<Range<usize>> {
    let start = usize::try_from(sectors.start)
        .ok()?
        .checked_mul(BLK_SECTOR_SIZE)?;
    let end = usize::try_from(sectors.end)
        .ok()?
        .checked_mul(BLK_SECTOR_SIZE)?;
    Some(start..end)
}

/// The bytes of `sectors` in an image; `None` when the image is too short.
pub fn sector_bytes(image: &[u8], sectors: Range<u64>) -> Option<&[u8]> {
    image.get(byte_range(&sectors)?)
}

/// The bytes of `sectors` in an image, to change; `None` when the image is too short.
pub fn sector_bytes_mut(image: &mut [u8], sectors: Range<u64>) -> Option<&mut [u8]> {
    image.get_mut(byte_range(&sectors)?)
}

/// The next value of splitmix64 (the generator `blk-mixed` uses).
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One request of `blk-mixed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkMixedRequest {
    pub write: bool,
    /// First sector, inside [`BLK_MIXED_SECTORS`].
    pub sector: u64,
    /// Sectors, 1 to [`BLK_MIXED_MAX_SECTORS`].
    pub count: u32,
    /// The generator output the request came from; a write's data is the splitmix64 stream
    /// seeded with it.
    pub draw: u64,
}

impl BlkMixedRequest {
    /// The sectors the request covers.
    pub fn sectors(&self) -> Range<u64> {
        self.sector..self.sector + u64::from(self.count)
    }

    /// The bytes a write writes (`count` sectors); empty for a read.
    pub fn data(&self) -> Vec<u8> {
        if !self.write {
            return Vec::new();
        }
        let mut state = self.draw;
        let words = self.count as usize * BLK_SECTOR_SIZE / 8;
        (0..words)
            .flat_map(|_| splitmix64(&mut state).to_le_bytes())
            .collect()
    }
}

/// The requests of `blk-mixed`, in the order the guest starts them (the guest keeps up to four
/// in flight, but never two that overlap, so the disk ends as if they ran one by one).
pub fn blk_mixed_requests() -> Vec<BlkMixedRequest> {
    let mut state = BLK_MIXED_SEED;
    let range_len = BLK_MIXED_SECTORS.end - BLK_MIXED_SECTORS.start;
    (0..BLK_MIXED_REQUESTS)
        .map(|_| {
            let draw = splitmix64(&mut state);
            let count = 1 + ((draw >> 1) & 7) as u32;
            BlkMixedRequest {
                write: draw & 1 != 0,
                sector: BLK_MIXED_SECTORS.start + (draw >> 4) % (range_len - u64::from(count) + 1),
                count,
                draw,
            }
        })
        .collect()
}

/// Applies the writes of `blk-mixed` to a whole disk image, as the guest makes them; `false`
/// (and the image unchanged) when it is shorter than [`BLK_MIXED_SECTORS`] needs.
pub fn blk_mixed_apply(image: &mut [u8]) -> bool {
    if sector_bytes(image, BLK_MIXED_SECTORS).is_none() {
        return false;
    }
    for request in blk_mixed_requests().iter().filter(|r| r.write) {
        if let Some(bytes) = sector_bytes_mut(image, request.sectors()) {
            bytes.copy_from_slice(&request.data());
        }
    }
    true
}

/// The checksum `blk-mixed` reports for a disk image: 64-bit FNV-1a of [`BLK_MIXED_SECTORS`];
/// `None` when the image is too short.
pub fn blk_mixed_checksum(image: &[u8]) -> Option<u64> {
    sector_bytes(image, BLK_MIXED_SECTORS).map(fnv1a64)
}

/// The values of `key=value` fields, which must be exactly `keys`, in this order.
pub(super) fn key_values<'a, const N: usize>(
    text: &'a str,
    keys: [&str; N],
) -> Option<[&'a str; N]> {
    let mut fields = text.trim_end_matches(['\r', '\n']).split(' ');
    let mut values = [""; N];
    for (value, key) in values.iter_mut().zip(keys) {
        *value = fields.next()?.strip_prefix(key)?.strip_prefix('=')?;
    }
    fields.next().is_none().then_some(values)
}

fn parse_flag(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// What `TEST blk-info PASS ...` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlkInfo {
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
    /// The device offers VIRTIO_BLK_F_RO.
    pub ro: bool,
    /// The GET_ID answer (at most 20 bytes; `?` for bytes outside `0x21..=0x7e`; may be empty).
    pub serial: String,
}

/// Parses the details of `TEST blk-info PASS sectors=N ro=0|1 serial=S`.
pub fn parse_blk_info_details(details: &str) -> Option<BlkInfo> {
    let [sectors, ro, serial] = key_values(details, ["sectors", "ro", "serial"])?;
    Some(BlkInfo {
        sectors: sectors.parse().ok()?,
        ro: parse_flag(ro)?,
        serial: serial.to_string(),
    })
}

/// What `TEST blk-mixed PASS ...` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkMixedReport {
    pub requests: u32,
    /// [`blk_mixed_checksum`] of the disk as the guest read it back at the end.
    pub checksum: u64,
}

/// Parses the details of `TEST blk-mixed PASS requests=N checksum=0x...`.
pub fn parse_blk_mixed_details(details: &str) -> Option<BlkMixedReport> {
    let [requests, checksum] = key_values(details, ["requests", "checksum"])?;
    Some(BlkMixedReport {
        requests: requests.parse().ok()?,
        checksum: parse_hex(checksum)?,
    })
}

/// What `blk-discard` found for the DISCARD of [`BLK_DISCARD_SECTORS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkDiscard {
    /// Done, and the sectors read back as zero (`discard=yes`).
    Zeroed,
    /// Done, but some sectors still hold the old bytes (`discard=kept`; a discard is a hint).
    Kept,
    /// The device does not offer DISCARD (`discard=no`).
    NotOffered,
}

/// What `TEST blk-discard PASS ...` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkDiscardReport {
    pub discard: BlkDiscard,
    /// WRITE_ZEROES was offered, done, and [`BLK_ZEROES_SECTORS`] read back as zero.
    pub write_zeroes: bool,
}

/// Parses the details of `TEST blk-discard PASS discard=yes|kept|no write_zeroes=yes|no`.
pub fn parse_blk_discard_details(details: &str) -> Option<BlkDiscardReport> {
    let [discard, write_zeroes] = key_values(details, ["discard", "write_zeroes"])?;
    let discard = match discard {
        "yes" => BlkDiscard::Zeroed,
        "kept" => BlkDiscard::Kept,
        "no" => BlkDiscard::NotOffered,
        _ => return None,
    };
    let write_zeroes = match write_zeroes {
        "yes" => true,
        "no" => false,
        _ => return None,
    };
    Some(BlkDiscardReport {
        discard,
        write_zeroes,
    })
}

/// The line every blk scenario prints after opening the device:
/// `oxguest: virtio-blk bb:dd.f features=0x... queue_size=N sectors=N blk_size=N size_max=N
/// seg_max=N ro=0|1 flush=0|1 discard=0|1 write_zeroes=0|1` (0 for what is not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkDeviceLine {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    /// Negotiated feature bits.
    pub features: u64,
    pub queue_size: u16,
    pub sectors: u64,
    pub blk_size: u32,
    pub size_max: u32,
    pub seg_max: u32,
    pub ro: bool,
    pub flush: bool,
    pub discard: bool,
    pub write_zeroes: bool,
}

/// Parses a [`BlkDeviceLine`]; `None` for any other line.
pub fn parse_blk_device_line(line: &str) -> Option<BlkDeviceLine> {
    let rest = line.strip_prefix(BLK_DEVICE_LINE_PREFIX)?;
    let (bdf, fields) = rest.split_once(' ')?;
    let (bus, device, function) = parse_bdf(bdf)?;
    let keys = [
        "features",
        "queue_size",
        "sectors",
        "blk_size",
        "size_max",
        "seg_max",
        "ro",
        "flush",
        "discard",
        "write_zeroes",
    ];
    let [
        features,
        queue,
        sectors,
        blk_size,
        size_max,
        seg_max,
        ro,
        flush,
        discard,
        zeroes,
    ] = key_values(fields, keys)?;
    Some(BlkDeviceLine {
        bus,
        device,
        function,
        features: parse_hex(features)?,
        queue_size: queue.parse().ok()?,
        sectors: sectors.parse().ok()?,
        blk_size: blk_size.parse().ok()?,
        size_max: size_max.parse().ok()?,
        seg_max: seg_max.parse().ok()?,
        ro: parse_flag(ro)?,
        flush: parse_flag(flush)?,
        discard: parse_flag(discard)?,
        write_zeroes: parse_flag(zeroes)?,
    })
}

/// The counts and times `blk-mixed` prints before its TEST line:
/// `oxguest: blk-mixed cpl=3 requests=N reads=N writes=N sectors=N us=N all_requests=N
/// all_us=N`. Times are microseconds on the guest's TSC (0 when it could not calibrate it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkMixedLine {
    /// The privilege level the requests ran at.
    pub cpl: u8,
    /// The mixed requests (reads + writes) and the sectors they covered.
    pub requests: u32,
    pub reads: u32,
    pub writes: u32,
    pub sectors: u32,
    /// Time for the mixed requests.
    pub us: u64,
    /// Requests with the initial and final reads of the whole range, and their time.
    pub all_requests: u32,
    pub all_us: u64,
}

/// Parses a [`BlkMixedLine`]; `None` for any other line.
pub fn parse_blk_mixed_line(line: &str) -> Option<BlkMixedLine> {
    let rest = line.strip_prefix(BLK_MIXED_LINE_PREFIX)?;
    let keys = [
        "cpl",
        "requests",
        "reads",
        "writes",
        "sectors",
        "us",
        "all_requests",
        "all_us",
    ];
    let [
        cpl,
        requests,
        reads,
        writes,
        sectors,
        us,
        all_requests,
        all_us,
    ] = key_values(rest, keys)?;
    Some(BlkMixedLine {
        cpl: cpl.parse().ok()?,
        requests: requests.parse().ok()?,
        reads: reads.parse().ok()?,
        writes: writes.parse().ok()?,
        sectors: sectors.parse().ok()?,
        us: us.parse().ok()?,
        all_requests: all_requests.parse().ok()?,
        all_us: all_us.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::c_define_u64;

    const HEADER: &str = include_str!("../../oxguest/blk_scenarios.h");

    fn header_u64(name: &str) -> u64 {
        c_define_u64(HEADER, name)
    }

    fn header_range(first: &str, count: &str) -> Range<u64> {
        header_u64(first)..header_u64(first) + header_u64(count)
    }

    #[test]
    fn constants_match_the_guest() {
        assert_eq!(
            header_range("BLK_READ_FIRST", "BLK_READ_SECTORS"),
            BLK_READ_SECTORS
        );
        assert_eq!(
            header_range("BLK_WRITE_FIRST", "BLK_WRITE_SECTORS"),
            BLK_WRITE_SECTORS
        );
        assert_eq!(header_u64("BLK_RO_SECTOR"), BLK_RO_SECTOR);
        assert_eq!(
            header_range("BLK_MIXED_FIRST", "BLK_MIXED_SECTORS"),
            BLK_MIXED_SECTORS
        );
        assert_eq!(
            header_u64("BLK_MIXED_REQUESTS"),
            u64::from(BLK_MIXED_REQUESTS)
        );
        assert_eq!(header_u64("BLK_MIXED_SEED"), BLK_MIXED_SEED);
        assert_eq!(
            header_range("BLK_DISCARD_FIRST", "BLK_DISCARD_SECTORS"),
            BLK_DISCARD_SECTORS
        );
        assert_eq!(
            header_range("BLK_ZEROES_FIRST", "BLK_ZEROES_SECTORS"),
            BLK_ZEROES_SECTORS
        );
        assert_eq!(header_u64("BLK_FILL_BYTE"), u64::from(BLK_FILL_BYTE));
    }

    #[test]
    fn patterns_follow_their_formulas() {
        assert_eq!(blk_pattern(0, 0), 0);
        assert_eq!(blk_pattern(1, 0), 31);
        assert_eq!(blk_pattern(7, 511), ((7 * 31 + 511) & 0xff) as u8);
        assert_eq!(blk_write_pattern(8, 0), (8 * 17 + 1) as u8);
        assert_eq!(
            blk_write_pattern(15, 511),
            ((15 * 17 + 511 * 3 + 1) & 0xff) as u8
        );
    }

    #[test]
    fn pattern_bytes_lay_sectors_end_to_end() {
        let bytes = pattern_bytes(2..4, blk_pattern);

        assert_eq!(bytes.len(), 2 * BLK_SECTOR_SIZE);
        assert_eq!(bytes[0], blk_pattern(2, 0));
        assert_eq!(bytes[BLK_SECTOR_SIZE + 5], blk_pattern(3, 5));
    }

    #[test]
    fn sector_bytes_refuse_short_images() {
        let image = vec![0u8; 4 * BLK_SECTOR_SIZE];

        assert_eq!(sector_bytes(&image, 1..4).map(<[u8]>::len), Some(1536));
        assert!(sector_bytes(&image, 3..5).is_none());
        assert!(sector_bytes(&image, u64::MAX - 1..u64::MAX).is_none());
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference outputs for seed 0 (Vigna's splitmix64.c).
        let mut state = 0;

        let first = [splitmix64(&mut state), splitmix64(&mut state)];

        assert_eq!(first, [0xe220_a839_7b1d_cdaf, 0x6e78_9e6a_a1b9_65f4]);
    }

    #[test]
    fn mixed_requests_stay_in_range_and_mix_reads_and_writes() {
        let requests = blk_mixed_requests();

        assert_eq!(requests.len(), BLK_MIXED_REQUESTS as usize);
        for request in &requests {
            assert!((1..=BLK_MIXED_MAX_SECTORS).contains(&request.count));
            assert!(request.sectors().start >= BLK_MIXED_SECTORS.start);
            assert!(request.sectors().end <= BLK_MIXED_SECTORS.end);
        }
        let writes = requests.iter().filter(|r| r.write).count();
        assert!((400..600).contains(&writes), "{writes} writes");
        assert!(requests.iter().any(|r| r.count == 1));
        assert!(requests.iter().any(|r| r.count == BLK_MIXED_MAX_SECTORS));
    }

    #[test]
    fn mixed_write_data_fills_the_request() {
        let request = BlkMixedRequest {
            write: true,
            sector: 64,
            count: 2,
            draw: 0,
        };

        let data = request.data();

        assert_eq!(data.len(), 2 * BLK_SECTOR_SIZE);
        assert_eq!(data[..8], 0xe220_a839_7b1d_cdafu64.to_le_bytes());
        assert!(
            BlkMixedRequest {
                write: false,
                ..request
            }
            .data()
            .is_empty()
        );
    }

    #[test]
    fn mixed_apply_changes_only_the_mixed_range() {
        let mut image = vec![0xEEu8; BLK_MIN_SECTORS as usize * BLK_SECTOR_SIZE];
        let before = blk_mixed_checksum(&image);

        assert!(blk_mixed_apply(&mut image));

        assert_ne!(blk_mixed_checksum(&image), before);
        let below = sector_bytes(&image, 0..BLK_MIXED_SECTORS.start).expect("fits");
        let above = sector_bytes(&image, BLK_MIXED_SECTORS.end..BLK_MIN_SECTORS).expect("fits");
        assert!(below.iter().chain(above).all(|&b| b == 0xEE));
    }

    #[test]
    fn mixed_apply_refuses_a_short_image() {
        let mut image = vec![1u8; 100 * BLK_SECTOR_SIZE];

        assert!(!blk_mixed_apply(&mut image));

        assert!(image.iter().all(|&b| b == 1));
        assert_eq!(blk_mixed_checksum(&image), None);
    }

    #[test]
    fn parses_blk_info_details() {
        let info = parse_blk_info_details("sectors=16384 ro=1 serial=oxdisk0");

        assert_eq!(
            info,
            Some(BlkInfo {
                sectors: 16384,
                ro: true,
                serial: "oxdisk0".to_string()
            })
        );
        assert_eq!(
            parse_blk_info_details("sectors=1 ro=0 serial=").map(|i| i.serial),
            Some(String::new())
        );
    }

    #[test]
    fn rejects_malformed_blk_info_details() {
        assert!(parse_blk_info_details("no virtio-blk device").is_none());
        assert!(parse_blk_info_details("sectors=1 ro=2 serial=x").is_none());
        assert!(parse_blk_info_details("sectors=1 ro=0").is_none());
        assert!(parse_blk_info_details("sectors=1 ro=0 serial=a b").is_none());
        assert!(parse_blk_info_details("ro=0 sectors=1 serial=x").is_none());
    }

    #[test]
    fn parses_blk_mixed_details() {
        let report = parse_blk_mixed_details("requests=1000 checksum=0xb79d8322d46ff42a");

        assert_eq!(
            report,
            Some(BlkMixedReport {
                requests: 1000,
                checksum: 0xb79d_8322_d46f_f42a
            })
        );
        assert!(parse_blk_mixed_details("requests=1000 checksum=b79d").is_none());
        assert!(parse_blk_mixed_details("requests=1000").is_none());
    }

    #[test]
    fn parses_blk_discard_details() {
        let parse = parse_blk_discard_details;

        assert_eq!(
            parse(BLK_DISCARD_DETAILS),
            Some(BlkDiscardReport {
                discard: BlkDiscard::Zeroed,
                write_zeroes: true
            })
        );
        assert_eq!(
            parse("discard=kept write_zeroes=no").map(|r| (r.discard, r.write_zeroes)),
            Some((BlkDiscard::Kept, false))
        );
        assert_eq!(
            parse("discard=no write_zeroes=yes").map(|r| r.discard),
            Some(BlkDiscard::NotOffered)
        );
        assert!(parse("discard=maybe write_zeroes=yes").is_none());
    }

    #[test]
    fn parses_the_device_line() {
        let line = "oxguest: virtio-blk 00:03.0 features=0x100006244 queue_size=64 \
                    sectors=16384 blk_size=512 size_max=0 seg_max=254 ro=0 flush=1 discard=1 \
                    write_zeroes=1";

        let parsed = parse_blk_device_line(line).expect("a device line");

        assert_eq!((parsed.bus, parsed.device, parsed.function), (0, 3, 0));
        assert_eq!(parsed.features, 0x1_0000_6244);
        assert_eq!((parsed.queue_size, parsed.sectors), (64, 16384));
        assert_eq!(
            (parsed.blk_size, parsed.size_max, parsed.seg_max),
            (512, 0, 254)
        );
        assert_eq!(
            (parsed.ro, parsed.flush, parsed.discard, parsed.write_zeroes),
            (false, true, true, true)
        );
        assert!(parse_blk_device_line(&line.replace("ro=0", "ro=x")).is_none());
        assert!(parse_blk_device_line("oxguest: virtio-rng 00:03.0 features=0x1").is_none());
    }

    #[test]
    fn parses_the_mixed_line() {
        let line = "oxguest: blk-mixed cpl=3 requests=1000 reads=516 writes=484 sectors=4538 \
                    us=88570 all_requests=1256 all_us=112948\n";

        let parsed = parse_blk_mixed_line(line);

        assert_eq!(
            parsed,
            Some(BlkMixedLine {
                cpl: 3,
                requests: 1000,
                reads: 516,
                writes: 484,
                sectors: 4538,
                us: 88570,
                all_requests: 1256,
                all_us: 112948
            })
        );
        assert!(parse_blk_mixed_line("oxguest: blk-mixed cpl=3 requests=1000").is_none());
    }
}
