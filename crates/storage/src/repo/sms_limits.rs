//! Windowed limits on SMS sending, exact under contention and across replicas: each counter is
//! one row, and taking a slot is one conditional UPDATE whose affected-row count decides.

use super::OneByKey;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::entity::sms_counter::{ActiveModel, Column, Entity};
use crate::{Result, Storage, StorageError};

/// At most `max` events per window of `window_secs`, the window starting at its first event.
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
    /// When a slot frees up (Unix seconds).
    pub retry_at: i64,
}

/// Slots taken by [`SmsLimits::take`], to give back with [`SmsLimits::give_back`] when the
/// message could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    slots: Vec<(String, i64)>,
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

/// Takes one slot of `limit` on `conn`: the window's start after taking it, or `None` with
/// the start of the full window.
async fn take_one<C: ConnectionTrait>(
    conn: &C,
    limit: &Limit<'_>,
    now: i64,
) -> Result<std::result::Result<i64, i64>> {
    Entity::insert(ActiveModel {
        key: Set(limit.key.to_owned()),
        window_start: Set(now),
        count: Set(0),
    })
    .on_conflict_do_nothing_on([Column::Key])
    .exec(conn)
    .await?;
    let expired = Expr::col(Column::WindowStart).lte(now - limit.window_secs);
    let taken = Entity::update_many()
        .col_expr(
            Column::Count,
            Expr::case(expired.clone(), 1)
                .finally(Expr::col(Column::Count).add(1))
                .into(),
        )
        .col_expr(
            Column::WindowStart,
            Expr::case(expired, now)
                .finally(Expr::col(Column::WindowStart))
                .into(),
        )
        .filter(Column::Key.eq(limit.key))
        .filter(
            sea_orm::sea_query::Condition::any()
                .add(Column::WindowStart.lte(now - limit.window_secs))
                .add(Column::Count.lt(limit.max)),
        )
        .exec(conn)
        .await?
        .rows_affected
        == 1;
    let row = Entity::find_by_id(limit.key.to_owned())
        .one_by_key(conn)
        .await?
        .ok_or(StorageError::NotFound("sms counter"))?;
    Ok(if taken {
        Ok(row.window_start)
    } else {
        Err(row.window_start)
    })
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
        for limit in limits {
            check(limit)?;
        }
        let (_writing, txn) = self.storage.begin_write().await?;
        let mut slots = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            match take_one(&txn, limit, now).await? {
                Ok(window_start) => slots.push((limit.key.to_owned(), window_start)),
                Err(window_start) => {
                    txn.rollback().await?;
                    return Ok(Err(LimitReached {
                        index,
                        retry_at: window_start + limit.window_secs,
                    }));
                }
            }
        }
        txn.commit().await?;
        Ok(Ok(Taken { slots }))
    }

    /// Gives the slots back (the message was not sent): each count goes down by one, unless
    /// its window has moved on since.
    pub async fn give_back(&self, taken: &Taken) -> Result<()> {
        for (key, window_start) in &taken.slots {
            Entity::update_many()
                .col_expr(Column::Count, Expr::col(Column::Count).sub(1))
                .filter(Column::Key.eq(key.as_str()))
                .filter(Column::WindowStart.eq(*window_start))
                .filter(Column::Count.gt(0))
                .exec(&*self.storage.write().await)
                .await?;
        }
        Ok(())
    }

    /// Counts one event under `key` without a cap (for example a successful verification).
    pub async fn count_event(&self, key: &str, window_secs: i64, now: i64) -> Result<()> {
        let limit = Limit {
            key,
            max: i64::MAX,
            window_secs,
        };
        check(&limit)?;
        take_one(&*self.storage.write().await, &limit, now)
            .await?
            .ok();
        Ok(())
    }

    /// Events under `key` in its current window (0 once the window has passed), and when
    /// that window ends.
    pub async fn current(&self, key: &str, window_secs: i64, now: i64) -> Result<(i64, i64)> {
        Ok(Entity::find_by_id(key.to_owned())
            .one_by_key(&self.storage.reads())
            .await?
            .filter(|row| row.window_start > now - window_secs)
            .map_or((0, now + window_secs), |row| {
                (row.count, row.window_start + window_secs)
            }))
    }

    /// Deletes counters whose window began before `cutoff` (they count nothing any more: the
    /// longest window is a day). Returns how many.
    pub async fn delete_older_than(&self, cutoff: i64) -> Result<u64> {
        Ok(Entity::delete_many()
            .filter(Column::WindowStart.lt(cutoff))
            .exec(&*self.storage.write().await)
            .await?
            .rows_affected)
    }
}
