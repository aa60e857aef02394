//! The config repository's files as typed, documented serde structures.
//!
//! These are the *raw* types: what a file says. [`crate::validate`] turns a set of
//! them into a [`crate::repo::Repo`], the validated domain model that rendering
//! reads; code past validation never re-checks what validation guaranteed.

pub mod alerting;
pub mod cluster;
pub mod common;
pub mod platform;
pub mod rules;
pub mod rules_reader;
pub mod sampling;
pub mod tenant;
pub mod versions;

pub use alerting::{AlertingFile, PlatformAlertingFile};
pub use cluster::ClusterFile;
pub use common::{Duration, Loc, SecretRef};
pub use platform::PlatformFile;
pub use rules::RuleFile;
pub use sampling::SamplingFile;
pub use tenant::TenantFile;
pub use versions::VersionsFile;
