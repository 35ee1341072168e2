//! Remembered devices: a device token (only its keyed hash is stored) that lets a user's
//! login in one organization skip the second factor until it expires or is revoked.

use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::audit::{NewAuditEvent, append_all_with};
use super::{ClientInfo, Page, page};
use crate::crypto::{HashPurpose, TokenHash};
use crate::entity::trusted_device::{ActiveModel, Column, Entity, Model};
use crate::run::{ChangeOn as _, Run, SelectOn as _, UpdateOn as _};
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
    /// For how many days (1 to [`MAX_TRUSTED_DEVICE_DAYS`]), as the login read its
    /// organization's policy; fewer if the policy has fewer now.
    pub days: i16,
    /// Created (Unix seconds).
    pub now: i64,
    /// Where the login that remembered it came from.
    pub client: ClientInfo<'a>,
    /// The user as the login that passed its second factor read them: a device is
    /// remembered only while they still are so.
    pub seen: SeenUser<'a>,
}

/// What a login read of the user, for a device to be remembered on: anything that ends
/// devices changes one of these (a password change the hash; a reset, a removal, a
/// replacement or a new factor the active factors or the factor generation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SeenUser<'a> {
    /// The password hash.
    pub password_hash: Option<&'a str>,
    /// The factor generation.
    pub factor_generation: i64,
    /// How many active factors the user had.
    pub active_factors: u64,
}

impl std::fmt::Debug for SeenUser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenUser")
            .field("factor_generation", &self.factor_generation)
            .field("active_factors", &self.active_factors)
            .finish_non_exhaustive()
    }
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
    /// its details made from the new device and its days, in one transaction; None, and
    /// nothing written, when what allowed it changed since the login read it: the
    /// organization turned remembering off, or the user is not as `new.seen` says (a password
    /// change, a reset, a factor removed or replaced). The user's and the organization's rows
    /// are read under a shared lock on PostgreSQL (SQLite writes one at a time), so a change
    /// that ends devices either commits first and is seen here, or waits for this device and
    /// ends it too. With fewer days in the policy now, the device gets those.
    pub async fn create(
        &self,
        token: &str,
        new: NewTrustedDevice<'_>,
        audit: NewAuditEvent<'_>,
        details: impl FnOnce(Uuid, i16) -> String + Send,
    ) -> Result<Option<Model>> {
        use crate::entity::{factor, organization, user};
        new.client.check()?;
        if !(1..=MAX_TRUSTED_DEVICE_DAYS).contains(&new.days) {
            return Err(StorageError::Invalid {
                field: "days",
                reason: "must be 1 to 90",
            });
        }
        let (_writing, txn) = self.storage.begin_write().await?;
        let postgres = self.storage.db().get_database_backend() == sea_orm::DbBackend::Postgres;
        let mut org = organization::Entity::find_by_id(new.org_id);
        let mut found = user::Entity::find_by_id(new.user_id);
        if postgres {
            org = org.lock_shared();
            found = found.lock_shared();
        }
        let days = match org.one(&txn).await? {
            Some(org) => Ord::min(org.trusted_device_days, new.days),
            None => 0,
        };
        let Some(found) = found.one(&txn).await? else {
            return Ok(None);
        };
        let active = factor::Entity::find()
            .filter(factor::Column::UserId.eq(new.user_id))
            .filter(factor::Column::Status.eq(crate::entity::enums::FactorStatus::Active))
            .count_on(&txn)
            .await?;
        let seen = SeenUser {
            password_hash: found.password_hash.as_deref(),
            factor_generation: found.factor_generation,
            active_factors: active,
        };
        if days <= 0 || seen != new.seen || active == 0 {
            return Ok(None);
        }
        let id = Uuid::now_v7();
        let model = ActiveModel {
            id: Set(id),
            token_hash: Set(self.hash(token).0.to_vec()),
            user_id: Set(new.user_id),
            org_id: Set(new.org_id),
            created_at: Set(new.now),
            expires_at: Set(new.now.saturating_add(i64::from(days) * DAY)),
            last_used_at: Set(None),
            client_ip: Set(new.client.ip.map(str::to_owned)),
            client_user_agent: Set(new.client.user_agent.map(str::to_owned)),
        };
        let details = details(id, days);
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
        Ok(Some(model))
    }

    /// Uses the device of `token` for a login of `user_id` in `org_id` at `now`: the device
    /// if it is theirs, for that organization, and not expired, with its last use recorded,
    /// in one statement (the check and the write cannot part). None otherwise (unknown,
    /// another user's or organization's, expired or ended): such a token counts as no token
    /// at all.
    pub async fn use_valid(
        &self,
        token: &str,
        user_id: Uuid,
        org_id: Uuid,
        now: i64,
    ) -> Result<Option<Model>> {
        let used = Entity::update_many()
            .col_expr(Column::LastUsedAt, Expr::value(Some(now)))
            .filter(Column::TokenHash.eq(self.hash(token).0.to_vec()))
            .filter(Column::UserId.eq(user_id))
            .filter(Column::OrgId.eq(org_id))
            .filter(Column::ExpiresAt.gt(now))
            .returning_on(&*self.storage.write().await)
            .await?;
        Ok(used.into_iter().next())
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

    /// Forgets one of the user's unexpired devices and appends the event `audit` makes of
    /// it, in one transaction. Returns whether there was one; nothing is recorded otherwise.
    pub async fn revoke<'e>(
        &self,
        user_id: Uuid,
        id: Uuid,
        now: i64,
        audit: impl FnOnce(&Model) -> NewAuditEvent<'e> + Send,
    ) -> Result<bool> {
        let (_writing, txn) = self.storage.begin_write().await?;
        let removed = Entity::delete_many()
            .filter(Column::Id.eq(id))
            .filter(Column::UserId.eq(user_id))
            .filter(Column::ExpiresAt.gt(now))
            .exec_with_returning(&txn)
            .await?;
        let [device] = removed.as_slice() else {
            return Ok(false);
        };
        append_all_with(&txn, &[audit(device)]).await?;
        txn.commit().await?;
        Ok(true)
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
