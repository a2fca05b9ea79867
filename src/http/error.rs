//! The REST error policy: every refusal is a 4xx with `{error, field?}`; a 5xx only when
//! a component the request needs is down (503). Request bodies go through [`JsonBody`],
//! which maps each way a body can be wrong to its status and names the field at fault.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, body::Bytes};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for people.
    #[schema(example = "field \"userId\" must not be empty")]
    pub error: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "userId")]
    pub field: Option<String>,
}

/// An HTTP error: status plus [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }

    /// 422: a field's value is not acceptable.
    pub fn field(field: &str, error: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: ErrorBody {
                error: error.into(),
                field: Some(field.to_owned()),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, ApiKey"));
        }
        response
    }
}

/// Checks a deserialized request beyond its types (non-empty, lengths, formats).
pub trait Validate {
    /// `Err` names the first field at fault.
    fn validate(&self) -> Result<(), ApiError>;
}

/// A JSON request body, deserialized and validated; its rejections are [`ApiError`]s:
/// 415 without a JSON content type, 413 over the size limit, 400 for malformed JSON, 422
/// for a missing, mistyped or invalid field (named in `field`).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
        let value = parse::<T>(&bytes)?;
        value.validate()?;
        Ok(JsonBody(value))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes `bytes`, naming the field at fault when the JSON is well-formed but wrong.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read a struct from an array by position and blame "[0]"; bodies are objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid body: expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                // serde reports a missing field at its parent; the name is in the message.
                let field = missing_field(&message).map(str::to_owned).unwrap_or(path);
                let field = if field == "." { None } else { Some(field) };
                ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    body: ErrorBody {
                        error: match &field {
                            Some(f) => format!("field {f:?}: {message}"),
                            None => format!("invalid body: {message}"),
                        },
                        field,
                    },
                }
            }
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("malformed JSON: {}", strip_position(&inner.to_string())),
            ),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON: {}", strip_position(&e.to_string())),
        )
    })?;
    Ok(value)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// A required text field: present, not blank, at most `max` characters, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::field(field, format!("field {field:?} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::field(field, format!("field {field:?} is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            format!("field {field:?} must not contain control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        user_id: String,
        stock: i64,
        nested: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    fn err(body: &str) -> ApiError {
        parse::<Req>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn each_kind_of_bad_body_names_its_field() {
        let e = err(r#"{"stock": 1}"#);
        assert_eq!(
            (e.status, e.body.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("userId"))
        );
        let e = err(r#"{"userId": "u", "stock": "many"}"#);
        assert_eq!(e.body.field.as_deref(), Some("stock"));
        assert!(e.body.error.starts_with("field \"stock\": invalid type"), "{}", e.body.error);
        let e = err(r#"{"userId": "u", "stock": 1, "nested": {"n": 300}}"#);
        assert_eq!(e.body.field.as_deref(), Some("nested.n"));
        let e = err(r#"{"userId": "u", "#);
        assert_eq!((e.status, e.body.field), (StatusCode::BAD_REQUEST, None));
        let e = err(r#"{"userId": "u", "stock": 1} trailing"#);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = err("[1]");
        assert_eq!((e.status, e.body.field), (StatusCode::UNPROCESSABLE_ENTITY, None));
    }

    #[test]
    fn text_fields_must_carry_text() {
        assert!(text("title", "Hello", 10).is_ok());
        assert_eq!(text("title", "  ", 10).unwrap_err().body.field.as_deref(), Some("title"));
        assert!(text("title", "x".repeat(11).as_str(), 10).is_err());
        assert!(text("title", "a\u{0}b", 10).is_err());
    }

    #[test]
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
