//! The `users` table.

use sea_orm::entity::prelude::*;

use super::enums::UserStatus;

/// A user account.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The email as given (trimmed).
    pub email: String,
    /// The email normalized for uniqueness and lookup (lower case).
    #[sea_orm(unique)]
    pub email_normalized: String,
    /// The argon2id PHC string, if the user has a password.
    pub password_hash: Option<String>,
    /// Active or disabled.
    pub status: UserStatus,
    /// 2FA must be set up again before the next session.
    pub must_reenroll: bool,
    /// How many factors the user has activated, ever: orders enrollment tokens against
    /// activations exactly.
    pub factor_generation: i64,
    /// Created (Unix seconds).
    pub created_at: i64,
    /// Last changed (Unix seconds).
    pub updated_at: i64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("user::Model")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("has_password", &self.password_hash.is_some())
            .field("status", &self.status)
            .field("must_reenroll", &self.must_reenroll)
            .field("factor_generation", &self.factor_generation)
            .finish_non_exhaustive()
    }
}

/// No relations: repositories join by id explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
