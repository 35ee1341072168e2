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
        })
        .await?;
    Ok(())
}

/// Appends an event in which a user acts on their own account (actor and subject alike).
pub(crate) async fn own(
    app: &App,
    org_id: Option<Uuid>,
    user_id: Uuid,
    kind: &str,
    details: &str,
) -> ApiResult<()> {
    record(app, kind, org_id, Some(user_id), Some(user_id), details).await
}
