//! Failure counters and lockouts, keyed by what is counted (e.g. `mfa:<user id>`), exact
//! under contention and across replicas: a failure is counted, and its lockout set, in one
//! statement that refuses while a lockout is in force, and a success passes only if no
//! lockout is in force when it is settled, so no number of requests in flight together gets
//! more guesses past the budget than one request at a time.

use sea_orm::sea_query::ExprTrait as _;
use sea_orm::sea_query::{Condition, Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::entity::attempt_counter::{ActiveModel, Column, Entity, Model};
use crate::repo::audit::{NewAuditEvent, append_all_with};
use crate::run::{ChangeOn as _, InsertOn as _, SelectOn as _};
use crate::{Result, Storage};

/// The counter of a user's failed second-factor attempts (across methods, challenges and
/// replicas).
pub fn second_factor_counter(user: uuid::Uuid) -> String {
    format!("mfa:{user}")
}

/// The audit events a counted failure writes in its own transaction: `(kind, details)` for
/// the new count and the lockout it started, about `subject`. A failure counted with one
/// takes the same path whether or not it writes events (an unknown email's too), so its
/// cost tells nothing.
pub struct FailureAudit<'a> {
    /// Whom the events concern (none: an unknown email's failure, which writes none).
    pub subject_id: Option<uuid::Uuid>,
    /// The events for a count and the lockout it started (if any).
    pub events: &'a (dyn Fn(i64, Option<i64>) -> Vec<(&'static str, String)> + Send + Sync),
    /// Where the failing call came from, kept on the events.
    pub client: super::ClientInfo<'a>,
}

impl std::fmt::Debug for FailureAudit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureAudit")
            .field("subject_id", &self.subject_id)
            .finish_non_exhaustive()
    }
}

/// When failures start lockouts: `free` failures without one, then the next failure locks
/// for the first delay, the one after for the second, and so on, the last delay repeating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockouts {
    free: i64,
    delays: Vec<i64>,
    /// When a lockout starts, if not at the `now` of the failure (see
    /// [`Lockouts::starting_at`]).
    start: Option<i64>,
    /// Seconds without a failure after which the count starts over (see
    /// [`Lockouts::forgetting_after`]); None: only a success or a reset clears it.
    window: Option<i64>,
}

impl Lockouts {
    /// `free` failures without a lockout, then lockouts of `delays` seconds in turn (the
    /// last repeating). No delays: failures never lock.
    pub fn new(free: u32, delays: &[u64]) -> Self {
        Self {
            free: i64::from(free),
            delays: delays
                .iter()
                .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                .collect(),
            start: None,
            window: None,
        }
    }

    /// A count that starts over once `secs` have passed since its last failure (and no
    /// lockout is in force): for counters a success does not clear, such as a client
    /// address's, whose failures belong to many accounts.
    pub fn forgetting_after(mut self, secs: i64) -> Self {
        self.window = Some(Ord::max(secs, 1));
        self
    }

    /// The stored count as the next failure sees it: 0 once the window has passed since the
    /// last failure.
    fn live_count(&self, now: i64) -> Expr {
        let stored = Expr::col((Entity, Column::Failures));
        match self.window {
            Some(window) => Expr::case(
                Expr::col((Entity, Column::UpdatedAt)).lte(now.saturating_sub(window)),
                Expr::value(0_i64),
            )
            .finally(stored)
            .into(),
            None => stored,
        }
    }

    /// Lockouts that start at `start` (Unix seconds) rather than at the failure's `now`: the
    /// caller's time rounded up, so that a lockout of N seconds, stored in whole seconds,
    /// never ends before N seconds have passed.
    pub fn starting_at(mut self, start: i64) -> Self {
        self.start = Some(start);
        self
    }

    /// The lockout, in seconds, that follows the `failures`-th failure.
    fn delay_after(&self, failures: i64) -> Option<i64> {
        let over = usize::try_from(failures - self.free - 1).ok()?;
        self.delays.get(over).or(self.delays.last()).copied()
    }

    /// When the lockout that follows the `failures`-th failure at `now` ends.
    fn until(&self, failures: i64, now: i64) -> Option<i64> {
        let start = self.start.unwrap_or(now);
        self.delay_after(failures)
            .map(|delay| start.saturating_add(delay))
    }

    /// The end of the lockout after the failure that makes the count `failures + 1`, as SQL
    /// over the stored count `failures`: NULL within the free budget, then one branch per
    /// distinct delay.
    fn next_lock_expr(&self, failures: Expr, now: i64) -> Expr {
        let now = self.start.unwrap_or(now);
        let Some(&last) = self.delays.last() else {
            return Expr::value(Option::<i64>::None);
        };
        let next = failures.add(1);
        let mut case = Expr::case(
            next.clone().lte(self.free),
            Expr::value(Option::<i64>::None),
        );
        let (delays, _) = self.delays.split_at(self.delays.len() - 1);
        for (n, &delay) in (self.free + 1..).zip(delays) {
            case = case.case(next.clone().eq(n), Expr::value(now.saturating_add(delay)));
        }
        case.finally(Expr::value(now.saturating_add(last))).into()
    }
}

/// What counting a failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted: the count is now `failures`; `locked_until` is the lockout it started, if
    /// the budget is spent.
    Counted {
        /// The consecutive failures now on record.
        failures: i64,
        /// The lockout this failure started.
        locked_until: Option<i64>,
    },
    /// Not counted: a lockout until `until` was already in force.
    Locked {
        /// When the lockout ends (Unix seconds).
        until: i64,
    },
}

/// Failure counters.
#[derive(Debug)]
pub struct Attempts<'a> {
    storage: &'a Storage,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Counts one failure against `key` unless it is locked out at `now`, and starts the
    /// lockout `lockouts` gives for the new count, in one statement (`INSERT … ON CONFLICT
    /// DO UPDATE SET failures = failures + 1, locked_until = CASE … WHERE not locked
    /// RETURNING`): no increment is lost, and once a failure has spent the budget, every
    /// failure after it, however close, finds the lockout in force.
    pub async fn record_failure(
        &self,
        key: &str,
        now: i64,
        lockouts: &Lockouts,
        audit: Option<FailureAudit<'_>>,
    ) -> Result<Failure> {
        // Refused, then no lockout in force when read: the row was deleted in between (an
        // operator's unlock or a new factor's reset; a success never deletes a locked row).
        // Count again, a few times at most.
        for _ in 0..3 {
            let row = ActiveModel {
                key: Set(key.to_owned()),
                failures: Set(1),
                locked_until: Set(lockouts.until(1, now)),
                updated_at: Set(now),
            };
            let stored = lockouts.live_count(now);
            let count = Entity::insert(row).on_conflict(
                OnConflict::column(Column::Key)
                    .value(Column::Failures, stored.clone().add(1))
                    .value(Column::LockedUntil, lockouts.next_lock_expr(stored, now))
                    .value(Column::UpdatedAt, Expr::value(now))
                    .action_cond_where(not_locked(now))
                    .to_owned(),
            );
            let counted = match &audit {
                // The count and the events it calls for commit together.
                Some(audit) => {
                    let (_writing, txn) = self.storage.begin_write().await?;
                    let counted = count.exec_with_returning_many(&txn).await?;
                    if let Some(model) = counted.first() {
                        let events = match audit.subject_id {
                            Some(_) => (audit.events)(model.failures, model.locked_until),
                            None => Vec::new(),
                        };
                        let events: Vec<NewAuditEvent<'_>> = events
                            .iter()
                            .map(|(kind, details)| NewAuditEvent {
                                occurred_at: now,
                                org_id: None,
                                actor_id: None,
                                subject_id: audit.subject_id,
                                kind,
                                details,
                                client: audit.client,
                            })
                            .collect();
                        append_all_with(&txn, &events).await?;
                        txn.commit().await?;
                    }
                    counted
                }
                None => count.returning_on(&*self.storage.write().await).await?,
            };
            if let Some(model) = counted.into_iter().next() {
                return Ok(Failure::Counted {
                    failures: model.failures,
                    locked_until: model.locked_until,
                });
            }
            if let Some(until) = self.lock_in_force(key, now).await? {
                return Ok(Failure::Locked { until });
            }
        }
        Err(crate::StorageError::Stale("attempt counter"))
    }

    /// Settles a success against `key`: refused (with the end of the lockout) when a lockout
    /// is in force at `now` — a failure in flight alongside spent the budget first — else the
    /// failures on record when it reads are cleared (one that lands after the read, and so
    /// after this success, stays counted). A key with none costs one read and no write.
    pub async fn settle_success(&self, key: &str, now: i64) -> Result<Option<i64>> {
        let Some(counter) = self.get(key).await? else {
            return Ok(None);
        };
        if let Some(until) = locked(&counter, now) {
            return Ok(Some(until));
        }
        let cleared = Entity::delete_many()
            .filter(Column::Key.eq(key))
            .filter(not_locked(now))
            .change_on(&*self.storage.write().await)
            .await?;
        if cleared == 1 {
            return Ok(None);
        }
        // Locked meanwhile, or cleared by another success.
        self.lock_in_force(key, now).await
    }

    /// The end of the lockout in force on `key` at `now`, if any.
    async fn lock_in_force(&self, key: &str, now: i64) -> Result<Option<i64>> {
        Ok(self
            .get(key)
            .await?
            .and_then(|counter| locked(&counter, now)))
    }

    /// The counter, if any failure was recorded since it was last cleared (by a success or
    /// a reset).
    pub async fn get(&self, key: &str) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(key.to_owned())
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// Deletes the counters whose key starts with `prefix` that have seen no failure for
    /// `idle_secs` and hold no lockout in force at `now`: counters that count over a window
    /// of that length (the per-client budgets) would start over anyway. Returns how many.
    pub async fn delete_forgotten(&self, prefix: &str, idle_secs: i64, now: i64) -> Result<u64> {
        Ok(Entity::delete_many()
            .filter(Column::Key.starts_with(prefix))
            .filter(Column::UpdatedAt.lte(now.saturating_sub(idle_secs)))
            .filter(
                Condition::any()
                    .add(Column::LockedUntil.is_null())
                    .add(Column::LockedUntil.lte(now)),
            )
            .change_on(&*self.storage.write_on_pool().await)
            .await?)
    }

    /// Clears the counter and any lock (an operator's unlock).
    pub async fn reset(&self, key: &str) -> Result<()> {
        Entity::delete_by_id(key.to_owned())
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(())
    }
}

/// The end of `counter`'s lockout when it is in force at `now`.
fn locked(counter: &Model, now: i64) -> Option<i64> {
    counter.locked_until.filter(|&until| until > now)
}

/// No lockout on the counter `key` in force at `now`, as a condition another table's
/// statement can carry (`NOT EXISTS` on the counter), so that using up a code and the
/// lockout test are one statement: a code matched while failures in flight alongside it
/// spent the budget is refused and stays unused.
pub(crate) fn no_lockout_in_force(key: &str, now: i64) -> sea_orm::sea_query::SimpleExpr {
    let lock = sea_orm::sea_query::Query::select()
        .expr(Expr::value(1))
        .from(Entity)
        .and_where(Column::Key.eq(key))
        .and_where(Column::LockedUntil.gt(now))
        .to_owned();
    Expr::exists(lock).not()
}

/// No lockout in force at `now`.
fn not_locked(now: i64) -> Condition {
    Condition::any()
        .add(Column::LockedUntil.is_null())
        .add(Column::LockedUntil.lte(now))
}

#[cfg(test)]
mod tests {
    use super::Lockouts;

    #[test]
    fn free_failures_then_each_delay_in_turn_the_last_repeating() {
        let lockouts = Lockouts::new(2, &[30, 60, 90]);
        let delays: Vec<_> = (0..=7).map(|n| lockouts.delay_after(n)).collect();
        assert_eq!(
            delays,
            [
                None,
                None,
                None,
                Some(30),
                Some(60),
                Some(90),
                Some(90),
                Some(90)
            ]
        );
        assert_eq!(lockouts.until(3, 1_000), Some(1_030));
        // Started at the caller's time rounded up, whatever `now` says.
        assert_eq!(
            lockouts.clone().starting_at(1_001).until(3, 1_000),
            Some(1_031)
        );
        assert_eq!(Lockouts::new(0, &[5]).until(1, i64::MAX), Some(i64::MAX));
        assert_eq!(Lockouts::new(0, &[]).until(100, 0), None);
    }
}
