//! The `webauthn_ceremonies` table.

use sea_orm::entity::prelude::*;

use super::enums::CeremonyPurpose;

/// A WebAuthn ceremony in progress: its state (webauthn-rs's, with the challenge) lives only
/// here, bound to the user (or, for a passwordless login, to the ceremony alone), and is
/// used once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webauthn_ceremonies")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The challenge (base64url), as the browser's clientDataJSON carries it back.
    #[sea_orm(unique)]
    pub challenge: String,
    /// What it is for.
    pub purpose: CeremonyPurpose,
    /// The user (none for a passwordless login).
    pub user_id: Option<Uuid>,
    /// The organization of the login.
    pub org_id: Option<Uuid>,
    /// The pending factor of a registration.
    pub factor_id: Option<Uuid>,
    /// The login challenge an assertion serves.
    pub login_challenge_id: Option<Uuid>,
    /// The session an assertion serves (a step-up or a proof).
    pub session_id: Option<Uuid>,
    /// webauthn-rs's ceremony state, JSON.
    pub state: String,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// When it was used (Unix seconds).
    pub consumed_at: Option<i64>,
    /// Created (Unix seconds).
    pub created_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
