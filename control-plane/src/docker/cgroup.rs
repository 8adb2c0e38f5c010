//! Container resource use read from the kernel's cgroup files instead of the
//! engine's stats endpoint. A one-shot `GET /containers/{id}/stats` makes
//! `dockerd` ask containerd and the container's shim for the same numbers,
//! wait a second for a second reading, and marshal a large JSON document;
//! reading three small files under `/sys/fs/cgroup` costs microseconds and
//! no daemon work, which is what lets the stats poll scale to thousands of
//! agents (issue 16).
//!
//! The figures are the ones `docker stats` prints:
//! - memory: usage minus inactive page cache, Docker CLI's
//!   `calculateMemUsageUnixNoCache` (cli/command/container/stats_helpers.go):
//!   cgroup v2 `memory.current` − `inactive_file` of `memory.stat`; cgroup v1
//!   `memory.usage_in_bytes` − `total_inactive_file` (the subtraction only
//!   when the cache is smaller than the usage);
//! - CPU: percent of one CPU over the time between two readings of the
//!   container's cumulative CPU time — v2 `cpu.stat` `usage_usec`, v1
//!   `cpuacct.usage` (nanoseconds) — divided by the wall time between them.
//!   Docker's formula (container delta ÷ host delta × online CPUs) is the
//!   same quantity, since the host's CPU time advances by the wall time
//!   once per online CPU.
//!
//! Kernel references: Documentation/admin-guide/cgroup-v2.rst
//! (`memory.current`, `memory.stat`, `cpu.stat`) and
//! Documentation/admin-guide/cgroup-v1/{memory,cpuacct}.rst.
//!
//! Where the files are: the engine puts a container in
//! `system.slice/docker-<id>.scope` (systemd cgroup driver) or `docker/<id>`
//! (cgroupfs driver), under the unified hierarchy (v2) or under each v1
//! controller's hierarchy (`memory/`, `cpuacct/`). Anything else — a custom
//! `--cgroup-parent`, rootless Docker, another engine, zcaas in a container
//! that sees only its own cgroup — is "not readable" and the caller asks the
//! engine instead.
//!
//! CPU needs two readings: each reading of a container is kept (with the
//! cgroup directory's inode, which changes when a restart makes a new
//! cgroup, and the instant) so the next poll of the same container has a
//! figure; the first reading has none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where cgroup hierarchies are mounted on Linux.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A kept reading older than this is forgotten (its container is gone, or
/// polled so rarely that the average says little).
const SAMPLE_TTL: Duration = Duration::from_secs(300);
/// Readings closer together than this give no CPU figure (too noisy).
pub const MIN_CPU_SPAN: Duration = Duration::from_millis(500);

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy mounted at the root (`cgroup.controllers` there).
    V2,
    /// Per-controller v1 hierarchies (`memory/`, `cpuacct/`), possibly with
    /// a unified hierarchy beside them (hybrid).
    V1,
}

impl Layout {
    /// The layout under `root`, `None` when it is neither.
    pub fn detect(root: &Path) -> Option<Layout> {
        if root.join("cgroup.controllers").is_file() {
            Some(Layout::V2)
        } else if root.join("memory").is_dir() && root.join("cpuacct").is_dir() {
            Some(Layout::V1)
        } else {
            None
        }
    }
}

/// One reading of one container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Memory in bytes, page cache excluded ([`memory_no_cache`]).
    pub memory_bytes: u64,
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Inode of the cgroup directory the CPU time was read from: a new
    /// cgroup (the container restarted) has another one, and its counter
    /// starts again from zero.
    pub cgroup_ino: u64,
}

/// The value of `key` in a flat-keyed cgroup file (`memory.stat`,
/// `cpu.stat`: one `key value` pair per line).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The number in a single-value cgroup file (`memory.current`,
/// `memory.usage_in_bytes`, `cpuacct.usage`).
pub fn single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Usage minus the inactive file cache, when that cache is smaller than the
/// usage (Docker CLI's `calculateMemUsageUnixNoCache`).
pub fn memory_no_cache(usage: u64, inactive_file: Option<u64>) -> u64 {
    match inactive_file {
        Some(cache) if cache < usage => usage - cache,
        _ => usage,
    }
}

/// Percent of one CPU used between `before` and `after`, `elapsed` apart;
/// `None` when they cannot be compared (another cgroup, a counter that went
/// back, or too short a span).
pub fn cpu_percent(before: &Reading, after: &Reading, elapsed: Duration) -> Option<f64> {
    if before.cgroup_ino != after.cgroup_ino || after.cpu_ns < before.cpu_ns {
        return None;
    }
    if elapsed < MIN_CPU_SPAN {
        return None;
    }
    Some((after.cpu_ns - before.cpu_ns) as f64 / elapsed.as_nanos() as f64 * 100.0)
}

/// Whether `id` is a full engine container id (64 lowercase hex digits),
/// the only form the cgroup directories are named by; anything else (and
/// so any path trick) is never joined into a path.
fn is_full_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where one container's cgroup files are: the directory of each file we
/// read, for both cgroup drivers, in the order to try.
fn candidates(layout: Layout, root: &Path, id: &str) -> Vec<(PathBuf, PathBuf)> {
    let scopes = [
        format!("system.slice/docker-{id}.scope"),
        format!("docker/{id}"),
    ];
    scopes
        .iter()
        .map(|scope| match layout {
            // Memory and CPU in one directory.
            Layout::V2 => (root.join(scope), root.join(scope)),
            Layout::V1 => (
                root.join("memory").join(scope),
                root.join("cpuacct").join(scope),
            ),
        })
        .collect()
}

/// Reads one container's cgroup now; `None` when its files are not there
/// or not readable.
pub fn read(layout: Layout, root: &Path, id: &str) -> Option<Reading> {
    if !is_full_id(id) {
        return None;
    }
    candidates(layout, root, id)
        .into_iter()
        .find_map(|(memory_dir, cpu_dir)| read_dirs(layout, &memory_dir, &cpu_dir))
}

fn read_dirs(layout: Layout, memory_dir: &Path, cpu_dir: &Path) -> Option<Reading> {
    use std::os::unix::fs::MetadataExt;
    let file = |dir: &Path, name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let cgroup_ino = std::fs::metadata(cpu_dir).ok()?.ino();
    let stat = file(memory_dir, "memory.stat")?;
    let (usage, inactive, cpu_ns) = match layout {
        Layout::V2 => {
            let usage = single_value(&file(memory_dir, "memory.current")?)?;
            let usec = keyed_value(&file(cpu_dir, "cpu.stat")?, "usage_usec")?;
            (
                usage,
                keyed_value(&stat, "inactive_file"),
                usec.saturating_mul(1000),
            )
        }
        Layout::V1 => {
            let usage = single_value(&file(memory_dir, "memory.usage_in_bytes")?)?;
            let ns = single_value(&file(cpu_dir, "cpuacct.usage")?)?;
            (usage, keyed_value(&stat, "total_inactive_file"), ns)
        }
    };
    Some(Reading {
        memory_bytes: memory_no_cache(usage, inactive),
        cpu_ns,
        cgroup_ino,
    })
}

/// What a poll of one container reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub memory_mb: f64,
    /// Over the time since the previous reading kept for this container;
    /// `None` without one.
    pub cpu_percent: Option<f64>,
}

/// A reading kept for the next one to compare with.
#[derive(Debug, Clone, Copy)]
struct Kept {
    reading: Reading,
    at: Instant,
}

/// Reads containers' cgroups and keeps each one's last reading. Shared by
/// every clone of a [`super::DockerRuntime`]; the methods do blocking file
/// reads (microseconds each: run a batch in one `spawn_blocking`).
pub struct CgroupStats {
    root: PathBuf,
    layout: OnceLock<Option<Layout>>,
    kept: Mutex<KeptReadings>,
}

#[derive(Default)]
struct KeptReadings {
    by_id: HashMap<String, Kept>,
    pruned_at: Option<Instant>,
}

impl CgroupStats {
    /// Reads under `root` ([`CGROUP_ROOT`] in production); the layout is
    /// detected on first use.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupStats {
            root: root.into(),
            layout: OnceLock::new(),
            kept: Mutex::new(KeptReadings::default()),
        }
    }

    /// The host's layout, `None` when cgroups cannot be read here at all.
    pub fn layout(&self) -> Option<Layout> {
        *self.layout.get_or_init(|| Layout::detect(&self.root))
    }

    /// Reads container `id` and keeps the reading; `None` when its cgroup
    /// cannot be read (ask the engine). The CPU figure is over the time
    /// since the kept reading, when there is a comparable one at least
    /// [`MIN_CPU_SPAN`] old (a younger one is kept, not replaced).
    pub fn sample(&self, id: &str) -> Option<Sample> {
        let reading = read(self.layout()?, &self.root, id)?;
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.prune(now);
        let previous = kept.by_id.get(id).copied();
        let cpu = previous.and_then(|p| cpu_percent(&p.reading, &reading, now - p.at));
        let too_recent = previous.is_some_and(|p| {
            p.reading.cgroup_ino == reading.cgroup_ino && now - p.at < MIN_CPU_SPAN
        });
        if !too_recent {
            kept.by_id.insert(id.to_owned(), Kept { reading, at: now });
        }
        Some(Sample {
            memory_mb: reading.memory_bytes as f64 / (1024.0 * 1024.0),
            cpu_percent: cpu,
        })
    }

    /// Forgets the kept reading of container `id`.
    pub fn forget(&self, id: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.by_id.remove(id);
    }
}

impl KeptReadings {
    /// Drops readings older than [`SAMPLE_TTL`], at most once a minute.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned_at
            .is_some_and(|at| now - at < Duration::from_secs(60))
        {
            return;
        }
        self.pruned_at = Some(now);
        self.by_id.retain(|_, k| now - k.at < SAMPLE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "336fe9a744def64dec110ef0aaf9d33613712dcebcb486b00adbd32d3a4713f0";

    // Trimmed from a live container (kernel 6.x): v2 `memory.stat` and
    // `cpu.stat`, v1 `memory.stat`.
    const V2_MEMORY_STAT: &str = "anon 3158016\nfile 1216512\nkernel 344064\nkernel_stack 65536\n\
        pagetables 65536\nshmem 0\nfile_mapped 0\nfile_dirty 0\nactive_anon 3153920\n\
        inactive_anon 4096\nactive_file 733184\ninactive_file 483328\nunevictable 0\n";
    const V2_CPU_STAT: &str = "usage_usec 36435\nuser_usec 18000\nsystem_usec 18435\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
    const V1_MEMORY_STAT: &str = "cache 8192\nrss 94208\ninactive_file 4096\n\
        total_cache 8192\ntotal_rss 94208\ntotal_inactive_anon 90112\ntotal_inactive_file 8192\n";

    #[test]
    fn parses_flat_keyed_and_single_value_files() {
        assert_eq!(keyed_value(V2_MEMORY_STAT, "inactive_file"), Some(483_328));
        // A key is matched whole, not as a prefix or suffix.
        assert_eq!(keyed_value(V2_MEMORY_STAT, "file"), Some(1_216_512));
        assert_eq!(keyed_value(V2_MEMORY_STAT, "active_file"), Some(733_184));
        assert_eq!(keyed_value(V2_CPU_STAT, "usage_usec"), Some(36_435));
        assert_eq!(
            keyed_value(V1_MEMORY_STAT, "total_inactive_file"),
            Some(8192)
        );
        assert_eq!(keyed_value(V2_CPU_STAT, "missing"), None);
        assert_eq!(keyed_value("usage_usec lots\n", "usage_usec"), None);
        assert_eq!(single_value("634880\n"), Some(634_880));
        assert_eq!(single_value("max\n"), None);
        assert_eq!(single_value(""), None);
    }

    #[test]
    fn memory_excludes_inactive_file_cache_like_the_docker_cli() {
        assert_eq!(memory_no_cache(1_000_000, Some(400_000)), 600_000);
        assert_eq!(memory_no_cache(1_000_000, None), 1_000_000);
        // A cache not below the usage is not subtracted (it would underflow).
        assert_eq!(memory_no_cache(1_000_000, Some(1_000_000)), 1_000_000);
        assert_eq!(memory_no_cache(0, Some(5)), 0);
    }

    #[test]
    fn cpu_percent_is_the_counter_delta_over_wall_time() {
        let at = |cpu_ns, cgroup_ino| Reading {
            memory_bytes: 0,
            cpu_ns,
            cgroup_ino,
        };
        let second = Duration::from_secs(1);
        // 0.25 s of CPU in 1 s: a quarter of one core.
        let p = cpu_percent(&at(1_000_000_000, 7), &at(1_250_000_000, 7), second);
        assert!((p.expect("figure") - 25.0).abs() < 1e-9);
        // Two cores busy for 10 s: 200 %.
        let p = cpu_percent(&at(0, 7), &at(20_000_000_000, 7), 10 * second);
        assert!((p.expect("figure") - 200.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&at(5, 7), &at(5, 7), second), Some(0.0));
        // A restart: another cgroup, or a counter that went back.
        assert_eq!(cpu_percent(&at(5, 7), &at(9, 8), second), None);
        assert_eq!(cpu_percent(&at(9, 7), &at(5, 7), second), None);
        // Too short a span.
        assert_eq!(cpu_percent(&at(5, 7), &at(9, 7), MIN_CPU_SPAN / 2), None);
    }

    #[test]
    fn only_full_ids_become_paths() {
        assert!(is_full_id(ID));
        assert!(!is_full_id(&ID[..12]));
        assert!(!is_full_id(&ID.to_uppercase()));
        let dotted = format!("../../{}", &ID[6..]);
        assert_eq!(dotted.len(), 64);
        assert!(!is_full_id(&dotted));
        assert_eq!(read(Layout::V2, Path::new("/nonexistent"), &dotted), None);
    }

    /// A fake cgroup tree under a temporary directory.
    struct Tree(PathBuf);
    impl Tree {
        fn new(name: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!(
                "zcaas-cgroup-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Tree(dir)
        }
        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, text).expect("write");
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_v2_systemd_scopes() {
        let tree = Tree::new("v2");
        tree.write("cgroup.controllers", "cpu memory pids\n");
        let scope = format!("system.slice/docker-{ID}.scope");
        tree.write(&format!("{scope}/memory.current"), "5242880\n");
        tree.write(&format!("{scope}/memory.stat"), V2_MEMORY_STAT);
        tree.write(&format!("{scope}/cpu.stat"), V2_CPU_STAT);
        assert_eq!(Layout::detect(&tree.0), Some(Layout::V2));
        let r = read(Layout::V2, &tree.0, ID).expect("reading");
        assert_eq!(r.memory_bytes, 5_242_880 - 483_328);
        assert_eq!(r.cpu_ns, 36_435_000);
        // Another container: not there.
        assert_eq!(read(Layout::V2, &tree.0, &"a".repeat(64)), None);
    }

    #[test]
    fn reads_v1_cgroupfs_directories() {
        let tree = Tree::new("v1");
        tree.write(
            &format!("memory/docker/{ID}/memory.usage_in_bytes"),
            "634880\n",
        );
        tree.write(&format!("memory/docker/{ID}/memory.stat"), V1_MEMORY_STAT);
        tree.write(&format!("cpuacct/docker/{ID}/cpuacct.usage"), "36435870\n");
        // The unified hierarchy beside v1 (hybrid) does not make it v2.
        tree.write("unified/cgroup.procs", "");
        assert_eq!(Layout::detect(&tree.0), Some(Layout::V1));
        let r = read(Layout::V1, &tree.0, ID).expect("reading");
        assert_eq!(r.memory_bytes, 634_880 - 8192);
        assert_eq!(r.cpu_ns, 36_435_870);
        assert_eq!(Layout::detect(&tree.0.join("unified")), None);
    }

    #[test]
    fn a_sample_has_cpu_from_the_second_reading_on() {
        let tree = Tree::new("sample");
        tree.write("cgroup.controllers", "");
        let dir = format!("docker/{ID}");
        tree.write(&format!("{dir}/memory.current"), "2097152\n");
        tree.write(&format!("{dir}/memory.stat"), "inactive_file 1048576\n");
        tree.write(&format!("{dir}/cpu.stat"), "usage_usec 1000\n");
        let stats = CgroupStats::new(&tree.0);
        let first = stats.sample(ID).expect("first");
        assert_eq!(first.memory_mb, 1.0);
        assert_eq!(first.cpu_percent, None);
        // Too soon: still no figure, and the first reading is kept.
        tree.write(&format!("{dir}/cpu.stat"), "usage_usec 2000\n");
        assert_eq!(stats.sample(ID).expect("again").cpu_percent, None);
        std::thread::sleep(MIN_CPU_SPAN);
        tree.write(&format!("{dir}/cpu.stat"), "usage_usec 101000\n");
        let later = stats.sample(ID).expect("later");
        let cpu = later.cpu_percent.expect("a figure");
        // 0.1 s of CPU over a little more than 0.5 s.
        assert!(cpu > 10.0 && cpu <= 20.0, "{cpu}");
        stats.forget(ID);
        assert_eq!(stats.sample(ID).expect("after forget").cpu_percent, None);
        assert_eq!(CgroupStats::new(tree.0.join("none")).sample(ID), None);
    }
}
