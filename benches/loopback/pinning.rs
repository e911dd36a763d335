//! CPU placement and noise: finding a thread by name, pinning the targets and the load generator
//! to CPUs with `taskset` (restored on drop), and the share of CPU time the host stole from the
//! VM (`/proc/stat`).

use std::process::Command;
use std::thread;

use crate::support::child::process_tree;
use crate::targets::{CpuOf, Target};

/// The id of this process's thread called `name`.
pub fn thread_named(name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        if comm.trim() != name {
            return None;
        }
        task.file_name().to_str()?.parse().ok()
    })
}

/// Affinities to restore when dropped: (pid or thread id, for all its threads, CPU list before).
#[derive(Default)]
pub struct Pinning(Vec<(u32, bool, String)>);

impl Pinning {
    /// Pins for the pinned pass: this process on CPU 1, then the single-worker targets on CPU 0.
    pub fn pin(targets: &[&Target]) -> Result<Pinning, String> {
        if thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return Err("needs 2 CPUs".into());
        }
        let mut pinning = Pinning::default();
        pinning.set(std::process::id(), true, "1")?;
        for target in targets {
            match target.cpu_of {
                Some(CpuOf::Thread(tid)) => pinning.set(tid, false, "0")?,
                Some(CpuOf::Tree(pid)) => {
                    for pid in process_tree(pid) {
                        pinning.set(pid, true, "0")?;
                    }
                }
                None => {}
            }
        }
        Ok(pinning)
    }

    fn set(&mut self, id: u32, all_threads: bool, cpus: &str) -> Result<(), String> {
        let before = taskset(id, false, &["-c", "-p"])?;
        let before = before
            .rsplit(": ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        taskset(id, all_threads, &["-p", "-c", cpus])?;
        self.0.push((id, all_threads, before));
        Ok(())
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        for (id, all_threads, cpus) in self.0.drain(..).rev() {
            if let Err(e) = taskset(id, all_threads, &["-p", "-c", &cpus]) {
                println!("!!! cannot restore the affinity of {id}: {e}");
            }
        }
    }
}

/// `taskset [-a] <args> <id>`: its stdout.
fn taskset(id: u32, all_threads: bool, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("taskset");
    command.args(all_threads.then_some("-a")).args(args);
    let out = command.arg(id.to_string()).output();
    let out = out.map_err(|e| format!("taskset: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The share of all CPU time the host stole since `before` ([`steal_and_total_ticks`]).
pub fn steal_since(before: Option<(u64, u64)>) -> String {
    match before.zip(steal_and_total_ticks()) {
        Some(((s0, t0), (s1, t1))) => {
            format!("{:.1}%", (s1 - s0) as f64 * 100.0 / (t1 - t0).max(1) as f64)
        }
        None => "n/a".into(),
    }
}

/// The machine's steal ticks and all its ticks so far (`/proc/stat`'s `cpu` line): a VM's vCPUs
/// not running because the host ran something else, which makes every figure noisier.
pub fn steal_and_total_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields = stat.lines().next()?.split_whitespace().skip(1);
    let ticks: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is in user.
    Some((*ticks.get(7)?, ticks.iter().take(8).sum()))
}
