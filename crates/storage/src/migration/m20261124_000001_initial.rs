//! The initial schema: the domain model of DESIGN.md.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    MfaRequired,
    MfaRequiredSince,
    AllowedMethods,
    SsoEnabled,
    SsoMode,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    EmailNormalized,
    PasswordHash,
    Status,
    MustReenroll,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    OrgId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Factors {
    Table,
    Id,
    UserId,
    Kind,
    Status,
    Label,
    SecretSealed,
    SecretKeyId,
    Algorithm,
    Digits,
    Period,
    LastStep,
    PhoneE164,
    CreatedAt,
    PendingExpiresAt,
    ActivatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum RecoveryCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LoginChallenges {
    Table,
    Id,
    TokenHash,
    UserId,
    OrgId,
    Purpose,
    ExpiresAt,
    Attempts,
    ConsumedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum SmsCodes {
    Table,
    Id,
    FactorId,
    CodeHash,
    ExpiresAt,
    Attempts,
    SentAt,
    ConsumedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    TokenHash,
    UserId,
    OrgId,
    Assurance,
    CreatedAt,
    LastSeenAt,
    IdleExpiresAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OccurredAt,
    OrgId,
    ActorId,
    SubjectId,
    Kind,
    Details,
}

#[derive(DeriveIden)]
enum AttemptCounters {
    Table,
    Key,
    Failures,
    LockedUntil,
    UpdatedAt,
}

/// A foreign key to `users.id` that deletes the row with its user.
fn to_user(from: impl IntoTableRef, column: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from, column)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(table: impl IntoTableRef, name: &str, columns: &[DynIden]) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(table);
    for column in columns {
        index.col(column.clone());
    }
    index
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(uuid(Organizations::Id).primary_key())
                    .col(string(Organizations::Name))
                    .col(boolean(Organizations::MfaRequired))
                    .col(big_integer_null(Organizations::MfaRequiredSince))
                    .col(integer(Organizations::AllowedMethods))
                    .col(boolean(Organizations::SsoEnabled))
                    .col(string_len(Organizations::SsoMode, 16))
                    .col(big_integer(Organizations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(string(Users::Email))
                    .col(string_uniq(Users::EmailNormalized))
                    .col(text_null(Users::PasswordHash))
                    .col(string_len(Users::Status, 16))
                    .col(boolean(Users::MustReenroll))
                    .col(big_integer(Users::CreatedAt))
                    .col(big_integer(Users::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(uuid(Memberships::OrgId))
                    .col(uuid(Memberships::UserId))
                    .col(string_len(Memberships::Role, 16))
                    .col(big_integer(Memberships::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Memberships::OrgId)
                            .col(Memberships::UserId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Memberships::Table, Memberships::OrgId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(&mut to_user(Memberships::Table, Memberships::UserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                Memberships::Table,
                "idx_memberships_user",
                &[Memberships::UserId.into_iden()],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Factors::Table)
                    .col(uuid(Factors::Id).primary_key())
                    .col(uuid(Factors::UserId))
                    .col(string_len(Factors::Kind, 16))
                    .col(string_len(Factors::Status, 16))
                    .col(string(Factors::Label))
                    .col(blob_null(Factors::SecretSealed))
                    .col(big_integer_null(Factors::SecretKeyId))
                    .col(string_len_null(Factors::Algorithm, 16))
                    .col(small_integer_null(Factors::Digits))
                    .col(integer_null(Factors::Period))
                    .col(big_integer_null(Factors::LastStep))
                    .col(string_len_null(Factors::PhoneE164, 16))
                    .col(big_integer(Factors::CreatedAt))
                    .col(big_integer_null(Factors::PendingExpiresAt))
                    .col(big_integer_null(Factors::ActivatedAt))
                    .col(big_integer_null(Factors::LastUsedAt))
                    .foreign_key(&mut to_user(Factors::Table, Factors::UserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                Factors::Table,
                "idx_factors_user",
                &[Factors::UserId.into_iden()],
            ))
            .await?;
        manager
            .create_index(index(
                Factors::Table,
                "idx_factors_key",
                &[Factors::SecretKeyId.into_iden()],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RecoveryCodes::Table)
                    .col(uuid(RecoveryCodes::Id).primary_key())
                    .col(uuid(RecoveryCodes::UserId))
                    .col(blob_uniq(RecoveryCodes::CodeHash))
                    .col(big_integer_null(RecoveryCodes::UsedAt))
                    .col(big_integer(RecoveryCodes::CreatedAt))
                    .foreign_key(&mut to_user(RecoveryCodes::Table, RecoveryCodes::UserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                RecoveryCodes::Table,
                "idx_recovery_codes_user",
                &[RecoveryCodes::UserId.into_iden()],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoginChallenges::Table)
                    .col(uuid(LoginChallenges::Id).primary_key())
                    .col(blob_uniq(LoginChallenges::TokenHash))
                    .col(uuid(LoginChallenges::UserId))
                    .col(uuid_null(LoginChallenges::OrgId))
                    .col(string_len(LoginChallenges::Purpose, 16))
                    .col(big_integer(LoginChallenges::ExpiresAt))
                    .col(integer(LoginChallenges::Attempts))
                    .col(big_integer_null(LoginChallenges::ConsumedAt))
                    .col(big_integer(LoginChallenges::CreatedAt))
                    .foreign_key(&mut to_user(
                        LoginChallenges::Table,
                        LoginChallenges::UserId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SmsCodes::Table)
                    .col(uuid(SmsCodes::Id).primary_key())
                    .col(uuid(SmsCodes::FactorId))
                    .col(blob_uniq(SmsCodes::CodeHash))
                    .col(big_integer(SmsCodes::ExpiresAt))
                    .col(integer(SmsCodes::Attempts))
                    .col(big_integer(SmsCodes::SentAt))
                    .col(big_integer_null(SmsCodes::ConsumedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SmsCodes::Table, SmsCodes::FactorId)
                            .to(Factors::Table, Factors::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                SmsCodes::Table,
                "idx_sms_codes_factor",
                &[SmsCodes::FactorId.into_iden()],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(uuid(Sessions::Id).primary_key())
                    .col(blob_uniq(Sessions::TokenHash))
                    .col(uuid(Sessions::UserId))
                    .col(uuid_null(Sessions::OrgId))
                    .col(small_integer(Sessions::Assurance))
                    .col(big_integer(Sessions::CreatedAt))
                    .col(big_integer(Sessions::LastSeenAt))
                    .col(big_integer(Sessions::IdleExpiresAt))
                    .col(big_integer(Sessions::ExpiresAt))
                    .col(big_integer_null(Sessions::RevokedAt))
                    .foreign_key(&mut to_user(Sessions::Table, Sessions::UserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                Sessions::Table,
                "idx_sessions_user",
                &[Sessions::UserId.into_iden()],
            ))
            .await?;
        manager
            .create_index(index(
                Sessions::Table,
                "idx_sessions_org",
                &[Sessions::OrgId.into_iden(), Sessions::Assurance.into_iden()],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(big_pk_auto(AuditEvents::Id))
                    .col(big_integer(AuditEvents::OccurredAt))
                    .col(uuid_null(AuditEvents::OrgId))
                    .col(uuid_null(AuditEvents::ActorId))
                    .col(uuid_null(AuditEvents::SubjectId))
                    .col(string_len(AuditEvents::Kind, 64))
                    .col(text(AuditEvents::Details))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                AuditEvents::Table,
                "idx_audit_events_org",
                &[AuditEvents::OrgId.into_iden(), AuditEvents::Id.into_iden()],
            ))
            .await?;
        manager
            .create_index(index(
                AuditEvents::Table,
                "idx_audit_events_subject",
                &[
                    AuditEvents::SubjectId.into_iden(),
                    AuditEvents::Id.into_iden(),
                ],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AttemptCounters::Table)
                    .col(string(AttemptCounters::Key).primary_key())
                    .col(big_integer(AttemptCounters::Failures))
                    .col(big_integer_null(AttemptCounters::LockedUntil))
                    .col(big_integer(AttemptCounters::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents.
        for table in [
            AttemptCounters::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            Sessions::Table.into_iden(),
            SmsCodes::Table.into_iden(),
            LoginChallenges::Table.into_iden(),
            RecoveryCodes::Table.into_iden(),
            Factors::Table.into_iden(),
            Memberships::Table.into_iden(),
            Users::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
