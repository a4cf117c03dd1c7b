//! Compaction policy: whether a partition's log is worth cleaning now, as
//! a pure function of segment metadata and the cleaner's dirty point
//! (Kafka's `min.cleanable.dirty.ratio`). The cleaning itself is
//! `log::clean`; `maintenance` runs it.

use crate::retention::SegmentMeta;

/// Bytes before and after the dirty point, sealed segments only (the active
/// segment is never cleaned). A segment holding the dirty point counts as
/// dirty.
pub(crate) fn clean_and_dirty_bytes(sealed: &[SegmentMeta], first_dirty: u64) -> (u64, u64) {
    sealed.iter().fold((0, 0), |(clean, dirty), s| {
        if s.next_offset <= first_dirty {
            (clean + s.size_bytes, dirty)
        } else {
            (clean, dirty + s.size_bytes)
        }
    })
}

/// Whether to clean: the dirty share reached `min_ratio` (and something is
/// dirty), or a retained tombstone became removable (`tombstone_due`).
pub(crate) fn should_clean(
    sealed: &[SegmentMeta],
    first_dirty: u64,
    min_ratio: f64,
    tombstone_due: Option<i64>,
    now_ms: i64,
) -> bool {
    let (clean, dirty) = clean_and_dirty_bytes(sealed, first_dirty);
    let dirty_records = sealed.last().is_some_and(|s| s.next_offset > first_dirty);
    let ratio = if clean + dirty == 0 {
        0.0
    } else {
        dirty as f64 / (clean + dirty) as f64
    };
    (dirty_records && ratio >= min_ratio) || tombstone_due.is_some_and(|due| due <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, next: u64, size: u64) -> SegmentMeta {
        SegmentMeta {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            max_timestamp: 0,
        }
    }

    #[test]
    fn ratio_decides_and_tombstones_force_a_pass() {
        let sealed = [seg(0, 10, 300), seg(10, 20, 100)];
        assert_eq!(clean_and_dirty_bytes(&sealed, 10), (300, 100));
        assert!(should_clean(&sealed, 10, 0.25, None, 0));
        assert!(!should_clean(&sealed, 10, 0.5, None, 0));
        assert!(should_clean(&sealed, 0, 1.0, None, 0));
        // Nothing dirty: only a due tombstone makes it worth a pass.
        assert!(!should_clean(&sealed, 20, 0.0, None, 0));
        assert!(!should_clean(&sealed, 20, 0.0, Some(5), 4));
        assert!(should_clean(&sealed, 20, 0.0, Some(5), 5));
        assert!(!should_clean(&[], 0, 0.0, None, 0));
    }
}
