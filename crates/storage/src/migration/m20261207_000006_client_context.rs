//! Where a login came from: the client address and User-Agent its caller relayed
//! (`ClientContext`), kept on sessions and login challenges. Nullable: rows from before, and
//! calls without a context, have none.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Sessions {
    Table,
    ClientIp,
    ClientUserAgent,
}

#[derive(DeriveIden)]
enum LoginChallenges {
    Table,
    ClientIp,
    ClientUserAgent,
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for (table, column, len) in [
            (
                Sessions::Table.into_iden(),
                Sessions::ClientIp.into_iden(),
                45,
            ),
            (
                Sessions::Table.into_iden(),
                Sessions::ClientUserAgent.into_iden(),
                512,
            ),
            (
                LoginChallenges::Table.into_iden(),
                LoginChallenges::ClientIp.into_iden(),
                45,
            ),
            (
                LoginChallenges::Table.into_iden(),
                LoginChallenges::ClientUserAgent.into_iden(),
                512,
            ),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(string_len_null(column, len))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in [
            (Sessions::Table.into_iden(), Sessions::ClientIp.into_iden()),
            (
                Sessions::Table.into_iden(),
                Sessions::ClientUserAgent.into_iden(),
            ),
            (
                LoginChallenges::Table.into_iden(),
                LoginChallenges::ClientIp.into_iden(),
            ),
            (
                LoginChallenges::Table.into_iden(),
                LoginChallenges::ClientUserAgent.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
