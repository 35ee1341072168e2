//! Second factors: creation with the seed sealed, activation with recovery codes in one
//! transaction, the replay guard, removal, and key rotation.

use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::{AuditOf, NewAuditEvent, append_all_with, append_with};
use super::recovery_codes::insert_codes;
use crate::entity::enums::{FactorKind, FactorStatus};
use crate::entity::factor::{ActiveModel, Column, Entity, Model};
use crate::entity::{attempt_counter, recovery_code};
use crate::run::{ChangeOn as _, InsertOn as _, Run as _, SelectOn as _};
use crate::{Result, Storage, StorageError};

/// The user's active factors: what logins, checks and a login's summary read.
pub(crate) fn active_of(user_id: Uuid) -> Condition {
    Condition::all()
        .add(Column::UserId.eq(user_id))
        .add(Column::Status.eq(FactorStatus::Active))
}

/// What changes with an activation, in its transaction ([`Factors::activate_with`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Activation<'a> {
    /// The user's recovery codes, replaced by these (with the first factor, or when none
    /// are left).
    pub recovery_codes: Option<&'a [&'a str]>,
    /// An active factor of the same user, removed (a change of method).
    pub replaces: Option<Uuid>,
    /// Active factors of the same user retired by a re-enrollment (the lost device's, after
    /// the last recovery code was used), removed with it; any already gone is passed over.
    pub retires: &'a [Uuid],
    /// A WebAuthn factor's credential: its id (unique across users: a second registration
    /// of it is [`StorageError::Conflict`]) and the credential's JSON.
    pub credential: Option<(&'a [u8], &'a str)>,
    /// The events that record the change (appended in its transaction).
    pub audit: &'a [NewAuditEvent<'a>],
}

/// Which of the user's sessions a 2FA reset revokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionsToRevoke {
    /// None.
    None,
    /// Every one.
    All,
    /// Every one but this (the session the user reset from).
    AllExcept(Uuid),
}

/// What [`Factors::reset`] does besides removing the factors and recovery codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetPlan {
    /// The organization the audit event names.
    pub org_id: Option<Uuid>,
    /// Set the user's `must_reenroll`.
    pub must_reenroll: bool,
    /// Which sessions to revoke.
    pub revoke: SessionsToRevoke,
}

/// What [`Factors::reset`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MfaReset {
    /// How many factors (pending ones included) were removed.
    pub factors_removed: u64,
    /// How many recovery codes were removed.
    pub recovery_codes_removed: u64,
    /// How many sessions were revoked.
    pub sessions_revoked: u64,
    /// How many remembered devices were forgotten (unexpired ones).
    pub trusted_devices_revoked: u64,
}

/// An app or token code accepted for a factor, and what is written with it.
#[derive(Clone, Copy, Debug)]
pub struct Acceptance<'e> {
    /// The factor whose code matched.
    pub factor_id: Uuid,
    /// The time step (TOTP) or counter (HOTP) it matched: accepted only beyond the factor's
    /// last one (the replay guard).
    pub step: i64,
    /// Now (Unix seconds).
    pub now: i64,
    /// The failure counter whose lockout, while in force, refuses the code.
    pub lock_key: &'e str,
    /// A session raised to assurance 2 with it, if live (a step-up).
    pub raise: Option<Uuid>,
    /// The event that records it.
    pub audit: Option<NewAuditEvent<'e>>,
}

/// What [`Factors::accept_code`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The code was accepted (its step recorded, the event appended).
    pub accepted: bool,
    /// The session given was raised (false when it was not live, or none was given).
    pub raised: bool,
}

/// [`Factors::accept_code`] on PostgreSQL: the replay guard's update, the session's raise
/// and the event in one statement, so one round trip and one commit. Parameters: $1 step,
/// $2 now, $3 factor, $4 failure counter key, $5 session (or NULL), $6 whether to record,
/// $7-$13 the event's organization, actor, subject, kind, details, client's address and
/// user agent, $14 its time.
const ACCEPT_CODE_POSTGRES: &str = "\
WITH accepted AS (
    UPDATE factors SET last_step = $1, last_used_at = $2
    WHERE id = $3 AND status = 'active' AND (last_step IS NULL OR last_step < $1)
      AND NOT EXISTS (SELECT 1 FROM attempt_counters WHERE key = $4 AND locked_until > $2)
    RETURNING id
), raised AS (
    UPDATE sessions SET assurance = 2, trusted_device_id = NULL
    WHERE id = $5 AND revoked_at IS NULL AND expires_at > $2
      AND idle_expires_at > $2 AND EXISTS (SELECT 1 FROM accepted)
    RETURNING id
), recorded AS (
    INSERT INTO audit_events (occurred_at, org_id, actor_id, subject_id, kind, details,
                              client_ip, client_user_agent)
    SELECT $14, $7::uuid, $8::uuid, $9::uuid, $10, $11, $12::text, $13::text FROM accepted
    WHERE $6 AND ($5::uuid IS NULL OR EXISTS (SELECT 1 FROM raised))
    RETURNING id
)
SELECT (SELECT count(*) FROM accepted) AS accepted, (SELECT count(*) FROM raised) AS raised,
       (SELECT count(*) FROM recorded) AS recorded";

/// [`Factors::accept_code`] elsewhere (SQLite): the same writes as three statements in one
/// transaction, each run only when the one before changed its row (the session's raise is
/// [`super::sessions::raise_statement`]). SQL written once, as on PostgreSQL, not built per
/// call (building them took a tenth of a verification's CPU).
/// The replay guard's update: ?1 step, ?2 now, ?3 factor, ?4 failure counter key.
const ACCEPT_STEP_SQLITE: &str = "\
UPDATE factors SET last_step = ?1, last_used_at = ?2
WHERE id = ?3 AND status = 'active' AND (last_step IS NULL OR last_step < ?1)
  AND NOT EXISTS (SELECT 1 FROM attempt_counters WHERE key = ?4 AND locked_until > ?2)";

/// The event: ?1 its time, ?2-?8 its organization, actor, subject, kind, details, client's
/// address and user agent.
const RECORD_SQLITE: &str = "\
INSERT INTO audit_events (occurred_at, org_id, actor_id, subject_id, kind, details,
                          client_ip, client_user_agent)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// [`Factors::active_with_counter`]'s query, the same on SQLite and PostgreSQL (SQLite numbers
/// `$1` and `$2` by their first use): $1 the failure counter's key, $2 the user.
const ACTIVE_WITH_COUNTER: &str = "\
SELECT factors.*, attempt_counters.failures AS counter_failures,
       attempt_counters.locked_until AS counter_locked_until,
       attempt_counters.updated_at AS counter_updated_at
FROM factors LEFT JOIN attempt_counters ON attempt_counters.key = $1
WHERE factors.user_id = $2 AND factors.status = 'active'
ORDER BY factors.id";

/// The replay guard's update: `step` becomes the factor's last accepted one if it is beyond
/// it (and the factor is active).
fn step_update(factor_id: Uuid, step: i64, now: i64) -> sea_orm::UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::LastStep, Expr::value(Some(step)))
        .col_expr(Column::LastUsedAt, Expr::value(Some(now)))
        .filter(Column::Id.eq(factor_id))
        .filter(Column::Status.eq(FactorStatus::Active))
        .filter(
            Condition::any()
                .add(Column::LastStep.is_null())
                .add(Column::LastStep.lt(step)),
        )
}

/// The parameters of a TOTP or HOTP factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtpParams {
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: &'static str,
    /// 6 to 8.
    pub digits: i16,
    /// Seconds per step (TOTP only).
    pub period: Option<i32>,
}

/// How far a key rotation has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationProgress {
    /// Rows re-sealed by this call.
    pub resealed: u64,
    /// Rows that did not open (tampered, or sealed under a key the ring lacks): left as they
    /// are, named here for an operator, and skipped by later batches after `last_seen`.
    pub failed: Vec<Uuid>,
    /// The last row this call looked at: pass it as `after` to continue past it.
    pub last_seen: Option<Uuid>,
    /// Rows still sealed under another key (failed ones included).
    pub remaining: u64,
}

/// The associated data that binds a sealed seed to its factor row.
fn seal_context(factor_id: Uuid) -> Vec<u8> {
    let mut context = b"tollgate/factor-secret/v1/".to_vec();
    context.extend_from_slice(factor_id.as_bytes());
    context
}

/// Checks an E.164 number: `+`, a non-zero digit, then 1 to 14 more digits.
pub(crate) fn check_e164(phone: &str) -> Result<()> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    let valid = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err(StorageError::Invalid {
            field: "phone_number",
            reason: "must be in E.164 form: + and 2 to 15 digits, not starting with 0",
        })
    }
}

/// Factors.
#[derive(Debug)]
pub struct Factors<'a> {
    storage: &'a Storage,
}

impl<'a> Factors<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Creates a pending TOTP or HOTP factor whose seed is sealed under the primary key and
    /// bound to the new row. For HOTP, `next_counter` is the counter of the token's next
    /// code. The enrollment expires at `expires_at` unless confirmed. `audit` commits with
    /// the row.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_otp_pending(
        &self,
        user_id: Uuid,
        kind: FactorKind,
        label: &str,
        secret: &[u8],
        params: OtpParams,
        next_counter: Option<u64>,
        now: i64,
        expires_at: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<Model> {
        if kind == FactorKind::Sms {
            return Err(StorageError::Invalid {
                field: "kind",
                reason: "an SMS factor has no seed",
            });
        }
        let id = Uuid::now_v7();
        let sealed = self.storage.keyring().seal(secret, &seal_context(id))?;
        let last_step = match next_counter {
            Some(0) | None => None,
            Some(next) => Some(i64::try_from(next - 1).map_err(|_| StorageError::Invalid {
                field: "counter",
                reason: "too large",
            })?),
        };
        let model = ActiveModel {
            secret_sealed: Set(Some(sealed)),
            secret_key_id: Set(Some(i64::from(self.storage.keyring().primary()))),
            algorithm: Set(Some(params.algorithm.to_owned())),
            digits: Set(Some(params.digits)),
            period: Set(params.period),
            last_step: Set(last_step),
            ..self.pending(id, user_id, kind, label, now, expires_at)?
        };
        self.insert(model, audit).await
    }

    /// Creates a pending SMS factor for an E.164 phone number; `audit` commits with the row.
    pub async fn create_sms_pending(
        &self,
        user_id: Uuid,
        label: &str,
        phone_e164: &str,
        now: i64,
        expires_at: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<Model> {
        check_e164(phone_e164)?;
        let model = ActiveModel {
            phone_e164: Set(Some(phone_e164.to_owned())),
            ..self.pending(
                Uuid::now_v7(),
                user_id,
                FactorKind::Sms,
                label,
                now,
                expires_at,
            )?
        };
        self.insert(model, audit).await
    }

    fn pending(
        &self,
        id: Uuid,
        user_id: Uuid,
        kind: FactorKind,
        label: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<ActiveModel> {
        let label = label.trim();
        if label.chars().count() > 64 {
            return Err(StorageError::Invalid {
                field: "label",
                reason: "at most 64 characters",
            });
        }
        Ok(ActiveModel {
            id: Set(id),
            user_id: Set(user_id),
            kind: Set(kind),
            status: Set(FactorStatus::Pending),
            label: Set(label.to_owned()),
            secret_sealed: Set(None),
            secret_key_id: Set(None),
            algorithm: Set(None),
            digits: Set(None),
            period: Set(None),
            last_step: Set(None),
            phone_e164: Set(None),
            created_at: Set(now),
            pending_expires_at: Set(Some(expires_at)),
            activated_at: Set(None),
            last_used_at: Set(None),
            credential_id: Set(None),
            webauthn_credential: Set(None),
            discoverable: Set(false),
        })
    }

    /// Creates a pending WebAuthn factor; the credential comes with its confirmation
    /// ([`Activation::credential`]). `audit` commits with the row.
    pub async fn create_webauthn_pending(
        &self,
        user_id: Uuid,
        label: &str,
        discoverable: bool,
        now: i64,
        expires_at: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<Model> {
        let model = ActiveModel {
            discoverable: Set(discoverable),
            ..self.pending(
                Uuid::now_v7(),
                user_id,
                FactorKind::Webauthn,
                label,
                now,
                expires_at,
            )?
        };
        self.insert(model, audit).await
    }

    /// The active WebAuthn factor whose credential has this id, if any (any user's).
    pub async fn by_credential_id(&self, credential_id: &[u8]) -> Result<Option<Model>> {
        Ok(Entity::find()
            .filter(Column::CredentialId.eq(credential_id.to_vec()))
            .filter(Column::Status.eq(FactorStatus::Active))
            .one(self.storage.db())
            .await?)
    }

    /// Records a WebAuthn assertion: the credential (its signature counter) becomes
    /// `credential` and the factor is marked used, only if it still holds `previous` (another
    /// assertion of the same credential got there first otherwise: false).
    pub async fn update_webauthn_credential(
        &self,
        factor_id: Uuid,
        previous: &str,
        credential: &str,
        now: i64,
    ) -> Result<bool> {
        Ok(Entity::update_many()
            .col_expr(
                Column::WebauthnCredential,
                Expr::value(Some(credential.to_owned())),
            )
            .col_expr(Column::LastUsedAt, Expr::value(Some(now)))
            .filter(Column::Id.eq(factor_id))
            .filter(Column::WebauthnCredential.eq(previous))
            .change_on(&*self.storage.write().await)
            .await?
            == 1)
    }

    /// Inserts a new factor with the audit events of its creation, in one transaction when
    /// there are any.
    async fn insert(&self, model: ActiveModel, audit: &[NewAuditEvent<'_>]) -> Result<Model> {
        let refused = |e: sea_orm::DbErr| match e.sql_err() {
            Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => {
                StorageError::NotFound("user")
            }
            _ => StorageError::from_insert(e, "factor"),
        };
        if audit.is_empty() {
            return Entity::insert(model)
                .insert_on(&*self.storage.write().await)
                .await
                .map_err(refused);
        }
        let (_writing, txn) = self.storage.begin_write().await?;
        let created = model.insert(&txn).await.map_err(refused)?;
        append_all_with(&txn, audit).await?;
        txn.commit().await?;
        Ok(created)
    }

    /// The factor, if it exists.
    pub async fn get(&self, id: Uuid) -> Result<Option<Model>> {
        Ok(Entity::find_by_id(id)
            .one_by_key(&self.storage.reads())
            .await?)
    }

    /// The user's factors (pending ones included unless `active_only`), oldest first.
    pub async fn of_user(&self, user_id: Uuid, active_only: bool) -> Result<Vec<Model>> {
        let query = Entity::find().filter(if active_only {
            active_of(user_id)
        } else {
            Condition::all().add(Column::UserId.eq(user_id))
        });
        Ok(query
            .order_by_asc(Column::Id)
            .all_on(&self.storage.reads())
            .await?)
    }

    /// The user's active factors, oldest first, and the failure counter under `counter_key`,
    /// in one query: a second-factor check reads both before it compares a code. The counter
    /// rides on every factor row, so with no active factor it is not read (`None`).
    pub async fn active_with_counter(
        &self,
        user_id: Uuid,
        counter_key: &str,
    ) -> Result<(Vec<Model>, Option<attempt_counter::Model>)> {
        let query = sea_orm::Statement::from_sql_and_values(
            self.storage.db().get_database_backend(),
            ACTIVE_WITH_COUNTER,
            [counter_key.into(), user_id.into()],
        );
        let rows = self.storage.reads().rows(query).await?;
        let mut factors = Vec::with_capacity(rows.len());
        let mut found = None;
        for row in &rows {
            factors.push(row.model::<Entity>("")?);
            if let Some(failures) = row.get::<Option<i64>>("counter_failures")? {
                found = Some(attempt_counter::Model {
                    key: counter_key.to_owned(),
                    failures,
                    locked_until: row.get("counter_locked_until")?,
                    updated_at: row
                        .get::<Option<i64>>("counter_updated_at")?
                        .unwrap_or_default(),
                });
            }
        }
        Ok((factors, found))
    }

    /// Opens the factor's seed. Fails if it was tampered with, copied from another row, or
    /// sealed under a key the ring no longer has.
    pub fn open_secret(&self, factor: &Model) -> Result<Zeroizing<Vec<u8>>> {
        let sealed = factor
            .secret_sealed
            .as_deref()
            .ok_or(StorageError::NotFound("factor secret"))?;
        Ok(self
            .storage
            .keyring()
            .open(sealed, &seal_context(factor.id))?)
    }

    /// Activates a pending, unexpired factor of `user_id`, recording `step` (the time step or
    /// counter of the confirming code) as used. With `recovery_codes`, the user's recovery
    /// codes are replaced by these in the same transaction: either all of it happens or none.
    pub async fn activate(
        &self,
        factor_id: Uuid,
        user_id: Uuid,
        step: Option<i64>,
        recovery_codes: Option<&[&str]>,
        now: i64,
    ) -> Result<()> {
        let with = Activation {
            recovery_codes,
            ..Activation::default()
        };
        self.activate_with(factor_id, user_id, step, with, now)
            .await
    }

    /// [`Factors::activate`] with what else the enrollment changes, all in one transaction:
    /// the recovery codes, the removal of the active factor it `replaces` (a change of
    /// method; if that is not an active factor of the same user, nothing happens and the
    /// answer is [`StorageError::NotFound`] (`"factor to replace"`)), and the audit events
    /// that record it, which commit with the change or not at all.
    pub async fn activate_with(
        &self,
        factor_id: Uuid,
        user_id: Uuid,
        step: Option<i64>,
        with: Activation<'_>,
        now: i64,
    ) -> Result<()> {
        let Activation {
            recovery_codes,
            replaces,
            retires,
            credential,
            audit,
        } = with;
        let (_writing, txn) = self.storage.begin_write().await?;
        // A write first, so SQLite takes the write lock at once (no read-to-write upgrade).
        let mut update = Entity::update_many()
            .col_expr(Column::Status, Expr::value(FactorStatus::Active))
            .col_expr(Column::ActivatedAt, Expr::value(Some(now)))
            .col_expr(Column::PendingExpiresAt, Expr::value(Option::<i64>::None))
            .filter(Column::Id.eq(factor_id))
            .filter(Column::UserId.eq(user_id))
            .filter(Column::Status.eq(FactorStatus::Pending))
            .filter(Column::PendingExpiresAt.gt(now));
        if let Some(step) = step {
            // The replay guard only moves forward, also here: an HOTP baseline set at creation
            // is never lowered.
            update = update
                .col_expr(Column::LastStep, Expr::value(Some(step)))
                .filter(
                    Condition::any()
                        .add(Column::LastStep.is_null())
                        .add(Column::LastStep.lt(step)),
                );
        }
        if let Some((id, json)) = credential {
            update = update
                .col_expr(Column::CredentialId, Expr::value(Some(id.to_vec())))
                .col_expr(
                    Column::WebauthnCredential,
                    Expr::value(Some(json.to_owned())),
                );
        }
        let activated = update
            .exec(&txn)
            .await
            .map_err(|e| StorageError::from_insert(e, "credential"))?;
        if activated.rows_affected != 1 {
            return Err(StorageError::NotFound("pending factor"));
        }
        // A new factor ends a pending re-enrollment, and moves the user's factor generation
        // on (voiding the enrollment tokens issued before it), in the same transaction; the
        // user's row is written before any factor or device goes, so that a device being
        // remembered meanwhile (which holds the row shared on PostgreSQL) is either seen and
        // ended below, or sees this change and is not remembered.
        {
            use crate::entity::user;
            let generation = Expr::col((user::Entity, user::Column::FactorGeneration));
            user::Entity::update_many()
                .col_expr(user::Column::MustReenroll, Expr::value(false))
                .col_expr(
                    user::Column::FactorGeneration,
                    sea_orm::sea_query::ExprTrait::add(generation, 1),
                )
                .col_expr(user::Column::UpdatedAt, Expr::value(now))
                .filter(user::Column::Id.eq(user_id))
                .exec(&txn)
                .await?;
        }
        if let Some(old) = replaces {
            let removed = Entity::delete_many()
                .filter(Column::Id.eq(old))
                .filter(Column::Id.ne(factor_id))
                .filter(Column::UserId.eq(user_id))
                .filter(Column::Status.eq(FactorStatus::Active))
                .exec(&txn)
                .await?;
            if removed.rows_affected != 1 {
                // The activation goes back too.
                txn.rollback().await?;
                return Err(StorageError::NotFound("factor to replace"));
            }
        }
        let mut retired = 0;
        if !retires.is_empty() {
            retired = Entity::delete_many()
                .filter(Column::Id.is_in(retires.iter().copied()))
                .filter(Column::Id.ne(factor_id))
                .filter(Column::UserId.eq(user_id))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        // Devices remembered on the strength of a factor that goes end with it.
        if replaces.is_some() || retired > 0 {
            super::trusted_devices::revoke_of_user(&txn, user_id, now).await?;
        }
        if let Some(codes) = recovery_codes {
            recovery_code::Entity::delete_many()
                .filter(recovery_code::Column::UserId.eq(user_id))
                .exec(&txn)
                .await?;
            insert_codes(&txn, self.storage, user_id, codes, now).await?;
        }
        append_all_with(&txn, audit).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Accepts `step` (a TOTP time step or HOTP counter) for an active factor if, and only if,
    /// it is beyond the last one accepted: one conditional UPDATE, so of any number of
    /// concurrent callers with the same step, on any number of replicas, exactly one wins.
    pub async fn accept_step(&self, factor_id: Uuid, step: i64, now: i64) -> Result<bool> {
        let result = step_update(factor_id, step, now)
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(result == 1)
    }

    /// A resync of an HOTP token: accepts `counter` as [`Factors::accept_step`] does (false
    /// when it is not beyond the last one), with the audit events of the resync committed in
    /// the same transaction.
    pub async fn resync(
        &self,
        factor_id: Uuid,
        counter: i64,
        now: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<bool> {
        let (_writing, txn) = self.storage.begin_write().await?;
        let accepted = step_update(factor_id, counter, now)
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if accepted {
            append_all_with(&txn, audit).await?;
            txn.commit().await?;
        }
        Ok(accepted)
    }

    /// Accepts a matching app or token code ([`Factors::accept_step`], in the same statement
    /// only while no lockout is in force at `now` on the failure counter `lock_key`, so a code
    /// accepted is settled against the failure budget with no read after it) and, only
    /// if it was accepted, raises the session given and, only if that session was live (or
    /// none was given), appends the event, all in one transaction: one statement on
    /// PostgreSQL, a write transaction on SQLite.
    pub async fn accept_code(&self, a: &Acceptance<'_>) -> Result<Accepted> {
        if let Some(event) = &a.audit {
            super::audit::check_kind(event.kind)?;
            event.client.check()?;
        }
        if self.storage.db().get_database_backend() == sea_orm::DbBackend::Postgres {
            let event = a.audit.as_ref();
            let values: [sea_orm::Value; 14] = [
                a.step.into(),
                a.now.into(),
                a.factor_id.into(),
                a.lock_key.into(),
                a.raise.into(),
                event.is_some().into(),
                event.and_then(|e| e.org_id).into(),
                event.and_then(|e| e.actor_id).into(),
                event.and_then(|e| e.subject_id).into(),
                event.map_or("", |e| e.kind).into(),
                event.map_or("", |e| e.details).into(),
                event.and_then(|e| e.client.ip).map(str::to_owned).into(),
                event
                    .and_then(|e| e.client.user_agent)
                    .map(str::to_owned)
                    .into(),
                event.map_or(a.now, |e| e.occurred_at).into(),
            ];
            let stmt = sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                ACCEPT_CODE_POSTGRES,
                values,
            );
            let row = self
                .storage
                .write()
                .await
                .row(stmt)
                .await?
                .ok_or(StorageError::NotFound("the acceptance's counts"))?;
            return Ok(Accepted {
                accepted: row.get::<i64>("accepted")? == 1,
                raised: row.get::<i64>("raised")? == 1,
            });
        }
        // SQLite: the statements in one transaction, each only when the one before changed
        // its row, made before the write turn, which every other writer waits for; on a
        // file committed together with the acceptances waiting beside it (group commit).
        let sqlite = |sql: &str, values: Vec<sea_orm::Value>| {
            sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values)
        };
        let mut chain = vec![sqlite(
            ACCEPT_STEP_SQLITE,
            vec![
                a.step.into(),
                a.now.into(),
                a.factor_id.into(),
                a.lock_key.into(),
            ],
        )];
        if let Some(session) = a.raise {
            chain.push(super::sessions::raise_statement(
                session,
                a.now,
                sea_orm::DbBackend::Sqlite,
            ));
        }
        if let Some(event) = a.audit {
            chain.push(sqlite(
                RECORD_SQLITE,
                vec![
                    event.occurred_at.into(),
                    event.org_id.into(),
                    event.actor_id.into(),
                    event.subject_id.into(),
                    event.kind.into(),
                    event.details.into(),
                    event.client.ip.map(str::to_owned).into(),
                    event.client.user_agent.map(str::to_owned).into(),
                ],
            ));
        }
        let rows = self.storage.write_chain(chain).await?;
        let accepted = rows.first() == Some(&1);
        Ok(Accepted {
            accepted,
            raised: accepted && a.raise.is_some() && rows.get(1) == Some(&1),
        })
    }

    /// Records that an SMS factor was used (its codes are single-use on their own).
    pub async fn touch(&self, factor_id: Uuid, now: i64) -> Result<()> {
        Entity::update_many()
            .col_expr(Column::LastUsedAt, Expr::value(Some(now)))
            .filter(Column::Id.eq(factor_id))
            .change_on(&*self.storage.write().await)
            .await?;
        Ok(())
    }

    /// Removes one factor of the user. When it was active, the user's remembered devices go
    /// in the same transaction (they were remembered on the strength of factors that may
    /// have included this one); with `and_recovery_codes`, so do the user's recovery codes (when the last
    /// factor goes), and so do the `audit` events that record the removal (appended only
    /// when the factor existed). Returns whether it existed.
    pub async fn remove(
        &self,
        user_id: Uuid,
        factor_id: Uuid,
        and_recovery_codes: bool,
        now: i64,
        audit: &[NewAuditEvent<'_>],
    ) -> Result<bool> {
        let (_writing, txn) = self.storage.begin_write().await?;
        // The user's row first (a write, so SQLite takes the write lock at once): a device
        // being remembered meanwhile holds it shared on PostgreSQL, and either sees this
        // removal or is ended by it.
        crate::entity::user::Entity::update_many()
            .col_expr(crate::entity::user::Column::UpdatedAt, Expr::value(now))
            .filter(crate::entity::user::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        let removed = Entity::delete_many()
            .filter(Column::Id.eq(factor_id))
            .filter(Column::UserId.eq(user_id))
            .exec_with_returning(&txn)
            .await?;
        let [factor] = removed.as_slice() else {
            return Ok(false);
        };
        if factor.status == FactorStatus::Active {
            super::trusted_devices::revoke_of_user(&txn, user_id, now).await?;
        }
        if and_recovery_codes {
            recovery_code::Entity::delete_many()
                .filter(recovery_code::Column::UserId.eq(user_id))
                .exec(&txn)
                .await?;
        }
        append_all_with(&txn, audit).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Resets the user's 2FA as one transaction: removes every factor (their SMS codes go
    /// with them), recovery code and failure counted against them, sets `must_reenroll` when
    /// the plan says so, revokes the sessions it names, and appends the audit event (subject:
    /// the user; details: `details(&outcome)`).
    /// Either all of it happens or none. An unknown user is [`StorageError::NotFound`].
    pub async fn reset(
        &self,
        user_id: Uuid,
        plan: ResetPlan,
        audit: AuditOf<'_>,
        details: impl FnOnce(&MfaReset) -> String + Send,
        now: i64,
    ) -> Result<MfaReset> {
        self.reset_if(
            user_id,
            |_| Ok::<_, StorageError>(plan),
            audit,
            details,
            now,
        )
        .await?
    }

    /// [`Factors::reset`] with the plan decided inside the transaction, on the user's
    /// memberships as they are once the user's row is locked (`FOR UPDATE` on PostgreSQL,
    /// which a membership being added waits for; SQLite writes one at a time): a role
    /// granted concurrently is either seen by `decide` or waits for the reset. When `decide`
    /// refuses, nothing is changed and its refusal is the inner answer.
    pub async fn reset_if<E>(
        &self,
        user_id: Uuid,
        decide: impl FnOnce(&[crate::entity::membership::Model]) -> std::result::Result<ResetPlan, E>
        + Send,
        audit: AuditOf<'_>,
        details: impl FnOnce(&MfaReset) -> String + Send,
        now: i64,
    ) -> Result<std::result::Result<MfaReset, E>> {
        use crate::entity::{membership, user};
        let (_writing, txn) = self.storage.begin_write().await?;
        // The row lock first (SQLite: the write lock), then the roles the plan depends on.
        if self.storage.db().get_database_backend() == sea_orm::DbBackend::Postgres
            && user::Entity::find_by_id(user_id)
                .lock_exclusive()
                .one(&txn)
                .await?
                .is_none()
        {
            return Err(StorageError::NotFound("user"));
        }
        let touch = user::Entity::update_many()
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(user_id));
        if touch.clone().exec(&txn).await?.rows_affected != 1 {
            return Err(StorageError::NotFound("user"));
        }
        let memberships = membership::Entity::find()
            .filter(membership::Column::UserId.eq(user_id))
            .all(&txn)
            .await?;
        let plan = match decide(&memberships) {
            Ok(plan) => plan,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if plan.must_reenroll {
            touch
                .col_expr(user::Column::MustReenroll, Expr::value(true))
                .exec(&txn)
                .await?;
        }
        let factors_removed = Entity::delete_many()
            .filter(Column::UserId.eq(user_id))
            .exec(&txn)
            .await?
            .rows_affected;
        let recovery_codes_removed = recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?
            .rows_affected;
        // The failures counted against the old factors (a lockout, a suspension) go with
        // them.
        attempt_counter::Entity::delete_by_id(super::attempts::second_factor_counter(user_id))
            .exec(&txn)
            .await?;
        let sessions_revoked = match plan.revoke {
            SessionsToRevoke::None => 0,
            SessionsToRevoke::All => {
                super::sessions::revoke_of_user(&txn, user_id, None, now).await?
            }
            SessionsToRevoke::AllExcept(keep) => {
                super::sessions::revoke_of_user(&txn, user_id, Some(keep), now).await?
            }
        };
        let trusted_devices_revoked =
            super::trusted_devices::revoke_of_user(&txn, user_id, now).await?;
        let outcome = MfaReset {
            factors_removed,
            recovery_codes_removed,
            sessions_revoked,
            trusted_devices_revoked,
        };
        let details = details(&outcome);
        append_with(&txn, audit.event(now, plan.org_id, Some(user_id), &details)).await?;
        txn.commit().await?;
        Ok(Ok(outcome))
    }

    /// Deletes pending enrollments that expired before `now`. Returns how many.
    pub async fn delete_expired_pending(&self, now: i64) -> Result<u64> {
        Ok(Entity::delete_many()
            .filter(Column::Status.eq(FactorStatus::Pending))
            .filter(Column::PendingExpiresAt.lte(now))
            .change_on(&*self.storage.write_on_pool().await)
            .await?)
    }

    /// Re-seals up to `batch` seeds sealed under a key other than the primary, in id order
    /// after `after`. Each row is updated on its own, only if it still holds the ciphertext it
    /// was read with, so rotation can be interrupted and resumed at any point, and run by
    /// several replicas at once. A row that does not open is reported in `failed` and left
    /// alone; pass `last_seen` back as `after` to get past it.
    pub async fn reseal_batch(&self, after: Option<Uuid>, batch: u64) -> Result<RotationProgress> {
        let keyring = self.storage.keyring();
        let primary = i64::from(keyring.primary());
        let stale = || {
            Entity::find()
                .filter(Column::SecretKeyId.is_not_null())
                .filter(Column::SecretKeyId.ne(primary))
        };
        let mut query = stale();
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(Column::Id)
            .limit(batch.clamp(1, 10_000))
            .all(self.storage.db())
            .await?;
        let mut progress = RotationProgress {
            resealed: 0,
            failed: Vec::new(),
            last_seen: rows.last().map(|row| row.id),
            remaining: 0,
        };
        for row in rows {
            let secret = match self.open_secret(&row) {
                Ok(secret) => secret,
                Err(StorageError::Crypto(_)) => {
                    progress.failed.push(row.id);
                    continue;
                }
                Err(other) => return Err(other),
            };
            let sealed = keyring.seal(&secret, &seal_context(row.id))?;
            let updated = Entity::update_many()
                .col_expr(Column::SecretSealed, Expr::value(Some(sealed)))
                .col_expr(Column::SecretKeyId, Expr::value(Some(primary)))
                .filter(Column::Id.eq(row.id))
                .filter(Column::SecretSealed.eq(row.secret_sealed.clone()))
                .change_on(&*self.storage.write().await)
                .await?;
            progress.resealed += updated;
        }
        progress.remaining = stale().count(self.storage.db()).await?;
        Ok(progress)
    }
}
