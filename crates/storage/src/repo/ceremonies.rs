//! WebAuthn ceremonies: created with their state, used once by one conditional UPDATE (so an
//! assertion raced to two replicas is accepted once), deleted once expired.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::entity::enums::CeremonyPurpose;
use crate::entity::webauthn_ceremony::{ActiveModel, Column, Entity, Model};
use crate::run::{ChangeOn as _, InsertOn as _};
use crate::{Result, Storage, StorageError};

/// A ceremony to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCeremony<'a> {
    /// The challenge (base64url).
    pub challenge: &'a str,
    /// What it is for.
    pub purpose: CeremonyPurpose,
    /// The user, if one is named.
    pub user_id: Option<Uuid>,
    /// The organization of the login.
    pub org_id: Option<Uuid>,
    /// The pending factor of a registration.
    pub factor_id: Option<Uuid>,
    /// The login challenge an assertion serves.
    pub login_challenge_id: Option<Uuid>,
    /// The session an assertion serves.
    pub session_id: Option<Uuid>,
    /// webauthn-rs's state, JSON.
    pub state: &'a str,
}

/// WebAuthn ceremonies.
#[derive(Debug)]
pub struct Ceremonies<'a> {
    storage: &'a Storage,
}

impl<'a> Ceremonies<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Creates a ceremony that expires at `expires_at`.
    pub async fn create(&self, new: NewCeremony<'_>, now: i64, expires_at: i64) -> Result<Model> {
        Entity::insert(ActiveModel {
            id: Set(Uuid::now_v7()),
            challenge: Set(new.challenge.to_owned()),
            purpose: Set(new.purpose),
            user_id: Set(new.user_id),
            org_id: Set(new.org_id),
            factor_id: Set(new.factor_id),
            login_challenge_id: Set(new.login_challenge_id),
            session_id: Set(new.session_id),
            state: Set(new.state.to_owned()),
            expires_at: Set(expires_at),
            consumed_at: Set(None),
            created_at: Set(now),
        })
        .insert_on(&*self.storage.write().await)
        .await
        .map_err(|e| StorageError::from_insert(e, "ceremony"))
    }

    /// The unexpired, unused ceremony of `challenge`, to verify a response against before
    /// [`Ceremonies::take`] uses it up.
    pub async fn find_open(&self, challenge: &str, now: i64) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::Challenge.eq(challenge))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .one(self.storage.db())
            .await?)
    }

    /// Uses the unexpired, unused ceremony of `challenge`: for exactly one caller, however
    /// many present the same response at once, on however many replicas. None when it is
    /// unknown, used or expired.
    pub async fn take(&self, challenge: &str, now: i64) -> Result<Option<Model>> {
        let taken = Entity::update_many()
            .col_expr(Column::ConsumedAt, Expr::value(Some(now)))
            .filter(Column::Challenge.eq(challenge))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .change_on(&*self.storage.write().await)
            .await?
            == 1;
        if !taken {
            return Ok(None);
        }
        Ok(Entity::find()
            .filter(Column::Challenge.eq(challenge))
            .one(self.storage.db())
            .await?)
    }

    /// Deletes ceremonies that expired before `now`. Returns how many.
    pub async fn delete_expired(&self, now: i64) -> Result<u64> {
        Ok(Entity::delete_many()
            .filter(Column::ExpiresAt.lte(now))
            .change_on(&*self.storage.write_on_pool().await)
            .await?)
    }
}
