//! Writing audit events.

use storage::Uuid;
use storage::repo::NewAuditEvent;

use crate::App;
use crate::error::ApiResult;

/// Appends an audit event at the app's current time. `details` is a JSON object without
/// secrets.
pub(crate) async fn record(
    app: &App,
    kind: &str,
    org_id: Option<Uuid>,
    actor_id: Option<Uuid>,
    subject_id: Option<Uuid>,
    details: &str,
) -> ApiResult<()> {
    app.storage
        .audit()
        .append(NewAuditEvent {
            occurred_at: app.now(),
            org_id,
            actor_id,
            subject_id,
            kind,
            details,
            client: Default::default(),
        })
        .await?;
    Ok(())
}

/// An event in which a user acts on their own account (actor and subject alike) at `now`,
/// for a repository to append in the transaction of the change it records.
pub(crate) fn own_event<'e>(
    org_id: Option<Uuid>,
    user_id: Uuid,
    kind: &'e str,
    details: &'e str,
    now: i64,
) -> NewAuditEvent<'e> {
    NewAuditEvent {
        occurred_at: now,
        org_id,
        actor_id: Some(user_id),
        subject_id: Some(user_id),
        kind,
        details,
        client: Default::default(),
    }
}

/// Appends an event in which a user acts on their own account (actor and subject alike), from
/// the client the call's caller relayed (`ClientContext`; empty when it did not).
pub(crate) async fn own_from(
    app: &App,
    org_id: Option<Uuid>,
    user_id: Uuid,
    kind: &str,
    details: &str,
    client: storage::repo::ClientInfo<'_>,
) -> ApiResult<()> {
    let event = NewAuditEvent {
        client,
        ..own_event(org_id, user_id, kind, details, app.now())
    };
    app.storage.audit().append(event).await?;
    Ok(())
}
