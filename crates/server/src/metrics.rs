//! What the server counts.

use std::sync::atomic::AtomicU64;

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// How often the SMS pumping guard raised its alert (once per window).
    pub sms_pumping_alerts: AtomicU64,
}
