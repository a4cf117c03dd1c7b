//! A topic: its partitions, its stored config and the partitioner.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::log::PartitionRecovery;
use crate::partition::{OpenContext, Partition, PartitionShared};
use crate::partitioner;
use crate::record::Record;

/// Name of the topic's config file inside its directory.
pub(crate) const CONFIG_FILE: &str = "topic.conf";
const CONFIG_KIND: &str = "topic-config";
const CONFIG_VERSION: u32 = 1;

/// Keyless records stick to one partition for this many bytes before moving
/// to the next, like Kafka's sticky partitioner with its 16 KiB batch.size:
/// batches stay large while load still spreads over every partition.
pub(crate) const STICKY_BYTES: u64 = 16 << 10;

/// Checks a topic name against Kafka's rule. Because `/` and anything but
/// `[a-zA-Z0-9._-]` are refused, a name can never escape the data directory.
///
/// ```
/// assert!(logbus::validate_topic_name("orders.v2").is_ok());
/// assert!(logbus::validate_topic_name("../etc").is_err());
/// ```
pub fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 249 {
        Some("longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What recovery did in each partition of a topic, by partition number.
pub(crate) type PartitionRecoveries = Vec<(u32, PartitionRecovery)>;

/// A handle on a topic. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Topic {
    pub(crate) shared: Arc<TopicShared>,
}

#[derive(Debug)]
pub(crate) struct TopicShared {
    name: Arc<str>,
    dir: PathBuf,
    config: Arc<TopicConfig>,
    partitions: Vec<Partition>,
}

impl TopicShared {
    /// Writes a new topic's directory and config. The caller renames the
    /// directory into place, so a crash never leaves half a topic visible.
    pub(crate) fn write_new(dir: &Path, config: &TopicConfig) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for p in 0..config.partitions {
            let pdir = dir.join(p.to_string());
            std::fs::create_dir(&pdir).map_err(|e| Error::io(&pdir, e))?;
        }
        let pairs = config.to_pairs();
        let bytes = crate::io::encode_props(CONFIG_KIND, CONFIG_VERSION, &pairs)?;
        crate::io::write_atomic(&dir.join(CONFIG_FILE), &bytes)
    }

    /// Opens a topic directory.
    pub(crate) fn open(
        name: &str,
        dir: PathBuf,
        ctx: &OpenContext<'_>,
    ) -> Result<(Arc<TopicShared>, PartitionRecoveries)> {
        let path = dir.join(CONFIG_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let (_, pairs) = crate::io::decode_props(&path, &bytes, CONFIG_KIND, CONFIG_VERSION)?;
        let config =
            TopicConfig::from_pairs(&pairs).map_err(|reason| Error::corrupt(&path, 0, reason))?;
        let config = Arc::new(config);
        let name: Arc<str> = Arc::from(name);
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut recoveries = Vec::new();
        for id in 0..config.partitions {
            let pdir = dir.join(id.to_string());
            if !pdir.is_dir() {
                return Err(Error::corrupt(&pdir, 0, "partition directory is missing"));
            }
            let (shared, recovery) =
                PartitionShared::open(Arc::clone(&name), id, pdir, Arc::clone(&config), ctx)?;
            partitions.push(Partition { shared });
            recoveries.push((id, recovery));
        }
        let shared = TopicShared {
            name,
            dir,
            config,
            partitions,
        };
        Ok((Arc::new(shared), recoveries))
    }

    pub(crate) fn partition_shareds(&self) -> impl Iterator<Item = &Arc<PartitionShared>> {
        self.partitions.iter().map(|p| &p.shared)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn close(&self) -> Result<()> {
        let mut first_error = None;
        for p in &self.partitions {
            if let Err(e) = p.shared.close() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub(crate) fn abandon(&self) {
        for p in &self.partitions {
            p.shared.abandon();
        }
    }
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The topic's configuration, as stored.
    pub fn config(&self) -> &TopicConfig {
        &self.shared.config
    }

    /// All partitions, by number.
    pub fn partitions(&self) -> &[Partition] {
        &self.shared.partitions
    }

    /// One partition.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if the topic has fewer partitions.
    pub fn partition(&self, id: u32) -> Result<&Partition> {
        self.shared
            .partitions
            .get(id as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name().to_string(),
                partition: id,
            })
    }

    /// The partition a record goes to: its explicit partition, else Kafka's
    /// murmur2 of its key, else the sticky partition for keyless records
    /// (`keyless_bytes` counts what this producer sent without a key).
    pub(crate) fn choose_partition(
        &self,
        record: &Record,
        encoded_len: usize,
        keyless_bytes: &AtomicU64,
    ) -> Result<u32> {
        let n = self.shared.config.partitions;
        if let Some(p) = record.partition {
            if p >= n {
                return Err(Error::UnknownPartition {
                    topic: self.name().to_string(),
                    partition: p,
                });
            }
            return Ok(p);
        }
        if let Some(key) = &record.key {
            return Ok(partitioner::partition_for_key(key, n));
        }
        self.keyless_partition(encoded_len, keyless_bytes)
    }

    /// The sticky partition for `encoded_len` bytes of keyless records: the
    /// same one until a producer handle has sent [`STICKY_BYTES`], then the
    /// next, as Kafka's sticky partitioner does.
    pub(crate) fn keyless_partition(
        &self,
        encoded_len: usize,
        keyless_bytes: &AtomicU64,
    ) -> Result<u32> {
        let n = self.shared.config.partitions;
        let sent = keyless_bytes.fetch_add(encoded_len as u64, Ordering::Relaxed);
        Ok(((sent / STICKY_BYTES) % u64::from(n)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        for ok in ["a", "orders", "Orders_2.v-1", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(250),
            "~tmp",
        ] {
            assert!(
                matches!(validate_topic_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?} should be invalid"
            );
        }
    }
}
