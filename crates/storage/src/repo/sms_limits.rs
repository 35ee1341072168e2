//! Limits on SMS sending over sliding windows, exact under contention and across replicas.
//! Every send counted under a key is a row of `sms_sends` with its time, and a cap counts the
//! rows of the last `window_secs`: however the sends fall, no span of that length holds more
//! than the cap (fixed windows let twice the cap through across a boundary). A take locks the
//! key's row in `sms_counters` first (an UPDATE, on either engine), so that takes of one key
//! count and insert one at a time, in one transaction with everything else the send takes.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::entity::{sms_counter, sms_send};
use crate::run::{ChangeOn as _, InsertOn as _, Run};
use crate::{Result, Storage, StorageError};

/// At most `max` events in any span of `window_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<'k> {
    /// What is counted, e.g. `sms:user:<id>`.
    pub key: &'k str,
    /// Events allowed per window (at least 1).
    pub max: i64,
    /// The window's length in seconds (at least 1).
    pub window_secs: i64,
}

/// A limit that is reached: the index of the limit in the list given, and when it frees up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitReached {
    /// Which limit (its index in the slice passed to [`SmsLimits::take`]).
    pub index: usize,
    /// When a slot frees up (Unix seconds): when the oldest send that fills it leaves the
    /// window.
    pub retry_at: i64,
}

/// The pumping guard, decided in the transaction of the send it lets through: sending stops
/// while, over the last `window_secs`, at least `min_sends` codes went out and more than
/// `max_ratio` per successful verification. Every send it lets through is counted under
/// `sent_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PumpingGuard<'k> {
    /// Sends, deployment-wide.
    pub sent_key: &'k str,
    /// Successful verifications, deployment-wide ([`SmsLimits::count_event`]).
    pub verified_key: &'k str,
    /// The span both are counted over.
    pub window_secs: i64,
    /// Sends below which the guard never stops anything.
    pub min_sends: i64,
    /// Sends allowed per verification.
    pub max_ratio: i64,
}

/// Why a guarded take was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The pumping guard: `sent` and `verified` over its window; `retry_at` is when its
    /// oldest send leaves the window (the earliest the ratio can change without
    /// verifications).
    Pumping {
        /// Sends over the window.
        sent: i64,
        /// Verifications over the window.
        verified: i64,
        /// When the oldest send leaves the window.
        retry_at: i64,
    },
    /// A limit.
    Limit(LimitReached),
}

/// Slots taken by [`SmsLimits::take`], to give back with [`SmsLimits::give_back`] when the
/// message could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    sends: Vec<i64>,
}

/// SMS sending limits.
#[derive(Debug)]
pub struct SmsLimits<'a> {
    storage: &'a Storage,
}

fn check(limit: &Limit<'_>) -> Result<()> {
    if limit.max < 1 || limit.window_secs < 1 || limit.key.is_empty() {
        return Err(StorageError::Invalid {
            field: "limit",
            reason: "needs a key, max >= 1 and window_secs >= 1",
        });
    }
    Ok(())
}

/// Takes `key`'s lock row on `conn` (created when missing), until the transaction ends.
async fn lock<C: ConnectionTrait>(conn: &C, key: &str, now: i64) -> Result<()> {
    sms_counter::Entity::insert(sms_counter::ActiveModel {
        key: Set(key.to_owned()),
        window_start: Set(now),
        count: Set(0),
    })
    .on_conflict_do_nothing_on([sms_counter::Column::Key])
    .exec(conn)
    .await?;
    sms_counter::Entity::update_many()
        .col_expr(sms_counter::Column::WindowStart, Expr::value(now))
        .filter(sms_counter::Column::Key.eq(key))
        .exec(conn)
        .await?;
    Ok(())
}

/// The sends under `key` within the `window_secs` up to `now`.
fn within(key: &str, window_secs: i64, now: i64) -> sea_orm::Select<sms_send::Entity> {
    sms_send::Entity::find()
        .filter(sms_send::Column::Key.eq(key))
        .filter(sms_send::Column::At.gt(now - window_secs))
        .filter(sms_send::Column::At.lte(now))
}

/// How many sends under `key` the window up to `now` holds, and when the one that must
/// leave for the count to drop below `max` leaves (with `i64::MAX`: the oldest;
/// `now + window_secs` when there are none).
async fn count<C: ConnectionTrait>(
    conn: &C,
    key: &str,
    max: i64,
    window_secs: i64,
    now: i64,
) -> Result<(i64, i64)> {
    let n = within(key, window_secs, now).count(conn).await?;
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let frees_at = if n == 0 {
        now + window_secs
    } else {
        // The (n - max + 1)-th oldest: once it leaves, max - 1 remain.
        let skip = u64::try_from((n - max).max(0)).unwrap_or(0);
        within(key, window_secs, now)
            .order_by_asc(sms_send::Column::At)
            .order_by_asc(sms_send::Column::Id)
            .offset(skip)
            .one(conn)
            .await?
            .map_or(now + window_secs, |send| send.at + window_secs)
    };
    Ok((n, frees_at))
}

/// Counts one send under `key` at `now`; its id, to give back.
async fn record<C: Run>(conn: &C, key: &str, now: i64) -> Result<i64> {
    let inserted = sms_send::Entity::insert(sms_send::ActiveModel {
        id: NotSet,
        key: Set(key.to_owned()),
        at: Set(now),
    })
    .insert_on(conn)
    .await?;
    Ok(inserted.id)
}

impl<'a> SmsLimits<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Takes one slot of every limit, all or none (one transaction): the first limit that is
    /// reached is reported with when it frees up, and nothing is counted.
    pub async fn take(
        &self,
        limits: &[Limit<'_>],
        now: i64,
    ) -> Result<std::result::Result<Taken, LimitReached>> {
        Ok(self
            .take_guarded(None, limits, now)
            .await?
            .map_err(|refused| match refused {
                Refused::Limit(reached) => reached,
                // No guard, no refusal of its.
                Refused::Pumping { retry_at, .. } => LimitReached { index: 0, retry_at },
            }))
    }

    /// [`SmsLimits::take`] behind the pumping guard, decided in the same transaction (its
    /// sends' lock first, so the sends it counts are exactly those before this one), which
    /// also counts this send under the guard's `sent_key`.
    pub async fn take_guarded(
        &self,
        guard: Option<PumpingGuard<'_>>,
        limits: &[Limit<'_>],
        now: i64,
    ) -> Result<std::result::Result<Taken, Refused>> {
        for limit in limits {
            check(limit)?;
        }
        let (_writing, txn) = self.storage.begin_write().await?;
        let mut sends = Vec::with_capacity(limits.len() + 1);
        if let Some(guard) = guard {
            lock(&txn, guard.sent_key, now).await?;
            let (sent, oldest_leaves) =
                count(&txn, guard.sent_key, i64::MAX, guard.window_secs, now).await?;
            let (verified, _) =
                count(&txn, guard.verified_key, i64::MAX, guard.window_secs, now).await?;
            if sent >= guard.min_sends && sent > guard.max_ratio.saturating_mul(verified) {
                txn.rollback().await?;
                return Ok(Err(Refused::Pumping {
                    sent,
                    verified,
                    retry_at: oldest_leaves,
                }));
            }
            sends.push(record(&txn, guard.sent_key, now).await?);
        }
        for (index, limit) in limits.iter().enumerate() {
            lock(&txn, limit.key, now).await?;
            let (n, frees_at) = count(&txn, limit.key, limit.max, limit.window_secs, now).await?;
            if n >= limit.max {
                txn.rollback().await?;
                return Ok(Err(Refused::Limit(LimitReached {
                    index,
                    retry_at: frees_at,
                })));
            }
            sends.push(record(&txn, limit.key, now).await?);
        }
        txn.commit().await?;
        Ok(Ok(Taken { sends }))
    }

    /// Gives the slots back (the message was not sent): the sends it counted are removed.
    pub async fn give_back(&self, taken: &Taken) -> Result<()> {
        sms_send::Entity::delete_many()
            .filter(sms_send::Column::Id.is_in(taken.sends.iter().copied()))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(())
    }

    /// Counts one event under `key` without a cap (for example a successful verification).
    pub async fn count_event(&self, key: &str, window_secs: i64, now: i64) -> Result<()> {
        check(&Limit {
            key,
            max: i64::MAX,
            window_secs,
        })?;
        record(&*self.storage.write().await, key, now).await?;
        Ok(())
    }

    /// Events under `key` within the `window_secs` up to `now`, and when the oldest of them
    /// leaves the window (`now + window_secs` when there are none).
    pub async fn current(&self, key: &str, window_secs: i64, now: i64) -> Result<(i64, i64)> {
        count(self.storage.db(), key, i64::MAX, window_secs, now).await
    }

    /// Deletes the sends (and the lock rows last taken) before `cutoff`: they count nothing
    /// any more (the longest window is a day). Returns how many sends.
    pub async fn delete_older_than(&self, cutoff: i64) -> Result<u64> {
        let writing = self.storage.write_on_pool().await;
        let deleted = sms_send::Entity::delete_many()
            .filter(sms_send::Column::At.lt(cutoff))
            .change_on(&*writing)
            .await?;
        sms_counter::Entity::delete_many()
            .filter(sms_counter::Column::WindowStart.lt(cutoff))
            .change_on(&*writing)
            .await?;
        Ok(deleted)
    }
}
