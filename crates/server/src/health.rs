//! What the server knows of its database, and the checker that keeps it current: the
//! standard gRPC health service reports it, and while the database is known to be down every
//! call fails fast with UNAVAILABLE (`DATABASE_UNAVAILABLE`) instead of waiting for a
//! connection that cannot be made.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::App;

/// How often the checker probes a database it found down: a database that is back is served
/// again within about this long.
pub const DOWN_PROBE_EVERY: Duration = Duration::from_millis(250);

/// The longest one probe of a database that is down may take (a connection that cannot be
/// made is retried by the pool until then).
const DOWN_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often expired enrollments and challenges are deleted.
const CLEAN_UP_EVERY: Duration = Duration::from_secs(60);

/// Whether the database answers, as the last probe found, shared by the checker and every
/// call. Cheap to clone. Up until a probe says otherwise.
#[derive(Clone, Debug, Default)]
pub struct DbHealth(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    down: AtomicBool,
    suspect: Notify,
}

impl DbHealth {
    /// Whether the last probe found the database down.
    pub fn is_down(&self) -> bool {
        self.0.down.load(Ordering::Acquire)
    }

    fn set_down(&self, down: bool) {
        self.0.down.store(down, Ordering::Release);
    }

    /// A call could not reach the database: the checker probes now, not at its next tick.
    pub fn suspect(&self) {
        self.0.suspect.notify_one();
    }
}

/// The health service names set together: "" (the whole server) and each service.
async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in crate::SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Probes the database now, then every `health.check_interval_secs` while it answers (or at
/// once when a call suspects it is down), and every [`DOWN_PROBE_EVERY`] while it does not;
/// sets the health service and [`DbHealth`] on every change. Runs until aborted.
pub(crate) async fn run_checker(app: App, reporter: HealthReporter) {
    let interval = Duration::from_secs(app.config.health.check_interval_secs.max(1));
    let mut last = None;
    let mut last_clean_up: Option<Instant> = None;
    loop {
        let down = app.db_health.is_down();
        // A hung connection counts as down: the probe has its own deadline.
        let deadline = if down {
            DOWN_PROBE_TIMEOUT
        } else {
            interval.min(Duration::from_secs(2))
        };
        let answered = matches!(
            tokio::time::timeout(deadline, app.storage.ping()).await,
            Ok(Ok(()))
        );
        let status = if answered {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(?status, "health");
            app.db_health.set_down(!answered);
            set_all(&reporter, status).await;
            last = Some(status);
        }
        // Expired rows go at most once a minute, not on every health tick.
        if answered && last_clean_up.is_none_or(|at| at.elapsed() >= CLEAN_UP_EVERY) {
            last_clean_up = Some(Instant::now());
            if let Err(e) = crate::clean_up_expired(&app).await {
                tracing::warn!(error = %e, "clean-up of expired rows failed");
            }
        }
        if answered {
            // Until the next tick, or a call that could not reach the database.
            let _ = tokio::time::timeout(interval, app.db_health.0.suspect.notified()).await;
        } else {
            tokio::time::sleep(DOWN_PROBE_EVERY).await;
        }
    }
}

/// Sets every service NOT_SERVING (on shutdown).
pub(crate) async fn set_not_serving(reporter: &HealthReporter) {
    set_all(reporter, ServingStatus::NotServing).await;
}
