//! SMS codes, stored only as keyed hashes bound to their factor.

use sea_orm::sea_query::Expr;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect as _,
};
use uuid::Uuid;

use crate::crypto::{HashPurpose, TokenHash};
use crate::entity::sms_code::{ActiveModel, Column, Entity, Model};
use crate::run::{ChangeOn as _, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// SMS codes.
#[derive(Debug)]
pub struct SmsCodes<'a> {
    storage: &'a Storage,
}

impl<'a> SmsCodes<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    fn hash(&self, factor_id: Uuid, code: &str) -> TokenHash {
        self.storage.hasher().hash(
            HashPurpose::SmsCode,
            &[factor_id.as_bytes(), code.as_bytes()],
        )
    }

    /// Stores a new code for the factor, replacing any earlier one (in one transaction).
    pub async fn issue(
        &self,
        factor_id: Uuid,
        code: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Model> {
        let (_writing, txn) = self.storage.begin_write().await?;
        Entity::delete_many()
            .filter(Column::FactorId.eq(factor_id))
            .exec(&txn)
            .await?;
        let model = ActiveModel {
            id: Set(Uuid::now_v7()),
            factor_id: Set(factor_id),
            code_hash: Set(self.hash(factor_id, code).0.to_vec()),
            expires_at: Set(expires_at),
            attempts: Set(0),
            sent_at: Set(now),
            consumed_at: Set(None),
        };
        let model = model.insert(&txn).await.map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                StorageError::NotFound("factor")
            }
            _ => StorageError::from_insert(e, "sms code"),
        })?;
        txn.commit().await?;
        Ok(model)
    }

    /// Withdraws the factor's code (for example when sending it failed). Returns whether
    /// there was one.
    pub async fn withdraw(&self, factor_id: Uuid) -> Result<bool> {
        Ok(Entity::delete_many()
            .filter(Column::FactorId.eq(factor_id))
            .change_on(&*self.storage.write().await)
            .await?
            > 0)
    }

    /// The factor's current code, if any (for cooldowns: when it was sent).
    pub async fn current(&self, factor_id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::FactorId.eq(factor_id))
            .order_by_desc(Column::SentAt)
            .limit(1)
            .all_on(&self.storage.reads())
            .await?
            .pop())
    }

    /// Takes one attempt from the current code's budget of `max`, *before* the typed code is
    /// compared: false when there is no unused, unexpired code with attempts left. One
    /// conditional UPDATE, so concurrent guesses can never check more than `max` codes.
    pub async fn take_attempt(&self, factor_id: Uuid, max: i32, now: i64) -> Result<bool> {
        let result = Entity::update_many()
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .filter(Column::FactorId.eq(factor_id))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .filter(Column::Attempts.lt(max))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(result == 1)
    }

    /// Uses the code: true for exactly one caller with the right, unexpired, unused code,
    /// while the failure counter `lock_key` has no lockout in force (in the same statement:
    /// a right code refused by a lockout stays unused, for after it). Take an attempt first
    /// ([`SmsCodes::take_attempt`]).
    pub async fn consume(
        &self,
        factor_id: Uuid,
        code: &str,
        now: i64,
        lock_key: &str,
    ) -> Result<bool> {
        let result = Entity::update_many()
            .col_expr(Column::ConsumedAt, Expr::value(Some(now)))
            .filter(Column::FactorId.eq(factor_id))
            .filter(Column::CodeHash.eq(self.hash(factor_id, code).0.to_vec()))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .filter(super::attempts::no_lockout_in_force(lock_key, now))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(result == 1)
    }
}
