//! Which field (Redis hash field, LDAP attribute) holds each part of a
//! record: one struct for every backend that stores named fields, with the
//! backend's own defaults.

use std::fmt;
use std::marker::PhantomData;

use keygate_core::record::Field;
use keygate_core::{AgentRecord, RecordError};
use serde::Deserialize;

use crate::Problems;

/// A backend's default field names.
pub trait FieldDefaults: Send + Sync + 'static {
    /// Field holding the agent id.
    const ID: &'static str;
    /// Field holding the agent name.
    const NAME: &'static str;
    /// Field holding the agent address.
    const IP: &'static str;
    /// Field holding the agent key.
    const KEY: &'static str;
}

/// `[backend.fields]` / `[backend.attributes]`: the field that holds each
/// part of a record; a key left out takes the backend's default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct FieldNames<D: FieldDefaults> {
    /// Field holding the agent id.
    pub id: String,
    /// Field holding the agent name.
    pub name: String,
    /// Field holding the agent address.
    pub ip: String,
    /// Field holding the agent key.
    pub key: String,
    #[serde(skip)]
    defaults: PhantomData<D>,
}

impl<D: FieldDefaults> Default for FieldNames<D> {
    fn default() -> Self {
        Self {
            id: D::ID.into(),
            name: D::NAME.into(),
            ip: D::IP.into(),
            key: D::KEY.into(),
            defaults: PhantomData,
        }
    }
}

impl<D: FieldDefaults> Clone for FieldNames<D> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            name: self.name.clone(),
            ip: self.ip.clone(),
            key: self.key.clone(),
            defaults: PhantomData,
        }
    }
}

impl<D: FieldDefaults> fmt::Debug for FieldNames<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldNames")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("ip", &self.ip)
            .field("key", &self.key)
            .finish()
    }
}

impl<D: FieldDefaults> PartialEq for FieldNames<D> {
    fn eq(&self, other: &Self) -> bool {
        self.all() == other.all()
    }
}

impl<D: FieldDefaults> FieldNames<D> {
    /// The names in id, name, ip, key order.
    pub fn all(&self) -> [&str; 4] {
        [&self.id, &self.name, &self.ip, &self.key]
    }

    /// Reports, under `table.id` etc., every name `valid` refuses.
    pub fn validate(
        &self,
        problems: &mut Problems<'_>,
        table: &str,
        valid: impl Fn(&str) -> bool,
        rule: &str,
    ) {
        for (part, value) in ["id", "name", "ip", "key"].into_iter().zip(self.all()) {
            if !valid(value) {
                problems.push(&format!("{table}.{part}"), rule);
            }
        }
    }

    /// Builds a record from what `value` finds under each field name
    /// (`None`: the field is missing).
    pub fn record<'a>(
        &self,
        value: impl Fn(&str, Field) -> Result<Option<&'a str>, RecordError>,
    ) -> Result<AgentRecord, RecordError> {
        AgentRecord::from_options(
            value(&self.id, Field::Id)?,
            value(&self.name, Field::Name)?,
            value(&self.ip, Field::Ip)?,
            value(&self.key, Field::Key)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl FieldDefaults for Plain {
        const ID: &'static str = "id";
        const NAME: &'static str = "name";
        const IP: &'static str = "ip";
        const KEY: &'static str = "key";
    }

    #[test]
    fn left_out_names_take_the_defaults_and_unknown_ones_are_refused() {
        let f: FieldNames<Plain> = serde_json::from_str(r#"{"key":"agent_key"}"#).unwrap();
        assert_eq!(f.all(), ["id", "name", "ip", "agent_key"]);
        assert!(serde_json::from_str::<FieldNames<Plain>>(r#"{"secret":"x"}"#).is_err());
        let mut list = Vec::new();
        let mut empty = f.clone();
        empty.name.clear();
        empty.validate(
            &mut Problems::new("backend[0]", &mut list),
            "fields",
            |n| !n.is_empty(),
            "must not be empty",
        );
        assert_eq!(
            list[0].to_string(),
            "backend[0].fields.name: must not be empty"
        );
    }
}
