//! Organizations and their 2FA policy.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};
use uuid::Uuid;

use super::audit::{AuditOf, append_with};
use crate::entity::enums::SsoMode;
use crate::entity::organization::{ActiveModel, Column, Entity, Model};
use crate::run::{InsertOn as _, SelectOn as _};
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
    /// Days a device may be remembered (0, off, to 90).
    pub trusted_device_days: i16,
}

impl PolicyUpdate {
    /// The policy fields of `org` as they are.
    pub fn of(org: &Model) -> Self {
        Self {
            mfa_required: org.mfa_required,
            allowed_methods: org.allowed_methods,
            sso_enabled: org.sso_enabled,
            sso_mode: org.sso_mode,
            trusted_device_days: org.trusted_device_days,
        }
    }

    fn check(&self) -> Result<()> {
        if !(0..=0b1111).contains(&self.allowed_methods) {
            return Err(StorageError::Invalid {
                field: "allowed_methods",
                reason: "unknown method bits",
            });
        }
        if !(0..=super::MAX_TRUSTED_DEVICE_DAYS).contains(&self.trusted_device_days) {
            return Err(StorageError::Invalid {
                field: "trusted_device_days",
                reason: "must be 0 to 90",
            });
        }
        Ok(())
    }
}

/// What [`Organizations::change_policy`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChanged {
    /// The organization with its new policy.
    pub organization: Model,
    /// How many sessions were revoked.
    pub sessions_revoked: u64,
    /// How many remembered devices ended (remembering turned off, or fewer days).
    pub trusted_devices_revoked: u64,
}

/// Writes the policy columns of organization `id` on `conn`, only where they still equal
/// `expected` (when given), and sets or clears `mfa_required_since`. Returns whether the row
/// was written.
async fn write_policy<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    expected: Option<PolicyUpdate>,
    policy: PolicyUpdate,
    now: i64,
) -> Result<bool> {
    policy.check()?;
    // Writes only, each decided in the database, so concurrent updates cannot leave a
    // `since` that disagrees with `mfa_required`.
    let mut update = Entity::update_many()
        .col_expr(Column::MfaRequired, Expr::value(policy.mfa_required))
        .col_expr(Column::AllowedMethods, Expr::value(policy.allowed_methods))
        .col_expr(Column::SsoEnabled, Expr::value(policy.sso_enabled))
        .col_expr(Column::SsoMode, Expr::value(policy.sso_mode))
        .col_expr(
            Column::TrustedDeviceDays,
            Expr::value(policy.trusted_device_days),
        )
        .filter(Column::Id.eq(id));
    if let Some(expected) = expected {
        update = update
            .filter(Column::MfaRequired.eq(expected.mfa_required))
            .filter(Column::AllowedMethods.eq(expected.allowed_methods))
            .filter(Column::SsoEnabled.eq(expected.sso_enabled))
            .filter(Column::SsoMode.eq(expected.sso_mode))
            .filter(Column::TrustedDeviceDays.eq(expected.trusted_device_days));
    }
    if update.exec(conn).await?.rows_affected != 1 {
        return Ok(false);
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
    since.exec(conn).await?;
    Ok(true)
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
        allowed_methods: Set(0b1111),
        sso_enabled: Set(false),
        sso_mode: Set(SsoMode::Exempt),
        created_at: Set(now),
        trusted_device_days: Set(0),
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
        Entity::insert(new_organization(name, now)?)
            .insert_on(&*self.storage.write().await)
            .await
            .map_err(|e| StorageError::from_insert(e, "organization"))
    }

    /// Creates an organization and makes `owner` its owner, with the audit event that
    /// records it (`audit`, about the new organization and its owner), in one transaction: an
    /// unknown owner, or an event the log refuses, leaves no organization behind.
    pub async fn create_with_owner(
        &self,
        name: &str,
        owner: Uuid,
        now: i64,
        audit: AuditOf<'_>,
    ) -> Result<Model> {
        let row = new_organization(name, now)?;
        let (_writing, txn) = self.storage.begin_write().await?;
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
        append_with(&txn, audit.event(now, Some(model.id), Some(owner), "{}")).await?;
        txn.commit().await?;
        Ok(model)
    }

    /// The organization, if it exists.
    pub async fn get(&self, id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id)
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// Replaces the policy. `mfa_required_since` is set when 2FA becomes required and cleared
    /// when it stops being required; remembered devices follow `trusted_device_days`.
    pub async fn update_policy(&self, id: Uuid, policy: PolicyUpdate, now: i64) -> Result<Model> {
        policy.check()?;
        let (_writing, txn) = self.storage.begin_write().await?;
        if !write_policy(&txn, id, None, policy, now).await? {
            return Err(StorageError::NotFound("organization"));
        }
        super::trusted_devices::apply_org_days(&txn, id, policy.trusted_device_days, now).await?;
        let model = Entity::find_by_id(id).one_by_key(&txn).await?;
        txn.commit().await?;
        model.ok_or(StorageError::NotFound("organization"))
    }

    /// An administrator's policy change, as one transaction: the policy of `expected.id` is
    /// replaced by `policy` only if it is still the one in `expected` (else
    /// [`StorageError::Stale`]: the caller decided on a policy that is gone); then, with
    /// `revoke_below`, the sessions that policy governs below that assurance are revoked (see
    /// [`super::Sessions::revoke_org_below`]); the devices remembered under the policy follow
    /// its `trusted_device_days` (all forgotten at 0; with fewer days, those remembered longer
    /// ago end); then the audit event is appended with the details
    /// `details(sessions_revoked, trusted_devices_revoked)`. Either all of it happens or none.
    pub async fn change_policy(
        &self,
        expected: &Model,
        policy: PolicyUpdate,
        revoke_below: Option<i16>,
        audit: AuditOf<'_>,
        details: impl FnOnce(u64, u64) -> String + Send,
        now: i64,
    ) -> Result<PolicyChanged> {
        policy.check()?;
        let id = expected.id;
        let (_writing, txn) = self.storage.begin_write().await?;
        if !write_policy(&txn, id, Some(PolicyUpdate::of(expected)), policy, now).await? {
            return Err(match Entity::find_by_id(id).one_by_key(&txn).await? {
                Some(_) => StorageError::Stale("organization policy"),
                None => StorageError::NotFound("organization"),
            });
        }
        let sessions_revoked = match revoke_below {
            Some(level) => super::sessions::revoke_org_below(&txn, id, level, now).await?,
            None => 0,
        };
        let trusted_devices_revoked =
            super::trusted_devices::apply_org_days(&txn, id, policy.trusted_device_days, now)
                .await?;
        let details = details(sessions_revoked, trusted_devices_revoked);
        append_with(&txn, audit.event(now, Some(id), None, &details)).await?;
        let organization = Entity::find_by_id(id)
            .one_by_key(&txn)
            .await?
            .ok_or(StorageError::NotFound("organization"))?;
        txn.commit().await?;
        Ok(PolicyChanged {
            organization,
            sessions_revoked,
            trusted_devices_revoked,
        })
    }
}
