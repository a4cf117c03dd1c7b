//! The cleaner's key → latest-offset map: fixed memory, open addressing
//! over 128-bit key hashes (Kafka's `SkimpyOffsetMap`).
//!
//! Keys are not stored, only a 128-bit hash (MurmurHash3 x64/128), so the
//! map's size is fixed whatever the keys: `bytes / 24` slots, filled to at
//! most 90 % so probes stay short. Two keys with the same hash would make
//! the cleaner drop the older one's record; with 128 bits that takes about
//! 2^64 keys (Kafka accepts the same risk with MD5).

/// One slot: a key hash and the latest offset seen for it (+1; 0 = empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: [u64; 2],
    offset_plus_one: u64,
}

const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
/// Share of the slots that may be used before the map counts as full.
const LOAD_FACTOR: f64 = 0.9;

/// A 128-bit key hash, computed once per record.
pub(crate) type KeyHash = [u64; 2];

/// The map. Memory is allocated once, when it is created.
pub(crate) struct OffsetMap {
    slots: Vec<Slot>,
    /// Power of two minus one.
    mask: usize,
    used: usize,
    max_used: usize,
}

impl std::fmt::Debug for OffsetMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetMap")
            .field("slots", &self.slots.len())
            .field("used", &self.used)
            .finish()
    }
}

impl OffsetMap {
    /// A map using about `bytes` of memory (at least 16 slots).
    pub fn with_memory(bytes: usize) -> OffsetMap {
        let wanted = (bytes / SLOT_BYTES).max(16);
        // Round down to a power of two so the probe can mask, not divide.
        let slots = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        OffsetMap {
            slots: vec![Slot::default(); slots],
            mask: slots - 1,
            used: 0,
            max_used: ((slots as f64) * LOAD_FACTOR) as usize,
        }
    }

    /// A map for at most `keys` distinct keys, using at most about
    /// `max_bytes`: a small dirty section gets a small map.
    pub fn for_keys(keys: u64, max_bytes: usize) -> OffsetMap {
        let needed = (keys as f64 / LOAD_FACTOR) as u64 + 1;
        let bytes = usize::try_from(needed.saturating_mul(2 * SLOT_BYTES as u64))
            .unwrap_or(usize::MAX)
            .min(max_bytes);
        OffsetMap::with_memory(bytes)
    }

    /// Distinct keys stored.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Forgets every key (keeps the memory).
    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.used = 0;
    }

    /// The hash of a key.
    pub fn hash(key: &[u8]) -> KeyHash {
        let (a, b) = murmur3_x64_128(key, 0x5eed_cafe);
        [a, b]
    }

    fn find(&self, hash: KeyHash) -> usize {
        let mut i = (hash[0] as usize) & self.mask;
        loop {
            let slot = &self.slots[i];
            if slot.offset_plus_one == 0 || slot.hash == hash {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Records `offset` as the latest for the key. Returns false, storing
    /// nothing, when the key is new and the map is full.
    pub fn put(&mut self, hash: KeyHash, offset: u64) -> bool {
        let i = self.find(hash);
        let slot = &mut self.slots[i];
        if slot.offset_plus_one == 0 {
            if self.used >= self.max_used {
                return false;
            }
            self.used += 1;
            slot.hash = hash;
        }
        slot.offset_plus_one = offset + 1;
        true
    }

    /// The latest offset recorded for the key.
    pub fn get(&self, hash: KeyHash) -> Option<u64> {
        let slot = &self.slots[self.find(hash)];
        slot.offset_plus_one.checked_sub(1)
    }
}

/// MurmurHash3, x64 128-bit variant (Austin Appleby, public domain).
fn murmur3_x64_128(data: &[u8], seed: u64) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    let (mut h1, mut h2) = (seed, seed);
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let mut k1 = u64::from_le_bytes(block[..8].try_into().unwrap_or([0; 8]));
        let mut k2 = u64::from_le_bytes(block[8..].try_into().unwrap_or([0; 8]));
        k1 = k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 ^= k2;
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let (mut k1, mut k2) = (0u64, 0u64);
    for (i, &b) in tail.iter().enumerate() {
        if i < 8 {
            k1 |= u64::from(b) << (8 * i);
        } else {
            k2 |= u64::from(b) << (8 * (i - 8));
        }
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_vectors() {
        // Reference values from the C++ implementation (seed 0).
        assert_eq!(murmur3_x64_128(b"", 0), (0, 0));
        assert_eq!(
            murmur3_x64_128(b"hello", 0),
            (0xcbd8_a7b3_41bd_9b02, 0x5b1e_906a_48ae_1d19)
        );
    }

    #[test]
    fn keeps_latest_offset_and_refuses_new_keys_when_full() {
        let mut map = OffsetMap::with_memory(0); // 16 slots, 14 usable
        for i in 0..14u64 {
            assert!(map.put(OffsetMap::hash(&i.to_be_bytes()), i));
        }
        assert!(!map.put(OffsetMap::hash(b"new"), 99));
        // Updating a known key still works when full.
        assert!(map.put(OffsetMap::hash(&3u64.to_be_bytes()), 100));
        assert_eq!(map.get(OffsetMap::hash(&3u64.to_be_bytes())), Some(100));
        assert_eq!(map.get(OffsetMap::hash(&4u64.to_be_bytes())), Some(4));
        assert_eq!(map.get(OffsetMap::hash(b"new")), None);
        assert_eq!(map.len(), 14);
        map.clear();
        assert_eq!(map.len(), 0);
        assert_eq!(map.get(OffsetMap::hash(&4u64.to_be_bytes())), None);
    }
}
