//! User accounts.

use super::audit::{AuditOf, append_with};
use sea_orm::sea_query::{
    Condition, Expr, ExprTrait as _, JoinType, Order, Query, SimpleExpr, SubQueryStatement,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IdenStatic as _, Iterable as _,
    QueryFilter, QuerySelect, QueryTrait,
};
use uuid::Uuid;

use crate::entity::enums::{FactorKind, UserStatus};
use crate::entity::user::{ActiveModel, Column, Entity, Model};
use crate::entity::{factor, organization, recovery_code};
use crate::run::{ChangeOn as _, InsertOn as _, Run as _, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// What a login decision needs to know of a user's second factors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MfaSummary {
    /// Active authenticator apps.
    pub totp: u32,
    /// Active counter-based tokens.
    pub hotp: u32,
    /// Active SMS phones.
    pub sms: u32,
    /// Active passkeys and security keys.
    pub webauthn: u32,
    /// Unused recovery codes.
    pub recovery_codes_left: u64,
}

/// The organizations [`Users::get_with_mfa`] reads with the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrganizationsToRead {
    /// None.
    None,
    /// Every organization the user belongs to (a login chooses among them).
    Memberships,
    /// This one, if it exists (the organization a login challenge names).
    Only(Uuid),
}

/// The prefix of the organizations' columns in a row that also holds the user.
const ORGANIZATION: &str = "organization__";

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

/// The row of a new user, once the email is checked.
fn new_user(email: &str, password_hash: Option<String>, now: i64) -> Result<ActiveModel> {
    let email = email.trim();
    check_email(email)?;
    Ok(ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.to_owned()),
        email_normalized: Set(normalize_email(email)),
        password_hash: Set(password_hash),
        status: Set(UserStatus::Active),
        must_reenroll: Set(false),
        factor_generation: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    })
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

    /// Creates a user, without an audit event (fixtures and imports; the API uses
    /// [`Users::create_with`]). Emails are unique ignoring case: a second `Alice@x` after
    /// `alice@x` is a [`StorageError::Conflict`]. `password_hash` is an argon2id PHC string,
    /// or `None` for SSO and magic-link accounts.
    pub async fn create(
        &self,
        email: &str,
        password_hash: Option<String>,
        now: i64,
    ) -> Result<Model> {
        Entity::insert(new_user(email, password_hash, now)?)
            .insert_on(&*self.storage.write().await)
            .await
            .map_err(|e| StorageError::from_insert(e, "user"))
    }

    /// [`Users::create`] with the audit event that records it (`audit`, about the new user),
    /// in one transaction: a user the API creates is never left unrecorded, and an event the
    /// log refuses creates no user.
    pub async fn create_with(
        &self,
        email: &str,
        password_hash: Option<String>,
        now: i64,
        audit: AuditOf<'_>,
    ) -> Result<Model> {
        let row = new_user(email, password_hash, now)?;
        let (_writing, txn) = self.storage.begin_write().await?;
        let model = row
            .insert(&txn)
            .await
            .map_err(|e| StorageError::from_insert(e, "user"))?;
        append_with(&txn, audit.event(now, None, Some(model.id), "{}")).await?;
        txn.commit().await?;
        Ok(model)
    }

    /// The user, if they exist.
    pub async fn get(&self, id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id)
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// The user with a summary of their second factors and the `organizations` asked for
    /// (ordered by id), in one query: a login decides between a session, a second factor and
    /// an enrollment on these.
    pub async fn get_with_mfa(
        &self,
        id: Uuid,
        organizations: OrganizationsToRead,
    ) -> Result<Option<(Model, MfaSummary, Vec<organization::Model>)>> {
        fn count(from: impl sea_orm::sea_query::IntoTableRef, filter: Condition) -> SimpleExpr {
            Expr::from(SubQueryStatement::from(
                Query::select()
                    .expr(Expr::cust("COUNT(*)"))
                    .from(from)
                    .cond_where(filter)
                    .to_owned(),
            ))
        }
        let active = |kind: FactorKind| {
            count(
                factor::Entity,
                super::factors::active_of(id).add(factor::Column::Kind.eq(kind)),
            )
        };
        let mut query = Entity::find_by_id(id)
            .column_as(active(FactorKind::Totp), "mfa_totp")
            .column_as(active(FactorKind::Hotp), "mfa_hotp")
            .column_as(active(FactorKind::Sms), "mfa_sms")
            .column_as(active(FactorKind::Webauthn), "mfa_webauthn")
            .column_as(
                count(recovery_code::Entity, super::recovery_codes::unused_of(id)),
                "mfa_recovery",
            )
            .into_query();
        // The organizations ride along, one per row (a LEFT JOIN: a user without any still
        // has their row).
        let organization_id = Expr::col((organization::Entity, organization::Column::Id));
        let joined = match organizations {
            OrganizationsToRead::None => None,
            OrganizationsToRead::Memberships => {
                Some(organization_id.in_subquery(super::memberships::organization_ids_of(id)))
            }
            OrganizationsToRead::Only(org) => Some(organization_id.eq(org)),
        };
        let with_organizations = joined.is_some();
        if let Some(on) = joined {
            query.join(JoinType::LeftJoin, organization::Entity, on);
            for column in organization::Column::iter() {
                query.expr_as(
                    Expr::col((organization::Entity, column)),
                    format!("{ORGANIZATION}{}", column.as_str()),
                );
            }
            query.order_by((organization::Entity, organization::Column::Id), Order::Asc);
        }
        let reads = self.storage.reads();
        let rows = reads.rows(reads.backend().build(&query)).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut joined = Vec::new();
        if with_organizations {
            for row in &rows {
                // A user without a matching organization still has their row, its columns
                // NULL.
                if row
                    .get::<Option<Uuid>>(&format!("{ORGANIZATION}id"))?
                    .is_some()
                {
                    joined.push(row.model::<organization::Entity>(ORGANIZATION)?);
                }
            }
        }
        let number = |column: &str| -> Result<u64> {
            Ok(u64::try_from(row.get::<i64>(column)?).unwrap_or(0))
        };
        let small = |column: &str| -> Result<u32> {
            Ok(u32::try_from(number(column)?).unwrap_or(u32::MAX))
        };
        let summary = MfaSummary {
            totp: small("mfa_totp")?,
            hotp: small("mfa_hotp")?,
            sms: small("mfa_sms")?,
            webauthn: small("mfa_webauthn")?,
            recovery_codes_left: number("mfa_recovery")?,
        };
        Ok(Some((row.model::<Entity>("")?, summary, joined)))
    }

    /// The user with this email, ignoring case.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::EmailNormalized.eq(normalize_email(email)))
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// Sets (or replaces) the password hash, revokes the user's live sessions but `keep`
    /// (all of them without) and forgets their remembered devices, and appends the `audit`
    /// event that records it (subject: the user; details:
    /// `{"sessions_revoked": n, "trusted_devices_revoked": m}`), in one transaction. Returns how many
    /// sessions it revoked. An unknown user is [`StorageError::NotFound`], and nothing is
    /// written.
    pub async fn set_password_hash(
        &self,
        id: Uuid,
        hash: String,
        keep: Option<Uuid>,
        audit: AuditOf<'_>,
        now: i64,
    ) -> Result<u64> {
        let (_writing, txn) = self.storage.begin_write().await?;
        let result = Entity::update_many()
            .col_expr(Column::PasswordHash, Expr::value(Some(hash)))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Id.eq(id))
            .exec(&txn)
            .await?;
        found(result.rows_affected)?;
        let revoked = super::sessions::revoke_of_user(&txn, id, keep, now).await?;
        let devices = super::trusted_devices::revoke_of_user(&txn, id, now).await?;
        let details =
            format!("{{\"sessions_revoked\": {revoked}, \"trusted_devices_revoked\": {devices}}}");
        append_with(&txn, audit.event(now, None, Some(id), &details)).await?;
        txn.commit().await?;
        Ok(revoked)
    }

    /// Sets whether the user must set up 2FA again before their next session.
    pub async fn set_must_reenroll(&self, id: Uuid, value: bool, now: i64) -> Result<()> {
        let result = Entity::update_many()
            .col_expr(Column::MustReenroll, Expr::value(value))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::Id.eq(id))
            .change_on(&*self.storage.write().await)
            .await?;
        found(result)
    }
}

fn found(rows: u64) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StorageError::NotFound("user"))
    }
}
