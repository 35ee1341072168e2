//! Throttling of failed attempts: a small free budget, then lockouts that double.

/// Lockout parameters. `Default`: five free failures, then 30 seconds, doubling with each
/// further failure, up to one hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Throttle {
    /// Failures allowed before the first lockout.
    pub free_failures: u32,
    /// The first lockout, in seconds.
    pub base_delay_secs: u64,
    /// The longest lockout, in seconds.
    pub max_delay_secs: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay_secs: 30,
            max_delay_secs: 3_600,
        }
    }
}

impl Throttle {
    /// The lockout that follows the `failures`-th consecutive failure, in seconds, or `None`
    /// while within the free budget. Grows as base × 2^(failures − free − 1), capped.
    pub fn lockout_after(&self, failures: u32) -> Option<u64> {
        let over = failures.checked_sub(self.free_failures)?.checked_sub(1)?;
        let factor = 1u64.checked_shl(over).unwrap_or(u64::MAX);
        Some(
            self.base_delay_secs
                .saturating_mul(factor)
                .min(self.max_delay_secs),
        )
    }

    /// The lockouts in turn after the free budget, for failures `free + 1`, `free + 2`, …,
    /// up to the first that reaches the cap (or stops growing), which every later failure
    /// repeats: the whole schedule in a few numbers (for a database to apply in one
    /// statement).
    pub fn lockouts(&self) -> Vec<u64> {
        let mut lockouts = Vec::new();
        // From a shift of 64 on, the doubling saturates: every later lockout is the same.
        for over in 0..=64u32 {
            let Some(delay) = self
                .free_failures
                .checked_add(over + 1)
                .and_then(|failures| self.lockout_after(failures))
            else {
                break;
            };
            // A delay equal to the last one (the cap, or a zero base) repeats from there on.
            if lockouts.last() == Some(&delay) {
                break;
            }
            lockouts.push(delay);
            if delay >= self.max_delay_secs {
                break;
            }
        }
        lockouts
    }

    /// When a lockout that follows the `failures`-th failure at `now` ends (Unix seconds).
    pub fn locked_until(&self, failures: u32, now: u64) -> Option<u64> {
        self.lockout_after(failures)
            .map(|delay| now.saturating_add(delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_budget_then_doubling_delays_up_to_the_cap() {
        let t = Throttle::default();
        let delays: Vec<_> = (0..=14).map(|n| t.lockout_after(n)).collect();
        assert_eq!(
            delays,
            [
                None,
                None,
                None,
                None,
                None,
                None, // 0..=5: free
                Some(30),
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(960),
                Some(1920),
                Some(3600),
                Some(3600),
            ]
        );
        assert_eq!(t.lockout_after(u32::MAX), Some(3_600));
        assert_eq!(t.locked_until(6, 1_000), Some(1_030));
        assert_eq!(t.locked_until(6, u64::MAX), Some(u64::MAX));
        assert_eq!(t.locked_until(5, 1_000), None);
    }

    #[test]
    fn the_schedule_gives_every_lockout_its_last_entry_repeating() {
        let throttles = [
            Throttle::default(),
            Throttle {
                free_failures: 0,
                base_delay_secs: 1,
                max_delay_secs: u64::MAX,
            },
            Throttle {
                free_failures: 3,
                base_delay_secs: 0,
                max_delay_secs: 10,
            },
            Throttle {
                free_failures: 2,
                base_delay_secs: 100,
                max_delay_secs: 50,
            },
        ];
        for t in throttles {
            let lockouts = t.lockouts();
            assert!(!lockouts.is_empty() && lockouts.len() <= 65, "{t:?}");
            assert!(
                lockouts.windows(2).all(|w| w[0] < w[1]),
                "{t:?}: {lockouts:?}"
            );
            for failures in 0..200u32 {
                let from_schedule = failures.checked_sub(t.free_failures + 1).map(|over| {
                    let over = usize::try_from(over).unwrap();
                    *lockouts.get(over).unwrap_or(lockouts.last().unwrap())
                });
                assert_eq!(
                    from_schedule,
                    t.lockout_after(failures),
                    "{t:?} at {failures}"
                );
            }
        }
        assert_eq!(
            Throttle::default().lockouts(),
            [30, 60, 120, 240, 480, 960, 1920, 3600]
        );
        let zero_base = Throttle {
            free_failures: 3,
            base_delay_secs: 0,
            max_delay_secs: 10,
        };
        assert_eq!(zero_base.lockouts(), [0]);
        let last = Throttle {
            free_failures: u32::MAX,
            ..Throttle::default()
        };
        assert_eq!(
            last.lockouts(),
            [] as [u64; 0],
            "no count reaches the lockouts"
        );
    }

    #[test]
    fn a_zero_budget_locks_at_the_first_failure() {
        let t = Throttle {
            free_failures: 0,
            base_delay_secs: 1,
            max_delay_secs: u64::MAX,
        };
        assert_eq!(t.lockout_after(0), None);
        assert_eq!(t.lockout_after(1), Some(1));
        assert_eq!(t.lockout_after(64), Some(1 << 63));
        assert_eq!(t.lockout_after(65), Some(u64::MAX));
    }
}
