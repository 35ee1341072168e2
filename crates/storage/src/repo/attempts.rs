//! Failure counters and lockouts, keyed by what is counted (e.g. `mfa:<user id>`), exact
//! under contention and across replicas.

use super::OneByKey;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::entity::attempt_counter::{ActiveModel, Column, Entity, Model};
use crate::{Result, Storage};

/// Failure counters.
#[derive(Debug)]
pub struct Attempts<'a> {
    storage: &'a Storage,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Counts one failure and returns the new count: one upsert (`INSERT … ON CONFLICT DO
    /// UPDATE SET failures = failures + 1 RETURNING`), so no increment is ever lost.
    pub async fn record_failure(&self, key: &str, now: i64) -> Result<i64> {
        let row = ActiveModel {
            key: Set(key.to_owned()),
            failures: Set(1),
            locked_until: Set(None),
            updated_at: Set(now),
        };
        let model = Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::Key)
                    .value(
                        Column::Failures,
                        Expr::col((Entity, Column::Failures)).add(1),
                    )
                    .value(Column::UpdatedAt, Expr::value(now))
                    .to_owned(),
            )
            .exec_with_returning(&*self.storage.write().await)
            .await?;
        Ok(model.failures)
    }

    /// Locks the key until `until`, never shortening a longer lock already in place.
    pub async fn lock_until(&self, key: &str, until: i64, now: i64) -> Result<()> {
        Entity::update_many()
            .col_expr(Column::LockedUntil, Expr::value(Some(until)))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Key.eq(key))
            .filter(
                sea_orm::sea_query::Condition::any()
                    .add(Column::LockedUntil.is_null())
                    .add(Column::LockedUntil.lt(until)),
            )
            .exec(&*self.storage.write().await)
            .await?;
        Ok(())
    }

    /// The counter, if any failure was recorded since the last reset.
    pub async fn get(&self, key: &str) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(key.to_owned())
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// Clears the counter and any lock (after a success, or an operator's unlock).
    pub async fn reset(&self, key: &str) -> Result<()> {
        Entity::delete_by_id(key.to_owned())
            .exec(&*self.storage.write().await)
            .await?;
        Ok(())
    }
}
