//! The audit log: append, and list with filters and pagination.

use sea_orm::sea_query::{Condition, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{Page, page};
use crate::entity::audit_event::{ActiveModel, Column, Entity, Model};
use crate::entity::membership;
use crate::run::ChangeOn as _;
use crate::{Result, Storage, StorageError};

/// An event to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewAuditEvent<'e> {
    /// When (Unix seconds).
    pub occurred_at: i64,
    /// The organization concerned.
    pub org_id: Option<Uuid>,
    /// Who did it.
    pub actor_id: Option<Uuid>,
    /// Whom it concerned.
    pub subject_id: Option<Uuid>,
    /// What happened, e.g. `factor.removed` (at most 64 bytes).
    pub kind: &'e str,
    /// A JSON object with details. Never secrets, codes or tokens.
    pub details: &'e str,
    /// Where the audited call came from, when its caller said.
    pub client: super::ClientInfo<'e>,
}

/// The audit event of a change that a repository writes in the change's own transaction. Its
/// organization, subject and time come from the change; its details (a JSON object, never
/// secrets) are made from the change's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditOf<'e> {
    /// Who made the change.
    pub actor_id: Option<Uuid>,
    /// What happened, e.g. `mfa_policy.updated` (at most 64 bytes).
    pub kind: &'e str,
    /// Where the call that made it came from, when its caller said.
    pub client: super::ClientInfo<'e>,
}

impl<'e> AuditOf<'e> {
    /// A change made by the calling service itself, with no user as its actor (creating an
    /// organization, adding a member).
    pub const fn by_caller(kind: &'e str) -> Self {
        Self {
            actor_id: None,
            kind,
            client: super::ClientInfo {
                ip: None,
                user_agent: None,
            },
        }
    }

    /// The event this records: about `org_id` and `subject_id`, at `now`, with `details`.
    pub(crate) fn event<'a>(
        self,
        now: i64,
        org_id: Option<Uuid>,
        subject_id: Option<Uuid>,
        details: &'a str,
    ) -> NewAuditEvent<'a>
    where
        'e: 'a,
    {
        NewAuditEvent {
            occurred_at: now,
            org_id,
            actor_id: self.actor_id,
            subject_id,
            kind: self.kind,
            details,
            client: self.client,
        }
    }
}

/// Appends an event on `conn` (a transaction, so that the event and the change it records
/// commit together); returns its sequence number.
pub(crate) async fn append_with<C: ConnectionTrait>(
    conn: &C,
    event: NewAuditEvent<'_>,
) -> Result<i64> {
    Ok(active_model(&event)?.insert(conn).await?.id)
}

/// Appends `events` on `conn` in one statement (in the transaction of the change they
/// record, so that they commit with it); none is written if one is refused.
pub(crate) async fn append_all_with<C: ConnectionTrait>(
    conn: &C,
    events: &[NewAuditEvent<'_>],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let models = events
        .iter()
        .map(active_model)
        .collect::<Result<Vec<_>>>()?;
    Entity::insert_many(models)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// An event's kind must be 1 to 64 bytes.
pub(crate) fn check_kind(kind: &str) -> Result<()> {
    if kind.is_empty() || kind.len() > 64 {
        return Err(StorageError::Invalid {
            field: "kind",
            reason: "must be 1 to 64 bytes",
        });
    }
    Ok(())
}

/// The row of an event, once its kind is checked.
fn active_model(event: &NewAuditEvent<'_>) -> Result<ActiveModel> {
    check_kind(event.kind)?;
    event.client.check()?;
    Ok(ActiveModel {
        id: NotSet,
        occurred_at: Set(event.occurred_at),
        org_id: Set(event.org_id),
        actor_id: Set(event.actor_id),
        subject_id: Set(event.subject_id),
        kind: Set(event.kind.to_owned()),
        details: Set(event.details.to_owned()),
        client_ip: Set(event.client.ip.map(str::to_owned)),
        client_user_agent: Set(event.client.user_agent.map(str::to_owned)),
    })
}

/// At most this many events per `INSERT` (6 values each: far below SQLite's and
/// PostgreSQL's limits on bound values).
const BATCH: usize = 512;

/// Whoever waits for an event to be committed.
type Committed = tokio::sync::oneshot::Sender<Result<()>>;

/// Events waiting to be written by [`flush`], for [`Audit::append`].
#[derive(Debug, Default)]
pub(crate) struct AuditQueue {
    pending: std::sync::Mutex<Pending>,
    /// One flush writes at a time; the events that arrive meanwhile form the next batch.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    events: Vec<(ActiveModel, Committed)>,
    /// A flush is spawned and has not taken the queue yet.
    flush_scheduled: bool,
}

impl AuditQueue {
    /// Queues an event; says whether the caller must spawn a flush (none is scheduled).
    fn push(&self, model: ActiveModel, done: Committed) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.events.push((model, done));
        !std::mem::replace(&mut pending.flush_scheduled, true)
    }

    fn take(&self) -> Vec<(ActiveModel, Committed)> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.flush_scheduled = false;
        std::mem::take(&mut pending.events)
    }
}

/// Writes every queued event, in batches of [`BATCH`], and tells each waiter the outcome.
async fn flush(storage: Storage) {
    let queue = &storage.audit_queue;
    let _turn = queue.turn.lock().await;
    let events = queue.take();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let (models, waiters): (Vec<_>, Vec<_>) = events.by_ref().take(BATCH).unzip();
        let written = Entity::insert_many(models)
            .change_on(&*storage.write().await)
            .await
            .map(|_| ());
        for waiter in waiters {
            // Every event of a batch shares its outcome, the database error's kind included
            // (an outage stays an outage). A waiter that stopped waiting (a cancelled RPC)
            // needs no answer.
            let _ = waiter.send(written.clone().map_err(StorageError::Db));
        }
    }
}

/// Which events to list. Every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Of this organization.
    pub org_id: Option<Uuid>,
    /// With `org_id`: also the events that name no organization (account events such as
    /// lockouts) about users who are members of it now.
    pub with_members_account_events: bool,
    /// Of these kinds (any of them).
    pub kinds: Vec<String>,
    /// By this actor.
    pub actor_id: Option<Uuid>,
    /// About this subject.
    pub subject_id: Option<Uuid>,
    /// At or after (Unix seconds).
    pub since: Option<i64>,
    /// Before (Unix seconds).
    pub until: Option<i64>,
}

/// The audit log.
#[derive(Debug)]
pub struct Audit<'a> {
    storage: &'a Storage,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(storage: &'a Storage) -> Self {
        Self { storage }
    }

    /// Appends an event, and returns once it is committed.
    ///
    /// Events appended concurrently are written together (group commit): while one batch is
    /// being written, the events that arrive queue up and the next write takes all of them in
    /// one `INSERT`, in arrival order. A lone event is written at once. The write runs in its
    /// own task, so an event is written even if the caller stops waiting (a cancelled RPC).
    pub async fn append(&self, event: NewAuditEvent<'_>) -> Result<()> {
        let model = active_model(&event)?;
        let (done, committed) = tokio::sync::oneshot::channel();
        if self.storage.audit_queue.push(model, done) {
            tokio::spawn(flush(self.storage.clone()));
        }
        committed
            .await
            .map_err(|_| StorageError::Db(DbErr::Custom("the audit writer stopped".to_owned())))?
    }

    /// Events matching `filter`, newest first, `limit` at a time; pass the page's `next` as
    /// `before` for the following page.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Page<Model, i64>> {
        let mut query = Entity::find();
        if let Some(org) = filter.org_id {
            if filter.with_members_account_events {
                let members = Query::select()
                    .column(membership::Column::UserId)
                    .from(membership::Entity)
                    .and_where(membership::Column::OrgId.eq(org))
                    .to_owned();
                query = query.filter(
                    Condition::any().add(Column::OrgId.eq(org)).add(
                        Condition::all()
                            .add(Column::OrgId.is_null())
                            .add(Column::SubjectId.in_subquery(members)),
                    ),
                );
            } else {
                query = query.filter(Column::OrgId.eq(org));
            }
        }
        if !filter.kinds.is_empty() {
            query = query.filter(Column::Kind.is_in(filter.kinds.iter().cloned()));
        }
        if let Some(actor) = filter.actor_id {
            query = query.filter(Column::ActorId.eq(actor));
        }
        if let Some(subject) = filter.subject_id {
            query = query.filter(Column::SubjectId.eq(subject));
        }
        if let Some(since) = filter.since {
            query = query.filter(Column::OccurredAt.gte(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(Column::OccurredAt.lt(until));
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
}
