//! Remembered devices: a device token (only its keyed hash is stored) that lets a user's
//! login in one organization skip the second factor until it expires or is revoked.

use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::audit::{NewAuditEvent, append_all_with};
use super::{ClientInfo, Page, page};
use crate::crypto::{HashPurpose, TokenHash};
use crate::entity::trusted_device::{ActiveModel, Column, Entity, Model};
use crate::run::{ChangeOn as _, Run, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// Seconds in a day: remembered devices are granted in days.
const DAY: i64 = 86_400;

/// The most days an organization may let a device be remembered.
pub const MAX_TRUSTED_DEVICE_DAYS: i16 = 90;

/// What a new remembered device needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewTrustedDevice<'a> {
    /// The user.
    pub user_id: Uuid,
    /// The organization whose policy allows it.
    pub org_id: Uuid,
    /// For how many days (1 to [`MAX_TRUSTED_DEVICE_DAYS`]).
    pub days: i16,
    /// Created (Unix seconds).
    pub now: i64,
    /// Where the login that remembered it came from.
    pub client: ClientInfo<'a>,
}

/// Remembered devices.
#[derive(Debug)]
pub struct TrustedDevices<'a> {
    storage: &'a Storage,
}

impl<'a> TrustedDevices<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    fn hash(&self, token: &str) -> TokenHash {
        self.storage
            .hasher()
            .hash(HashPurpose::DeviceToken, &[token.as_bytes()])
    }

    /// Remembers a device for `token` (only its keyed hash is kept) and appends `audit`,
    /// its details made from the new device's id, in one transaction.
    pub async fn create(
        &self,
        token: &str,
        new: NewTrustedDevice<'_>,
        audit: NewAuditEvent<'_>,
        details: impl FnOnce(Uuid) -> String + Send,
    ) -> Result<Model> {
        new.client.check()?;
        if !(1..=MAX_TRUSTED_DEVICE_DAYS).contains(&new.days) {
            return Err(StorageError::Invalid {
                field: "days",
                reason: "must be 1 to 90",
            });
        }
        let id = Uuid::now_v7();
        let model = ActiveModel {
            id: Set(id),
            token_hash: Set(self.hash(token).0.to_vec()),
            user_id: Set(new.user_id),
            org_id: Set(new.org_id),
            created_at: Set(new.now),
            expires_at: Set(new.now.saturating_add(i64::from(new.days) * DAY)),
            last_used_at: Set(None),
            client_ip: Set(new.client.ip.map(str::to_owned)),
            client_user_agent: Set(new.client.user_agent.map(str::to_owned)),
        };
        let details = details(id);
        let (_writing, txn) = self.storage.begin_write().await?;
        let model = Entity::insert(model)
            .exec_with_returning(&txn)
            .await
            .map_err(|e| match e.sql_err() {
                Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                    StorageError::NotFound("user or organization")
                }
                _ => StorageError::from_insert(e, "trusted device"),
            })?;
        append_all_with(
            &txn,
            &[NewAuditEvent {
                details: &details,
                ..audit
            }],
        )
        .await?;
        txn.commit().await?;
        Ok(model)
    }

    /// Uses the device of `token` for a login of `user_id` in `org_id` at `now`: the device
    /// if it is theirs, for that organization, and not expired, with its last use recorded.
    /// None otherwise (unknown, another user's or organization's, expired, or ended while
    /// this was read): such a token counts as no token at all.
    pub async fn use_valid(
        &self,
        token: &str,
        user_id: Uuid,
        org_id: Uuid,
        now: i64,
    ) -> Result<Option<Model>> {
        let Some(device) = Entity::find()
            .filter(Column::TokenHash.eq(self.hash(token).0.to_vec()))
            .one_by_key(&self.storage.reads())
            .await?
        else {
            return Ok(None);
        };
        if device.user_id != user_id || device.org_id != org_id || device.expires_at <= now {
            return Ok(None);
        }
        // Conditional on the device still being there and unexpired: a revocation or a
        // lowered policy that committed since the read wins.
        let used = Entity::update_many()
            .col_expr(Column::LastUsedAt, Expr::value(Some(now)))
            .filter(Column::Id.eq(device.id))
            .filter(Column::ExpiresAt.gt(now))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok((used == 1).then_some(Model {
            last_used_at: Some(now),
            ..device
        }))
    }

    /// The user's unexpired devices at `now`, newest first, a page of at most `limit` (1 to
    /// 1,000) after the device `before` (the last of the previous page).
    pub async fn list(
        &self,
        user_id: Uuid,
        now: i64,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Page<Model, Uuid>> {
        let mut query = Entity::find()
            .filter(Column::UserId.eq(user_id))
            .filter(Column::ExpiresAt.gt(now));
        if let Some(before) = before {
            query = query.filter(Column::Id.lt(before));
        }
        let limit = super::clamp_limit(limit);
        let rows = query
            .order_by_desc(Column::Id)
            .limit(limit.saturating_add(1))
            .all(self.storage.db())
            .await?;
        Ok(page(rows, limit, |m| m.id))
    }

    /// Forgets one of the user's devices and appends `audit` in one transaction. Returns
    /// whether it was there (an expired one counts: it is gone either way); nothing is
    /// recorded for a device that was not.
    pub async fn revoke(
        &self,
        user_id: Uuid,
        id: Uuid,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<bool> {
        let (_writing, txn) = self.storage.begin_write().await?;
        let removed = Entity::delete_many()
            .filter(Column::Id.eq(id))
            .filter(Column::UserId.eq(user_id))
            .exec(&txn)
            .await?
            .rows_affected;
        if removed == 1 {
            append_all_with(&txn, audit).await?;
        }
        txn.commit().await?;
        Ok(removed == 1)
    }

    /// Deletes devices that expired before `now`. Returns how many.
    pub async fn delete_expired(&self, now: i64) -> Result<u64> {
        Ok(Entity::delete_many()
            .filter(Column::ExpiresAt.lte(now))
            .change_on(&*self.storage.write().await)
            .await?)
    }
}

/// Forgets every device of a user, on `conn` (in the transaction of the change that ends
/// them). Returns how many were unexpired at `now`.
pub(crate) async fn revoke_of_user<C: Run>(conn: &C, user_id: Uuid, now: i64) -> Result<u64> {
    let live = Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::ExpiresAt.gt(now))
        .count_on(conn)
        .await?;
    Entity::delete_many()
        .filter(Column::UserId.eq(user_id))
        .change_on(conn)
        .await?;
    Ok(live)
}

/// Applies an organization's new `days` to the devices it allowed, on `conn` (in the policy
/// change's transaction): none are left at 0; with fewer days, each expires `days` after it
/// was remembered if that is sooner, and those past it now are forgotten. Returns how many
/// unexpired devices ended.
pub(crate) async fn apply_org_days<C: Run>(
    conn: &C,
    org_id: Uuid,
    days: i16,
    now: i64,
) -> Result<u64> {
    let live = || {
        Entity::find()
            .filter(Column::OrgId.eq(org_id))
            .filter(Column::ExpiresAt.gt(now))
    };
    if days <= 0 {
        let ended = live().count_on(conn).await?;
        Entity::delete_many()
            .filter(Column::OrgId.eq(org_id))
            .change_on(conn)
            .await?;
        return Ok(ended);
    }
    let capped = Expr::col(Column::CreatedAt).add(i64::from(days) * DAY);
    let ended = live()
        .filter(capped.clone().lte(now))
        .count_on(conn)
        .await?;
    Entity::update_many()
        .col_expr(Column::ExpiresAt, capped.clone())
        .filter(Column::OrgId.eq(org_id))
        .filter(Expr::col(Column::ExpiresAt).gt(capped))
        .change_on(conn)
        .await?;
    Entity::delete_many()
        .filter(Column::OrgId.eq(org_id))
        .filter(Column::ExpiresAt.lte(now))
        .change_on(conn)
        .await?;
    Ok(ended)
}
