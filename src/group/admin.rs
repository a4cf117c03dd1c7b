//! Group administration on [`Log`]: list, describe, reset offsets, delete.

use std::collections::BTreeSet;

use super::assignor::AssignmentStrategy;
use super::coordinator::Group;
use super::offsets;
use crate::consumer::TopicPartition;
use crate::db::Log;
use crate::error::{Error, Result};
use crate::record::Record;

/// What a group is doing, in Kafka's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may still have committed offsets).
    Empty,
    /// Every member has taken up the current generation's assignment.
    Stable,
    /// A rebalance is in progress: some member has yet to give up or take
    /// up partitions.
    Rebalancing,
}

/// One member, as [`Log::describe_group`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// The partitions it owns now.
    pub assignment: Vec<TopicPartition>,
    /// A static member whose handle is gone, kept for its session timeout.
    pub away: bool,
}

/// A partition's committed offset and lag in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset, if any.
    pub committed: Option<u64>,
    /// The partition's log end offset.
    pub log_end: u64,
    /// `log_end - committed`; without a commit, the whole partition
    /// (`log_end - log_start`).
    pub lag: u64,
}

/// A group's members, assignment and offsets ([`Log::describe_group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The group id.
    pub group: String,
    /// The current generation.
    pub generation: u32,
    /// The members' strategy (`None` if it never had members).
    pub strategy: Option<AssignmentStrategy>,
    /// Empty, stable or rebalancing.
    pub state: GroupState,
    /// Its members, by member id.
    pub members: Vec<MemberDescription>,
    /// Every partition the group subscribes to or has an offset for.
    pub offsets: Vec<PartitionOffsets>,
}

impl GroupDescription {
    /// The sum of every partition's lag.
    pub fn total_lag(&self) -> u64 {
        self.offsets.iter().map(|o| o.lag).sum()
    }
}

/// Where [`Log::reset_group_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest record still stored.
    Earliest,
    /// The log end: only new records will be read.
    Latest,
    /// The first record at or after this time (ms since the Unix epoch);
    /// the log end if there is none.
    Timestamp(i64),
    /// This offset (within `[log start, log end]`).
    Offset(u64),
}

impl Log {
    /// Ids of every group with members or committed offsets, sorted.
    pub fn list_groups(&self) -> Vec<String> {
        self.shared().coordinator().group_ids()
    }

    /// A group's members, assignment, committed offsets and lag.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`].
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let shared = self.shared();
        let unknown = || Error::UnknownGroup {
            group: group.to_string(),
        };
        let cell = shared.coordinator().existing(group).ok_or_else(unknown)?;
        let lookup = |t: &str| shared.partition_count(t);
        let mut g = cell.state.lock();
        g.expire(&cell, &lookup, shared.clock().now_ms());
        if g.members.is_empty() && g.committed.is_empty() {
            return Err(unknown());
        }
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                topics: m.topics.clone(),
                assignment: m.owned.iter().cloned().collect(),
                away: m.away_since_ms.is_some(),
            })
            .collect();
        let offsets = self.partition_offsets(&g)?;
        Ok(GroupDescription {
            group: group.to_string(),
            generation: g.generation,
            strategy: g.strategy(),
            state: state_of(&g),
            members,
            offsets,
        })
    }

    fn partition_offsets(&self, g: &Group) -> Result<Vec<PartitionOffsets>> {
        let mut tps: BTreeSet<TopicPartition> = g.committed.keys().cloned().collect();
        for m in g.members.values() {
            for t in &m.topics {
                let n = self.shared().partition_count(t).unwrap_or(0);
                tps.extend((0..n).map(|p| TopicPartition::new(t.as_str(), p)));
            }
        }
        let mut out = Vec::with_capacity(tps.len());
        for tp in tps {
            let Ok(topic) = self.topic(&tp.topic) else {
                continue; // committed for a topic deleted since
            };
            let Ok(partition) = topic.partition(tp.partition) else {
                continue;
            };
            let committed = g.committed.get(&tp).map(|c| c.offset);
            let log_end = partition.log_end_offset();
            let from = committed.unwrap_or_else(|| partition.log_start_offset());
            out.push(PartitionOffsets {
                partition: tp,
                committed,
                log_end,
                lag: log_end.saturating_sub(from),
            });
        }
        Ok(out)
    }

    /// Sets the committed offset of every partition of `topic` for `group`
    /// (Kafka's `kafka-consumer-groups --reset-offsets`). The group must
    /// have no members; it is created if unknown. Returns the new offsets.
    ///
    /// ```
    /// # use logbus::*;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-reset-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send_batch(&[Record::new("a"), Record::new("b")])?;
    /// let moved = log.reset_group_offsets("audit", "events", OffsetSpec::Latest)?;
    /// assert_eq!(moved, [(TopicPartition::new("events", 0), 2)]);
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::GroupNotEmpty`]; [`Error::UnknownTopic`];
    /// [`Error::OffsetOutOfRange`] for an explicit offset outside the log.
    pub fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        to: OffsetSpec,
    ) -> Result<Vec<(TopicPartition, u64)>> {
        let shared = self.shared();
        let topic_handle = self.topic(topic)?;
        let mut moved = Vec::new();
        for p in topic_handle.partitions() {
            let (start, end) = (p.log_start_offset(), p.log_end_offset());
            let offset = match to {
                OffsetSpec::Earliest => start,
                OffsetSpec::Latest => end,
                OffsetSpec::Timestamp(ts) => p.shared.offset_for_time(ts)?.map_or(end, |(o, _)| o),
                OffsetSpec::Offset(o) if (start..=end).contains(&o) => o,
                OffsetSpec::Offset(o) => {
                    return Err(Error::OffsetOutOfRange {
                        topic: topic.to_string(),
                        partition: p.id(),
                        offset: o,
                        log_start: start,
                        log_end: end,
                    });
                }
            };
            moved.push((TopicPartition::new(topic, p.id()), offset));
        }
        if group.is_empty() || group.len() > offsets::MAX_STRING {
            return Err(Error::InvalidConfig {
                reason: "a group id must be 1..=32767 bytes".into(),
            });
        }
        let cell = shared.coordinator().group(group);
        let now = shared.clock().now_ms();
        let (values, records) = offsets::commit_batch(group, &moved, now);
        let mut g = cell.state.lock();
        ensure_empty(group, &g)?;
        self.write_offsets(&records, now, || {
            for (tp, v) in values {
                g.committed.insert(tp, v);
            }
        })?;
        drop(g);
        shared.consumer_progressed(topic);
        Ok(moved)
    }

    /// Deletes a group and its committed offsets. The group must have no
    /// members.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`]; [`Error::GroupNotEmpty`].
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let shared = self.shared();
        let unknown = || Error::UnknownGroup {
            group: group.to_string(),
        };
        let cell = shared.coordinator().existing(group).ok_or_else(unknown)?;
        let mut g = cell.state.lock();
        ensure_empty(group, &g)?;
        if g.committed.is_empty() {
            return Err(unknown());
        }
        let records: Vec<Record> = g
            .committed
            .keys()
            .map(|tp| offsets::commit_record(group, tp, None))
            .collect();
        self.write_offsets(&records, shared.clock().now_ms(), || g.committed.clear())?;
        drop(g);
        shared.coordinator().forget(group);
        Ok(())
    }

    /// Appends offset records, applies them in memory with `apply` once
    /// appended, and syncs per the log's durability.
    fn write_offsets(&self, records: &[Record], now: i64, apply: impl FnOnce()) -> Result<()> {
        let store = self.shared().offsets_partition()?;
        let end = offsets::append(&store, records, now)?;
        apply();
        offsets::sync(&store, end)
    }
}

fn ensure_empty(group: &str, g: &Group) -> Result<()> {
    if g.members.is_empty() {
        Ok(())
    } else {
        Err(Error::GroupNotEmpty {
            group: group.to_string(),
            members: g.members.len(),
        })
    }
}

fn state_of(g: &Group) -> GroupState {
    if g.members.is_empty() {
        GroupState::Empty
    } else if g.members.values().all(|m| {
        m.away_since_ms.is_some() || (m.synced_generation == g.generation && m.owned == m.target)
    }) {
        GroupState::Stable
    } else {
        GroupState::Rebalancing
    }
}
