//! Organizations and their 2FA policy.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait,
};
use uuid::Uuid;

use crate::entity::enums::SsoMode;
use crate::entity::organization::{ActiveModel, Column, Entity, Model};
use crate::{Result, Storage, StorageError};

/// The policy fields of an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyUpdate {
    /// 2FA required for every member.
    pub mfa_required: bool,
    /// Allowed kinds: bit 0 TOTP, bit 1 HOTP, bit 2 SMS.
    pub allowed_methods: i32,
    /// SSO enabled.
    pub sso_enabled: bool,
    /// SSO exempt or enforce.
    pub sso_mode: SsoMode,
}

/// A new organization row with the default policy, after checking the name.
fn new_organization(name: &str, now: i64) -> Result<ActiveModel> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(StorageError::Invalid {
            field: "name",
            reason: "must be 1 to 200 characters",
        });
    }
    Ok(ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        mfa_required: Set(false),
        mfa_required_since: Set(None),
        allowed_methods: Set(0b111),
        sso_enabled: Set(false),
        sso_mode: Set(SsoMode::Exempt),
        created_at: Set(now),
    })
}

/// Organizations.
#[derive(Debug)]
pub struct Organizations<'a> {
    storage: &'a Storage,
}

impl<'a> Organizations<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Creates an organization with the default policy: nothing required, every method
    /// allowed, SSO off (exempt mode when turned on).
    pub async fn create(&self, name: &str, now: i64) -> Result<Model> {
        new_organization(name, now)?
            .insert(self.storage.db())
            .await
            .map_err(|e| StorageError::from_insert(e, "organization"))
    }

    /// Creates an organization and makes `owner` its owner, in one transaction: an unknown
    /// owner leaves no organization behind.
    pub async fn create_with_owner(&self, name: &str, owner: Uuid, now: i64) -> Result<Model> {
        let row = new_organization(name, now)?;
        let txn = self.storage.db().begin().await?;
        let model = row
            .insert(&txn)
            .await
            .map_err(|e| StorageError::from_insert(e, "organization"))?;
        crate::entity::membership::ActiveModel {
            org_id: Set(model.id),
            user_id: Set(owner),
            role: Set(crate::entity::enums::Role::Owner),
            created_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                StorageError::NotFound("user")
            }
            _ => StorageError::from_insert(e, "membership"),
        })?;
        txn.commit().await?;
        Ok(model)
    }

    /// The organization, if it exists.
    pub async fn get(&self, id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id).one(self.storage.db()).await?)
    }

    /// Replaces the policy. `mfa_required_since` is set when 2FA becomes required and cleared
    /// when it stops being required.
    pub async fn update_policy(&self, id: Uuid, policy: PolicyUpdate, now: i64) -> Result<Model> {
        if !(0..=0b111).contains(&policy.allowed_methods) {
            return Err(StorageError::Invalid {
                field: "allowed_methods",
                reason: "unknown method bits",
            });
        }
        let txn = self.storage.db().begin().await?;
        // Writes only, each decided in the database, so concurrent updates cannot leave a
        // `since` that disagrees with `mfa_required`.
        let updated = Entity::update_many()
            .col_expr(Column::MfaRequired, Expr::value(policy.mfa_required))
            .col_expr(Column::AllowedMethods, Expr::value(policy.allowed_methods))
            .col_expr(Column::SsoEnabled, Expr::value(policy.sso_enabled))
            .col_expr(Column::SsoMode, Expr::value(policy.sso_mode))
            .filter(Column::Id.eq(id))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(StorageError::NotFound("organization"));
        }
        let since = if policy.mfa_required {
            Entity::update_many()
                .col_expr(Column::MfaRequiredSince, Expr::value(Some(now)))
                .filter(Column::Id.eq(id))
                .filter(Column::MfaRequiredSince.is_null())
        } else {
            Entity::update_many()
                .col_expr(Column::MfaRequiredSince, Expr::value(Option::<i64>::None))
                .filter(Column::Id.eq(id))
        };
        since.exec(&txn).await?;
        let model = Entity::find_by_id(id).one(&txn).await?;
        txn.commit().await?;
        model.ok_or(StorageError::NotFound("organization"))
    }
}
