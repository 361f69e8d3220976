//! The one mapping from capability errors to HTTP problems.

use crate::auth::AuthError;
use crate::error::Problem;

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => Problem::unauthorized(None, e.to_string()),
            AuthError::MissingCredentials => Problem::unauthorized(None, e.to_string()),
            AuthError::InvalidToken(_) => {
                Problem::unauthorized(Some("invalid_token"), e.to_string())
            }
            AuthError::RateLimited { retry_after } => {
                Problem::too_many_requests(retry_after, e.to_string())
            }
            AuthError::Forbidden(d) => Problem::forbidden(d),
            AuthError::NotFound(d) => Problem::not_found(d),
            AuthError::Conflict(d) => Problem::conflict(d),
            AuthError::Invalid(d) => Problem::unprocessable(d),
            AuthError::Key(_) | AuthError::Store(_) | AuthError::Internal(_) => {
                tracing::error!(error = %e, "request failed");
                Problem::internal(
                    "the daemon could not complete the request; its log has the cause",
                )
            }
        }
    }
}

impl From<crate::inference::ServingError> for Problem {
    fn from(e: crate::inference::ServingError) -> Self {
        use crate::inference::ServingError;
        match e {
            ServingError::NotFound(d) => Problem::not_found(d),
            ServingError::Unavailable(d) => Problem::unavailable(d),
            ServingError::Invalid(d) => Problem::unprocessable(d),
            ServingError::Overloaded(d) => Problem::too_many_requests(1, d),
        }
    }
}

impl From<crate::kb::KbError> for Problem {
    fn from(e: crate::kb::KbError) -> Self {
        use crate::kb::KbError;
        use axum::http::StatusCode;
        match e {
            KbError::NotFound(d) => Problem::not_found(d),
            KbError::Forbidden(d) => Problem::forbidden(d),
            KbError::Invalid(d) => Problem::unprocessable(d),
            KbError::Conflict(d) => Problem::conflict(d),
            KbError::TooLarge(d) => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", d)
            }
            KbError::Unsupported(d) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                d,
            ),
            KbError::NoSpace(d) => {
                tracing::warn!("{d}");
                Problem::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage", d)
            }
            KbError::Unavailable(d) => Problem::unavailable(d),
            KbError::Internal(d) => {
                tracing::error!(error = %d, "request failed");
                Problem::internal(
                    "the daemon could not complete the request; its log has the cause",
                )
            }
            KbError::Generation(g) => g.into(),
        }
    }
}

impl From<crate::inference::generate::GenerateError> for Problem {
    fn from(e: crate::inference::generate::GenerateError) -> Self {
        use crate::inference::generate::GenerateError;
        use axum::http::StatusCode;
        let detail = e.to_string();
        match e {
            GenerateError::NotFound(_) => Problem::not_found(detail),
            GenerateError::ContextTooLong { .. } | GenerateError::Invalid(_) => {
                Problem::unprocessable(detail)
            }
            GenerateError::Overloaded(_) => Problem::too_many_requests(1, detail),
            GenerateError::Unavailable(_) => Problem::unavailable(detail),
            GenerateError::Upstream(_) => {
                tracing::warn!(error = %detail, "upstream generator failed");
                Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", detail)
            }
            GenerateError::Timeout(_) => {
                tracing::warn!(error = %detail, "upstream generator timed out");
                Problem::new(StatusCode::GATEWAY_TIMEOUT, "gateway-timeout", detail)
            }
            GenerateError::Internal(_) => {
                tracing::error!(error = %detail, "generation failed");
                Problem::internal(
                    "the daemon could not complete the request; its log has the cause",
                )
            }
        }
    }
}
