//! `type = "ldap"`: not written yet.
