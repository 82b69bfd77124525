//! The memory statistics a balloon driver reports on the stats queue (virtio 1.2, 5.5.6.3):
//! a buffer of packed `le16 tag, le64 value` pairs.

use serde::{Deserialize, Serialize};

/// Bytes of one statistic: `le16 tag` then `le64 value`, packed.
pub const STAT_LEN: usize = 10;
/// Most bytes of a stats buffer the device reads (400 statistics; Linux sends 16): the
/// rest of a longer buffer is ignored, so a guest cannot make the device copy gigabytes.
pub const MAX_STATS_BYTES: usize = 4000;

/// The latest statistics the driver sent; `None` for a statistic it did not include.
/// Tags 0-9 are virtio 1.2's; 10-15 are Linux's (since 6.12), as QEMU names them too.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BalloonStats {
    /// Tag 0: bytes swapped in.
    pub swap_in: Option<u64>,
    /// Tag 1: bytes swapped out.
    pub swap_out: Option<u64>,
    /// Tag 2: major page faults.
    pub major_faults: Option<u64>,
    /// Tag 3: minor page faults.
    pub minor_faults: Option<u64>,
    /// Tag 4: free memory, bytes.
    pub free_memory: Option<u64>,
    /// Tag 5: total memory, bytes.
    pub total_memory: Option<u64>,
    /// Tag 6: memory available for new applications without swapping, bytes.
    pub available_memory: Option<u64>,
    /// Tag 7: disk caches, bytes.
    pub disk_caches: Option<u64>,
    /// Tag 8: successful hugetlb page allocations.
    pub hugetlb_allocations: Option<u64>,
    /// Tag 9: failed hugetlb page allocations.
    pub hugetlb_failures: Option<u64>,
    /// Tag 10: OOM killer invocations.
    pub oom_kills: Option<u64>,
    /// Tag 11: allocation stalls.
    pub alloc_stalls: Option<u64>,
    /// Tag 12: memory scanned asynchronously (kswapd).
    pub async_scans: Option<u64>,
    /// Tag 13: memory scanned directly.
    pub direct_scans: Option<u64>,
    /// Tag 14: memory reclaimed asynchronously.
    pub async_reclaims: Option<u64>,
    /// Tag 15: memory reclaimed directly.
    pub direct_reclaims: Option<u64>,
}

impl BalloonStats {
    /// Parses a stats buffer: each whole 10-byte entry with a known tag sets that statistic
    /// (the last one wins for a repeated tag). Returns the statistics and how many entries
    /// had a tag this device does not know (they are ignored, as the spec asks).
    pub fn parse(bytes: &[u8]) -> (Self, usize) {
        let mut stats = Self::default();
        let mut unknown = 0;
        for entry in bytes.chunks_exact(STAT_LEN) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let mut value = [0u8; 8];
            value.copy_from_slice(&entry[2..STAT_LEN]);
            match stats.slot(tag) {
                Some(slot) => *slot = Some(u64::from_le_bytes(value)),
                None => unknown += 1,
            }
        }
        (stats, unknown)
    }

    /// The statistic a tag names.
    fn slot(&mut self, tag: u16) -> Option<&mut Option<u64>> {
        Some(match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            10 => &mut self.oom_kills,
            11 => &mut self.alloc_stalls,
            12 => &mut self.async_scans,
            13 => &mut self.direct_scans,
            14 => &mut self.async_reclaims,
            15 => &mut self.direct_reclaims,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u16, value: u64) -> Vec<u8> {
        let mut bytes = tag.to_le_bytes().to_vec();
        bytes.extend_from_slice(&value.to_le_bytes());
        bytes
    }

    #[test]
    fn known_tags_set_their_statistic() {
        let mut buffer = entry(5, 256 << 20);
        buffer.extend(entry(4, 100 << 20));
        buffer.extend(entry(15, 7));

        let (stats, unknown) = BalloonStats::parse(&buffer);

        assert_eq!(stats.total_memory, Some(256 << 20));
        assert_eq!(stats.free_memory, Some(100 << 20));
        assert_eq!(stats.direct_reclaims, Some(7));
        assert_eq!(stats.swap_in, None);
        assert_eq!(unknown, 0);
    }

    #[test]
    fn unknown_tags_and_a_partial_entry_are_ignored() {
        let mut buffer = entry(16, 1);
        buffer.extend(entry(0xFFFF, 2));
        buffer.extend(entry(2, 3));
        buffer.extend_from_slice(&[6, 0, 1]);

        let (stats, unknown) = BalloonStats::parse(&buffer);

        assert_eq!(unknown, 2);
        assert_eq!(
            stats,
            BalloonStats {
                major_faults: Some(3),
                ..BalloonStats::default()
            }
        );
    }

    #[test]
    fn a_repeated_tag_keeps_the_last_value() {
        let mut buffer = entry(3, 1);
        buffer.extend(entry(3, 2));

        let (stats, _) = BalloonStats::parse(&buffer);

        assert_eq!(stats.minor_faults, Some(2));
    }
}
