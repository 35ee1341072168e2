//! What the server knows of its database, and the checker that keeps it current: the
//! standard gRPC health service reports it, and while the database is known to be down (or
//! this replica's clock is off from the database's) every call fails fast with UNAVAILABLE
//! instead of waiting for a connection that cannot be made or writing times others misread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
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

/// Why the checker has the server refuse calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The database does not answer.
    DatabaseDown,
    /// This replica's clock differs from the database server's by more than
    /// `health.max_clock_skew_secs`.
    ClockSkew,
}

/// What the last probe found, shared by the checker and every call. Cheap to clone. Serving
/// until a probe says otherwise.
#[derive(Clone, Debug, Default)]
pub struct DbHealth(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// 0: serving; else a [`Refusal`] (1 database down, 2 clock skew).
    state: AtomicU8,
    suspect: Notify,
}

impl DbHealth {
    /// Why calls are refused now, if they are.
    pub fn refusal(&self) -> Option<Refusal> {
        match self.0.state.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Refusal::DatabaseDown),
            _ => Some(Refusal::ClockSkew),
        }
    }

    fn set(&self, refusal: Option<Refusal>) {
        let state = match refusal {
            None => 0,
            Some(Refusal::DatabaseDown) => 1,
            Some(Refusal::ClockSkew) => 2,
        };
        self.0.state.store(state, Ordering::Release);
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

/// One probe: the database's clock (which shows it answers), compared with this replica's.
async fn probe(app: &App, deadline: Duration) -> Option<Refusal> {
    let Ok(Ok(database_now)) = tokio::time::timeout(deadline, app.storage.database_time()).await
    else {
        return Some(Refusal::DatabaseDown);
    };
    let skew = app.now().saturating_sub(database_now);
    app.metrics.clock_skew_seconds.set(skew);
    let max = app.config.health.max_clock_skew_secs;
    if max > 0 && skew.unsigned_abs() > max {
        tracing::error!(
            skew_secs = skew,
            max_clock_skew_secs = max,
            "this replica's clock is off from the database's: not serving until it is right"
        );
        return Some(Refusal::ClockSkew);
    }
    None
}

/// Probes the database now, then every `health.check_interval_secs` while it answers (or at
/// once when a call suspects it is down), and every [`DOWN_PROBE_EVERY`] while it does not;
/// sets the health service and [`DbHealth`] on every change. Runs until aborted.
pub(crate) async fn run_checker(app: App, reporter: HealthReporter) {
    let interval = Duration::from_secs(app.config.health.check_interval_secs.max(1));
    let mut last = None;
    let mut last_clean_up: Option<Instant> = None;
    loop {
        // A hung connection counts as down: the probe has its own deadline.
        let deadline = if app.db_health.refusal().is_some() {
            DOWN_PROBE_TIMEOUT
        } else {
            interval.min(Duration::from_secs(2))
        };
        let refusal = probe(&app, deadline).await;
        if last != Some(refusal) {
            let status = if refusal.is_none() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            tracing::info!(?status, ?refusal, "health");
            app.db_health.set(refusal);
            set_all(&reporter, status).await;
            last = Some(refusal);
        }
        let serving = refusal.is_none();
        // Expired rows go at most once a minute, not on every health tick.
        if serving && last_clean_up.is_none_or(|at| at.elapsed() >= CLEAN_UP_EVERY) {
            last_clean_up = Some(Instant::now());
            if let Err(e) = crate::clean_up_expired(&app).await {
                tracing::warn!(error = %e, "clean-up of expired rows failed");
            }
        }
        if serving {
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
