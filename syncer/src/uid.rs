//! The uids MOP gives Grafana objects. A leaf module: validation checks the uids
//! render will post, and render names objects, both from these functions.
//!
//! Grafana accepts a dashboard or folder uid that matches `^[a-zA-Z0-9_-]*$` and is
//! at most 40 bytes (grafana/grafana `pkg/util/shortid_generator.go`,
//! `IsValidShortUID` and `IsShortUIDTooLong`, checked in
//! `pkg/services/dashboards/service/dashboard_service.go`,
//! `BuildSaveDashboardCommand`). Every uid MOP derives passes both.

use sha2::{Digest, Sha256};

/// Grafana refuses dashboard and folder uids longer than this
/// (grafana/grafana `pkg/util/shortid_generator.go`, `IsShortUIDTooLong`).
pub const MAX_UID_LEN: usize = 40;

/// Hex digits of the SHA-256 that make a shortened or slugified uid unique.
const HASH_LEN: usize = 10;

/// Whether Grafana accepts `uid` as given (characters and length).
pub fn is_valid_uid(uid: &str) -> bool {
    uid.len() <= MAX_UID_LEN
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `s` with every run of characters Grafana does not accept in a uid (spaces,
/// punctuation, non-ASCII letters) replaced by one `-`, without `-` at either end.
fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..HASH_LEN].to_string()
}

/// `prefix` cut to leave room for `-<hash>` within [`MAX_UID_LEN`], then the hash.
fn with_hash(prefix: &str, hashed: &str) -> String {
    let keep = MAX_UID_LEN - HASH_LEN - 1;
    // The slug is ASCII, so any byte index is a character boundary.
    let p = prefix[..prefix.len().min(keep)].trim_end_matches('-');
    if p.is_empty() {
        hash(hashed)
    } else {
        format!("{p}-{}", hash(hashed))
    }
}

/// A Grafana-acceptable uid from parts joined with `-`. Parts that already form a
/// valid uid are used as they are; a longer one, or one with characters Grafana
/// refuses (a folder directory named `My Folder` or `Übersicht`), becomes its slug
/// cut to 29 characters plus `-` and 10 hex digits of the SHA-256 of the joined
/// parts, so it stays unique and stable.
pub fn short_uid(parts: &[&str]) -> String {
    let full = parts.join("-");
    if is_valid_uid(&full) {
        return full;
    }
    with_hash(&slug(&full), &full)
}

/// The uid of a tenant's dashboard folder.
pub fn folder_uid(tenant: &str, folder: &str) -> String {
    short_uid(&["mop", tenant, folder])
}

/// The uid of a datasource MOP creates in an organisation: `scope` is the tenant
/// key or `platform-all`, `backend` one of `mimir`, `loki`, `tempo`, `pyroscope`.
pub fn datasource_uid(scope: &str, backend: &str) -> String {
    short_uid(&["mop", scope, backend])
}

/// The uid of a dashboard whose JSON has none (or an empty one). Grafana would
/// make a random one on every `POST /api/dashboards/db`
/// (`pkg/util/shortid_generator.go`, `GenerateShortUID`), so each sync would add a
/// copy. MOP derives it from where the file is instead: the slug of
/// `<folder>-<file name without .json>` cut to 29 characters, `-`, and 10 hex
/// digits of the SHA-256 of `<folder>/<file name>`. Moving or renaming the file
/// changes the uid (Grafana then gets a new dashboard and the old one is pruned);
/// set a `uid` in the JSON to keep one across renames.
pub fn derived_dashboard_uid(folder: &str, file_name: &str) -> String {
    let stem = file_name.strip_suffix(".json").unwrap_or(file_name);
    with_hash(
        &slug(&format!("{folder}-{stem}")),
        &format!("{folder}/{file_name}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_parts_are_kept_as_they_are() {
        assert_eq!(folder_uid("team-a", "services"), "mop-team-a-services");
        assert_eq!(datasource_uid("team-a", "mimir"), "mop-team-a-mimir");
    }

    #[test]
    fn folder_names_grafana_refuses_become_slug_and_hash() {
        let u = folder_uid("team-a", "My Folder");
        assert_eq!(
            u,
            format!("mop-team-a-My-Folder-{}", hash("mop-team-a-My Folder"))
        );
        assert!(is_valid_uid(&u), "{u}");
        let u = folder_uid("team-a", "Übersicht / Dienste");
        assert!(is_valid_uid(&u), "{u}");
        assert!(u.starts_with("mop-team-a-bersicht-Dienste-"), "{u}");
        // Two names with the same slug stay apart.
        assert_ne!(folder_uid("t", "a b"), folder_uid("t", "a  b"));
        // Nothing but refused characters still gives a valid uid.
        let u = folder_uid("ü", "ö");
        assert!(is_valid_uid(&u), "{u}");
    }

    #[test]
    fn long_uids_are_cut_with_a_hash() {
        let long = "x".repeat(60);
        let u = folder_uid("t", &long);
        assert_eq!(u.len(), MAX_UID_LEN);
        assert!(is_valid_uid(&u));
        assert_ne!(u, folder_uid("t", &"x".repeat(61)));
    }

    #[test]
    fn derived_dashboard_uids_are_stable_valid_and_distinct() {
        let a = derived_dashboard_uid("services", "node-exporter-full.json");
        assert_eq!(
            a,
            format!(
                "services-node-exporter-full-{}",
                hash("services/node-exporter-full.json")
            )
        );
        assert_eq!(
            a,
            derived_dashboard_uid("services", "node-exporter-full.json")
        );
        assert_ne!(a, derived_dashboard_uid("infra", "node-exporter-full.json"));
        let b = derived_dashboard_uid(
            "Kubernetes / Compute",
            "Ünïcode dashboard with a long name.json",
        );
        assert!(is_valid_uid(&b), "{b}");
        assert_eq!(b.len(), MAX_UID_LEN);
    }
}
