//! Power-cut simulation (tests only): the storage seam's test side.
//!
//! A process crash keeps the page cache; a power cut keeps only what was
//! synced. Every fsync in logbus goes through `io` (`fdatasync`,
//! `fsync_dir`, `write_atomic`), which reports here: a synced file's
//! content becomes its *durable* image (by inode), a synced directory's
//! entries become its durable listing. Other storage operations (pwrite,
//! block reservation) are counted too. A simulation armed with `cut_at = N`
//! captures, just before operation N, what a power cut would leave: the
//! durable directory tree, each file's durable content, and its unsynced
//! content, which [`Image::materialize`] then drops, keeps, tears at a
//! 512-byte boundary, or replaces with garbage. Entries of directories not
//! synced since they changed are lost (as after a real cut).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// What happens to data written but not synced when the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsynced {
    /// Lost: files hold their durable content.
    Drop,
    /// Written back in time: files hold their current content.
    Keep,
    /// Written back up to a 512-byte sector boundary, the rest lost.
    Tear(u64),
    /// The unsynced range holds garbage (seeded).
    Garbage(u64),
}

/// A file's content: its length, and its bytes up to the end of its last
/// data range (the rest is a hole: preallocated segments are mostly holes,
/// and reading them whole at every fsync would be slow).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Content {
    len: u64,
    data: Vec<u8>,
}

impl Content {
    fn read(path: &Path) -> Option<Content> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let data_end = crate::io::data_ranges(&file, 0, len)
            .last()
            .map_or(0, |r| r.end);
        let mut data = vec![0; data_end as usize];
        file.read_exact_at(&mut data, 0).ok()?;
        Some(Content { len, data })
    }
}

/// One file of the image: its durable content and its content at the cut.
#[derive(Debug, Clone)]
struct FileImage {
    durable: Content,
    current: Content,
}

/// What a power cut at one operation would leave, before choosing what
/// became of the unsynced data.
#[derive(Debug, Clone, Default)]
pub(crate) struct Image {
    /// Relative directory paths that survive (the root is "").
    dirs: Vec<PathBuf>,
    /// Relative file paths that survive.
    files: BTreeMap<PathBuf, FileImage>,
}

#[derive(Debug)]
struct Sim {
    root: PathBuf,
    ops: u64,
    cut_at: Option<u64>,
    image: Option<Image>,
    /// Inode → content at its last sync.
    durable_files: HashMap<u64, Content>,
    /// Directory inode → its entries (name → (inode, is_dir)) at its last sync.
    durable_dirs: HashMap<u64, BTreeMap<OsString, (u64, bool)>>,
}

static SIMS: Mutex<Vec<Sim>> = Mutex::new(Vec::new());

/// Starts recording storage operations under `root` (which must exist and
/// be empty; it counts as durable, as a directory made long before).
pub(crate) fn start(root: &Path, cut_at: Option<u64>) {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut sim = Sim {
        root: root.clone(),
        ops: 0,
        cut_at,
        image: None,
        durable_files: HashMap::new(),
        durable_dirs: HashMap::new(),
    };
    sim.record_dir(&root);
    let mut sims = SIMS.lock();
    sims.retain(|s| s.root != root);
    sims.push(sim);
}

/// Stops recording under `root`: the number of operations seen and the
/// image captured at the cut, if it was reached.
pub(crate) fn finish(root: &Path) -> (u64, Option<Image>) {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut sims = SIMS.lock();
    match sims.iter().position(|s| s.root == root) {
        Some(i) => {
            let sim = sims.remove(i);
            (sim.ops, sim.image)
        }
        None => (0, None),
    }
}

/// Operations seen so far under `root`.
pub(crate) fn ops(root: &Path) -> u64 {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let sims = SIMS.lock();
    sims.iter().find(|s| s.root == root).map_or(0, |s| s.ops)
}

/// An operation on `path` is about to happen. Returns whether `path` is
/// under a simulation (whose syncs then need not reach the disk).
pub(crate) fn op(path: &Path) -> bool {
    let mut simulated = false;
    with_sim(path, |sim| {
        simulated = true;
        sim.ops += 1;
        if sim.cut_at == Some(sim.ops) {
            sim.image = Some(sim.capture());
        }
    });
    simulated
}

/// `path` (a file) was just synced: its content is durable now.
pub(crate) fn file_synced(path: &Path) {
    with_sim(path, |sim| {
        if let (Ok(meta), Some(content)) = (std::fs::metadata(path), Content::read(path)) {
            sim.durable_files.insert(meta.ino(), content);
        }
    });
}

/// `dir` was just synced: its entries are durable now.
pub(crate) fn dir_synced(dir: &Path) {
    with_sim(dir, |sim| sim.record_dir(dir));
}

fn with_sim(path: &Path, f: impl FnOnce(&mut Sim)) {
    let mut sims = SIMS.lock();
    if sims.is_empty() {
        return;
    }
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some(sim) = sims.iter_mut().find(|s| path.starts_with(&s.root)) {
        f(sim);
    }
}

impl Sim {
    fn record_dir(&mut self, dir: &Path) {
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        let mut entries = BTreeMap::new();
        if let Ok(read) = std::fs::read_dir(dir) {
            for entry in read.flatten() {
                if let Ok(m) = entry.metadata() {
                    entries.insert(entry.file_name(), (m.ino(), m.is_dir()));
                }
            }
        }
        self.durable_dirs.insert(meta.ino(), entries);
    }

    /// The durable tree from the root, with each file's current content
    /// found by inode.
    fn capture(&self) -> Image {
        let mut current_paths: HashMap<u64, PathBuf> = HashMap::new();
        walk(&self.root, &mut |path, ino| {
            current_paths.insert(ino, path.to_path_buf());
        });
        let mut image = Image::default();
        let root_ino = std::fs::metadata(&self.root).map(|m| m.ino()).unwrap_or(0);
        let mut stack = vec![(PathBuf::new(), root_ino)];
        while let Some((rel, ino)) = stack.pop() {
            image.dirs.push(rel.clone());
            let Some(entries) = self.durable_dirs.get(&ino) else {
                continue; // created, never synced: its entries are lost
            };
            for (name, &(child, is_dir)) in entries {
                let path = rel.join(name);
                if is_dir {
                    stack.push((path, child));
                    continue;
                }
                let durable = self.durable_files.get(&child).cloned().unwrap_or_default();
                let current = current_paths
                    .get(&child)
                    .and_then(|p| Content::read(p))
                    // Unlinked since: what the disk has is what was synced.
                    .unwrap_or_else(|| durable.clone());
                image.files.insert(path, FileImage { durable, current });
            }
        }
        image
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, u64)) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&path, f);
        } else {
            f(&path, meta.ino());
        }
    }
}

impl Image {
    /// Writes the image into the empty directory `dest`, with unsynced
    /// data treated as `unsynced`, and a boot id that reads as "the
    /// machine restarted" (as after a real power cut).
    pub(crate) fn materialize(&self, dest: &Path, unsynced: Unsynced) {
        for dir in &self.dirs {
            std::fs::create_dir_all(dest.join(dir)).expect("create image dir");
        }
        let mut rng = match unsynced {
            Unsynced::Tear(seed) | Unsynced::Garbage(seed) => seed | 1,
            _ => 1,
        };
        for (rel, file) in &self.files {
            let (len, bytes) = file.after_cut(unsynced, &mut rng);
            let path = dest.join(rel);
            std::fs::write(&path, &bytes).expect("write image file");
            if len > bytes.len() as u64 {
                // The rest is a hole, as it was.
                let f = std::fs::OpenOptions::new().write(true).open(&path);
                f.and_then(|f| f.set_len(len)).expect("extend image file");
            }
        }
        std::fs::write(dest.join(".boot_id"), "simulated-power-cut\n").expect("write boot id");
    }

    /// Files that had unsynced changes at the cut.
    pub(crate) fn unsynced_files(&self) -> usize {
        self.files
            .values()
            .filter(|f| f.durable != f.current)
            .count()
    }
}

impl FileImage {
    /// The file's length and leading bytes after the cut.
    fn after_cut(&self, unsynced: Unsynced, rng: &mut u64) -> (u64, Vec<u8>) {
        let bytes = self.bytes_after_cut(unsynced, rng);
        let len = match unsynced {
            Unsynced::Drop => self.durable.len,
            _ => self.current.len,
        };
        (len.max(bytes.len() as u64), bytes)
    }

    fn bytes_after_cut(&self, unsynced: Unsynced, rng: &mut u64) -> Vec<u8> {
        let (d, c) = (&self.durable.data, &self.current.data);
        let diff = d
            .iter()
            .zip(c)
            .position(|(a, b)| a != b)
            .unwrap_or(d.len().min(c.len()));
        match unsynced {
            Unsynced::Drop => d.clone(),
            Unsynced::Keep => c.clone(),
            Unsynced::Tear(_) => {
                // New data reached the disk up to a sector boundary past
                // the first change; beyond it the disk has what it had.
                let sectors = (c.len().saturating_sub(diff)).div_ceil(512) as u64;
                let tear = (diff / 512 * 512) + 512 * (next(rng) % (sectors + 1)) as usize;
                let tear = tear.min(c.len());
                let mut out = c[..tear].to_vec();
                if d.len() > tear {
                    out.extend_from_slice(&d[tear..]);
                }
                out
            }
            Unsynced::Garbage(_) => {
                let mut out = c[..diff].to_vec();
                out.extend((diff..c.len().max(d.len())).map(|_| next(rng) as u8));
                out
            }
        }
    }
}

/// splitmix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
