//! Schema migrations, the same on SQLite and PostgreSQL. Each migration is a frozen
//! snapshot: it names tables and columns itself instead of reading the current entities.

mod m20261124_000001_initial;
mod m20261124_000002_sms_counters;
mod m20261206_000003_factor_generation;
mod m20261206_000004_sms_sends;
mod m20261206_000005_webauthn;
mod m20261207_000006_client_context;
mod m20261207_000007_audit_client;
mod m20261207_000008_trusted_devices;

use sea_orm_migration::prelude::*;

/// Every migration, in order.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_initial::Migration),
            Box::new(m20261124_000002_sms_counters::Migration),
            Box::new(m20261206_000003_factor_generation::Migration),
            Box::new(m20261206_000004_sms_sends::Migration),
            Box::new(m20261206_000005_webauthn::Migration),
            Box::new(m20261207_000006_client_context::Migration),
            Box::new(m20261207_000007_audit_client::Migration),
            Box::new(m20261207_000008_trusted_devices::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "tollgate_migrations".into_iden()
    }
}
