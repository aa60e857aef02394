//! `mop serve`, the in-cluster mode: the git source it syncs from, the push
//! webhook that triggers an immediate fetch, and leader election so two replicas
//! can run while only one applies.

pub mod git;
pub mod leader;
pub mod webhook;
