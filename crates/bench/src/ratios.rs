//! `ratios`: the hot paths against the floor, measured in one run on one server: the health
//! check (the cost of a gRPC call that touches no database), `ValidateSession` and
//! `VerifyStepUp` with the next HOTP code, run in turn and alternating over several rounds,
//! so that each path's ratio to the floor comes from windows minutes apart at most, on the
//! same machine in the same state.

use std::fmt::Write as _;

use serde::Serialize;

/// A path `ratios` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// `grpc.health.v1.Health/Check`: the floor.
    Health,
    /// `ValidateSession` of a live session.
    Validate,
    /// `VerifyStepUp` with the next HOTP code.
    Otp,
}

impl Path {
    /// The order of a round.
    pub const ALL: [Self; 3] = [Self::Health, Self::Validate, Self::Otp];

    /// The operation name its workers record.
    pub fn op(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Validate => "validate_session",
            Self::Otp => "verify_otp",
        }
    }

    /// The ratio to the floor issue 37 asks of this path on `database` (`sqlite`,
    /// `postgres`).
    pub fn target(self, database: &str) -> Option<f64> {
        match (self, database) {
            (Self::Health, _) => None,
            (Self::Validate, "postgres") => Some(0.3),
            (Self::Validate, _) => Some(0.5),
            (Self::Otp, "postgres") => Some(0.1),
            (Self::Otp, _) => Some(0.3),
        }
    }
}

/// One path's window in one round.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Leg {
    /// Which path.
    pub path: Path,
    /// Successes per second.
    pub rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The server process's CPU per success, µs (None when it could not be read).
    pub server_cpu_us: Option<f64>,
}

/// Every round's legs, in the order they ran.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Ratios {
    /// Round by round.
    pub rounds: Vec<Vec<Leg>>,
}

/// A path's figures over the rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
}

impl Spread {
    /// Median, lowest and highest of `values` (None when empty).
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let (&min, &max) = (values.first()?, values.last()?);
        let mid = values.len() / 2;
        let upper = *values.get(mid)?;
        let median = if values.len() % 2 == 1 {
            upper
        } else {
            f64::midpoint(*values.get(mid - 1)?, upper)
        };
        Some(Self { median, min, max })
    }
}

impl Ratios {
    fn leg(round: &[Leg], path: Path) -> Option<&Leg> {
        round.iter().find(|l| l.path == path)
    }

    /// A path's rate over the rounds.
    pub fn rate(&self, path: Path) -> Option<Spread> {
        Spread::of(
            self.rounds
                .iter()
                .filter_map(|r| Self::leg(r, path))
                .map(|l| l.rate)
                .collect(),
        )
    }

    /// A path's ratio to the floor over the rounds: each round's rate divided by the floor's
    /// in that same round.
    pub fn ratio(&self, path: Path) -> Option<Spread> {
        Spread::of(
            self.rounds
                .iter()
                .filter_map(|r| {
                    let floor = Self::leg(r, Path::Health)?.rate;
                    let leg = Self::leg(r, path)?;
                    (floor > 0.0).then(|| leg.rate / floor)
                })
                .collect(),
        )
    }

    /// The server's CPU per success over the rounds, µs.
    pub fn server_cpu_us(&self, path: Path) -> Option<Spread> {
        Spread::of(
            self.rounds
                .iter()
                .filter_map(|r| Self::leg(r, path)?.server_cpu_us)
                .collect(),
        )
    }

    /// The table `ratios` prints.
    pub fn render(&self, database: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} rounds of health, validate, otp in turn; median (lowest–highest) over the rounds",
            self.rounds.len()
        );
        let _ = writeln!(
            out,
            "{:<10} {:>22} {:>22} {:>8} {:>8} {:>18}",
            "path", "ok/s", "ratio to floor", "target", "met", "server CPU µs/op"
        );
        for path in Path::ALL {
            let spread = |s: Option<Spread>, precision: usize| {
                s.map_or_else(
                    || "-".to_owned(),
                    |s| {
                        format!(
                            "{:.p$} ({:.p$}–{:.p$})",
                            s.median,
                            s.min,
                            s.max,
                            p = precision
                        )
                    },
                )
            };
            let ratio = self.ratio(path);
            let target = path.target(database);
            let met = match (ratio, target) {
                (Some(r), Some(t)) if r.min >= t => "yes",
                (Some(r), Some(t)) if r.median >= t => "median",
                (Some(_), Some(_)) => "NO",
                _ => "",
            };
            let _ = writeln!(
                out,
                "{:<10} {:>22} {:>22} {:>8} {:>8} {:>18}",
                path.op().split('_').next().unwrap_or_default(),
                spread(self.rate(path), 0),
                spread(ratio, 2),
                target.map_or_else(String::new, |t| format!("≥ {t}")),
                met,
                spread(self.server_cpu_us(path), 0),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(path: Path, rate: f64) -> Leg {
        Leg {
            path,
            rate,
            p50_ms: 1.0,
            p99_ms: 2.0,
            server_cpu_us: Some(1e6 / rate),
        }
    }

    #[test]
    fn each_ratio_is_taken_against_the_floor_of_its_own_round() {
        let r = Ratios {
            rounds: vec![
                vec![
                    leg(Path::Health, 1000.0),
                    leg(Path::Validate, 500.0),
                    leg(Path::Otp, 100.0),
                ],
                // A slower round: the machine slowed, the ratios did not.
                vec![
                    leg(Path::Health, 500.0),
                    leg(Path::Validate, 250.0),
                    leg(Path::Otp, 60.0),
                ],
                vec![
                    leg(Path::Health, 800.0),
                    leg(Path::Validate, 400.0),
                    leg(Path::Otp, 72.0),
                ],
            ],
        };
        let v = r.ratio(Path::Validate).unwrap();
        assert!((v.median - 0.5).abs() < 1e-9 && (v.min - 0.5).abs() < 1e-9);
        let o = r.ratio(Path::Otp).unwrap();
        assert!((o.min - 0.09).abs() < 1e-9, "{o:?}");
        assert!((o.median - 0.1).abs() < 1e-9, "{o:?}");
        assert!((o.max - 0.12).abs() < 1e-9, "{o:?}");
        assert_eq!(r.rate(Path::Health).unwrap().median, 800.0);
        let table = r.render("postgres");
        assert!(table.contains("≥ 0.3"), "{table}");
        // otp's lowest round is below 0.1, its median is not.
        let otp_line = table.lines().find(|l| l.starts_with("verify")).unwrap();
        assert!(otp_line.contains("median"), "{table}");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_midpoint() {
        let s = Spread::of(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Spread::of(vec![]).is_none());
    }
}
