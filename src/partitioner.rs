//! Kafka's default key partitioner.
//!
//! A keyed record goes to `toPositive(murmur2(key)) % num_partitions`, exactly
//! as Kafka's Java producer computes it (`BuiltInPartitioner.partitionForKey`,
//! previously `DefaultPartitioner`). Matching it bit for bit means a key lands
//! on the same partition number here as it would in a Kafka topic with the same
//! partition count, so data can move between the two without reordering a key.

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
///
/// This is MurmurHash2 with seed `0x9747b28c`, read as little-endian 4-byte
/// words, with Kafka's tail handling and final mix. The result is the Java
/// `int` Kafka returns, so it may be negative.
///
/// Java arrays are at most `i32::MAX` long; for longer inputs the length that
/// seeds the hash is taken modulo 2^32.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java does this in `int` arithmetic: wrapping multiplication on `u32` is
    // bit-identical, and `>>` on `u32` is Java's unsigned `>>>`. The length
    // cast can only truncate for inputs no Java array could hold.
    let mut h: u32 = SEED ^ (data.len() as u32);

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Mirrors Kafka's fall-through `switch (length % 4)`: each case also runs
    // the ones below it, and only case 1 (reached by all three) multiplies.
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;

    h as i32
}

/// The partition Kafka's default partitioner picks for `key`:
/// `toPositive(murmur2(key)) % num_partitions`.
///
/// `toPositive` clears the sign bit (`x & 0x7fffffff`); it is not `abs`, which
/// would send negative hashes to different partitions than Kafka does.
///
/// # Panics
///
/// If `num_partitions` is 0. Callers guarantee a topic has at least one
/// partition.
pub fn partition_for_key(key: &[u8], num_partitions: u32) -> u32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    positive % num_partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own vectors: `UtilsTest.testMurmur2` in
    /// clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java.
    #[test]
    fn murmur2_matches_kafka_utils_test() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            // Kafka writes this one as `new byte[] {'a', 'b', 'c'}`.
            (b"abc", 479_470_107),
        ];
        for &(key, want) in cases {
            assert_eq!(murmur2(key), want, "key {:?}", String::from_utf8_lossy(key));
        }
    }

    /// librdkafka's `unittest_murmur2` (src/rdmurmur2.c), whose expected values
    /// are labelled `java_murmur2_results`. The suffixes of "1234" cover
    /// lengths 4, 3, 2, 1 and the suffixes of the long key lengths 38, 37,
    /// 36, 35, so every tail case (length % 4 = 0..=3) is pinned.
    #[test]
    fn murmur2_matches_librdkafka_vectors_for_every_tail_length() {
        let unaligned = "PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: &[(&str, u32)] = &[
            ("kafka", 0xd067_cf64),
            ("giberish123456789", 0x8f55_2b0c),
            ("1234", 0x9fc9_7b14),
            ("234", 0xe7c0_09ca),
            ("34", 0x8739_30da),
            ("4", 0x5a4b_5ca1),
            (unaligned, 0x7842_4f1c),
            (&unaligned[1..], 0x4a62_b377),
            (&unaligned[2..], 0xe0e4_e09e),
            (&unaligned[3..], 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        let mut tails = [false; 4];
        for &(key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()), want as i32, "key {key:?}");
            tails[key.len() % 4] = true;
        }
        assert_eq!(tails, [true; 4], "vectors must cover every tail length");
    }

    /// kafka-python's `test_murmur2_java_compatibility` (test/test_partitioner.py):
    /// partitions out of 1000, "compared with output from Kafka's
    /// org.apache.kafka.clients.producer.Partitioner".
    #[test]
    fn partition_for_key_matches_java_producer() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 681),
            (b"a", 524),
            (b"ab", 434),
            (b"abc", 107),
            (b"123456789", 566),
            (b"\x00 ", 742),
        ];
        for &(key, want) in cases {
            assert_eq!(partition_for_key(key, 1000), want, "key {key:?}");
        }
    }

    /// A negative hash must have its sign bit cleared, not be negated:
    /// murmur2("21") = -973932308, and 0x7fffffff & that = 1173551340, so
    /// partition 340 of 1000 (abs would give 308).
    #[test]
    fn negative_hash_uses_to_positive_not_abs() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(partition_for_key(b"21", 1000), 340);
        assert_eq!(partition_for_key(b"21", 1), 0);
        assert_eq!(partition_for_key(b"21", u32::MAX), 1_173_551_340);
    }
}
