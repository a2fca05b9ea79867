//! Who may call the broadcast and stats endpoints: a bearer JWT with the admin role, or a
//! service API key from `API_KEYS` in `X-API-Key`. 401 when a credential is missing or
//! invalid, 403 when a valid token lacks the admin role.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::HttpState;
use super::error::ApiError;

/// The header carrying a service API key.
pub(crate) const API_KEY_HEADER: &str = "x-api-key";

/// An authenticated caller of the operator API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// An admin user, by JWT `sub`.
    Admin(String),
    /// A service, by the position of its key in `API_KEYS` (1-based; the key is secret).
    Service(usize),
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operator::Admin(sub) => write!(f, "admin {sub}"),
            Operator::Service(n) => write!(f, "API key #{n}"),
        }
    }
}

impl FromRequestParts<HttpState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let header = |name| parts.headers.get(name).map(|v| v.to_str().unwrap_or_default());
        // Every credential presented must be valid: a bad token next to a good key is
        // refused, so a leaked key cannot hide a forged token in the logs and vice versa.
        let admin = match header("authorization") {
            None => None,
            Some(authorization) => {
                let token = authorization
                    .strip_prefix("Bearer ")
                    .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "expected Authorization: Bearer <JWT>"))?;
                let identity = state
                    .verifier
                    .verify(token)
                    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
                Some(identity)
            }
        };
        let service = match header(API_KEY_HEADER) {
            None => None,
            Some(key) => Some(find_key(&state.api_keys.0, key).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key"))?),
        };
        match (admin, service) {
            (Some(identity), _) if !identity.is_admin => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden: admin role required")),
            (Some(identity), _) => Ok(Operator::Admin(identity.user_id)),
            (None, Some(n)) => Ok(Operator::Service(n)),
            (None, None) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: Authorization: Bearer <admin JWT>, or X-API-Key",
            )),
        }
    }
}

/// Any authenticated caller of the read-only catalogue endpoints: a valid user token (any
/// role) or a service API key. Catalogue data is public to signed-in shoppers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader;

impl FromRequestParts<HttpState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let header = |name| parts.headers.get(name).map(|v| v.to_str().unwrap_or_default());
        if let Some(authorization) = header("authorization") {
            let token = authorization
                .strip_prefix("Bearer ")
                .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "expected Authorization: Bearer <JWT>"))?;
            state
                .verifier
                .verify(token)
                .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
        }
        if let Some(key) = header(API_KEY_HEADER) {
            find_key(&state.api_keys.0, key).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key"))?;
        }
        if header("authorization").is_none() && header(API_KEY_HEADER).is_none() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "authentication required: Authorization: Bearer <JWT>, or X-API-Key",
            ));
        }
        Ok(Reader)
    }
}

/// The 1-based position of `candidate` in `keys`, comparing every key in constant time so
/// response timing does not reveal how much of a guess was right.
fn find_key(keys: &[String], candidate: &str) -> Option<usize> {
    let mut found = None;
    for (i, key) in keys.iter().enumerate() {
        if bool::from(key.as_bytes().ct_eq(candidate.as_bytes())) {
            found = Some(i + 1);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::find_key;

    #[test]
    fn keys_match_exactly() {
        let keys = vec!["a".repeat(32), "b".repeat(32)];
        assert_eq!(find_key(&keys, &"b".repeat(32)), Some(2));
        assert_eq!(find_key(&keys, &"b".repeat(31)), None);
        assert_eq!(find_key(&keys, ""), None);
        assert_eq!(find_key(&[], "x"), None);
    }
}
