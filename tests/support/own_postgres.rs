//! A PostgreSQL server of the test's own: its own data directory and port, started, killed
//! (`pg_ctl stop -m immediate`, as a crash would) and started again by the test, for the
//! fault tests. It uses the binaries of the machine's PostgreSQL (`/usr/lib/postgresql/N/bin`
//! or `TOLLGATE_TEST_PG_BIN`); as root it runs them as the `postgres` user, since PostgreSQL
//! refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running (or stopped) server; stopped and removed when dropped.
#[derive(Debug)]
pub struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TOLLGATE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("the fault tests need PostgreSQL's server binaries under /usr/lib/postgresql (Debian's postgresql package), or TOLLGATE_TEST_PG_BIN")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/N/bin/pg_ctl on this machine")
}

fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

impl OwnPostgres {
    /// A new cluster (trust authentication, user `postgres`), started.
    pub fn start() -> Self {
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::Builder::new()
            .prefix("tollgate-pg-")
            .tempdir()
            .unwrap();
        let server = Self {
            bin: bin_dir(),
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            server.run("chown", &["-R", "postgres:postgres", &server.path(".")]);
        }
        server.pg(
            "initdb",
            &[
                "-D",
                &server.path("data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "--no-instructions",
            ],
        );
        server.start_again();
        server
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A PostgreSQL tool, run as `postgres` when the test runs as root.
    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let tool = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool).args(args);
            command
        } else {
            let mut command = Command::new(tool);
            command.args(args);
            command
        }
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let output = self.command(tool, args).output().unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The admin URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.path("data"),
                "-l",
                &self.path("server.log"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Kills the server as a crash would: no checkpoint, every connection cut.
    pub fn kill(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.path("data"), "-m", "immediate", "-w", "stop"],
        );
    }

    /// The server's log, for a failed assertion's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(Path::new(&self.path("server.log"))).unwrap_or_default()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.path("data");
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}
