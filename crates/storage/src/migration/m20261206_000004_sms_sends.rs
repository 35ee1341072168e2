//! SMS limits over sliding windows: every send (and verification) is a row with its time, so
//! a cap counts what happened in the last window's length, whatever the clock's window
//! boundaries; `sms_counters` rows stay as the per-key locks that make a take exact.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum SmsSends {
    Table,
    Id,
    Key,
    At,
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SmsSends::Table)
                    .col(big_integer(SmsSends::Id).auto_increment().primary_key())
                    .col(string(SmsSends::Key))
                    .col(big_integer(SmsSends::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sms_sends_key_at")
                    .table(SmsSends::Table)
                    .col(SmsSends::Key)
                    .col(SmsSends::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SmsSends::Table).to_owned())
            .await
    }
}
