//! The `tollgate` binary as an operator runs it: `serve` with no configuration in an empty
//! folder, SIGTERM, the other subcommands, and a bad setting.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use server::password::HASH_THREAD_PREFIX;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-bin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A plain HTTP/1.1 GET, the way Prometheus scrapes: the whole response as text.
async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

fn tollgate(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_then_sigterm() {
    serve_then_signal("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_configuration_then_sigint() {
    serve_then_signal("INT").await;
}

/// The lines `tollgate serve` writes to standard output.
type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Starts `tollgate serve` in `dir` on free loopback ports (JSON logs), with `env` added;
/// returns the child, the gRPC and metrics addresses it logged, its log so far, and the
/// rest of its output to read (or drain: the child blocks on a full pipe).
async fn start_serving(
    dir: &Path,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, String, String, Lines) {
    let mut command = tollgate(dir);
    command
        .args(["serve"])
        // Port 0 only so that parallel test runs never collide; everything else is default.
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env("TOLLGATE_METRICS__LISTEN", "127.0.0.1:0")
        .env("TOLLGATE_LOG__FORMAT", "json");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = String::new();
    let (address, metrics) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("tollgate listening") {
                let field = |name: &str| {
                    let key = format!("\"{name}\":\"");
                    let start = line.find(&key).unwrap() + key.len();
                    let end = start + line[start..].find('"').unwrap();
                    line[start..end].to_owned()
                };
                return (field("address"), field("metrics"));
            }
        }
        panic!("no listening line: {log}");
    })
    .await
    .unwrap();
    (child, address, metrics, log, lines)
}

/// Under TLS and mutual TLS, Kubernetes' gRPC probes cannot connect; `tollgate probe` can,
/// as an exec probe: with the CA, the server's name and a client certificate of
/// `tls_clients`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_speaks_tls_and_mutual_tls() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use sha2::Digest as _;
    let dir = empty_dir("tls-probe");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf("tollgate.internal");
    let (probe_cert, probe_key) = leaf("kubelet-probe");
    let write = |name: &str, pem: &str| {
        std::fs::write(dir.join(name), pem).unwrap();
        dir.join(name).display().to_string()
    };
    let ca_file = write("ca.pem", &ca.pem());
    let server_file = write("server.pem", &server_cert.pem());
    let server_key_file = write("server.key", &server_key.serialize_pem());
    let probe_file = write("probe.pem", &probe_cert.pem());
    let probe_key_file = write("probe.key", &probe_key.serialize_pem());
    let config = format!(
        "[server]\ntls_cert_file = \"{server_file}\"\ntls_key_file = \"{server_key_file}\"\n\
         tls_client_ca_file = \"{ca_file}\"\n\n[[tls_clients]]\nname = \"probe\"\n\
         sha256 = \"{}\"\nscopes = []\n",
        hex::encode(sha2::Sha256::digest(probe_cert.der()))
    );
    let config_file = write("tollgate.toml", &config);
    let (_child, address, _, _, mut lines) =
        start_serving(&dir, &[("TOLLGATE_CONFIG", config_file.as_str())]).await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let probe = |extra: &[&str]| {
        let mut args = vec!["probe", "--addr", address.as_str()];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let dir = dir.clone();
        async move { tollgate(&dir).args(args).output().await.unwrap() }
    };
    let tls = [
        "--tls-ca",
        ca_file.as_str(),
        "--tls-domain",
        "tollgate.internal",
    ];
    let client = [
        "--tls-cert",
        probe_file.as_str(),
        "--tls-key",
        probe_key_file.as_str(),
    ];
    // With the CA and a client certificate: SERVING (the database answers within seconds).
    let mut serving = false;
    for _ in 0..50 {
        let output = probe(&[tls.as_slice(), client.as_slice()].concat()).await;
        if output.status.success() {
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving, "the TLS probe never saw SERVING");
    // Plaintext, or TLS without the client certificate mutual TLS asks for: refused.
    assert!(!probe(&[]).await.status.success());
    assert!(!probe(&tls).await.status.success());
}

async fn serve_then_signal(signal: &str) {
    let dir = empty_dir(signal);
    let (mut child, address, metrics, mut log, mut lines) = start_serving(&dir, &[]).await;
    assert!(
        log.contains("DEVELOPMENT KEYS GENERATED"),
        "a loud warning: {log}"
    );

    // SQLite under ./data, migrated; the development key file is private.
    assert!(dir.join("data/tollgate.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("data/keys.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // It answers the standard health check.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut serving = false;
    for _ in 0..50 {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving);
    // The container probe says so too, and the metrics port answers in Prometheus' format.
    let probe = tollgate(&dir)
        .args(["probe", "--addr", &address])
        .output()
        .await
        .unwrap();
    assert!(probe.status.success(), "{probe:?}");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "SERVING");
    let liveness = tollgate(&dir)
        .args(["probe", "--addr", &address, "--service", "liveness"])
        .output()
        .await
        .unwrap();
    assert!(liveness.status.success(), "{liveness:?}");
    let unknown = tollgate(&dir)
        .args(["probe", "--addr", &address, "--service", "no.such.Service"])
        .output()
        .await
        .unwrap();
    assert!(
        !unknown.status.success(),
        "a probe that cannot fail is no probe"
    );
    let scraped = http_get(&metrics, "/metrics").await;
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(
        scraped.contains("tollgate_build_info{version="),
        "{scraped}"
    );
    assert!(scraped.contains("# EOF"), "{scraped}");

    // SIGTERM: a clean exit after saying so.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("shutting down"), "{log}");
    // Lines are written on a thread of their own: the last, logged right before exit,
    // still reaches the output (traces are off here, so nothing follows it).
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("stopped: in-flight calls finished"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_subcommands() {
    let dir = empty_dir("ops");
    // generate-keys prints a usable key file.
    let keys = tollgate(&dir).arg("generate-keys").output().await.unwrap();
    assert!(keys.status.success());
    std::fs::write(dir.join("keys.toml"), &keys.stdout).unwrap();
    // migrate creates and migrates the database named by the environment.
    let migrate = tollgate(&dir)
        .arg("migrate")
        .env("TOLLGATE_KEYS__FILE", "keys.toml")
        .env("TOLLGATE_KEYS__GENERATE_IF_MISSING", "false")
        .output()
        .await
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(dir.join("data/tollgate.db").exists());
    // unlock and rotate-keys run against that database.
    let unlock = tollgate(&dir)
        .args(["unlock", "--email", "nobody@example.com"])
        .env("TOLLGATE_KEYS__FILE", "keys.toml")
        .env("TOLLGATE_KEYS__GENERATE_IF_MISSING", "false")
        .output()
        .await
        .unwrap();
    assert!(unlock.status.success(), "{unlock:?}");
    assert!(String::from_utf8_lossy(&unlock.stdout).contains("no account"));
    let reset = tollgate(&dir)
        .args([
            "reset-mfa",
            "--email",
            "nobody@example.com",
            "--operator",
            "ops",
        ])
        .env("TOLLGATE_KEYS__FILE", "keys.toml")
        .env("TOLLGATE_KEYS__GENERATE_IF_MISSING", "false")
        .output()
        .await
        .unwrap();
    assert!(!reset.status.success(), "{reset:?}");
    assert!(String::from_utf8_lossy(&reset.stderr).contains("no account"));
    let rotate = tollgate(&dir)
        .args(["rotate-keys", "--batch", "10"])
        .env("TOLLGATE_KEYS__FILE", "keys.toml")
        .env("TOLLGATE_KEYS__GENERATE_IF_MISSING", "false")
        .output()
        .await
        .unwrap();
    assert!(rotate.status.success(), "{rotate:?}");
    assert!(String::from_utf8_lossy(&rotate.stdout).contains("re-sealed 0 seeds"));
    // check-config prints the configuration without secrets.
    let check = tollgate(&dir)
        .arg("check-config")
        .env("TOLLGATE_KEYS__FILE", "keys.toml")
        .env(
            "TOLLGATE_DATABASE__URL",
            "postgres://app:hunter2@db.internal/tollgate",
        )
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(printed.contains("configuration OK"));
    assert!(!printed.contains("hunter2"), "{printed}");
    // A bad value stops with an error naming the key.
    let bad = tollgate(&dir)
        .arg("check-config")
        .env("TOLLGATE_SESSIONS__IDLE_TTL_SECS", "forever")
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sessions.idle_ttl_secs"));
    // Listening beyond loopback without configured callers is refused.
    let open = tollgate(&dir)
        .arg("serve")
        .env("TOLLGATE_KEYS__FILE", "keys.toml")
        .env("TOLLGATE_SERVER__LISTEN", "0.0.0.0:0")
        .output()
        .await
        .unwrap();
    assert!(!open.status.success());
    assert!(String::from_utf8_lossy(&open.stderr).contains("server.listen"));
    // hash-api-key prints the SHA-256 of the key read on stdin.
    let mut hash = tollgate(&dir)
        .arg("hash-api-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = hash.stdin.take().unwrap();
        stdin
            .write_all(b"0123456789abcdef0123456789abcdef-key\n")
            .await
            .unwrap();
    }
    let out = hash.wait_with_output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        server::auth::hash_api_key("0123456789abcdef0123456789abcdef-key")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// CPUs of a `Cpus_allowed_list` line's value: `0-1`, `3`, `0,2-3`.
#[cfg(target_os = "linux")]
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap());
    }
    cpus
}

/// The CPUs of a `/proc/…/status` file's `Cpus_allowed_list`.
#[cfg(target_os = "linux")]
fn allowed_in(status: &str) -> Vec<usize> {
    cpu_list(
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap(),
    )
}

/// Each thread of `pid`: its name and the CPUs it may run on.
#[cfg(target_os = "linux")]
fn threads_of(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        // A thread that ended meanwhile is skipped.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue;
        };
        threads.push((name.trim().to_owned(), allowed_in(&status)));
    }
    threads
}

/// `server.thread_placement`: `pinned` puts every request thread (async workers, database
/// threads) on the first CPU the process may use and spreads the hashing threads over its
/// CPUs, the request CPU last (not under a CPU quota: then it warns and pins nothing);
/// `free`, the default, leaves every thread where it started.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_places_its_threads_as_configured() {
    // The server inherits this thread's CPUs.
    let allowed = allowed_in(&std::fs::read_to_string("/proc/thread-self/status").unwrap());
    // As many hashing threads and async workers as cores: the CPUs, or fewer under a CPU
    // quota.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let quota = cores < allowed.len();
    for setting in ["pinned", "free", ""] {
        let pinned = setting == "pinned" && !quota;
        let dir = empty_dir(&format!("placement-{setting}"));
        let mut child = tollgate(&dir)
            .arg("serve")
            .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0")
            .env("TOLLGATE_METRICS__ENABLED", "false")
            .envs((!setting.is_empty()).then_some(("TOLLGATE_SERVER__THREAD_PLACEMENT", setting)))
            .env("TOLLGATE_LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut log = String::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.push_str(&line);
                log.push('\n');
                if line.contains("tollgate listening") {
                    return;
                }
            }
            panic!("no listening line: {log}");
        })
        .await
        .unwrap();
        assert_eq!(log.contains("threads pinned"), pinned, "{setting}: {log}");
        assert_eq!(
            log.contains("CPU quota"),
            setting == "pinned" && quota,
            "{setting}: {log}"
        );
        // Where each thread belongs.
        let expected = |name: &str| -> Vec<usize> {
            if !pinned {
                allowed.clone()
            } else if let Some(slot) = name.strip_prefix(HASH_THREAD_PREFIX) {
                vec![allowed[(slot.parse::<usize>().unwrap() + 1) % cores]]
            } else {
                vec![allowed[0]]
            }
        };
        let hashing = |threads: &[(String, Vec<usize>)]| {
            threads
                .iter()
                .filter(|(name, _)| name.starts_with(HASH_THREAD_PREFIX))
                .count()
        };
        // A hashing thread names itself and moves as it starts: give it a moment.
        let pid = child.id().unwrap();
        let mut threads = threads_of(pid);
        for _ in 0..50 {
            let placed = threads.iter().all(|(name, cpus)| *cpus == expected(name));
            if hashing(&threads) == cores && placed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            threads = threads_of(pid);
        }
        assert_eq!(hashing(&threads), cores, "one per core: {threads:?}");
        let workers = threads
            .iter()
            .filter(|(name, _)| name.starts_with("tokio-rt"))
            .count();
        // The blocking pool's threads, if any started, share the workers' name.
        assert!(workers >= cores, "an async worker per core: {threads:?}");
        assert!(
            threads
                .iter()
                .any(|(name, _)| name.starts_with("sqlx-sqlite")),
            "the database threads are checked too: {threads:?}"
        );
        for (name, cpus) in &threads {
            assert_eq!(cpus, &expected(name), "{setting}: {name} in {threads:?}");
        }
        child.kill().await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
