//! Orders an enrollment token against the user's factor activations exactly, with a sequence
//! instead of whole-second times: `users.factor_generation` counts the user's activations,
//! and each login challenge keeps the count its login decided on.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    FactorGeneration,
}

#[derive(DeriveIden)]
enum LoginChallenges {
    Table,
    FactorGeneration,
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(big_integer(Users::FactorGeneration).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(LoginChallenges::Table)
                    .add_column(big_integer_null(LoginChallenges::FactorGeneration))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(LoginChallenges::Table)
                    .drop_column(LoginChallenges::FactorGeneration)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::FactorGeneration)
                    .to_owned(),
            )
            .await
    }
}
