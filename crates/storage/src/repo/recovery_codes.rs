//! Recovery codes, stored only as keyed hashes bound to their user.

use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::audit::{NewAuditEvent, append_all_with};
use crate::crypto::{HashPurpose, TokenHash};
use crate::entity::recovery_code::{ActiveModel, Column, Entity};
use crate::run::{ChangeOn as _, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// The user's unused codes: what [`RecoveryCodes::remaining`] counts and a login's summary
/// reads.
pub(crate) fn unused_of(user_id: Uuid) -> Condition {
    Condition::all()
        .add(Column::UserId.eq(user_id))
        .add(Column::UsedAt.is_null())
}

/// Normalizes a typed recovery code: separators and spaces dropped, upper case.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

pub(crate) fn code_hash(storage: &Storage, user_id: Uuid, code: &str) -> TokenHash {
    let normalized = zeroize::Zeroizing::new(normalize(code));
    storage.hasher().hash(
        HashPurpose::RecoveryCode,
        &[user_id.as_bytes(), normalized.as_bytes()],
    )
}

pub(crate) async fn insert_codes(
    db: &impl ConnectionTrait,
    storage: &Storage,
    user_id: Uuid,
    codes: &[&str],
    now: i64,
) -> Result<()> {
    if codes.is_empty() {
        return Ok(());
    }
    let rows = codes.iter().map(|code| ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        code_hash: Set(code_hash(storage, user_id, code).0.to_vec()),
        used_at: Set(None),
        created_at: Set(now),
    });
    Entity::insert_many(rows)
        .exec(db)
        .await
        .map_err(|e| StorageError::from_insert(e, "recovery code"))?;
    Ok(())
}

/// Recovery codes.
#[derive(Debug)]
pub struct RecoveryCodes<'a> {
    storage: &'a Storage,
}

impl<'a> RecoveryCodes<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Replaces the user's whole set (regeneration), with the `audit` events that record it,
    /// in one transaction.
    pub async fn replace(
        &self,
        user_id: Uuid,
        codes: &[&str],
        now: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<()> {
        let (_writing, txn) = self.storage.begin_write().await?;
        Entity::delete_many()
            .filter(Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        insert_codes(&txn, self.storage, user_id, codes, now).await?;
        append_all_with(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Uses a code: true for exactly one caller, however many present the same unused code
    /// at once; false if it is unknown, someone else's, or used.
    pub async fn consume(&self, user_id: Uuid, code: &str, now: i64) -> Result<bool> {
        let hash = code_hash(self.storage, user_id, code);
        let result = Entity::update_many()
            .col_expr(Column::UsedAt, Expr::value(Some(now)))
            .filter(unused_of(user_id))
            .filter(Column::CodeHash.eq(hash.0.to_vec()))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(result == 1)
    }

    /// [`RecoveryCodes::consume`] at a login, which a lost device brought the user to: when
    /// this was the user's last code, the user must also enroll 2FA again
    /// (`users.must_reenroll`), set in the same transaction as the code is used, so that no
    /// later login gets a session from the old factors.
    pub async fn consume_at_login(&self, user_id: Uuid, code: &str, now: i64) -> Result<bool> {
        use crate::entity::user;
        let hash = code_hash(self.storage, user_id, code);
        let (_writing, txn) = self.storage.begin_write().await?;
        let used = Entity::update_many()
            .col_expr(Column::UsedAt, Expr::value(Some(now)))
            .filter(unused_of(user_id))
            .filter(Column::CodeHash.eq(hash.0.to_vec()))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if !used {
            return Ok(false);
        }
        let unused = sea_orm::sea_query::Query::select()
            .expr(Expr::value(1))
            .from(Entity)
            .cond_where(unused_of(user_id))
            .to_owned();
        user::Entity::update_many()
            .col_expr(user::Column::MustReenroll, Expr::value(true))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(user_id))
            .filter(sea_orm::sea_query::ExprTrait::not(Expr::exists(unused)))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Whether `code` is one of the user's unused codes (a read: [`RecoveryCodes::consume`]
    /// still decides who uses it).
    pub async fn is_unused(&self, user_id: Uuid, code: &str) -> Result<bool> {
        let hash = code_hash(self.storage, user_id, code);
        Ok(Entity::find()
            .filter(unused_of(user_id))
            .filter(Column::CodeHash.eq(hash.0.to_vec()))
            .count_on(&self.storage.reads())
            .await?
            > 0)
    }

    /// Whether `code` is one of the user's codes that was used already (a replay, told apart
    /// from a wrong code).
    pub async fn is_used(&self, user_id: Uuid, code: &str) -> Result<bool> {
        let hash = code_hash(self.storage, user_id, code);
        Ok(Entity::find()
            .filter(Column::UserId.eq(user_id))
            .filter(Column::UsedAt.is_not_null())
            .filter(Column::CodeHash.eq(hash.0.to_vec()))
            .count_on(&self.storage.reads())
            .await?
            > 0)
    }

    /// How many unused codes the user has.
    pub async fn remaining(&self, user_id: Uuid) -> Result<u64> {
        Ok(Entity::find()
            .filter(unused_of(user_id))
            .count_on(&self.storage.reads())
            .await?)
    }
}
