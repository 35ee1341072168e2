//! WebAuthn: a factor's credential (its id, unique across users, and the credential itself:
//! public key, signature counter, flags; nothing secret), and the ceremonies in progress,
//! whose state lives only here, used once.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Factors {
    Table,
    CredentialId,
    WebauthnCredential,
    Discoverable,
}

#[derive(DeriveIden)]
enum WebauthnCeremonies {
    Table,
    Id,
    Challenge,
    Purpose,
    UserId,
    OrgId,
    FactorId,
    LoginChallengeId,
    SessionId,
    State,
    ExpiresAt,
    ConsumedAt,
    CreatedAt,
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ColumnDef::new(Factors::CredentialId)
                .binary()
                .null()
                .to_owned(),
            ColumnDef::new(Factors::WebauthnCredential)
                .text()
                .null()
                .to_owned(),
            boolean(Factors::Discoverable).default(false).to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Factors::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("factors_credential_id")
                    .table(Factors::Table)
                    .col(Factors::CredentialId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebauthnCeremonies::Table)
                    .col(uuid(WebauthnCeremonies::Id).primary_key())
                    .col(string_len(WebauthnCeremonies::Challenge, 128).unique_key())
                    .col(string_len(WebauthnCeremonies::Purpose, 16))
                    .col(uuid_null(WebauthnCeremonies::UserId))
                    .col(uuid_null(WebauthnCeremonies::OrgId))
                    .col(uuid_null(WebauthnCeremonies::FactorId))
                    .col(uuid_null(WebauthnCeremonies::LoginChallengeId))
                    .col(uuid_null(WebauthnCeremonies::SessionId))
                    .col(text(WebauthnCeremonies::State))
                    .col(big_integer(WebauthnCeremonies::ExpiresAt))
                    .col(big_integer_null(WebauthnCeremonies::ConsumedAt))
                    .col(big_integer(WebauthnCeremonies::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Organizations that allowed every method (TOTP, HOTP, SMS) allow WebAuthn too; those
        // that chose a narrower set keep it.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE organizations SET allowed_methods = 15 WHERE allowed_methods = 7",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE organizations SET allowed_methods = allowed_methods - 8 WHERE allowed_methods >= 8",
            )
            .await?;
        manager
            .drop_table(Table::drop().table(WebauthnCeremonies::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("factors_credential_id")
                    .table(Factors::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Factors::CredentialId,
            Factors::WebauthnCredential,
            Factors::Discoverable,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Factors::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
