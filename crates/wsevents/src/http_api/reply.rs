//! The API's answers: JSON always, errors as `{"error":{"code","message"}}` with the
//! status their code says, in one table ([`ErrorCode`]).

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// An answer's body.
pub type Body = Full<Bytes>;

/// What went wrong, as the error body's `code` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 401: no key, or not one of the API's (with `WWW-Authenticate: Bearer`).
    Unauthorized,
    /// 400: the body is not the JSON the endpoint takes, or a query parameter is bad.
    BadRequest,
    /// 400: a topic that is empty or over 256 bytes.
    BadTopic,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint takes another method (with `Allow`).
    MethodNotAllowed,
    /// 408: the body did not arrive within the API's body timeout.
    Timeout,
    /// 413: the body, or a publication's data, is over the limit.
    TooLarge,
    /// 501: the server cannot do this (no user identities for disconnect and
    /// unsubscribe).
    NotImplemented,
    /// 503: the backend (Redis) cannot be reached, or the API is at its bound of
    /// requests in progress; nothing was done (with `Retry-After`).
    Unavailable,
    /// 500: anything else (the hub refused in a way the request could not cause).
    Internal,
}

impl ErrorCode {
    /// The code's name in the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::BadRequest | ErrorCode::BadTopic => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer on its way: a code, a message for people, and the headers its
/// status needs.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub(super) code: ErrorCode,
    pub(super) message: String,
    /// `Allow`, for 405.
    pub(super) allow: Option<&'static str>,
    /// `Retry-After`, for 503.
    pub(super) retry_after: Option<Duration>,
}

impl ApiError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }

    pub(super) fn method(allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("this endpoint takes {allow}"),
            )
        }
    }

    pub(super) fn unavailable(message: impl Into<String>, retry_after: Duration) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(ErrorCode::Unavailable, message)
        }
    }

    /// The hub's error as an answer: the backend's being unreachable or full is 503,
    /// anything else 500.
    pub(super) fn from_hub(error: crate::Error, retry_after: Duration) -> ApiError {
        match error {
            crate::Error::Unavailable(message) | crate::Error::Capacity(message) => {
                ApiError::unavailable(message, retry_after)
            }
            other => ApiError::new(ErrorCode::Internal, other.to_string()),
        }
    }

    pub(super) fn response(&self) -> Response<Body> {
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        let mut response = json(
            self.code.status(),
            &Outer {
                error: Inner {
                    code: self.code.as_str(),
                    message: &self.message,
                },
            },
        );
        let headers = response.headers_mut();
        if self.code == ErrorCode::Unauthorized {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wsevents\""),
            );
        }
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(after) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        response
    }
}

/// `value` as a JSON answer with `status`.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // A Serialize of ours with string keys: it cannot fail; if it did, say so.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"the answer could not be written"}}"#.to_vec()
    });
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
