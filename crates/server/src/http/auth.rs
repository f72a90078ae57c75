//! API keys: `Authorization: Bearer <secret>` or `X-Api-Key: <secret>`, each key with a role.
//! With no key configured every request is allowed (the server then listens on loopback only).

use axum::http::HeaderMap;

use super::error::{ApiError, ErrorCode};
use crate::config::{KeyConfig, Role};

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id, or `local` when no keys are configured.
    pub id: String,
}

/// Checks the request's key against `keys` for an operation that needs `role`.
pub fn authorize(keys: &[KeyConfig], headers: &HeaderMap, role: Role) -> Result<Caller, ApiError> {
    if keys.is_empty() {
        return Ok(Caller { id: "local".into() });
    }
    let secret = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(secret) = secret else {
        return Err(ApiError::new(
            ErrorCode::MissingKey,
            "missing API key: send `Authorization: Bearer <key>` or `X-Api-Key: <key>`",
        ));
    };
    let Some(key) = keys
        .iter()
        .find(|k| constant_time_eq(k.secret.as_bytes(), secret.as_bytes()))
    else {
        return Err(ApiError::new(ErrorCode::WrongKey, "unknown API key"));
    };
    let allowed = key.role == Role::Admin || key.role == role;
    if !allowed {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "API key `{}` has role `{:?}`; this needs `{:?}` or `Admin`",
                key.id, key.role, role
            ),
        ));
    }
    Ok(Caller { id: key.id.clone() })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<KeyConfig> {
        vec![
            KeyConfig {
                id: "servers".into(),
                secret: "ingest-secret-0001".into(),
                role: Role::Ingest,
            },
            KeyConfig {
                id: "ops".into(),
                secret: "admin-secret-00001".into(),
                role: Role::Admin,
            },
        ]
    }

    fn headers(h: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn roles_and_missing_or_wrong_keys() {
        let k = keys();
        assert_eq!(
            authorize(&k, &headers(&[]), Role::Ingest).unwrap_err().code,
            ErrorCode::MissingKey
        );
        assert_eq!(
            authorize(&k, &headers(&[("x-api-key", "nope")]), Role::Ingest)
                .unwrap_err()
                .code,
            ErrorCode::WrongKey
        );
        let ok = authorize(
            &k,
            &headers(&[("authorization", "Bearer ingest-secret-0001")]),
            Role::Ingest,
        )
        .unwrap();
        assert_eq!(ok.id, "servers");
        let denied = authorize(
            &k,
            &headers(&[("authorization", "Bearer ingest-secret-0001")]),
            Role::Query,
        )
        .unwrap_err();
        assert_eq!(denied.code, ErrorCode::Forbidden);
        assert!(authorize(
            &k,
            &headers(&[("x-api-key", "admin-secret-00001")]),
            Role::Query
        )
        .is_ok());
        assert_eq!(
            authorize(&[], &headers(&[]), Role::Admin).unwrap().id,
            "local"
        );
    }
}
