//! User accounts.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::entity::enums::UserStatus;
use crate::entity::user::{ActiveModel, Column, Entity, Model};
use crate::{Result, Storage, StorageError};

/// Normalizes an email for uniqueness and lookup: trimmed and lower-cased.
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn check_email(email: &str) -> Result<()> {
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if valid {
        Ok(())
    } else {
        Err(StorageError::Invalid {
            field: "email",
            reason: "must be an address of the form local@domain, at most 254 bytes",
        })
    }
}

/// Users.
#[derive(Debug)]
pub struct Users<'a> {
    storage: &'a Storage,
}

impl<'a> Users<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Creates a user. Emails are unique ignoring case: a second `Alice@x` after `alice@x`
    /// is a [`StorageError::Conflict`]. `password_hash` is an argon2id PHC string, or `None`
    /// for SSO and magic-link accounts.
    pub async fn create(
        &self,
        email: &str,
        password_hash: Option<String>,
        now: i64,
    ) -> Result<Model> {
        let email = email.trim();
        check_email(email)?;
        let model = ActiveModel {
            id: Set(Uuid::now_v7()),
            email: Set(email.to_owned()),
            email_normalized: Set(normalize_email(email)),
            password_hash: Set(password_hash),
            status: Set(UserStatus::Active),
            must_reenroll: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
        };
        model
            .insert(&*self.storage.write().await)
            .await
            .map_err(|e| StorageError::from_insert(e, "user"))
    }

    /// The user, if they exist.
    pub async fn get(&self, id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id).one(self.storage.db()).await?)
    }

    /// The user with this email, ignoring case.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::EmailNormalized.eq(normalize_email(email)))
            .one(self.storage.db())
            .await?)
    }

    /// Sets (or replaces) the password hash.
    pub async fn set_password_hash(&self, id: Uuid, hash: String, now: i64) -> Result<()> {
        let result = Entity::update_many()
            .col_expr(
                Column::PasswordHash,
                sea_orm::sea_query::Expr::value(Some(hash)),
            )
            .col_expr(Column::UpdatedAt, sea_orm::sea_query::Expr::value(now))
            .filter(Column::Id.eq(id))
            .exec(&*self.storage.write().await)
            .await?;
        found(result.rows_affected)
    }

    /// Sets whether the user must set up 2FA again before their next session.
    pub async fn set_must_reenroll(&self, id: Uuid, value: bool, now: i64) -> Result<()> {
        let result = Entity::update_many()
            .col_expr(Column::MustReenroll, sea_orm::sea_query::Expr::value(value))
            .col_expr(Column::UpdatedAt, sea_orm::sea_query::Expr::value(now))
            .filter(Column::Id.eq(id))
            .exec(&*self.storage.write().await)
            .await?;
        found(result.rows_affected)
    }
}

fn found(rows: u64) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StorageError::NotFound("user"))
    }
}
