//! Login challenges: the state between the password step and the second factor (or the
//! enrollment a login requires), found by the keyed hash of their token.

use sea_orm::sea_query::Expr;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::crypto::{HashPurpose, TokenHash};
use crate::entity::enums::ChallengePurpose;
use crate::entity::login_challenge::{ActiveModel, Column, Entity, Model};
use crate::run::{ChangeOn as _, InsertOn as _, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// Login challenges.
#[derive(Debug)]
pub struct Challenges<'a> {
    storage: &'a Storage,
}

impl<'a> Challenges<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    fn hash(&self, token: &str) -> TokenHash {
        self.storage
            .hasher()
            .hash(HashPurpose::ChallengeToken, &[token.as_bytes()])
    }

    /// Stores a challenge for `token` (only its keyed hash is kept).
    #[allow(
        clippy::too_many_arguments,
        reason = "a challenge's columns, each named"
    )]
    pub async fn create(
        &self,
        token: &str,
        user_id: Uuid,
        org_id: Option<Uuid>,
        purpose: ChallengePurpose,
        now: i64,
        expires_at: i64,
        factor_generation: Option<i64>,
        client: super::ClientInfo<'_>,
    ) -> Result<Model> {
        client.check()?;
        let model = ActiveModel {
            id: Set(Uuid::now_v7()),
            token_hash: Set(self.hash(token).0.to_vec()),
            user_id: Set(user_id),
            org_id: Set(org_id),
            purpose: Set(purpose),
            expires_at: Set(expires_at),
            attempts: Set(0),
            consumed_at: Set(None),
            created_at: Set(now),
            factor_generation: Set(factor_generation),
            client_ip: Set(client.ip.map(str::to_owned)),
            client_user_agent: Set(client.user_agent.map(str::to_owned)),
        };
        Entity::insert(model)
            .insert_on(&*self.storage.write().await)
            .await
            .map_err(|e| StorageError::from_insert(e, "challenge"))
    }

    /// The challenge for `token` if it is unused and unexpired at `now`.
    pub async fn find_active(&self, token: &str, now: i64) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::TokenHash.eq(self.hash(token).0.to_vec()))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// Takes one attempt from the challenge's budget of `max`, *before* the code is checked:
    /// false when the challenge is used up, expired or out of attempts. One conditional
    /// UPDATE, so however many guesses arrive at once, at most `max` are ever checked.
    pub async fn take_attempt(&self, id: Uuid, max: i32, now: i64) -> Result<bool> {
        let result = Entity::update_many()
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .filter(Column::Id.eq(id))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .filter(Column::Attempts.lt(max))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(result == 1)
    }

    /// Uses the challenge: returns it for exactly one caller, however many present the same
    /// token at once; `None` if it is unknown, used or expired.
    pub async fn consume(&self, token: &str, now: i64) -> Result<Option<Model>> {
        let hash = self.hash(token).0.to_vec();
        let result = Entity::update_many()
            .col_expr(Column::ConsumedAt, Expr::value(Some(now)))
            .filter(Column::TokenHash.eq(hash.clone()))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .change_on(&*self.storage.write().await)
            .await?;
        if result != 1 {
            return Ok(None);
        }
        Ok(Entity::find()
            .filter(Column::TokenHash.eq(hash))
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// The challenge with this id if it is unused and unexpired at `now`.
    pub async fn find_active_by_id(&self, id: Uuid, now: i64) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id)
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// Uses the challenge with this id: true for exactly one caller.
    pub async fn consume_by_id(&self, id: Uuid, now: i64) -> Result<bool> {
        let result = Entity::update_many()
            .col_expr(Column::ConsumedAt, Expr::value(Some(now)))
            .filter(Column::Id.eq(id))
            .filter(Column::ConsumedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(result == 1)
    }

    /// Deletes challenges that expired before `now`. Returns how many.
    pub async fn delete_expired(&self, now: i64) -> Result<u64> {
        Ok(Entity::delete_many()
            .filter(Column::ExpiresAt.lte(now))
            .change_on(&*self.storage.write_on_pool().await)
            .await?)
    }
}
