//! The uids MOP gives Grafana objects. A leaf module: validation checks the uids
//! render will post, and render names objects, both from these functions.

use sha2::{Digest, Sha256};

/// Grafana refuses dashboard and folder uids longer than this
/// (grafana/grafana `pkg/util/shortid_generator.go`, `MaxUIDLength`).
pub const MAX_UID_LEN: usize = 40;

/// A Grafana-acceptable uid (≤ 40 characters) from parts; long ones are shortened
/// with a hash so they stay unique and stable.
pub fn short_uid(parts: &[&str]) -> String {
    let full = parts.join("-");
    if full.len() <= MAX_UID_LEN {
        return full;
    }
    let hash = &hex::encode(Sha256::digest(full.as_bytes()))[..10];
    let keep = MAX_UID_LEN - hash.len() - 1;
    let mut prefix: String = full.chars().take(keep).collect();
    while prefix.len() > keep {
        prefix.pop();
    }
    format!("{prefix}-{hash}")
}

/// The uid of a tenant's dashboard folder.
pub fn folder_uid(tenant: &str, folder: &str) -> String {
    short_uid(&["mop", tenant, folder])
}
