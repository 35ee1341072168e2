//! The audit log: append, and list with filters and pagination.

use sea_orm::sea_query::{Condition, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{Page, page};
use crate::entity::audit_event::{ActiveModel, Column, Entity, Model};
use crate::entity::membership;
use crate::{Result, Storage, StorageError};

/// An event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Appends an event on `conn` (a transaction, so that the event and the change it records
/// commit together); returns its sequence number.
pub(crate) async fn append_with<C: ConnectionTrait>(
    conn: &C,
    event: NewAuditEvent<'_>,
) -> Result<i64> {
    if event.kind.is_empty() || event.kind.len() > 64 {
        return Err(StorageError::Invalid {
            field: "kind",
            reason: "must be 1 to 64 bytes",
        });
    }
    let model = ActiveModel {
        id: NotSet,
        occurred_at: Set(event.occurred_at),
        org_id: Set(event.org_id),
        actor_id: Set(event.actor_id),
        subject_id: Set(event.subject_id),
        kind: Set(event.kind.to_owned()),
        details: Set(event.details.to_owned()),
    };
    Ok(model.insert(conn).await?.id)
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

    /// Appends an event; returns its sequence number.
    pub async fn append(&self, event: NewAuditEvent<'_>) -> Result<i64> {
        append_with(&*self.storage.write().await, event).await
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
