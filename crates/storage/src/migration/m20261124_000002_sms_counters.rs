//! SMS sending limits: windowed counters (per number, per user, per organization, and the
//! sends and verifications the pumping guard compares).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum SmsCounters {
    Table,
    Key,
    WindowStart,
    Count,
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SmsCounters::Table)
                    .col(string(SmsCounters::Key).primary_key())
                    .col(big_integer(SmsCounters::WindowStart))
                    .col(big_integer(SmsCounters::Count))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SmsCounters::Table).to_owned())
            .await
    }
}
