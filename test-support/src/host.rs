//! The host as the benchmarks read it from `/proc`: the process table,
//! each process's proportional set size (PSS) and CPU time, the memory the
//! kernel says is available, the whole machine's busy time, and a
//! description of the machine and its Docker engine for a report.
//!
//! Every reader returns `None` (or an empty table) for a process that is
//! gone by the time it is read: a fleet's processes come and go (health
//! checks are `runc exec`s), and a benchmark counts what is there.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

/// One process of the table.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// `/proc/<pid>/comm` (at most 15 bytes of the executable's name).
    pub comm: String,
    /// `/proc/<pid>/cmdline`, split at the NULs.
    pub cmdline: Vec<String>,
}

/// Every process now, by pid (kernel threads included; their cmdline is
/// empty).
pub fn processes() -> HashMap<u32, Proc> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        table.insert(
            pid,
            Proc {
                pid,
                ppid,
                comm,
                cmdline,
            },
        );
    }
    table
}

/// `root` and every process below it in `table`.
pub fn subtree(table: &HashMap<u32, Proc>, root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in table.values() {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied());
        }
        i += 1;
    }
    out
}

/// The fields of `/proc/<pid>/stat` after the command name, starting with
/// the state (field 3 of proc(5) is index 0 here).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: cut at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// A `Key:` line of `/proc/<pid>/smaps_rollup` in KiB (`Pss`, `Rss`,
/// `Pss_Anon`…); `None` when the process is gone (or is a kernel thread).
pub fn smaps_rollup(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field_kib(&text, key)
}

/// The proportional set size of the process, KiB: its private pages plus
/// its share of every page it maps together with other processes.
pub fn pss_kib(pid: u32) -> Option<u64> {
    smaps_rollup(pid, "Pss")
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, `VmHWM`…).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kib(&text, key)
}

/// A field of `/proc/meminfo` in KiB (`MemAvailable`, `Slab`…).
pub fn meminfo_kib(key: &str) -> Option<u64> {
    field_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, key)
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when it cannot be read).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) the process has used so far; `None` when
/// it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// CPU seconds of every process in `pids`, by pid (the gone left out).
pub fn cpu_seconds_of(pids: &[u32]) -> HashMap<u32, f64> {
    pids.iter()
        .filter_map(|&p| Some((p, cpu_seconds(p)?)))
        .collect()
}

/// The CPU seconds `before` → `after` for the processes present in both
/// (a process that started or ended in between is not counted).
pub fn cpu_delta(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    before
        .iter()
        .filter_map(|(pid, b)| Some(after.get(pid)? - b))
        .sum()
}

/// Busy and total jiffies of the whole machine (`/proc/stat`; idle and
/// iowait are not busy).
pub fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// The cores the machine was busy on average between two
/// [`machine_jiffies`] readings.
pub fn busy_cores(before: (f64, f64), after: (f64, f64)) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    (after.0 - before.0) / (after.1 - before.1).max(1.0) * cpus
}

/// The pid of the first process whose command name is `comm`.
pub fn pid_of(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (name.trim() == comm).then_some(pid)
    })
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine and its engine in a few lines: cores, memory, load, kernel,
/// Docker's version, storage, cgroup and logging drivers, and the daemon's
/// `userland-proxy` setting (from `/etc/docker/daemon.json`; Docker's
/// default, on, when it is not set there).
pub fn describe_machine() -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let gib = |kib: Option<u64>| kib.map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let info = Command::new("docker")
        .args([
            "info",
            "--format",
            "{{.ServerVersion}}|{{.Driver}}|{{.CgroupDriver}} v{{.CgroupVersion}}|{{.LoggingDriver}}",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let fields: Vec<&str> = info.split('|').collect();
    let get = |i: usize| fields.get(i).copied().unwrap_or("?");
    let daemon = std::fs::read_to_string("/etc/docker/daemon.json").ok();
    let userland = daemon
        .as_deref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .map(|v| match &v["userland-proxy"] {
            serde_json::Value::Bool(b) => format!("{b} (daemon.json)"),
            _ => "true (Docker's default; not set in daemon.json)".to_owned(),
        })
        .unwrap_or_else(|| "unknown (no readable /etc/docker/daemon.json)".to_owned());
    vec![
        format!(
            "machine: {cpus} cores ({model}), {:.1} GiB memory ({:.1} GiB available), loadavg {}, kernel {kernel}",
            gib(meminfo_kib("MemTotal")),
            gib(meminfo_kib("MemAvailable")),
            loadavg()
        ),
        format!(
            "docker: engine {}, storage driver {}, cgroup driver {}, logging driver {}, userland-proxy {userland}",
            get(0),
            get(1),
            get(2),
            get(3)
        ),
        format!(
            "daemon.json: {}",
            daemon
                .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| "(none)".to_owned())
        ),
        format!(
            "limits: open files (this process) {}, pid_max {}, threads-max {}",
            std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|s| s
                    .lines()
                    .find(|l| l.starts_with("Max open files"))
                    .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_owned()))
                .unwrap_or_default(),
            read_trimmed("/proc/sys/kernel/pid_max"),
            read_trimmed("/proc/sys/kernel/threads-max")
        ),
    ]
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// One wrk run: its report and the CPU each side used.
pub struct WrkRun {
    /// wrk's whole report (stdout).
    pub output: String,
    /// `Requests/sec:`, and the 50 % and 99 % latencies, as wrk prints them.
    pub rps: String,
    pub p50: String,
    pub p99: String,
    /// CPU seconds (user + system) of wrk and of the server process.
    pub wrk_cpu: f64,
    pub server_cpu: f64,
    /// CPU seconds the whole machine was busy (everyone's processes).
    pub machine_cpu: f64,
    /// Wall seconds of the run.
    pub seconds: f64,
}

/// `wrk -t2 -c32 -d<secs>s --latency` on `url` with `jwt` as the bearer
/// token, timed with `/usr/bin/time` for wrk's own CPU, and the CPU the
/// process `server_pid` and the whole machine used meanwhile.
///
/// Errors: wrk or `/usr/bin/time` missing (`apt-get install -y wrk time`),
/// wrk failing, any non-2xx answer, a report without its figures.
pub fn wrk(server_pid: u32, url: &str, jwt: &str, secs: u32) -> anyhow::Result<WrkRun> {
    use anyhow::{bail, Context as _};
    let auth = format!("Authorization: Bearer {jwt}");
    let duration = format!("-d{secs}s");
    let server = || cpu_seconds(server_pid).with_context(|| format!("/proc/{server_pid}/stat"));
    let before = server()?;
    let busy0 = machine_jiffies();
    let t = std::time::Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "wrk-cpu %U %S", "wrk", "-t2", "-c32", &duration])
        .args(["--latency", "-H", &auth, url])
        .output()
        .context("running wrk (apt-get install -y wrk time)")?;
    let seconds = t.elapsed().as_secs_f64();
    let server_cpu = server()? - before;
    let machine_cpu = busy_cores(busy0, machine_jiffies()) * seconds;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("wrk: {stderr}");
    }
    let wrk_cpu = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wrk-cpu "))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse::<f64>().ok())
                .sum()
        })
        .context("no wrk CPU time")?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    if output.contains("Non-2xx") {
        bail!("wrk saw non-2xx answers:\n{output}");
    }
    let find = |prefix: &str| -> anyhow::Result<String> {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("no {prefix} in wrk output"))
    };
    Ok(WrkRun {
        rps: find("Requests/sec:")?,
        p50: find("50%")?,
        p99: find("99%")?,
        output,
        wrk_cpu,
        server_cpu,
        machine_cpu,
        seconds,
    })
}
