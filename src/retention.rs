//! Retention policy: which old segments of a partition to delete, as a pure
//! function of segment metadata (no files, no threads; `maintenance`
//! carries the plan out).
//!
//! Only a prefix of whole sealed segments is ever deleted, so the log start
//! offset just moves forward; the active segment is never deleted.

/// What retention needs to know about one sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub base_offset: u64,
    /// Offset after its last batch.
    pub next_offset: u64,
    pub size_bytes: u64,
    /// Largest record timestamp (`i64::MIN` when empty), read from the
    /// time index's last entry when the segment was sealed or opened: O(1).
    pub max_timestamp: i64,
}

/// A partition's retention settings for one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Delete segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while the partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// The lowest offset some consumer group still needs (see
    /// `maintenance::RetentionFloor`). Segments wholly below it count as
    /// consumed and are deleted; `None` (today always) deletes nothing
    /// for this reason.
    pub consumed_below: Option<u64>,
}

/// Why a segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Time,
    Size,
    Consumed,
}

/// The decision for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    Nothing,
    /// Delete the first `count` sealed segments; the reason of the last one.
    Delete {
        count: usize,
        reason: Reason,
    },
}

/// Which leading segments of `sealed` (oldest first) to delete at `now_ms`;
/// `active_size` counts toward `retention_bytes`.
pub(crate) fn plan(sealed: &[SegmentMeta], active_size: u64, rules: &Rules, now_ms: i64) -> Plan {
    let mut remaining: u64 = sealed.iter().map(|s| s.size_bytes).sum::<u64>() + active_size;
    let mut count = 0;
    let mut last_reason = Reason::Time;
    for segment in sealed {
        let reason = if expired(segment, rules, now_ms) {
            Reason::Time
        } else if rules.retention_bytes.is_some_and(|max| {
            remaining.saturating_sub(segment.size_bytes) >= max && remaining > max
        }) {
            Reason::Size
        } else if rules
            .consumed_below
            .is_some_and(|floor| segment.next_offset <= floor)
        {
            Reason::Consumed
        } else {
            break;
        };
        remaining -= segment.size_bytes;
        count += 1;
        last_reason = reason;
    }
    if count == 0 {
        Plan::Nothing
    } else {
        Plan::Delete {
            count,
            reason: last_reason,
        }
    }
}

/// Kafka's rule: a segment expires once its largest timestamp is more than
/// `retention_ms` in the past.
fn expired(segment: &SegmentMeta, rules: &Rules, now_ms: i64) -> bool {
    rules.retention_ms.is_some_and(|ms| {
        now_ms.saturating_sub(segment.max_timestamp) > i64::try_from(ms).unwrap_or(i64::MAX)
    })
}

/// When the oldest sealed segment expires by time (the next time-based
/// deletion), if it has not yet.
pub(crate) fn next_expiry(sealed: &[SegmentMeta], rules: &Rules) -> Option<i64> {
    let ms = i64::try_from(rules.retention_ms?).unwrap_or(i64::MAX);
    let first = sealed.first()?;
    Some(first.max_timestamp.saturating_add(ms).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, size: u64, max_ts: i64) -> SegmentMeta {
        SegmentMeta {
            base_offset: base,
            next_offset: base + 10,
            size_bytes: size,
            max_timestamp: max_ts,
        }
    }

    #[test]
    fn time_deletes_only_an_expired_prefix() {
        let sealed = [seg(0, 100, 1_000), seg(10, 100, 5_000), seg(20, 100, 2_000)];
        let rules = Rules {
            retention_ms: Some(1_000),
            ..Rules::default()
        };
        assert_eq!(plan(&sealed, 0, &rules, 2_000), Plan::Nothing);
        assert_eq!(
            plan(&sealed, 0, &rules, 2_001),
            Plan::Delete {
                count: 1,
                reason: Reason::Time
            }
        );
        // The third is expired too, but the second is not: prefix only.
        assert_eq!(
            plan(&sealed, 0, &rules, 5_500),
            Plan::Delete {
                count: 1,
                reason: Reason::Time
            }
        );
        assert_eq!(next_expiry(&sealed, &rules), Some(2_001));
    }

    #[test]
    fn size_keeps_the_partition_at_or_under_the_limit() {
        let sealed = [seg(0, 100, 0), seg(10, 100, 0), seg(20, 100, 0)];
        let rules = Rules {
            retention_bytes: Some(250),
            ..Rules::default()
        };
        // 300 + 50 active = 350: deleting one leaves 250 <= 250.
        assert_eq!(
            plan(&sealed, 50, &rules, 0),
            Plan::Delete {
                count: 1,
                reason: Reason::Size
            }
        );
        // 300: deleting one would leave 200, below the limit (Kafka keeps it).
        assert_eq!(plan(&sealed, 0, &rules, 0), Plan::Nothing);
        let rules = Rules {
            retention_bytes: Some(300),
            ..Rules::default()
        };
        assert_eq!(plan(&sealed, 0, &rules, 0), Plan::Nothing);
        let rules = Rules {
            retention_bytes: Some(0),
            ..Rules::default()
        };
        // Never the active segment, even with a limit of zero.
        assert_eq!(
            plan(&sealed, 50, &rules, 0),
            Plan::Delete {
                count: 3,
                reason: Reason::Size
            }
        );
    }

    #[test]
    fn consumed_floor_deletes_segments_wholly_below_it() {
        let sealed = [seg(0, 100, 0), seg(10, 100, 0)];
        let rules = Rules {
            consumed_below: Some(15),
            ..Rules::default()
        };
        assert_eq!(
            plan(&sealed, 0, &rules, 0),
            Plan::Delete {
                count: 1,
                reason: Reason::Consumed
            }
        );
        assert_eq!(plan(&sealed, 0, &Rules::default(), i64::MAX), Plan::Nothing);
    }
}
