//! The real `adopt-worker run --no-api` processes of a scenario: spawned, SIGKILLed,
//! SIGTERMed, respawned. Each process's log goes to `<out>/logs/<scenario>-<n>.log`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::helpers::bin;

/// The workers' `smtp.timeout_secs`: a send not answered within it is cut.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings every scenario's workers run with: a short lease so rows of a dead worker come
/// back within seconds, and a retry schedule short enough to retry within the time bound.
pub const CHAOS_ENV: &[(&str, &str)] = &[
    ("ADOPT__SMTP__TIMEOUT_SECS", "2"), // SMTP_TIMEOUT
    ("ADOPT__WORKER__LEASE_SECS", "3"),
    ("ADOPT__WORKER__POLL_INTERVAL_MS", "100"),
    ("ADOPT__RETRY__INITIAL_INTERVAL_SECS", "1"),
    ("ADOPT__RETRY__MAX_INTERVAL_SECS", "2"),
    ("ADOPT__RETRY__DEFAULT_MAX_RETRIES", "20"),
    ("ADOPT__LOG__LEVEL", "warn"),
];

pub struct Fleet {
    scenario: &'static str,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    slots: Vec<Option<Child>>,
    spawned: usize,
}

impl Fleet {
    pub fn new(scenario: &'static str, db_url: &str, smtp_url: &str, log_dir: PathBuf) -> Fleet {
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut env: Vec<(String, String)> = CHAOS_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("DATABASE_URL".into(), db_url.into()));
        env.push(("SMTP_URL".into(), smtp_url.into()));
        Fleet {
            scenario,
            env,
            log_dir,
            slots: Vec::new(),
            spawned: 0,
        }
    }

    /// Starts `n` processes.
    pub fn start(&mut self, n: usize) {
        for _ in 0..n {
            self.slots.push(None);
            self.respawn(self.slots.len() - 1);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Starts a fresh process in slot `i` (which must be empty).
    pub fn respawn(&mut self, i: usize) {
        assert!(self.slots[i].is_none(), "slot {i} still has a process");
        self.spawned += 1;
        let log = self
            .log_dir
            .join(format!("{}-{}.log", self.scenario, self.spawned));
        let log = std::fs::File::create(log).unwrap();
        let mut cmd = Command::from(bin());
        cmd.args(["run", "--no-api"])
            // Each process serves /metrics; several on one host need their own ports.
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .env_remove("ADOPT_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        self.slots[i] = Some(cmd.spawn().expect("spawn adopt-worker"));
    }

    /// SIGKILL: no chance to release anything. Waits until the process is gone.
    pub async fn kill(&mut self, i: usize) {
        let mut child = self.slots[i].take().expect("a process to kill");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// Sends SIGTERM to slot `i` (the process stays in its slot until [`Fleet::wait`]).
    pub fn terminate(&self, i: usize) {
        let child = self.slots[i].as_ref().expect("a process to signal");
        let pid = child.id().expect("process still running").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Waits for slot `i` to exit, at most `timeout`; `None` if it did not (it is then
    /// killed). The slot is empty afterwards.
    pub async fn wait(&mut self, i: usize, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let mut child = self.slots[i].take().expect("a process to wait for");
        let started = Instant::now();
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Some((status.unwrap(), started.elapsed())),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        }
    }

    /// SIGTERM to every running process, then waits for all; returns each one's exit (or
    /// `None` for one that did not stop within `timeout`).
    pub async fn stop_all(&mut self, timeout: Duration) -> Vec<Option<(ExitStatus, Duration)>> {
        let running: Vec<usize> = (0..self.slots.len())
            .filter(|i| self.slots[*i].is_some())
            .collect();
        for &i in &running {
            self.terminate(i);
        }
        let mut out = Vec::new();
        for i in running {
            out.push(self.wait(i, timeout).await);
        }
        out
    }

    /// Processes started so far, respawns included.
    pub fn spawned(&self) -> usize {
        self.spawned
    }
}
