//! Sessions, found by the keyed hash of their token.

use std::sync::Arc;

use sea_orm::sea_query::{Condition, Expr, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::audit::{NewAuditEvent, append_all_with};
use super::{Page, page};
use crate::batched::Batched;
use crate::crypto::{HashPurpose, TokenHash};
use crate::entity::session::{ActiveModel, Column, Entity, Model};
use crate::entity::{attempt_counter, factor, membership};
use crate::held::Held;
use crate::run::{ChangeOn as _, InsertOn as _, Row, Run, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// What makes a session valid ([`Sessions::find_valid`]), given the SQL of the token's hash
/// and of now: by default `$1` and `$2`.
macro_rules! valid_session {
    () => {
        valid_session!("$1", "$2")
    };
    ($hash:literal, $now:literal) => {
        concat!(
            "sessions.token_hash = ",
            $hash,
            " AND sessions.revoked_at IS NULL
  AND sessions.expires_at > ",
            $now,
            " AND sessions.idle_expires_at > ",
            $now,
            "
  AND (sessions.assurance >= 2 OR sessions.org_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM organizations WHERE organizations.id = sessions.org_id
        AND organizations.mfa_required))"
        )
    };
}

/// A session's columns, as [`Model`] reads them.
macro_rules! session_columns {
    () => {
        "id, token_hash, user_id, org_id, assurance, created_at, last_seen_at,
       idle_expires_at, expires_at, revoked_at, client_ip, client_user_agent, trusted_device_id"
    };
}

/// [`Sessions::find_valid`]'s query, the same on SQLite and PostgreSQL (SQLite numbers `$1`
/// and `$2` by their first use): $1 the token's hash, $2 now.
const FIND_VALID: &str = concat!(
    "SELECT ",
    session_columns!(),
    "
FROM sessions WHERE ",
    valid_session!()
);

/// [`FIND_VALID`] for many validations at once on PostgreSQL ([`crate::batched`]): $1 the
/// tokens' hashes, $2 each one's now (arrays of the same length). Each row names in `wanted`
/// which of them it answers (from 1), so a token wanted twice has a row for each.
const FIND_VALID_BATCH: &str = concat!(
    "SELECT wanted.i AS wanted, ",
    session_columns!(),
    "
FROM unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS wanted(hash, at, i), sessions
WHERE ",
    valid_session!("wanted.hash", "wanted.at")
);

/// [`Sessions::find_valid_with_factors`]'s query, given how the engine spells the user's
/// second-factor counter key ([`super::second_factor_counter`]): one row per active factor
/// (its columns unprefixed, NULL when there is none), each with the session (`s_`) and the
/// counter (`counter_`).
macro_rules! valid_with_factors {
    ($counter_key:literal) => {
        valid_with_factors!($counter_key, "", "sessions", "$1", "$2")
    };
    // With the columns before the factor's (`$wanted`), the tables before `sessions`'
    // joins (`$from`), and the SQL of the token's hash and of now.
    ($counter_key:literal, $wanted:literal, $from:literal, $hash:literal, $now:literal) => {
        concat!(
            "SELECT ",
            $wanted,
            "factors.*, sessions.id AS s_id, sessions.token_hash AS s_token_hash,
       sessions.user_id AS s_user_id, sessions.org_id AS s_org_id,
       sessions.assurance AS s_assurance, sessions.created_at AS s_created_at,
       sessions.last_seen_at AS s_last_seen_at, sessions.idle_expires_at AS s_idle_expires_at,
       sessions.expires_at AS s_expires_at, sessions.revoked_at AS s_revoked_at,
       sessions.client_ip AS s_client_ip, sessions.client_user_agent AS s_client_user_agent,
       sessions.trusted_device_id AS s_trusted_device_id,
       attempt_counters.failures AS counter_failures,
       attempt_counters.locked_until AS counter_locked_until,
       attempt_counters.updated_at AS counter_updated_at
FROM ",
            $from,
            "
LEFT JOIN factors ON factors.user_id = sessions.user_id AND factors.status = 'active'
LEFT JOIN attempt_counters ON attempt_counters.key = ",
            $counter_key,
            "
WHERE ",
            valid_session!($hash, $now),
            "
ORDER BY factors.id"
        )
    };
}

/// [`valid_with_factors`] on PostgreSQL, where a UUID's text is the key's form.
macro_rules! valid_with_factors_postgres {
    ($($rest:literal),*) => {
        valid_with_factors!("'mfa:' || CAST(sessions.user_id AS TEXT)", $($rest),*)
    };
}

/// [`valid_with_factors`] on PostgreSQL.
const VALID_WITH_FACTORS_POSTGRES: &str = valid_with_factors_postgres!("", "sessions", "$1", "$2");

/// [`VALID_WITH_FACTORS_POSTGRES`] for many step-ups at once ([`crate::batched`]), as
/// [`FIND_VALID_BATCH`] is for validations.
const VALID_WITH_FACTORS_BATCH: &str = valid_with_factors_postgres!(
    "wanted.i AS wanted, ",
    "unnest($1::bytea[], $2::int8[]) WITH ORDINALITY AS wanted(hash, at, i), sessions",
    "wanted.hash",
    "wanted.at"
);

/// [`valid_with_factors`] on SQLite, where a UUID is stored as its 16 bytes: their hex,
/// lowercase and hyphenated.
const VALID_WITH_FACTORS_SQLITE: &str = valid_with_factors!(
    "'mfa:' || lower(substr(hex(sessions.user_id), 1, 8) || '-'
  || substr(hex(sessions.user_id), 9, 4) || '-' || substr(hex(sessions.user_id), 13, 4) || '-'
  || substr(hex(sessions.user_id), 17, 4) || '-' || substr(hex(sessions.user_id), 21, 12))"
);

/// The reads of valid sessions on PostgreSQL, each run together for the calls that make it
/// at the same time ([`crate::batched`]).
#[derive(Debug)]
pub(crate) struct BatchedReads {
    /// [`Sessions::find_valid`]'s.
    valid: Batched,
    /// [`Sessions::find_valid_with_factors`]'s.
    with_factors: Batched,
}

impl BatchedReads {
    /// Starts both on `held`'s connections.
    pub(crate) fn spawn(held: &Arc<Held>) -> Self {
        Self {
            valid: Batched::spawn(Arc::clone(held), FIND_VALID_BATCH),
            with_factors: Batched::spawn(Arc::clone(held), VALID_WITH_FACTORS_BATCH),
        }
    }
}

/// A valid session with its user's active factors and their second-factor failure counter:
/// what a step-up reads before it compares a code ([`Sessions::find_valid_with_factors`]).
#[derive(Clone, Debug)]
pub struct SessionFactors {
    /// The session.
    pub session: Model,
    /// The user's active factors, oldest first.
    pub factors: Vec<factor::Model>,
    /// The user's second-factor failure counter, if it exists.
    pub counter: Option<attempt_counter::Model>,
}

/// What a new session needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// The user.
    pub user_id: Uuid,
    /// The organization the login named.
    pub org_id: Option<Uuid>,
    /// 1 or 2.
    pub assurance: i16,
    /// Created (Unix seconds).
    pub now: i64,
    /// Seconds of inactivity after which it expires.
    pub idle_ttl: i64,
    /// Seconds after which it expires whatever happens.
    pub absolute_ttl: i64,
    /// Where its login came from.
    pub client: super::ClientInfo<'a>,
    /// The remembered device the login skipped its second factor with (assurance 2).
    pub trusted_device_id: Option<Uuid>,
}

/// Sessions.
#[derive(Debug)]
pub struct Sessions<'a> {
    storage: &'a Storage,
}

impl<'a> Sessions<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    fn hash(&self, token: &str) -> TokenHash {
        self.storage
            .hasher()
            .hash(HashPurpose::SessionToken, &[token.as_bytes()])
    }

    /// Stores a session for `token` (only its keyed hash is kept).
    pub async fn create(&self, token: &str, new: NewSession<'_>) -> Result<Model> {
        new.client.check()?;
        if !(1..=2).contains(&new.assurance) {
            return Err(StorageError::Invalid {
                field: "assurance",
                reason: "must be 1 or 2",
            });
        }
        let expires_at = new.now.saturating_add(new.absolute_ttl);
        let model = ActiveModel {
            id: Set(Uuid::now_v7()),
            token_hash: Set(self.hash(token).0.to_vec()),
            user_id: Set(new.user_id),
            org_id: Set(new.org_id),
            assurance: Set(new.assurance),
            created_at: Set(new.now),
            last_seen_at: Set(new.now),
            idle_expires_at: Set(Ord::min(new.now.saturating_add(new.idle_ttl), expires_at)),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            client_ip: Set(new.client.ip.map(str::to_owned)),
            client_user_agent: Set(new.client.user_agent.map(str::to_owned)),
            trusted_device_id: Set(new.trusted_device_id),
        };
        Entity::insert(model)
            .insert_on(&*self.storage.write().await)
            .await
            .map_err(|e| match e.sql_err() {
                Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                    StorageError::NotFound("user")
                }
                _ => StorageError::from_insert(e, "session"),
            })
    }

    /// The session for `token`, whatever its state.
    pub async fn find(&self, token: &str) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::TokenHash.eq(self.hash(token).0.to_vec()))
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// The session for `token` if it is neither revoked nor expired (idle or absolute), and
    /// not a single-factor session of an organization that requires 2FA. That last rule
    /// closes the race between a login that read the old policy and the revocation that
    /// comes with turning 2FA on: whichever commits first, such a session is never valid.
    /// One read, by two unique keys (the token's hash, and the organization's id), its SQL a
    /// constant: [`FIND_VALID`] on SQLite; on PostgreSQL [`FIND_VALID_BATCH`], which reads
    /// the validations that come together in one statement ([`crate::batched`]).
    pub async fn find_valid(&self, token: &str, now: i64) -> Result<Option<Model>> {
        let hash = self.hash(token).0.to_vec();
        let row = if let Some(batched) = self.storage.session_reads.as_deref() {
            let rows = batched.valid.rows(hash, now).await?;
            rows.into_iter().next().map(|row| Row::Pool(row.into()))
        } else {
            let stmt = sea_orm::Statement::from_sql_and_values(
                self.storage.db().get_database_backend(),
                FIND_VALID,
                [hash.into(), now.into()],
            );
            self.storage.reads().row(stmt).await?
        };
        match row {
            Some(row) => Ok(Some(row.model::<Entity>("")?)),
            None => Ok(None),
        }
    }

    /// [`Sessions::find_valid`] with the user's active factors and their second-factor
    /// failure counter ([`super::second_factor_counter`]), in one query: a step-up's only
    /// read (two before, and on PostgreSQL each a round trip and the pool's ping).
    pub async fn find_valid_with_factors(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<SessionFactors>> {
        let hash = self.hash(token).0.to_vec();
        let rows = if let Some(batched) = self.storage.session_reads.as_deref() {
            let rows = batched.with_factors.rows(hash, now).await?;
            rows.into_iter().map(|row| Row::Pool(row.into())).collect()
        } else {
            let backend = self.storage.db().get_database_backend();
            let sql = match backend {
                sea_orm::DbBackend::Postgres => VALID_WITH_FACTORS_POSTGRES,
                _ => VALID_WITH_FACTORS_SQLITE,
            };
            let stmt =
                sea_orm::Statement::from_sql_and_values(backend, sql, [hash.into(), now.into()]);
            self.storage.reads().rows(stmt).await?
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let session = first.model::<Entity>("s_")?;
        let counter = match first.get::<Option<i64>>("counter_failures")? {
            Some(failures) => Some(attempt_counter::Model {
                key: super::second_factor_counter(session.user_id),
                failures,
                locked_until: first.get("counter_locked_until")?,
                updated_at: first
                    .get::<Option<i64>>("counter_updated_at")?
                    .unwrap_or_default(),
            }),
            None => None,
        };
        let mut factors = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.get::<Option<Uuid>>("id")?.is_some() {
                factors.push(row.model::<factor::Entity>("")?);
            }
        }
        Ok(Some(SessionFactors {
            session,
            factors,
            counter,
        }))
    }

    /// Records use of a valid session at `now`: its idle expiry moves to `now + idle_ttl`,
    /// never past its absolute expiry. One statement, by the primary key. NotFound when the
    /// session was revoked or expired since it was read: an expired one is never revived.
    pub async fn touch(&self, id: Uuid, now: i64, idle_ttl: i64) -> Result<()> {
        let idle = now.saturating_add(idle_ttl);
        let result = Entity::update_many()
            .col_expr(Column::LastSeenAt, Expr::value(now))
            .col_expr(
                Column::IdleExpiresAt,
                Expr::case(Column::ExpiresAt.lt(idle), Expr::col(Column::ExpiresAt))
                    .finally(idle)
                    .into(),
            )
            .filter(Column::Id.eq(id))
            .filter(Column::RevokedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .filter(Column::IdleExpiresAt.gt(now))
            .change_on(&*self.storage.write().await)
            .await?;
        if result == 1 {
            Ok(())
        } else {
            Err(StorageError::NotFound("live session"))
        }
    }

    /// A step-up proved otherwise than by an app or token code (which
    /// [`crate::repo::Factors::accept_code`] records): raises the session to assurance 2 when
    /// `raise` and appends `audit`, in one transaction. False, and nothing written, when the
    /// session was to be raised and is no longer live.
    pub async fn step_up(
        &self,
        id: Uuid,
        raise: bool,
        now: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<bool> {
        let (_writing, txn) = self.storage.begin_write().await?;
        if raise && txn.change(raise_statement(id, now, txn.backend())).await? != 1 {
            return Ok(false);
        }
        append_all_with(&txn, audit).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Revokes one session and appends `audit`, the events that record it, in one
    /// transaction. Returns whether it was live: a session already revoked records nothing
    /// again, and an event the log refuses leaves the session live.
    pub async fn revoke(&self, id: Uuid, now: i64, audit: &[NewAuditEvent<'_>]) -> Result<bool> {
        let (_writing, txn) = self.storage.begin_write().await?;
        let result = Entity::update_many()
            .col_expr(Column::RevokedAt, Expr::value(Some(now)))
            .filter(Column::Id.eq(id))
            .filter(Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let revoked = result.rows_affected == 1;
        if revoked {
            append_all_with(&txn, audit).await?;
        }
        txn.commit().await?;
        Ok(revoked)
    }

    /// The user's active sessions (neither revoked nor expired at `now`), newest first, only
    /// those of organization `org` when given, a page of at most `limit` (1 to 1,000) after
    /// the session `before` (the last of the previous page).
    pub async fn list_active(
        &self,
        user_id: Uuid,
        org: Option<Uuid>,
        now: i64,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Page<Model, Uuid>> {
        let mut query = Entity::find()
            .filter(Column::UserId.eq(user_id))
            .filter(Column::RevokedAt.is_null())
            .filter(Column::ExpiresAt.gt(now))
            .filter(Column::IdleExpiresAt.gt(now));
        if let Some(org) = org {
            query = query.filter(Column::OrgId.eq(org));
        }
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

    /// Revokes every live session of a user but `keep`, and appends the event `audit` makes
    /// of how many, in one transaction. Returns how many.
    pub async fn revoke_others(
        &self,
        user_id: Uuid,
        keep: Uuid,
        now: i64,
        audit: impl FnOnce(&str) -> NewAuditEvent<'_>,
    ) -> Result<u64> {
        let (_writing, txn) = self.storage.begin_write().await?;
        let revoked = revoke_of_user(&txn, user_id, Some(keep), now).await?;
        let details = format!("{{\"sessions_revoked\": {revoked}}}");
        append_all_with(&txn, &[audit(&details)]).await?;
        txn.commit().await?;
        Ok(revoked)
    }

    /// Revokes every live session of a user. Returns how many.
    pub async fn revoke_all_of_user(&self, user_id: Uuid, now: i64) -> Result<u64> {
        revoke_of_user(&*self.storage.write().await, user_id, None, now).await
    }

    /// Revokes every live session below `assurance` that the organization's policy governs
    /// (when 2FA becomes required: those not established with a second factor): sessions of
    /// the organization, and its members' sessions that name no organization. A member's
    /// session for another organization follows that one's policy. Returns how many.
    pub async fn revoke_org_below(&self, org_id: Uuid, assurance: i16, now: i64) -> Result<u64> {
        revoke_org_below(&*self.storage.write_on_pool().await, org_id, assurance, now).await
    }
}

/// [`raise_statement`]'s SQL, the same on SQLite and PostgreSQL (SQLite numbers `$1` and
/// `$2` by their first use): $1 the session, $2 now.
const RAISE: &str = "\
UPDATE sessions SET assurance = 2, trusted_device_id = NULL
WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2 AND idle_expires_at > $2";

/// Raises a live session to assurance 2 with a factor (one at 2 stays so, and counts as
/// raised; one a remembered device let in is now proven by a factor).
pub(crate) fn raise_statement(
    id: Uuid,
    now: i64,
    backend: sea_orm::DbBackend,
) -> sea_orm::Statement {
    sea_orm::Statement::from_sql_and_values(backend, RAISE, [id.into(), now.into()])
}

/// Revokes every live session of a user, but `keep` if given, on `conn`. Returns how many.
pub(crate) async fn revoke_of_user<C: Run>(
    conn: &C,
    user_id: Uuid,
    keep: Option<Uuid>,
    now: i64,
) -> Result<u64> {
    let mut update = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(Some(now)))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(Column::Id.ne(keep));
    }
    Ok(update.change_on(conn).await?)
}

/// [`Sessions::revoke_org_below`] on `conn`.
pub(crate) async fn revoke_org_below<C: Run>(
    conn: &C,
    org_id: Uuid,
    assurance: i16,
    now: i64,
) -> Result<u64> {
    let members = Query::select()
        .column(membership::Column::UserId)
        .from(membership::Entity)
        .and_where(membership::Column::OrgId.eq(org_id))
        .to_owned();
    let result = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(Some(now)))
        .filter(
            Condition::any().add(Column::OrgId.eq(org_id)).add(
                Condition::all()
                    .add(Column::OrgId.is_null())
                    .add(Column::UserId.in_subquery(members)),
            ),
        )
        .filter(Column::Assurance.lt(assurance))
        .filter(Column::RevokedAt.is_null())
        .change_on(conn)
        .await?;
    Ok(result)
}
