//! `mop serve`, the in-cluster syncer: a loop (`run`) fetches the config
//! repository (`git`, or a watched directory), validates, renders and reconciles
//! every target — apply on a new commit; drift check, or heal, otherwise — and an
//! HTTP server (`server`) shows what it did (`status`). The push `webhook`
//! triggers an immediate sync; `leader` election lets two replicas run while only
//! one applies.

pub mod git;
pub mod handoff;
pub mod leader;
pub mod run;
pub mod server;
pub mod status;
pub mod webhook;
