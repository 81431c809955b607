//! A PostgreSQL cluster of a test's own (initdb on a free port, as the
//! `postgres` user), to stop, restart or freeze without disturbing any other
//! test. Needs root, `runuser` and the server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::free_port;

pub struct Throwaway {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Throwaway {
    /// A new cluster, started; `None` where this machine cannot make one.
    pub fn create() -> Option<Throwaway> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|v| v.path().join("bin")).next()?;
        let dir = tempfile::tempdir().ok()?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).ok()?;
        let owner = Command::new("chown").arg("postgres:postgres").arg(&data).status().ok()?.success();
        let open = Command::new("chmod").arg("755").arg(dir.path()).status().ok()?.success();
        let data_arg = data.to_str()?;
        let made = owner && open && as_postgres(&bin, "initdb", &["-D", data_arg, "--auth=trust", "-U", "postgres"]);
        let cluster = Throwaway { _dir: dir, data, bin, port: free_port() };
        (made && cluster.start()).then_some(cluster)
    }

    pub fn start(&self) -> bool {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.data.display());
        let log = self.data.join("server.log");
        let (data, log) = (self.data.to_str().unwrap(), log.to_str().unwrap());
        as_postgres(&self.bin, "pg_ctl", &["-D", data, "-o", &options, "-l", log, "-w", "start"])
    }

    /// As a crash: no checkpoint, every connection cut.
    pub fn stop_immediately(&self) {
        as_postgres(&self.bin, "pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }

    /// Append `lines` to the cluster's postgresql.conf and restart it.
    pub fn reconfigure(&self, lines: &str) -> bool {
        use std::io::Write;
        let conf = self.data.join("postgresql.conf");
        let appended = std::fs::OpenOptions::new().append(true).open(conf).and_then(|mut f| writeln!(f, "{lines}"));
        let data = self.data.to_str().unwrap();
        appended.is_ok() && as_postgres(&self.bin, "pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]) && self.start()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Throwaway {
    /// Every process of this cluster (the postmaster and its children): ours to signal, since we started it.
    fn pids(&self) -> Vec<String> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        let Some(postmaster) = pid_file.lines().next().map(str::trim).filter(|p| !p.is_empty()) else {
            return Vec::new();
        };
        let children = Command::new("pgrep").args(["-P", postmaster]).output().map(|o| o.stdout).unwrap_or_default();
        let mut pids = vec![postmaster.to_owned()];
        pids.extend(String::from_utf8_lossy(&children).split_whitespace().map(str::to_owned));
        pids
    }

    /// Freeze the whole cluster: connections stay open, nothing answers (a stalled database, not a dead one).
    pub fn pause(&self) {
        let pids = self.pids();
        assert!(!pids.is_empty(), "no cluster processes to stop");
        Command::new("kill").arg("-STOP").args(&pids).status().unwrap();
    }

    pub fn resume(&self) {
        Command::new("kill").arg("-CONT").args(self.pids()).status().unwrap();
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.resume();
        self.stop_immediately();
    }
}
