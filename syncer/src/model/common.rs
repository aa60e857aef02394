//! Types shared by several config files: located values, durations, secret references.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A value together with where it was written (1-based line and column), so checks
/// made after parsing can still point at the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc<T> {
    pub value: T,
    pub line: u32,
    pub column: u32,
}

impl<T> Loc<T> {
    pub fn new(value: T, line: u32, column: u32) -> Self {
        Self {
            value,
            line,
            column,
        }
    }
}

impl<T> std::ops::Deref for Loc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let at = s.referenced;
        Ok(Loc {
            value: s.value,
            line: u32::try_from(at.line()).unwrap_or(u32::MAX),
            column: u32::try_from(at.column()).unwrap_or(u32::MAX),
        })
    }
}

impl<T: Serialize> Serialize for Loc<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Loc<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// A duration in Prometheus notation: one or more `<number><unit>` with units
/// `ms`, `s`, `m`, `h`, `d`, `w`, `y` in decreasing order, e.g. `1h30m`, `5m`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    pub millis: u64,
}

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Self { millis: s * 1000 }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        const UNITS: [(&str, u64); 7] = [
            ("y", 365 * 86_400_000),
            ("w", 7 * 86_400_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ];
        let bad = || {
            format!(
                "invalid duration {s:?}: write a number and a unit (ms, s, m, h, d, w, y), e.g. 30s, 5m, 1h30m"
            )
        };
        if s.is_empty() {
            return Err(bad());
        }
        let mut rest = s;
        let mut total: u64 = 0;
        // Units must come in decreasing order, as Prometheus requires.
        let mut last_rank = usize::MAX;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            // "ms" must be tried before "m".
            let (rank, mult, len) = if rest.starts_with("ms") {
                (6, 1, 2)
            } else {
                let Some((i, (u, m))) = UNITS
                    .iter()
                    .enumerate()
                    .find(|(_, (u, _))| *u != "ms" && rest.starts_with(u))
                else {
                    return Err(bad());
                };
                (i, *m, u.len())
            };
            if last_rank != usize::MAX && rank <= last_rank {
                return Err(format!(
                    "invalid duration {s:?}: units must go from largest to smallest, each once (e.g. 1h30m)"
                ));
            }
            last_rank = rank;
            rest = &rest[len..];
            total = n
                .checked_mul(mult)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration {s:?} is too large"))?;
        }
        Ok(Self { millis: total })
    }

    /// Prometheus notation, largest units first (`90m` → `1h30m`). Days and weeks are
    /// used; years are not, as Mimir and Loki read `y` as 365d anyway.
    pub fn to_prometheus(self) -> String {
        if self.millis == 0 {
            return "0s".into();
        }
        let mut out = String::new();
        let mut ms = self.millis;
        for (unit, size) in [
            ("w", 7 * 86_400_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= size {
                out.push_str(&format!("{}{unit}", ms / size));
                ms %= size;
            }
        }
        out
    }

    /// Go `time.Duration` notation (no days), for Tempo.
    pub fn to_go(self) -> String {
        if self.millis == 0 {
            return "0s".into();
        }
        let mut out = String::new();
        let mut ms = self.millis;
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if ms >= size {
                out.push_str(&format!("{}{unit}", ms / size));
                ms %= size;
            }
        }
        out
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_prometheus())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_prometheus())
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Prometheus duration, e.g. 30s, 5m, 1h30m, 30d.",
            "pattern": "^([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"
        })
    }
}

/// Where a credential lives. MOP never accepts a credential written into the
/// config repository: it reads it from a mounted file or a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// A file on the syncer's filesystem (typically a mounted Secret).
    File(String),
    /// A key of a Kubernetes Secret in MOP's namespace.
    Secret(SecretKeyRef),
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret.
    pub key: String,
}

pub const INLINE_SECRET_HINT: &str = "reference the credential instead: `file: /path/to/mounted/secret` or `secret: {name: my-secret, key: password}`";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A plain string here is a credential pasted into git: refuse it with the fix.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            // Held only to recognise the shape; never printed, it may be a secret.
            Text(#[allow(dead_code)] String),
            Map(RawMap),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawMap {
            file: Option<String>,
            secret: Option<SecretKeyRef>,
        }
        match Raw::deserialize(d)? {
            Raw::Text(_) => Err(de::Error::custom(format!(
                "inline secret: credentials must not be written into the repository; {INLINE_SECRET_HINT}"
            ))),
            Raw::Map(RawMap {
                file: Some(f),
                secret: None,
            }) => Ok(SecretRef::File(f)),
            Raw::Map(RawMap {
                file: None,
                secret: Some(s),
            }) => Ok(SecretRef::Secret(s)),
            Raw::Map(_) => Err(de::Error::custom(
                "a secret reference needs exactly one of `file` or `secret`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(Duration::parse("5m").unwrap().millis, 300_000);
        assert_eq!(Duration::parse("1h30m").unwrap().millis, 5_400_000);
        assert_eq!(Duration::parse("100ms").unwrap().millis, 100);
        assert_eq!(Duration::parse("1m30s").unwrap().millis, 90_000);
        assert_eq!(Duration::parse("30d").unwrap().millis, 30 * 86_400_000);
        assert!(Duration::parse("5x").is_err());
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("m").is_err());
        assert!(
            Duration::parse("30m1h")
                .unwrap_err()
                .contains("largest to smallest")
        );
        assert!(Duration::parse("1.5h").is_err());
    }

    #[test]
    fn durations_print_in_both_notations() {
        let d = Duration::parse("30d").unwrap();
        assert_eq!(d.to_prometheus(), "4w2d");
        assert_eq!(d.to_go(), "720h");
        assert_eq!(Duration::parse("90m").unwrap().to_prometheus(), "1h30m");
    }

    #[test]
    fn inline_secret_is_refused_with_the_fix() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            password: SecretRef,
        }
        let err = serde_saphyr::from_str::<T>("password: hunter2\n").unwrap_err();
        assert!(err.to_string().contains("inline secret"), "{err}");
        let ok: T = serde_saphyr::from_str("password:\n  file: /run/secrets/pw\n").unwrap();
        assert_eq!(ok.password, SecretRef::File("/run/secrets/pw".into()));
    }
}
