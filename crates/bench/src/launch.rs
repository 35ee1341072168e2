//! Starting a Tollgate server for a run: the real binary in its own process, on a fresh
//! SQLite file or a fresh PostgreSQL database, on free loopback ports; stopped (and its
//! database dropped) afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};

use crate::client::Target;
use crate::process::Pid;

/// Which database the started server uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    /// A new SQLite file in the run's temporary folder (the server's embedded default).
    Sqlite,
    /// A new database on the PostgreSQL server at this URL (whose database is used only to
    /// create and drop the new one).
    Postgres(String),
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `tollgate` binary.
    pub bin: PathBuf,
    /// The database.
    pub db: Db,
    /// A configuration file to start from (the listen address, database, key file and
    /// metrics port are set by the load generator).
    pub config: Option<PathBuf>,
    /// The server's log level (its log goes to a file in the run's folder).
    pub log_level: String,
}

/// The `tollgate` binary beside this one (cargo puts both in target/<profile>/).
pub fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tollgate")))
        .unwrap_or_else(|| PathBuf::from("tollgate"))
}

/// The files and database of a run; several starts may share them (restarts).
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
    url: String,
    pg: Option<(String, String)>,
    launch: Launch,
}

impl Workspace {
    /// Creates the folder and, on PostgreSQL, the database.
    pub async fn create(launch: Launch) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-bench-")
            .tempdir()
            .map_err(|e| format!("temporary folder: {e}"))?;
        let (url, pg) = match &launch.db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("tollgate.db").display()),
                None,
            ),
            Db::Postgres(admin) => {
                let name = format!("tollgate_bench_{}", uuid::Uuid::now_v7().simple());
                on_admin(admin, &format!("CREATE DATABASE \"{name}\""))
                    .await
                    .map_err(|e| format!("creating database {name}: {e}"))?;
                (database_url(admin, &name), Some((admin.clone(), name)))
            }
        };
        Ok(Self {
            dir,
            url,
            pg,
            launch,
        })
    }

    /// The database label for reports.
    pub fn database(&self) -> &'static str {
        match self.launch.db {
            Db::Sqlite => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Drops the PostgreSQL database (the folder goes when dropped).
    pub async fn remove(self) -> Result<(), String> {
        if let Some((admin, name)) = &self.pg {
            on_admin(
                admin,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await
            .map_err(|e| format!("dropping database {name}: {e}"))?;
        }
        Ok(())
    }

    /// Creates a workspace, runs `f` in it, and removes it whatever `f` returned (the
    /// first error is the one reported).
    pub async fn within<T>(
        launch: Launch,
        f: impl AsyncFnOnce(&Workspace) -> Result<T, String>,
    ) -> Result<T, String> {
        let ws = Self::create(launch).await?;
        let result = f(&ws).await;
        let removed = ws.remove().await;
        let value = result?;
        removed?;
        Ok(value)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

/// `admin` with its database replaced by `name`.
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base.get(scheme_end..).and_then(|rest| rest.find('/')) {
        Some(slash) => base.get(..scheme_end + slash).unwrap_or(base),
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    child: tokio::process::Child,
    /// Its process.
    pub pid: Pid,
    /// Where to reach it.
    pub target: Target,
    /// From starting the process to the health service answering SERVING.
    pub startup: Duration,
    log: PathBuf,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs one statement on the PostgreSQL server at `admin` (to create or drop a database).
async fn on_admin(admin: &str, sql: &str) -> Result<(), String> {
    let conn = Database::connect(admin)
        .await
        .map_err(|e| format!("PostgreSQL at {admin}: {e}"))?;
    conn.execute_unprepared(sql)
        .await
        .map_err(|e| e.to_string())?;
    conn.close().await.ok();
    Ok(())
}

/// The last lines of the server's log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(15)..)
        .unwrap_or_default()
        .join("\n")
}

impl Server {
    /// Starts the server in `ws` and waits until its health service says SERVING.
    pub async fn start(ws: &Workspace) -> Result<Self, String> {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let log = ws.log_file();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(&ws.launch.bin);
        command
            .arg("serve")
            .env("TOLLGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("TOLLGATE_DATABASE__URL", &ws.url)
            .env("TOLLGATE_KEYS__FILE", ws.dir.path().join("keys.toml"))
            .env("TOLLGATE_KEYS__GENERATE_IF_MISSING", "true")
            .env(
                "TOLLGATE_METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("TOLLGATE_LOG__LEVEL", &ws.launch.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        match &ws.launch.config {
            Some(file) => command.env("TOLLGATE_CONFIG", file),
            None => command.env_remove("TOLLGATE_CONFIG"),
        };
        let target = Target {
            url: format!("http://127.0.0.1:{port}"),
            api_key: None,
        };
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", ws.launch.bin.display()))?;
        let pid = Pid(child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the server exited ({status}) before serving; its log:\n{}",
                    tail(&log)
                ));
            }
            if serving(&target).await {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the server did not serve within 60 s; its log:\n{}",
                    tail(&log)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            startup: started.elapsed(),
            child,
            pid,
            target,
            log,
        })
    }

    /// Asks the server to stop (SIGTERM, as an orchestrator does) and waits for it.
    pub async fn stop(mut self) -> Result<(), String> {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.0.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!(
                "the server exited with {status}; its log:\n{}",
                tail(&self.log)
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                let _ = self.child.kill().await;
                Err("the server did not stop within 30 s of SIGTERM".to_owned())
            }
        }
    }
}

/// Whether the health service answers SERVING for the whole server.
pub async fn serving(target: &Target) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let Ok(channel) = target.connect().await else {
        return false;
    };
    let c = target.clients(channel);
    matches!(
        c.health().check(HealthCheckRequest { service: String::new() }).await,
        Ok(r) if r.get_ref().status() == ServingStatus::Serving
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_host_and_options() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "b2"),
            "postgres://u:p@h/b2?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:5432", "b3"),
            "postgres://h:5432/b3"
        );
    }
}
