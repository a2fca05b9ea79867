//! Client identity: verifying the JWT presented at the Socket.IO handshake.
//!
//! The algorithm is pinned by the configured key (HS256 secret or RS256 public key),
//! so a token signed with another algorithm — `none` included — is refused.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::JwtKey;

/// Tokens longer than this are refused before any parsing.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The longest user id accepted in `sub`.
pub(crate) const MAX_USER_ID_LEN: usize = 128;

/// Why a token was refused; the text is what the client sees in `connect_error`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No token in `auth.token` nor `?token=`.
    #[error("authentication required: pass a JWT in auth.token")]
    MissingToken,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("invalid token: longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// `exp` is in the past.
    #[error("invalid token: expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("invalid token: not valid yet")]
    NotYetValid,
    /// The signature does not match the configured key.
    #[error("invalid token: bad signature")]
    BadSignature,
    /// Signed with another algorithm than the configured one.
    #[error("invalid token: algorithm not allowed")]
    WrongAlgorithm,
    /// `sub` is missing, empty, too long or has control characters.
    #[error("invalid token: missing or invalid sub claim")]
    BadSubject,
    /// A required claim (`exp`) is missing.
    #[error("invalid token: missing {0} claim")]
    MissingClaim(String),
    /// `aud` missing or not one of `JWT_AUDIENCE`.
    #[error("invalid token: wrong or missing aud claim")]
    WrongAudience,
    /// `iss` missing or not `JWT_ISSUER`.
    #[error("invalid token: wrong or missing iss claim")]
    WrongIssuer,
    /// Not a JWT at all.
    #[error("invalid token: malformed")]
    Malformed,
}

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The `sub` claim: the user whose `user:<id>` room the socket joins.
    pub user_id: String,
    /// Whether `roles` (or `role`) contains `admin`.
    pub is_admin: bool,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// The claims the bridge reads; others are ignored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The user id.
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the epoch (0 when absent, which is refused).
    #[serde(default)]
    pub exp: u64,
    /// Roles; `admin` grants the admin dashboard.
    #[serde(default, skip_serializing_if = "Roles::is_empty")]
    pub roles: Roles,
    /// A single role, as some identity providers send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `roles` as a list or a single string.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Roles {
    /// No roles claim.
    #[default]
    None,
    /// `"roles": "admin"`.
    One(String),
    /// `"roles": ["admin", "buyer"]`.
    Many(Vec<String>),
}

impl Roles {
    fn is_empty(&self) -> bool {
        matches!(self, Roles::None)
    }
    fn contains(&self, role: &str) -> bool {
        match self {
            Roles::None => false,
            Roles::One(r) => r == role,
            Roles::Many(rs) => rs.iter().any(|r| r == role),
        }
    }
}

/// Checks tokens against the configured key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// Builds a verifier; the key was validated when the configuration was loaded.
    pub fn new(key: &JwtKey) -> anyhow::Result<Self> {
        let (key, alg) = match key {
            JwtKey::Hs256Secret(s) | JwtKey::GeneratedDev(s) => (DecodingKey::from_secret(s.as_bytes()), Algorithm::HS256),
            JwtKey::Rs256PublicPem(pem) => (DecodingKey::from_rsa_pem(pem.as_bytes())?, Algorithm::RS256),
        };
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        // Without a configured audience, `aud` is not checked (jsonwebtoken would refuse
        // every token that carries one, pushing issuers to mint aud-less tokens).
        validation.validate_aud = false;
        // Small clock skew between the token issuer and this pod.
        validation.leeway = 5;
        Ok(Verifier { key, validation })
    }

    /// Also requires `aud` to be one of `audience` (when not empty) and `iss` to be
    /// `issuer` (when given): tokens minted for another service are refused.
    pub(crate) fn expecting(mut self, audience: &[String], issuer: Option<&str>) -> Self {
        let mut required = vec!["exp", "sub"];
        if !audience.is_empty() {
            self.validation.set_audience(audience);
            self.validation.validate_aud = true;
            required.push("aud");
        }
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        self.validation.set_required_spec_claims(&required);
        self
    }

    /// Verifies a token and returns who it identifies.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
            ErrorKind::MissingRequiredClaim(c) if c == "sub" => AuthError::BadSubject,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        if claims.exp == 0 {
            return Err(AuthError::MissingClaim("exp".into()));
        }
        let sub = claims.sub;
        if sub.trim().is_empty() || sub.len() > MAX_USER_ID_LEN || sub.chars().any(char::is_control) {
            return Err(AuthError::BadSubject);
        }
        let is_admin = claims.roles.contains("admin") || claims.role.as_deref() == Some("admin");
        Ok(Identity {
            user_id: sub,
            is_admin,
            expires_at: claims.exp,
        })
    }
}

/// Signs HS256 tokens: development tokens printed at start, and tests.
pub fn mint_hs256(secret: &str, user_id: &str, admin: bool, ttl: std::time::Duration) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let roles = if admin {
        Roles::Many(vec!["admin".into()])
    } else {
        Roles::Many(vec!["buyer".into()])
    };
    let claims = Claims {
        sub: user_id.to_owned(),
        exp,
        roles,
        role: None,
    };
    // Encoding a plain struct with an HMAC key does not fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::new(&JwtKey::Hs256Secret(SECRET.into())).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn valid_tokens_give_identity_and_admin_flag() {
        let v = verifier();
        let id = v.verify(&mint_hs256(SECRET, "u1", false, Duration::from_secs(60))).unwrap();
        assert_eq!((id.user_id.as_str(), id.is_admin), ("u1", false));
        let id = v.verify(&mint_hs256(SECRET, "boss", true, Duration::from_secs(60))).unwrap();
        assert!(id.is_admin);
        let id = v
            .verify(&sign(json!({"sub": "x", "exp": now() + 60, "role": "admin"}), SECRET))
            .unwrap();
        assert!(id.is_admin);
        let id = v
            .verify(&sign(json!({"sub": "x", "exp": now() + 60, "roles": "admin"}), SECRET))
            .unwrap();
        assert!(id.is_admin);
        assert!(
            v.verify(&format!("Bearer {}", mint_hs256(SECRET, "u1", false, Duration::from_secs(60))))
                .is_ok()
        );
    }

    #[test]
    fn refusals_say_why() {
        let v = verifier();
        assert_eq!(v.verify(""), Err(AuthError::MissingToken));
        assert_eq!(v.verify("abc"), Err(AuthError::Malformed));
        assert_eq!(v.verify(&"a".repeat(MAX_TOKEN_LEN + 1)), Err(AuthError::TooLong));
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "exp": now() - 3600}), SECRET)),
            Err(AuthError::Expired)
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "exp": now() + 3600, "nbf": now() + 600}), SECRET)),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u", "exp": now() + 60}), "another-secret-another-secret-xx")),
            Err(AuthError::BadSignature)
        );
        assert_eq!(v.verify(&sign(json!({"exp": now() + 60}), SECRET)), Err(AuthError::BadSubject));
        assert_eq!(
            v.verify(&sign(json!({"sub": "", "exp": now() + 60}), SECRET)),
            Err(AuthError::BadSubject)
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "u"}), SECRET)),
            Err(AuthError::MissingClaim("exp".into()))
        );
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let exp = now() + 60;
        let with_aud = sign(
            json!({"sub": "u", "exp": exp, "aud": "shop-bridge", "iss": "https://id.example.com"}),
            SECRET,
        );
        let other_aud = sign(
            json!({"sub": "u", "exp": exp, "aud": ["billing"], "iss": "https://id.example.com"}),
            SECRET,
        );
        // The right issuer but no audience (a token lacking both may be refused for either).
        let bare = sign(json!({"sub": "u", "exp": exp, "iss": "https://id.example.com"}), SECRET);
        // Unconfigured: a token carrying aud / iss is accepted (it used to be "malformed").
        assert!(verifier().verify(&with_aud).is_ok());
        assert!(verifier().verify(&other_aud).is_ok());

        let v = verifier().expecting(&["shop-bridge".into(), "admin-bridge".into()], Some("https://id.example.com"));
        assert_eq!(v.verify(&with_aud).unwrap().user_id, "u");
        assert_eq!(v.verify(&other_aud), Err(AuthError::WrongAudience));
        assert_eq!(v.verify(&bare), Err(AuthError::WrongAudience), "aud is required once configured");
        let wrong_iss = sign(
            json!({"sub": "u", "exp": exp, "aud": "shop-bridge", "iss": "https://evil.example.com"}),
            SECRET,
        );
        assert_eq!(v.verify(&wrong_iss), Err(AuthError::WrongIssuer));
        let no_iss = sign(json!({"sub": "u", "exp": exp, "aud": "shop-bridge"}), SECRET);
        assert_eq!(v.verify(&no_iss), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(json!({"sub": "u", "exp": now() + 60}).to_string().as_bytes());
        let none = format!("{header}.{body}.");
        assert!(verifier().verify(&none).is_err());

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "u", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier().verify(&hs512), Err(AuthError::WrongAlgorithm));
    }

    const RS_PRIVATE: &str = include_str!("../tests/fixtures/rs256-test-private.pem");
    const RS_PUBLIC: &str = include_str!("../tests/fixtures/rs256-test-public.pem");

    #[test]
    fn rs256_tokens_verify_and_hs_rs_confusion_is_refused() {
        let v = Verifier::new(&JwtKey::Rs256PublicPem(RS_PUBLIC.into())).unwrap();
        let claims = json!({"sub": "u-rs", "exp": now() + 60, "roles": ["admin"]});
        let rs = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let id = v.verify(&rs).unwrap();
        assert_eq!((id.user_id.as_str(), id.is_admin), ("u-rs", true));
        // The classic confusion attack: HS256 "signed" with the public key as the secret.
        assert_eq!(v.verify(&sign(claims, RS_PUBLIC)), Err(AuthError::WrongAlgorithm));
        // And an RS256 token is refused by an HS256 verifier.
        assert_eq!(verifier().verify(&rs), Err(AuthError::WrongAlgorithm));
    }
}
