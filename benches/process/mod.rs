//! What the `harness = false` benches share: a role of the bench executable
//! run as a child process, and the CPU time a process has used.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// A role of the bench executable started as a child process: it prints
/// `listening <port>` on stdout and exits when its stdin closes.
pub struct Process {
    /// Its process (for its id, to read its CPU time).
    pub child: Child,
    stdin: Option<ChildStdin>,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Process {
    /// Starts the executable again with `role_env=role` and waits for its
    /// port.
    pub fn spawn(role_env: &str, role: &str) -> Self {
        let exe = std::env::current_exe().expect("own executable");
        let mut child = Command::new(exe)
            .env(role_env, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {role} process: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the child's port");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {role} output {line:?}"));
        Self { child, stdin, port }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing its stdin makes it exit; kill it if it has not within 2 s.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`, in
/// seconds (clock ticks of 10 ms).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) as f64 / 100.0
}
