//! The bench network and CPU accounting (commands and processes are the tests crate's).
//!
//! ```text
//!  server ns  ebench-s-<pid>                 client ns  ebench-c-<pid>
//!  ebs  10.212.0.1/24  <------ veth ------>  ebc  10.212.0.2/24
//!  the server under test, pinned to CPU 1    kxdpgun / pollers, pinned to CPU 0
//! ```
//!
//! Every guard removes what it made on drop (processes, then namespaces, then files), also when
//! a measurement fails. Every command runs under a time limit.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::Result;
use testkit::Bpffs;

pub const S_IF: &str = "ebs";
pub const C_IF: &str = "ebc";
pub const SERVER: &str = "10.212.0.1";
pub const CLIENT: &str = "10.212.0.2";
/// CPU of the server under test (and its NAPI thread in threaded mode); the generator gets 0.
pub const SERVER_CPU: usize = 1;
pub const CLIENT_CPU: usize = 0;

const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` and returns its stdout; fails unless it exits 0 within [`CMD_TIMEOUT`].
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    Ok(testkit::try_run_ok(cmd, CMD_TIMEOUT)?)
}

/// Two namespaces, a veth pair between them and a scratch directory; all removed on drop.
pub struct Bed {
    pub s: String,
    pub c: String,
    pub dir: PathBuf,
    /// bpffs mounted under `dir` (for the floor program), unmounted on drop.
    bpffs: Option<Bpffs>,
}

impl Bed {
    pub fn new(dir: &Path) -> Result<Bed> {
        let pid = std::process::id();
        fs::create_dir_all(dir)?;
        let bed = Bed {
            s: format!("ebench-s-{pid}"),
            c: format!("ebench-c-{pid}"),
            dir: dir.to_owned(),
            bpffs: None,
        };
        for ns in [&bed.s, &bed.c] {
            // A leftover of a killed run of ours (same pid is unlikely, but be safe).
            let _ =
                testkit::run_timeout(Command::new("ip").args(["netns", "del", ns]), CMD_TIMEOUT);
        }
        run_ok(Command::new("ip").args(["netns", "add", &bed.s]))?;
        // From here on, Drop cleans up.
        run_ok(Command::new("ip").args(["netns", "add", &bed.c]))?;
        run_ok(Command::new("ip").args([
            "link", "add", S_IF, "netns", &bed.s, "type", "veth", "peer", "name", C_IF, "netns",
            &bed.c,
        ]))?;
        for (ns, dev, addr) in [(&bed.s, S_IF, SERVER), (&bed.c, C_IF, CLIENT)] {
            bed.ip(ns, &["link", "set", "lo", "up"])?;
            bed.ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            // TX checksum offload off: XDP must never see a partial UDP checksum.
            run_ok(bed.exec(ns, "ethtool").args(["-K", dev, "tx", "off"]))?;
            bed.ip(ns, &["link", "set", dev, "up"])?;
        }
        Ok(bed)
    }

    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        run_ok(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// `ip netns exec NS program`: `ip` execs it, so the child's pid is the program's.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Like [`Bed::exec`], pinned to `cpu` with taskset.
    pub fn exec_on(&self, ns: &str, cpu: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            ns,
            "taskset",
            "-c",
            &cpu.to_string(),
            program,
        ]);
        c
    }

    /// Writes `value` to `/sys/class/net/DEV/ATTR` inside `ns` (`ip netns exec` remounts /sys).
    pub fn sysfs_write(&self, ns: &str, dev: &str, attr: &str, value: &str) -> Result<()> {
        run_ok(
            self.exec(ns, "sh")
                .args(["-c", &format!("echo {value} > /sys/class/net/{dev}/{attr}")]),
        )
        .map(|_| ())
    }

    /// `ethtool -S` counters of a device.
    pub fn ethtool_stats(&self, ns: &str, dev: &str) -> Result<Vec<(String, u64)>> {
        let out = run_ok(self.exec(ns, "ethtool").args(["-S", dev]))?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Sum of the `ethtool -S` counters of `dev` whose name ends in `suffix`.
    pub fn ethtool_sum(&self, ns: &str, dev: &str, suffix: &str) -> u64 {
        self.ethtool_stats(ns, dev)
            .map(|v| {
                v.iter()
                    .filter(|(k, _)| k.ends_with(suffix))
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The MAC address of a device.
    pub fn mac(&self, ns: &str, dev: &str) -> Result<String> {
        Ok(run_ok(
            self.exec(ns, "cat")
                .arg(format!("/sys/class/net/{dev}/address")),
        )?
        .trim()
        .to_owned())
    }

    /// Removes any XDP program from a device (kxdpgun leaves its own attached).
    pub fn xdp_off(&self, ns: &str, dev: &str) {
        let _ = testkit::run_timeout(
            Command::new("ip").args(["-n", ns, "link", "set", "dev", dev, "xdp", "off"]),
            CMD_TIMEOUT,
        );
    }

    /// A bpffs below the scratch directory (reachable from `ip -n`, unlike /sys/fs/bpf).
    pub fn bpffs(&mut self) -> Result<PathBuf> {
        if self.bpffs.is_none() {
            self.bpffs = Some(Bpffs::try_mount(&self.dir.join("bpffs"))?);
        }
        Ok(self.bpffs.as_ref().expect("just mounted").path().to_owned())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.xdp_off(&self.c.clone(), C_IF);
        self.xdp_off(&self.s.clone(), S_IF);
        for ns in [&self.s, &self.c] {
            let _ =
                testkit::run_timeout(Command::new("ip").args(["netns", "del", ns]), CMD_TIMEOUT);
        }
        // The bpffs goes after this, with the field.
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs `f` on a thread inside `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_owned();
    thread::spawn(move || {
        testkit::enter_netns(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a measurement thread panicked"))?
}

// ---------------------------------------------------------------------------------------------
// CPU accounting

/// CPU time of a task in ns (`/proc/TID/schedstat`, first field: time on the CPU).
fn task_ns(path: &Path) -> u64 {
    fs::read_to_string(path.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time in ns of every thread of a process.
pub fn process_ns(pid: u32) -> u64 {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    rd.flatten().map(|e| task_ns(&e.path())).sum()
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The fields after the `(comm)`: state, ppid, ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// The threaded-NAPI kernel threads of a device (`napi/DEV-ID`).
pub fn napi_threads(dev: &str) -> Vec<u32> {
    let prefix = format!("napi/{dev}-");
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
            {
                v.push(p);
            }
        }
    }
    v
}

pub fn threads_ns(tids: &[u32]) -> u64 {
    tids.iter()
        .map(|t| task_ns(&PathBuf::from(format!("/proc/{t}"))))
        .sum()
}

/// Pins tasks to a CPU (`taskset -pc`).
pub fn pin_tasks(tids: &[u32], cpu: usize) -> Result<()> {
    for t in tids {
        run_ok(Command::new("taskset").args(["-pc", &cpu.to_string(), &t.to_string()]))?;
    }
    Ok(())
}

/// Pins every thread of `pid` and of its children to `cpu` (`taskset -a -pc`), whatever
/// affinity they set for themselves. Best effort: a task that is gone is skipped.
pub fn pin_tree(pid: u32, cpu: usize) {
    for pid in tree(pid) {
        let _ =
            run_ok(Command::new("taskset").args(["-a", "-pc", &cpu.to_string(), &pid.to_string()]));
    }
}

/// Per-CPU `(busy, softirq)` in USER_HZ ticks from /proc/stat.
pub fn cpu_ticks() -> Vec<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let total: u64 = f.iter().take(8).sum();
            let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
            (total - idle, f.get(6).copied().unwrap_or(0))
        })
        .collect()
}

/// The 1-minute load average and what else ran (for the report: the box is shared).
pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
