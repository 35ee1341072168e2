//! Remembered devices ("remember this device"): a table of device tokens (only their keyed
//! hashes), each bound to a user and the organization whose policy allowed it; the policy's
//! `trusted_device_days` on organizations (0, off, for every existing one); and on sessions
//! the device a login skipped its second factor with, if any.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum TrustedDevices {
    Table,
    Id,
    TokenHash,
    UserId,
    OrgId,
    CreatedAt,
    ExpiresAt,
    LastUsedAt,
    ClientIp,
    ClientUserAgent,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    TrustedDeviceDays,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    TrustedDeviceId,
}

// async_trait's expansion needs the elided lifetime of `SchemaManager`.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrustedDevices::Table)
                    .col(uuid(TrustedDevices::Id).primary_key())
                    .col(blob_uniq(TrustedDevices::TokenHash))
                    .col(uuid(TrustedDevices::UserId))
                    .col(uuid(TrustedDevices::OrgId))
                    .col(big_integer(TrustedDevices::CreatedAt))
                    .col(big_integer(TrustedDevices::ExpiresAt))
                    .col(big_integer_null(TrustedDevices::LastUsedAt))
                    .col(string_len_null(TrustedDevices::ClientIp, 45))
                    .col(string_len_null(TrustedDevices::ClientUserAgent, 512))
                    .foreign_key(
                        ForeignKey::create()
                            .from(TrustedDevices::Table, TrustedDevices::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(TrustedDevices::Table, TrustedDevices::OrgId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_trusted_devices_user")
                    .table(TrustedDevices::Table)
                    .col(TrustedDevices::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_trusted_devices_org")
                    .table(TrustedDevices::Table)
                    .col(TrustedDevices::OrgId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .add_column(small_integer(Organizations::TrustedDeviceDays).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(uuid_null(Sessions::TrustedDeviceId))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::TrustedDeviceId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .drop_column(Organizations::TrustedDeviceDays)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(TrustedDevices::Table).to_owned())
            .await?;
        Ok(())
    }
}
