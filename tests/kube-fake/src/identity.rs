//! ServiceAccount tokens and the TokenReview API, plus running pods with
//! addresses and nodes: what a component that verifies its callers needs.
//!
//! `POST /apis/authentication.k8s.io/v1/tokenreviews` follows kubernetes
//! `pkg/registry/authentication/tokenreview/storage.go`: no namespace in the path;
//! an empty `spec.token` is a 400 "token is required for TokenReview in
//! authentication"; with `spec.audiences` the token must be issued for one of them
//! (else `authenticated: false` with an error, and no user); the answer is the
//! review with `status` filled, `status.audiences` the intersection. The user of a
//! pod-bound token carries `extra` with `authentication.kubernetes.io/pod-name`,
//! `pod-uid`, `node-name` (Kubernetes 1.30+; `pkg/serviceaccount/claims.go`). A
//! bound token stops authenticating when its pod is gone or replaced, when it
//! expires, or when the test revokes it.
//!
//! Tokens are JWT-shaped (`header.claims.signature`, base64url) with the claims a
//! projected token carries (`aud`, `exp`, `sub`, `kubernetes.io`), so a client
//! may read `exp`; only the fake's registry decides validity.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::status::ApiError;
use crate::{Error, FakeKube};

/// A token for [`FakeKube::issue_token`].
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// ServiceAccount namespace and name.
    pub namespace: String,
    pub service_account: String,
    pub audiences: Vec<String>,
    /// The pod the token is bound to (name); its uid is looked up at issue time.
    pub pod: Option<String>,
    /// The node named in the token (`authentication.kubernetes.io/node-name`).
    pub node: Option<String>,
    /// Lifetime from now.
    pub valid_for: Duration,
}

#[derive(Debug, Clone)]
struct Issued {
    spec: TokenSpec,
    pod_uid: Option<String>,
    expires: SystemTime,
    revoked: bool,
    jti: String,
}

/// Issued tokens.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    tokens: HashMap<String, Issued>,
    seq: u64,
}

/// A pod for [`FakeKube::run_pod`].
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// `status.podIPs`, the first also `status.podIP`.
    pub ips: Vec<String>,
    pub host_network: bool,
}

fn b64(bytes: &[u8]) -> String {
    // RFC 4648 base64url without padding, as JWTs use.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The API server's own audience, used when a review names none.
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl FakeKube {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a ServiceAccount token as the kubelet's projected volume would get
    /// it (TokenRequest). A bound pod must exist.
    pub fn issue_token(&self, spec: TokenSpec) -> Result<String, Error> {
        let pod_uid = match &spec.pod {
            Some(p) => Some(
                self.get("v1", "Pod", Some(&spec.namespace), p)
                    .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
                    .ok_or_else(|| Error::NotFound {
                        kind: "Pod".into(),
                        name: p.clone(),
                    })?,
            ),
            None => None,
        };
        let expires = SystemTime::now() + spec.valid_for;
        let mut reg = self.registry();
        reg.seq += 1;
        let jti = format!("jti-{}", reg.seq);
        let exp = expires
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = json!({
            "aud": spec.audiences,
            "exp": exp,
            "iss": API_AUDIENCE,
            "jti": jti,
            "sub": format!("system:serviceaccount:{}:{}", spec.namespace, spec.service_account),
            "kubernetes.io": {
                "namespace": spec.namespace,
                "serviceaccount": {"name": spec.service_account},
                "pod": spec.pod.as_ref().map(|p| json!({"name": p, "uid": pod_uid})),
                "node": spec.node.as_ref().map(|n| json!({"name": n})),
            },
        });
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"mop-kube-fake"}"#),
            b64(claims.to_string().as_bytes()),
            b64(format!("signature-{}", reg.seq).as_bytes())
        );
        reg.tokens.insert(
            token.clone(),
            Issued {
                spec,
                pod_uid,
                expires,
                revoked: false,
                jti,
            },
        );
        Ok(token)
    }

    /// Makes a token stop authenticating, as deleting its bound Secret or object
    /// would.
    pub fn revoke_token(&self, token: &str) {
        if let Some(t) = self.registry().tokens.get_mut(token) {
            t.revoked = true;
        }
    }

    /// Creates a running pod with addresses on a node (namespace created if
    /// missing), as the scheduler and kubelet would leave it.
    pub fn run_pod(&self, pod: PodSpec) -> Result<Value, Error> {
        if self.get("v1", "Namespace", None, &pod.namespace).is_none() {
            self.put(
                "kube-fake",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": pod.namespace}}),
            )?;
        }
        let mut spec = json!({
            "nodeName": pod.node,
            "containers": [{"name": "app", "image": "registry.example/app:1.0.0"}],
        });
        if pod.host_network {
            spec["hostNetwork"] = json!(true);
        }
        self.put(
            "kube-scheduler",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "spec": spec,
            }),
        )?;
        let ips: Vec<Value> = pod.ips.iter().map(|ip| json!({"ip": ip})).collect();
        let mut status = json!({"phase": "Running", "podIPs": ips});
        if let Some(first) = pod.ips.first() {
            status["podIP"] = json!(first);
            status["hostIP"] = json!(if pod.host_network {
                first.as_str()
            } else {
                "192.0.2.1"
            });
        }
        self.set_status("v1", "Pod", Some(&pod.namespace), &pod.name, status)
    }

    /// Deletes a pod at once (no graceful termination), emitting DELETED.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let res = Self::resource("v1", "Pod")?;
        let mut s = self.state()?;
        s.remove(&res, namespace, name, true)
            .ok_or_else(|| Error::NotFound {
                kind: "Pod".into(),
                name: name.into(),
            })?;
        let rv = s.rv;
        drop(s);
        self.inner.changed.send_replace(rv);
        Ok(())
    }

    /// TokenReview requests answered so far.
    pub fn token_reviews(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path == TOKENREVIEWS && r.method == "POST")
            .count()
    }
}

pub(crate) const TOKENREVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Answers a TokenReview `POST`, or `None` when the path is not the TokenReview
/// collection.
pub(crate) fn answer(
    inner: &crate::Inner,
    method: &axum::http::Method,
    path: &str,
    body: &[u8],
) -> Option<Result<Value, ApiError>> {
    if path.trim_end_matches('/') != TOKENREVIEWS {
        return None;
    }
    if method != axum::http::Method::POST {
        return Some(Err(ApiError::method_not_allowed()));
    }
    Some(review(inner, body))
}

fn review(inner: &crate::Inner, body: &[u8]) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    if obj["apiVersion"] != "authentication.k8s.io/v1" || obj["kind"] != "TokenReview" {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}/{}) does not match the expected kind (authentication.k8s.io/v1, TokenReview)",
            obj["apiVersion"], obj["kind"]
        )));
    }
    let token = obj["spec"]["token"].as_str().unwrap_or("").to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let wanted: Vec<String> = match obj["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![API_AUDIENCE.to_string()],
    };
    let issued = inner
        .tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .tokens
        .get(&token)
        .cloned();
    let status = match issued {
        None => Err("invalid bearer token".to_string()),
        Some(t) => check(inner, &t, &wanted),
    };
    obj["metadata"] = json!({"creationTimestamp": null});
    obj["status"] = match status {
        Ok(s) => s,
        Err(e) => {
            json!({"authenticated": false, "user": {}, "error": format!("[invalid bearer token, {e}]")})
        }
    };
    Ok(obj)
}

fn check(inner: &crate::Inner, t: &Issued, wanted: &[String]) -> Result<Value, String> {
    if t.revoked {
        return Err("token has been invalidated".into());
    }
    if SystemTime::now() >= t.expires {
        return Err("square/go-jose/jwt: validation failed, token is expired (exp)".into());
    }
    let matched: Vec<&String> = t
        .spec
        .audiences
        .iter()
        .filter(|a| wanted.contains(a))
        .collect();
    if matched.is_empty() {
        return Err(format!(
            "token audiences {:?} is invalid for the target audiences {:?}",
            t.spec.audiences, wanted
        ));
    }
    let mut extra =
        json!({"authentication.kubernetes.io/credential-id": [format!("JTI={}", t.jti)]});
    if let Some(pod) = &t.spec.pod {
        let res = crate::resources::by_kind("v1", "Pod").ok_or("pods are not served")?;
        let s = inner.state.lock().map_err(|_| "fake state poisoned")?;
        let live_uid = s
            .get(&res, &t.spec.namespace, pod)
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string));
        if live_uid != t.pod_uid {
            return Err(format!(
                "pods \"{pod}\" not found or its uid changed: the token's bound object is gone"
            ));
        }
        extra["authentication.kubernetes.io/pod-name"] = json!([pod]);
        extra["authentication.kubernetes.io/pod-uid"] = json!([t.pod_uid]);
    }
    if let Some(node) = &t.spec.node {
        extra["authentication.kubernetes.io/node-name"] = json!([node]);
    }
    let ns = &t.spec.namespace;
    Ok(json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{ns}:{}", t.spec.service_account),
            "uid": format!("uid-of-{ns}-{}", t.spec.service_account),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "extra": extra,
        },
        "audiences": matched,
    }))
}

#[cfg(test)]
mod tests {
    use super::b64;

    #[test]
    fn base64url_without_padding() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg");
        assert_eq!(b64(b"fo"), "Zm8");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
    }
}
