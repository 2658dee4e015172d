//! The pod's service account, from the token the kubelet mounts into the container at
//! `/var/run/secrets/kubernetes.io/serviceaccount`: the runtime reports the mount's source on
//! the host (containerd: the OCI spec's `mounts`), and the token's claims name the account
//! (`kubernetes.io.serviceaccount.name`, else `sub` = `system:serviceaccount:<ns>:<name>`).
//! The signature is not checked (egret has no key): this is what the token says, and the
//! file is the kubelet's (a pod cannot change its mounts' sources). Bounded: at most 16 KiB is
//! read, a name that is not a valid Kubernetes name is ignored.

use std::{io::Read as _, path::Path};

use serde::Deserialize;

use super::workload::valid_name;

/// Where the kubelet mounts the token in every container.
pub const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Largest token read.
pub const MAX_TOKEN: u64 = 16 * 1024;

/// base64url (with or without padding); `None` for anything else.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[derive(Deserialize, Default)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    serviceaccount: Option<NamedRef>,
}

#[derive(Deserialize)]
struct NamedRef {
    #[serde(default)]
    name: Option<String>,
}

/// The service account a JWT names, if it names a valid one.
pub fn from_token(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let claims: Claims = serde_json::from_slice(&base64url(payload)?).ok()?;
    let Claims { sub, kubernetes } = claims;
    let from_claim = kubernetes
        .and_then(|k| k.serviceaccount)
        .and_then(|sa| sa.name);
    let from_sub = || {
        sub.as_deref()
            .and_then(|s| s.strip_prefix("system:serviceaccount:"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, name)| name.to_owned())
    };
    from_claim.or_else(from_sub).filter(|name| valid_name(name))
}

/// The service account of the token in `dir` (the mount's source on the host).
pub fn from_dir(dir: &Path) -> Option<String> {
    let file = std::fs::File::open(dir.join("token")).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_TOKEN).read_to_string(&mut text).ok()?;
    from_token(&text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// base64url without padding, for fixtures.
    pub(crate) fn encode(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let index = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(A[index as usize]));
            }
        }
        out
    }

    /// A token (unsigned) with `claims`.
    pub(crate) fn token(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            encode(br#"{"alg":"RS256"}"#),
            encode(claims.as_bytes())
        )
    }

    #[test]
    fn names_from_claims() {
        assert_eq!(
            from_token(&token(
                r#"{"sub":"system:serviceaccount:shop:ignored","kubernetes.io":{"serviceaccount":{"name":"web-sa","uid":"u"}}}"#
            ))
            .as_deref(),
            Some("web-sa")
        );
        assert_eq!(
            from_token(&token(r#"{"sub":"system:serviceaccount:shop:legacy"}"#)).as_deref(),
            Some("legacy")
        );
        assert_eq!(from_token(&token(r#"{"sub":"user"}"#)), None);
        assert_eq!(
            from_token(&token(r#"{"sub":"system:serviceaccount:shop:Bad\nName"}"#)),
            None
        );
        assert_eq!(from_token("not a token"), None);
        assert_eq!(from_token("a.!!!.c"), None);
        assert_eq!(from_token(&format!("a.{}.c", encode(b"[1]"))), None);
    }

    #[test]
    fn from_a_directory() {
        let dir = std::env::temp_dir().join(format!("egret-sa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(from_dir(&dir), None);
        std::fs::write(
            dir.join("token"),
            token(r#"{"sub":"system:serviceaccount:a:builder"}"#),
        )
        .unwrap();
        assert_eq!(from_dir(&dir).as_deref(), Some("builder"));
        // Past the bound: cut, no longer a token.
        std::fs::write(dir.join("token"), "x".repeat(40_000)).unwrap();
        assert_eq!(from_dir(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
