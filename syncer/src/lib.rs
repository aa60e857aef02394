//! MOP's syncer: the config-repository model, validation, rendering, planning and
//! applying. The `mop` binary is a thin CLI over this library.
//!
//! Pipeline: [`source`] (a commit or directory → [`source::Snapshot`]) →
//! [`validate`] (→ [`repo::Repo`] + diagnostics) → [`render`] (→ [`render::Desired`])
//! → [`plan`] (desired vs desired/live → changes).

pub mod apply;
pub mod diag;
pub mod model;
pub mod plan;
pub mod render;
pub mod repo;
pub mod schema;
pub mod serve;
pub mod source;
pub mod sync;
pub mod uid;
mod unknown;
pub mod validate;
