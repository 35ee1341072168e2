//! Values between sea-query and SQLite: bound as sqlx binds them, read as sea-orm reads
//! them, and rows decoded into entities without sea-orm's drivers.

use std::sync::Arc;

use rusqlite::types::{Value as Sql, ValueRef};
use sea_orm::sea_query::{ColumnType, OptionEnum, Value, ValueType};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DbErr, EntityTrait, IdenStatic as _, Iterable as _,
    TryIntoModel,
};

use super::sqlite::query_error;

/// What a value is read as: the type of the field or variable it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Double,
    Text,
    Bytes,
    Uuid,
    /// Anything else sea-query names: by what SQLite holds, a NULL as a 64-bit integer.
    Any,
}

impl Kind {
    /// The kind a column of this type is read as.
    pub(super) fn of_type(column_type: &ColumnType) -> Self {
        match column_type {
            ColumnType::Boolean => Self::Bool,
            ColumnType::TinyInteger => Self::TinyInt,
            ColumnType::SmallInteger => Self::SmallInt,
            ColumnType::Integer => Self::Int,
            ColumnType::BigInteger => Self::BigInt,
            ColumnType::Float | ColumnType::Double => Self::Double,
            ColumnType::Char(_)
            | ColumnType::String(_)
            | ColumnType::Text
            | ColumnType::Enum { .. } => Self::Text,
            ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => Self::Bytes,
            ColumnType::Uuid => Self::Uuid,
            _ => Self::Any,
        }
    }

    /// NULL of this kind (sea-query tells an `Option`'s None by its type).
    fn null(self) -> Value {
        match self {
            Self::Bool => Value::Bool(None),
            Self::TinyInt => Value::TinyInt(None),
            Self::SmallInt => Value::SmallInt(None),
            Self::Int => Value::Int(None),
            Self::BigInt | Self::Any => Value::BigInt(None),
            Self::Double => Value::Double(None),
            Self::Text => Value::String(None),
            Self::Bytes => Value::Bytes(None),
            Self::Uuid => Value::Uuid(None),
        }
    }
}

/// A column's value as sea-orm reads it for a field of `kind` (as sqlx decodes SQLite's
/// storage classes: a UUID from its 16 bytes or its text, a bool from an integer).
pub(super) fn from_sql(value: ValueRef<'_>, kind: Kind) -> Result<Value, String> {
    let out_of_range = |_| "out of range".to_owned();
    Ok(match (value, kind) {
        (ValueRef::Null, kind) => kind.null(),
        (ValueRef::Integer(i), Kind::Bool) => Value::Bool(Some(i != 0)),
        (ValueRef::Integer(i), Kind::TinyInt) => {
            Value::TinyInt(Some(i.try_into().map_err(out_of_range)?))
        }
        (ValueRef::Integer(i), Kind::SmallInt) => {
            Value::SmallInt(Some(i.try_into().map_err(out_of_range)?))
        }
        (ValueRef::Integer(i), Kind::Int) => Value::Int(Some(i.try_into().map_err(out_of_range)?)),
        (ValueRef::Integer(i), _) => Value::BigInt(Some(i)),
        (ValueRef::Real(f), _) => Value::Double(Some(f)),
        (ValueRef::Blob(bytes), Kind::Uuid) => Value::Uuid(Some(
            uuid::Uuid::from_slice(bytes).map_err(|e| e.to_string())?,
        )),
        (ValueRef::Text(text), Kind::Uuid) => Value::Uuid(Some(
            uuid::Uuid::try_parse_ascii(text).map_err(|e| e.to_string())?,
        )),
        (ValueRef::Text(text), _) => Value::String(Some(
            String::from_utf8(text.to_vec()).map_err(|e| e.to_string())?,
        )),
        (ValueRef::Blob(bytes), _) => Value::Bytes(Some(bytes.to_vec())),
    })
}

/// A bound value as sqlx binds it on SQLite (a UUID as its 16 bytes, a bool as 0 or 1).
pub(super) fn to_sql(value: &Value) -> Result<Sql, DbErr> {
    fn or_null<T>(value: Option<T>, to: impl FnOnce(T) -> Sql) -> Sql {
        value.map_or(Sql::Null, to)
    }
    Ok(match value {
        Value::Bool(v) => or_null(*v, |v| Sql::Integer(i64::from(v))),
        Value::TinyInt(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::SmallInt(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::Int(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::BigInt(v) => or_null(*v, Sql::Integer),
        Value::TinyUnsigned(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::SmallUnsigned(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::Unsigned(v) => or_null(*v, |v| Sql::Integer(v.into())),
        Value::BigUnsigned(Some(v)) => Sql::Integer(
            (*v).try_into()
                .map_err(|_| query_error("an unsigned value over i64".into()))?,
        ),
        Value::BigUnsigned(None) => Sql::Null,
        Value::Float(v) => or_null(*v, |v| Sql::Real(v.into())),
        Value::Double(v) => or_null(*v, Sql::Real),
        Value::String(v) => or_null(v.clone(), Sql::Text),
        Value::Enum(OptionEnum::Some(v)) => Sql::Text(v.value.clone().into_owned()),
        Value::Enum(OptionEnum::None(_)) => Sql::Null,
        Value::Char(v) => or_null(*v, |v| Sql::Text(v.to_string())),
        Value::Bytes(v) => or_null(v.clone(), Sql::Blob),
        Value::Uuid(v) => or_null(*v, |v| Sql::Blob(v.as_bytes().to_vec())),
        #[allow(
            unreachable_patterns,
            reason = "the variants sea-query's features add, none of which this crate binds"
        )]
        other => return Err(query_error(format!("cannot bind {other:?} on SQLite"))),
    })
}

/// A row read on the calling thread: SQLite's values, by column name.
#[derive(Clone, Debug)]
pub(crate) struct SqliteRow {
    /// The statement's column names, shared by its rows.
    pub(super) columns: Arc<[String]>,
    /// This row's values, in the columns' order.
    pub(super) values: Vec<Sql>,
}

impl SqliteRow {
    /// The value of the column `name` (the last of two of one name, as with sqlx).
    fn raw(&self, name: &str) -> Result<ValueRef<'_>, DbErr> {
        self.columns
            .iter()
            .rposition(|column| column == name)
            .and_then(|i| self.values.get(i))
            .map(ValueRef::from)
            .ok_or_else(|| DbErr::Type(format!("no column {name} in the row")))
    }

    /// The column `name` read as a `T` (an `Option` for a column that may be NULL).
    pub(crate) fn get<T: ValueType>(&self, name: &str) -> Result<T, DbErr> {
        let value = from_sql(self.raw(name)?, Kind::of_type(&T::column_type()))
            .map_err(|reason| DbErr::Type(format!("column {name}: {reason}")))?;
        <T as ValueType>::try_from(value).map_err(|e| DbErr::Type(format!("column {name}: {e}")))
    }

    /// The row read as an `E`, each field from the column of its name after `prefix`, of
    /// the field's type: what `FromQueryResult` does with sqlx's rows.
    pub(crate) fn model<E: EntityTrait>(&self, prefix: &str) -> Result<E::Model, DbErr>
    where
        E::ActiveModel: TryIntoModel<E::Model>,
    {
        let mut model = <E::ActiveModel as sea_orm::ActiveModelTrait>::default();
        for column in E::Column::iter() {
            let name = column.as_str();
            let raw = if prefix.is_empty() {
                self.raw(name)?
            } else {
                self.raw(&format!("{prefix}{name}"))?
            };
            let value = from_sql(raw, Kind::of_type(column.def().get_column_type()))
                .map_err(|reason| DbErr::Type(format!("column {name}: {reason}")))?;
            model.try_set(column, value)?;
        }
        model.try_into_model()
    }
}
