//! Test-only fakes of the HTTP APIs the syncer applies to, for tests on machines
//! where the real servers cannot be installed (DESIGN.md §6).
//!
//! Each fake speaks the documented wire format (same paths, headers, status codes
//! and bodies) and is as strict as the real server: it rejects what the real one
//! would reject, so product code tested against it works against the real thing.
//! Every handler module cites the documentation page it follows.
//!
//! - [`grafana::FakeGrafana`]: orgs, org users, teams, datasources, folders,
//!   dashboards and search, with Grafana's basic-auth and `X-Grafana-Org-Id` rules.
//! - [`ruler::FakeRuler`]: the Mimir ruler (`/prometheus/config/v1/rules`) and the
//!   Loki ruler (`/loki/api/v1/rules`), per tenant by `X-Scope-OrgID`; with the
//!   Mimir API on, also Mimir's Alertmanager configuration API.
//! - [`alertmanager::FakeAlertmanager`]: Mimir's Alertmanager configuration API
//!   (`/api/v1/alerts`) alone.
//!
//! Both record write requests by route and can fail the next requests on demand
//! ([`Recorder`]), so tests can assert "zero writes" and exercise retries.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mop_fakes::{FailOn, grafana::FakeGrafana, ruler::{FakeRuler, RulerApis}};
//! let grafana = FakeGrafana::start("admin", "admin").await?;
//! let rulers = FakeRuler::start(RulerApis::ALL).await?;
//! grafana.add_user("alice", "alice@example.com"); // members must exist
//! // … point the syncer at grafana.url() / rulers.url() and apply once …
//! grafana.recorder().reset();
//! grafana.recorder().fail_next(1, 500, FailOn::Writes); // the applier must retry
//! // … apply again: nothing changed, so nothing is written …
//! assert_eq!(grafana.recorder().writes() + rulers.recorder().writes(), 0);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod alertmanager;
mod common;
pub mod grafana;
pub mod ruler;

pub use common::{Error, FailOn, Recorder};
