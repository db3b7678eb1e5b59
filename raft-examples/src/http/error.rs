//! The errors answered to HTTP clients: [`ApiError`], its status, its JSON body, and
//! how a [`raft::ClientError`] maps onto it.

use hyper::StatusCode;

use super::{json_response, HttpResponse};

/// An error answered to an HTTP client as a status and a JSON body `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 401: the request needs credentials (the admin token) and has none.
    Unauthorized(String),
    /// 403: the credentials presented are wrong.
    Forbidden(String),
    /// 404: no such resource.
    NotFound(String),
    /// 405: the resource does not support the method.
    MethodNotAllowed(String),
    /// 408: the request body did not arrive in time.
    RequestTimeout(String),
    /// 409: the change asked for cannot be made now (another one in progress, a voter
    /// set that is empty or names an unknown node, a learner not caught up in time).
    Conflict(String),
    /// 413: the body is larger than allowed.
    TooLarge(String),
    /// 422: the request is well formed but cannot be processed as it is: an
    /// `Idempotency-Key` reused for another request (the IETF draft's answer).
    Unprocessable(String),
    /// 500: something failed that is not the client's fault and will not go away by
    /// retrying.
    Internal(String),
    /// 503: no leader or no quorum answered in time, or the node is stopping; the
    /// client may retry.
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::RequestTimeout(m)
            | ApiError::Conflict(m)
            | ApiError::TooLarge(m)
            | ApiError::Unprocessable(m)
            | ApiError::Internal(m)
            | ApiError::Unavailable(m) => m,
        }
    }

    /// The response: the status and `{"error": message}`.
    pub fn into_response(self) -> HttpResponse {
        json_response(self.status(), &serde_json::json!({ "error": self.message() }))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl From<raft::ClientError> for ApiError {
    fn from(e: raft::ClientError) -> Self {
        match e {
            raft::ClientError::Encode(_) => ApiError::Internal(e.to_string()),
            // A client session that expired, or a request it acknowledged already.
            raft::ClientError::SessionExpired { .. } | raft::ClientError::StaleRequest { .. } => {
                ApiError::Conflict(e.to_string())
            }
            // The key came before with another request.
            raft::ClientError::KeyReused { .. } => ApiError::Unprocessable(
                "this Idempotency-Key was used with another request body on this resource; not applied".into(),
            ),
            // Not the leader and no forwarding possible, no leader, a timeout, a proposal
            // lost to a leadership change, back-pressure, a stopping or failed node: the
            // request may succeed later or elsewhere.
            _ => ApiError::Unavailable(e.to_string()),
        }
    }
}
